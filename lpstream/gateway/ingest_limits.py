"""What one publisher may send: picture size, frame rate and bitrate, checked before anything
is buffered.

How this works: ``IngestMeter`` sees every media event of a publish (RTMP and WHIP alike, in
``LiveStream``) before the segmenter, and raises ``RemoteProtocolError`` (413) when a limit is
broken; the stream then ends and only that publisher is told why.

* Picture size: read from the H.264 sequence parameter set of each video configuration
  (``avcC``), so an 8K publish is refused at its first configuration, before one frame is
  decoded anywhere.
* Frame rate, two ways, both over ``window`` seconds: by the stream's own timestamps (more
  video frames than ``max_fps * window`` with decode times inside one window: a 1000 fps
  stream, or frames that all claim the same time, is refused within its first fraction of a
  second, before its first segment is complete), and by arrival (a token bucket of
  ``max_fps * window`` frames refilled at ``max_fps`` a second: a publisher may send a
  backlog at once, not keep sending faster than real time). A ladder keeps the source's frame
  rate, so this bounds what every segment costs to transcode.
* Bitrate: a token bucket that holds ``window`` seconds of the limit and refills at the limit,
  fed the size of every packet against the arrival clock (``now``, passed in: timestamps are the
  publisher's to choose, arrival is not). A publisher may burst ``window`` seconds' worth (a
  keyframe, a buffered start) but not stay above the limit for longer.
* A segment holds at most ``max_segment_duration`` seconds (the segmenter cuts there even without
  a keyframe), so ``segment_limit`` — the bytes that many seconds at the limit can take, plus the
  burst and the MPEG-TS overhead (``lpstream.media.segment_size_limit``, the rule orchestrators
  size their uploads by too) — bounds every segment buffer this publisher can fill.
"""

from __future__ import annotations

from collections import deque

import attrs

from lpstream.errors import RemoteProtocolError
from lpstream.media import (
    MAX_INGEST_BITRATE,
    MAX_SEGMENT_SECONDS,
    CodecConfig,
    MediaEvent,
    MediaPacket,
    TrackKind,
    segment_size_limit,
)
from lpstream.media.video import video_info_from_config

__all__ = [
    "DEFAULT_MAX_INGEST_BITRATE",
    "DEFAULT_MAX_INGEST_FPS",
    "DEFAULT_MAX_INGEST_PIXELS",
    "IngestLimits",
    "IngestMeter",
]

DEFAULT_MAX_INGEST_PIXELS = 4096 * 2304
"""Largest picture a publisher may send (width x height): 4096x2304, a little over 4K UHD."""
DEFAULT_MAX_INGEST_BITRATE = MAX_INGEST_BITRATE
"""Most bits per second a publisher may send, averaged over a couple of seconds."""
DEFAULT_MAX_INGEST_FPS = 120
"""Most video frames per second a publisher may send (by its timestamps and by arrival)."""


@attrs.frozen(kw_only=True)
class IngestLimits:
    """The limits of one publish (``--max-ingest-pixels``, ``--max-ingest-fps``,
    ``--max-ingest-bitrate``)."""

    max_pixels: int = DEFAULT_MAX_INGEST_PIXELS
    """Largest width x height of the video; 0 for no limit."""
    max_fps: int = DEFAULT_MAX_INGEST_FPS
    """Most video frames per second, over ``window``; 0 for no limit."""
    max_bitrate: int = DEFAULT_MAX_INGEST_BITRATE
    """Most bits per second, averaged over ``window``; 0 for no limit."""
    window: float = 2.0
    """Seconds the bitrate and the frame rate are averaged over (the burst a publisher may
    send at once)."""
    max_segment_duration: float = MAX_SEGMENT_SECONDS
    """Longest segment the segmenter cuts (it cuts without a keyframe past it)."""
    end_linger: float = 60.0
    """Seconds an ended stream's playlists and segments are kept (``--end-linger``)."""

    @property
    def burst_bytes(self) -> int:
        """The bucket: ``window`` seconds at the limit."""
        return int(self.max_bitrate / 8 * self.window)

    @property
    def burst_frames(self) -> int:
        """The frame bucket, and the most frames one window of timestamps may hold."""
        return int(self.max_fps * self.window)

    @property
    def segment_limit(self) -> int:
        """Largest segment this publisher can fill within its limits, in bytes (64 MiB
        without a bitrate limit)."""
        if not self.max_bitrate:
            return 64 * 1024 * 1024
        return segment_size_limit(self.max_bitrate, self.max_segment_duration, self.window)


@attrs.define
class IngestMeter:
    """Checks one publish's media events against its ``IngestLimits`` (see the module)."""

    limits: IngestLimits
    _tokens: float = attrs.field(init=False)
    _refilled_at: float | None = attrs.field(default=None, init=False)
    _frame_tokens: float = attrs.field(init=False)
    _frames_refilled_at: float | None = attrs.field(default=None, init=False)
    _window_dts: deque[int] = attrs.field(init=False, factory=deque)
    """Decode times (ms) of the video frames within the last ``window`` of timestamps."""
    _video_config: CodecConfig | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._tokens = float(self.limits.burst_bytes)
        self._frame_tokens = float(self.limits.burst_frames)

    def check(self, event: MediaEvent, now: float) -> None:
        """Takes one event as it arrives.

        Raises:
            RemoteProtocolError: 413 when the picture is too large, or the frame rate or the
                bitrate too high.
        """
        if isinstance(event, CodecConfig) and event.kind is TrackKind.VIDEO:
            self._video_config = event
            self._check_picture(event)
        elif isinstance(event, MediaPacket):
            if event.kind is TrackKind.VIDEO and self.limits.max_fps:
                self._count_frame(event.dts, now)
            config = self._video_config
            if (  # VP9's record names no picture size; its keyframes do
                event.kind is TrackKind.VIDEO
                and event.keyframe
                and config is not None
                and config.codec == "vp9"
            ):
                self._check_picture(config, event.data)
            if self.limits.max_bitrate:
                self._spend(len(event.data), now)

    def _check_picture(self, config: CodecConfig, keyframe: bytes | None = None) -> None:
        if not self.limits.max_pixels:
            return
        try:
            info = video_info_from_config(config, keyframe)
        except ValueError:
            return  # the segmenter or the decoder refuses what it cannot read
        if info is not None:
            self._check_size(info.width, info.height)

    def _check_size(self, width: int, height: int) -> None:
        if width * height > self.limits.max_pixels:
            raise RemoteProtocolError(
                f"picture {width}x{height} is larger than this node takes "
                f"({self.limits.max_pixels} pixels, --max-ingest-pixels)",
                code=413,
            )

    def _count_frame(self, dts: int, now: float) -> None:
        limits = self.limits
        window_ms = limits.window * 1000
        recent = self._window_dts
        if recent and dts < recent[-1]:
            recent.clear()  # a jump back: the segmenter drops or rebases; count afresh
        recent.append(dts)
        while recent[0] <= dts - window_ms:
            recent.popleft()
        if len(recent) > limits.burst_frames:
            raise RemoteProtocolError(
                f"frame rate over {limits.max_fps} fps by the stream's own timestamps "
                f"({len(recent)} frames within {limits.window:g} s; --max-ingest-fps)",
                code=413,
            )
        if self._frames_refilled_at is not None:
            self._frame_tokens = min(
                float(limits.burst_frames),
                self._frame_tokens + (now - self._frames_refilled_at) * limits.max_fps,
            )
        self._frames_refilled_at = now
        self._frame_tokens -= 1
        if self._frame_tokens < 0:
            raise RemoteProtocolError(
                f"frames arrive faster than {limits.max_fps} a second for more than "
                f"{limits.window:g} s (--max-ingest-fps)",
                code=413,
            )

    def _spend(self, size: int, now: float) -> None:
        rate = self.limits.max_bitrate / 8
        if self._refilled_at is not None:
            self._tokens = min(
                float(self.limits.burst_bytes), self._tokens + (now - self._refilled_at) * rate
            )
        self._refilled_at = now
        self._tokens -= size
        if self._tokens < 0:
            raise RemoteProtocolError(
                f"bitrate over {self.limits.max_bitrate / 1e6:g} Mbit/s for more than "
                f"{self.limits.window:g} s (--max-ingest-bitrate)",
                code=413,
            )
