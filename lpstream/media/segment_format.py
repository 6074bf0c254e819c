"""Which container a segment's bytes are: MPEG-TS (H.264, HEVC) or fragmented MP4 (AV1, VP9).

The segmenter picks the container by the video codec; everything that opens a segment later
(a worker, thumbnails, restreams, verification) tells them apart by their first bytes, so no
message or stored record has to say it.
"""

from __future__ import annotations

__all__ = ["SNIFF_BYTES", "segment_format"]

SNIFF_BYTES = 8
"""How many of a segment's first bytes :func:`segment_format` looks at."""
_MP4_OPENINGS = (b"ftyp", b"styp")


def segment_format(head: bytes) -> str:
    """FFmpeg's format name for a segment starting with ``head``: ``mp4`` when it opens with
    an ``ftyp`` or ``styp`` box, else ``mpegts``."""
    return "mp4" if head[4:8] in _MP4_OPENINGS else "mpegts"
