"""Pipeline parameters: typed declarations with defaults, and validation that lists every problem.

A pipeline declares its parameters as a tuple of ``*Param`` values. :func:`validate` turns what
a user sent (JSON-like values) into :class:`Params`, a frozen mapping holding every declared
parameter, defaults filled in. :func:`schema` gives the JSON-Schema-like description an
orchestrator advertises. A :class:`ModelParam` takes the name of a model in the worker's models
directory, never a path (:mod:`workers.pipelines.models`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from lpstream.errors import LpstreamError
from workers.pipelines.models import ModelDirectory, model_name_problem

__all__ = [
    "BoolParam",
    "ChoiceParam",
    "FloatParam",
    "IntParam",
    "InvalidParamsError",
    "ModelParam",
    "ParamSpec",
    "Params",
    "PathParam",
    "PipelineError",
    "StrParam",
    "schema",
    "validate",
]


class PipelineError(LpstreamError):
    """A pipeline could not be found, loaded, prepared or run."""


class InvalidParamsError(PipelineError, ValueError):
    """Parameters that do not fit a pipeline's declaration (answered as 400).

    Attributes:
        problems: one line per parameter that is wrong.
    """

    def __init__(self, pipeline: str, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(f"invalid parameters for pipeline {pipeline!r}: " + "; ".join(problems))


@attrs.frozen(kw_only=True)
class FloatParam:
    """A number, optionally bounded (inclusive)."""

    name: str
    default: float
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""

    def check(self, value: object) -> tuple[float | None, str | None]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"{self.name} must be a number, not {_kind(value)}"
        number = float(value)
        if not math.isfinite(number):
            return None, f"{self.name} must be finite"
        problem = _out_of_bounds(self.name, number, self.minimum, self.maximum)
        return (None, problem) if problem else (number, None)

    def schema(self) -> dict[str, Any]:
        return _bounded_schema("number", self.default, self.minimum, self.maximum, self.description)


@attrs.frozen(kw_only=True)
class IntParam:
    """A whole number, optionally bounded (inclusive)."""

    name: str
    default: int
    minimum: int | None = None
    maximum: int | None = None
    description: str = ""

    def check(self, value: object) -> tuple[int | None, str | None]:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"{self.name} must be a whole number, not {_kind(value)}"
        problem = _out_of_bounds(self.name, value, self.minimum, self.maximum)
        return (None, problem) if problem else (value, None)

    def schema(self) -> dict[str, Any]:
        return _bounded_schema(
            "integer", self.default, self.minimum, self.maximum, self.description
        )


@attrs.frozen(kw_only=True)
class BoolParam:
    """A switch."""

    name: str
    default: bool
    description: str = ""

    def check(self, value: object) -> tuple[bool | None, str | None]:
        if not isinstance(value, bool):
            return None, f"{self.name} must be true or false, not {_kind(value)}"
        return value, None

    def schema(self) -> dict[str, Any]:
        return _described({"type": "boolean", "default": self.default}, self.description)


@attrs.frozen(kw_only=True)
class ChoiceParam:
    """One string out of a fixed set."""

    name: str
    default: str
    choices: tuple[str, ...]
    description: str = ""

    def check(self, value: object) -> tuple[str | None, str | None]:
        if not isinstance(value, str) or value not in self.choices:
            return None, f"{self.name} must be one of {', '.join(self.choices)}, not {value!r}"
        return value, None

    def schema(self) -> dict[str, Any]:
        out = {"type": "string", "enum": list(self.choices), "default": self.default}
        return _described(out, self.description)


@attrs.frozen(kw_only=True)
class StrParam:
    """Free text up to ``max_length`` characters (a prompt, a label)."""

    name: str
    default: str
    max_length: int = 1000
    description: str = ""

    def check(self, value: object) -> tuple[str | None, str | None]:
        if not isinstance(value, str):
            return None, f"{self.name} must be a string, not {_kind(value)}"
        if len(value) > self.max_length:
            return None, f"{self.name} must be at most {self.max_length} characters"
        return value, None

    def schema(self) -> dict[str, Any]:
        out = {"type": "string", "maxLength": self.max_length, "default": self.default}
        return _described(out, self.description)


@attrs.frozen(kw_only=True)
class ModelParam:
    """The name of a model in the worker's models directory (a file or a folder there), never
    a path; empty means unset. The form is checked here, the entry by :func:`validate` given
    the directory."""

    name: str
    default: str = ""
    description: str = ""

    def check(self, value: object) -> tuple[str | None, str | None]:
        if not isinstance(value, str):
            return None, f"{self.name} must be a model name, not {_kind(value)}"
        problem = model_name_problem(value) if value else None
        if problem is not None:
            return None, f"{self.name} {value[:64]!r} {problem}"
        return value, None

    def schema(self) -> dict[str, Any]:
        out = {"type": "string", "format": "model-name", "default": self.default}
        return _described(out, self.description)


PathParam = ModelParam
"""The older name of :class:`ModelParam`: a pipeline's file parameter is a model's name."""

ParamSpec = FloatParam | IntParam | BoolParam | ChoiceParam | StrParam | ModelParam
"""One declared parameter."""


def _as_dict(values: Mapping[str, object]) -> dict[str, object]:
    return dict(values)


@attrs.frozen
class Params(Mapping[str, object]):
    """Validated parameter values: every declared parameter, with defaults filled in."""

    _values: Mapping[str, object] = attrs.field(converter=_as_dict)

    def __getitem__(self, name: str) -> object:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def get_float(self, name: str) -> float:
        value = self._values[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"parameter {name} is not a number")
        return float(value)

    def get_int(self, name: str) -> int:
        value = self._values[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"parameter {name} is not a whole number")
        return value

    def get_bool(self, name: str) -> bool:
        value = self._values[name]
        if not isinstance(value, bool):
            raise TypeError(f"parameter {name} is not a switch")
        return value

    def get_str(self, name: str) -> str:
        value = self._values[name]
        if not isinstance(value, str):
            raise TypeError(f"parameter {name} is not a string")
        return value


def validate(
    pipeline: str,
    declared: Sequence[ParamSpec],
    values: Mapping[str, object],
    *,
    base: Params | None = None,
    models: ModelDirectory | None = None,
) -> Params:
    """Checks ``values`` against ``declared``; unset names keep ``base`` (or the defaults).
    With ``models`` (the worker's), a model name must also name one of its entries; without,
    only its form is checked (where no directory is at hand: the gateway).

    Raises:
        InvalidParamsError: listing every unknown name and every value that does not fit.
    """
    by_name = {p.name: p for p in declared}
    problems = [f"unknown parameter {name!r}" for name in values if name not in by_name]
    result: dict[str, object] = (
        dict(base) if base is not None else {p.name: p.default for p in declared}
    )
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is None:
            continue
        checked, problem = spec.check(value)
        if problem is None and models is not None and isinstance(spec, ModelParam) and value:
            found = models.problem(str(value))
            problem = None if found is None else f"{name} {str(value)[:64]!r} {found}"
        if problem is not None:
            problems.append(problem)
        else:
            result[name] = checked
    if problems:
        raise InvalidParamsError(pipeline, problems)
    return Params(result)


def schema(declared: Sequence[ParamSpec]) -> dict[str, Any]:
    """A JSON-Schema object describing the parameters (what an orchestrator advertises)."""
    return {
        "type": "object",
        "properties": {p.name: p.schema() for p in declared},
        "additionalProperties": False,
    }


def _described(out: dict[str, Any], description: str) -> dict[str, Any]:
    if description:
        out["description"] = description
    return out


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _out_of_bounds(
    name: str, value: float, minimum: float | None, maximum: float | None
) -> str | None:
    """What is wrong with ``value`` against inclusive bounds, or None."""
    if minimum is not None and value < minimum:
        return f"{name} must be >= {minimum}, not {value}"
    if maximum is not None and value > maximum:
        return f"{name} must be <= {maximum}, not {value}"
    return None


def _bounded_schema(
    kind: str, default: float, minimum: float | None, maximum: float | None, description: str
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "default": default}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return _described(out, description)
