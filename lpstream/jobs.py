"""Trio drivers for job streams: send a job and collect its renditions, or serve one.

These are the thin loops around ``lpstream.wire``'s ``JobRequester`` and ``JobResponder``:
read, feed, drain events, write. The gateway requests jobs from orchestrators and the
orchestrator from remote workers with ``request_job``; orchestrators and workers answer with
``serve_job``. Any byte stream with ``send_all``/``send_eof``/``receive_some``/``aclose``
works (a QUIC stream in the node, a trio memory stream pair in tests).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Protocol, cast

import attrs
import trio

from lpstream.errors import (
    BusyError,
    LpstreamError,
    MediaError,
    ProtocolError,
    RemoteProtocolError,
    TransportError,
)
from lpstream.taskgroups import one_error
from lpstream.trickle import SegmentBuffer
from lpstream.wire import (
    Error,
    Job,
    JobFailed,
    JobReceived,
    JobRequester,
    JobResponder,
    LiveUpdate,
    LiveUpdated,
    MessageStream,
    Rendition,
    RenditionData,
    RenditionInfo,
    ResponseComplete,
    Result,
    ResultStarted,
    ResultSummary,
    UploadComplete,
    UploadData,
)

__all__ = [
    "JobError",
    "JobHandler",
    "JobOutput",
    "JobResult",
    "Prepended",
    "Relay",
    "ResultSigner",
    "ResultSink",
    "UpdateHandler",
    "UploadGate",
    "error_code",
    "request_job",
    "request_update",
    "serve_job",
    "serve_update",
]

log = logging.getLogger("lpstream.jobs")

MAX_SEGMENT_SIZE = 64 * 1024 * 1024
"""Largest uploaded segment a node accepts (413 beyond)."""
RECEIVE_SIZE = 256 * 1024


class JobError(ProtocolError):
    """The peer answered the job with ERROR(code, message), or the stream broke (502)."""


@attrs.frozen(kw_only=True)
class JobOutput:
    """One finished rendition: the facts the summary reports, and the bytes."""

    info: RenditionInfo
    """Name, size, frames, pixels, duration."""
    data: bytes
    """MPEG-TS bytes."""


@attrs.frozen(kw_only=True)
class JobResult:
    """What a job stream answered: the renditions and the SUMMARY's signature over them."""

    outputs: list[JobOutput]
    """The renditions, in track order."""
    signature: bytes = b""
    """65-byte signature of :func:`lpstream.verification.rendition_digest`, or empty when the
    peer signed nothing. Not checked here: see :func:`lpstream.verification.verify_result`."""


class ResultSink:
    """Lets a job's handler answer while it works: RESULT as soon as the outputs are known,
    then each piece of output as DATA at once (live AI). A handler that never calls
    :meth:`start` is answered whole after it returns, as transcoding is.

    ``started`` tells a retrying caller that output has left: the job can no longer move to
    another worker without the requester seeing two answers.
    """

    def __init__(self, send: Callable[[bytes], Awaitable[None]], responder: JobResponder):
        self._send = send
        self._responder = responder
        self.started = False

    async def start(self, renditions: Sequence[Rendition]) -> None:
        self.started = True
        await self._send(self._responder.send_result(Result(renditions=tuple(renditions))))

    async def data(self, track: int, payload: bytes) -> None:
        await self._send(self._responder.send_rendition_data(track, payload))


class Relay(Protocol):
    """What ``request_job`` passes a response on to as it arrives (a ``ResultSink``)."""

    async def start(self, renditions: Sequence[Rendition]) -> None: ...

    async def data(self, track: int, payload: bytes) -> None: ...


JobHandler = Callable[[Job, SegmentBuffer, ResultSink], Awaitable[Sequence[JobOutput]]]
ResultSigner = Callable[[Job, list[JobOutput]], bytes]
"""Signs a job's renditions for its SUMMARY (as :func:`lpstream.verification.sign_renditions`)."""


async def request_job(
    stream: trio.abc.HalfCloseableStream,
    job: Job,
    source: SegmentBuffer,
    *,
    response_timeout: float,
    relay: Relay | None = None,
) -> JobResult:
    """Sends ``job`` with the bytes of ``source`` as they arrive; returns the renditions.

    ``response_timeout`` runs from the end of the upload to the end of the response. With a
    ``relay``, RESULT and each DATA are also handed to it as they arrive.

    Raises:
        JobError: the peer refused or failed the job (its code), or broke the protocol.
        TransportError: the stream or connection failed.
        trio.TooSlowError: no complete answer within ``response_timeout`` after the upload.
    """
    requester = JobRequester()
    result: Result | None = None
    tracks: list[bytearray] = []
    summary: ResultSummary | None = None
    answer_deadline = trio.CancelScope()

    async def upload() -> None:
        try:
            await stream.send_all(requester.send_job(job))
            async with _closing_chunks(source) as chunks:
                async for chunk in chunks:
                    await stream.send_all(requester.send_data(chunk))
            requester.end_upload()
            await stream.send_eof()
        except TransportError:
            # The peer stopped reading: it refused the job (its ERROR follows on the response)
            # or went away (then reading the response fails too). Either way the answer says.
            pass
        answer_deadline.deadline = trio.current_time() + response_timeout

    with one_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload)
            with answer_deadline:
                while summary is None:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if data:
                        requester.receive_data(bytes(data))
                    else:
                        requester.receive_eof()
                    try:
                        while (event := requester.next_event()) is not None:
                            if isinstance(event, ResultStarted):
                                result = event.result
                                tracks = [bytearray() for _ in result.renditions]
                                if relay is not None:
                                    await relay.start(result.renditions)
                            elif isinstance(event, RenditionData):
                                tracks[event.track] += event.data
                                if relay is not None:
                                    await relay.data(event.track, bytes(event.data))
                            elif isinstance(event, JobFailed):
                                raise JobError(event.message, code=event.code)
                            elif isinstance(event, ResponseComplete):
                                summary = event.summary
                    except ProtocolError as exc:
                        if isinstance(exc, JobError):
                            raise
                        raise JobError(f"bad response: {exc}", code=502) from exc
                    if not data and summary is None:
                        raise JobError("response ended early", code=502)
            if answer_deadline.cancelled_caught:
                raise trio.TooSlowError(f"no answer {response_timeout:g} s after the upload")
            nursery.cancel_scope.cancel()
    assert summary is not None
    return JobResult(
        outputs=[
            JobOutput(info=info, data=bytes(tracks[i])) for i, info in enumerate(summary.renditions)
        ],
        signature=summary.signature,
    )


def _closing_chunks(source: SegmentBuffer) -> contextlib.aclosing[AsyncGenerator[bytes, None]]:
    """``source.chunks()``, closed when the block ends however it ends (an abandoned async
    generator is only finalized when collected, and warned about then)."""
    return contextlib.aclosing(cast(AsyncGenerator[bytes, None], source.chunks()))


def error_code(exc: Exception) -> int:
    """The HTTP-like status an exception is answered with (on a job stream, over HTTP)."""
    if isinstance(exc, ProtocolError):
        return exc.code
    if isinstance(exc, BusyError):
        return 503
    if isinstance(exc, MediaError):
        return 422
    if isinstance(exc, TransportError):
        return 502
    if isinstance(exc, trio.TooSlowError):
        return 504
    if isinstance(exc, LpstreamError):
        return 503  # a seam failed (the chain, the ticket store): not the peer's doing
    return 500


class UploadGate(Protocol):
    """Admits a job and each piece of its upload before it is kept (the orchestrator's
    ``lpstream.orchestrator.uploads.UploadAllowance``); a refusal raises ``ProtocolError``."""

    def start(self, job: Job) -> None: ...

    def charge(self, size: int) -> None: ...

    def close(self) -> None: ...


@attrs.define
class _Upload(SegmentBuffer):
    """The segment a served job uploads; emptied as soon as the job is over."""

    def discard(self) -> None:
        """Drops the bytes: whatever still refers to the buffer (a worker thread finishing, an
        exception's traceback) no longer keeps the segment in memory."""
        self._chunks = []


async def serve_job(
    stream: trio.abc.HalfCloseableStream,
    handler: JobHandler,
    *,
    upload_timeout: float = 30.0,
    peer: str = "",
    sign: ResultSigner | None = None,
    max_upload_size: int = MAX_SEGMENT_SIZE,
    gate: UploadGate | None = None,
) -> None:
    """Answers one job stream: reads JOB and its upload, runs ``handler``, sends the result.

    ``sign``, if given, signs the handler's outputs (on a thread); its bytes go into the
    SUMMARY. An upload over ``max_upload_size`` bytes is refused with 413. ``gate``, if given,
    is asked to admit the JOB (before the handler sees it) and every byte read after it (before
    it is fed to the decoder), and is closed when the stream is done.

    A malformed stream, a refused job (``BusyError``, ``ProtocolError``) or a failed one gets
    ERROR with its code, is logged once with the reason, and the stream is closed; a peer that
    goes away is logged at debug. Nothing raises to the caller except cancellation: an
    unexpected error is logged with its traceback and answered 500.
    """
    responder = JobResponder(max_upload_size=max_upload_size)
    sink = ResultSink(stream.send_all, responder)
    source = _Upload(max_size=max_upload_size)
    job_received = trio.Event()
    outputs: list[JobOutput] = []
    job: Job | None = None
    peer_left = False
    read = 0  # bytes read from the stream

    async def read_upload() -> None:
        nonlocal job, peer_left, read
        while True:
            with trio.move_on_after(upload_timeout) as idle:
                try:
                    data = await stream.receive_some(RECEIVE_SIZE)
                except TransportError:
                    peer_left = True
                    raise
            if idle.cancelled_caught:
                raise RemoteProtocolError(f"upload stalled for {upload_timeout:g} s", code=408)
            if data:
                if gate is not None and job is not None:
                    gate.charge(len(data))  # before any of it is kept, even by the decoder
                read += len(data)
                responder.receive_data(bytes(data))
            else:
                responder.receive_eof()
            while (event := responder.next_event()) is not None:
                if isinstance(event, JobReceived):
                    job = event.job
                    if gate is not None:
                        gate.start(job)
                        gate.charge(read)  # what came with the JOB
                    job_received.set()
                elif isinstance(event, UploadData):
                    source.append(event.data)
                elif isinstance(event, UploadComplete):
                    source.close()
                    return
            if not data:
                return

    try:
        with one_error():
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    try:
                        await read_upload()
                    except Exception as exc:
                        source.fail(exc)
                        raise

                nursery.start_soon(reader)
                await job_received.wait()
                assert job is not None
                outputs = list(await handler(job, source, sink))
                await source.wait_closed()
        signature = b""
        if sign is not None:  # hashes every rendition: off the trio thread
            signature = await trio.to_thread.run_sync(sign, job, outputs)
        if not sink.started:
            await sink.start(
                [
                    Rendition(name=o.info.name, width=o.info.width, height=o.info.height)
                    for o in outputs
                ]
            )
            for track, output in enumerate(outputs):
                await sink.data(track, output.data)
        await stream.send_all(
            responder.send_summary(
                ResultSummary(
                    renditions=tuple(
                        attrs.evolve(o.info, size=responder.bytes_sent(i))
                        for i, o in enumerate(outputs)
                    ),
                    signature=signature,
                )
            )
        )
        await stream.send_eof()
    except Exception as exc:
        if peer_left or isinstance(
            exc, TransportError | trio.BrokenResourceError | trio.ClosedResourceError
        ):
            # The peer reset the stream or the connection is gone: a client leaving. (The
            # reason goes to the log as text: a record must not keep the job's frames alive.)
            log.debug("%s from %s ended: %s", _describe(job), peer or "peer", str(exc))
            await stream.aclose()
            return
        code = error_code(exc)
        if code == 500:
            log.exception("%s from %s failed", _describe(job), peer or "peer")
        else:
            what, who = _describe(job), peer or "peer"
            log.warning("%s from %s refused with %d: %s", what, who, code, str(exc))
        try:
            await stream.send_all(responder.send_error(code, str(exc)))
            await stream.send_eof()
        except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError):
            await stream.aclose()
    finally:
        if gate is not None:
            gate.close()
        source.discard()


def _describe(job: Job | None) -> str:
    return f"job {job.stream_id}/{job.seq}" if job is not None else "job stream"


UpdateHandler = Callable[[LiveUpdate], Awaitable[LiveUpdated]]

UPDATE_TIMEOUT = 5.0
"""Seconds a LIVE_UPDATE may take to be answered (the worker waits up to 2 s for a frame)."""


async def request_update(stream: trio.abc.HalfCloseableStream, update: LiveUpdate) -> LiveUpdated:
    """Sends one LIVE_UPDATE on its own stream and returns the answer.

    Raises:
        JobError: the peer answered ERROR (its code) or something else (502).
        TransportError: the stream failed.
        trio.TooSlowError: no answer within ``UPDATE_TIMEOUT``.
    """
    channel = MessageStream()
    await stream.send_all(channel.send(update))
    await stream.send_eof()
    with trio.fail_after(UPDATE_TIMEOUT):
        while True:
            data = await stream.receive_some(64 * 1024)
            if data:
                channel.receive_data(bytes(data))
            else:
                channel.receive_eof()
            message = channel.next_message()
            if isinstance(message, LiveUpdated):
                return message
            if isinstance(message, Error):
                raise JobError(message.message, code=message.code)
            if message is not None or not data:
                raise JobError("bad answer to LIVE_UPDATE", code=502)


async def serve_update(stream: trio.abc.HalfCloseableStream, handler: UpdateHandler) -> None:
    """Answers one LIVE_UPDATE stream with the handler's LIVE_UPDATED, or ERROR."""
    channel = MessageStream()
    try:
        with trio.fail_after(UPDATE_TIMEOUT):
            while (message := channel.next_message()) is None:
                data = await stream.receive_some(64 * 1024)
                if not data:
                    channel.receive_eof()
                    return
                channel.receive_data(bytes(data))
        if not isinstance(message, LiveUpdate):
            raise ProtocolError(f"expected LIVE_UPDATE, got {type(message).__name__}", code=400)
        answer = await handler(message)
        await stream.send_all(channel.send(answer))
    except (ProtocolError, BusyError, MediaError) as exc:
        code = error_code(exc)
        log.info("live update refused with %d: %s", code, exc)
        try:
            await stream.send_all(channel.send(Error(code=code, message=str(exc)[:1000])))
        except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
    except (TransportError, trio.TooSlowError) as exc:
        log.info("live update stream failed: %s", exc)
        return
    with contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_eof()


class Prepended(trio.abc.HalfCloseableStream):
    """A stream with bytes already read put back in front."""

    def __init__(self, stream: trio.abc.HalfCloseableStream, head: bytes) -> None:
        self._stream = stream
        self._head = head

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return bytes(await self._stream.receive_some(max_bytes))

    async def aclose(self) -> None:
        await self._stream.aclose()
