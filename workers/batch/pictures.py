"""What the picture pipelines (text-to-image, image-to-image, upscale) have in common.

How this works
--------------
:class:`PictureBatchPipeline` is the base of every pipeline that makes pictures with diffusers.
A checked request asks for ``num_images_per_prompt`` pictures (upscale: one) of a size known
before any model runs (``output_size``), so ``quote`` needs no model and is exactly what a run
that succeeds bills: width x height per picture.

``run_batch`` turns each request into one :class:`PictureJob` per picture: its prompt, negative
prompt, seed (``seed + i`` for picture ``i``) and input picture where there is one. The jobs of
requests with one ``batch_key`` (equal call-wide options: size, steps, guidance...) go to
diffusers together, as lists of prompts, pictures and generators, at most
:data:`MAX_CALL_PICTURES` pictures and :data:`MAX_CALL_PIXELS` output pixels per call. Each
picture has its own ``torch.Generator``, made on the CPU and seeded with its seed: its noise
depends on nothing else (not the other pictures of the call, not the device), so a request run
in a batch gives what it gives alone, up to the float rounding of batched kernels, and a seed
starts from the same noise on a GPU as on the CPU.

Each request's outputs are named (``sink.start``) before the first call and each picture goes
out as PNG as soon as its call returns. A request whose input picture cannot be decoded fails
alone; a call the model fails in fails the requests that had pictures in it.

:class:`PictureToPicturePipeline` adds what the pipelines that take a picture share: diffusers
resizes the input to its sides rounded DOWN to a multiple (the VAE's scale), known from the
picture's header (:mod:`workers.batch.images`) before anything is decoded.

Models load as :func:`workers.pipelines.offline.load_diffusers` loads them: from a local
directory only, float16 on CUDA, float32 elsewhere. Options a model's pipeline does not take
(``image_guidance_scale`` outside InstructPix2Pix, ``negative_prompt`` on FLUX) are left out of
its call. torch and diffusers are imported in ``load`` and ``run``, never at import time: a
gateway checks and prices requests with these classes and no torch.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

import attrs

from workers.batch.base import (
    BadRequestError,
    BatchOutput,
    BatchRequest,
    BatchSink,
    BatchUsage,
    params_of,
)
from workers.batch.batched import BatchedPipeline
from workers.batch.images import encode_png, picture_size, read_picture
from workers.pipelines.offline import load_diffusers
from workers.pipelines.params import FloatParam, IntParam, Params, PipelineError, StrParam

__all__ = [
    "GUIDANCE_SCALE",
    "MAX_CALL_PICTURES",
    "MAX_CALL_PIXELS",
    "MAX_SIDE",
    "MIN_SIDE",
    "MULTIPLE",
    "NEGATIVE_PROMPT",
    "NUM_IMAGES",
    "PROMPT",
    "SEED",
    "PictureBatchPipeline",
    "PictureJob",
    "PictureStatistics",
    "PictureToPicturePipeline",
    "steps_param",
]

MAX_CALL_PICTURES = 8
"""Most pictures one diffusers call makes (a batch of requests is split past it)."""

MAX_CALL_PIXELS = 4 * 1024 * 1024
"""Most output pixels one diffusers call makes (4 Mpx; a single larger picture runs alone)."""

MAX_SIDE = 2048
"""Largest width or height of a generated picture."""

MIN_SIDE = 64
"""Smallest width or height of a generated picture."""

MULTIPLE = 8
"""Generated sides are multiples of this: Stable Diffusion's VAE scale."""

PROMPT = StrParam(name="prompt", default="", max_length=1024, description="what to draw")
NEGATIVE_PROMPT = StrParam(
    name="negative_prompt",
    default="",
    max_length=1024,
    description="what to keep out of the picture (used when guidance_scale > 1)",
)
GUIDANCE_SCALE = FloatParam(
    name="guidance_scale",
    default=7.5,
    minimum=0.0,
    maximum=30.0,
    description="how closely to follow the prompt (classifier-free guidance; <= 1: off)",
)
SEED = IntParam(
    name="seed",
    default=0,
    minimum=0,
    maximum=2**63 - 1,
    description="noise seed of the first picture; picture i uses seed + i",
)
NUM_IMAGES = IntParam(
    name="num_images_per_prompt", default=1, minimum=1, maximum=4, description="pictures made"
)


def steps_param(default: int) -> IntParam:
    """``num_inference_steps`` with its default (ai-worker's differs per capability)."""
    return IntParam(
        name="num_inference_steps",
        default=default,
        minimum=1,
        maximum=150,
        description="denoising steps: more is slower and usually better",
    )


@attrs.frozen(kw_only=True)
class PictureJob:
    """One picture to make, as one diffusers call takes it among others."""

    request: int
    """Index of its request in the batch."""
    track: int
    """Its output track in the request (``image-{track}``)."""
    prompt: str
    """The prompt."""
    negative_prompt: str | None
    """The negative prompt; None where the capability has none."""
    seed: int
    """Its generator's seed."""
    source: Any = None
    """The input picture (a Pillow RGB image), None for text-to-image."""


@attrs.frozen(kw_only=True)
class PictureStatistics:
    """What a :class:`PictureBatchPipeline` has done since it was made."""

    calls: int
    """diffusers calls made."""
    pictures: int
    """Pictures those calls made."""
    largest_call: int
    """Most pictures one call made."""


class PictureBatchPipeline(BatchedPipeline):
    """Base of the pipelines that make pictures with diffusers (see the module comment)."""

    loader: ClassVar[str]
    """The diffusers class that loads a model directory."""
    prompt_required: ClassVar[bool] = True
    """Whether an empty prompt is refused (400)."""

    def __init__(self) -> None:
        self._pipe: Any = None
        self._device = "cpu"
        self._takes: frozenset[str] = frozenset()
        self._takes_any = False
        self._calls = 0
        self._pictures = 0
        self._largest_call = 0

    def statistics(self) -> PictureStatistics:
        return PictureStatistics(
            calls=self._calls, pictures=self._pictures, largest_call=self._largest_call
        )

    @classmethod
    @abc.abstractmethod
    def output_size(cls, request: BatchRequest) -> tuple[int, int]:
        """``(width, height)`` of each picture a checked request makes."""

    @classmethod
    def picture_count(cls, request: BatchRequest) -> int:
        """How many pictures a checked request makes."""
        return params_of(request).get_int("num_images_per_prompt")

    @classmethod
    def check_request(cls, request: BatchRequest) -> None:
        if cls.prompt_required and not params_of(request).get_str("prompt").strip():
            raise BadRequestError(f"{cls.spec.capability}: the prompt must not be empty")

    @classmethod
    def quote(cls, request: BatchRequest) -> int:
        width, height = cls.output_size(request)
        return width * height * cls.picture_count(request)

    @abc.abstractmethod
    def call_options(self, params: Params) -> dict[str, object]:
        """The diffusers call's keyword arguments that every picture of a call shares."""

    def source_picture(self, request: BatchRequest) -> Any:
        """The decoded input picture of a checked request (None: the capability takes none).

        Raises:
            BadRequestError: the input cannot be decoded.
        """
        return None

    def check_loaded(self, pipe: Any, path: str) -> None:
        """Refuses a loaded diffusers pipeline this capability cannot run (called before the
        pipeline moves to its device).

        Raises:
            PipelineError: saying what the model is and what was expected.
        """

    def batch_key(self, request: BatchRequest) -> Hashable | None:
        options = self.call_options(params_of(request))
        return (self.output_size(request), tuple(sorted(options.items())))

    def load(self, path: str, device: str) -> None:
        capability = self.spec.capability
        pipe = load_diffusers(
            path,
            device,
            self.loader,
            model=f"{capability} model",
            user=f"the {capability} pipeline",
            accept=lambda pipe: self.check_loaded(pipe, path),
        )
        parameters = inspect.signature(pipe.__call__).parameters.values()
        self._takes = frozenset(p.name for p in parameters)
        self._takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        self._pipe = pipe
        self._device = device

    def unload(self) -> None:
        self._pipe = None
        if self._device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def run_batch(
        self, requests: Sequence[BatchRequest], sinks: Sequence[BatchSink]
    ) -> list[BatchUsage | PipelineError]:
        if self._pipe is None:
            raise PipelineError(f"the {self.spec.capability} pipeline has no model loaded")
        failed: dict[int, PipelineError] = {}
        groups: dict[Hashable, list[PictureJob]] = {}
        for index, (request, sink) in enumerate(zip(requests, sinks, strict=True)):
            try:
                jobs = self._jobs(index, request)
            except BadRequestError as exc:
                failed[index] = exc
                continue
            width, height = self.output_size(request)
            sink.start(
                [
                    BatchOutput(
                        name=f"image-{job.track}",
                        width=width,
                        height=height,
                        content_type="image/png",
                    )
                    for job in jobs
                ]
            )
            groups.setdefault(self.batch_key(request), []).extend(jobs)
        for jobs in groups.values():
            first = requests[jobs[0].request]
            size = self.output_size(first)
            options = self.call_options(params_of(first))
            for call in _calls(jobs, size):
                live = [job for job in call if job.request not in failed]
                try:
                    pictures = self._generate(live, options, size) if live else []
                except PipelineError as exc:
                    failed.update((job.request, exc) for job in live)
                    continue
                for job, picture in zip(live, pictures, strict=True):
                    sinks[job.request].data(job.track, encode_png(picture))
        return [
            failed[index] if index in failed else self._usage(request)
            for index, request in enumerate(requests)
        ]

    def _usage(self, request: BatchRequest) -> BatchUsage:
        width, height = self.output_size(request)
        return BatchUsage(units=(width * height,) * self.picture_count(request))

    def _jobs(self, index: int, request: BatchRequest) -> list[PictureJob]:
        params = params_of(request)
        source = self.source_picture(request)
        negative = params.get_str("negative_prompt") if "negative_prompt" in params else None
        seed = params.get_int("seed")
        return [
            PictureJob(
                request=index,
                track=i,
                prompt=params.get_str("prompt"),
                negative_prompt=negative,
                seed=seed + i,
                source=source,
            )
            for i in range(self.picture_count(request))
        ]

    def _generate(
        self, jobs: Sequence[PictureJob], options: dict[str, object], size: tuple[int, int]
    ) -> list[Any]:
        """The pictures of ``jobs``, made in one diffusers call, as Pillow images."""
        import torch

        kwargs: dict[str, object] = {
            **options,
            "prompt": [job.prompt for job in jobs],
            "generator": [torch.Generator("cpu").manual_seed(job.seed) for job in jobs],
            "num_images_per_prompt": 1,
            "output_type": "pil",
        }
        if jobs[0].negative_prompt is not None:
            kwargs["negative_prompt"] = [job.negative_prompt for job in jobs]
        if jobs[0].source is not None:
            kwargs["image"] = [job.source for job in jobs]
        if not self._takes_any:
            kwargs = {name: value for name, value in kwargs.items() if name in self._takes}
        try:
            with torch.inference_mode():
                pictures = list(self._pipe(**kwargs).images)
        except Exception as exc:  # the model can fail in any of diffusers' layers
            if isinstance(exc, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            raise PipelineError(
                f"{self.spec.capability}: the model failed: {type(exc).__name__}: {exc}"
            ) from exc
        self._calls += 1
        self._pictures += len(pictures)
        self._largest_call = max(self._largest_call, len(pictures))
        made = [picture.size for picture in pictures]
        if made != [size] * len(jobs):
            raise PipelineError(
                f"{self.spec.capability}: the model made pictures of {made}, "
                f"not {len(jobs)} of {size}"
            )
        return pictures


def _calls(jobs: Sequence[PictureJob], size: tuple[int, int]) -> list[Sequence[PictureJob]]:
    """``jobs`` split into diffusers calls within :data:`MAX_CALL_PICTURES` and
    :data:`MAX_CALL_PIXELS` (at least one picture per call)."""
    width, height = size
    per_call = max(1, min(MAX_CALL_PICTURES, MAX_CALL_PIXELS // (width * height)))
    return [jobs[start : start + per_call] for start in range(0, len(jobs), per_call)]


class PictureToPicturePipeline(PictureBatchPipeline):
    """Base of the pipelines that take a picture (image-to-image, upscale): diffusers resizes
    it to its sides rounded down to multiples of :attr:`side_multiple`."""

    side_multiple: ClassVar[int] = MULTIPLE
    """The model's input sides are multiples of this (its VAE's scale)."""
    min_side: ClassVar[int] = MIN_SIDE
    """Smallest input side taken once rounded down (400 below)."""

    @classmethod
    def input_size(cls, request: BatchRequest) -> tuple[int, int]:
        """The input picture's sides rounded down to multiples of :attr:`side_multiple`, read
        from its header."""
        width, height = picture_size(request.input)
        return width - width % cls.side_multiple, height - height % cls.side_multiple

    @classmethod
    def checked_input_size(cls, request: BatchRequest) -> tuple[int, int]:
        """:meth:`input_size`, at least :attr:`min_side` each side.

        Raises:
            BadRequestError: a rounded side is under :attr:`min_side`.
        """
        width, height = cls.input_size(request)
        if min(width, height) < cls.min_side:
            raise BadRequestError(
                f"the picture is too small: its sides rounded down to multiples of "
                f"{cls.side_multiple} are {width}x{height}, the least is {cls.min_side} pixels "
                "a side"
            )
        return width, height

    def source_picture(self, request: BatchRequest) -> Any:
        return read_picture(request.input)
