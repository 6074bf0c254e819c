"""Counters, gauges and summaries (sum and count) rendered in the Prometheus text exposition
format (version 0.0.4)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import attrs

__all__ = ["Metrics"]

_LABEL_VALUE = re.compile(r'[\\"\n]')


def _escape(value: str) -> str:
    return _LABEL_VALUE.sub(lambda m: {"\\": "\\\\", '"': '\\"', "\n": "\\n"}[m.group(0)], value)


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


@attrs.define
class _Family:
    kind: str
    help: str
    values: dict[tuple[tuple[str, str], ...], float] = attrs.Factory(dict)


@attrs.define
class Metrics:
    """A small registry: ``inc`` for counters, ``set`` for gauges, ``observe`` for summaries
    (their ``_sum`` and ``_count``), ``render`` for /metrics."""

    prefix: str = "lpstream_"
    _families: dict[str, _Family] = attrs.Factory(dict)

    def counter(self, name: str, help: str) -> None:
        self._families.setdefault(name, _Family("counter", help))

    def gauge(self, name: str, help: str) -> None:
        self._families.setdefault(name, _Family("gauge", help))

    def summary(self, name: str, help: str) -> None:
        self._families.setdefault(name, _Family("summary", help))
        self._families.setdefault(name + "_count", _Family("summary_count", help))

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Adds one observation ``value`` to the summary ``name``."""
        family = self._families[name]
        if family.kind != "summary":
            raise ValueError(f"{name} is not a summary")
        key = _key(labels)
        family.values[key] = family.values.get(key, 0.0) + value
        counts = self._families[name + "_count"].values
        counts[key] = counts.get(key, 0.0) + 1

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        family = self._families[name]
        if family.kind != "counter" or amount < 0:
            raise ValueError(f"{name} is not a counter that can grow by {amount}")
        key = _key(labels)
        family.values[key] = family.values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        family = self._families[name]
        if family.kind != "gauge":
            raise ValueError(f"{name} is not a gauge")
        family.values[_key(labels)] = value

    def value(self, name: str, **labels: str) -> float:
        return self._families[name].values.get(_key(labels), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        for name, family in sorted(self._families.items()):
            if family.kind == "summary_count":
                continue  # rendered with its summary
            full = self.prefix + name
            lines.append(f"# HELP {full} {family.help}")
            lines.append(f"# TYPE {full} {family.kind}")
            series = [(full, family.values)]
            if family.kind == "summary":
                series = [
                    (full + "_sum", family.values),
                    (full + "_count", self._families[name + "_count"].values),
                ]
            for shown_name, values in series:
                lines += _samples(shown_name, values)
        return "\n".join(lines) + "\n"


def _samples(full: str, values: Mapping[tuple[tuple[str, str], ...], float]) -> list[str]:
    lines = []
    for key, value in sorted((values or {(): 0.0}).items()):
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
        shown = repr(float(value)) if math.isfinite(value) else "NaN"
        lines.append(f"{full}{{{label_text}}} {shown}" if label_text else f"{full} {shown}")
    return lines
