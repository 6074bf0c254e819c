"""A segment handed to HLS whatever its container, and what its video is.

MPEG-TS segments (H.264, HEVC) are listed as they are. A fragmented-MP4 segment (an AV1 or
VP9 source, an HEVC or AV1 rendition) is a whole file, ``ftyp`` + ``moov`` then fragments:
HLS serves its init section once (``EXT-X-MAP``, :meth:`LowLatencyStream.set_init`) and the
fragments as the segment. The video's facts (picture, ``CODECS``) come from the first SPS of an
MPEG-TS segment, or from the configuration box of an fMP4 init section's video track.
"""

from __future__ import annotations

import attrs

from lpstream.media import CodecConfig, TrackKind
from lpstream.media.fmp4 import Fmp4Reader, InitSection, init_and_media
from lpstream.media.mpegts import joined_payloads
from lpstream.media.segment_format import segment_format
from lpstream.media.video import VideoInfo, video_info_from_annexb, video_info_from_config
from lpstream.media.vp9 import vp9_info_from_config
from lpstream.playback.llhls import LowLatencyStream

__all__ = ["hand_in_segment", "is_fragmented_mp4", "segment_video"]

_SAMPLE_ENTRIES = {"avc1": "h264", "avc3": "h264", "hvc1": "hevc", "hev1": "hevc", "av01": "av1"}


def is_fragmented_mp4(data: bytes) -> bool:
    """Whether a segment is fragmented MP4 (else MPEG-TS)."""
    return segment_format(data) == "mp4"


def hand_in_segment(
    hls: LowLatencyStream, rendition: str, seq: int, duration: float, data: bytes
) -> None:
    """Lists segment ``seq`` of ``rendition``: MPEG-TS as it is, fragmented MP4 as its init
    section and its media.

    Raises:
        ValueError: a fragmented-MP4 segment is malformed (nothing was listed).
    """
    if not is_fragmented_mp4(data):
        hls.add_segment(rendition, seq, duration, data)
        return
    init, media = init_and_media(data)
    hls.set_init(rendition, init)
    hls.add_segment(rendition, seq, duration, media)


def segment_video(data: bytes) -> VideoInfo | None:
    """The facts of a segment's video (MPEG-TS: its first SPS; fragmented MP4: its init
    section's video track), or None when they cannot be read."""
    if not is_fragmented_mp4(data):
        return video_info_from_annexb(joined_payloads(data))
    return _init_video(data)


def _init_video(data: bytes) -> VideoInfo | None:
    """The facts of the video track of an fMP4 file's init section (its fragments are not
    read: the reader is given the init section and the first fragment's box header, which is
    where it hands the init section over)."""
    try:
        init, media = init_and_media(data)
        events = Fmp4Reader().feed(init + media[:8])
    except ValueError:
        return None
    section = next((e for e in events if isinstance(e, InitSection)), None)
    if section is None:
        return None
    track = next((t for t in section.tracks if t.handler == "vide"), None)
    if track is None or not track.config:
        return None
    try:
        if track.codec == "vp09":
            info = vp9_info_from_config(track.config)
            return attrs.evolve(info, width=track.width, height=track.height)
        codec = _SAMPLE_ENTRIES.get(track.codec)
        if codec is None:
            return None
        return video_info_from_config(
            CodecConfig(kind=TrackKind.VIDEO, codec=codec, data=track.config)
        )
    except ValueError:
        return None
