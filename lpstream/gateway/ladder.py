"""A live stream's transcoded renditions (its ladder): one job per source segment, listed
whole as they come back.

How this works: for each source segment a task asks the ``SegmentTranscoder`` for every
profile's rendition while the segment is still being cut (the trickle), retrying from the
first byte on failure. When the segment is complete the answer is listed: each rendition as a
whole segment, without parts (players that want parts play the source; LL-HLS lets a
playlist have none), and handed to the WebRTC viewers. A rendition missing from the answer,
or every one when all attempts failed, gets an ``EXT-X-GAP`` for that segment so that the
playlists stay aligned; so does every rendition when the publisher left mid-segment.

Each segment first asks the gateway's ``TranscodeShares`` whether its stream's publisher may
have the transcoding it costs (``lpstream.gateway.fair_share``); a stream shed for being over
its publisher's share lists gaps without sending anything. When every orchestrator answers
busy and the shares shed someone over their share for this stream, the segment waits for
that room (``busy_patience`` segment durations, trying every ``busy_pause`` seconds) instead
of using up its attempts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
import trio

from lpstream.errors import BusyError, LpstreamError, MediaError, ProtocolError
from lpstream.gateway.fair_share import TranscodeShares
from lpstream.gateway.outlets import RenditionOutlets
from lpstream.gateway.segment_outlet import hand_in_segment, is_fragmented_mp4, segment_video
from lpstream.gateway.segments import (
    RenditionSegment,
    SegmentJob,
    SegmentTranscoder,
    SourceSegment,
)
from lpstream.media import VideoProfile
from lpstream.orchestrator.capacity import ladder_work

__all__ = ["RenditionLadder"]

log = logging.getLogger("lpstream.gateway")


@attrs.define
class RenditionLadder:
    """Transcodes a stream's segments into its profiles and lists them (see the module
    comment)."""

    outlets: RenditionOutlets
    """Where the renditions are listed and figures recorded."""
    transcoder: SegmentTranscoder
    session: str
    """The publish session's id (the jobs' session)."""
    profiles: tuple[VideoProfile, ...]
    attempts: int = 3
    shares: TranscodeShares = attrs.Factory(TranscodeShares)
    """The gateway's transcoding capacity among its publishers (this stream's publisher
    joined it, if the gateway keeps shares)."""
    busy_patience: float = 3.0
    """Segment durations a segment waits for room an over-share publisher gives back."""
    busy_pause: float = 0.5
    """Seconds between two tries while it waits."""
    in_flight: int = 0
    """Segments sent and not yet listed."""

    def start_segment(self, segment: SourceSegment, nursery: trio.Nursery) -> None:
        """Starts transcoding ``segment`` while it is being cut."""
        self.in_flight += 1
        nursery.start_soon(self.transcode_segment, segment)

    async def transcode_segment(self, segment: SourceSegment) -> None:
        """Gets ``segment``'s renditions (or gives up after ``attempts``) and lists them."""
        hls = self.outlets.hls
        job = SegmentJob.from_segment(
            segment,
            stream=self.outlets.stream,
            session=self.session,
            target=self.outlets.segment_target,
            profiles=self.profiles,
        )
        try:
            work = ladder_work(self.profiles, segment.source_size, segment.fps)
            shed = self.shares.admit(self.outlets.stream, work)
            if shed:
                self.outlets.metrics.inc("errors_total", kind="fair_share")
            results = None if shed else await self._transcode(job, segment)
            await segment.buffer.wait_closed()
            assert segment.duration is not None  # set before the buffer closes
            self._publish(segment.seq, segment.duration, results)
            self.outlets.notify()
            if results is not None and segment.buffer.closed_at is not None:
                # From the segment's last input byte to all its renditions being listed.
                latency = trio.current_time() - segment.buffer.closed_at
                self.outlets.latency.renditions_listed(latency)
                self.outlets.metrics.observe(
                    "publish_latency_seconds", latency, stream=self.outlets.stream
                )
        except MediaError:
            # The upload itself never completed (the publisher left mid-segment).
            for profile in self.profiles:
                self._ensure_info(profile)
                hls.add_gap(profile.name, segment.seq, self.outlets.segment_target)
            self.outlets.notify()
        finally:
            self.in_flight -= 1

    async def _transcode(
        self, job: SegmentJob, segment: SourceSegment
    ) -> Sequence[RenditionSegment] | None:
        """The renditions from the first attempt that succeeds; None if none does."""
        waiting_until: float | None = None  # while room shed streams give back is awaited
        attempt = 0
        while attempt < self.attempts:
            try:
                started = trio.current_time()
                results = await self.transcoder.transcode(job, segment.buffer)
                self.outlets.metrics.inc("transcode_seconds_total", trio.current_time() - started)
                self.shares.served(self.outlets.stream)
                return results
            except (LpstreamError, trio.TooSlowError) as exc:
                self.outlets.metrics.inc("errors_total", kind="transcode")
                if _busy(exc):
                    if waiting_until is None and self.shares.refused(self.outlets.stream):
                        waiting_until = started + self.busy_patience * self.outlets.segment_target
                        log.info(
                            "stream %r segment %d: busy; waiting for the room of streams "
                            "over their publisher's share",
                            self.outlets.stream,
                            segment.seq,
                        )
                    if waiting_until is not None and trio.current_time() < waiting_until:
                        await trio.sleep(self.busy_pause)
                        continue
                attempt += 1
                log.warning(
                    "stream %r segment %d: attempt %d/%d failed: %s",
                    self.outlets.stream,
                    segment.seq,
                    attempt,
                    self.attempts,
                    exc,
                )
        return None

    def _publish(
        self, seq: int, duration: float, results: Sequence[RenditionSegment] | None
    ) -> None:
        hls = self.outlets.hls
        by_name = {r.name: r for r in results or ()}
        for profile in self.profiles:
            rendition = by_name.get(profile.name)
            if rendition is None or not rendition.data:
                self._ensure_info(profile)
                if results is not None:
                    log.warning(
                        "stream %r segment %d: no %s rendition returned",
                        self.outlets.stream,
                        seq,
                        profile.name,
                    )
                hls.add_gap(profile.name, seq, duration)
                continue
            self.outlets.metrics.inc("segments_out_total", rendition=profile.name)
            self.outlets.metrics.inc(
                "stream_segments_out_total", stream=self.outlets.stream, rendition=profile.name
            )
            size = self.outlets.source.scaled_size(profile) or (rendition.width, rendition.height)
            video = segment_video(rendition.data)
            hls.set_info(
                self.outlets.source.rendition_info(
                    profile.name, video, size, self.outlets.source.bandwidth(profile.bitrate)
                )
            )
            try:
                hand_in_segment(hls, profile.name, seq, duration, rendition.data)
            except ValueError as exc:
                log.warning(
                    "stream %r segment %d: the %s rendition cannot be listed: %s",
                    self.outlets.stream,
                    seq,
                    profile.name,
                    exc,
                )
                hls.add_gap(profile.name, seq, duration)
                continue
            if is_fragmented_mp4(rendition.data):
                self.outlets.packets.refuse_webrtc(
                    profile.name, video.codecs if video else "fragmented MP4"
                )
            else:
                self.outlets.packets.feed_ts(profile.name, rendition.data)

    def _ensure_info(self, profile: VideoProfile) -> None:
        """Gives a rendition that has no segment yet master-playlist facts from its profile,
        so that a stream whose renditions all failed still gets a master playlist."""
        hls = self.outlets.hls
        if hls.has_info(profile.name):
            return
        size = self.outlets.source.scaled_size(profile) or (profile.width, profile.height)
        hls.set_info(
            self.outlets.source.rendition_info(
                profile.name, None, size, self.outlets.source.bandwidth(profile.bitrate)
            )
        )


def _busy(exc: BaseException) -> bool:
    """Whether ``exc`` says no orchestrator had room (503)."""
    return isinstance(exc, BusyError) or (isinstance(exc, ProtocolError) and exc.code == 503)
