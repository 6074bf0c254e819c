"""The node-wide memory budget: new work is refused, not taken, once the process is this big.

The process's resident memory is read from ``/proc/self/statm`` (a few microseconds) when new
work is asked for — a publish, a live AI session — and the work is refused with 503 while it is
over the budget. Work already running is never cut: the per-connection and per-stream limits
bound what it can add. ``trim_freed_memory`` collects garbage cycles and gives freed heap pages
back to the system (glibc keeps them in its arenas otherwise), so that RSS falls again after a
burst of work ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
from pathlib import Path

import attrs

from lpstream.errors import ProtocolError

__all__ = ["MemoryBudget", "default_memory_budget", "process_rss", "trim_freed_memory"]

log = logging.getLogger("lpstream")

DEFAULT_FRACTION = 0.75
"""The default budget: this share of the memory the process may use (machine or cgroup)."""


def process_rss() -> int:
    """This process's resident memory in bytes (0 where /proc is not available)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _available_memory() -> int:
    """Physical memory, or the cgroup's limit when that is lower (containers)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def default_memory_budget() -> int:
    """``DEFAULT_FRACTION`` of the memory this process may use, in bytes."""
    return int(_available_memory() * DEFAULT_FRACTION)


@attrs.define
class MemoryBudget:
    """Refuses new work while the process's RSS is over ``limit`` bytes (0: never)."""

    limit: int
    """Bytes of resident memory above which new work is refused."""
    refused_total: int = 0
    """Requests refused for memory since the start."""

    def check(self, what: str) -> None:
        """Lets ``what`` (e.g. "a new stream") start, or raises.

        Raises:
            ProtocolError: 503 while the process is over its budget.
        """
        if not self.limit:
            return
        rss = process_rss()
        if rss > self.limit:
            self.refused_total += 1
            log.warning(
                "refusing %s: memory budget reached (RSS %d MB of %d MB, --memory-budget)",
                what,
                rss // 2**20,
                self.limit // 2**20,
            )
            raise ProtocolError(
                f"node over its memory budget ({rss // 2**20} of {self.limit // 2**20} MB): "
                f"{what} refused, retry later",
                code=503,
            )


_libc: ctypes.CDLL | None = None


def trim_freed_memory() -> None:
    """Collects garbage cycles, then returns freed heap memory to the system (glibc's
    ``malloc_trim``; only the collection without glibc).

    The cycles matter: an exception kept while a segment failed holds its traceback, whose
    frames hold the segment's buffers, until the cycle collector's next full pass."""
    global _libc
    gc.collect()
    if _libc is None:
        name = ctypes.util.find_library("c")
        if name is None:
            return
        _libc = ctypes.CDLL(name)
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
