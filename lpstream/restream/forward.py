"""A forward: one rendition of a live stream, pushed on to one RTMP or SRT destination.

How this works
--------------
* :meth:`Forward.offer` takes each finished segment and never blocks: segments wait in a
  bounded queue, and when it is full the oldest is dropped (counted, logged once per burst)
  and the one after it marked as following a gap. A slow or dead destination thus never
  holds up the live path or grows memory.
* :meth:`Forward.run` is the forward's one task, until :meth:`Forward.close` or
  cancellation. It connects (:func:`~.pusher.open_pusher`), then sends segments in order as
  they come. When the connection fails (refused, timed out, dropped, the stream refused) it
  is closed, the forward waits out its backoff (``backoff_initial`` doubling to
  ``backoff_max``, back to the start once a segment gets through) and connects again. A new
  connection begins with the next segment (segments start with a keyframe) on the same
  output timeline: the destination sees timestamps go on, never back.
* A segment that cannot be remuxed is skipped (counted as dropped); several in a row mean
  the output is in a bad way, and the connection is begun anew.
* States: ``connecting`` (the first connection), ``live`` (the destination accepted the
  stream), ``retrying`` (a connection failed; waiting or connecting again), ``stopped``
  (closed). :meth:`Forward.status` is what ``/api/status`` shows; the URL in it is redacted.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import deque

import attrs
import trio

from lpstream.errors import LpstreamError, MediaError

from .pusher import Pusher, open_pusher
from .target import ForwardTarget
from .timeline import OutputTimeline
from .values import ForwardSegment, ForwardSettings, ForwardState, ForwardStatus

__all__ = ["Forward"]

log = logging.getLogger("lpstream.restream")

_MEDIA_ERRORS_BEFORE_RECONNECT = 3


@attrs.define
class Forward:
    """One rendition of one stream pushed to one destination (see the module comment)."""

    id: str
    target: ForwardTarget
    rendition: str
    settings: ForwardSettings = attrs.Factory(ForwardSettings)
    limiter: trio.CapacityLimiter | None = None
    """Bounds the worker threads that remux (None: trio's default limiter)."""
    ssl_context: ssl.SSLContext | None = None
    """What ``rtmps`` trusts (None: the system's certificate authorities)."""
    _queue: deque[ForwardSegment] = attrs.field(factory=deque, init=False)
    _wake: trio.Event = attrs.field(factory=trio.Event, init=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    _state: ForwardState = attrs.field(default=ForwardState.CONNECTING, init=False)
    _since: float = attrs.field(factory=time.time, init=False)
    _timeline: OutputTimeline = attrs.field(factory=OutputTimeline, init=False)
    _pusher: Pusher | None = attrs.field(default=None, init=False)
    _bytes_done: int = attrs.field(default=0, init=False)
    _segments_sent: int = attrs.field(default=0, init=False)
    _segments_dropped: int = attrs.field(default=0, init=False)
    _reconnects: int = attrs.field(default=0, init=False)
    _last_error: str | None = attrs.field(default=None, init=False)
    _dropping: bool = attrs.field(default=False, init=False)
    _gap: bool = attrs.field(default=False, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _finishing: bool = attrs.field(default=False, init=False)
    _scope: trio.CancelScope | None = attrs.field(default=None, init=False)

    @property
    def state(self) -> ForwardState:
        return self._state

    def offer(self, segment: ForwardSegment) -> None:
        """Queues a segment; never blocks (see the module comment)."""
        if self._closed:
            return
        if self._gap:
            segment = attrs.evolve(segment, discontinuity=True)
            self._gap = False
        if len(self._queue) >= self.settings.queue_segments:
            dropped = self._queue.popleft()
            self._segments_dropped += 1
            if self._queue:
                self._queue[0] = attrs.evolve(self._queue[0], discontinuity=True)
            else:
                segment = attrs.evolve(segment, discontinuity=True)
            if not self._dropping:
                log.warning(
                    "forward %s (%s): destination too slow, dropping segments from %d on "
                    "(queue of %d full)",
                    self.id,
                    self.target.redacted,
                    dropped.seq,
                    self.settings.queue_segments,
                )
            self._dropping = True
        self._queue.append(segment)
        self._wake.set()

    def mark_gap(self) -> None:
        """The rendition has no segment here: the next one offered follows a gap."""
        self._gap = True

    def finish(self) -> None:
        """No more segments come (the stream ended): :meth:`run` sends what is queued, closes
        the connection cleanly and ends; :meth:`close` still stops it at once."""
        self._finishing = True
        self._wake.set()

    def close(self) -> None:
        """Stops the forward: :meth:`run` ends and nothing more is sent."""
        self._closed = True
        self._queue.clear()
        if self._scope is not None:
            self._scope.cancel()
        else:
            self._set_state(ForwardState.STOPPED)

    def status(self) -> ForwardStatus:
        """What the forward is doing now."""
        pusher_bytes = self._pusher.bytes_sent if self._pusher is not None else 0
        return ForwardStatus(
            id=self.id,
            url=self.target.redacted,
            rendition=self.rendition,
            state=self._state.value,
            bytes_sent=self._bytes_done + pusher_bytes,
            segments_sent=self._segments_sent,
            queued=len(self._queue),
            segments_dropped=self._segments_dropped,
            reconnects=self._reconnects,
            last_error=self._last_error,
            since=self._since,
        )

    async def wait_state(self, state: ForwardState) -> None:
        """Returns once the forward is in ``state``."""
        while self._state is not state:
            await self._changed.wait()

    async def run(self) -> None:
        """Connects, sends and reconnects until :meth:`close` or cancellation."""
        if self._closed:
            return
        backoff = self.settings.backoff_initial
        attempt = 0
        try:
            with trio.CancelScope() as self._scope:
                while True:
                    if attempt:
                        self._reconnects += 1
                    attempt += 1
                    delivered = await self._connect_and_send()
                    if self._finishing and not self._queue:
                        break
                    if delivered:
                        backoff = self.settings.backoff_initial
                    self._set_state(ForwardState.RETRYING)
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, self.settings.backoff_max)
        finally:
            self._scope = None
            self._closed = True
            self._queue.clear()
            self._set_state(ForwardState.STOPPED)

    async def _connect_and_send(self) -> bool:
        """One connection, until it fails; True if it delivered at least one segment."""
        delivered = False
        segment: ForwardSegment | None = None
        try:
            async with open_pusher(
                self.target,
                self.settings,
                self._timeline,
                limiter=self.limiter,
                ssl_context=self.ssl_context,
            ) as pusher:
                self._pusher = pusher
                self._set_state(ForwardState.LIVE)
                log.info("forward %s: live to %s", self.id, self.target.redacted)
                media_errors = 0
                while not (self._finishing and not self._queue):
                    segment = await self._next_segment()
                    if segment is None:
                        break
                    try:
                        await pusher.push(segment)
                    except MediaError as exc:
                        media_errors += 1
                        self._segments_dropped += 1
                        self._last_error = self.target.scrub(str(exc))
                        log.warning(
                            "forward %s: segment %d skipped: %s",
                            self.id,
                            segment.seq,
                            self._last_error,
                        )
                        if media_errors >= _MEDIA_ERRORS_BEFORE_RECONNECT:
                            segment = None  # counted already
                            raise
                        continue
                    segment = None
                    media_errors = 0
                    delivered = True
                    self._segments_sent += 1
                    self._dropping = False
        except LpstreamError as exc:
            if segment is not None:
                self._segments_dropped += 1
            self._failed(exc)
        finally:
            if self._pusher is not None:
                self._bytes_done += self._pusher.bytes_sent
                self._pusher = None
        return delivered

    async def _next_segment(self) -> ForwardSegment | None:
        """The next segment to send; None once finishing with nothing left."""
        while not self._queue:
            if self._finishing:
                return None
            self._wake = trio.Event()
            await self._wake.wait()
        return self._queue.popleft()

    def _failed(self, exc: LpstreamError) -> None:
        reason = self.target.scrub(str(exc) or type(exc).__name__)
        level = logging.DEBUG if reason == self._last_error else logging.WARNING
        log.log(level, "forward %s to %s failed: %s", self.id, self.target.redacted, reason)
        self._last_error = reason

    def _set_state(self, state: ForwardState) -> None:
        if state is self._state:
            return
        self._state = state
        self._since = time.time()
        self._changed.set()
        self._changed = trio.Event()
