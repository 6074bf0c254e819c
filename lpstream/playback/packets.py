"""Fan-out of one rendition's H.264 access units to live viewers (WHEP), sans-IO.

How this works:

* A :class:`PacketFanout` takes one rendition's video as ``MediaEvent``s: ``CodecConfig``
  (avcC) and AVCC ``MediaPacket``s in decode order, times in ms, each with ``now`` (the
  driver's clock). :meth:`PacketFanout.publish` never blocks and never fails: the stream that
  feeds it must not wait for viewers.
* It keeps the current GOP: the packets from the last keyframe on, with the ``CodecConfig``
  that was current at that keyframe. A GOP that grows past ``max_gop_packets`` or
  ``max_gop_bytes`` is dropped whole; new viewers then wait for the next keyframe.
* Each :class:`Subscriber` has its own bounded queue. A new one (and one that asks for a
  restart, after a PLI) gets the config and the current GOP at once, so it starts at a
  keyframe without waiting for the next. A packet that would overflow the queue empties it
  and the subscriber waits for the next keyframe, counting every packet it lost: a slow
  viewer costs frames, never memory, and never another viewer's frames.
* A packet whose decode time is not after the last one's (a transcoded segment that came back
  after its successor) is stale and dropped for everyone; one that goes back more than
  ``RESET_MS`` is a timestamp reset and accepted.
* :class:`LiveClock` says where "live" is: it maps decode times to the driver's clock. It is
  re-anchored on the newest packet when that packet is late (behind the clock) or more than
  ``max_early`` seconds ahead of it, and left alone otherwise: a transcoded segment arrives as
  a burst of up to a few seconds of frames that are then due one by one at their times.
  ``due(dts)`` is when a packet plays live; the WHEP side sends late packets at once (and
  fast-forwards through them) and holds early ones until they are due. The anchor is the
  latest arrival seen, and it stays there: for a rendition that arrives in real time (the
  source) any ``max_early`` above 0 turns one late arrival (a publisher or node that stalls
  for a moment, then catches up) into a hold of every later packet by as much, up to
  ``max_early``, for as long as the stream runs. Such a rendition is given ``max_early=0``:
  each packet is due when it arrives, and only packets queued behind newer ones are late.
* Each queued packet keeps when it was published, so the WHEP side can measure how long a
  viewer's frames stay in the node (:attr:`Subscriber.published_at`).
* :meth:`PacketFanout.end` ends every subscriber after what is queued.

:func:`ts_access_units` turns a rendition's MPEG-TS segment into the same events (PyAV
demux, no decoding; blocking CPU work, call it in a worker thread).
"""

from __future__ import annotations

import collections
import io

import attrs
import av

from lpstream.errors import MediaError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from lpstream.media.h264 import access_unit_events

__all__ = [
    "RESET_MS",
    "FanoutStatistics",
    "LiveClock",
    "PacketFanout",
    "Subscriber",
    "ts_access_units",
]

RESET_MS = 10_000
"""A decode time this far behind the last one is a timestamp reset, not a stale packet."""


@attrs.frozen(kw_only=True)
class FanoutStatistics:
    """A snapshot of a :class:`PacketFanout`'s counters."""

    subscribers: int
    """Subscribers now."""
    packets_in: int
    """Packets published."""
    gop_packets: int
    """Packets in the current GOP (0 when none is kept)."""
    stale_packets: int
    """Packets dropped because they came after newer ones."""
    dropped_packets: int
    """Packets subscribers lost because they were too slow (gone subscribers included)."""


@attrs.define
class LiveClock:
    """Where "live" is on a rendition's timeline (see the module comment)."""

    max_early: float
    """Seconds a packet may be ahead of the clock before the clock jumps to it."""
    _anchor_ms: int | None = None
    _anchor_at: float = 0.0

    def note(self, dts: int, now: float) -> None:
        """Takes the newest packet's decode time, published at ``now``."""
        if self._anchor_ms is None:
            self._anchor_ms, self._anchor_at = dts, now
            return
        ahead = dts - self.position(now)
        if ahead < 0 or ahead > self.max_early * 1000:
            self._anchor_ms, self._anchor_at = dts, now

    def position(self, now: float) -> float:
        """The decode time (ms) that plays live at ``now``."""
        if self._anchor_ms is None:
            return float("-inf")
        return self._anchor_ms + (now - self._anchor_at) * 1000

    def due(self, dts: int) -> float:
        """When (driver's clock) the packet with decode time ``dts`` plays live."""
        if self._anchor_ms is None:
            return float("-inf")
        return self._anchor_at + (dts - self._anchor_ms) / 1000


@attrs.define(eq=False)
class Subscriber:
    """One viewer's queue; made by :meth:`PacketFanout.subscribe`."""

    max_packets: int
    max_bytes: int
    _queue: collections.deque[tuple[MediaEvent, float]] = attrs.Factory(collections.deque)
    _bytes: int = 0
    _waiting_for_keyframe: bool = True
    _behind: bool = False
    _dropped: int = 0
    _ended: bool = False
    _published_at: float | None = None

    @property
    def dropped(self) -> int:
        """Packets this subscriber lost because it was too slow."""
        return self._dropped

    @property
    def ended(self) -> bool:
        """True once the rendition ended and the queue is empty."""
        return self._ended and not self._queue

    @property
    def waiting_for_keyframe(self) -> bool:
        """True while packets are skipped until the next keyframe."""
        return self._waiting_for_keyframe

    @property
    def published_at(self) -> float | None:
        """When the event last taken was published (the driver's clock): for a packet, when
        it reached this node. None before the first."""
        return self._published_at

    def __len__(self) -> int:
        return len(self._queue)

    def receive_nowait(self) -> MediaEvent | None:
        """The next event, or None when none is queued."""
        if not self._queue:
            return None
        event, self._published_at = self._queue.popleft()
        if isinstance(event, MediaPacket):
            self._bytes -= len(event.data)
        return event

    def _clear(self) -> int:
        packets = sum(1 for e, _ in self._queue if isinstance(e, MediaPacket))
        self._queue.clear()
        self._bytes = 0
        return packets

    def _start(self, config: CodecConfig | None, gop: list[tuple[MediaPacket, float]]) -> None:
        self._clear()
        self._behind = False
        if not gop:
            self._waiting_for_keyframe = True
            return
        self._waiting_for_keyframe = False
        if config is not None:
            self._queue.append((config, gop[0][1]))
        self._queue.extend(gop)
        self._bytes = sum(len(p.data) for p, _ in gop)

    def _push_config(self, config: CodecConfig, now: float) -> None:
        if not self._waiting_for_keyframe:
            self._queue.append((config, now))

    def _push(self, packet: MediaPacket, config: CodecConfig | None, now: float) -> None:
        if self._waiting_for_keyframe:
            if not packet.keyframe:
                if self._behind:  # lost; a subscriber that joined between keyframes lost none
                    self._dropped += 1
                return
            self._waiting_for_keyframe = self._behind = False
            if config is not None:
                self._queue.append((config, now))
        size = len(packet.data)
        if len(self._queue) + 1 > self.max_packets or self._bytes + size > self.max_bytes:
            self._dropped += self._clear()
            if not packet.keyframe:
                self._dropped += 1
                self._waiting_for_keyframe = self._behind = True
                return
            if config is not None:
                self._queue.append((config, now))
        self._queue.append((packet, now))
        self._bytes += size


@attrs.define
class PacketFanout:
    """One rendition's packets to any number of subscribers (see the module comment)."""

    name: str
    """The rendition (``source`` or a profile or AI output name)."""
    max_early: float = 0.5
    """See :class:`LiveClock`: about the size of a burst this rendition arrives in; 0 for one
    that arrives in real time."""
    max_gop_packets: int = 600
    """Longest GOP kept for new viewers, in packets (20 s at 30 frames/s)."""
    max_gop_bytes: int = 8 << 20
    """Largest GOP kept for new viewers, in bytes."""
    subscriber_packets: int = 900
    """Packets one subscriber may have queued (more than a GOP and a burst)."""
    subscriber_bytes: int = 16 << 20
    """Bytes one subscriber may have queued."""
    clock: LiveClock = attrs.field(init=False)
    _config: CodecConfig | None = None
    _gop: list[tuple[MediaPacket, float]] = attrs.Factory(list)
    """The current GOP, each packet with when it was published."""
    _gop_config: CodecConfig | None = None
    _gop_bytes: int = 0
    _last_dts: int | None = None
    _subscribers: list[Subscriber] = attrs.Factory(list)
    _ended: bool = False
    _packets_in: int = 0
    _stale: int = 0
    _dropped_gone: int = 0

    def __attrs_post_init__(self) -> None:
        self.clock = LiveClock(max_early=self.max_early)
        if self.max_gop_packets > self.subscriber_packets or (
            self.max_gop_bytes > self.subscriber_bytes
        ):
            raise ValueError("a subscriber's queue must hold a whole kept GOP")

    @property
    def ended(self) -> bool:
        return self._ended

    def statistics(self) -> FanoutStatistics:
        return FanoutStatistics(
            subscribers=len(self._subscribers),
            packets_in=self._packets_in,
            gop_packets=len(self._gop),
            stale_packets=self._stale,
            dropped_packets=self._dropped_gone + sum(s.dropped for s in self._subscribers),
        )

    def publish(self, event: MediaEvent, now: float) -> None:
        """Takes one video event; audio and metadata are ignored."""
        if self._ended:
            return
        if isinstance(event, CodecConfig):
            if event.kind is TrackKind.VIDEO and event != self._config:
                self._config = event
                for subscriber in self._subscribers:
                    subscriber._push_config(event, now)
            return
        if not isinstance(event, MediaPacket) or event.kind is not TrackKind.VIDEO:
            return
        last = self._last_dts
        if last is not None and last - RESET_MS < event.dts <= last:
            self._stale += 1
            return
        self._last_dts = event.dts
        self._packets_in += 1
        self.clock.note(event.dts, now)
        self._keep(event, now)
        for subscriber in self._subscribers:
            subscriber._push(event, self._config, now)

    def _keep(self, packet: MediaPacket, now: float) -> None:
        if packet.keyframe:
            self._gop = [(packet, now)]
            self._gop_bytes = len(packet.data)
            self._gop_config = self._config
        elif self._gop:
            self._gop_bytes += len(packet.data)
            if len(self._gop) + 1 > self.max_gop_packets or self._gop_bytes > self.max_gop_bytes:
                self._gop = []
                self._gop_bytes = 0
            else:
                self._gop.append((packet, now))

    def subscribe(self) -> Subscriber:
        """A new subscriber, starting at the current GOP (or at the next keyframe)."""
        subscriber = Subscriber(
            max_packets=self.subscriber_packets, max_bytes=self.subscriber_bytes
        )
        subscriber._ended = self._ended
        if not self._ended:
            self._subscribers.append(subscriber)
            subscriber._start(self._gop_config, self._gop)
        return subscriber

    def restart(self, subscriber: Subscriber) -> None:
        """Starts ``subscriber`` over at the current GOP's keyframe (or at the next one)."""
        if not self._ended:
            subscriber._start(self._gop_config, self._gop)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forgets ``subscriber`` (idempotent)."""
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
            self._dropped_gone += subscriber.dropped
        subscriber._clear()
        subscriber._ended = True

    def end(self) -> None:
        """No more packets: each subscriber ends once it has taken what is queued."""
        self._ended = True
        self._gop = []
        for subscriber in self._subscribers:
            subscriber._ended = True


def ts_access_units(data: bytes) -> list[MediaEvent]:
    """The H.264 access units of an MPEG-TS segment as AVCC ``MediaPacket``s (ms times),
    each keyframe preceded by a ``CodecConfig`` built from its in-band SPS and PPS.

    Raises:
        lpstream.errors.MediaError: when the bytes cannot be demuxed or hold no H.264 video.
    """
    events: list[MediaEvent] = []
    try:
        with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
            if not container.streams.video:
                raise MediaError("the segment has no video")
            stream = container.streams.video[0]
            if stream.codec_context.name != "h264":
                raise MediaError(f"the segment's video is {stream.codec_context.name}, not h264")
            base = stream.time_base
            for packet in container.demux(stream):
                if packet.size == 0 or packet.dts is None or base is None:
                    continue
                dts = int(packet.dts * base * 1000)
                pts = int((packet.pts if packet.pts is not None else packet.dts) * base * 1000)
                events += access_unit_events(
                    bytes(packet), dts=dts, pts=pts, keyframe=bool(packet.is_keyframe)
                )
    except av.FFmpegError as exc:
        raise MediaError(f"cannot demux the segment: {exc}") from None
    return events
