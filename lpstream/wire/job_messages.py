"""The messages of a job stream: JOB and its DATA, then RESULT, SUMMARY or ERROR.

The order they may come in is :mod:`lpstream.wire.job_stream`'s; their encoding is
:mod:`lpstream.wire.messages`'.
"""

from __future__ import annotations

from typing import Annotated, Literal

import attrs
import msgspec

from lpstream.errors import RemoteProtocolError
from lpstream.media import VideoProfile
from lpstream.wire.fields import (
    MAX_PAYMENT_SIZE,
    MAX_PROFILES,
    MAX_RENDITIONS,
    SIGNATURE_SIZE,
    Count,
    ErrorMessage,
    Int64,
    ModelId,
    Name,
    OptionalName,
    Params,
    Text,
)

__all__ = [
    "Data",
    "Error",
    "Job",
    "ProfileSpec",
    "Rendition",
    "RenditionInfo",
    "Result",
    "ResultSummary",
]


@attrs.frozen(kw_only=True)
class ProfileSpec:
    """A :class:`~lpstream.media.VideoProfile` as it travels in a JOB."""

    name: Text
    """Rendition name (checked by :meth:`to_profile`)."""
    width: Int64
    """Target width in pixels."""
    height: Int64
    """Target height in pixels."""
    bitrate: Int64
    """Target video bitrate in bit/s."""
    fps: Int64 = 0
    """Output frame rate; 0 keeps the source rate."""
    gop: float = 2.0
    """Keyframe interval in seconds."""
    profile: Text = ""
    """x264 profile or empty."""
    preset: Text = "veryfast"
    """x264 preset."""
    codec: Literal["h264", "hevc", "av1"] = "h264"
    """Video codec (:data:`~lpstream.media.OUTPUT_CODECS`; msgspec refuses any other name
    while decoding). A JOB from a peer that predates it has none and means ``h264``; a peer
    that predates it ignores it."""

    @classmethod
    def from_profile(cls, profile: VideoProfile) -> ProfileSpec:
        """The wire form of ``profile``."""
        return cls(**attrs.asdict(profile))

    def to_profile(self) -> VideoProfile:
        """The profile this describes, with every field range-checked.

        Raises:
            RemoteProtocolError: (400) if a field is out of range.
        """
        try:
            return VideoProfile.checked(**attrs.asdict(self))
        except ValueError as exc:
            raise RemoteProtocolError(f"bad profile: {exc}", code=400) from None


@attrs.frozen(kw_only=True)
class Job:
    """JOB: the header of a job stream; the uploaded segment follows in DATA on track 0."""

    stream_id: Name
    """The live stream this segment belongs to (:func:`lpstream.media.check_stream_name`)."""
    seq: Count
    """Segment sequence number within the stream."""
    duration_ms: Count
    """Expected duration of the segment in milliseconds."""
    profiles: Annotated[tuple[ProfileSpec, ...], msgspec.Meta(max_length=MAX_PROFILES)] = ()
    """Renditions to transcode to (empty for a pipeline job)."""
    pipeline: OptionalName = ""
    """AI pipeline to run; empty for transcoding."""
    params: Params = attrs.field(factory=dict)
    """Pipeline parameters."""
    payment: Annotated[bytes, msgspec.Meta(max_length=MAX_PAYMENT_SIZE)] = b""
    """Opaque payment (defined by the payments module)."""
    session_id: OptionalName = ""
    """Session the gateway keeps with this orchestrator, if any."""
    capability: OptionalName = ""
    """A batch AI capability (``text-to-image``, ``llm``...): the job runs ``model_id`` on
    its upload (the request's input bytes) with ``params``; empty for other jobs. Each output
    track's ``pixels`` in SUMMARY is then the units billed for it."""
    model_id: ModelId = ""
    """The model a batch AI job runs (``capability`` set)."""

    def video_profiles(self) -> tuple[VideoProfile, ...]:
        """The profiles, range-checked.

        Raises:
            RemoteProtocolError: (400) if one is out of range.
        """
        return tuple(spec.to_profile() for spec in self.profiles)


@attrs.frozen(kw_only=True)
class Data:
    """DATA: a piece of media. Not msgpack: the body is ``varint track || payload``."""

    track: Count
    """Upload: always 0 (the segment). Response: index into ``Result.renditions``."""
    payload: bytes
    """The bytes."""


@attrs.frozen(kw_only=True)
class Rendition:
    """One output announced in RESULT, before its bytes are known."""

    name: Name
    """Rendition name (a profile name, ``source``, or a pipeline output)."""
    width: Count
    """Output width in pixels."""
    height: Count
    """Output height in pixels."""


@attrs.frozen(kw_only=True)
class Result:
    """RESULT: opens a successful response; DATA on track i then carries rendition i."""

    renditions: Annotated[tuple[Rendition, ...], msgspec.Meta(max_length=MAX_RENDITIONS)]
    """The outputs, in track order; names unique."""


@attrs.frozen(kw_only=True)
class RenditionInfo:
    """What was actually produced for one rendition, sent in SUMMARY after its bytes."""

    name: Name
    """Rendition name, as in RESULT."""
    width: Count
    """Output width, as in RESULT."""
    height: Count
    """Output height, as in RESULT."""
    pixels: Count
    """Pixels encoded: the sum over frames of width x height (what payment counts)."""
    frames: Count
    """Frames encoded."""
    size: Count
    """Bytes sent on this rendition's track."""
    duration_ms: Count
    """Duration of the rendition in milliseconds."""
    dropped: Count = 0
    """Input frames left out because a live pipeline was behind real time (not signed:
    informational)."""


@attrs.frozen(kw_only=True)
class ResultSummary:
    """SUMMARY: closes a successful response; one entry per RESULT rendition, same order."""

    renditions: Annotated[tuple[RenditionInfo, ...], msgspec.Meta(max_length=MAX_RENDITIONS)]
    """Final figures, in track order."""
    signature: Annotated[bytes, msgspec.Meta(max_length=SIGNATURE_SIZE)] = b""
    """The orchestrator's 65-byte EIP-191 signature over the renditions' digest (see
    :mod:`lpstream.verification`), or empty (off-chain, or a worker answering its
    orchestrator)."""


@attrs.frozen(kw_only=True)
class Error:
    """ERROR: the request failed; ends the response."""

    code: Annotated[int, msgspec.Meta(ge=100, le=999)]
    """HTTP-like status: 400, 402, 403, 409, 413, 500, 503, ..."""
    message: ErrorMessage = ""
    """Human-readable reason."""
