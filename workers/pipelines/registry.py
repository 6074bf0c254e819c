"""The pipeline registry: built-in pipelines plus those other packages declare.

A third-party package adds a pipeline by naming its class in the ``lpstream.pipelines``
entry-point group (``name = "package.module:Class"``); the entry point's name must equal the
class's ``spec.name``. Entry points are read once, on first use (by
``workers.pipelines.entry_points``, as the batch registry reads its own); one that fails to
load is left out and its problem kept in :attr:`PipelineRegistry.problems` (and logged), so a
broken plugin does not take the others down. Built-in names cannot be taken over.

Listing and describing pipelines imports no torch; creating a runner does not either, but
running one needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from workers.pipelines.base import Pipeline, PipelineSpec
from workers.pipelines.diffusion import Img2ImgDiffusionPipeline
from workers.pipelines.effects import CartoonPipeline, ColorGradePipeline
from workers.pipelines.entry_points import (
    EntryPointGroup,
    check_class,
    class_path,
    load_entry_points,
)
from workers.pipelines.models import ModelDirectory
from workers.pipelines.noop import NoopPipeline
from workers.pipelines.params import InvalidParamsError, ModelParam, PipelineError, schema
from workers.pipelines.runner import PipelineRunner
from workers.pipelines.torchscript import TorchScriptPipeline

__all__ = [
    "BUILTIN_PIPELINES",
    "ENTRY_POINT_GROUP",
    "PipelineInfo",
    "PipelineRegistry",
    "UnknownPipelineError",
]

ENTRY_POINT_GROUP = "lpstream.pipelines"

BUILTIN_PIPELINES: tuple[type[Pipeline], ...] = (
    NoopPipeline,
    CartoonPipeline,
    ColorGradePipeline,
    TorchScriptPipeline,
    Img2ImgDiffusionPipeline,
)


class UnknownPipelineError(PipelineError, LookupError):
    """No pipeline of that name is installed (answered as 400)."""


@attrs.frozen(kw_only=True)
class PipelineInfo:
    """A pipeline as an orchestrator advertises it."""

    name: str
    description: str
    params: dict[str, Any]
    """JSON Schema of the parameters (an object with defaults and bounds)."""
    models: tuple[str, ...]
    batch_size: int
    layout: str
    """``rgb`` or ``yuv420``: what the pipeline computes on."""
    source: str
    """``builtin``, or the distribution (``name version``) that declared it."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": self.params,
            "models": list(self.models),
            "batch_size": self.batch_size,
            "layout": self.layout,
            "source": self.source,
        }


class PipelineRegistry:
    """The pipelines this worker can run, by name."""

    def __init__(
        self,
        *,
        builtins: bool = True,
        entry_points: bool = True,
        models: ModelDirectory | None = None,
    ) -> None:
        """``models`` is the directory the runners it creates load named models from (the
        worker's ``--models-dir``); none, and a model cannot be named."""
        self.models = models or ModelDirectory()
        self._classes: dict[str, type[Pipeline]] = {}
        self._sources: dict[str, str] = {}
        self._problems: dict[str, str] = {}
        self._entry_points_pending = entry_points
        if builtins:
            for cls in BUILTIN_PIPELINES:
                self.register(cls, source="builtin")

    @property
    def problems(self) -> dict[str, str]:
        """Entry points that could not be used: name -> why."""
        self._load_entry_points()
        return dict(self._problems)

    def register(self, cls: type[Pipeline], *, source: str = "code") -> None:
        """Adds a pipeline class under its ``spec.name``.

        Raises:
            PipelineError: not a concrete pipeline class, or the name is taken.
        """
        _check_class(cls)
        name = cls.spec.name
        if name in self._classes:
            raise PipelineError(f"pipeline {name!r} is already registered ({self._sources[name]})")
        self._classes[name] = cls
        self._sources[name] = source

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._classes)

    def get(self, name: str) -> type[Pipeline]:
        """The pipeline class called ``name``.

        Raises:
            UnknownPipelineError: no such pipeline (the message lists the known ones).
        """
        self._load_entry_points()
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(sorted(self._classes)) or "none"
            raise UnknownPipelineError(f"unknown pipeline {name!r} (known: {known})") from None

    def describe(self) -> list[PipelineInfo]:
        """Every pipeline with its parameter schema, sorted by name."""
        infos = []
        for name in self.names():
            cls = self._classes[name]
            spec = cls.spec
            infos.append(
                PipelineInfo(
                    name=name,
                    description=spec.description,
                    params=schema(spec.params),
                    models=spec.models,
                    batch_size=spec.batch_size,
                    layout=cls.layout.value,
                    source=self._sources[name],
                )
            )
        return infos

    def create(
        self,
        name: str,
        params: Mapping[str, object] | None = None,
        *,
        device: str = "cpu",
        pool_size: int = 8,
    ) -> PipelineRunner:
        """A runner for a new instance of ``name``; call its ``prepare`` on a worker thread.

        Raises:
            UnknownPipelineError: no such pipeline.
            InvalidParamsError: ``params`` do not fit its declaration.
        """
        cls = self.get(name)
        return PipelineRunner(cls(), params, device=device, pool_size=pool_size, models=self.models)

    def check_model_names(self, name: str, params: Mapping[str, object]) -> None:
        """Checks the form of the model names in ``params`` for pipeline ``name`` (where the
        models directory is not at hand: the gateway); nothing for a pipeline not known here.

        Raises:
            InvalidParamsError: a model parameter holds a path, ``..`` or the like.
        """
        try:
            spec = self.get(name).spec
        except UnknownPipelineError:
            return
        problems = [
            problem
            for param in spec.params
            if isinstance(param, ModelParam) and param.name in params
            for problem in [param.check(params[param.name])[1]]
            if problem is not None
        ]
        if problems:
            raise InvalidParamsError(name, problems)

    def _load_entry_points(self) -> None:
        if self._entry_points_pending:
            self._entry_points_pending = False
            problems = load_entry_points(
                _GROUP,
                taken=lambda name: _path_or_none(self._classes.get(name)),
                register=self.register,
            )
            self._problems.update(problems)


def _check_class(cls: object) -> type[Pipeline]:
    return check_class(cls, Pipeline, PipelineSpec)


def _path_or_none(cls: type[Pipeline] | None) -> str | None:
    return None if cls is None else class_path(cls)


_GROUP: EntryPointGroup[Pipeline] = EntryPointGroup(
    name=ENTRY_POINT_GROUP,
    kind="pipeline",
    key="name",
    keyed_as="is named",
    check=_check_class,
    key_of=lambda cls: cls.spec.name,
)
