"""The ladder's demux/decode loop: one input read once, every rendition fed from it.

How this works:

* The source is demuxed as it arrives; a small probe often leaves audio parameters unknown,
  so the first packets are held back ("priming", see ``audio.py``) until every audio stream
  has told us its parameters. Priming is bounded (about a second of video or a few hundred
  packets); an audio stream still unknown then is left out of the renditions.
* The video is decoded once, on the calling thread. The first decoded frame sizes the source:
  then every rendition is planned (``plan.py``) and opened (``rendition.py``), audio held
  back so far is muxed, and each frame from then on is submitted to every rendition.
* A decode error in one packet skips that packet, as players do; input with no decodable
  frame at all is an error. A frame whose timestamp is not after the last one's (damaged input
  that went back in time) is skipped, since encoders need order.
* Timestamps are the source's, in the source time base, from decoder to muxer: the MPEG-TS
  muxer is told not to offset them, so renditions line up with the source segment in HLS.
* Audio packets are copied unchanged into every rendition.
* On any error every rendition's worker is stopped and its output dropped without a trailer
  (``on_data`` may be what failed).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction

import av.container
import av.error
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame

from lpstream.errors import MediaError
from lpstream.media import VideoProfile
from workers.ladder.audio import AudioTrack
from workers.ladder.plan import plan_rendition, source_rate
from workers.ladder.rendition import (
    DataCallback,
    FrameStage,
    RenditionEncoder,
    RenditionOutput,
    open_rendition,
)

__all__ = ["LadderRun", "StartCallback"]

StartCallback = Callable[[list[tuple[str, int, int]]], None]
"""Receives ``[(name, width, height)]`` of every rendition once the first frame sized them,
before any of their bytes."""

_PRIME_MAX_PACKETS = 512
_PRIME_MAX_SECONDS = 1.5
"""How much of the source is held back at most while waiting for audio parameters."""


class LadderRun:
    """One call of ``transcode``: the demux/decode loop and the renditions it feeds."""

    def __init__(
        self,
        profiles: tuple[VideoProfile, ...],
        encoder: str,
        threads: int,
        container: av.container.InputContainer,
        stages: Mapping[str, FrameStage],
        *,
        started: float | None = None,
        live_slack: float = 0.0,
    ) -> None:
        self._profiles = profiles
        self._stages = stages
        self._encoder = encoder
        self._threads = threads
        self._input = container
        if not container.streams.video:
            raise MediaError("the input has no video stream")
        self._video = container.streams.video[0]
        self._tick = self._video.time_base or Fraction(1, 90_000)
        # Frame threads hold a frame each before the first comes out: a live (staged) job
        # decodes with slice threads only, which add no delay.
        self._video.codec_context.thread_type = "SLICE" if stages else "AUTO"
        self._video.codec_context.thread_count = 0
        self._audio = [s for s in container.streams.audio if s.codec_context is not None]
        self._tracks: dict[int, AudioTrack] = {}
        self._packet_pts: list[int] = []
        self._renditions: list[RenditionEncoder] = []
        self._pending_audio: list[tuple[int, Packet[Stream]]] = []
        self._shared_frames = threading.Lock()
        self.started = started
        """When the input began to arrive (monotonic), for staged renditions' real time."""
        self.live_slack = live_slack
        """Seconds a staged rendition may fall behind real time before it drops frames."""

    def run(
        self, on_data: DataCallback, on_start: StartCallback | None = None
    ) -> list[RenditionOutput]:
        video_index = self._video.index
        last_pts: int | None = None
        decoded = 0
        try:
            for packet in self._primed(self._input.demux(self._video, *self._audio)):
                # Flush packets carry no stream_index: ask the stream.
                index = packet.stream.index
                if index != video_index:
                    if packet.size:
                        self._on_audio(index, packet)
                    continue
                try:
                    frames = self._video.decode(packet)
                except av.error.InvalidDataError:
                    continue  # one broken packet; the decoder resyncs at the next one
                for frame in frames:
                    pts = frame.pts
                    if pts is None:
                        pts = 0 if last_pts is None else last_pts + 1
                    elif last_pts is not None and pts <= last_pts:
                        continue  # damaged input went back in time; encoders need order
                    last_pts = pts
                    if not self._renditions:
                        self._start(frame, on_data, on_start)
                    decoded += 1
                    key = frame.key_frame
                    for rendition in self._renditions:
                        rendition.submit(frame, pts, key)
            if not decoded:
                raise MediaError("the input holds no decodable video frames")
            return [rendition.finish() for rendition in self._renditions]
        finally:
            # On error: stop the workers, drop the outputs without writing trailers (on_data
            # may be what failed). After success this finds nothing left to do.
            for rendition in self._renditions:
                rendition.abort()
            self._renditions.clear()

    def _primed(self, packets: Iterator[Packet[Stream]]) -> Iterator[Packet[Stream]]:
        """Yields every packet, holding the first ones back until the audio is known."""
        held: list[Packet[Stream]] = []
        for packet in packets:
            held.append(packet)
            if self._note_priming(packet) or len(held) >= _PRIME_MAX_PACKETS:
                break
        self._audio = [s for s in self._audio if s.index in self._tracks]
        return itertools.chain(held, packets)

    def _note_priming(self, packet: Packet[Stream]) -> bool:
        """Learns from one held packet; True when priming can end."""
        index = packet.stream.index
        if index == self._video.index:
            if packet.pts is not None:
                self._packet_pts.append(packet.pts)
                span = (packet.pts - self._packet_pts[0]) * self._tick
                if abs(span) >= _PRIME_MAX_SECONDS:
                    return True
        elif packet.size and index not in self._tracks:
            track = AudioTrack.from_packet(packet)
            if track is not None:
                self._tracks[index] = track
        return all(s.index in self._tracks for s in self._audio)

    def _on_audio(self, index: int, packet: Packet[Stream]) -> None:
        track = self._tracks.get(index)
        if track is None or not track.stamp(packet):
            return
        if self._renditions:
            for rendition in self._renditions:
                rendition.mux_audio(index, packet)
        else:
            self._pending_audio.append((index, packet))

    def _start(
        self, frame: VideoFrame, on_data: DataCallback, on_start: StartCallback | None
    ) -> None:
        """Opens every rendition once the first frame gives the source size."""
        rate = source_rate(
            (self._video.average_rate, self._video.codec_context.framerate),
            self._packet_pts,
            self._tick,
        )
        for index, profile in enumerate(self._profiles):
            stage = self._stages.get(profile.name)
            plan = plan_rendition(
                index,
                profile,
                source_size=(frame.width, frame.height),
                source_rate=rate,
                tick=self._tick,
                encoder=self._encoder,
                live=stage is not None,
            )
            rendition = open_rendition(
                plan,
                on_data,
                encoder=self._encoder,
                threads=self._threads,
                tick=self._tick,
                audio=[(s, self._tracks[s.index]) for s in self._audio],
                shared_frames=self._shared_frames,
                stage=stage,
                started=self.started,
                live_slack=self.live_slack,
            )
            self._renditions.append(rendition)
        if on_start is not None:
            on_start([(r.plan.profile.name, r.plan.width, r.plan.height) for r in self._renditions])
        for index, packet in self._pending_audio:
            for rendition in self._renditions:
                rendition.mux_audio(index, packet)
        self._pending_audio.clear()
        for rendition in self._renditions:
            rendition.start()
