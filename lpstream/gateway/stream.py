"""One publish session of a live stream at the gateway: media in, segments out, source parts
listed as they are cut, the playlists ended when the publisher leaves.

How this works:

* The ingest side (an RTMP connection) pushes ``MediaEvent``s into ``LiveStream.publisher``,
  a bounded channel: a slow stream pushes back on its publisher, never on other streams.
  Each event is checked against the ingest limits first; one over them ends this stream only.
* ``LiveStream.run`` feeds the segmenter. A ``SegmentStarted`` opens a ``SourceSegment`` and
  hands it at once to the ``RenditionLadder`` (the transcoded renditions) and the
  ``AiRendition`` (the live AI output), which send it out while it is still being written
  (the trickle). The source rendition is published as it is cut, for LL-HLS: each
  ``PartCompleted`` is listed at once as a part, and ``SegmentCompleted`` closes the buffer
  and completes the source segment (its parts end to end).
* Every batch of hand-ins ends with ``LivePlayback.notify()``, which wakes the viewers'
  blocked requests (``_HLS_msn`` / ``_HLS_part`` and preload-hinted parts).
* When the publisher leaves, ``run`` waits for the segments in flight, fails the one still
  open (its renditions list gaps; the source keeps the parts it had), then ends the playlists.
* WebRTC viewers (WHEP) get packets, not segments: ``LiveStream.packets`` fans out the
  source's video as it arrives (and its sound, encoded to Opus once for every viewer) and
  each rendition's output as it comes back; the gateway runs and closes it.
  ``LiveStream.latency`` keeps the figures measured against the source frames' arrival times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio

from ingest.segmenter import (
    PartCompleted,
    SegmentCompleted,
    SegmentData,
    Segmenter,
    SegmenterEvent,
    SegmentStarted,
)
from lpstream.errors import LpstreamError, MediaError, ProtocolError
from lpstream.gateway.ai_rendition import AiRendition
from lpstream.gateway.fair_share import TranscodeShares
from lpstream.gateway.fmp4_parts import Fmp4Part, Fmp4PartCutter
from lpstream.gateway.ingest_limits import IngestLimits, IngestMeter
from lpstream.gateway.ladder import RenditionLadder
from lpstream.gateway.latency import LatencyRecorder
from lpstream.gateway.outlets import RenditionOutlets
from lpstream.gateway.segment_outlet import hand_in_segment
from lpstream.gateway.segments import (
    RenditionSegment,
    SegmentJob,
    SegmentTranscoder,
    SourceSegment,
)
from lpstream.gateway.source import SourceFormat
from lpstream.gateway.status import StreamStatistics
from lpstream.media import MediaEvent, MediaPacket, TrackKind, VideoProfile
from lpstream.metrics import Metrics
from lpstream.playback.live import LivePlayback
from lpstream.playback.live_packets import StreamPackets
from lpstream.playback.llhls import DEFAULT_PART_TARGET, LowLatencyStream
from lpstream.trickle import SegmentBuffer

__all__ = [
    "LiveStream",
    "RenditionSegment",
    "SegmentJob",
    "SegmentTranscoder",
    "StreamPublisher",
]

log = logging.getLogger("lpstream.gateway")

SOURCE = "source"
"""Name of the source rendition (the publisher's own media, remuxed)."""


class StreamPublisher:
    """The ingest-facing end of a ``LiveStream`` (implements ingest's ``Publisher``)."""

    def __init__(
        self,
        send: trio.MemorySendChannel[MediaEvent],
        stopped: Callable[[], LpstreamError | None] = lambda: None,
    ) -> None:
        self._send = send
        self._stopped = stopped

    async def send(self, event: MediaEvent) -> None:
        """Hands on one event; raises the reason the stream stopped, once it has."""
        try:
            await self._send.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            reason = self._stopped()
            if isinstance(reason, ProtocolError):
                raise ProtocolError(str(reason), code=reason.code) from None
            raise MediaError(str(reason or "the stream stopped taking media")) from None

    async def aclose(self) -> None:
        await self._send.aclose()


@attrs.define
class LiveStream:
    """One publish session of a stream name (see the module comment)."""

    name: str
    session: str
    profiles: tuple[VideoProfile, ...]
    playback: LivePlayback
    """Where viewers find the stream; its ``stream`` is handed everything, then notified."""
    transcoder: SegmentTranscoder
    metrics: Metrics
    first_seq: int = 0
    segment_target: float = 2.0
    part_target: float = DEFAULT_PART_TARGET
    """LL-HLS part target of the source rendition, in seconds."""
    attempts: int = 3
    limits: IngestLimits = attrs.Factory(IngestLimits)
    """What the publisher may send (picture size, frame rate, bitrate; the segment size
    follows)."""
    shares: TranscodeShares = attrs.Factory(TranscodeShares)
    """The gateway's transcoding capacity among its publishers (the gateway joined this
    stream to it under its publisher's identity)."""
    record: bool = False
    """Whether the publish grant asked for the stream to be recorded."""
    source: SourceFormat = attrs.field(init=False, factory=SourceFormat)
    """What the source's configuration says (picture, frame rate, audio)."""
    latency: LatencyRecorder = attrs.field(init=False, factory=LatencyRecorder)
    packets: StreamPackets = attrs.field(init=False)
    """The video packets of every rendition, for WebRTC viewers (WHEP); run by the gateway."""
    ladder: RenditionLadder = attrs.field(init=False)
    """The transcoded renditions."""
    ai: AiRendition = attrs.field(init=False)
    """The live AI output rendition; its ``session`` is set when one is started."""
    _send: trio.MemorySendChannel[MediaEvent] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[MediaEvent] = attrs.field(init=False)
    _segmenter: Segmenter = attrs.field(init=False)
    _meter: IngestMeter = attrs.field(init=False)
    _open: dict[int, SourceSegment] = attrs.Factory(dict)
    """Segments being cut, by sequence number."""
    _parts_published: dict[int, int] = attrs.Factory(dict)
    _fmp4_parts: dict[int, Fmp4PartCutter] = attrs.Factory(dict)
    """The LL-HLS part cutters of fragmented-MP4 segments being cut, by sequence number."""
    _unlisted: set[int] = attrs.Factory(set)
    """Open source segments HLS does not list (VP8 in Matroska)."""
    _last_seq: int | None = None
    _segments_in: int = 0
    _stopped: LpstreamError | None = None
    """Why the stream stopped taking media before its publisher left, if it did."""
    _intake: trio.CancelScope = attrs.Factory(trio.CancelScope)
    """Wraps the reading of the publisher's media, so the node can stop it (:meth:`stop`)."""

    def __attrs_post_init__(self) -> None:
        self._meter = IngestMeter(self.limits)
        self._send, self._receive = trio.open_memory_channel[MediaEvent](256)
        self._segmenter = Segmenter(
            target_duration=self.segment_target,
            stream_name=self.name,
            part_target=self.part_target,
            max_duration=self.limits.max_segment_duration,
        )
        self.packets = StreamPackets(
            renditions=[p.name for p in self.profiles],
            rendition_max_early=3 * self.segment_target,
        )
        outlets = RenditionOutlets(
            stream=self.name,
            playback=self.playback,
            packets=self.packets,
            source=self.source,
            latency=self.latency,
            metrics=self.metrics,
            segment_target=self.segment_target,
        )
        self.ladder = RenditionLadder(
            outlets=outlets,
            transcoder=self.transcoder,
            session=self.session,
            profiles=self.profiles,
            attempts=self.attempts,
            shares=self.shares,
        )
        self.ai = AiRendition(
            outlets=outlets, transcoder=self.transcoder, part_target=self.part_target
        )

    @property
    def hls(self) -> LowLatencyStream:
        return self.playback.stream

    @property
    def publisher(self) -> StreamPublisher:
        return StreamPublisher(self._send.clone(), lambda: self._stopped)

    def statistics(self) -> StreamStatistics:
        size = self.source.size
        return StreamStatistics(
            publish_latency_ms=self.latency.publish_latency(),
            part_latency_ms=self.latency.part_latency(),
            segments_in=self._segments_in,
            segments_in_flight=self.ladder.in_flight + self.ai.in_flight,
            webrtc=self.packets.statistics(),
            segmenter=self._segmenter.statistics(),
            source=None if self.source.video is None else f"{size[0]}x{size[1]}",
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs until the publisher leaves and every segment in flight is settled."""
        self._send.close()  # only clones handed out by ``publisher`` keep the channel open
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async with self._receive:
                    with self._intake:
                        async for event in self._receive:
                            try:
                                self._take(event, nursery)
                            except LpstreamError as exc:
                                # What the publisher sent ends this stream, and only it.
                                self._stopped = exc
                                log.warning("stream %r: %s; closing the stream", self.name, exc)
                                kind = "ingest_limit" if isinstance(exc, ProtocolError) else "media"
                                self.metrics.inc("errors_total", kind=kind)
                                break
                    self._finish_segments(nursery)
                for seq, segment in self._open.items():
                    segment.buffer.fail(MediaError("publisher left"))
                    self._settle_open_source(seq)
                self.playback.notify()
        finally:
            self.hls.end(self._last_seq)
            self.playback.notify()
            log.info("stream %r: ended after %d segments", self.name, self._segments_in)

    def stop(self, reason: LpstreamError) -> None:
        """Ends the stream from the node's side (a spend limit was reached): it takes no more
        media, and its publisher is told ``reason`` (the publisher's ``send`` raises it)."""
        if self._stopped is None:
            self._stopped = reason
            log.warning("stream %r: %s; closing the stream", self.name, reason)
        self._intake.cancel()

    def _take(self, event: MediaEvent, nursery: trio.Nursery) -> None:
        """One event from the publisher: checked, noted, cut into segments."""
        now = trio.current_time()
        self._meter.check(event, now)
        self.packets.feed_source(event)
        self.source.note(event)
        for seg_event in self._segmenter.feed(event):
            self._on_segment_event(seg_event, nursery)
        if isinstance(event, MediaPacket) and event.kind is TrackKind.VIDEO:
            # On the segments' timeline: the segmenter rebases timestamps after a jump.
            self.latency.video_arrived(
                self._segmenter.output_ms(TrackKind.VIDEO, event.dts),
                self._segmenter.output_ms(TrackKind.VIDEO, event.pts),
                now,
            )
        self.playback.notify()

    def _finish_segments(self, nursery: trio.Nursery) -> None:
        """The publisher is gone: the open segment ends (unless the stream broke)."""
        if self._stopped is not None:
            return  # the open segment fails below, as when the publisher leaves mid-segment
        try:
            for seg_event in self._segmenter.finish():
                self._on_segment_event(seg_event, nursery)
        except LpstreamError as exc:
            log.warning("stream %r: %s at its end", self.name, exc)

    def _settle_open_source(self, seq: int) -> None:
        """A source segment that will never complete: keep its parts, or list a gap."""
        self._fmp4_parts.pop(seq, None)
        if seq in self._unlisted:
            self._unlist(seq, self.segment_target)
            return
        if self._parts_published.pop(seq, 0):
            self.hls.complete_segment(SOURCE, seq)
        else:
            self.hls.add_gap(SOURCE, seq, self.segment_target)

    def _on_segment_event(self, event: SegmenterEvent, nursery: trio.Nursery) -> None:
        seq = self.first_seq + event.seq
        if isinstance(event, SegmentStarted):
            self._segment_started(seq, event, nursery)
        elif isinstance(event, SegmentData):
            self._open[seq].buffer.append(event.data)
            self._cut_fmp4_parts(seq, event.data)
        elif isinstance(event, PartCompleted):
            self.hls.add_part(
                SOURCE,
                seq,
                max(event.duration_ms, 1) / 1000,
                event.data,
                independent=event.independent,
            )
            self._parts_published[seq] = self._parts_published.get(seq, 0) + 1
            self.latency.part_listed(event.start_ms + event.duration_ms, trio.current_time())
        else:
            self._segment_completed(seq, event)

    def _segment_started(self, seq: int, event: SegmentStarted, nursery: trio.Nursery) -> None:
        if event.discontinuity:
            # The segmenter rebased a timestamp jump: every rendition (the transcoded ones
            # keep the source's timestamps) lists EXT-X-DISCONTINUITY before this one.
            self.hls.mark_discontinuity(seq)
        segment = SourceSegment(
            seq=seq,
            buffer=SegmentBuffer(max_size=self.limits.segment_limit),
            source_size=self.source.size,
            fps=self.source.fps,
        )
        if event.segment_format == "matroska":
            self._drop_source_rendition(seq)
            self._unlisted.add(seq)
        elif event.segment_format == "mp4":
            self._fmp4_parts[seq] = Fmp4PartCutter(
                part_target=self.part_target,
                on_init=lambda init: self.hls.set_init(SOURCE, init),
                on_part=lambda part: self._fmp4_part(seq, part),
            )
        self._open[seq] = segment
        self._last_seq = seq
        self.ladder.start_segment(segment, nursery)
        self.ai.start_segment(segment, nursery)

    def _drop_source_rendition(self, seq: int) -> None:
        """A Matroska (VP8) source segment: HLS cannot carry VP8, so the source rendition is
        taken out of the stream's playlists (the master lists the ladder), unless an earlier
        publisher of this name listed some of it (it then lists gaps)."""
        if not self.hls.has_rendition(SOURCE):
            return
        try:
            self.hls.remove_rendition(SOURCE)
        except ValueError:
            return
        log.info(
            "stream %r: the source is VP8, which HLS cannot carry: the master playlist lists "
            "the ladder from segment %d",
            self.name,
            seq,
        )

    def _unlist(self, seq: int, duration: float) -> None:
        """Settles a source segment HLS does not list."""
        self._unlisted.discard(seq)
        if self.hls.has_rendition(SOURCE):
            self.hls.add_gap(SOURCE, seq, duration)

    def _cut_fmp4_parts(self, seq: int, data: bytes) -> None:
        """Feeds a fragmented-MP4 segment's bytes to its part cutter, if it has one."""
        cutter = self._fmp4_parts.get(seq)
        if cutter is None:
            return
        try:
            cutter.feed(data)
        except ValueError as exc:
            del self._fmp4_parts[seq]
            log.warning("stream %r: segment %d is cut into no more parts: %s", self.name, seq, exc)

    def _fmp4_part(self, seq: int, part: Fmp4Part) -> None:
        self.hls.add_part(SOURCE, seq, part.duration, part.data, independent=part.independent)
        self._parts_published[seq] = self._parts_published.get(seq, 0) + 1
        end_ms = round(part.start_ms + part.duration * 1000)
        self.latency.part_listed(end_ms, trio.current_time())

    def _segment_completed(self, seq: int, event: SegmentCompleted) -> None:
        cutter = self._fmp4_parts.pop(seq, None)
        if cutter is not None:
            try:
                cutter.finish()
            except ValueError as exc:
                log.warning("stream %r: segment %d's last part: %s", self.name, seq, exc)
        segment = self._open.pop(seq)
        duration = event.duration_ms / 1000
        segment.duration = duration
        segment.buffer.close()
        self._segments_in += 1
        self.metrics.inc("segments_in_total")
        self.metrics.inc("stream_segments_in_total", stream=self.name)
        if seq in self._unlisted:
            self._unlist(seq, duration)
            return
        self.hls.set_info(
            self.source.rendition_info(
                SOURCE,
                self.source.video,
                (0, 0),
                int(event.size * 8 / duration) if duration > 0 else 0,
            )
        )
        if self._parts_published.pop(seq, 0):
            self.hls.complete_segment(SOURCE, seq)
            return
        try:
            hand_in_segment(self.hls, SOURCE, seq, duration, segment.buffer.getvalue())
        except ValueError as exc:
            log.warning("stream %r: source segment %d cannot be listed: %s", self.name, seq, exc)
            self.hls.add_gap(SOURCE, seq, duration)
