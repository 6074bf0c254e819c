"""A live stream's packet fan-outs on trio: what WHEP viewers subscribe to.

How this works:

* :class:`StreamPackets` holds one :class:`~.packets.PacketFanout` per rendition of one publish
  session, and the stream's audio (:class:`~.opus_audio.OpusAudio`: the source's AAC, encoded
  to Opus once, only while someone listens, for every rendition's viewers). The source is fed
  from the ingest's ``MediaEvent``s as the stream sees them (:meth:`StreamPackets.feed_source`,
  synchronous and cheap: its video goes to the source fan-out, its audio to ``OpusAudio``).
  A transcoded (or AI output) rendition comes back as MPEG-TS bytes per segment;
  :meth:`StreamPackets.feed_ts` queues them (bounded: when the queue is full the segment is
  dropped for viewers and counted; HLS has it anyway) and :meth:`StreamPackets.run` demuxes
  them in order in a worker thread.
* Every hand-in ends with a wake-up: each fan-out has a ``trio.Event`` that is set and
  replaced, so every subscription blocked on it wakes and takes what is queued for it.
* :meth:`StreamPackets.close` says no more segments will come; ``run`` then demuxes what is
  queued and ends every fan-out and the audio, and each subscription ends
  (``trio.EndOfChannel``) once it has taken its queue. ``run`` also runs the audio encoder.
* A viewer's :class:`PacketSubscription` is video; :meth:`PacketSubscription.subscribe_audio`
  adds the stream's Opus, whose times are on the same timeline, so the rendition's clock
  (:meth:`PacketSubscription.due`) says when each audio packet plays live too. Whether the
  stream has audio is known once its source has started (:meth:`PacketSubscription.
  wait_source_started`): publishers send their decoder configurations before their media.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import attrs
import trio

from lpstream.errors import MediaError, RemoteProtocolError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from lpstream.playback.opus_audio import AudioSubscription, OpusAudio
from lpstream.playback.packets import FanoutStatistics, PacketFanout, Subscriber, ts_access_units

__all__ = ["PacketSubscription", "StreamPackets"]

log = logging.getLogger("lpstream.playback")

SOURCE = "source"
TS_QUEUE = 8
"""Segments waiting to be demuxed, per stream."""


@attrs.define(eq=False)
class _Rendition:
    fanout: PacketFanout
    changed: trio.Event = attrs.Factory(trio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


@attrs.define(eq=False)
class PacketSubscription:
    """One viewer's view of one rendition; made by :meth:`StreamPackets.subscribe`."""

    rendition: str
    """The rendition subscribed to."""
    _owner: _Rendition
    _subscriber: Subscriber
    _stream: StreamPackets

    @property
    def dropped(self) -> int:
        """Packets lost because this viewer was too slow."""
        return self._subscriber.dropped

    async def receive(self) -> MediaEvent:
        """The next ``CodecConfig`` or video ``MediaPacket``; waits for one.

        Raises:
            trio.EndOfChannel: the stream ended (or the subscription was closed).
        """
        while True:
            event = self._subscriber.receive_nowait()
            if event is not None:
                return event
            if self._subscriber.ended:
                raise trio.EndOfChannel
            await self._owner.changed.wait()

    @property
    def arrived_at(self) -> float | None:
        """When (``trio.current_time()``) the event last received reached this node."""
        return self._subscriber.published_at

    def due(self, packet: MediaPacket) -> float:
        """When (``trio.current_time()``) ``packet`` plays live."""
        return self._owner.fanout.clock.due(packet.dts)

    async def wait_source_started(self) -> None:
        """Returns once the stream's source has sent its first video packet (its decoder
        configurations, the audio's among them, came before it), or has ended."""
        await self._stream._source_started.wait()

    def subscribe_audio(self) -> AudioSubscription | None:
        """The stream's audio as Opus packets (times in ms on this rendition's timeline), or
        None when the stream has no audio (as far as is known: see
        :meth:`wait_source_started`). Close it apart from this subscription."""
        return self._stream.audio.subscribe()

    def restart_at_keyframe(self) -> None:
        """Starts over at the current GOP's keyframe (or waits for the next keyframe)."""
        self._owner.fanout.restart(self._subscriber)
        self._owner.notify()

    def close(self) -> None:
        """Leaves the fan-out; ``receive`` then ends."""
        self._owner.fanout.unsubscribe(self._subscriber)
        self._owner.notify()


@attrs.define
class StreamPackets:
    """One publish session's fan-outs (see the module comment)."""

    renditions: Iterable[str] = ()
    """Rendition names known at the start, besides ``source`` (more appear when fed)."""
    rendition_max_early: float = 6.0
    """How far ahead of live a rendition's packets may arrive (about two segments)."""
    _renditions: dict[str, _Rendition] = attrs.field(init=False, factory=dict)
    _send: trio.MemorySendChannel[tuple[str, bytes]] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[tuple[str, bytes]] = attrs.field(init=False)
    _segments_dropped: int = attrs.field(init=False, default=0)
    _segments_failed: int = attrs.field(init=False, default=0)
    _source_started: trio.Event = attrs.field(init=False, factory=trio.Event)
    _not_webrtc: dict[str, str] = attrs.field(init=False, factory=dict)
    """Renditions WebRTC viewers cannot get here (not H.264), with their codec."""
    audio: OpusAudio = attrs.field(init=False, factory=OpusAudio)
    """The stream's audio for WebRTC viewers (from the source's)."""

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[tuple[str, bytes]](TS_QUEUE)
        # The source arrives in real time: each packet is due when it comes (see LiveClock).
        self._renditions[SOURCE] = _Rendition(PacketFanout(name=SOURCE, max_early=0.0))
        for name in self.renditions:
            self._rendition(name)

    def _rendition(self, name: str, *, max_early: float | None = None) -> _Rendition:
        rendition = self._renditions.get(name)
        if rendition is None:
            early = self.rendition_max_early if max_early is None else max_early
            rendition = _Rendition(PacketFanout(name=name, max_early=early))
            self._renditions[name] = rendition
        return rendition

    def feed_source(self, event: MediaEvent) -> None:
        """Takes one of the source's events: video for the source fan-out, audio for
        :attr:`audio`."""
        if isinstance(event, CodecConfig | MediaPacket) and event.kind is TrackKind.VIDEO:
            if isinstance(event, CodecConfig):
                if event.codec == "h264":
                    self._not_webrtc.pop(SOURCE, None)
                else:
                    self._not_webrtc[SOURCE] = event.codec
            if isinstance(event, MediaPacket):
                self._source_started.set()
            if SOURCE in self._not_webrtc:
                return  # WebRTC viewers take H.264: they watch a rendition of this source
            rendition = self._renditions[SOURCE]
            rendition.fanout.publish(event, trio.current_time())
            rendition.notify()
        else:
            self.audio.feed(event)

    def feed_events(self, name: str, events: list[MediaEvent]) -> None:
        """Publishes access units of rendition ``name`` demuxed elsewhere, as they arrive
        (live AI output, frame by frame)."""
        if name == SOURCE:
            raise ValueError("the source rendition is fed from its events (feed_source)")
        # Frame by frame as they are made: due on arrival, like the source.
        rendition = self._rendition(name, max_early=0.0)
        now = trio.current_time()
        for event in events:
            rendition.fanout.publish(event, now)
        rendition.notify()

    def refuse_webrtc(self, name: str, codec: str) -> None:
        """Rendition ``name`` is ``codec``, not H.264: WebRTC viewers are refused it."""
        self._not_webrtc[name] = codec
        self._rendition(name)

    def feed_ts(self, name: str, data: bytes) -> None:
        """Queues one MPEG-TS segment of rendition ``name``, for :meth:`run` to demux."""
        if name == SOURCE:
            raise ValueError("the source rendition is fed from its events (feed_source)")
        self._rendition(name)
        try:
            self._send.send_nowait((name, data))
        except trio.WouldBlock:
            self._segments_dropped += 1
            log.warning("rendition %r: viewers' demux queue full, segment dropped", name)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # closed, or ``run`` already ended: no viewer will get more segments

    async def run(self) -> None:
        """Demuxes the queued segments and encodes the audio until :meth:`close`, then ends
        every fan-out and the audio."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.audio.run)
                await self._demux()
                self.audio.end()
        finally:
            self._source_started.set()
            self.audio.end()
            for rendition in self._renditions.values():
                rendition.fanout.end()
                rendition.notify()

    async def _demux(self) -> None:
        limiter = trio.CapacityLimiter(1)
        async with self._receive:
            async for name, data in self._receive:
                try:
                    events = await trio.to_thread.run_sync(ts_access_units, data, limiter=limiter)
                except MediaError as exc:
                    self._segments_failed += 1
                    log.warning("rendition %r: %s", name, exc)
                    continue
                except Exception:
                    # A bug here must cost the WebRTC viewers a segment, not the stream.
                    self._segments_failed += 1
                    log.exception("rendition %r: demuxing a segment failed", name)
                    continue
                rendition = self._rendition(name)
                now = trio.current_time()
                for event in events:
                    rendition.fanout.publish(event, now)
                rendition.notify()

    def close(self) -> None:
        """No more segments: :meth:`run` ends once it has demuxed what is queued."""
        self._send.close()

    def subscribe(self, rendition: str) -> PacketSubscription | None:
        """A subscription to ``rendition``, or None when the stream has no such rendition.

        Raises:
            RemoteProtocolError: 415 for a rendition that is not H.264 (what WebRTC viewers
                take here: an HEVC, AV1 or VP9 source, an HEVC or AV1 rendition), naming the
                renditions to watch instead.
        """
        codec = self._not_webrtc.get(rendition)
        if codec is not None:
            others = ", ".join(name for name in self._renditions if name not in self._not_webrtc)
            raise RemoteProtocolError(
                f"{rendition} is {codec}; WebRTC viewers get H.264: watch another rendition "
                f"({others or 'none is H.264'})",
                code=415,
            )
        owner = self._renditions.get(rendition)
        if owner is None or owner.fanout.ended:
            return None
        return PacketSubscription(
            rendition=rendition, owner=owner, subscriber=owner.fanout.subscribe(), stream=self
        )

    def statistics(self) -> dict[str, object]:
        def figures(stats: FanoutStatistics) -> dict[str, int]:
            return attrs.asdict(stats)

        return {
            "renditions": {
                name: figures(r.fanout.statistics()) for name, r in self._renditions.items()
            },
            "segments_dropped": self._segments_dropped,
            "segments_failed": self._segments_failed,
            "audio": attrs.asdict(self.audio.statistics()),
        }
