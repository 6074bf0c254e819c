"""The muxer of one segment in a container that takes its video codec's frames as they are:
fragmented MP4 for AV1 and VP9, Matroska for VP8 (MPEG-TS carries none of them, MP4 no VP8).

How this works: each AV1 or VP9 segment is a whole fragmented MP4 file — ``ftyp`` and an
empty ``moov`` (the init section), then a ``moof`` + ``mdat`` every 100 ms (``frag_duration``),
so a reader downstream takes frames while the segment is still being cut, as with MPEG-TS.
(``frag_every_frame`` would give each frame at once, but FFmpeg then writes AAC fragments
whose samples decoders lose a third of.) ``frag_discont`` with ``avoid_negative_ts`` off keeps
the packets' own times in each fragment's ``tfdt``, so segments run on one timeline; the
video track counts in 90 kHz like MPEG-TS. A VP8 segment is a Matroska file whose clusters
close every 100 ms, its timestamps kept as they are too. Nothing is encoded: the video stream
is made from the codec's name and the picture size (from the AV1 configuration record, or a
VP9 or VP8 keyframe's header, so the muxer opens at the segment's first frame), the audio
from the AAC template. FFmpeg writes the ``av1C``/``vpcC`` box from the first keyframe.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

from lpstream.errors import MediaError
from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.media.video import video_info_from_config
from lpstream.media.vp8 import vp8_keyframe_size
from lpstream.media.vp9 import vp9_frame_size

from .remux import CodecTemplates, PacketRefused, Sink

__all__ = ["FileSegmentMuxer"]

_MS = Fraction(1, 1000)
_MUX_OPTIONS = {
    "mp4": {
        "movflags": "empty_moov+default_base_moof+frag_discont",
        "frag_duration": "100000",
        "avoid_negative_ts": "disabled",
        "flush_packets": "1",
        "video_track_timescale": "90000",
    },
    "matroska": {
        "cluster_time_limit": "100",
        "avoid_negative_ts": "disabled",
        "flush_packets": "1",
    },
}


class FileSegmentMuxer:
    """The fragmented-MP4 or Matroska muxer of one segment (``templates.segment_format``),
    writing to ``on_write`` as it goes; opened at its first video frame (a keyframe:
    segments start with one)."""

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
            kind = self._templates.segment_format
            self._container = av.open(
                Sink(self._on_write), mode="w", format=kind, options=_MUX_OPTIONS[kind]
            )
            self._video = self._container.add_mux_stream(
                config.codec, width=width, height=height, time_base=_MS
            )
            if self._templates.audio is not None:
                self._audio = self._container.add_stream_from_template(self._templates.audio)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot start a {kind} segment: {exc}") from exc

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
        elif config.codec == "vp8":
            size = vp8_keyframe_size(first.data)
        else:
            info = video_info_from_config(config)
            size = None if info is None else (info.width, info.height)
    except ValueError as exc:
        raise PacketRefused(f"the first {config.codec} frame gives no picture size: {exc}") from exc
    if size is None or min(size) <= 0:
        raise PacketRefused(f"the first {config.codec} frame gives no picture size")
    return size
