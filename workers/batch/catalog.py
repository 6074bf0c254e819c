"""The AI models a node offers: ``--ai-models FILE``, in go-livepeer's aiModels.json shape.

The file is a JSON list of objects, one per (pipeline, model). go-livepeer's fields are taken
as it writes them: ``pipeline`` (the capability), ``model_id``, ``price_per_unit`` (wei, a
whole number or a string of one), ``pixels_per_unit``, ``warm``, ``capacity``,
``currency`` (only wei) and ``optimization_flags`` (accepted, not used). ``url`` and
``token`` (go-livepeer's external runners) are refused: models run on this node's workers.
Ours: ``path``, the local directory the model loads from (relative to the file's folder); an
entry without one is priced and advertised by an orchestrator but loaded by no worker that
reads this file.

Everything else is refused, with the entry's index and field, so a misspelt field is not
silently dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from lpstream.errors import ConfigError
from workers.batch.registry import BatchRegistry

__all__ = [
    "MAX_AI_MODELS",
    "MAX_AI_MODELS_BYTES",
    "AiModel",
    "AiModelsError",
    "ai_models_from",
    "load_ai_models",
    "wei_price",
]

MAX_AI_MODELS = 64
"""Most entries one file may hold."""
MAX_AI_MODELS_BYTES = 1 << 20
"""Largest file read."""

_KNOWN_FIELDS = frozenset(
    {
        "pipeline",
        "model_id",
        "path",
        "price_per_unit",
        "pixels_per_unit",
        "currency",
        "warm",
        "capacity",
        "optimization_flags",
        "url",
        "token",
    }
)


class AiModelsError(ConfigError, ValueError):
    """An AI models file that cannot be used; the message names the entry and field."""


@attrs.frozen(kw_only=True)
class AiModel:
    """One model a node offers for one capability."""

    pipeline: str
    """The capability it serves (``text-to-image``...)."""
    model_id: str
    """Its name on the network (``org/name`` as on the hub)."""
    path: str | None = None
    """The local directory it loads from; None: not loaded by workers reading this file."""
    price_per_unit: int = 0
    """Wei per ``pixels_per_unit`` units of the capability."""
    pixels_per_unit: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    """Units ``price_per_unit`` buys."""
    warm: bool = False
    """Loaded when the worker starts, and never unloaded for being idle."""
    capacity: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    """Requests it runs at once (each a loaded copy of the model)."""

    @property
    def key(self) -> tuple[str, str]:
        """``(pipeline, model_id)``: what names it in a job."""
        return (self.pipeline, self.model_id)


def load_ai_models(
    path: str | os.PathLike[str], *, registry: BatchRegistry | None = None
) -> tuple[AiModel, ...]:
    """Reads an AI models file (see the module comment).

    Raises:
        AiModelsError: unreadable, not a JSON list of objects, too large, or an entry that
            cannot be used (its index and field named).
    """
    file = Path(path)
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_AI_MODELS_BYTES + 1)
    except OSError as exc:
        raise AiModelsError(f"{file}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_AI_MODELS_BYTES:
        raise AiModelsError(f"{file}: larger than {MAX_AI_MODELS_BYTES} bytes")
    try:
        entries = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AiModelsError(f"{file}: not JSON: {exc}") from None
    return ai_models_from(entries, base=file.absolute().parent, registry=registry, where=str(file))


def ai_models_from(
    entries: object,
    *,
    base: Path,
    registry: BatchRegistry | None = None,
    where: str = "AI models",
) -> tuple[AiModel, ...]:
    """The models of parsed JSON ``entries`` (relative paths taken from ``base``).

    Raises:
        AiModelsError: as :func:`load_ai_models`.
    """
    if not isinstance(entries, list):
        raise AiModelsError(f"{where}: must be a JSON list of models, not {_kind(entries)}")
    if len(entries) > MAX_AI_MODELS:
        raise AiModelsError(f"{where}: {len(entries)} models, at most {MAX_AI_MODELS} are taken")
    known = (registry or BatchRegistry()).names()
    models: list[AiModel] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(entries):
        model = _model(entry, f"{where}: model {index}", base, known)
        if model.key in seen:
            raise AiModelsError(
                f"{where}: model {index}: {model.pipeline} {model.model_id!r} is listed twice"
            )
        seen.add(model.key)
        models.append(model)
    return tuple(models)


def _model(entry: object, where: str, base: Path, known: list[str]) -> AiModel:
    if not isinstance(entry, Mapping):
        raise AiModelsError(f"{where}: must be an object, not {_kind(entry)}")
    unknown = sorted(str(name) for name in entry if name not in _KNOWN_FIELDS)
    if unknown:
        raise AiModelsError(
            f"{where}: unknown field {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(sorted(_KNOWN_FIELDS))})"
        )
    for field in ("url", "token"):
        if entry.get(field):
            raise AiModelsError(
                f"{where}: {field}: external runners are not supported; "
                "give the model's local directory in 'path'"
            )
    pipeline = entry.get("pipeline")
    if not isinstance(pipeline, str) or pipeline not in known:
        raise AiModelsError(
            f"{where}: pipeline: {pipeline!r} is not a known capability "
            f"(known: {', '.join(known) or 'none'})"
        )
    model_id = entry.get("model_id")
    problem = _model_id_problem(model_id)
    if problem is not None:
        raise AiModelsError(f"{where}: model_id: {problem}")
    assert isinstance(model_id, str)
    price_per_unit, pixels_per_unit = wei_price(entry, where)
    return AiModel(
        pipeline=pipeline,
        model_id=model_id,
        path=_path(entry.get("path"), where, base),
        price_per_unit=price_per_unit,
        pixels_per_unit=pixels_per_unit,
        warm=_flag(entry.get("warm", False), f"{where}: warm"),
        capacity=_whole(entry.get("capacity", 1), f"{where}: capacity"),
    )


def wei_price(entry: Mapping[str, object], where: str) -> tuple[int, int]:
    """The price a go-livepeer price entry (an aiModels.json model, a
    ``-maxPricePerCapability`` line) gives: ``price_per_unit`` wei (default 0) for
    ``pixels_per_unit`` units (default 1). Only wei: there is no price feed.

    Raises:
        AiModelsError: a currency other than wei, or a price that is not a whole number.
    """
    currency = entry.get("currency", "")
    if not isinstance(currency, str) or currency.strip().lower() not in ("", "wei"):
        raise AiModelsError(f"{where}: currency: {currency!r}; only prices in wei are taken")
    price = _price(entry.get("price_per_unit", 0), where)
    return price, _whole(entry.get("pixels_per_unit", 1), f"{where}: pixels_per_unit")


def _model_id_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, not {_kind(value)}"
    if not 1 <= len(value) <= 128:
        return f"must be 1 to 128 characters, not {len(value)}"
    if any(not "!" <= ch <= "~" for ch in value):
        return f"{value[:64]!r} must be printable ASCII without spaces"
    return None


def _price(value: object, where: str) -> int:
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return int(text)
        raise AiModelsError(
            f"{where}: price_per_unit: {value[:64]!r}; only prices in wei are taken "
            "(a whole number, or a string of one)"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AiModelsError(
            f"{where}: price_per_unit: {value!r}; only prices in wei are taken "
            "(a whole number, or a string of one)"
        )
    return value


def _whole(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AiModelsError(f"{where}: must be a whole number >= 1, not {value!r}")
    return value


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise AiModelsError(f"{where}: must be true or false, not {value!r}")
    return value


def _path(value: object, where: str, base: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value:
        raise AiModelsError(f"{where}: path: must be a directory's path, not {value!r}")
    return os.path.normpath(base / Path(value).expanduser())


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
