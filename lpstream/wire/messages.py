"""The typed messages of the lpstream wire protocol and their encoding into frames.

How this works:

Every frame type but DATA carries one header message: a frozen attrs class, encoded as a
msgpack map of its fields by msgspec. The classes live by family (:mod:`.job_messages`,
:mod:`.info_messages`, :mod:`.live_messages`); this module is the one codec for all of them,
and re-exports them. msgspec decodes straight into the attrs class and checks every field
while it does: types are strict (no int for a str, no bool for an int), and the
``Annotated[..., msgspec.Meta(...)]`` aliases of :mod:`.fields` bound every string, list, dict
and number a peer controls. A few rules span fields (unique rendition names); :data:`_CHECKS`
holds them. Fields a newer peer adds are ignored, so fields can be added with defaults.

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
from typing import Any, TypeAlias

import msgspec

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.wire.fields import (
    MAX_CAPABILITIES,
    MAX_ERROR_MESSAGE,
    MAX_NAME,
    MAX_PARAM_VALUE,
    MAX_PARAMS,
    MAX_PAYMENT_SIZE,
    MAX_PROFILES,
    MAX_RENDITIONS,
    MAX_TICKET_PARAMS_SIZE,
    SIGNATURE_SIZE,
)
from lpstream.wire.framing import (
    MAX_HEADER_SIZE,
    Frame,
    FrameType,
    decode_varint,
    encode_frame,
    encode_varint,
)
from lpstream.wire.info_messages import (
    AiModelOffer,
    End,
    GetInfo,
    OrchInfo,
    Ping,
    PipelineOffer,
    Pong,
    WorkerHello,
    WorkerWelcome,
)
from lpstream.wire.job_messages import (
    Data,
    Error,
    Job,
    ProfileSpec,
    Rendition,
    RenditionInfo,
    Result,
    ResultSummary,
)
from lpstream.wire.live_messages import LiveEvent, LiveOpen, LivePayment, LiveUpdate, LiveUpdated
from lpstream.wire.msgpack_depth import MAX_NESTING, msgpack_depth_exceeds

__all__ = [
    "MAX_CAPABILITIES",
    "MAX_ERROR_MESSAGE",
    "MAX_NAME",
    "MAX_NESTING",
    "MAX_PARAMS",
    "MAX_PARAM_VALUE",
    "MAX_PAYMENT_SIZE",
    "MAX_PROFILES",
    "MAX_RENDITIONS",
    "MAX_TICKET_PARAMS_SIZE",
    "SIGNATURE_SIZE",
    "AiModelOffer",
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
    "msgpack_depth_exceeds",
]


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
    OrchInfo: lambda m: _signature_size(m.certificate_signature),
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
