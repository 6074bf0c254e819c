"""Counters, gauges and histograms rendered in the Prometheus text exposition format
(version 0.0.4).

How this works:

* A family is declared once, with a ``MetricFamily``: its kind, help text, label names and, for
  a histogram, its bucket bounds. Every sample must carry exactly the declared labels, so what
  a family can be labelled with is fixed where it is declared (``lpstream.metric_families``
  lists them all).
* Series are fed as things happen (``inc``, ``set``, ``observe``), or read from live state
  when ``/metrics`` is scraped: a collector (``add_collector``) runs before each ``render`` and
  ``replace``s whole families, so their label values are exactly what is live then.
* Label values stay bounded by what the node holds: whoever forgets a labelled thing drops its
  series (``forget``: every series with ``stream="cam"``, say, once the gateway forgets the
  stream; ``retain``: only the orchestrators still in the pool).
* Everything runs on the trio thread: the registry has no lock.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Literal, Protocol, runtime_checkable

import attrs

__all__ = ["MetricFamily", "Metrics", "MetricsSource"]

Kind = Literal["counter", "gauge", "histogram"]
LabelKey = tuple[tuple[str, str], ...]
"""A series' labels, sorted by name."""

_LABEL_VALUE = re.compile(r'[\\"\n]')
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _escape(value: str) -> str:
    return _LABEL_VALUE.sub(lambda m: {"\\": "\\\\", '"': '\\"', "\n": "\\n"}[m.group(0)], value)


def _check_buckets(family: MetricFamily, attribute: object, value: tuple[float, ...]) -> None:
    if (family.kind == "histogram") != bool(value):
        raise ValueError(f"{family.name}: buckets go with histograms, and histograms need them")
    if list(value) != sorted(set(value)) or not all(math.isfinite(b) for b in value):
        raise ValueError(f"{family.name}: buckets must be finite and strictly increasing")


def _check_name(family: MetricFamily, attribute: object, value: str) -> None:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a metric name")


@attrs.frozen(kw_only=True)
class MetricFamily:
    """One metric family as declared: what it measures and how it is labelled."""

    name: str = attrs.field(validator=_check_name)
    """Its name without the registry's prefix (``segments_in_total``)."""
    kind: Kind
    """``counter``, ``gauge`` or ``histogram``."""
    help: str
    """What it measures (the ``# HELP`` line; the README says the same)."""
    labels: tuple[str, ...] = ()
    """The label names every sample carries."""
    buckets: tuple[float, ...] = attrs.field(default=(), validator=_check_buckets)
    """A histogram's upper bounds, in increasing order (``+Inf`` is implied)."""


@attrs.define
class _Histogram:
    """One histogram series: per-bucket counts (not cumulative), the sum and the count."""

    counts: list[int]
    sum: float = 0.0
    count: int = 0


@attrs.define
class _Family:
    declared: MetricFamily
    values: dict[LabelKey, float] = attrs.Factory(dict)
    histograms: dict[LabelKey, _Histogram] = attrs.Factory(dict)

    def drop(self, keep: Callable[[LabelKey], bool]) -> None:
        self.values = {k: v for k, v in self.values.items() if keep(k)}
        self.histograms = {k: h for k, h in self.histograms.items() if keep(k)}


@runtime_checkable
class MetricsSource(Protocol):
    """Something that feeds a registry it is handed (the gateway's orchestrator pool)."""

    def export_metrics(self, metrics: Metrics) -> None:
        """Declares its families in ``metrics`` and feeds them from now on."""


@attrs.define
class Metrics:
    """The node's metrics registry (see the module comment)."""

    prefix: str = "lpstream_"
    _families: dict[str, _Family] = attrs.Factory(dict)
    _collectors: list[Callable[[], None]] = attrs.Factory(list)

    def declare(self, *families: MetricFamily) -> None:
        """Declares ``families``; declaring one again the same way changes nothing.

        Raises:
            ValueError: a family of that name was declared otherwise.
        """
        for family in families:
            known = self._families.get(family.name)
            if known is None:
                self._families[family.name] = _Family(family)
            elif known.declared != family:
                raise ValueError(f"metric {family.name} was declared otherwise before")

    def add_collector(self, collect: Callable[[], None]) -> None:
        """Runs ``collect`` before every ``render`` (it ``replace``s families from live
        state)."""
        self._collectors.append(collect)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Adds ``amount`` (>= 0) to the counter ``name``."""
        family = self._family(name, "counter", labels)
        if not amount >= 0:
            raise ValueError(f"counter {name} cannot grow by {amount}")
        key = _key(labels)
        family.values[key] = family.values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        """Sets the gauge ``name``."""
        self._family(name, "gauge", labels).values[_key(labels)] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Adds one observation ``value`` to the histogram ``name``."""
        family = self._family(name, "histogram", labels)
        if math.isnan(value):
            raise ValueError(f"{name}: NaN is no observation")
        buckets = family.declared.buckets
        key = _key(labels)
        series = family.histograms.get(key)
        if series is None:
            series = family.histograms[key] = _Histogram(counts=[0] * (len(buckets) + 1))
        series.counts[bisect.bisect_left(buckets, value)] += 1
        series.sum += value
        series.count += 1

    def replace(self, name: str, samples: Iterable[tuple[Mapping[str, str], float]]) -> None:
        """Makes ``samples`` (labels, value) the only series of the counter or gauge ``name``:
        for figures a collector reads from live state (a counter's value is then a running
        total the node keeps, such as the wei a payment ledger has received)."""
        family = self._families[name]
        if family.declared.kind == "histogram":
            raise ValueError(f"{name} is a histogram: observe it")
        values: dict[LabelKey, float] = {}
        for labels, value in samples:
            self._check_labels(family, labels)
            values[_key(labels)] = value
        family.values = values

    def forget(self, **labels: str) -> None:
        """Drops every series, in every family, that carries all of ``labels``."""
        wanted = set(labels.items())
        for family in self._families.values():
            if labels.keys() <= set(family.declared.labels):
                family.drop(lambda key: not wanted <= set(key))

    def retain(self, label: str, values: Collection[str]) -> None:
        """Drops every series whose ``label`` has a value not in ``values``."""
        for family in self._families.values():
            if label in family.declared.labels:
                family.drop(lambda key: dict(key)[label] in values)

    def value(self, name: str, **labels: str) -> float:
        """A counter's or gauge's value (0 for a series not seen), or, for ``NAME_sum`` and
        ``NAME_count`` of a histogram, its sum and count."""
        family = self._families.get(name)
        if family is not None and family.declared.kind != "histogram":
            return family.values.get(_key(labels), 0.0)
        base, _, part = name.rpartition("_")
        histogram = self._families.get(base)
        if part not in ("sum", "count") or histogram is None:
            raise KeyError(f"no counter, gauge or histogram sum or count is named {name}")
        series = histogram.histograms.get(_key(labels))
        if series is None:
            return 0.0
        return series.sum if part == "sum" else float(series.count)

    def render(self) -> str:
        """The text exposition of every family (collectors run first)."""
        for collect in self._collectors:
            collect()
        lines: list[str] = []
        for name, family in sorted(self._families.items()):
            full = self.prefix + name
            lines.append(f"# HELP {full} {_help(family.declared.help)}")
            lines.append(f"# TYPE {full} {family.declared.kind}")
            if family.declared.kind == "histogram":
                for key, series in sorted(family.histograms.items()):
                    lines += _histogram_samples(full, key, family.declared.buckets, series)
            elif not family.values and not family.declared.labels:
                lines.append(f"{full} 0.0")
            else:
                lines += [_sample(full, key, v) for key, v in sorted(family.values.items())]
        return "\n".join(lines) + "\n"

    def _family(self, name: str, kind: Kind, labels: Mapping[str, str]) -> _Family:
        family = self._families[name]
        if family.declared.kind != kind:
            raise ValueError(f"{name} is a {family.declared.kind}, not a {kind}")
        self._check_labels(family, labels)
        return family

    @staticmethod
    def _check_labels(family: _Family, labels: Mapping[str, str]) -> None:
        if labels.keys() != set(family.declared.labels):
            raise ValueError(
                f"{family.declared.name} is labelled {family.declared.labels}, not {tuple(labels)}"
            )


def _key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _sample(name: str, key: LabelKey, value: float) -> str:
    if not key:
        return f"{name} {_number(value)}"
    label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
    return f"{name}{{{label_text}}} {_number(value)}"


def _histogram_samples(
    name: str, key: LabelKey, buckets: tuple[float, ...], series: _Histogram
) -> list[str]:
    lines = []
    cumulative = 0
    for bound, count in zip((*buckets, math.inf), series.counts, strict=True):
        cumulative += count
        lines.append(_sample(f"{name}_bucket", (*key, ("le", _number(bound))), cumulative))
    lines.append(_sample(f"{name}_sum", key, series.sum))
    lines.append(_sample(f"{name}_count", key, series.count))
    return lines
