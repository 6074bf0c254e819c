"""The node's view of the chain: a snapshot polled on a timer, blocking calls on a thread.

web3 is synchronous, so every chain call runs through ``trio.to_thread`` under one
``CapacityLimiter``: one call at a time, never on the trio thread (the embedded dev chain is
not thread-safe either). ``ChainWatch`` polls ``ChainClient.snapshot()`` and tells listeners
about each new block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import trio

from payments.chain.client import ChainClient, ChainSnapshot

__all__ = ["ChainWatch"]

log = logging.getLogger("lpstream.chain")


@attrs.define
class ChainWatch:
    """Polls the chain and keeps the latest ``ChainSnapshot``; calls listeners on new blocks."""

    chain: ChainClient
    limiter: trio.CapacityLimiter
    interval: float = 0.5
    snapshot: ChainSnapshot | None = None
    _listeners: list[Callable[[ChainSnapshot], None]] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)

    def subscribe(self, listener: Callable[[ChainSnapshot], None]) -> None:
        self._listeners.append(listener)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs a blocking chain call on a thread, one at a time."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def refresh(self) -> ChainSnapshot:
        snapshot: ChainSnapshot = await self.call(self.chain.snapshot)
        if self.snapshot is None or snapshot.latest_block != self.snapshot.latest_block:
            self.snapshot = snapshot
            for listener in self._listeners:
                listener(snapshot)
            self._changed.set()
            self._changed = trio.Event()
        return snapshot

    async def wait_block_after(self, block: int) -> ChainSnapshot:
        while self.snapshot is None or self.snapshot.latest_block <= block:
            await self._changed.wait()
        return self.snapshot

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.refresh()
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception as exc:  # a chain hiccup must not stop the node; log and retry
                log.warning("chain poll failed: %s", exc)
