"""VP8 frames, read in one place: whether a frame is a keyframe, and a keyframe's picture size.

How this works: a VP8 frame (RFC 6386, 9.1) opens with a 3-byte frame tag whose lowest bit
is 0 for a keyframe; a keyframe's tag is followed by the start code ``9d 01 2a`` and two
16-bit little-endian fields, each a 14-bit dimension under a 2-bit scale. VP8 has no
configuration record: what a decoder needs is in the keyframes. Sans-IO; a malformed frame
raises ``ValueError``.
"""

from __future__ import annotations

__all__ = ["vp8_is_keyframe", "vp8_keyframe_size"]

_START_CODE = b"\x9d\x01\x2a"


def vp8_is_keyframe(frame: bytes) -> bool:
    """Whether ``frame`` is a VP8 keyframe (its frame tag says so; False for no bytes)."""
    return bool(frame) and frame[0] & 0x01 == 0


def vp8_keyframe_size(frame: bytes) -> tuple[int, int]:
    """The ``(width, height)`` a VP8 keyframe declares.

    Raises:
        ValueError: ``frame`` is not a keyframe, or its header is cut short or has no start
            code.
    """
    if not vp8_is_keyframe(frame):
        raise ValueError("not a VP8 keyframe")
    if len(frame) < 10:
        raise ValueError(f"VP8 keyframe header of {len(frame)} bytes (10 needed)")
    if frame[3:6] != _START_CODE:
        raise ValueError("VP8 keyframe without its start code")
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    if not width or not height:
        raise ValueError(f"VP8 keyframe of {width}x{height}")
    return width, height
