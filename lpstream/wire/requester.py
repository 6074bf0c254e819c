"""The requester's end of a job stream: it sends the JOB and the segment, and receives the
renditions (sans-IO; the stream's rules are in ``job_stream.py``)."""

from __future__ import annotations

from typing import TypeAlias

import attrs

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.wire.framing import Frame, FrameType
from lpstream.wire.job_stream import (
    EOF,
    MAX_RENDITION_SIZE,
    JobStreamEnd,
    ResponseState,
    UploadState,
    data_frames,
    summary_mismatch,
)
from lpstream.wire.messages import (
    Data,
    Error,
    Job,
    Result,
    ResultSummary,
    decode_message,
    encode_message,
)

__all__ = [
    "JobFailed",
    "JobRequester",
    "RenditionData",
    "RequesterEvent",
    "ResponseComplete",
    "ResultStarted",
]


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


RequesterEvent: TypeAlias = ResultStarted | RenditionData | JobFailed | ResponseComplete
"""What :meth:`JobRequester.next_event` returns."""


@attrs.define
class JobRequester(JobStreamEnd[RequesterEvent]):
    """The end that sends a job and receives its renditions.

    Args:
        max_header_size: largest header frame accepted from the responder.
        max_data_size: largest DATA frame body, both sent and accepted.
        max_rendition_size: most bytes accepted on one rendition track (413 beyond).
    """

    max_rendition_size: int = MAX_RENDITION_SIZE
    _summary: ResultSummary | None = attrs.field(default=None, init=False)
    _received: list[int] = attrs.field(factory=list, init=False)
    _eof: bool = attrs.field(default=False, init=False)

    def send_job(self, job: Job) -> bytes:
        """Opens the upload with the JOB frame."""
        state = self._upload_after(FrameType.JOB, LocalProtocolError)
        out = encode_message(job)
        self._upload = state
        return out

    def send_data(self, chunk: bytes) -> bytes:
        """Frames a piece of the segment as DATA on track 0 (split at ``max_data_size``)."""
        state = self._upload_after(FrameType.DATA, LocalProtocolError)
        out = data_frames(0, chunk, self.max_data_size)
        self._upload = state
        return out

    def end_upload(self) -> None:
        """Marks the upload finished; the driver sends FIN."""
        self._upload = self._upload_after(EOF, LocalProtocolError)

    def receive_data(self, data: bytes) -> None:
        """Adds bytes of the response."""
        if self._eof:
            raise LocalProtocolError("received data after FIN")
        self._decoder.receive_data(data)

    def receive_eof(self) -> None:
        """Notes the response's FIN (handled here, not by the decoder: a FIN inside a frame
        is a truncated response, not a protocol error)."""
        self._eof = True

    def _mark_broken(self) -> None:
        self._response = ResponseState.ERROR

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
        state = self._response_after(frame.type, RemoteProtocolError)
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
            problem = summary_mismatch(self._result, message, self._received)
            if problem is not None:
                raise RemoteProtocolError(f"SUMMARY does not match: {problem}", code=400)
            self._summary = message
        elif isinstance(message, Error):
            event = JobFailed(code=message.code, message=message.message)
        self._response = state
        return event
