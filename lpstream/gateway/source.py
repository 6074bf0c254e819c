"""What the gateway knows of a stream's source (picture, frame rate, audio) and the facts each
rendition's master-playlist entry takes from it."""

from __future__ import annotations

import attrs

from lpstream.media import (
    CodecConfig,
    MediaEvent,
    MediaPacket,
    StreamMetadata,
    TrackKind,
    VideoProfile,
)
from lpstream.media import scaled_size as profile_size
from lpstream.media.video import VideoInfo, video_info_from_config
from lpstream.playback.hls import RenditionInfo

__all__ = ["AUDIO_BANDWIDTH", "SourceFormat"]

AUDIO_BANDWIDTH = 128_000
"""Bits per second a rendition's master-playlist bandwidth counts for the audio."""

DEFAULT_VIDEO_CODEC = "avc1.640028"
"""The video codec named while a rendition's own is unknown (H.264 High, level 4.0)."""


@attrs.define
class SourceFormat:
    """The source as its configuration events describe it (``note`` takes every event)."""

    video: VideoInfo | None = None
    """The source's video facts (any codec), once its decoder configuration came (and
    parsed)."""
    fps: float = 30.0
    """Frame rate from the publisher's metadata (30 if it gives none)."""
    _audio: CodecConfig | None = None
    _video_config: CodecConfig | None = None

    def note(self, event: MediaEvent) -> None:
        """Takes what a publisher's event says of the source (metadata, decoder configs, a
        VP9 keyframe's picture size)."""
        if isinstance(event, StreamMetadata):
            rate = event.values.get("framerate") or event.values.get("fps")
            if isinstance(rate, int | float) and 0 < rate <= 240:
                self.fps = float(rate)
        elif isinstance(event, CodecConfig):
            if event.kind is not TrackKind.VIDEO:
                self._audio = event
                return
            self._video_config = event
            try:
                self.video = video_info_from_config(event)
            except ValueError:
                self.video = None
        elif (
            isinstance(event, MediaPacket)
            and event.keyframe
            and self.video is None
            and self._video_config is not None
            and event.kind is TrackKind.VIDEO
        ):
            # VP9's record names no picture size; its keyframes do.
            try:
                self.video = video_info_from_config(self._video_config, event.data)
            except ValueError:
                self.video = None

    @property
    def size(self) -> tuple[int, int]:
        """Width and height of the source picture ((0, 0) while unknown)."""
        return (self.video.width, self.video.height) if self.video else (0, 0)

    def scaled_size(self, profile: VideoProfile) -> tuple[int, int] | None:
        """The picture ``profile`` makes of this source; None while the source is unknown."""
        if self.video is None:
            return None
        return profile_size(self.video.width, self.video.height, profile)

    def codecs(self, video: VideoInfo | None) -> str:
        """The ``CODECS`` of a rendition with ``video`` (None: unknown yet) and our audio."""
        parts = [video.codecs if video else DEFAULT_VIDEO_CODEC]
        if self._audio is not None and self._audio.data:
            object_type = self._audio.data[0] >> 3
            parts.append(f"mp4a.40.{object_type or 2}")
        return ",".join(parts)

    def bandwidth(self, video_bitrate: int) -> int:
        """A rendition's bandwidth: its video bitrate and, if the source has audio, that."""
        return video_bitrate + (AUDIO_BANDWIDTH if self._audio is not None else 0)

    def rendition_info(
        self, name: str, video: VideoInfo | None, size: tuple[int, int], bandwidth: int
    ) -> RenditionInfo:
        """Master-playlist facts of rendition ``name``: its picture as ``video`` says (or
        ``size`` while that is unknown), its codecs, ``bandwidth`` bits per second."""
        return RenditionInfo(
            name=name,
            width=video.width if video else size[0],
            height=video.height if video else size[1],
            codecs=self.codecs(video),
            bandwidth=bandwidth,
        )
