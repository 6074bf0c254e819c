"""A segment's bytes as they are produced, readable from the start by any number of readers.

The gateway starts sending a segment to an orchestrator before the segmenter has finished it,
and must be able to send it again, from the first byte, to another orchestrator if the first
one fails. The orchestrator does the same towards its workers. ``SegmentBuffer`` keeps the
bytes (segments are a few MB at most) and wakes readers as more arrive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import trio

from lpstream.errors import MediaError, RemoteProtocolError

__all__ = ["SegmentBuffer"]


@attrs.define
class SegmentBuffer:
    """Append-only bytes with a "closed" (complete) or "failed" end, replayable by readers."""

    max_size: int = 64 * 1024 * 1024
    """Largest segment accepted; more is a 413 from whoever feeds it."""
    _chunks: list[bytes] = attrs.Factory(list)
    _size: int = 0
    _closed: bool = False
    _error: BaseException | None = None
    _changed: trio.Event = attrs.Factory(trio.Event)
    closed_at: float | None = None
    """When the last byte arrived (``trio.current_time()``), once closed."""

    @property
    def size(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, data: bytes) -> None:
        if self._closed or self._error is not None:
            raise RuntimeError("append to a finished segment buffer")
        if self._size + len(data) > self.max_size:
            raise RemoteProtocolError(f"segment larger than {self.max_size} bytes", code=413)
        if data:
            self._chunks.append(data)
            self._size += len(data)
            self._wake()

    def close(self) -> None:
        """Marks the segment complete."""
        self._closed = True
        self.closed_at = trio.current_time()
        self._wake()

    def fail(self, error: BaseException) -> None:
        """Marks the segment as never to be completed; readers raise ``error``."""
        if not self._closed:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)

    async def wait_closed(self) -> None:
        while not self._closed:
            if self._error is not None:
                raise MediaError(f"segment upload failed: {self._error}")
            await self._changed.wait()

    async def read_from(self, index: int) -> tuple[bytes, int]:
        """Every chunk from the ``index``-th that is in now, joined, and the index after them;
        waits for one if none is. ``b""`` once the buffer is closed and read to its end: a
        reader on another thread gets what piled up in one call, not one call per chunk.

        Raises:
            MediaError: the upload failed.
        """
        while index >= len(self._chunks):
            if self._closed:
                return b"", index
            if self._error is not None:
                raise MediaError(f"segment upload failed: {self._error}")
            await self._changed.wait()
        return b"".join(self._chunks[index:]), len(self._chunks)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yields every chunk from the first, waiting for more until the buffer is closed."""
        index = 0
        while True:
            while index < len(self._chunks):
                yield self._chunks[index]
                index += 1
            if self._closed:
                return
            if self._error is not None:
                raise MediaError(f"segment upload failed: {self._error}")
            await self._changed.wait()
