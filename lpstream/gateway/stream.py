"""One live stream at the gateway: media events in, segments out to orchestrators, HLS out.

How this works:

* The ingest side (an RTMP connection) pushes ``MediaEvent``s into ``LiveStream.publisher``,
  a bounded channel: a slow stream pushes back on its publisher, never on other streams.
* ``LiveStream.run`` feeds the segmenter. A ``SegmentStarted`` opens a ``SegmentBuffer`` and
  starts a task that sends the segment to an orchestrator while it is still being written
  (the trickle). The source rendition is published as it is cut, for LL-HLS: each
  ``PartCompleted`` is listed at once as a part, and ``SegmentCompleted`` closes the buffer
  and completes the source segment (its parts end to end).
* The segment task asks the ``SegmentTranscoder`` for the renditions, retrying from the first
  byte on failure; when every attempt fails the renditions get an ``EXT-X-GAP`` for that
  segment so that playlists stay aligned. Transcoded renditions come back whole per segment,
  so they are listed as whole segments, without parts (players that want parts play the
  source; LL-HLS lets a playlist have none). ``LowLatencyStream`` lists them in order.
* Every batch of hand-ins ends with ``LivePlayback.notify()``, which wakes the viewers'
  blocked requests (``_HLS_msn`` / ``_HLS_part`` and preload-hinted parts).
* When the publisher leaves, ``run`` waits for segments in flight, then ends the playlists.
* With a live AI session (``LiveStream.ai``) every segment also goes out as a pipeline job;
  its output is the ``ai`` rendition, added to the playlists at the first segment the session
  sees. A segment without a running session gets a gap there, so numbers stay aligned.
* WebRTC viewers (WHEP) get packets, not segments: ``LiveStream.packets`` fans out the source's
  video as it arrives and each rendition's segments, demuxed, as they come back
  (``feed_rendition_ts``, also the way in for AI output); the gateway runs and closes it.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import attrs
import trio

from ingest.segmenter import (
    PartCompleted,
    SegmentData,
    Segmenter,
    SegmenterEvent,
    SegmentStarted,
)
from lpstream.errors import LpstreamError, MediaError, ProtocolError
from lpstream.gateway.ingest_limits import IngestLimits, IngestMeter
from lpstream.gateway.live_ai import AI_RENDITION, LiveAiSession
from lpstream.gateway.status import LatencySummary, StreamStatistics
from lpstream.jobs import Relay
from lpstream.media import (
    CodecConfig,
    MediaEvent,
    MediaPacket,
    StreamMetadata,
    TrackKind,
    VideoProfile,
    scaled_size,
)
from lpstream.media.h264 import AvcInfo, avc_info_from_annexb, avc_info_from_config
from lpstream.media.mpegts import joined_payloads
from lpstream.metrics import Metrics
from lpstream.playback.hls import RenditionInfo
from lpstream.playback.live import LivePlayback
from lpstream.playback.live_packets import StreamPackets
from lpstream.playback.llhls import DEFAULT_PART_TARGET, LowLatencyStream
from lpstream.playback.tsdemux import TsVideoDemuxer
from lpstream.trickle import SegmentBuffer
from lpstream.wire import Rendition

__all__ = [
    "LiveStream",
    "RenditionSegment",
    "SegmentJob",
    "SegmentTranscoder",
    "StreamPublisher",
]

log = logging.getLogger("lpstream.gateway")


@attrs.frozen(kw_only=True)
class SegmentJob:
    """What the gateway asks an orchestrator to do with one segment."""

    stream: str
    """Stream name."""
    session: str
    """Identifies this publish session (a restart is a new session)."""
    seq: int
    """Segment sequence number in the stream's playlists."""
    duration_ms: int
    """Expected duration (the target; the real one is known when the segment ends)."""
    profiles: tuple[VideoProfile, ...]
    """The renditions to make."""
    source_width: int = 0
    """Width of the source picture (0 if unknown); with the height it sizes the fee."""
    source_height: int = 0
    """Height of the source picture (0 if unknown)."""
    fps: float = 30.0
    """Source frame rate (from the publisher's metadata, 30 if it gives none)."""
    pipeline: str = ""
    """Live AI pipeline to run instead of transcoding (``profiles`` is then its output)."""
    params: Mapping[str, str | int | float | bool] = attrs.field(factory=dict)
    """The pipeline's parameters when the session starts on a worker."""


@attrs.frozen(kw_only=True)
class RenditionSegment:
    """One rendition of a segment, as returned by an orchestrator."""

    name: str
    """Profile name."""
    width: int
    """Picture width the worker produced."""
    height: int
    """Picture height."""
    pixels: int
    """Pixels encoded (frames x width x height)."""
    data: bytes
    """MPEG-TS bytes."""
    frames: int = 0
    """Frames encoded."""
    dropped: int = 0
    """Input frames a live pipeline left out (behind real time)."""


class SegmentTranscoder(Protocol):
    """Turns a segment (being written into ``source``) into renditions, or raises; with a
    ``relay``, a pipeline job's output is also handed to it as it arrives."""

    async def transcode(
        self, job: SegmentJob, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[RenditionSegment]: ...


def _audio_codecs(config: CodecConfig | None) -> str:
    if config is None or not config.data:
        return ""
    object_type = config.data[0] >> 3
    return f"mp4a.40.{object_type or 2}"


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
    """What the publisher may send (picture size, bitrate; the segment size follows)."""
    _send: trio.MemorySendChannel[MediaEvent] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[MediaEvent] = attrs.field(init=False)
    _segmenter: Segmenter = attrs.field(init=False)
    _buffers: dict[int, SegmentBuffer] = attrs.Factory(dict)
    _durations: dict[int, float] = attrs.Factory(dict)
    _video: CodecConfig | None = None
    _audio: CodecConfig | None = None
    _source_info: AvcInfo | None = None
    _fps: float = 30.0
    _last_seq: int | None = None
    _segments_in: int = 0
    _in_flight: int = 0
    _completed_at: dict[int, float] = attrs.Factory(dict)
    _publish_latency: collections.deque[float] = attrs.Factory(
        lambda: collections.deque(maxlen=200)
    )
    _part_latency: collections.deque[float] = attrs.Factory(lambda: collections.deque(maxlen=1000))
    _video_arrivals: collections.deque[tuple[int, float]] = attrs.Factory(
        lambda: collections.deque(maxlen=512)
    )
    _parts_published: dict[int, int] = attrs.Factory(dict)
    ai: LiveAiSession | None = None
    """The stream's live AI session, if one was started."""
    _ai_durations: dict[int, float] = attrs.Factory(dict)
    _frame_arrivals: dict[int, float] = attrs.Factory(dict)
    """Source video frame pts (ms) -> when it reached the gateway, for the AI's frame latency."""
    packets: StreamPackets = attrs.field(init=False)
    """The video packets of every rendition, for WebRTC viewers (WHEP); run by the gateway."""
    _meter: IngestMeter = attrs.field(init=False)
    _stopped: LpstreamError | None = None
    """Why the stream stopped taking media before its publisher left, if it did."""

    def __attrs_post_init__(self) -> None:
        self._meter = IngestMeter(self.limits)
        self._send, self._receive = trio.open_memory_channel[MediaEvent](256)
        self.packets = StreamPackets(
            renditions=[p.name for p in self.profiles],
            rendition_max_early=3 * self.segment_target,
        )
        self._segmenter = Segmenter(
            target_duration=self.segment_target,
            stream_name=self.name,
            part_target=self.part_target,
            max_duration=self.limits.max_segment_duration,
        )

    @property
    def hls(self) -> LowLatencyStream:
        return self.playback.stream

    @property
    def publisher(self) -> StreamPublisher:
        return StreamPublisher(self._send.clone(), lambda: self._stopped)

    def statistics(self) -> StreamStatistics:
        return StreamStatistics(
            publish_latency_ms=LatencySummary.from_samples(self._publish_latency),
            part_latency_ms=LatencySummary.from_samples(self._part_latency),
            segments_in=self._segments_in,
            segments_in_flight=self._in_flight,
            webrtc=self.packets.statistics(),
            segmenter=self._segmenter.statistics(),
            source=None
            if self._source_info is None
            else f"{self._source_info.width}x{self._source_info.height}",
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs until the publisher leaves and every segment in flight is settled."""
        self._send.close()  # only clones handed out by ``publisher`` keep the channel open
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async with self._receive:
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
                for seq, buffer in self._buffers.items():
                    buffer.fail(MediaError("publisher left"))
                    self._settle_open_source(seq)
                self.playback.notify()
        finally:
            self.hls.end(self._last_seq)
            self.playback.notify()
            log.info("stream %r: ended after %d segments", self.name, self._segments_in)

    def _take(self, event: MediaEvent, nursery: trio.Nursery) -> None:
        """One event from the publisher: checked, noted, cut into segments."""
        self._meter.check(event, trio.current_time())
        self._note_config(event)
        for seg_event in self._segmenter.feed(event):
            self._on_segment_event(seg_event, nursery)
        if isinstance(event, MediaPacket) and event.kind is TrackKind.VIDEO:
            self._note_arrival(event)
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
        if self._parts_published.pop(seq, 0):
            self.hls.complete_segment("source", seq)
        else:
            self.hls.add_gap("source", seq, self.segment_target)

    def feed_rendition_ts(self, name: str, data: bytes) -> None:
        """Hands one MPEG-TS segment of rendition ``name`` (a profile or an AI output) to the
        WebRTC viewers; never blocks (see ``StreamPackets.feed_ts``)."""
        self.packets.feed_ts(name, data)

    def _note_arrival(self, packet: MediaPacket) -> None:
        """When a video frame reached us, on the segments' timeline (the segmenter rebases
        timestamps after a jump), for the part and AI frame latencies."""
        now = trio.current_time()
        self._video_arrivals.append((self._segmenter.output_ms(TrackKind.VIDEO, packet.dts), now))
        if self.ai is not None:
            self._frame_arrivals[self._segmenter.output_ms(TrackKind.VIDEO, packet.pts)] = now
            while len(self._frame_arrivals) > 900:  # 30 s at 30 fps
                del self._frame_arrivals[next(iter(self._frame_arrivals))]

    def _note_config(self, event: MediaEvent) -> None:
        self.packets.feed_source(event)
        if isinstance(event, StreamMetadata):
            rate = event.values.get("framerate") or event.values.get("fps")
            if isinstance(rate, int | float) and 0 < rate <= 240:
                self._fps = float(rate)
            return
        if not isinstance(event, CodecConfig):
            return
        if event.kind is TrackKind.VIDEO:
            self._video = event
            try:
                self._source_info = avc_info_from_config(event.data)
            except (ValueError, IndexError):
                self._source_info = None
        else:
            self._audio = event

    def _codecs(self, video: AvcInfo | None) -> str:
        parts = [video.codecs] if video else ["avc1.640028"]
        audio = _audio_codecs(self._audio)
        if audio:
            parts.append(audio)
        return ",".join(parts)

    def _on_segment_event(self, event: SegmenterEvent, nursery: trio.Nursery) -> None:
        if isinstance(event, SegmentStarted):
            seq = self.first_seq + event.seq
            if event.discontinuity:
                # The segmenter rebased a timestamp jump: every rendition (the transcoded ones
                # keep the source's timestamps) lists EXT-X-DISCONTINUITY before this one.
                self.hls.mark_discontinuity(seq)
            buffer = SegmentBuffer(max_size=self.limits.segment_limit)
            self._buffers[seq] = buffer
            self._last_seq = seq
            self._in_flight += 1
            nursery.start_soon(self._transcode_segment, seq, buffer)
            self._start_ai_segment(seq, buffer, nursery)
        elif isinstance(event, SegmentData):
            self._buffers[self.first_seq + event.seq].append(event.data)
        elif isinstance(event, PartCompleted):
            seq = self.first_seq + event.seq
            self.hls.add_part(
                "source",
                seq,
                max(event.duration_ms, 1) / 1000,
                event.data,
                independent=event.independent,
            )
            self._parts_published[seq] = self._parts_published.get(seq, 0) + 1
            self._note_part_latency(event.start_ms + event.duration_ms)
        else:
            seq = self.first_seq + event.seq
            buffer = self._buffers.pop(seq)
            duration = event.duration_ms / 1000
            self._durations[seq] = duration
            if self.hls.has_rendition(AI_RENDITION):
                self._ai_durations[seq] = duration
            self._completed_at[seq] = trio.current_time()
            buffer.close()
            self._segments_in += 1
            self.metrics.inc("segments_in_total")
            info = self._source_info
            self.hls.set_info(
                RenditionInfo(
                    name="source",
                    width=info.width if info else 0,
                    height=info.height if info else 0,
                    codecs=self._codecs(info),
                    bandwidth=int(event.size * 8 / duration) if duration > 0 else 0,
                )
            )
            if self._parts_published.pop(seq, 0):
                self.hls.complete_segment("source", seq)
            else:
                self.hls.add_segment("source", seq, duration, buffer.getvalue())

    def _start_ai_segment(self, seq: int, buffer: SegmentBuffer, nursery: trio.Nursery) -> None:
        ai = self.ai
        if ai is not None and ai.running:
            if not self.hls.has_rendition(AI_RENDITION):
                self.hls.add_rendition(AI_RENDITION, seq)
            self._in_flight += 1
            nursery.start_soon(self._ai_segment, ai, seq, buffer)
        elif self.hls.has_rendition(AI_RENDITION):
            self.hls.add_gap(AI_RENDITION, seq, self.segment_target)

    async def _ai_segment(self, ai: LiveAiSession, seq: int, buffer: SegmentBuffer) -> None:
        """Runs one segment through the AI session and lists the output (or a gap)."""
        job = SegmentJob(
            stream=self.name,
            session=ai.session,
            seq=seq,
            duration_ms=int(self.segment_target * 1000),
            profiles=(ai.profile,),
            source_width=self._source_info.width if self._source_info else 0,
            source_height=self._source_info.height if self._source_info else 0,
            fps=self._fps,
            pipeline=ai.pipeline,
            params=dict(ai.params),
        )
        output: RenditionSegment | None = None
        relay = _LiveOutput(
            self.packets,
            on_part=lambda duration, data, independent: self._ai_part(
                seq, duration, data, independent
            ),
            on_config=lambda config: self._ai_info(ai, config),
            on_frame=lambda pts: self._ai_frame(ai, pts),
            part_target=self.part_target,
        )
        try:
            try:
                results = await self.transcoder.transcode(job, buffer, relay)
                output = next((r for r in results if r.name == AI_RENDITION and r.data), None)
                if output is None:
                    ai.note_failure(seq, "no ai rendition returned")
            except (LpstreamError, trio.TooSlowError) as exc:
                self.metrics.inc("errors_total", kind="pipeline")
                log.warning("stream %r segment %d: pipeline job failed: %s", self.name, seq, exc)
                ai.note_failure(seq, str(exc))
            await buffer.wait_closed()
            duration = self._ai_durations.get(seq, self.segment_target)
            if output is not None:
                relay.finish(duration)
            if relay.parts:
                # Listed part by part as it came; whatever came is the segment.
                self.hls.complete_segment(AI_RENDITION, seq)
            elif output is None:
                self.hls.add_gap(AI_RENDITION, seq, duration)
            else:
                if not self.hls.has_info(AI_RENDITION):
                    info = avc_info_from_annexb(joined_payloads(output.data))
                    self._set_ai_info(ai, info, output.width, output.height)
                self.hls.add_segment(AI_RENDITION, seq, duration, output.data)
                if not relay.started:  # WebRTC viewers got it frame by frame otherwise
                    self.feed_rendition_ts(AI_RENDITION, output.data)
            if output is not None:
                self.metrics.inc("segments_out_total", rendition=AI_RENDITION)
                latency = trio.current_time() - (buffer.closed_at or trio.current_time())
                ai.note_segment(seq, duration, output.frames, output.dropped, latency)
            self.playback.notify()
        except MediaError:
            if relay.parts:
                self.hls.complete_segment(AI_RENDITION, seq)
            else:
                self.hls.add_gap(AI_RENDITION, seq, self.segment_target)
            self.playback.notify()
        finally:
            self._in_flight -= 1
            self._ai_durations.pop(seq, None)

    def _ai_frame(self, ai: LiveAiSession, pts: int) -> None:
        """An AI output frame is back: how long after its source frame reached us."""
        arrived = self._frame_arrivals.pop(pts, None)
        if arrived is None:  # timestamps rounded to ms on one side: look one ms around
            arrived = self._frame_arrivals.pop(pts - 1, None) or self._frame_arrivals.pop(
                pts + 1, None
            )
        if arrived is not None:
            ai.note_frame_latency(trio.current_time() - arrived)

    def _ai_part(self, seq: int, duration: float, data: bytes, independent: bool) -> None:
        self.hls.add_part(AI_RENDITION, seq, duration, data, independent=independent)
        self.playback.notify()

    def _ai_info(self, ai: LiveAiSession, config: CodecConfig) -> None:
        if self.hls.has_info(AI_RENDITION):
            return
        try:
            info = avc_info_from_config(config.data)
        except (ValueError, IndexError):
            return
        self._set_ai_info(ai, info, ai.profile.width, ai.profile.height)

    def _set_ai_info(
        self, ai: LiveAiSession, info: AvcInfo | None, width: int, height: int
    ) -> None:
        self.hls.set_info(
            RenditionInfo(
                name=AI_RENDITION,
                width=info.width if info else width,
                height=info.height if info else height,
                codecs=self._codecs(info),
                bandwidth=ai.profile.bitrate + (128_000 if self._audio else 0),
            )
        )

    def _note_part_latency(self, end_ms: int) -> None:
        """Time from the arrival of a part's last video packet to the part being listed."""
        arrived = None
        for dts, at in reversed(self._video_arrivals):
            if dts < end_ms:
                arrived = at
                break
        if arrived is not None:
            self._part_latency.append(trio.current_time() - arrived)

    def _ensure_info(self, profile: VideoProfile) -> None:
        """Gives a rendition that has no segment yet master-playlist facts from its profile,
        so that a stream whose renditions all failed still gets a master playlist."""
        if self.hls.has_info(profile.name):
            return
        source = self._source_info
        width, height = (
            scaled_size(source.width, source.height, profile)
            if source
            else (profile.width, profile.height)
        )
        self.hls.set_info(
            RenditionInfo(
                name=profile.name,
                width=width,
                height=height,
                codecs=self._codecs(None),
                bandwidth=profile.bitrate + (128_000 if self._audio else 0),
            )
        )

    async def _transcode_segment(self, seq: int, buffer: SegmentBuffer) -> None:
        job = SegmentJob(
            stream=self.name,
            session=self.session,
            seq=seq,
            duration_ms=int(self.segment_target * 1000),
            profiles=self.profiles,
            source_width=self._source_info.width if self._source_info else 0,
            source_height=self._source_info.height if self._source_info else 0,
            fps=self._fps,
        )
        results: Sequence[RenditionSegment] | None = None
        try:
            for attempt in range(1, self.attempts + 1):
                try:
                    started = trio.current_time()
                    results = await self.transcoder.transcode(job, buffer)
                    self.metrics.inc("transcode_seconds_total", trio.current_time() - started)
                    break
                except (LpstreamError, trio.TooSlowError) as exc:
                    self.metrics.inc("errors_total", kind="transcode")
                    log.warning(
                        "stream %r segment %d: attempt %d/%d failed: %s",
                        self.name,
                        seq,
                        attempt,
                        self.attempts,
                        exc,
                    )
            await buffer.wait_closed()
            duration = self._durations[seq]
            self._publish(seq, duration, results)
            self.playback.notify()
            if results is not None:
                # From the segment's last input byte to all its renditions being listed.
                self._publish_latency.append(trio.current_time() - self._completed_at[seq])
        except MediaError:
            # The upload itself never completed (the publisher left mid-segment).
            for profile in self.profiles:
                self._ensure_info(profile)
                self.hls.add_gap(profile.name, seq, self.segment_target)
            self.playback.notify()
        finally:
            self._in_flight -= 1
            self._durations.pop(seq, None)
            self._completed_at.pop(seq, None)

    def _publish(
        self, seq: int, duration: float, results: Sequence[RenditionSegment] | None
    ) -> None:
        by_name = {r.name: r for r in results or ()}
        for profile in self.profiles:
            rendition = by_name.get(profile.name)
            if rendition is None or not rendition.data:
                self._ensure_info(profile)
                if results is not None:
                    log.warning(
                        "stream %r segment %d: no %s rendition returned",
                        self.name,
                        seq,
                        profile.name,
                    )
                self.hls.add_gap(profile.name, seq, duration)
                continue
            self.metrics.inc("segments_out_total", rendition=profile.name)
            info = avc_info_from_annexb(joined_payloads(rendition.data))
            if self._source_info:
                width, height = scaled_size(
                    self._source_info.width, self._source_info.height, profile
                )
            else:
                width, height = rendition.width, rendition.height
            self.hls.set_info(
                RenditionInfo(
                    name=profile.name,
                    width=info.width if info else width,
                    height=info.height if info else height,
                    codecs=self._codecs(info),
                    bandwidth=profile.bitrate + (128_000 if self._audio else 0),
                )
            )
            self.hls.add_segment(profile.name, seq, duration, rendition.data)
            self.feed_rendition_ts(profile.name, rendition.data)


class _LiveOutput:
    """Takes a pipeline job's output as the worker encodes it (implements
    ``lpstream.jobs.Relay``): each whole frame goes to the WebRTC viewers at once, and the
    bytes are cut into LL-HLS parts at frame boundaries about every part target, so players
    of the ``ai`` rendition need not wait for the whole segment."""

    def __init__(
        self,
        packets: StreamPackets,
        on_part: Callable[[float, bytes, bool], None],
        on_config: Callable[[CodecConfig], None],
        part_target: float,
        on_frame: Callable[[int], None] = lambda pts: None,
    ) -> None:
        self._packets = packets
        self._on_frame = on_frame
        self._on_part = on_part
        self._on_config = on_config
        self._part_target_ms = part_target * 1000
        self._demuxer = TsVideoDemuxer()
        self._track: int | None = None
        self._bytes = bytearray()
        self._part_offset = 0
        self._part_pts: int | None = None
        self._part_key = False
        self._published = 0.0
        self.started = False
        self.parts = 0

    async def start(self, renditions: Sequence[Rendition]) -> None:
        self.started = True
        names = [r.name for r in renditions]
        self._track = names.index(AI_RENDITION) if AI_RENDITION in names else None

    async def data(self, track: int, payload: bytes) -> None:
        if track != self._track:
            return
        self._bytes += payload
        located = self._demuxer.feed_located(payload)
        for offset, event in located:
            if isinstance(event, CodecConfig):
                self._on_config(event)
            elif isinstance(event, MediaPacket):
                self._on_frame(event.pts)
                if self._part_pts is None:
                    self._part_pts, self._part_key = event.pts, event.keyframe
                elif (
                    event.pts - self._part_pts >= self._part_target_ms
                    and offset > self._part_offset
                ):
                    self._part(offset, (event.pts - self._part_pts) / 1000)
                    self._part_pts, self._part_key = event.pts, event.keyframe
        if located:
            self._packets.feed_events(AI_RENDITION, [event for _, event in located])

    def _part(self, end: int, duration: float) -> None:
        self._on_part(duration, bytes(self._bytes[self._part_offset : end]), self._part_key)
        self._part_offset = end
        self._published += duration
        self.parts += 1

    def finish(self, duration: float) -> None:
        """The job ended: the last frames go to the viewers and the rest is the last part
        (its duration what is left of the segment's)."""
        events = self._demuxer.flush()
        if events:
            self._packets.feed_events(AI_RENDITION, events)
        if self.parts and len(self._bytes) > self._part_offset:
            self._part(len(self._bytes), max(duration - self._published, 0.001))
