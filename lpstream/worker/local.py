"""Runs transcode jobs in this process: PyAV work on threads, fed by a trickling upload.

The transcoder is blocking code. It runs on a worker thread (``trio.to_thread``) under a
``CapacityLimiter`` sized to the worker's capacity, and reads the segment through
``_TrickleReader``, a blocking file object whose ``read`` asks the trio thread for the next
chunk of the ``SegmentBuffer``: decoding starts while the upload is still arriving. Outputs
are collected per rendition and handed back whole when the job is done, so a job that fails
half-way can be retried elsewhere without a partial result having escaped.
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

from lpstream.errors import MediaError
from lpstream.jobs import JobOutput
from lpstream.taskgroups import one_error
from lpstream.trickle import SegmentBuffer
from lpstream.wire import Job, RenditionInfo
from workers import LadderTranscoder, RenditionOutput

__all__ = ["LocalWorker"]

log = logging.getLogger("lpstream.worker")


class _TrickleReader(io.RawIOBase):
    """A blocking reader over a ``SegmentBuffer``, used from a worker thread."""

    def __init__(self, chunks: AsyncIterator[bytes], token: trio.lowlevel.TrioToken) -> None:
        self._chunks = chunks
        self._token = token
        self._pending = b""
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
            try:
                return await self._chunks.__anext__()
            except StopAsyncIteration:
                return b""
        return b""  # stopped: the job was cancelled

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending and not self._eof:
            chunk = trio.from_thread.run(self._next, trio_token=self._token)
            if not chunk:
                self._eof = True
            self._pending = chunk
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


@attrs.define
class LocalWorker:
    """Transcodes with this process's CPU or GPU."""

    capacity: int = 2
    """Sessions it takes at once; also how many jobs may transcode at the same time."""
    encoder: str = "auto"
    """``auto``, ``libx264`` or ``nvenc``."""
    worker_id: str = "local"
    _limiter: trio.CapacityLimiter = attrs.field(init=False)
    _jobs_done: int = 0

    def __attrs_post_init__(self) -> None:
        self._limiter = trio.CapacityLimiter(max(1, self.capacity))

    @property
    def jobs_done(self) -> int:
        return self._jobs_done

    async def run_job(self, job: Job, source: SegmentBuffer) -> list[JobOutput]:
        """Transcodes the segment in ``source`` (which may still be growing).

        Raises:
            RemoteProtocolError: (400) the job's profiles are out of range.
            MediaError: the segment could not be decoded or encoded.
        """
        profiles = job.video_profiles()
        transcoder = LadderTranscoder(tuple(profiles), encoder=self.encoder)
        outputs: list[bytearray] = [bytearray() for _ in profiles]
        reader = _TrickleReader(source.chunks(), trio.lowlevel.current_trio_token())

        def on_data(index: int, data: bytes) -> None:
            outputs[index] += data

        def work() -> list[RenditionOutput]:
            return transcoder.transcode(reader, on_data)

        async def stop_reader_when_cancelled() -> None:
            try:
                await trio.sleep_forever()
            finally:
                reader.stop()

        try:
            with one_error():
                async with trio.open_nursery() as nursery:
                    # A blocked thread cannot be cancelled; ending its input makes it return.
                    nursery.start_soon(stop_reader_when_cancelled)
                    results = await trio.to_thread.run_sync(work, limiter=self._limiter)
                    nursery.cancel_scope.cancel()
        except MediaError:
            raise
        except Exception as exc:  # a bug or an unmapped library error: report it, keep serving
            log.exception("transcode failed")
            raise MediaError(f"transcode failed: {exc}") from exc
        self._jobs_done += 1
        return [
            JobOutput(
                info=RenditionInfo(
                    name=r.name,
                    width=r.width,
                    height=r.height,
                    pixels=r.pixels,
                    frames=r.frames,
                    size=len(outputs[i]),
                    duration_ms=r.duration_ms,
                ),
                data=bytes(outputs[i]),
            )
            for i, r in enumerate(results)
        ]
