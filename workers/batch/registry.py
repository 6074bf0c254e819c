"""The batch pipeline registry: built-in batch pipelines plus those other packages declare.

A batch pipeline serves one capability (``text-to-image``, ``llm``...); its name here is
that capability. The rules are those of the live registry (``workers.pipelines.registry``),
and the same code reads both groups (``workers.pipelines.entry_points``): a third-party package adds
one by naming its class in the ``lpstream.batch_pipelines`` entry-point group
(``capability = "package.module:Class"``), the entry point's name must equal the class's
``spec.capability``, entry points are read once on first use, and one that fails to load is
left out with its problem kept in :attr:`BatchRegistry.problems` (and logged). Built-in
capabilities cannot be taken over.

Built-ins are named by dotted path and imported on first :meth:`BatchRegistry.get`, so
listing capabilities (a gateway checking a route, a catalog checking its file) imports none
of them; none imports torch at import time either (they import it in ``load`` and ``run``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

from workers.batch.base import BadRequestError, BatchPipeline, BatchSpec
from workers.pipelines.entry_points import (
    EntryPointGroup,
    check_class,
    class_path,
    load_entry_points,
)
from workers.pipelines.params import PipelineError

__all__ = [
    "BATCH_ENTRY_POINT_GROUP",
    "BUILTIN_BATCH_PIPELINES",
    "BatchRegistry",
    "UnknownCapabilityError",
]

BATCH_ENTRY_POINT_GROUP = "lpstream.batch_pipelines"

BUILTIN_BATCH_PIPELINES: Mapping[str, str] = MappingProxyType(
    {
        "text-to-image": "workers.batch.text_to_image:TextToImagePipeline",
        "image-to-image": "workers.batch.image_to_image:ImageToImagePipeline",
        "upscale": "workers.batch.upscale:UpscalePipeline",
        "audio-to-text": "workers.batch.audio_to_text:AudioToTextPipeline",
        "llm": "workers.batch.llm:LlmPipeline",
    }
)
"""Built-in capability -> ``module:Class`` of its pipeline (imported on first use)."""


class UnknownCapabilityError(BadRequestError, LookupError):
    """No batch pipeline serves that capability here (answered 400)."""


class BatchRegistry:
    """The batch pipelines this node knows, by capability."""

    def __init__(self, *, builtins: bool = True, entry_points: bool = True) -> None:
        self._paths: dict[str, str] = dict(BUILTIN_BATCH_PIPELINES) if builtins else {}
        """Capabilities not imported yet -> ``module:Class``."""
        self._classes: dict[str, type[BatchPipeline]] = {}
        self._sources: dict[str, str] = dict.fromkeys(self._paths, "builtin")
        self._problems: dict[str, str] = {}
        self._entry_points_pending = entry_points

    @property
    def problems(self) -> dict[str, str]:
        """Pipelines that could not be used: capability -> why."""
        self._load_entry_points()
        return dict(self._problems)

    def register(self, cls: type[BatchPipeline], *, source: str = "code") -> None:
        """Adds a batch pipeline class under its ``spec.capability``.

        Raises:
            PipelineError: not a concrete batch pipeline class, or the capability is taken.
        """
        _check_class(cls)
        name = cls.spec.capability
        if name in self._sources:
            raise PipelineError(
                f"batch pipeline {name!r} is already registered ({self._sources[name]})"
            )
        self._classes[name] = cls
        self._sources[name] = source

    def names(self) -> list[str]:
        """Every capability known here, sorted (importing no built-in)."""
        self._load_entry_points()
        return sorted(self._sources)

    def source(self, capability: str) -> str:
        """``builtin``, ``code``, or the distribution (``name version``) that declared it.

        Raises:
            UnknownCapabilityError: no such capability.
        """
        self._load_entry_points()
        if capability not in self._sources:
            raise self._unknown(capability)
        return self._sources[capability]

    def get(self, capability: str) -> type[BatchPipeline]:
        """The pipeline class serving ``capability`` (a built-in is imported now).

        Raises:
            UnknownCapabilityError: no such capability (the message lists the known ones).
            PipelineError: a built-in that cannot be imported here (its problem is kept).
        """
        self._load_entry_points()
        known = self._classes.get(capability)
        if known is not None:
            return known
        path = self._paths.get(capability)
        if path is None:
            raise self._unknown(capability)
        try:
            cls = _check_class(_import(path))
            if cls.spec.capability != capability:
                raise PipelineError(f"{path} serves {cls.spec.capability!r} in its spec")
        except Exception as exc:  # an import can fail in any way
            problem = str(exc) if isinstance(exc, PipelineError) else f"{path}: {exc!r}"
            self._problems[capability] = problem
            raise PipelineError(f"batch pipeline {capability!r} cannot be used: {problem}") from exc
        del self._paths[capability]
        self._classes[capability] = cls
        return cls

    def _unknown(self, capability: str) -> UnknownCapabilityError:
        known = ", ".join(sorted(self._sources)) or "none"
        return UnknownCapabilityError(f"unknown capability {capability!r} (known: {known})")

    def _load_entry_points(self) -> None:
        if self._entry_points_pending:
            self._entry_points_pending = False
            problems = load_entry_points(_GROUP, taken=self._taken_by, register=self.register)
            self._problems.update(problems)

    def _taken_by(self, capability: str) -> str | None:
        """The ``module:Class`` serving ``capability``; None where it is free."""
        if capability not in self._sources:
            return None
        return self._paths.get(capability) or class_path(self._classes[capability])


def _import(path: str) -> object:
    module, _, name = path.partition(":")
    value: object = importlib.import_module(module)
    for part in name.split("."):
        value = getattr(value, part)
    return value


def _check_class(cls: object) -> type[BatchPipeline]:
    return check_class(cls, BatchPipeline, BatchSpec)  # type: ignore[type-abstract]


_GROUP: EntryPointGroup[BatchPipeline] = EntryPointGroup(
    name=BATCH_ENTRY_POINT_GROUP,
    kind="batch pipeline",
    key="capability",
    keyed_as="serves",
    check=_check_class,
    key_of=lambda cls: cls.spec.capability,
)
