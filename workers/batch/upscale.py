"""``upscale``: a picture enlarged 4 times each side by a local x4 diffusion upscaler.

The model is a diffusers ``StableDiffusionUpscalePipeline`` directory laid out as
``stabilityai/stable-diffusion-x4-upscaler``; one whose VAE does not enlarge 4 times is refused
at load. The input picture (:mod:`workers.batch.images`) is decoded to RGB; diffusers resizes it
to its sides rounded DOWN to multiples of 4 (the upscaler's VAE scale), so a 18x22 picture gives
a 64x80 one. The output, 4 x each rounded side, is what is billed: 16 x the rounded input's
pixels, known from the picture's header before the model runs.

The output is at most 2048 x 2048 pixels (4 Mpx): the input at most 512 x 512 = 262,144 pixels
(rounded), else 413; its rounded sides at least 16 pixels, else 400.

Parameters follow ai-worker's ``/upscale``: ``prompt`` (may be empty: it only steers the
details), ``num_inference_steps`` and ``seed``. See :mod:`workers.batch.pictures` for
batching and seeds.
"""

from __future__ import annotations

from typing import Any, ClassVar

from workers.batch.base import BatchRequest, BatchSpec, BatchUnit, RequestTooLargeError
from workers.batch.images import MAX_INPUT_BYTES
from workers.batch.pictures import PROMPT, SEED, PictureToPicturePipeline, steps_param
from workers.pipelines.params import Params, PipelineError

__all__ = ["MAX_INPUT_PIXELS", "MAX_OUTPUT_PIXELS", "SCALE", "UpscalePipeline"]

SCALE = 4
"""How many times each side is enlarged."""

MAX_OUTPUT_PIXELS = 2048 * 2048
"""Most pixels of the output picture."""

MAX_INPUT_PIXELS = MAX_OUTPUT_PIXELS // (SCALE * SCALE)
"""Most pixels of the input picture, its sides rounded down to multiples of :data:`SCALE`."""

MIN_SIDE = 16
"""Smallest input side (rounded down to a multiple of :data:`SCALE`)."""


class UpscalePipeline(PictureToPicturePipeline):
    """A picture enlarged 4 times each side (see the module comment)."""

    spec: ClassVar[BatchSpec] = BatchSpec(
        capability="upscale",
        description="Enlarges a picture 4 times each side with a diffusion upscaler.",
        unit=BatchUnit.PIXEL,
        params=(PROMPT, steps_param(75), SEED),
        max_batch=4,
        max_input=MAX_INPUT_BYTES,
    )
    loader: ClassVar[str] = "StableDiffusionUpscalePipeline"
    prompt_required: ClassVar[bool] = False
    side_multiple: ClassVar[int] = SCALE
    min_side: ClassVar[int] = MIN_SIDE

    @classmethod
    def check_request(cls, request: BatchRequest) -> None:
        super().check_request(request)
        width, height = cls.checked_input_size(request)
        if width * height > MAX_INPUT_PIXELS:
            raise RequestTooLargeError(
                f"the picture is {width}x{height} = {width * height} pixels (sides rounded "
                f"down to multiples of {SCALE}), the limit is {MAX_INPUT_PIXELS} "
                f"(the output is {SCALE}x each side, at most {MAX_OUTPUT_PIXELS} pixels)"
            )

    @classmethod
    def output_size(cls, request: BatchRequest) -> tuple[int, int]:
        width, height = cls.input_size(request)
        return width * SCALE, height * SCALE

    @classmethod
    def picture_count(cls, request: BatchRequest) -> int:
        return 1

    def call_options(self, params: Params) -> dict[str, object]:
        return {"num_inference_steps": params.get_int("num_inference_steps")}

    def check_loaded(self, pipe: Any, path: str) -> None:
        scale = getattr(pipe, "vae_scale_factor", None)
        if type(pipe).__name__ != "StableDiffusionUpscalePipeline" or scale != SCALE:
            raise PipelineError(
                f"upscale model {path!r} is a {type(pipe).__name__} enlarging {scale}x; "
                f"upscale runs {SCALE}x upscalers (stabilityai/stable-diffusion-x4-upscaler)"
            )
