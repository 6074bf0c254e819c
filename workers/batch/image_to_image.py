"""``image-to-image``: a picture redrawn after a prompt by a local diffusers model.

The input picture (PNG, JPEG, WebP, GIF, BMP: :mod:`workers.batch.images`) is decoded to RGB
and given to diffusers' image-to-image pipeline (``AutoPipelineForImage2Image``: Stable
Diffusion img2img, SDXL, InstructPix2Pix...), which resizes it to its sides rounded DOWN to
multiples of 8: a 70x83 picture gives 64x80 pictures. That rounded size is the output size and
what is billed (width x height per picture), known from the picture's header before any model
runs. The rounded sides must be at least 64 pixels and the output at most 2048 x 2048 pixels
(4 Mpx, as for text-to-image); a bigger picture is refused with 413.

Parameters follow ai-worker's ``/image-to-image``: ``strength`` (how much of the picture is
redrawn: ``int(num_inference_steps * strength)`` denoising steps run, at least one is needed),
``guidance_scale``, ``image_guidance_scale`` (taken by InstructPix2Pix-style models only; other
models ignore it), ``negative_prompt``, ``num_inference_steps``, ``seed`` (picture ``i`` uses
``seed + i``) and ``num_images_per_prompt``. See :mod:`workers.batch.pictures` for
batching and seeds.
"""

from __future__ import annotations

from typing import ClassVar

from workers.batch.base import (
    BadRequestError,
    BatchRequest,
    BatchSpec,
    BatchUnit,
    RequestTooLargeError,
    params_of,
)
from workers.batch.images import MAX_INPUT_BYTES
from workers.batch.pictures import (
    GUIDANCE_SCALE,
    MAX_SIDE,
    NEGATIVE_PROMPT,
    NUM_IMAGES,
    PROMPT,
    SEED,
    PictureToPicturePipeline,
    steps_param,
)
from workers.pipelines.params import FloatParam, Params

__all__ = ["MAX_OUTPUT_PIXELS", "ImageToImagePipeline"]

MAX_OUTPUT_PIXELS = MAX_SIDE * MAX_SIDE
"""Most pixels of one output picture (the input's sides rounded down to multiples of 8)."""


class ImageToImagePipeline(PictureToPicturePipeline):
    """A picture redrawn after a prompt (see the module comment)."""

    spec: ClassVar[BatchSpec] = BatchSpec(
        capability="image-to-image",
        description="Redraws a picture after a text prompt with a diffusion model.",
        unit=BatchUnit.PIXEL,
        params=(
            PROMPT,
            NEGATIVE_PROMPT,
            FloatParam(
                name="strength",
                default=0.8,
                minimum=0.0,
                maximum=1.0,
                description="how much of the picture is redrawn: 0 keeps it, 1 ignores it",
            ),
            GUIDANCE_SCALE,
            FloatParam(
                name="image_guidance_scale",
                default=1.5,
                minimum=0.0,
                maximum=30.0,
                description="how closely to keep to the input picture (models that take it)",
            ),
            steps_param(100),
            SEED,
            NUM_IMAGES,
        ),
        max_batch=4,
        max_input=MAX_INPUT_BYTES,
    )
    loader: ClassVar[str] = "AutoPipelineForImage2Image"

    @classmethod
    def check_request(cls, request: BatchRequest) -> None:
        super().check_request(request)
        params = params_of(request)
        steps = params.get_int("num_inference_steps")
        strength = params.get_float("strength")
        if int(steps * strength) < 1:  # diffusers runs int(steps * strength) steps
            raise BadRequestError(
                f"strength x num_inference_steps must reach 1 for a step to run, "
                f"not {strength} x {steps}"
            )
        width, height = cls.checked_input_size(request)
        if width * height > MAX_OUTPUT_PIXELS:
            raise RequestTooLargeError(
                f"the picture makes {width}x{height} = {width * height} pixel outputs, "
                f"the limit is {MAX_OUTPUT_PIXELS} ({MAX_SIDE}x{MAX_SIDE})"
            )

    @classmethod
    def output_size(cls, request: BatchRequest) -> tuple[int, int]:
        return cls.input_size(request)

    def call_options(self, params: Params) -> dict[str, object]:
        return {
            "num_inference_steps": params.get_int("num_inference_steps"),
            "strength": params.get_float("strength"),
            "guidance_scale": params.get_float("guidance_scale"),
            "image_guidance_scale": params.get_float("image_guidance_scale"),
        }
