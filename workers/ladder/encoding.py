"""Encoder options of a rendition: rate control, GOP length and keyframes aligned across the
ladder, for libx264 and NVENC (which encoder runs is ``workers.gpu.choose_encoder``'s call).

GOPs are aligned across the ladder: scene-cut keyframes are off, the keyframe interval is
``profile.gop`` seconds, and a frame sent with picture type I (a source keyframe) is forced to
be an IDR frame in every rendition, so segment boundaries coincide.
"""

from __future__ import annotations

from fractions import Fraction

from lpstream.media import VideoProfile
from workers.gpu import NVENC

__all__ = ["encoder_options"]


def encoder_options(
    encoder: str, profile: VideoProfile, rate: Fraction, *, live: bool = False
) -> dict[str, str]:
    """Encoder options for one rendition: rate control, GOP and ladder-wide keyframes;
    ``live`` adds x264's zero-latency tuning (no B-frames, no lookahead, no frame threads)."""
    keyint = max(1, round(profile.gop * rate)) if profile.gop > 0 else 0
    options = {
        "maxrate": str(profile.bitrate * 6 // 5),
        "bufsize": str(profile.bitrate * 2),
        # A frame sent with pict_type I becomes an IDR frame (source keyframes).
        "forced-idr": "1",
    }
    if profile.profile:
        options["profile"] = profile.profile
    if encoder == NVENC:
        options.update(
            {"preset": "p4", "tune": "ll", "rc": "cbr", "no-scenecut": "1", "zerolatency": "1"}
        )
        options["maxrate"] = str(profile.bitrate)
        if keyint:
            options["g"] = str(keyint)
            options["strict_gop"] = "1"
        return options
    options["preset"] = profile.preset or "veryfast"
    options["x264-params"] = _x264_params(keyint)
    if live:
        options["tune"] = "zerolatency"
    return options


def _x264_params(keyint: int) -> str:
    """x264 settings that keep keyframes where the ladder puts them (no scene cuts)."""
    params = "scenecut=0"
    if keyint:
        params += f":keyint={keyint}:min-keyint={keyint}"
    return params
