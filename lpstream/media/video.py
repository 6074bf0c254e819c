"""A video track's facts from its decoder configuration, whatever its codec: the picture size
and the RFC 6381 ``CODECS`` string playlists name it by.

Each codec's record is parsed in its own module (:mod:`lpstream.media.h264`,
:mod:`lpstream.media.hevc`, :mod:`lpstream.media.av1`); this one only picks the module.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from lpstream.media import CodecConfig, TrackKind
from lpstream.media.av1 import av1_info_from_config
from lpstream.media.h264 import avc_info_from_annexb, avc_info_from_config, nal_units
from lpstream.media.hevc import (
    HEVC_NAL_SPS,
    hevc_info_from_config,
    hevc_info_from_sps,
    hevc_nal_type,
)
from lpstream.media.vp8 import vp8_keyframe_size
from lpstream.media.vp9 import vp9_info_from_config

__all__ = ["VideoInfo", "Vp8Picture", "video_info_from_annexb", "video_info_from_config"]


class VideoInfo(Protocol):
    """What playlists and limits need of a video track (``AvcInfo``, ``HevcInfo``, ...)."""

    @property
    def codecs(self) -> str:
        """The RFC 6381 codec string (``avc1.64001f``, ``hvc1.1.6.L93.B0``, ``av01.0.04M.08``)."""
        ...

    @property
    def width(self) -> int:
        """Picture width after cropping."""
        ...

    @property
    def height(self) -> int:
        """Picture height after cropping."""
        ...


@attrs.frozen(kw_only=True)
class Vp8Picture:
    """A VP8 stream's facts: its keyframes' picture (VP8 has no record, RFC 7741 no level)."""

    width: int
    height: int

    @property
    def codecs(self) -> str:
        """``vp8``, as RFC 6381 names it."""
        return "vp8"


def video_info_from_config(config: CodecConfig, keyframe: bytes | None = None) -> VideoInfo | None:
    """The facts of the video track ``config`` configures; None for a codec whose record does
    not give them or that is not video. VP9's record names no picture size and VP8 has none:
    their facts need a ``keyframe`` of the stream (None without one).

    Raises:
        ValueError: the record is malformed.
    """
    if config.kind is not TrackKind.VIDEO:
        return None
    try:
        if config.codec == "h264":
            return avc_info_from_config(config.data)
        if config.codec == "hevc":
            return hevc_info_from_config(config.data)
        if config.codec == "av1":
            return av1_info_from_config(config.data)
        if config.codec == "vp9" and keyframe is not None:
            return vp9_info_from_config(config.data, keyframe)
        if config.codec == "vp8" and keyframe is not None:
            width, height = vp8_keyframe_size(keyframe)
            return Vp8Picture(width=width, height=height)
    except IndexError:
        raise ValueError(f"{config.codec} configuration record ends early") from None
    return None


def video_info_from_annexb(data: bytes) -> VideoInfo | None:
    """The facts of the first H.264 or HEVC sequence parameter set in Annex B bytes (the
    joined payloads of an MPEG-TS segment's start); None when there is none or it is
    malformed. An H.264 SPS is looked for first; HEVC's NAL header differs, so an HEVC
    stream's units are not taken for H.264's SPS (type 33 reads as H.264 type 2)."""
    info: VideoInfo | None = avc_info_from_annexb(data)
    if info is not None:
        return info
    sps = next(
        (u for u in nal_units(data) if len(u) > 2 and hevc_nal_type(u) == HEVC_NAL_SPS), None
    )
    if sps is None:
        return None
    try:
        return hevc_info_from_sps(sps)
    except ValueError:
        return None
