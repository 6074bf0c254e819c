"""A live stream's ``ai`` rendition: each source segment through its live AI session's
pipeline, listed part by part as the worker encodes it.

How this works:

* While the stream has a ready ``LiveAiSession`` (open and paid on an orchestrator), every
  source segment also goes out as a pipeline job (next to the transcode job); the ``ai``
  rendition is added to the playlists at the first segment the session sees. A segment
  without a ready session (stopped, not yet paid, or moving) gets a gap there, so that
  sequence numbers stay aligned across renditions.
* The job's output comes back frame by frame (``lpstream.jobs.Relay``): each whole frame goes
  to the WebRTC viewers at once, and the bytes are cut into LL-HLS parts at frame boundaries
  about every part target, so players of the rendition need not wait for the whole segment.
  The first decoder configuration gives the rendition its master-playlist facts.
* When the source segment is complete and the job is done, the rest is the last part and the
  segment is complete; a job that sent nothing gets a gap, one that answered whole (no parts)
  is listed as a whole segment.
* Each output frame is matched with its source frame's arrival (``LatencyRecorder``) for the
  session's frame latency; each segment's figures (fps, drops, latency) go to the session.
* The session is told when each segment goes out and each frame comes back: that is how it
  finds a stalled orchestrator and measures the gap of a swap. Across a swap the rendition
  goes on under the same sequence numbers (the timestamps are the source's, so no
  discontinuity is needed); segments lost with the old orchestrator are gaps, or the part of
  them that came.

This object is handed what it needs (the transcoder, the playlists, the packet fan-out, the
source's facts, the latency recorder); it knows nothing of the publish session around it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import attrs
import trio

from lpstream.errors import LpstreamError, MediaError
from lpstream.gateway.live_ai import AI_RENDITION, LiveAiSession
from lpstream.gateway.outlets import RenditionOutlets
from lpstream.gateway.segments import RenditionSegment, SegmentJob, SegmentTranscoder, SourceSegment
from lpstream.media import CodecConfig, MediaPacket
from lpstream.media.h264 import AvcInfo, avc_info_from_annexb, avc_info_from_config
from lpstream.media.mpegts import joined_payloads
from lpstream.playback.live_packets import StreamPackets
from lpstream.playback.llhls import DEFAULT_PART_TARGET
from lpstream.playback.tsdemux import TsVideoDemuxer
from lpstream.wire import Rendition

__all__ = ["AiRendition"]

log = logging.getLogger("lpstream.gateway")


@attrs.define
class AiRendition:
    """The ``ai`` rendition of one live stream (see the module comment)."""

    outlets: RenditionOutlets
    """Where the rendition is listed and figures recorded (source frames' arrivals too)."""
    transcoder: SegmentTranscoder
    part_target: float = DEFAULT_PART_TARGET
    """LL-HLS part target, in seconds."""
    session: LiveAiSession | None = None
    """The stream's live AI session, if one was started."""
    in_flight: int = 0
    """Segments sent to the pipeline and not yet listed."""

    def start_segment(self, segment: SourceSegment, nursery: trio.Nursery) -> None:
        """Sends ``segment`` through the running session, or lists a gap where the rendition
        exists and no session runs."""
        hls = self.outlets.hls
        session = self.session
        if session is not None and session.ready:
            if not hls.has_rendition(AI_RENDITION):
                hls.add_rendition(AI_RENDITION, segment.seq)
            self.in_flight += 1
            session.note_input(trio.current_time(), self.outlets.segment_target)
            nursery.start_soon(self.run_segment, session, segment)
        elif hls.has_rendition(AI_RENDITION):
            hls.add_gap(AI_RENDITION, segment.seq, self.outlets.segment_target)

    async def run_segment(self, session: LiveAiSession, segment: SourceSegment) -> None:
        """Runs one segment through ``session`` and lists the output (or a gap)."""
        hls, seq = self.outlets.hls, segment.seq
        job = SegmentJob.from_segment(
            segment,
            stream=self.outlets.stream,
            session=session.session,
            target=self.outlets.segment_target,
            profiles=(session.profile,),
            pipeline=session.pipeline,
            params=session.params,
        )
        relay = _LiveOutput(
            self.outlets.packets,
            on_part=lambda duration, data, independent: self._part(
                seq, duration, data, independent
            ),
            on_config=lambda config: self._info_from_config(session, config),
            on_frame=lambda pts: self._frame_back(session, pts),
            part_target=self.part_target,
        )
        try:
            output = await self._run_job(session, job, segment, relay)
            await segment.buffer.wait_closed()
            self._list(session, segment, output, relay)
        except MediaError:
            # The upload itself never completed (the publisher left mid-segment).
            if relay.parts:
                hls.complete_segment(AI_RENDITION, seq)
            else:
                hls.add_gap(AI_RENDITION, seq, self.outlets.segment_target)
            self.outlets.notify()
        finally:
            self.in_flight -= 1

    def _list(
        self,
        session: LiveAiSession,
        segment: SourceSegment,
        output: RenditionSegment | None,
        relay: _LiveOutput,
    ) -> None:
        """The segment is complete and its job done: list what came (or a gap)."""
        hls, seq = self.outlets.hls, segment.seq
        duration = self.outlets.segment_target if segment.duration is None else segment.duration
        if output is not None:
            relay.finish(duration)
        if relay.parts:
            # Listed part by part as it came; whatever came is the segment.
            hls.complete_segment(AI_RENDITION, seq)
        elif output is None:
            hls.add_gap(AI_RENDITION, seq, duration)
        else:
            if not hls.has_info(AI_RENDITION):
                info = avc_info_from_annexb(joined_payloads(output.data))
                self._set_info(session, info, output.width, output.height)
            hls.add_segment(AI_RENDITION, seq, duration, output.data)
            if not relay.started:  # WebRTC viewers got it frame by frame otherwise
                self.outlets.packets.feed_ts(AI_RENDITION, output.data)
        if output is not None:
            self._count_segment(session, output)
            closed_at = segment.buffer.closed_at or trio.current_time()
            latency = trio.current_time() - closed_at
            session.note_segment(seq, duration, output.frames, output.dropped, latency)
        self.outlets.notify()

    async def _run_job(
        self, session: LiveAiSession, job: SegmentJob, segment: SourceSegment, relay: _LiveOutput
    ) -> RenditionSegment | None:
        """The pipeline's output for ``job``; None (told to the session) when there is none."""
        try:
            results = await self.transcoder.transcode(job, segment.buffer, relay)
        except (LpstreamError, trio.TooSlowError) as exc:
            self.outlets.metrics.inc("errors_total", kind="pipeline")
            log.warning(
                "stream %r segment %d: pipeline job failed: %s", self.outlets.stream, job.seq, exc
            )
            session.note_failure(job.seq, str(exc))
            return None
        output = next((r for r in results if r.name == AI_RENDITION and r.data), None)
        if output is None:
            session.note_failure(job.seq, "no ai rendition returned")
        return output

    def _count_segment(self, session: LiveAiSession, output: RenditionSegment) -> None:
        """The metrics of one listed AI segment."""
        metrics, stream = self.outlets.metrics, self.outlets.stream
        metrics.inc("segments_out_total", rendition=AI_RENDITION)
        metrics.inc("stream_segments_out_total", stream=stream, rendition=AI_RENDITION)
        labels = {"stream": stream, "pipeline": session.pipeline}
        metrics.inc("ai_frames_out_total", output.frames, **labels)
        metrics.inc("ai_frames_dropped_total", output.dropped, **labels)

    def _frame_back(self, session: LiveAiSession, pts: int) -> None:
        """An AI output frame is back: how long after its source frame reached us (and, for
        the session's failover, that frames come)."""
        session.note_output(trio.current_time())
        seconds = self.outlets.latency.frame_back(pts, trio.current_time())
        if seconds is not None:
            session.note_frame_latency(seconds)
            self.outlets.metrics.observe(
                "ai_frame_latency_seconds",
                seconds,
                stream=self.outlets.stream,
                pipeline=session.pipeline,
            )

    def _part(self, seq: int, duration: float, data: bytes, independent: bool) -> None:
        self.outlets.hls.add_part(AI_RENDITION, seq, duration, data, independent=independent)
        self.outlets.notify()

    def _info_from_config(self, session: LiveAiSession, config: CodecConfig) -> None:
        if self.outlets.hls.has_info(AI_RENDITION):
            return
        try:
            info = avc_info_from_config(config.data)
        except (ValueError, IndexError):
            return
        self._set_info(session, info, session.profile.width, session.profile.height)

    def _set_info(
        self, session: LiveAiSession, info: AvcInfo | None, width: int, height: int
    ) -> None:
        self.outlets.hls.set_info(
            self.outlets.source.rendition_info(
                AI_RENDITION,
                info,
                (width, height),
                self.outlets.source.bandwidth(session.profile.bitrate),
            )
        )


class _LiveOutput:
    """Takes a pipeline job's output as the worker encodes it (implements
    ``lpstream.jobs.Relay``): whole frames to the WebRTC viewers, bytes cut into LL-HLS parts
    at frame boundaries about every part target."""

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
