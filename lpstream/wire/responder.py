"""The responder's end of a job stream: it receives the JOB and the segment, and sends the
renditions (sans-IO; the stream's rules are in ``job_stream.py``)."""

from __future__ import annotations

from typing import TypeAlias

import attrs

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.wire.framing import Frame, FrameType
from lpstream.wire.job_stream import (
    EOF,
    MAX_UPLOAD_SIZE,
    JobStreamEnd,
    ResponseState,
    UploadState,
    data_frames,
    summary_mismatch,
)
from lpstream.wire.messages import (
    MAX_ERROR_MESSAGE,
    Data,
    Error,
    Job,
    Result,
    ResultSummary,
    decode_message,
    encode_message,
)

__all__ = [
    "JobReceived",
    "JobResponder",
    "ResponderEvent",
    "UploadComplete",
    "UploadData",
]


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


ResponderEvent: TypeAlias = JobReceived | UploadData | UploadComplete
"""What :meth:`JobResponder.next_event` returns."""


@attrs.define
class JobResponder(JobStreamEnd[ResponderEvent]):
    """The end that receives a job and sends its renditions.

    Args:
        max_header_size: largest header frame accepted (JOB).
        max_data_size: largest DATA frame body, both sent and accepted.
        max_upload_size: most bytes accepted for the segment (413 beyond).
    """

    max_upload_size: int = MAX_UPLOAD_SIZE
    _job: Job | None = attrs.field(default=None, init=False)
    _uploaded: int = attrs.field(default=0, init=False)
    _sent: list[int] = attrs.field(factory=list, init=False)

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

    def _mark_broken(self) -> None:
        self._upload = UploadState.ERROR

    def _next_event(self) -> ResponderEvent | None:
        frame = self._decoder.next_frame()
        if frame is not None:
            return self._handle(frame)
        if self._decoder.at_eof and self._upload is not UploadState.DONE:
            self._upload = self._upload_after(EOF, RemoteProtocolError)
            return UploadComplete()
        return None

    def _handle(self, frame: Frame) -> ResponderEvent:
        state = self._upload_after(frame.type, RemoteProtocolError)
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
        state = self._response_after(FrameType.RESULT, LocalProtocolError)
        if self._job is None:
            raise LocalProtocolError("cannot send RESULT before the JOB was received")
        out = encode_message(result)
        self._result = result
        self._sent = [0] * len(result.renditions)
        self._response = state
        return out

    def send_rendition_data(self, track: int, data: bytes) -> bytes:
        """Frames bytes of rendition ``track`` as DATA (split at ``max_data_size``)."""
        state = self._response_after(FrameType.DATA, LocalProtocolError)
        if not 0 <= track < len(self._sent):
            raise LocalProtocolError(f"no rendition {track} in RESULT")
        out = data_frames(track, data, self.max_data_size)
        self._sent[track] += len(data)
        self._response = state
        return out

    def send_summary(self, summary: ResultSummary) -> bytes:
        """Closes a successful response; sizes must equal the bytes sent on each track."""
        state = self._response_after(FrameType.SUMMARY, LocalProtocolError)
        assert self._result is not None
        problem = summary_mismatch(self._result, summary, self._sent)
        if problem is not None:
            raise LocalProtocolError(f"SUMMARY does not match: {problem}")
        out = encode_message(summary)
        self._response = state
        return out

    def send_error(self, code: int, message: str) -> bytes:
        """Ends the response with ERROR (the message is cut to its limit)."""
        state = self._response_after(FrameType.ERROR, LocalProtocolError)
        out = encode_message(Error(code=code, message=message[:MAX_ERROR_MESSAGE]))
        self._response = state
        return out
