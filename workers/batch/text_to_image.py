"""``text-to-image``: pictures from a prompt with a local diffusers model.

The model is what diffusers' ``AutoPipelineForText2Image`` loads (Stable Diffusion, SDXL...).
Parameters follow ai-worker's ``/text-to-image``: ``prompt``, ``negative_prompt``, ``width`` and
``height`` (multiples of 8, 64 to 2048), ``guidance_scale``, ``num_inference_steps``, ``seed``
(picture ``i`` uses ``seed + i``) and ``num_images_per_prompt``; each picture is billed width x
height. See :mod:`workers.batch.pictures` for batching and seeds.
"""

from __future__ import annotations

from typing import ClassVar

from workers.batch.base import BadRequestError, BatchRequest, BatchSpec, BatchUnit, params_of
from workers.batch.pictures import (
    GUIDANCE_SCALE,
    MAX_SIDE,
    MIN_SIDE,
    MULTIPLE,
    NEGATIVE_PROMPT,
    NUM_IMAGES,
    PROMPT,
    SEED,
    PictureBatchPipeline,
    steps_param,
)
from workers.pipelines.params import IntParam, Params

__all__ = ["TextToImagePipeline"]


class TextToImagePipeline(PictureBatchPipeline):
    """Pictures from a prompt (Stable Diffusion, SDXL... as diffusers' auto pipeline loads)."""

    spec: ClassVar[BatchSpec] = BatchSpec(
        capability="text-to-image",
        description="Makes pictures from a text prompt with a diffusion model.",
        unit=BatchUnit.PIXEL,
        params=(
            PROMPT,
            NEGATIVE_PROMPT,
            IntParam(
                name="width",
                default=1024,
                minimum=MIN_SIDE,
                maximum=MAX_SIDE,
                description=f"picture width in pixels, a multiple of {MULTIPLE}",
            ),
            IntParam(
                name="height",
                default=576,
                minimum=MIN_SIDE,
                maximum=MAX_SIDE,
                description=f"picture height in pixels, a multiple of {MULTIPLE}",
            ),
            GUIDANCE_SCALE,
            steps_param(50),
            SEED,
            NUM_IMAGES,
        ),
        max_batch=4,
    )
    loader: ClassVar[str] = "AutoPipelineForText2Image"

    @classmethod
    def check_request(cls, request: BatchRequest) -> None:
        if request.input:
            raise BadRequestError("text-to-image takes no input bytes, only parameters")
        super().check_request(request)
        params = params_of(request)
        for name in ("width", "height"):
            if params.get_int(name) % MULTIPLE:
                raise BadRequestError(
                    f"{name} must be a multiple of {MULTIPLE}, not {params.get_int(name)}"
                )

    @classmethod
    def output_size(cls, request: BatchRequest) -> tuple[int, int]:
        params = params_of(request)
        return params.get_int("width"), params.get_int("height")

    def call_options(self, params: Params) -> dict[str, object]:
        return {
            "width": params.get_int("width"),
            "height": params.get_int("height"),
            "num_inference_steps": params.get_int("num_inference_steps"),
            "guidance_scale": params.get_float("guidance_scale"),
        }
