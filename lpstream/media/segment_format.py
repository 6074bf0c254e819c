"""Which container a segment's bytes are: MPEG-TS (H.264, HEVC), fragmented MP4 (AV1, VP9) or
Matroska (VP8).

The segmenter picks the container by the video codec; everything that opens a segment later
(a worker, thumbnails, restreams, verification) tells them apart by their first bytes, so no
message or stored record has to say it.
"""

from __future__ import annotations

__all__ = ["SNIFF_BYTES", "segment_format"]

SNIFF_BYTES = 8
"""How many of a segment's first bytes :func:`segment_format` looks at."""
_MP4_OPENINGS = (b"ftyp", b"styp")
_EBML = b"\x1a\x45\xdf\xa3"


def segment_format(head: bytes) -> str:
    """FFmpeg's format name for a segment starting with ``head``: ``mp4`` when it opens with
    an ``ftyp`` or ``styp`` box, ``matroska`` with an EBML header, else ``mpegts``."""
    if head[4:8] in _MP4_OPENINGS:
        return "mp4"
    return "matroska" if head[:4] == _EBML else "mpegts"
