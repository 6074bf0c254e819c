"""Runs the real ``lpstream`` program as subprocesses and talks to it like a user would.

The subprocess handling and the HTTP helpers are shared with the benchmarks and live in
``benchmarks.harness`` (``start_dev`` too); this module adds ``running_dev`` for tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.harness.nodes import (
    LOOPBACK_PORTS,
    LPSTREAM,
    NodeProcess,
    http_get,
    http_json,
    parse_media_playlist,
    push_command,
    start_dev,
    wait_for,
)

__all__ = [
    "LOOPBACK_PORTS",
    "LPSTREAM",
    "NodeProcess",
    "http_get",
    "http_json",
    "parse_media_playlist",
    "push_command",
    "running_dev",
    "start_dev",
    "wait_for",
]


@contextmanager
def running_dev(
    log_dir: Path,
    *flags: str,
    name: str = "dev",
    offchain: bool = True,
    ready_timeout: float = 30.0,
    clean_exit: bool = True,
) -> Iterator[NodeProcess]:
    """``start_dev`` for the length of a block; on leaving it the node is stopped (SIGINT) and,
    with ``clean_exit``, must exit 0."""
    node = start_dev(log_dir, *flags, name=name, offchain=offchain, ready_timeout=ready_timeout)
    try:
        yield node
    finally:
        code = node.stop()
        if clean_exit:
            assert code == 0, node.log_path.read_text()[-3000:]
