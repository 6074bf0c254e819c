"""The typed messages of the lpstream wire protocol and their encoding into frames.

How this works:

Every frame type but DATA carries one header message: a frozen attrs class, encoded as a
msgpack map of its fields by msgspec. msgspec decodes straight into the attrs class and checks
every field while it does: types are strict (no int for a str, no bool for an int), and the
``Annotated[..., msgspec.Meta(...)]`` aliases below bound every string, list, dict and number a
peer controls. A few rules span fields (unique rendition names); :data:`_CHECKS` holds them.
Fields a newer peer adds are ignored, so fields can be added with defaults.

DATA is not msgpack: its body is ``varint track || payload``, so media is never copied through
a msgpack encoder. It still appears here as the :class:`Data` message so that every frame has
one typed value.

Decoding anything malformed raises :class:`~lpstream.errors.RemoteProtocolError` (400).
Encoding checks the message against the same rules by decoding the bytes it is about to
return, so we never send what we would refuse; a bad message is a
:class:`~lpstream.errors.LocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeAlias

import attrs
import msgspec

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.media import MAX_STREAM_NAME, STREAM_NAME_PATTERN, VideoProfile
from lpstream.wire.framing import (
    MAX_HEADER_SIZE,
    Frame,
    FrameType,
    decode_varint,
    encode_frame,
    encode_varint,
)

__all__ = [
    "MAX_CAPABILITIES",
    "MAX_ERROR_MESSAGE",
    "MAX_NAME",
    "MAX_PARAMS",
    "MAX_PARAM_VALUE",
    "MAX_PAYMENT_SIZE",
    "MAX_PROFILES",
    "MAX_RENDITIONS",
    "MAX_TICKET_PARAMS_SIZE",
    "SIGNATURE_SIZE",
    "Data",
    "End",
    "Error",
    "GetInfo",
    "Job",
    "LiveEvent",
    "LiveOpen",
    "LivePayment",
    "LiveUpdate",
    "LiveUpdated",
    "Message",
    "OrchInfo",
    "Ping",
    "PipelineOffer",
    "Pong",
    "ProfileSpec",
    "Rendition",
    "RenditionInfo",
    "Result",
    "ResultSummary",
    "WorkerHello",
    "WorkerWelcome",
    "decode_message",
    "encode_data",
    "encode_message",
    "frame_type_of",
]

MAX_NAME = MAX_STREAM_NAME
"""Longest identifier: stream, session, pipeline, rendition and capability names, versions."""
MAX_PROFILES = 16
"""Most profiles in one JOB (as in :func:`lpstream.media.parse_profiles`)."""
MAX_RENDITIONS = 32
"""Most renditions in one RESULT (the profiles, a passthrough, AI outputs)."""
MAX_PARAMS = 32
"""Most entries in ``Job.params``."""
MAX_PARAM_VALUE = 1024
"""Longest string value in ``Job.params``."""
MAX_PAYMENT_SIZE = 48 * 1024
"""Largest ``Job.payment``; below :data:`MAX_HEADER_SIZE` so a whole JOB still fits."""
MAX_TICKET_PARAMS_SIZE = 16 * 1024
"""Largest ``OrchInfo.ticket_params``."""
MAX_CAPABILITIES = 64
"""Most entries in a capability list."""
MAX_ERROR_MESSAGE = 1024
"""Longest ``Error.message``."""
SIGNATURE_SIZE = 65
"""Length of an Ethereum signature ``r || s || v``: ``ResultSummary.signature`` is this or empty."""

_MAX_INT = (1 << 63) - 1

# Field types with the limits msgspec enforces while decoding. `\Z`, not `$`: msgspec uses
# re.search, and `$` would let a trailing newline through.
Count = Annotated[int, msgspec.Meta(ge=0, le=_MAX_INT)]
Int64 = Annotated[int, msgspec.Meta(ge=-_MAX_INT, le=_MAX_INT)]
# Names (stream, rendition, session, pipeline, worker) follow the one stream-name rule of
# lpstream.media: its pattern and length, so the wire never takes a name that RTMP, WHIP or
# HTTP would refuse.
Name = Annotated[str, msgspec.Meta(pattern=STREAM_NAME_PATTERN, max_length=MAX_STREAM_NAME)]
Address = Annotated[str, msgspec.Meta(pattern=r"^(0x[0-9a-fA-F]{40})?\Z")]
OptionalName = Annotated[
    str, msgspec.Meta(pattern=rf"^\Z|{STREAM_NAME_PATTERN}", max_length=MAX_STREAM_NAME)
]
Text = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
ParamKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
ParamValue = Annotated[str, msgspec.Meta(max_length=MAX_PARAM_VALUE)] | int | float | bool
Capabilities = Annotated[tuple[Text, ...], msgspec.Meta(max_length=MAX_CAPABILITIES)]


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

    @classmethod
    def from_profile(cls, profile: VideoProfile) -> ProfileSpec:
        """The wire form of ``profile``."""
        return cls(
            name=profile.name,
            width=profile.width,
            height=profile.height,
            bitrate=profile.bitrate,
            fps=profile.fps,
            gop=profile.gop,
            profile=profile.profile,
            preset=profile.preset,
        )

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
    params: Annotated[dict[ParamKey, ParamValue], msgspec.Meta(max_length=MAX_PARAMS)] = (
        attrs.field(factory=dict)
    )
    """Pipeline parameters."""
    payment: Annotated[bytes, msgspec.Meta(max_length=MAX_PAYMENT_SIZE)] = b""
    """Opaque payment (defined by the payments module)."""
    session_id: OptionalName = ""
    """Session the gateway keeps with this orchestrator, if any."""

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
    message: Annotated[str, msgspec.Meta(max_length=MAX_ERROR_MESSAGE)] = ""
    """Human-readable reason."""


@attrs.frozen(kw_only=True)
class GetInfo:
    """GET_INFO: asks for an ORCH_INFO."""

    sender: Address = ""
    """The asking gateway's Ethereum address: ticket parameters are issued per sender.
    Empty off-chain."""


@attrs.frozen(kw_only=True)
class PipelineOffer:
    """A live AI pipeline an orchestrator runs, and its price."""

    name: Name
    """Pipeline name, as a JOB's ``pipeline`` names it."""
    price_per_second: Count = 0
    """Wei per second of live session (0 off-chain or free)."""


@attrs.frozen(kw_only=True)
class OrchInfo:
    """ORCH_INFO: what an orchestrator offers."""

    version: Text
    """Software version."""
    price_per_unit: Count = 0
    """Price in wei for ``pixels_per_unit`` pixels."""
    pixels_per_unit: Annotated[int, msgspec.Meta(ge=1, le=_MAX_INT)] = 1
    """Pixels the price is for."""
    capabilities: Capabilities = ()
    """What it can run (``transcode``, pipeline names)."""
    capacity: Count = 0
    """Concurrent jobs it takes."""
    in_use: Count = 0
    """Jobs running now."""
    ticket_params: Annotated[bytes, msgspec.Meta(max_length=MAX_TICKET_PARAMS_SIZE)] = b""
    """Opaque ticket parameters (defined by the payments module)."""
    address: Address = ""
    """The orchestrator's Ethereum address (the tickets' recipient); empty off-chain."""
    pipelines: Annotated[tuple[PipelineOffer, ...], msgspec.Meta(max_length=MAX_CAPABILITIES)] = ()
    """Live AI pipelines its workers have, with their prices."""


@attrs.frozen(kw_only=True)
class Ping:
    """PING: liveness probe."""

    nonce: Count
    """Echoed in the PONG."""


@attrs.frozen(kw_only=True)
class Pong:
    """PONG: answer to a PING."""

    nonce: Count
    """The PING's nonce."""


@attrs.frozen(kw_only=True)
class WorkerHello:
    """WORKER_HELLO: a worker registers with an orchestrator."""

    secret: Annotated[str, msgspec.Meta(max_length=MAX_PARAM_VALUE)]
    """Shared secret proving the worker belongs to this orchestrator."""
    capacity: Count
    """Concurrent jobs it takes."""
    capabilities: Capabilities = ()
    """What it can run."""
    version: Text = ""
    """Software version."""


@attrs.frozen(kw_only=True)
class WorkerWelcome:
    """WORKER_WELCOME: the orchestrator accepted a worker."""

    worker_id: Name
    """The id the orchestrator gave it."""


@attrs.frozen(kw_only=True)
class LiveOpen:
    """LIVE_OPEN: first message of a live AI session's control stream."""

    stream_id: Name
    """The stream, as in the session's JOBs."""
    session_id: Name
    """The session, as in its JOBs: the orchestrator bills and routes by it."""
    pipeline: Name
    """The pipeline the session runs (its price applies)."""


@attrs.frozen(kw_only=True)
class LiveUpdate:
    """LIVE_UPDATE: new values for some of a running pipeline's parameters."""

    stream_id: Name
    session_id: Name
    params: Annotated[dict[ParamKey, ParamValue], msgspec.Meta(max_length=MAX_PARAMS)] = (
        attrs.field(factory=dict)
    )
    """The parameters to change; the others keep their values."""


@attrs.frozen(kw_only=True)
class LiveUpdated:
    """LIVE_UPDATED: a LIVE_UPDATE was accepted (a refusal is an ERROR)."""

    version: Count
    """How many changes the session has accepted, this one included."""
    after_pts: Int64 = -1
    """Timestamp of the last frame finished before the change arrived (-1: none yet)."""
    applied_pts: Int64 = -1
    """Timestamp of the first frame processed with it (-1: no frame came within the wait)."""
    frames_between: Count = 0
    """Frames finished after its arrival and before it applied (at most the one in
    flight)."""


@attrs.frozen(kw_only=True)
class LivePayment:
    """LIVE_PAYMENT: tickets for a live session's time."""

    payment: Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_PAYMENT_SIZE)]
    """A ``payments.pm.Payment``, as in a JOB."""


EventValue = Annotated[str, msgspec.Meta(max_length=MAX_PARAM_VALUE)] | int | float | bool


@attrs.frozen(kw_only=True)
class LiveEvent:
    """LIVE_EVENT: something the app steering a live session wants to know."""

    kind: Name
    """``billed`` (seconds and wei so far), ``stopped`` (the session ends; ``message`` says
    why), ``paid`` (a payment was credited), ``settled`` (final figures at the end)."""
    message: Annotated[str, msgspec.Meta(max_length=MAX_ERROR_MESSAGE)] = ""
    values: Annotated[dict[ParamKey, EventValue], msgspec.Meta(max_length=MAX_PARAMS)] = (
        attrs.field(factory=dict)
    )
    """Figures, e.g. ``seconds``, ``billed_wei``, ``balance_wei`` (wei as decimal strings:
    exact Fractions do not fit an int64)."""


@attrs.frozen(kw_only=True)
class End:
    """END: reserved; no more messages in this direction.

    Job streams do not use it: they end with QUIC FIN, which QUIC keeps apart from a reset,
    so a second end marker would only add a way to disagree. It stays for transports or
    streams that cannot half-close.
    """


Message: TypeAlias = (
    Job
    | Data
    | Result
    | ResultSummary
    | Error
    | GetInfo
    | OrchInfo
    | Ping
    | Pong
    | WorkerHello
    | WorkerWelcome
    | End
    | LiveOpen
    | LiveUpdate
    | LiveUpdated
    | LivePayment
    | LiveEvent
)
"""Any message of the protocol."""

_HEADER_TYPES: dict[FrameType, type[Any]] = {
    FrameType.JOB: Job,
    FrameType.RESULT: Result,
    FrameType.SUMMARY: ResultSummary,
    FrameType.ERROR: Error,
    FrameType.GET_INFO: GetInfo,
    FrameType.ORCH_INFO: OrchInfo,
    FrameType.PING: Ping,
    FrameType.PONG: Pong,
    FrameType.WORKER_HELLO: WorkerHello,
    FrameType.WORKER_WELCOME: WorkerWelcome,
    FrameType.END: End,
    FrameType.LIVE_OPEN: LiveOpen,
    FrameType.LIVE_UPDATE: LiveUpdate,
    FrameType.LIVE_UPDATED: LiveUpdated,
    FrameType.LIVE_PAYMENT: LivePayment,
    FrameType.LIVE_EVENT: LiveEvent,
}
_FRAME_TYPE_OF: dict[type[Any], FrameType] = {cls: t for t, cls in _HEADER_TYPES.items()}
_FRAME_TYPE_OF[Data] = FrameType.DATA

_ENCODER = msgspec.msgpack.Encoder()
_DECODERS: dict[FrameType, msgspec.msgpack.Decoder[Any]] = {
    t: msgspec.msgpack.Decoder(cls) for t, cls in _HEADER_TYPES.items()
}


def _unique(what: str, names: Sequence[str]) -> str | None:
    if len(set(names)) != len(names):
        return f"{what} names must be unique"
    return None


def _signature_size(signature: bytes) -> str | None:
    if len(signature) not in (0, SIGNATURE_SIZE):
        return f"a signature is {SIGNATURE_SIZE} bytes or absent, not {len(signature)}"
    return None


# Rules across fields that msgspec's per-field limits cannot say; each returns what is wrong.
_CHECKS: dict[type[Any], Callable[[Any], str | None]] = {
    Job: lambda m: _unique("profile", [p.name for p in m.profiles]),
    Result: lambda m: _unique("rendition", [r.name for r in m.renditions]),
    ResultSummary: lambda m: (
        _unique("rendition", [r.name for r in m.renditions]) or _signature_size(m.signature)
    ),
}


def frame_type_of(message: Message) -> FrameType:
    """The frame type that carries ``message``."""
    return _FRAME_TYPE_OF[type(message)]


def encode_data(track: int, payload: bytes | bytearray | memoryview) -> bytes:
    """Encodes one DATA frame without an intermediate copy of the payload."""
    prefix = encode_varint(track)
    return b"".join(
        (bytes((FrameType.DATA,)), encode_varint(len(prefix) + len(payload)), prefix, payload)
    )


def encode_message(message: Message) -> bytes:
    """Encodes ``message`` as one whole frame.

    Raises:
        LocalProtocolError: if the message breaks a limit or rule the peer would enforce.
    """
    if isinstance(message, Data):
        return encode_data(message.track, message.payload)
    frame_type = frame_type_of(message)
    try:
        body = _ENCODER.encode(message)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {frame_type.name}: {exc}") from None
    if len(body) > MAX_HEADER_SIZE:
        raise LocalProtocolError(
            f"{frame_type.name} of {len(body)} bytes is over the limit of {MAX_HEADER_SIZE}",
            code=413,
        )
    try:
        _decode_body(frame_type, body)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"cannot send {exc}", code=exc.code) from None
    return encode_frame(frame_type, body)


def decode_message(frame: Frame) -> Message:
    """Decodes the message a frame carries.

    Raises:
        RemoteProtocolError: (400) if the body is malformed or breaks a limit or rule.
    """
    if frame.type == FrameType.DATA:
        parsed = decode_varint(frame.body)
        if parsed is None:
            raise RemoteProtocolError("DATA frame too short for its track number", code=400)
        track, start = parsed
        return Data(track=track, payload=frame.body[start:])
    return _decode_body(frame.type, frame.body)


MAX_NESTING = 32
"""Deepest msgpack nesting accepted in a header.

msgspec recurses in C for nested values and only stops at the interpreter's recursion limit,
which libraries such as py_ecc raise to 100000 at import: a 64 KiB header of nested arrays
could then exhaust the C stack. So the nesting is measured first, without recursion.
"""

_FIXED_SIZES = {
    0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,
}  # fmt: skip
_LENGTH_PREFIXED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def msgpack_depth_exceeds(body: bytes, limit: int = MAX_NESTING) -> bool:
    """True if ``body``'s msgpack nests containers deeper than ``limit`` (iterative scan).

    A truncated or malformed body returns False: the decoder reports those itself.
    """
    pending: list[int] = []  # items left in each open container
    i, n = 0, len(body)
    while i < n:
        b = body[i]
        i += 1
        items = 0
        if b <= 0x7F or b >= 0xE0:
            pass
        elif b <= 0x8F:
            items = 2 * (b & 0x0F)
        elif b <= 0x9F:
            items = b & 0x0F
        elif b <= 0xBF:
            i += b & 0x1F
        elif b in _FIXED_SIZES:
            i += _FIXED_SIZES[b]
        elif b in _LENGTH_PREFIXED:
            size = _LENGTH_PREFIXED[b]
            i += size + int.from_bytes(body[i : i + size], "big")
        elif b in _EXT:
            size = _EXT[b]
            i += size + 1 + int.from_bytes(body[i : i + size], "big")
        elif b in _CONTAINERS:
            size, per = _CONTAINERS[b]
            items = per * int.from_bytes(body[i : i + size], "big")
            i += size
        else:
            return False  # 0xC1 is never used: malformed, left to the decoder
        if items:
            pending.append(items)
            if len(pending) > limit:
                return True
            continue
        while pending:
            pending[-1] -= 1
            if pending[-1]:
                break
            pending.pop()
    return False


def _decode_body(frame_type: FrameType, body: bytes) -> Message:
    if msgpack_depth_exceeds(body):
        raise RemoteProtocolError(
            f"malformed {frame_type.name}: nested deeper than {MAX_NESTING} levels", code=400
        )
    try:
        message: Message = _DECODERS[frame_type].decode(body)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise RemoteProtocolError(f"malformed {frame_type.name}: {exc}", code=400) from None
    check = _CHECKS.get(type(message))
    problem = check(message) if check is not None else None
    if problem is not None:
        raise RemoteProtocolError(f"malformed {frame_type.name}: {problem}", code=400)
    return message
