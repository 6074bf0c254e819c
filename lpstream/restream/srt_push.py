"""Sending MPEG-TS over SRT (caller mode) through the system's libsrt.

How this works: libsrt is reached through the one binding, ``ingest.srt`` (PyAV's FFmpeg is
built without SRT); :func:`srt_available` says whether it was found. The caller socket
(:class:`ingest.srt.SrtSocket`) is in live mode and blocking, with libsrt's own deadlines:
``SRTO_CONNTIMEO`` bounds the connect, ``SRTO_SNDTIMEO`` each send and ``SRTO_PEERIDLETIMEO``
how long a silent peer is trusted, so no call waits for longer than the forward's timeouts.
The calls run in a worker thread (``trio.to_thread.run_sync``); libsrt keeps its last error
per thread, so each call reads its error in the thread that made it.

TS bytes go out as messages of at most 1316 bytes (seven 188-byte packets, SRT's live payload
size); a partial TS packet waits for the rest.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

import attrs
import trio

from ingest.srt import SrtSocket, srt_available

from .target import ForwardTarget

__all__ = ["SrtConnection", "open_srt_push", "srt_available"]


def _connect(target: ForwardTarget, *, connect_timeout: float, write_timeout: float) -> SrtSocket:
    return SrtSocket.connect(
        target.host,
        target.port,
        connect_timeout=connect_timeout,
        write_timeout=write_timeout,
        stream_id=target.stream_id,
        passphrase=target.passphrase,
        pbkeylen=target.pbkeylen,
        latency_ms=target.latency_ms,
        shown=target.redacted,
    )


@attrs.define
class SrtConnection:
    """A connected SRT destination: send TS bytes with :meth:`send_bytes`."""

    _socket: SrtSocket
    _limiter: trio.CapacityLimiter | None = None
    bytes_sent: int = 0
    """TS bytes handed to libsrt."""

    async def send_bytes(self, data: bytes) -> None:
        """Sends TS bytes (in a worker thread; libsrt bounds the wait).

        Raises:
            TransportError: the connection broke or a send timed out.
        """
        await trio.to_thread.run_sync(self._socket.send, data, limiter=self._limiter)
        self.bytes_sent += len(data)


@contextlib.asynccontextmanager
async def open_srt_push(
    target: ForwardTarget,
    *,
    connect_timeout: float,
    write_timeout: float,
    limiter: trio.CapacityLimiter | None = None,
) -> AsyncIterator[SrtConnection]:
    """Connects to an SRT listener; closes the socket when the block ends.

    Raises:
        TransportError: the connection failed, was rejected or broke.
    """
    sock = await trio.to_thread.run_sync(
        functools.partial(
            _connect, target, connect_timeout=connect_timeout, write_timeout=write_timeout
        ),
        limiter=limiter,
    )
    try:
        yield SrtConnection(sock, limiter)
    finally:
        sock.close()
