"""Media values shared by ingest, workers and the node: packets, codec configs, profiles,
and the stream-name rule.

This package imports nothing else of the project, so every package may depend on it. Each byte
format is parsed in one place: H.264 in :mod:`lpstream.media.h264`, AAC's ADTS headers in
:mod:`lpstream.media.adts`, MPEG-TS in :mod:`lpstream.media.mpegts`. Timestamps of ingest
packets are integer milliseconds, as RTMP and FLV carry them.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "DEFAULT_PROFILES",
    "MAX_INGEST_BITRATE",
    "MAX_SEGMENT_SECONDS",
    "MAX_STREAM_NAME",
    "OUTPUT_CODECS",
    "STREAM_NAME_PATTERN",
    "CodecConfig",
    "MediaEvent",
    "MediaPacket",
    "StreamMetadata",
    "TrackKind",
    "VideoProfile",
    "check_stream_name",
    "load_profiles",
    "parse_profiles",
    "pixels_for",
    "scaled_size",
    "segment_size_limit",
]

MAX_INGEST_BITRATE = 60_000_000
"""Default bits per second a publisher may send (``--max-ingest-bitrate``), averaged over a
couple of seconds: 4K H.264 at a high bitrate."""
MAX_SEGMENT_SECONDS = 8.0
"""The longest segment the segmenter cuts: a GOP longer than this is cut without a keyframe."""
MAX_STREAM_NAME = 128
"""Longest stream name (and rendition or profile name), in characters."""
STREAM_NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*\Z"
"""What a stream name looks like, for validators that take a regular expression (the wire's
msgspec types; ``\\Z``, not ``$``, which lets a trailing newline through): ASCII letters, digits,
``_``, ``.`` and ``-``, not starting with ``.`` (so never ``.`` or ``..``: names become URL
path segments and file names). With :data:`MAX_STREAM_NAME` it is the whole rule."""
_STREAM_NAME = re.compile(STREAM_NAME_PATTERN)


def check_stream_name(name: str, *, what: str = "stream name") -> str:
    """Returns ``name`` if it is a valid stream name; the one rule for every way in (RTMP,
    WHIP, WHEP, HTTP routes, the wire). Rendition and profile names follow it too (``what``
    names the kind in the error).

    Raises:
        ValueError: saying what a name must look like.
    """
    if not (isinstance(name, str) and len(name) <= MAX_STREAM_NAME and _STREAM_NAME.match(name)):
        shown = name[:MAX_STREAM_NAME] if isinstance(name, str) else name
        raise ValueError(
            f"invalid {what} {shown!r}: use 1 to {MAX_STREAM_NAME} characters from "
            "[A-Za-z0-9_.-], not starting with '.'"
        )
    return name


def segment_size_limit(
    bitrate: int, seconds: float = MAX_SEGMENT_SECONDS, burst: float = 2.0
) -> int:
    """The largest segment, in bytes, that a publisher held to ``bitrate`` (bursting
    ``burst`` seconds' worth at once) can fill in ``seconds``, plus 10% for MPEG-TS overhead.

    The gateway's segment buffers and the orchestrator's job uploads are both held to it, so a
    segment the gateway accepts is never too large for the orchestrator."""
    return int(bitrate / 8 * (seconds + burst) * 1.1)


class TrackKind(enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"


@attrs.frozen(kw_only=True)
class CodecConfig:
    """The decoder configuration of one track, sent before its first packet."""

    kind: TrackKind
    """Which track this configures."""
    codec: str
    """FFmpeg codec name: ``h264``, ``hevc``, ``av1`` or ``vp9`` for video, ``aac`` for audio."""
    data: bytes
    """The configuration record as MP4 (and FLV) carries it: AVCDecoderConfigurationRecord
    (``avcC``) for H.264, HEVCDecoderConfigurationRecord (``hvcC``) for HEVC,
    AV1CodecConfigurationRecord (``av1C``: 4 bytes, then the sequence header OBU) for AV1,
    VPCodecConfigurationRecord (``vpcC``, from its version and flags on) for VP9, and
    AudioSpecificConfig for AAC."""


@attrs.frozen(kw_only=True)
class MediaPacket:
    """One compressed access unit (a video frame or an audio frame)."""

    kind: TrackKind
    """Which track it belongs to."""
    dts: int
    """Decode timestamp in milliseconds."""
    pts: int
    """Presentation timestamp in milliseconds (``dts`` plus the composition offset)."""
    keyframe: bool
    """True for an IDR video frame; always True for audio."""
    data: bytes
    """The access unit as MP4 (and FLV) carries it: H.264 and HEVC as length-prefixed NAL
    units (the configuration record gives the length size; FFmpeg and OBS write 4 bytes),
    AV1 as one temporal unit of low-overhead OBUs (each with its size field), VP9 as the
    frame (or superframe), AAC as a raw frame."""


@attrs.frozen(kw_only=True)
class StreamMetadata:
    """The publisher's ``onMetaData`` values (width, height, framerate, encoder, ...)."""

    values: Mapping[str, object]
    """The decoded AMF0 object."""


MediaEvent = CodecConfig | MediaPacket | StreamMetadata

_X264_PROFILES = {
    "": "",
    "none": "",
    "h264baseline": "baseline",
    "baseline": "baseline",
    "h264constrainedbaseline": "baseline",
    "h264main": "main",
    "main": "main",
    "h264high": "high",
    "high": "high",
    "h264constrainedhigh": "high",
}

OUTPUT_CODECS = ("h264", "hevc", "av1")
"""The codecs a profile may ask for (FFmpeg's names). An ``h264`` rendition is MPEG-TS; an
``hevc`` or ``av1`` one is fragmented MP4 (CMAF), which HLS serves with ``EXT-X-MAP``."""

MAX_PROFILE_PIXELS = 7680 * 4320
"""Largest rendition accepted (8K); profiles come from operators and from peers."""


@attrs.frozen(kw_only=True)
class VideoProfile:
    """One rendition of the ladder, in go-livepeer's JSON shape."""

    name: str
    """Rendition name, used in playlist URLs (the stream-name rule, :func:`check_stream_name`)."""
    width: int
    """Target width in pixels; with the height it fixes the box the source is fitted into."""
    height: int
    """Target height in pixels."""
    bitrate: int
    """Target video bitrate in bit/s."""
    fps: int = 0
    """Output frame rate; 0 keeps the source rate."""
    gop: float = 2.0
    """Keyframe interval in seconds; 0 lets the encoder choose."""
    profile: str = ""
    """x264 profile (``baseline``, ``main``, ``high``) or empty for the encoder default; an
    ``h264`` setting only (HEVC and AV1 renditions take none: Main and AV1 Main, 8-bit)."""
    preset: str = "veryfast"
    """Speed against compression, in x264's names (``ultrafast`` ... ``placebo``). x265 takes
    the same names; SVT-AV1 its numbered presets: ultrafast 12, superfast 11, veryfast 10,
    faster 9, fast 9, medium 8, slow 6, slower 4, veryslow 2, placebo 1
    (``workers.ladder.encoding``). NVENC uses its own ``p4`` for every one."""
    codec: str = "h264"
    """Video codec, one of :data:`OUTPUT_CODECS`: ``h264`` (libx264), ``hevc`` (libx265) or
    ``av1`` (SVT-AV1), or the NVENC encoder of that codec where the ladder runs on NVENC."""

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> VideoProfile:
        """Builds a profile from one entry of a go-livepeer style profiles file."""
        if not isinstance(obj, Mapping):
            raise ValueError("a profile must be a JSON object")
        try:
            name = str(obj["name"])
            width = int(obj["width"])
            height = int(obj["height"])
            bitrate = int(obj["bitrate"])
        except KeyError as exc:
            raise ValueError(f"profile is missing {exc.args[0]!r}") from None
        except (TypeError, ValueError):
            raise ValueError(
                f"profile {obj.get('name')!r}: width, height and bitrate must be integers"
            ) from None
        gop_raw = obj.get("gop", 2.0)
        if isinstance(gop_raw, str) and gop_raw.strip().lower() == "intra":
            raise ValueError(f"profile {name!r}: intra-only GOPs are not supported")
        try:
            gop = float(gop_raw)
            fps = int(obj.get("fps", 0) or 0)
        except (TypeError, ValueError):
            raise ValueError(f"profile {name!r}: gop and fps must be numbers") from None
        codec = str(obj.get("codec", "h264") or "h264").strip().lower()
        if codec not in OUTPUT_CODECS:
            raise ValueError(
                f"profile {name!r}: unknown codec {obj.get('codec')!r}: "
                f"use one of {', '.join(OUTPUT_CODECS)}"
            )
        raw_profile = str(obj.get("profile", "") or "").replace("_", "").lower()
        if codec != "h264" and raw_profile not in ("", "none"):
            raise ValueError(_codec_profile_refusal(name, codec, obj.get("profile")))
        if raw_profile not in _X264_PROFILES:
            raise ValueError(f"profile {name!r}: unknown H.264 profile {obj.get('profile')!r}")
        return cls.checked(
            name=name,
            width=width,
            height=height,
            bitrate=bitrate,
            fps=fps,
            gop=gop,
            profile=_X264_PROFILES[raw_profile],
            preset=str(obj.get("preset", "veryfast") or "veryfast"),
            codec=codec,
        )

    @classmethod
    def checked(cls, **fields: Any) -> VideoProfile:
        """Builds a profile and checks every field is in range (for values from outside)."""
        profile = cls(**fields)
        check_stream_name(profile.name, what="profile name")
        if profile.name == "source":
            raise ValueError("profile name 'source' is reserved for the passthrough rendition")
        if not (16 <= profile.width <= 7680 and 16 <= profile.height <= 4320):
            raise ValueError(
                f"profile {profile.name!r}: size {profile.width}x{profile.height} out of range"
            )
        if not 1_000 <= profile.bitrate <= 200_000_000:
            raise ValueError(f"profile {profile.name!r}: bitrate {profile.bitrate} out of range")
        if not 0 <= profile.fps <= 240:
            raise ValueError(f"profile {profile.name!r}: fps {profile.fps} out of range")
        if not (0 <= profile.gop <= 60 and math.isfinite(profile.gop)):
            raise ValueError(f"profile {profile.name!r}: gop {profile.gop} out of range")
        if profile.preset not in _X264_PRESETS:
            raise ValueError(f"profile {profile.name!r}: unknown x264 preset {profile.preset!r}")
        if profile.codec not in OUTPUT_CODECS:
            raise ValueError(
                f"profile {profile.name!r}: unknown codec {profile.codec!r}: "
                f"use one of {', '.join(OUTPUT_CODECS)}"
            )
        if profile.codec != "h264" and profile.profile:
            raise ValueError(_codec_profile_refusal(profile.name, profile.codec, profile.profile))
        if profile.profile not in _X264_PROFILES.values():
            raise ValueError(f"profile {profile.name!r}: unknown H.264 profile {profile.profile!r}")
        return profile

    def to_json(self) -> dict[str, Any]:
        """The profile as one entry of a profiles file (:meth:`from_json` reads it back)."""
        return attrs.asdict(self)


def _codec_profile_refusal(name: str, codec: str, value: object) -> str:
    return (
        f"profile {name!r}: 'profile' {value!r} is an H.264 setting; "
        f"a {codec} rendition takes none (leave it out)"
    )


_X264_PRESETS = frozenset(
    [
        "ultrafast",
        "superfast",
        "veryfast",
        "faster",
        "fast",
        "medium",
        "slow",
        "slower",
        "veryslow",
        "placebo",
    ]
)

DEFAULT_PROFILES: tuple[VideoProfile, ...] = (
    VideoProfile(name="360p", width=640, height=360, bitrate=400_000, fps=0, gop=2.0),
    VideoProfile(name="240p", width=426, height=240, bitrate=250_000, fps=0, gop=2.0),
)
"""go-livepeer's P360p30fps16x9 and P240p30fps16x9, keeping the source frame rate."""


def parse_profiles(text: str | bytes) -> tuple[VideoProfile, ...]:
    """Parses a profiles file: a JSON list, or ``{"profiles": [...]}``.

    Raises:
        ValueError: with a message that names the bad entry.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"profiles are not valid JSON: {exc}") from None
    if isinstance(doc, Mapping):
        doc = doc.get("profiles")
    if not isinstance(doc, list) or not doc:
        raise ValueError("profiles must be a non-empty JSON list")
    if len(doc) > 16:
        raise ValueError("at most 16 profiles are allowed")
    profiles = tuple(VideoProfile.from_json(item) for item in doc)
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ValueError("profile names must be unique")
    return profiles


def load_profiles(path: str | Path | None) -> tuple[VideoProfile, ...]:
    """Reads a profiles file, or returns the default ladder for ``None``."""
    if path is None:
        return DEFAULT_PROFILES
    return parse_profiles(Path(path).read_bytes())


def scaled_size(src_width: int, src_height: int, profile: VideoProfile) -> tuple[int, int]:
    """The output size for ``profile``: fit the source into the profile's box, keep its shape.

    The result has even dimensions (4:2:0 chroma needs them), at least 2, and fits inside
    ``profile.width x profile.height`` and inside the source: a source smaller than the box is
    not upscaled, since more pixels than the source has would cost bits and show nothing new.
    Each side is the fitted size rounded to even, then brought down to the largest even number
    within its bound, so rounding never takes a side past the box (1280x720 into 643x1000 is
    642x362, not 644x362).
    """
    if src_width <= 0 or src_height <= 0:
        return profile.width & ~1, profile.height & ~1
    box_width, box_height = min(profile.width, src_width), min(profile.height, src_height)
    scale = min(box_width / src_width, box_height / src_height)
    return _even_within(src_width * scale, box_width), _even_within(src_height * scale, box_height)


def _even_within(size: float, bound: int) -> int:
    """``size`` rounded to even, at most ``bound`` (rounded down to even), at least 2."""
    return max(2, min(round(size / 2) * 2, bound & ~1))


def pixels_for(profiles: Sequence[VideoProfile], fps: float, duration_s: float) -> int:
    """Output pixels of a segment as PAYMENTS.md counts them: sum of w*h*ceil(fps)*ceil(d)."""
    return sum(
        p.width * p.height * math.ceil(p.fps or fps) * math.ceil(duration_s) for p in profiles
    )
