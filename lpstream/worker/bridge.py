"""A transcode's worker thread and the trio thread, in both directions, without a trip to
the trio thread for every chunk or frame.

How this works:

* In: ``TrickleReader`` is the blocking file object the decoder reads. Each trip to the trio
  thread brings everything that arrived since the last one (``SegmentBuffer.read_from``): a
  segment comes in many small chunks, and a busy trio thread makes every trip slow.
* Out: ``RelayPump`` hands a live job's output to its relay (the requester, frame by frame)
  in order, without the encoder's thread waiting for each send: the thread queues each chunk
  (``trio.lowlevel.TrioToken.run_sync_soon``, first in, first out) and a trio task sends them
  one after another. At most ``backlog`` chunks wait; past that the thread waits for room,
  which is the backpressure a slow requester exerts. A send that fails is raised in the
  thread at its next chunk (as a blocking send would have); the pump then discards the rest.
"""

from __future__ import annotations

import io
import math
import threading
from typing import Any

import trio

from lpstream.errors import MediaError
from lpstream.jobs import Relay
from lpstream.trickle import SegmentBuffer

__all__ = ["RelayPump", "TrickleReader"]


class TrickleReader(io.RawIOBase):
    """A blocking reader over a ``SegmentBuffer``, used from a worker thread."""

    def __init__(self, source: SegmentBuffer, token: trio.lowlevel.TrioToken) -> None:
        self._source = source
        self._token = token
        self._index = 0
        self._pending = memoryview(b"")
        self._eof = False
        self._stopped = False
        self._waiting: trio.CancelScope | None = None

    def stop(self) -> None:
        """Makes a blocked or later ``read`` see the end (called on the trio thread)."""
        self._stopped = True
        if self._waiting is not None:
            self._waiting.cancel()

    def readable(self) -> bool:
        return True

    async def _next(self) -> bytes:
        if self._stopped:
            return b""
        with trio.CancelScope() as self._waiting:
            data, self._index = await self._source.read_from(self._index)
            return data
        return b""  # stopped: the job was cancelled

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending and not self._eof:
            chunk = trio.from_thread.run(self._next, trio_token=self._token)
            if not chunk:
                self._eof = True
            self._pending = memoryview(chunk)
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class RelayPump:
    """A worker thread's output chunks, sent to ``relay`` in order by a trio task."""

    def __init__(self, relay: Relay, token: trio.lowlevel.TrioToken, backlog: int = 64) -> None:
        self._relay = relay
        self._token = token
        self._room = threading.Semaphore(backlog)
        self._send, self._receive = trio.open_memory_channel[tuple[int, bytes]](math.inf)
        self._error: BaseException | None = None
        self._ended = False
        self._done = trio.Event()

    def data(self, index: int, data: bytes) -> None:
        """Queues one chunk of rendition ``index`` (worker thread); waits while ``backlog``
        chunks wait.

        Raises:
            Exception: the relay failed an earlier chunk (its error).
            MediaError: the pump ended (the job was cancelled).
        """
        while not self._room.acquire(timeout=0.1):
            self._check()
        self._check()
        self._token.run_sync_soon(self._send.send_nowait, (index, data))

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._ended:
            raise MediaError("the job's output stopped being relayed")

    async def run(self) -> None:
        """Sends what the thread queues until :meth:`drain` (trio task)."""
        try:
            async for index, data in self._receive:
                if self._error is None:
                    try:
                        await self._relay.data(index, data)
                    except Exception as exc:  # the thread raises it, as a blocking send would
                        self._error = exc
                self._room.release()
        finally:
            self._ended = True
            self._done.set()

    async def drain(self) -> None:
        """Waits until everything the thread queued is sent; call it once the thread is done
        (its queued chunks are all in by then: they were queued before its end was)."""
        self._send.close()
        await self._done.wait()
        if self._error is not None:
            raise self._error
