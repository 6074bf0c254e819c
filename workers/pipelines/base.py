"""The pipeline interface: what a real-time video pipeline declares and implements.

A pipeline is a class with a :class:`PipelineSpec` (name, parameters, models, batch size) that
subclasses :class:`RgbPipeline` or :class:`YuvPipeline`, which fixes the pixels it gets (see
``workers.frames.PixelLayout``). Its life cycle, driven by a ``PipelineRunner`` on one worker
thread: ``prepare`` (load models; blocking, may be slow), then ``update`` with the starting
parameters, then ``process`` per batch with ``update`` before a batch whenever parameters were
changed, then ``stop``. None of these run concurrently with each other.
"""

from __future__ import annotations

import abc
import re
from typing import TYPE_CHECKING, ClassVar

import attrs

from workers.frames import PixelLayout, YuvBatch

from .models import ModelDirectory
from .params import Params, ParamSpec, PipelineError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ModelPipeline",
    "Pipeline",
    "PipelineContext",
    "PipelineSpec",
    "RgbPipeline",
    "YuvPipeline",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _check_name(_: object, __: object, value: str) -> None:
    if not _NAME.match(value):
        raise ValueError(f"pipeline name {value!r}: use 1-64 of a-z, 0-9, '.', '_', '-'")


@attrs.frozen(kw_only=True)
class PipelineSpec:
    """What a pipeline is: advertised by orchestrators, checked by the runner."""

    name: str = attrs.field(validator=_check_name)
    """Registry name, as requested by gateways (``noop``, ``cartoon``...)."""
    description: str
    """One line for people choosing a pipeline."""
    params: tuple[ParamSpec, ...] = ()
    """Declared parameters, with defaults; nothing else is accepted."""
    models: tuple[str, ...] = ()
    """Model identifiers the pipeline loads in ``prepare`` (empty: no weights)."""
    batch_size: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    """Frames per ``process`` call; the runner gathers this many (fewer at a flush)."""
    cost: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    """Work per output pixel against decoding, scaling and encoding it alone (what ``noop``
    costs): orchestrators count a live session's capacity as its output pixels per second
    times this."""


@attrs.frozen(kw_only=True)
class PipelineContext:
    """Where a pipeline runs."""

    device: str = "cpu"
    """torch device: ``cpu`` or ``cuda:N``."""
    models: ModelDirectory = attrs.Factory(ModelDirectory)
    """Where the models its ``ModelParam`` parameters name are (none: no model can be
    named)."""


class Pipeline(abc.ABC):
    """Base of every pipeline; subclass :class:`RgbPipeline` or :class:`YuvPipeline`."""

    spec: ClassVar[PipelineSpec]
    layout: ClassVar[PixelLayout]

    def prepare(self, context: PipelineContext, params: Params) -> None:  # noqa: B027
        """Loads models and moves them to ``context.device``; blocking, called once.

        Raises:
            PipelineError: something the pipeline needs is missing or broken.
        """

    def update(self, params: Params) -> None:  # noqa: B027
        """Takes new parameters (already validated) before the next batch.

        Called after ``prepare`` with the starting parameters and again after every change;
        expensive derived state (an embedded prompt, a reloaded model) belongs here.
        """

    def stop(self) -> None:  # noqa: B027
        """Releases what ``prepare`` took; called once, after the last batch."""


class RgbPipeline(Pipeline):
    """A pipeline over ``float32 [B, 3, H, W]`` RGB in ``[0, 1]``."""

    layout: ClassVar[PixelLayout] = PixelLayout.RGB

    @abc.abstractmethod
    def process(self, frames: torch.Tensor, params: Params) -> torch.Tensor:
        """Returns the output batch, same shape; it may be ``frames`` changed in place."""


class YuvPipeline(Pipeline):
    """A pipeline over ``uint8`` YUV 4:2:0 planes (views of decoder memory: do not write)."""

    layout: ClassVar[PixelLayout] = PixelLayout.YUV420

    @abc.abstractmethod
    def process(self, frames: YuvBatch, params: Params) -> YuvBatch:
        """Returns the output planes, same shapes (new tensors, or the input unchanged)."""


class ModelPipeline(RgbPipeline):
    """An RGB pipeline around the model its ``model`` parameter names: an entry of the
    worker's models directory (``workers.pipelines.models``).

    ``prepare`` loads the model onto the runner's device and ``update`` loads it again when
    the name changes; a subclass declares the ``model`` parameter (a ``ModelParam``) and says
    how to load from a path.
    """

    def __init__(self) -> None:
        self._device = "cpu"
        """The runner's torch device, from ``prepare`` on."""
        self._models = ModelDirectory()
        """The runner's models directory, from ``prepare`` on."""
        self._name: str | None = None
        """The name of the model loaded now."""

    def prepare(self, context: PipelineContext, params: Params) -> None:
        self._device = context.device
        self._models = context.models
        self._load(params.get_str("model"))

    def update(self, params: Params) -> None:
        name = params.get_str("model")
        if name != self._name:
            self._load(name)

    @abc.abstractmethod
    def load_model(self, path: str) -> None:
        """Loads the model at ``path`` onto ``self._device``, replacing the one loaded.

        Raises:
            PipelineError: the path does not hold a model this pipeline runs.
        """

    def _load(self, name: str) -> None:
        try:
            path = self._models.path_of(name)
        except ValueError as exc:
            raise PipelineError(str(exc)) from None
        self.load_model(path)
        self._name = name
