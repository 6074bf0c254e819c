"""``img2img-diffusion``: one-step (sd-turbo style) diffusion img2img from a local model directory.

How this works
--------------
``prepare`` loads a diffusers Stable Diffusion model directory (``model_index.json`` with
``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``, as ``save_pretrained`` writes
it, e.g. a copy of ``stabilityai/sd-turbo``) with ``local_files_only=True``: nothing is
downloaded, ever. The ``model`` parameter names that directory inside the worker's models
directory (``--models-dir``; a path is refused: ``workers.pipelines.models``). On CUDA it runs
in float16, on CPU in float32.

Per frame the cost is the diffusers img2img call (VAE encode, ``steps`` UNet passes, VAE
decode); everything that depends only on parameters lives in ``update``: the prompt is embedded
there once and again only when ``prompt`` changes, and a new ``model`` name reloads the model.
``strength``, ``steps``, ``guidance_scale`` and ``seed`` are read per batch and cost nothing to
change.

``steps`` counts the denoising steps that actually run, whatever ``strength`` is (sd-turbo
needs one). Diffusers' own img2img schedule runs ``int(num_inference_steps * strength)`` steps
from a grid of ``num_inference_steps``, so ``strength`` only moves in jumps (with one step: 1,
1/2, 1/3...). Where the scheduler takes custom timesteps (Euler, as sd-turbo ships, LCM,
DPM-Solver) the pipeline passes its own: ``steps`` timesteps evenly spaced below
``strength * num_train_timesteps``, "trailing" like sd-turbo's, so ``strength`` is continuous
and, at ``strength = k/n``, the timesteps are exactly diffusers' (sd-turbo's "2 steps at
strength 0.5" is ``steps=1, strength=0.5``: timestep 499). Other schedulers get the smallest
``num_inference_steps`` that runs ``steps`` steps. ``strength`` 0 passes frames through.

The noise is drawn from a generator seeded with ``seed`` on every batch: the same seed gives
the same noise on every frame, which is what keeps a live stream from flickering. A batch of
several frames draws its noise in one go, so position ``i`` of every batch gets the same noise.

Frames whose sides are not multiples of 8 are resized (bilinear) to the nearest multiples for
the model and back afterwards.
"""

from __future__ import annotations

import importlib
import inspect
import math
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from workers.pipelines.base import ModelPipeline, PipelineSpec
from workers.pipelines.offline import load_diffusers, require_directory
from workers.pipelines.params import (
    FloatParam,
    IntParam,
    ModelParam,
    Params,
    PipelineError,
    StrParam,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "DiffusionStatistics",
    "Img2ImgDiffusionPipeline",
    "denoising_timesteps",
    "inference_steps",
    "load_img2img",
    "takes_custom_timesteps",
]

_MULTIPLE = 8
"""Frame sides given to the model are multiples of this (the VAE's downscale factor)."""


@attrs.frozen(kw_only=True)
class DiffusionStatistics:
    """What an :class:`Img2ImgDiffusionPipeline` has done so far."""

    loads: int
    """Times a model directory was loaded."""
    prompt_encodings: int
    """Times a prompt was run through the text encoder."""


def inference_steps(steps: int, strength: float) -> int:
    """The ``num_inference_steps`` that makes diffusers run ``steps`` denoising steps.

    Diffusers img2img runs ``int(num_inference_steps * strength)`` steps; this is the smallest
    schedule length giving at least ``steps`` (``strength`` must be in ``(0, 1]``).
    """
    if not 0.0 < strength <= 1.0 or steps < 1:
        raise ValueError(f"need steps >= 1 and 0 < strength <= 1, not {steps}, {strength}")
    count = max(steps, math.ceil(steps / strength))
    while int(count * strength) < steps:  # float rounding: 3 / 0.3 * 0.3 < 3
        count += 1
    while count > steps and int((count - 1) * strength) >= steps:  # 21 / 0.35 > 60
        count -= 1
    return count


def denoising_timesteps(steps: int, strength: float, train_steps: int = 1000) -> list[int]:
    """``steps`` decreasing timesteps starting at ``strength`` of the way into the noise.

    Spaced like diffusers' "trailing" schedule: step ``i`` is
    ``round(strength * train_steps * (steps - i) / steps) - 1``. Timesteps that would repeat
    (a tiny ``strength``) are dropped, so fewer steps may run.
    """
    if not 0.0 < strength <= 1.0 or steps < 1:
        raise ValueError(f"need steps >= 1 and 0 < strength <= 1, not {steps}, {strength}")
    top = strength * train_steps
    out: list[int] = []
    for i in range(steps):
        t = max(0, round(top * (steps - i) / steps) - 1)
        if not out or t < out[-1]:
            out.append(t)
    return out


def takes_custom_timesteps(scheduler: Any) -> bool:
    """Whether a diffusers scheduler accepts ``set_timesteps(timesteps=[...])`` as configured."""
    if "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
        return False
    try:
        scheduler.set_timesteps(timesteps=[int(scheduler.config.num_train_timesteps) - 1])
    except (ValueError, TypeError):  # karras sigmas and the like refuse custom timesteps
        return False
    return True


def load_img2img(path: str, device: str = "cpu") -> Any:
    """Loads a local diffusers Stable Diffusion directory as an img2img pipeline on ``device``
    (:func:`workers.pipelines.offline.load_diffusers`: float16 on CUDA, float32 elsewhere;
    progress bars off). Returns a diffusers ``StableDiffusionImg2ImgPipeline``.

    Raises:
        PipelineError: diffusers is missing, the path is empty, not a diffusers directory,
            not a Stable Diffusion model, or fails to load.
    """
    if not path:
        raise PipelineError("the img2img-diffusion pipeline needs a 'model' directory")
    require_directory(path, "diffusion model")

    def accept(pipe: Any) -> None:
        diffusers = importlib.import_module("diffusers")
        if not isinstance(pipe, diffusers.StableDiffusionImg2ImgPipeline):
            raise PipelineError(
                f"diffusion model {path!r} is a {type(pipe).__name__}; "
                "img2img-diffusion runs Stable Diffusion 1.x/2.x models (sd-turbo)"
            )

    return load_diffusers(
        path,
        device,
        "AutoPipelineForImage2Image",
        model="diffusion model",
        user="the img2img-diffusion pipeline",
        accept=accept,
    )


class Img2ImgDiffusionPipeline(ModelPipeline):
    """Diffusion img2img on each batch, with the prompt embedded once per change."""

    spec: ClassVar[PipelineSpec] = PipelineSpec(
        name="img2img-diffusion",
        description="Restyles frames with one-step diffusion img2img (sd-turbo) and a prompt.",
        cost=32.0,
        params=(
            ModelParam(
                name="model",
                description="name of a diffusers model folder (sd-turbo) in the worker's "
                "models directory",
            ),
            StrParam(name="prompt", default="", description="what the frames should look like"),
            FloatParam(
                name="strength",
                default=0.5,
                minimum=0.0,
                maximum=1.0,
                description="0 leaves frames as they are, 1 ignores them",
            ),
            IntParam(
                name="steps",
                default=1,
                minimum=1,
                maximum=50,
                description="denoising steps per frame",
            ),
            FloatParam(
                name="guidance_scale",
                default=0.0,
                minimum=0.0,
                maximum=20.0,
                description="classifier-free guidance; 0 (off) for turbo models",
            ),
            IntParam(
                name="seed",
                default=0,
                minimum=0,
                maximum=2**63 - 1,
                description="noise seed; the same seed gives the same output",
            ),
        ),
    )

    def __init__(self) -> None:
        super().__init__()
        self._pipe: Any = None
        self._prompt: str | None = None
        self._embeds: tuple[torch.Tensor, torch.Tensor] | None = None
        self._custom_timesteps = False
        self._train_steps = 1000
        self._loads = 0
        self._encodings = 0

    @property
    def diffusers_pipeline(self) -> Any:
        """The loaded diffusers pipeline (``None`` before ``prepare`` and after ``stop``)."""
        return self._pipe

    def statistics(self) -> DiffusionStatistics:
        return DiffusionStatistics(loads=self._loads, prompt_encodings=self._encodings)

    def update(self, params: Params) -> None:
        super().update(params)
        prompt = params.get_str("prompt")
        if prompt != self._prompt or self._embeds is None:
            self._embeds = self._encode(prompt)
            self._prompt = prompt

    def process(self, frames: torch.Tensor, params: Params) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if self._pipe is None or self._embeds is None:
            raise PipelineError("the img2img-diffusion pipeline was not prepared")
        strength = params.get_float("strength")
        if strength == 0.0:
            return frames
        batch, _, height, width = frames.shape
        size = (_round_side(height), _round_side(width))
        image = frames.to(device=self._device, dtype=self._pipe.dtype)
        if size != (height, width):
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        embeds, negative = self._embeds
        generator = torch.Generator(device=self._device).manual_seed(params.get_int("seed"))
        steps = params.get_int("steps")
        schedule: dict[str, Any]
        if self._custom_timesteps:
            timesteps = denoising_timesteps(steps, strength, self._train_steps)
            schedule = {"timesteps": timesteps, "num_inference_steps": None, "strength": 1.0}
        else:
            count = inference_steps(steps, strength)
            schedule = {"num_inference_steps": count, "strength": strength}
        with torch.inference_mode():
            out: torch.Tensor = self._pipe(
                image=image,
                prompt_embeds=embeds.expand(batch, -1, -1),
                negative_prompt_embeds=negative.expand(batch, -1, -1),
                **schedule,
                guidance_scale=params.get_float("guidance_scale"),
                generator=generator,
                output_type="pt",
                return_dict=False,
            )[0]
            if size != (height, width):
                out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)
            return out.to(device=frames.device, dtype=frames.dtype).clamp_(0.0, 1.0)

    def stop(self) -> None:
        self._pipe = None
        self._embeds = None

    def load_model(self, path: str) -> None:
        self._pipe = load_img2img(path, self._device)
        scheduler = self._pipe.scheduler
        self._custom_timesteps = takes_custom_timesteps(scheduler)
        self._train_steps = int(scheduler.config.num_train_timesteps)
        self._embeds = None  # another text encoder: the prompt is embedded again
        self._loads += 1

    def _encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt's embedding and the empty prompt's (for guidance), each ``[1, T, D]``."""
        import torch

        with torch.inference_mode():
            embeds, negative = self._pipe.encode_prompt(
                prompt,
                device=self._device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=True,
            )
        self._encodings += 1
        return embeds, negative


def _round_side(side: int) -> int:
    return max(_MULTIPLE, round(side / _MULTIPLE) * _MULTIPLE)
