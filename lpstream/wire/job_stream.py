"""The rules of a job stream, shared by its two ends: states, transition tables, limits.

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

The ends are ``JobRequester`` (``requester.py``) and ``JobResponder`` (``responder.py``); both
are sans-IO. Control streams (``control.py``) have no order rules.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from typing import Final, Generic, Literal, TypeAlias, TypeVar

import attrs

from lpstream.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from lpstream.wire.framing import (
    MAX_DATA_SIZE,
    MAX_HEADER_SIZE,
    FrameDecoder,
    FrameType,
    varint_size,
)
from lpstream.wire.messages import (
    Result,
    ResultSummary,
    encode_data,
)

__all__ = [
    "EOF",
    "MAX_RENDITION_SIZE",
    "MAX_UPLOAD_SIZE",
    "RESPONSE_TRANSITIONS",
    "UPLOAD_TRANSITIONS",
    "JobStreamEnd",
    "ResponseState",
    "UploadState",
    "data_frames",
    "next_state",
    "summary_mismatch",
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


def next_state(
    table: Mapping[tuple[_S, _Input], _S],
    state: _S,
    what: _Input,
    direction: str,
    error: type[ProtocolError],
) -> _S:
    """The state after ``what`` in ``state``; ``error`` names a move the table lacks."""
    try:
        return table[(state, what)]
    except KeyError:
        name = "FIN" if what is EOF else what.name
        raise error(f"{name} is not allowed when the {direction} is {state.name}") from None


def data_frames(track: int, data: bytes, max_data_size: int) -> bytes:
    """DATA frames for ``data``, each body at most ``max_data_size`` bytes."""
    step = max_data_size - varint_size(track)
    if step <= 0:
        raise LocalProtocolError(f"max_data_size {max_data_size} leaves no room for data")
    view = memoryview(data)
    return b"".join(encode_data(track, view[i : i + step]) for i in range(0, len(view), step))


def summary_mismatch(result: Result, summary: ResultSummary, sizes: list[int]) -> str | None:
    """What in ``summary`` disagrees with ``result`` and the ``sizes`` counted, or ``None``."""
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


EventT = TypeVar("EventT")


@attrs.define
class JobStreamEnd(abc.ABC, Generic[EventT]):
    """What both ends of a job stream keep: a decoder for the peer's frames, the state of each
    direction, and the error that broke the stream once the peer broke a rule.

    Args:
        max_header_size: largest header frame accepted from the peer.
        max_data_size: largest DATA frame body, both sent and accepted.
    """

    max_header_size: int = MAX_HEADER_SIZE
    max_data_size: int = MAX_DATA_SIZE
    _decoder: FrameDecoder = attrs.field(init=False)
    _upload: UploadState = attrs.field(default=UploadState.IDLE, init=False)
    _response: ResponseState = attrs.field(default=ResponseState.IDLE, init=False)
    _result: Result | None = attrs.field(default=None, init=False)
    _error: RemoteProtocolError | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._decoder = FrameDecoder(
            max_header_size=self.max_header_size, max_data_size=self.max_data_size
        )

    @property
    def upload_state(self) -> UploadState:
        """Where the upload (requester → responder) is."""
        return self._upload

    @property
    def response_state(self) -> ResponseState:
        """Where the response (responder → requester) is."""
        return self._response

    def next_event(self) -> EventT | None:
        """The next event, or ``None`` until more bytes (or the FIN) come in.

        Raises:
            RemoteProtocolError: the peer broke the protocol; raised again on every call. A
                responder answers ``send_error(exc.code, str(exc))`` and resets.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc
            self._mark_broken()
            raise

    @abc.abstractmethod
    def _next_event(self) -> EventT | None:
        """The next event of this end, or None until more bytes arrive."""

    @abc.abstractmethod
    def _mark_broken(self) -> None:
        """Puts the direction the peer sends in its ERROR state."""

    def _upload_after(self, what: _Input, error: type[ProtocolError]) -> UploadState:
        return next_state(UPLOAD_TRANSITIONS, self._upload, what, "upload", error)

    def _response_after(self, what: _Input, error: type[ProtocolError]) -> ResponseState:
        return next_state(RESPONSE_TRANSITIONS, self._response, what, "response", error)
