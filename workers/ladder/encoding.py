"""Encoder options of a rendition: rate control, GOP length and keyframes aligned across the
ladder, for libx264, libx265, SVT-AV1 and NVENC (which encoder runs is
``workers.gpu.encoder_for``'s call).

GOPs are aligned across the ladder: scene-cut keyframes are off, the keyframe interval is
``profile.gop`` seconds, GOPs are closed, and a frame sent with picture type I (a source
keyframe) is forced to be a keyframe every later frame can be decoded from (an IDR frame, an
AV1 key frame) in every rendition, so segment boundaries coincide. x264 and x265 do that with
``forced-idr``; FFmpeg hands SVT-AV1 such a frame as a key picture, which it honours.

Rate control is the profile's bitrate with a ceiling of 1.2 times it over a two-second buffer
(x264's and x265's VBV). SVT-AV1 takes no ceiling outside its CRF mode ("Max Bitrate only
supported with CRF mode") and holds a GOP to its rate only from 120 frames on
(``gop-constraint-rc``), so it runs constant bitrate over a two-second buffer, which it allows
with the low-delay prediction structure (no reordered frames: live as well). Its variable
bitrate with random access spends fewer bits for the same PSNR (28% fewer than x264 at preset
6 on testsrc2) but overshot a lone two-second segment of one-second GOPs by 1.6 times, which a
ladder's renditions must not. The preset numbers follow SVT-AV1's advice that presets above 9
are for tooling, not for viewers: x264's default ``veryfast`` is preset 7, which spends about
the bits x264 spends for the same PSNR (testsrc2 from 720p at 640x360, 250 kb/s to 2 Mb/s:
+0.7%; preset 8: +12%; the earlier preset 10: +74%). NVENC runs constant bitrate.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final

from lpstream.media import VideoProfile
from workers.gpu import NVENC_ENCODERS

__all__ = ["SVT_AV1_PRESETS", "encoder_options"]

SVT_AV1_PRESETS: Final = {
    "ultrafast": 9,
    "superfast": 8,
    "veryfast": 7,
    "faster": 7,
    "fast": 6,
    "medium": 5,
    "slow": 4,
    "slower": 3,
    "veryslow": 2,
    "placebo": 1,
}
"""SVT-AV1's numbered preset for each x264 preset name a profile may give (0 is its slowest,
13 its fastest; above 9 SVT-AV1 warns that visual artifacts may occur outside real-time mode;
6 encodes 360p30 on about 0.6 of a core)."""

_X265 = "libx265"
_SVT_AV1 = "libsvtav1"


def encoder_options(
    encoder: str, profile: VideoProfile, rate: Fraction, *, live: bool = False
) -> dict[str, str]:
    """Encoder options for one rendition: rate control, GOP and ladder-wide keyframes;
    ``live`` adds zero-latency settings (no B-frames, no lookahead, no frame threads)."""
    keyint = max(1, round(profile.gop * rate)) if profile.gop > 0 else 0
    if encoder == _SVT_AV1:
        return _svt_av1_options(profile, keyint)
    options = {
        "maxrate": str(profile.bitrate * 6 // 5),
        "bufsize": str(profile.bitrate * 2),
        # A frame sent with pict_type I becomes an IDR frame (source keyframes).
        "forced-idr": "1",
    }
    if profile.profile:
        options["profile"] = profile.profile
    if encoder in NVENC_ENCODERS.values():
        options.update(
            {"preset": "p4", "tune": "ll", "rc": "cbr", "no-scenecut": "1", "zerolatency": "1"}
        )
        options["maxrate"] = str(profile.bitrate)
        if keyint:
            options["g"] = str(keyint)
            options["strict_gop"] = "1"
        return options
    options["preset"] = profile.preset or "veryfast"
    if encoder == _X265:
        options["x265-params"] = _x265_params(keyint)
    else:
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


def _x265_params(keyint: int) -> str:
    """x265 settings that keep keyframes where the ladder puts them: no scene cuts, closed
    GOPs (an open GOP's leading pictures need the GOP before); only errors are logged."""
    params = "scenecut=0:open-gop=0:log-level=error"
    if keyint:
        params += f":keyint={keyint}:min-keyint={keyint}"
    return params


def _svt_av1_options(profile: VideoProfile, keyint: int) -> dict[str, str]:
    """SVT-AV1: numbered preset, no scene-change keyframes, closed GOPs made of key frames
    (``irefresh-type=2``) ``keyint`` frames apart, constant bitrate over a two-second buffer
    with the low-delay structure (no reordering: live as well)."""
    params = ["scd=0", "irefresh-type=2", "pred-struct=1", "rc=2"]
    if keyint:
        params.append(f"keyint={keyint}")
    return {
        "preset": str(SVT_AV1_PRESETS.get(profile.preset, SVT_AV1_PRESETS["veryfast"])),
        "bufsize": str(profile.bitrate * 2),
        "svtav1-params": ":".join(params),
    }
