"""The fragmented-MP4 muxer of one AV1 or VP9 segment (MPEG-TS carries neither).

How this works: each segment is a whole fragmented MP4 file — ``ftyp`` and an empty ``moov``
(the init section), then a ``moof`` + ``mdat`` every 100 ms (``frag_duration``), so a reader
downstream takes frames while the segment is still being cut, as with MPEG-TS.
(``frag_every_frame`` would give each frame at once, but FFmpeg then writes AAC fragments
whose samples decoders lose a third of.)
``frag_discont`` with ``avoid_negative_ts`` off keeps the packets' own times in each
fragment's ``tfdt``, so segments run on one timeline; the video track counts in 90 kHz
like MPEG-TS. Nothing is encoded: the video stream is made from the codec's name and the
picture size (from the AV1 configuration record, or a VP9 keyframe's header, so the muxer
opens at the segment's first frame), the audio from the AAC template. FFmpeg writes the
``av1C``/``vpcC`` box from the first keyframe.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

from lpstream.errors import MediaError
from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.media.video import video_info_from_config
from lpstream.media.vp9 import vp9_frame_size

from .remux import CodecTemplates, PacketRefused, Sink

__all__ = ["Mp4SegmentMuxer"]

_MS = Fraction(1, 1000)
_MUX_OPTIONS = {
    "movflags": "empty_moov+default_base_moof+frag_discont",
    "frag_duration": "100000",
    "avoid_negative_ts": "disabled",
    "flush_packets": "1",
    "video_track_timescale": "90000",
}


class Mp4SegmentMuxer:
    """The fragmented-MP4 muxer of one segment, writing to ``on_write`` as it goes; opened
    at its first video frame (a keyframe: segments start with one)."""

    def __init__(self, templates: CodecTemplates, on_write: Callable[[bytes], None]) -> None:
        self._templates = templates
        self._on_write = on_write
        self._container: Any = None
        self._video: Any = None
        self._audio: Any = None
        self._held: list[MediaPacket] = []

    @property
    def has_audio(self) -> bool:
        return self._templates.audio is not None

    def mux(self, packet: MediaPacket) -> None:
        """Muxes a packet; audio before the first video frame waits for it.

        Raises:
            PacketRefused: the muxer refused it, or the first frame gives no picture size.
        """
        if self._container is None:
            if packet.kind is not TrackKind.VIDEO:
                self._held.append(packet)
                return
            self._open(packet)
            held, self._held = self._held, []
            for early in held:
                self._write(early)
        self._write(packet)

    def close(self) -> None:
        """Writes the segment's end (a segment with no video frame writes nothing).

        Raises:
            PacketRefused: it did not finish cleanly; what was written stays.
        """
        if self._container is None:
            return
        try:
            self._container.close()
        except av.FFmpegError as exc:
            raise PacketRefused(str(exc)) from exc

    def _open(self, first: MediaPacket) -> None:
        config = self._templates.video_config
        width, height = _picture(config, first)
        try:
            self._container = av.open(
                Sink(self._on_write), mode="w", format="mp4", options=_MUX_OPTIONS
            )
            self._video = self._container.add_mux_stream(
                config.codec, width=width, height=height, time_base=_MS
            )
            if self._templates.audio is not None:
                self._audio = self._container.add_stream_from_template(self._templates.audio)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot start a fragmented MP4 segment: {exc}") from exc

    def _write(self, packet: MediaPacket) -> None:
        out = av.Packet(packet.data)
        out.dts, out.pts, out.time_base = packet.dts, packet.pts, _MS
        out.is_keyframe = packet.keyframe
        out.stream = self._video if packet.kind is TrackKind.VIDEO else self._audio
        try:
            self._container.mux(out)
        except av.FFmpegError as exc:
            raise PacketRefused(str(exc)) from exc


def _picture(config: CodecConfig, first: MediaPacket) -> tuple[int, int]:
    """The picture size of a segment of ``config``'s codec whose first frame is ``first``.

    Raises:
        PacketRefused: neither the configuration nor the frame gives it.
    """
    try:
        if config.codec == "vp9":
            size = vp9_frame_size(first.data)
        else:
            info = video_info_from_config(config)
            size = None if info is None else (info.width, info.height)
    except ValueError as exc:
        raise PacketRefused(f"the first {config.codec} frame gives no picture size: {exc}") from exc
    if size is None or min(size) <= 0:
        raise PacketRefused(f"the first {config.codec} frame gives no picture size")
    return size
