"""Classes other packages declare in an entry-point group: loaded, checked, problems kept.

How this works
--------------
A registry (``workers.pipelines.registry`` for live pipelines, ``workers.batch.registry`` for
batch pipelines) describes its group as an :class:`EntryPointGroup`: the group's name, how to
check that a loaded object is a usable class, and the key a class names itself by (a
pipeline's ``spec.name``, a batch pipeline's ``spec.capability``), which must equal the entry
point's name. :func:`load_entry_points` reads the group in order:

* a name already taken is left alone where the entry point names the very class registered
  under it (lpstream's own declaration of a built-in), and is a problem otherwise;
* an entry point that fails to import, is not a usable class, or whose class names itself
  otherwise is a problem;
* any other is handed to the registry at once, so a later entry point of the same name finds
  it taken.

A problem is logged and returned, never raised: a broken plugin does not take the others down.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import attrs

from workers.pipelines.params import PipelineError

__all__ = ["EntryPointGroup", "Registration", "check_class", "class_path", "load_entry_points"]

_log = logging.getLogger(__name__)

C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)


class Registration(Protocol[C_contra]):
    """A registry's ``register``: adds ``cls``, declared by ``source``."""

    def __call__(self, cls: type[C_contra], *, source: str) -> None: ...


@attrs.frozen(kw_only=True)
class EntryPointGroup(Generic[C]):
    """An entry-point group classes are declared in, and the rules for its classes."""

    name: str
    """The group, as in ``entry_points.txt`` (``lpstream.pipelines``)."""
    kind: str
    """What the classes are, for the log (``pipeline``)."""
    key: str
    """What an entry point's name stands for (``name``, ``capability``)."""
    keyed_as: str
    """How a class states its key, in a problem (``is named``, ``serves``)."""
    check: Callable[[object], type[C]]
    """Returns a loaded object as a usable class; raises ``PipelineError`` if it is not one."""
    key_of: Callable[[type[C]], str]
    """The key a class names itself by."""


def check_class(loaded: object, base: type[C], spec: type) -> type[C]:
    """``loaded`` as a concrete subclass of ``base`` whose ``spec`` attribute is a ``spec``.

    Raises:
        PipelineError: it is not one (the message says why).
    """
    if not isinstance(loaded, type) or not issubclass(loaded, base):
        raise PipelineError(f"{loaded!r} is not a {base.__name__} subclass")
    abstract = getattr(loaded, "__abstractmethods__", None)
    if abstract:
        raise PipelineError(f"{loaded.__name__} leaves {sorted(abstract)} abstract")
    if not isinstance(getattr(loaded, "spec", None), spec):
        raise PipelineError(f"{loaded.__name__} has no {spec.__name__} in 'spec'")
    return loaded


def class_path(cls: type) -> str:
    """``module:Class``, as an entry point names ``cls``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def load_entry_points(
    group: EntryPointGroup[C],
    *,
    taken: Callable[[str], str | None],
    register: Registration[C],
) -> dict[str, str]:
    """Reads ``group``: each usable class goes to ``register(cls, source=source)`` as it is found,
    ``source`` naming its distribution (``name version``). ``taken(key)`` is the
    ``module:Class`` path of what already holds ``key``, or None where it is free. Returns
    the entry points left out: name -> why (each logged)."""
    problems: dict[str, str] = {}

    def note(name: str, problem: str) -> None:
        problems[name] = problem
        _log.warning("%s entry point %r left out: %s", group.kind, name, problem)

    for entry in importlib.metadata.entry_points(group=group.name):
        dist = entry.dist
        source = f"{dist.name} {dist.version}" if dist is not None else entry.value
        holder = taken(entry.name)
        if holder is not None:
            # lpstream's own declaration of a built-in names the same class: nothing to do.
            if entry.value.replace(" ", "") != holder:
                note(entry.name, f"{source} declares a {group.key} already taken")
            continue
        try:
            loaded = entry.load()
        except Exception as exc:  # a plugin's import can fail in any way
            note(entry.name, f"{entry.value} failed to load: {exc!r}")
            continue
        try:
            cls = group.check(loaded)
        except PipelineError as exc:
            note(entry.name, str(exc))
            continue
        key = group.key_of(cls)
        if key != entry.name:
            note(entry.name, f"{entry.value} {group.keyed_as} {key!r} in its spec")
            continue
        register(cls, source=source)
    return problems
