"""One connection of a forward: segments remuxed in a worker thread, sent to the destination.

A :class:`Pusher` lives as long as one connection. It owns the remuxer of that connection (a
new connection starts a new output, at a keyframe) and shares the forward's
:class:`~.timeline.OutputTimeline`, so timestamps go on across reconnects. PyAV runs through
``trio.to_thread.run_sync`` (under the forward's limiter); the network waits are the
destination's own (:mod:`.rtmp_push`, :mod:`.srt_push`), each with a deadline.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator

import attrs
import trio

from lpstream.errors import MediaError

from .remux import FlvRemuxer, TsRemuxer
from .rtmp_push import RtmpConnection, open_rtmp_push
from .srt_push import SrtConnection, open_srt_push
from .target import ForwardTarget
from .timeline import OutputTimeline
from .values import ForwardSegment, ForwardSettings

__all__ = ["Pusher", "open_pusher"]


@attrs.define
class Pusher:
    """Sends segments over one open connection (see the module comment)."""

    _connection: RtmpConnection | SrtConnection
    _remuxer: FlvRemuxer | TsRemuxer
    _limiter: trio.CapacityLimiter | None = None

    @property
    def bytes_sent(self) -> int:
        """Bytes written to the connection so far."""
        return self._connection.bytes_sent

    async def push(self, segment: ForwardSegment) -> int:
        """Remuxes and sends one segment; returns the bytes that went out for it.

        Raises:
            MediaError: the segment could not be remuxed.
            TransportError: the connection failed or timed out.
            RemoteProtocolError: the destination ended the stream.
        """
        before = self._connection.bytes_sent
        if isinstance(self._remuxer, FlvRemuxer):
            assert isinstance(self._connection, RtmpConnection)
            tags = await trio.to_thread.run_sync(
                self._remuxer.remux, segment, limiter=self._limiter
            )
            await self._connection.send_tags(tags)
        else:
            assert isinstance(self._connection, SrtConnection)
            data = await trio.to_thread.run_sync(
                self._remuxer.remux, segment, limiter=self._limiter
            )
            await self._connection.send_bytes(data)
        return self._connection.bytes_sent - before


@contextlib.asynccontextmanager
async def open_pusher(
    target: ForwardTarget,
    settings: ForwardSettings,
    timeline: OutputTimeline,
    *,
    limiter: trio.CapacityLimiter | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Pusher]:
    """Connects to ``target``; yields once it accepts the stream; closes when the block ends.

    Raises:
        TransportError: the connection failed or timed out.
        RemoteProtocolError: the destination refused the stream.
    """
    if target.container == "flv":
        async with open_rtmp_push(
            target,
            connect_timeout=settings.connect_timeout,
            write_timeout=settings.write_timeout,
            ssl_context=ssl_context,
        ) as rtmp:
            flv = FlvRemuxer(timeline=timeline)
            try:
                yield Pusher(rtmp, flv, limiter)
            finally:
                _discard(flv)
    else:
        async with open_srt_push(
            target,
            connect_timeout=settings.connect_timeout,
            write_timeout=settings.write_timeout,
            limiter=limiter,
        ) as srt:
            ts = TsRemuxer(timeline=timeline)
            try:
                yield Pusher(srt, ts, limiter)
            finally:
                _discard(ts)


def _discard(remuxer: FlvRemuxer | TsRemuxer) -> None:
    """Ends the remuxer's output (in memory: quick) when its connection is gone."""
    with contextlib.suppress(MediaError):
        remuxer.close()
