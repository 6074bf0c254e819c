"""Each segment's MPEG-TS file, remuxed by PyAV from the stream's packets.

How this works:

* Each segment is its own MPEG-TS file (PAT/PMT first) written by PyAV's muxer. The output
  streams are created from "template" streams that PyAV reads out of a tiny in-memory FLV
  holding just the codec configurations, so no encoder is ever opened: this is a remux.
  Packet timestamps are carried over as given (on the segmenter's output timeline), so they
  run on across segments.
* Each packet is written out as soon as it is muxed, and each video PES says its length, so a
  reader downstream (a worker decoding while the segment uploads, an LL-HLS part) can take a
  frame as soon as it is in.
* H.264 and HEVC segments are MPEG-TS, which carries them and which every HLS player takes.
  Their templates are FLV tags: the legacy AVC sequence header for H.264, the Enhanced RTMP
  ``hvc1`` sequence start for HEVC (FFmpeg reads both). AV1 and VP9, which MPEG-TS does not
  carry, are fragmented MP4 (:mod:`.file_mux`): the container HLS serves them in (CMAF); VP8,
  which MP4 does not carry either, is Matroska.
* Video goes through FFmpeg's length-prefixed to Annex B filter (``h264_mp4toannexb``,
  ``hevc_mp4toannexb``) here rather than the one the MPEG-TS muxer would add by itself: the
  muxer adds its own only if a segment's first packet looks length-prefixed, and then passes
  every later packet on unconverted, so one damaged first packet would make the whole segment
  unplayable. Here the filter refuses a packet whose NAL lengths
  do not add up, and only that packet is lost (:class:`PacketRefused`).
* FFmpeg's errors are translated here and nowhere else: a configuration or a muxer that cannot
  be used is a ``MediaError``; a packet or a trailer it refuses is :class:`PacketRefused`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import attrs
import av

from lpstream.errors import MediaError
from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.media.video import video_info_from_config

__all__ = [
    "SEGMENT_FORMATS",
    "SEGMENT_VIDEO_CODECS",
    "CodecTemplates",
    "PacketRefused",
    "SegmentMuxer",
    "Sink",
    "usable_templates",
]

_MS = Fraction(1, 1000)
_MUX_OPTIONS = {"omit_video_pes_length": "0", "flush_packets": "1"}
"""Write each packet out at once (not when a 32 KiB buffer fills: 130 ms of 720p), and give
each video PES its length."""

_ENHANCED_FOURCC = {"hevc": b"hvc1"}
"""Video codecs whose FLV template is an Enhanced RTMP tag, by their FourCC."""
_ANNEXB_FILTERS = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}
SEGMENT_FORMATS = {
    "h264": "mpegts",
    "hevc": "mpegts",
    "av1": "mp4",
    "vp9": "mp4",
    "vp8": "matroska",
}
"""The container (FFmpeg's format name) of a segment, by its video codec."""
_NAMES = {"h264": "H.264", "hevc": "HEVC", "av1": "AV1", "vp9": "VP9", "vp8": "VP8"}
SEGMENT_VIDEO_CODECS = frozenset(SEGMENT_FORMATS)
"""The video codecs (FFmpeg names) a segment carries."""
_KEYFRAME_SEQUENCE_START = 0x90
"""An Enhanced RTMP video tag's first byte: IsExHeader, a keyframe, PacketType SequenceStart."""


class PacketRefused(Exception):
    """The muxer refused a packet (or could not finish a segment); the message says why."""


@attrs.frozen
class CodecTemplates:
    """PyAV input streams describing the stream's codecs, for ``add_stream_from_template``."""

    video_config: CodecConfig
    """The video's configuration (its codec one of :data:`SEGMENT_VIDEO_CODECS`)."""
    video: Any
    """The video template; None where the segment is fragmented MP4 (made from
    ``video_config`` there)."""
    audio: Any
    """None for a stream without audio configuration."""

    @property
    def video_codec(self) -> str:
        return self.video_config.codec

    @property
    def segment_format(self) -> str:
        """``mpegts``, ``mp4`` or ``matroska``: what the segments of these codecs are."""
        return SEGMENT_FORMATS[self.video_codec]


def usable_templates(video: CodecConfig, audio: CodecConfig | None) -> CodecTemplates:
    """Templates for the codec configurations, checked the way they will be used: FFmpeg's
    length-prefixed to Annex B filter must accept the video configuration (else it would
    refuse every packet).

    Raises:
        MediaError: a configuration cannot be read or used, or its codec cannot be segmented.
    """
    if video.codec not in SEGMENT_VIDEO_CODECS:
        raise MediaError(
            f"unsupported video codec {video.codec!r}: segments carry "
            + ", ".join(sorted(SEGMENT_VIDEO_CODECS))
        )
    if SEGMENT_FORMATS[video.codec] != "mpegts":
        try:
            video_info_from_config(video)
        except ValueError as exc:
            raise MediaError(
                f"the {_NAMES[video.codec]} configuration record cannot be used: {exc}"
            ) from exc
        return _template_streams(video, audio, with_video=False)
    templates = _template_streams(video, audio)
    try:
        av.BitStreamFilterContext(_ANNEXB_FILTERS[video.codec], in_stream=templates.video)
    except av.FFmpegError as exc:
        reason = f"the {_NAMES[video.codec]} configuration record cannot be used: {exc}"
        raise MediaError(reason) from exc
    return templates


def _flv_tag(tag_type: int, payload: bytes) -> bytes:
    size = len(payload)
    header = bytes([tag_type]) + size.to_bytes(3, "big") + b"\x00\x00\x00\x00" + b"\x00\x00\x00"
    return header + payload + (11 + size).to_bytes(4, "big")


def _template_streams(
    video: CodecConfig, audio: CodecConfig | None, *, with_video: bool = True
) -> CodecTemplates:
    flags = (0x04 if audio is not None else 0) | (0x01 if with_video else 0)
    flv = b"FLV\x01" + bytes([flags]) + b"\x00\x00\x00\x09\x00\x00\x00\x00"
    fourcc = _ENHANCED_FOURCC.get(video.codec)
    if not with_video:
        pass
    elif fourcc is None:
        flv += _flv_tag(9, b"\x17\x00\x00\x00\x00" + video.data)
    else:
        flv += _flv_tag(9, bytes([_KEYFRAME_SEQUENCE_START]) + fourcc + video.data)
    if audio is not None:
        flv += _flv_tag(8, b"\xaf\x00" + audio.data)
    try:
        container = av.open(
            io.BytesIO(flv), format="flv", options={"probesize": "32", "analyzeduration": "0"}
        )
    except av.FFmpegError as exc:
        raise MediaError(f"codec configuration is not usable: {exc}") from exc
    v = container.streams.video[0] if container.streams.video else None
    a = container.streams.audio[0] if (audio is not None and container.streams.audio) else None
    if with_video and (v is None or v.codec_context.name != video.codec):
        raise MediaError(f"the {_NAMES[video.codec]} configuration record could not be read")
    return CodecTemplates(video_config=video, video=v, audio=a)


class Sink(io.RawIOBase):
    """A write-only file whose bytes go to a callback."""

    def __init__(self, on_write: Callable[[bytes], None]) -> None:
        self._on_write = on_write

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        if data:
            self._on_write(data)
        return len(data)


class SegmentMuxer:
    """The MPEG-TS muxer of one segment, writing to ``on_write`` as it goes."""

    def __init__(self, templates: CodecTemplates, on_write: Callable[[bytes], None]) -> None:
        """Opens the muxer with a video stream, and an audio stream if there is a template.

        Raises:
            MediaError: FFmpeg cannot start the segment.
        """
        try:
            self._container: Any = av.open(
                Sink(on_write), mode="w", format="mpegts", container_options=_MUX_OPTIONS
            )
            self._annexb: Any = av.BitStreamFilterContext(
                _ANNEXB_FILTERS[templates.video_codec], in_stream=templates.video
            )
            self._video: Any = self._container.add_stream_from_template(templates.video)
            self._audio: Any = None
            if templates.audio:
                self._audio = self._container.add_stream_from_template(templates.audio)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot start MPEG-TS segment: {exc}") from exc

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def mux(self, packet: MediaPacket) -> None:
        """Muxes a packet (its track must be in the segment).

        Raises:
            PacketRefused: the filter or the muxer refused it; nothing of it was written.
        """
        out = av.Packet(packet.data)
        out.dts = packet.dts
        out.pts = packet.pts
        out.time_base = _MS
        out.is_keyframe = packet.keyframe
        video = packet.kind is TrackKind.VIDEO
        stream = self._video if video else self._audio
        try:
            for item in self._annexb.filter(out) if video else [out]:
                item.time_base = _MS
                item.stream = stream
                self._container.mux(item)
        except av.FFmpegError as exc:
            raise PacketRefused(str(exc)) from exc

    def close(self) -> None:
        """Writes the segment's end.

        Raises:
            PacketRefused: it did not finish cleanly; what was written stays.
        """
        try:
            self._container.close()
        except av.FFmpegError as exc:
            raise PacketRefused(str(exc)) from exc
