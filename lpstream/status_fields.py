"""How a status value's field is laid out in /api/status (rendered by ``lpstream.http.status``).

Status values are frozen attrs classes; each field renders as a key of its own unless its
metadata says otherwise with one of these markers.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

import attrs

__all__ = ["INLINE", "OMIT_NONE", "LatencySummary", "is_inline", "omits_none"]

INLINE = MappingProxyType({"status_inline": True})
"""The field's keys are merged into its parent's (a None value adds none)."""
OMIT_NONE = MappingProxyType({"status_omit_none": True})
"""The key is left out while the value is None (a section a node does not have)."""


def is_inline(field: attrs.Attribute[Any]) -> bool:
    """Whether ``field`` is marked ``INLINE``."""
    return bool(field.metadata.get("status_inline"))


def omits_none(field: attrs.Attribute[Any]) -> bool:
    """Whether ``field`` is marked ``OMIT_NONE``."""
    return bool(field.metadata.get("status_omit_none"))


@attrs.frozen(kw_only=True)
class LatencySummary:
    """A latency distribution in milliseconds."""

    count: int
    """Samples."""
    median: float | None
    """Median in ms, to 0.1 ms; None without samples."""
    p95: float | None
    """95th percentile in ms, to 0.1 ms; None without samples."""

    @classmethod
    def from_samples(cls, seconds: Iterable[float]) -> LatencySummary:
        """The summary of latencies given in seconds."""
        latencies = sorted(seconds)
        if not latencies:
            return cls(count=0, median=None, p95=None)
        return cls(
            count=len(latencies),
            median=round(statistics.median(latencies) * 1000, 1),
            p95=round(latencies[int(0.95 * (len(latencies) - 1))] * 1000, 1),
        )
