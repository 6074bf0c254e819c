"""Sans-IO state machines for one job stream, from each end, and for control streams.

How this works:

A job travels on one bidirectional QUIC stream. The *requester* (gateway → orchestrator,
orchestrator → remote worker) uploads; the *responder* (orchestrator, worker) answers:

    upload:    JOB  DATA(track 0)*  FIN
    response:  RESULT  DATA(track i)*  SUMMARY  FIN        (success)
               [RESULT  DATA*]  ERROR  FIN                 (failure, at any point)

The two directions are independent: the responder may answer before the upload ends (it
streams renditions while the segment still arrives), and may refuse with ERROR at once.

Rendition sizes are not known when the first bytes are ready, so RESULT only names the
renditions (name, width, height) and the closing SUMMARY gives the final figures of each
(size, frames, pixels, duration). The requester counts the bytes of every track and checks
them against SUMMARY; the responder checks the same before it sends SUMMARY.

FIN, not an END frame, ends each direction: QUIC keeps a FIN apart from a reset, so it is a
reliable marker. Hence ``end_upload()`` returns no bytes: the driver sends FIN. The responder
has sent its last frame when ``response_done`` is true; its driver then sends FIN.

One table per direction, below, says which frame may come in which state; both ends use it,
one to check what it sends (breaking it is a LocalProtocolError, and the call has no effect)
and one to check what it receives (a RemoteProtocolError, after which the end stays broken and
``next_event`` raises the same error again; the driver answers ERROR(code) and resets).
``EOF`` stands for the FIN. Rules the tables do not hold:

- The responder may not send RESULT before it has received the JOB. ERROR it may always send
  while its response is open, even before the JOB arrived (e.g. to answer a bad first frame).
- Upload DATA is on track 0; response DATA on a track below ``len(result.renditions)``.
- Per-track byte counts are bounded (413) and must equal the SUMMARY sizes (400).
- At the requester, a FIN that comes before SUMMARY or ERROR (between frames or inside one)
  is not a protocol error but a truncated response: the event is ``JobFailed(502)``.
- At the responder, a FIN before the JOB, or inside a frame, is a RemoteProtocolError (400).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, Literal, TypeAlias, TypeVar

import attrs

from lpstream.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from lpstream.wire.framing import (
    MAX_DATA_SIZE,
    MAX_HEADER_SIZE,
    Frame,
    FrameDecoder,
    FrameType,
    varint_size,
)
from lpstream.wire.messages import (
    MAX_ERROR_MESSAGE,
    Data,
    Error,
    Job,
    Message,
    Result,
    ResultSummary,
    decode_message,
    encode_data,
    encode_message,
    frame_type_of,
)

__all__ = [
    "CONTROL_FRAME_TYPES",
    "EOF",
    "MAX_RENDITION_SIZE",
    "MAX_UPLOAD_SIZE",
    "RESPONSE_TRANSITIONS",
    "UPLOAD_TRANSITIONS",
    "JobFailed",
    "JobReceived",
    "JobRequester",
    "JobResponder",
    "MessageStream",
    "RenditionData",
    "RequesterEvent",
    "ResponderEvent",
    "ResponseComplete",
    "ResponseState",
    "ResultStarted",
    "UploadComplete",
    "UploadData",
    "UploadState",
]

MAX_UPLOAD_SIZE = 256 * 1024 * 1024
"""Default limit on the bytes of one uploaded segment."""
MAX_RENDITION_SIZE = 256 * 1024 * 1024
"""Default limit on the bytes of one rendition in a response."""


class UploadState(enum.Enum):
    """Where the upload direction (requester → responder) is."""

    IDLE = "idle"
    """Nothing sent yet; JOB comes first."""
    SENDING = "sending"
    """JOB sent; DATA may follow."""
    DONE = "done"
    """FIN sent."""
    ERROR = "error"
    """The requester broke the rules (seen at the responder only)."""


class ResponseState(enum.Enum):
    """Where the response direction (responder → requester) is."""

    IDLE = "idle"
    """Nothing sent yet; RESULT or ERROR comes first."""
    SENDING = "sending"
    """RESULT sent; DATA, then SUMMARY or ERROR."""
    SUMMARIZED = "summarized"
    """SUMMARY sent; only FIN may follow."""
    FAILED = "failed"
    """ERROR sent; only FIN may follow."""
    DONE = "done"
    """FIN sent."""
    ERROR = "error"
    """The responder broke the rules (seen at the requester only)."""


class _Eof(enum.Enum):
    EOF = "EOF"


EOF: Final = _Eof.EOF
"""The end of a direction (QUIC FIN), as an input of the transition tables."""

_Input: TypeAlias = FrameType | Literal[_Eof.EOF]

UPLOAD_TRANSITIONS: Mapping[tuple[UploadState, _Input], UploadState] = {
    (UploadState.IDLE, FrameType.JOB): UploadState.SENDING,
    (UploadState.SENDING, FrameType.DATA): UploadState.SENDING,
    (UploadState.SENDING, EOF): UploadState.DONE,
}
"""(state, frame type or EOF) → next state, for the upload direction."""

RESPONSE_TRANSITIONS: Mapping[tuple[ResponseState, _Input], ResponseState] = {
    (ResponseState.IDLE, FrameType.RESULT): ResponseState.SENDING,
    (ResponseState.IDLE, FrameType.ERROR): ResponseState.FAILED,
    (ResponseState.SENDING, FrameType.DATA): ResponseState.SENDING,
    (ResponseState.SENDING, FrameType.SUMMARY): ResponseState.SUMMARIZED,
    (ResponseState.SENDING, FrameType.ERROR): ResponseState.FAILED,
    (ResponseState.SUMMARIZED, EOF): ResponseState.DONE,
    (ResponseState.FAILED, EOF): ResponseState.DONE,
}
"""(state, frame type or EOF) → next state, for the response direction."""


_S = TypeVar("_S", UploadState, ResponseState)


def _next_state(
    table: Mapping[tuple[_S, _Input], _S],
    state: _S,
    what: _Input,
    direction: str,
    error: type[ProtocolError],
) -> _S:
    try:
        return table[(state, what)]
    except KeyError:
        name = "FIN" if what is EOF else what.name
        raise error(f"{name} is not allowed when the {direction} is {state.name}") from None


# --- Events ---------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ResultStarted:
    """The responder accepted the job and names the renditions it will send."""

    result: Result
    """The RESULT; track i of later :class:`RenditionData` is ``result.renditions[i]``."""


@attrs.frozen(kw_only=True)
class RenditionData:
    """Bytes of one rendition."""

    track: int
    """Index into ``result.renditions``."""
    data: bytes
    """The bytes, in order within the track."""


@attrs.frozen(kw_only=True)
class JobFailed:
    """The job failed: the responder sent ERROR, or the response was cut short (502)."""

    code: int
    """HTTP-like status."""
    message: str
    """Reason."""


@attrs.frozen(kw_only=True)
class ResponseComplete:
    """The response ended with FIN after a SUMMARY that matches the bytes received."""

    summary: ResultSummary
    """Final size, frames and pixels of each rendition, in track order."""


@attrs.frozen(kw_only=True)
class JobReceived:
    """The requester sent its JOB."""

    job: Job
    """The job header."""


@attrs.frozen(kw_only=True)
class UploadData:
    """Bytes of the uploaded segment."""

    data: bytes
    """The bytes, in order."""


@attrs.frozen(kw_only=True)
class UploadComplete:
    """The requester ended its upload (FIN)."""


RequesterEvent: TypeAlias = ResultStarted | RenditionData | JobFailed | ResponseComplete
"""What :meth:`JobRequester.next_event` returns."""
ResponderEvent: TypeAlias = JobReceived | UploadData | UploadComplete
"""What :meth:`JobResponder.next_event` returns."""


def _data_frames(track: int, data: bytes, max_data_size: int) -> bytes:
    """DATA frames for ``data``, each body at most ``max_data_size`` bytes."""
    step = max_data_size - varint_size(track)
    if step <= 0:
        raise LocalProtocolError(f"max_data_size {max_data_size} leaves no room for data")
    view = memoryview(data)
    return b"".join(encode_data(track, view[i : i + step]) for i in range(0, len(view), step))


# --- Requester ------------------------------------------------------------------------------


@attrs.define
class JobRequester:
    """The end that sends a job and receives its renditions.

    Args:
        max_header_size: largest header frame accepted from the responder.
        max_data_size: largest DATA frame body, both sent and accepted.
        max_rendition_size: most bytes accepted on one rendition track (413 beyond).
    """

    max_header_size: int = MAX_HEADER_SIZE
    max_data_size: int = MAX_DATA_SIZE
    max_rendition_size: int = MAX_RENDITION_SIZE
    _decoder: FrameDecoder = attrs.field(init=False)
    _upload: UploadState = attrs.field(default=UploadState.IDLE, init=False)
    _response: ResponseState = attrs.field(default=ResponseState.IDLE, init=False)
    _result: Result | None = attrs.field(default=None, init=False)
    _summary: ResultSummary | None = attrs.field(default=None, init=False)
    _received: list[int] = attrs.field(factory=list, init=False)
    _eof: bool = attrs.field(default=False, init=False)
    _error: RemoteProtocolError | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        # The FIN is handled here, not by the decoder: a FIN inside a frame is a truncation.
        self._decoder = FrameDecoder(
            max_header_size=self.max_header_size, max_data_size=self.max_data_size
        )

    @property
    def upload_state(self) -> UploadState:
        """Where our upload is."""
        return self._upload

    @property
    def response_state(self) -> ResponseState:
        """Where the peer's response is."""
        return self._response

    def send_job(self, job: Job) -> bytes:
        """Opens the upload with the JOB frame."""
        state = _next_state(
            UPLOAD_TRANSITIONS, self._upload, FrameType.JOB, "upload", LocalProtocolError
        )
        out = encode_message(job)
        self._upload = state
        return out

    def send_data(self, chunk: bytes) -> bytes:
        """Frames a piece of the segment as DATA on track 0 (split at ``max_data_size``)."""
        state = _next_state(
            UPLOAD_TRANSITIONS, self._upload, FrameType.DATA, "upload", LocalProtocolError
        )
        out = _data_frames(0, chunk, self.max_data_size)
        self._upload = state
        return out

    def end_upload(self) -> None:
        """Marks the upload finished; the driver sends FIN."""
        self._upload = _next_state(
            UPLOAD_TRANSITIONS, self._upload, EOF, "upload", LocalProtocolError
        )

    def receive_data(self, data: bytes) -> None:
        """Adds bytes of the response."""
        if self._eof:
            raise LocalProtocolError("received data after FIN")
        self._decoder.receive_data(data)

    def receive_eof(self) -> None:
        """Notes the response's FIN."""
        self._eof = True

    def next_event(self) -> RequesterEvent | None:
        """The next event, or ``None`` until more bytes (or the FIN) come in.

        Raises:
            RemoteProtocolError: the responder broke the protocol; raised again on every call.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc
            self._response = ResponseState.ERROR
            raise

    def _next_event(self) -> RequesterEvent | None:
        while (frame := self._decoder.next_frame()) is not None:
            event = self._handle(frame)
            if event is not None:
                return event
        if not self._eof or self._response is ResponseState.DONE:
            return None
        state = self._response
        self._response = ResponseState.DONE
        if state is ResponseState.SUMMARIZED and not self._decoder.pending:
            assert self._summary is not None
            return ResponseComplete(summary=self._summary)
        if state is ResponseState.FAILED and not self._decoder.pending:
            return None
        where = "inside a frame" if self._decoder.pending else f"while {state.name}"
        return JobFailed(code=502, message=f"truncated response: FIN came {where}")

    def _handle(self, frame: Frame) -> RequesterEvent | None:
        state = _next_state(
            RESPONSE_TRANSITIONS, self._response, frame.type, "response", RemoteProtocolError
        )
        message = decode_message(frame)
        event: RequesterEvent | None = None
        if isinstance(message, Result):
            if self._upload is UploadState.IDLE:
                raise RemoteProtocolError("RESULT before any JOB was sent", code=400)
            self._result = message
            self._received = [0] * len(message.renditions)
            event = ResultStarted(result=message)
        elif isinstance(message, Data):
            if message.track >= len(self._received):
                raise RemoteProtocolError(f"DATA for unknown track {message.track}", code=400)
            self._received[message.track] += len(message.payload)
            if self._received[message.track] > self.max_rendition_size:
                raise RemoteProtocolError(
                    f"track {message.track} is over {self.max_rendition_size} bytes", code=413
                )
            event = RenditionData(track=message.track, data=message.payload)
        elif isinstance(message, ResultSummary):
            assert self._result is not None
            problem = _summary_mismatch(self._result, message, self._received)
            if problem is not None:
                raise RemoteProtocolError(f"SUMMARY does not match: {problem}", code=400)
            self._summary = message
        elif isinstance(message, Error):
            event = JobFailed(code=message.code, message=message.message)
        self._response = state
        return event


def _summary_mismatch(result: Result, summary: ResultSummary, sizes: list[int]) -> str | None:
    if len(summary.renditions) != len(result.renditions):
        return f"{len(summary.renditions)} renditions, RESULT had {len(result.renditions)}"
    for track, (announced, info) in enumerate(
        zip(result.renditions, summary.renditions, strict=True)
    ):
        if (info.name, info.width, info.height) != (
            announced.name,
            announced.width,
            announced.height,
        ):
            return f"track {track} is {info.name} {info.width}x{info.height} in SUMMARY"
        if info.size != sizes[track]:
            return f"track {track} has size {info.size} but {sizes[track]} bytes were sent"
    return None


# --- Responder ------------------------------------------------------------------------------


@attrs.define
class JobResponder:
    """The end that receives a job and sends its renditions.

    Args:
        max_header_size: largest header frame accepted (JOB).
        max_data_size: largest DATA frame body, both sent and accepted.
        max_upload_size: most bytes accepted for the segment (413 beyond).
    """

    max_header_size: int = MAX_HEADER_SIZE
    max_data_size: int = MAX_DATA_SIZE
    max_upload_size: int = MAX_UPLOAD_SIZE
    _decoder: FrameDecoder = attrs.field(init=False)
    _upload: UploadState = attrs.field(default=UploadState.IDLE, init=False)
    _response: ResponseState = attrs.field(default=ResponseState.IDLE, init=False)
    _job: Job | None = attrs.field(default=None, init=False)
    _result: Result | None = attrs.field(default=None, init=False)
    _uploaded: int = attrs.field(default=0, init=False)
    _sent: list[int] = attrs.field(factory=list, init=False)
    _error: RemoteProtocolError | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._decoder = FrameDecoder(
            max_header_size=self.max_header_size, max_data_size=self.max_data_size
        )

    @property
    def upload_state(self) -> UploadState:
        """Where the peer's upload is."""
        return self._upload

    @property
    def response_state(self) -> ResponseState:
        """Where our response is."""
        return self._response

    @property
    def job(self) -> Job | None:
        """The JOB, once received."""
        return self._job

    @property
    def response_done(self) -> bool:
        """True once SUMMARY or ERROR is sent: the driver sends FIN next."""
        return self._response in (ResponseState.SUMMARIZED, ResponseState.FAILED)

    def bytes_sent(self, track: int) -> int:
        """Payload bytes sent so far on ``track`` (what SUMMARY must give as its size)."""
        return self._sent[track]

    def receive_data(self, data: bytes) -> None:
        """Adds bytes of the upload.

        Raises:
            LocalProtocolError: if called after :meth:`receive_eof`.
        """
        self._decoder.receive_data(data)

    def receive_eof(self) -> None:
        """Notes the upload's FIN."""
        self._decoder.receive_eof()

    def next_event(self) -> ResponderEvent | None:
        """The next event, or ``None`` until more bytes (or the FIN) come in.

        Raises:
            RemoteProtocolError: the requester broke the protocol; answer ``send_error(exc.code,
                str(exc))`` and reset. Raised again on every call.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc
            self._upload = UploadState.ERROR
            raise

    def _next_event(self) -> ResponderEvent | None:
        frame = self._decoder.next_frame()
        if frame is not None:
            return self._handle(frame)
        if self._decoder.at_eof and self._upload is not UploadState.DONE:
            self._upload = _next_state(
                UPLOAD_TRANSITIONS, self._upload, EOF, "upload", RemoteProtocolError
            )
            return UploadComplete()
        return None

    def _handle(self, frame: Frame) -> ResponderEvent:
        state = _next_state(
            UPLOAD_TRANSITIONS, self._upload, frame.type, "upload", RemoteProtocolError
        )
        message = decode_message(frame)
        event: ResponderEvent
        if isinstance(message, Job):
            self._job = message
            event = JobReceived(job=message)
        else:
            assert isinstance(message, Data)
            if message.track != 0:
                raise RemoteProtocolError(f"upload DATA on track {message.track}, not 0", code=400)
            self._uploaded += len(message.payload)
            if self._uploaded > self.max_upload_size:
                raise RemoteProtocolError(f"upload is over {self.max_upload_size} bytes", code=413)
            event = UploadData(data=message.payload)
        self._upload = state
        return event

    def send_result(self, result: Result) -> bytes:
        """Opens the response: names the renditions that DATA tracks 0, 1, ... carry."""
        state = _next_state(
            RESPONSE_TRANSITIONS, self._response, FrameType.RESULT, "response", LocalProtocolError
        )
        if self._job is None:
            raise LocalProtocolError("cannot send RESULT before the JOB was received")
        out = encode_message(result)
        self._result = result
        self._sent = [0] * len(result.renditions)
        self._response = state
        return out

    def send_rendition_data(self, track: int, data: bytes) -> bytes:
        """Frames bytes of rendition ``track`` as DATA (split at ``max_data_size``)."""
        state = _next_state(
            RESPONSE_TRANSITIONS, self._response, FrameType.DATA, "response", LocalProtocolError
        )
        if not 0 <= track < len(self._sent):
            raise LocalProtocolError(f"no rendition {track} in RESULT")
        out = _data_frames(track, data, self.max_data_size)
        self._sent[track] += len(data)
        self._response = state
        return out

    def send_summary(self, summary: ResultSummary) -> bytes:
        """Closes a successful response; sizes must equal the bytes sent on each track."""
        state = _next_state(
            RESPONSE_TRANSITIONS, self._response, FrameType.SUMMARY, "response", LocalProtocolError
        )
        assert self._result is not None
        problem = _summary_mismatch(self._result, summary, self._sent)
        if problem is not None:
            raise LocalProtocolError(f"SUMMARY does not match: {problem}")
        out = encode_message(summary)
        self._response = state
        return out

    def send_error(self, code: int, message: str) -> bytes:
        """Ends the response with ERROR (the message is cut to its limit)."""
        state = _next_state(
            RESPONSE_TRANSITIONS, self._response, FrameType.ERROR, "response", LocalProtocolError
        )
        out = encode_message(Error(code=code, message=message[:MAX_ERROR_MESSAGE]))
        self._response = state
        return out


# --- Control streams ------------------------------------------------------------------------

CONTROL_FRAME_TYPES: frozenset[FrameType] = frozenset(
    {
        FrameType.ERROR,
        FrameType.GET_INFO,
        FrameType.ORCH_INFO,
        FrameType.PING,
        FrameType.PONG,
        FrameType.WORKER_HELLO,
        FrameType.WORKER_WELCOME,
        FrameType.END,
        FrameType.LIVE_OPEN,
        FrameType.LIVE_UPDATE,
        FrameType.LIVE_UPDATED,
        FrameType.LIVE_PAYMENT,
        FrameType.LIVE_EVENT,
    }
)
"""What a control stream carries by default: no JOB, DATA, RESULT or SUMMARY."""


@attrs.define
class MessageStream:
    """A symmetric stream of messages with no order rules (GET_INFO/ORCH_INFO, PING/PONG,
    WORKER_HELLO/WORKER_WELCOME). Pairing requests with answers is the caller's business.

    Args:
        accept: the frame types this stream may carry, both ways.
        max_header_size: largest frame accepted.
    """

    accept: frozenset[FrameType] = CONTROL_FRAME_TYPES
    max_header_size: int = MAX_HEADER_SIZE
    _decoder: FrameDecoder = attrs.field(init=False)
    _error: RemoteProtocolError | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        limit = self.max_header_size
        data_limit = MAX_DATA_SIZE if FrameType.DATA in self.accept else limit
        self._decoder = FrameDecoder(max_header_size=limit, max_data_size=data_limit)

    def send(self, message: Message) -> bytes:
        """Encodes one message as a frame."""
        frame_type = frame_type_of(message)
        if frame_type not in self.accept:
            raise LocalProtocolError(f"{frame_type.name} is not carried on this stream")
        return encode_message(message)

    def receive_data(self, data: bytes) -> None:
        """Adds bytes from the peer."""
        self._decoder.receive_data(data)

    def receive_eof(self) -> None:
        """Notes the peer's FIN; ``next_message`` raises if it came inside a frame."""
        self._decoder.receive_eof()

    def next_message(self) -> Message | None:
        """The next message, or ``None`` until more bytes come in (or, after the FIN, ever).

        Raises:
            RemoteProtocolError: a malformed frame (400), one over the size limit (413), or
                one this stream does not carry (400). Raised again on every call.
        """
        if self._error is not None:
            raise self._error
        try:
            frame = self._decoder.next_frame()
            if frame is None:
                return None
            if frame.type not in self.accept:
                raise RemoteProtocolError(
                    f"{frame.type.name} is not carried on this stream", code=400
                )
            return decode_message(frame)
        except RemoteProtocolError as exc:
            self._error = exc
            raise
