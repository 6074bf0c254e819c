"""The orchestrator role: takes jobs over QUIC, hands them to workers, answers with renditions.

How this works:

* Every QUIC connection is served by ``handle_connection``. Each stream a peer opens starts
  with one frame whose type says what the stream is: JOB (a gateway's segment), GET_INFO or
  PING (control), or WORKER_HELLO (a remote worker registering; it must carry the
  orchestrator's secret, otherwise it gets ERROR 403 and the connection is closed).
* Workers are the in-process ``LocalWorker`` and ``RemoteWorker``s (one per registered
  connection). A remote worker's jobs go to it on streams the orchestrator opens on the
  worker's own connection.
* Capacity is counted in sessions, as in go-livepeer: a (stream, session) pair is pinned to a
  worker while it keeps sending segments and is forgotten after ``session_ttl`` of silence.
  A new session when every worker's sessions are taken is answered 503 at once: work is
  refused, never queued without bound.
* The segment a job uploads is kept in a ``SegmentBuffer``, so if a worker dies or fails the
  job is given, from the first byte, to another worker; the gateway sees one answer. What
  uploads may hold is bounded by ``UploadBudget`` (``lpstream.orchestrator.uploads``): per job
  (413), per session, connection and node (503), checked as bytes are read, before they are
  kept; a refusal ends that stream only, and an ended job gives its bytes back (and, every
  ``trim_after_bytes``, the freed memory goes back to the system).
* A job naming a pipeline is a live AI job: it goes to a worker that has the pipeline, is paid
  by time on the session's LIVE_OPEN control stream rather than in the JOB
  (``lpstream.orchestrator.live``), and parameter changes on that stream are routed to the
  worker holding the session. A session with a control stream belongs to the connection that
  opened it: its jobs must come on that connection (403 otherwise), so knowing a session's
  ids is not enough to use it.
* Faults stay in their stream: whatever a peer sends is answered with ERROR on that stream
  (logged once, at warning; a peer that leaves, at debug), and even an unexpected error in
  one stream's task (a bug) ends that stream only, never the connection's other streams.
  Every answer is followed by our FIN, never by a reset, so a peer that sends its request and
  FIN at once always reads the whole answer.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

import lpstream
from lpstream.budget import MemoryBudget, trim_freed_memory
from lpstream.errors import (
    BusyError,
    LpstreamError,
    MediaError,
    ProtocolError,
    RemoteProtocolError,
    TransportError,
)
from lpstream.jobs import (
    JobError,
    JobOutput,
    Prepended,
    Relay,
    ResultSink,
    request_job,
    request_update,
    serve_job,
)
from lpstream.keepalive import ping_until_silent
from lpstream.metrics import Metrics
from lpstream.orchestrator.live import LiveAccounts, serve_live_control
from lpstream.orchestrator.payments import PaymentReceiver
from lpstream.orchestrator.status import OrchestratorStatus, WorkerStatus
from lpstream.orchestrator.uploads import TRIM_AFTER_BYTES, UploadBudget
from lpstream.quic import QuicConnectionHandle, QuicStream
from lpstream.trickle import SegmentBuffer
from lpstream.wire import (
    MAX_CAPABILITIES,
    Error,
    FrameType,
    GetInfo,
    Job,
    LiveOpen,
    LiveUpdate,
    LiveUpdated,
    MessageStream,
    OrchInfo,
    Ping,
    PipelineOffer,
    Pong,
    WorkerHello,
    WorkerWelcome,
)
from lpstream.worker.local import LocalWorker
from payments.pm import Payment

__all__ = ["Orchestrator", "RemoteWorker", "Worker"]

log = logging.getLogger("lpstream.orchestrator")

CONTROL_TIMEOUT = 10.0
"""Seconds a control stream may stay silent before it is closed."""


class Worker(Protocol):
    """Something that transcodes: the local worker or a remote one."""

    worker_id: str
    capacity: int

    def capabilities(self) -> tuple[str, ...]: ...

    async def run_job(
        self, job: Job, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[JobOutput]: ...

    async def update_live(
        self, stream_id: str, session_id: str, params: Mapping[str, object]
    ) -> LiveUpdated: ...


@attrs.define
class RemoteWorker:
    """A worker process that dialled in and registered with the secret."""

    worker_id: str
    capacity: int
    connection: QuicConnectionHandle
    offered: tuple[str, ...] = ("transcode:h264",)
    """The capabilities its WORKER_HELLO listed."""
    response_timeout: float = 20.0

    def capabilities(self) -> tuple[str, ...]:
        return self.offered

    async def run_job(
        self, job: Job, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[JobOutput]:
        stream = await self.connection.open_stream()
        try:
            result = await request_job(
                stream, job, source, response_timeout=self.response_timeout, relay=relay
            )
            return result.outputs
        finally:
            await stream.aclose()

    async def update_live(
        self, stream_id: str, session_id: str, params: Mapping[str, object]
    ) -> LiveUpdated:
        stream = await self.connection.open_stream()
        try:
            update = LiveUpdate(
                stream_id=stream_id,
                session_id=session_id,
                params={k: v for k, v in params.items() if isinstance(v, str | int | float)},
            )
            return await request_update(stream, update)
        finally:
            await stream.aclose()


@attrs.define
class _Session:
    worker_id: str
    last_used: float


@attrs.define
class Orchestrator:
    """Routes jobs to workers (see the module comment)."""

    secret: str
    """Remote workers must present it (compared in constant time)."""
    metrics: Metrics
    local: LocalWorker | None = None
    """The in-process worker, if this node transcodes itself."""
    payments: PaymentReceiver | None = None
    """Checks and credits tickets; None off-chain (work is free)."""
    session_ttl: float = 10.0
    """Seconds after a session's last segment before its capacity is freed (a live session
    sends a segment every ~2 s; an ended one frees its slot soon after)."""
    upload_timeout: float = 30.0
    """A job upload silent for this long is failed."""
    attempts: int = 3
    """Workers tried per job before it is failed."""
    worker_ping_interval: float = 1.0
    """Seconds between pings to each remote worker."""
    worker_ping_timeout: float = 3.0
    """A remote worker that does not answer a ping this fast is dropped."""
    pipeline_prices: dict[str, int] = attrs.Factory(dict)
    """Wei per second of a live session, by pipeline (paid nodes only)."""
    default_pipeline_price: int = 0
    """Wei per second of a pipeline without its own price."""
    budget: UploadBudget = attrs.Factory(UploadBudget)
    """Limits on the jobs and upload bytes peers make this node hold (module comment)."""
    trim_after_bytes: int = TRIM_AFTER_BYTES
    """Upload bytes given back between two hand-backs of freed memory to the system
    (``lpstream.budget.trim_freed_memory``); 0 never hands back."""
    memory: MemoryBudget = attrs.Factory(lambda: MemoryBudget(limit=0))
    """The node-wide memory budget (``--memory-budget``): over it, new sessions (a job for a
    session that holds no worker yet, a LIVE_OPEN) are refused with 503."""
    live: LiveAccounts = attrs.field(init=False)
    _workers: dict[str, Worker] = attrs.Factory(dict)
    _sessions: dict[tuple[str, str], _Session] = attrs.Factory(dict)
    _ids: Any = attrs.Factory(lambda: itertools.count(1))
    _jobs_in_flight: int = 0
    _connections: set[QuicConnectionHandle] = attrs.Factory(set)
    _trimmed_at: int = 0
    """``budget.bytes_released`` when free memory was last handed back."""

    def __attrs_post_init__(self) -> None:
        self.live = LiveAccounts(
            payments=self.payments,
            prices=dict(self.pipeline_prices),
            default_price=self.default_pipeline_price,
        )
        if self.local is not None:
            self._workers[self.local.worker_id] = self.local
        for name, help_text in [
            ("jobs_total", "Jobs answered, by outcome."),
            ("worker_failures_total", "Jobs a worker failed (then retried elsewhere)."),
            ("transcode_seconds_total", "Wall time of successful jobs."),
        ]:
            self.metrics.counter(name, help_text)
        for name, help_text in [
            ("workers", "Registered workers."),
            ("sessions", "Sessions holding capacity."),
            ("capacity", "Sessions all workers can take."),
        ]:
            self.metrics.gauge(name, help_text)
        self._update_gauges()

    # -- capacity ---------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return sum(w.capacity for w in self._workers.values())

    def _expire_sessions(self, now: float) -> None:
        if self.local is not None:
            self.local.live.expire(now)  # idle live AI sessions free their models
        for key, session in list(self._sessions.items()):
            if now - session.last_used > self.session_ttl or session.worker_id not in self._workers:
                del self._sessions[key]

    def _load(self, worker_id: str) -> int:
        return sum(1 for s in self._sessions.values() if s.worker_id == worker_id)

    def _check_room(self, key: tuple[str, str]) -> None:
        """Raises ``BusyError`` unless ``key``'s session has a worker or one has room (and a
        new session ``ProtocolError`` 503 while the node is over its memory budget)."""
        self._expire_sessions(trio.current_time())
        session = self._sessions.get(key)
        if session is not None and session.worker_id in self._workers:
            return
        self.memory.check("a new session")  # work already running is never cut
        if not self._workers:
            raise BusyError("no workers are registered")
        if all(self._load(w.worker_id) >= w.capacity for w in self._workers.values()):
            raise BusyError(f"busy: all {self.capacity} sessions are in use")

    def _assign(self, key: tuple[str, str], exclude: set[str], need: str = "") -> Worker:
        now = trio.current_time()
        self._expire_sessions(now)
        session = self._sessions.get(key)
        if session is not None and session.worker_id not in exclude:
            session.last_used = now
            return self._workers[session.worker_id]
        candidates = [
            w
            for w in self._workers.values()
            if w.worker_id not in exclude
            and self._load(w.worker_id) < w.capacity
            and (not need or need in w.capabilities())
        ]
        if not candidates:
            if not self._workers:
                raise BusyError("no workers are registered")
            if need and not any(need in w.capabilities() for w in self._workers.values()):
                raise RemoteProtocolError(f"no worker here offers {need}", code=400)
            raise BusyError(f"busy: all {self.capacity} sessions are in use")
        worker = max(candidates, key=lambda w: w.capacity - self._load(w.worker_id))
        self._sessions[key] = _Session(worker_id=worker.worker_id, last_used=now)
        self._update_gauges()
        return worker

    def _update_gauges(self) -> None:
        self.metrics.set("workers", len(self._workers))
        self.metrics.set("sessions", len(self._sessions))
        self.metrics.set("capacity", self.capacity)

    # -- jobs -------------------------------------------------------------------------------

    async def run_job(
        self,
        job: Job,
        source: SegmentBuffer,
        sink: ResultSink | None = None,
        *,
        connection: object = None,
    ) -> Sequence[JobOutput]:
        """Runs a job on a worker, moving it to another worker if one fails.

        A pipeline job's output goes to ``sink`` as the worker produces it; once some has
        left, a failure ends the job instead of moving it. ``connection`` is the QUIC
        connection the job came on: a live session's jobs must come on the one that opened
        it."""
        job.video_profiles()  # range-check the profiles before any work (400 if bad)
        key = (job.stream_id, job.session_id)
        need = f"pipeline:{job.pipeline}" if job.pipeline else ""
        self._check_room(key)  # a busy answer must not have taken the payment first
        sender = ""
        if job.pipeline:
            # Live sessions are paid by time on their control stream: 402 if short.
            self.live_accounts().check_job(
                job.stream_id, job.session_id, job.pipeline, trio.current_time(), connection
            )
        elif self.payments is not None:
            # Paid before any compute: a bad or short payment is a 402 here.
            sender = await self.payments.receive(job.payment, job.session_id)
        tried: set[str] = set()
        last_error: Exception | None = None
        self._jobs_in_flight += 1
        try:
            for _ in range(self.attempts):
                try:
                    worker = self._assign(key, tried, need)
                except BusyError:
                    if last_error is not None:
                        break
                    self.metrics.inc("jobs_total", outcome="busy")
                    raise
                tried.add(worker.worker_id)
                started = trio.current_time()
                try:
                    outputs = await worker.run_job(job, source, sink if job.pipeline else None)
                except (TransportError, JobError, trio.TooSlowError) as exc:
                    if isinstance(exc, JobError) and exc.code < 500:
                        raise
                    last_error = exc
                    self.metrics.inc("worker_failures_total")
                    if sink is not None and sink.started:
                        raise MediaError(f"worker failed mid-answer: {exc}") from None
                    log.warning(
                        "worker %s failed %s/%d: %s; trying another",
                        worker.worker_id,
                        job.stream_id,
                        job.seq,
                        exc,
                    )
                    self._sessions.pop(key, None)
                    continue
                self.metrics.inc("transcode_seconds_total", trio.current_time() - started)
                self.metrics.inc("jobs_total", outcome="ok")
                if self.payments is not None and not job.pipeline:
                    self.payments.bill(sender, job.session_id, sum(o.info.pixels for o in outputs))
                return outputs
            self.metrics.inc("jobs_total", outcome="failed")
            raise MediaError(f"every worker tried failed; last error: {last_error}")
        finally:
            self._jobs_in_flight -= 1

    async def info(self, sender: str = "") -> OrchInfo:
        """What this orchestrator offers; with payments, ticket parameters for ``sender``."""
        self._expire_sessions(trio.current_time())
        price_fields: dict[str, Any] = {}
        if self.payments is not None:
            price = self.payments.price
            price_fields = {
                "price_per_unit": price.numerator,
                "pixels_per_unit": price.denominator,
                "address": self.payments.address,
            }
            if sender:
                params = await self.payments.ticket_params(sender)
                price_fields["ticket_params"] = Payment(params=params, sender=sender).encode()
        return OrchInfo(
            version=lpstream.__version__,
            capabilities=self.capabilities()[:MAX_CAPABILITIES],
            capacity=self.capacity,
            in_use=len(self._sessions),
            pipelines=tuple(
                PipelineOffer(name=name, price_per_second=self.live_accounts().price_of(name))
                for name in self.pipelines()
            )[:MAX_CAPABILITIES],
            **price_fields,
        )

    def live_accounts(self) -> LiveAccounts:
        """The live sessions' billing, with the payments in use now (set after start)."""
        self.live.payments = self.payments
        return self.live

    def capabilities(self) -> tuple[str, ...]:
        """What the registered workers offer together, sorted; transcoding always (a node
        whose workers are still joining takes work as before: 503 until one has room)."""
        offered = {c for w in self._workers.values() for c in w.capabilities()}
        return tuple(sorted(offered | {"transcode:h264"}))

    def pipelines(self) -> list[str]:
        """Names of the live AI pipelines some worker runs."""
        prefix = "pipeline:"
        return [c[len(prefix) :] for c in self.capabilities() if c.startswith(prefix)]

    async def update_live(self, update: LiveUpdate) -> LiveUpdated:
        """Routes a parameter change to the worker holding the session.

        Raises:
            RemoteProtocolError: 404 when no job of the session has reached a worker, or as
                the worker answered.
        """
        session = self._sessions.get((update.stream_id, update.session_id))
        worker = self._workers.get(session.worker_id) if session is not None else None
        if worker is None:
            raise RemoteProtocolError(
                f"session {update.session_id} has no running job to change", code=404
            )
        return await worker.update_live(update.stream_id, update.session_id, dict(update.params))

    def status(self) -> OrchestratorStatus:
        self._expire_sessions(trio.current_time())
        return OrchestratorStatus(
            workers={
                w.worker_id: WorkerStatus(capacity=w.capacity, sessions=self._load(w.worker_id))
                for w in self._workers.values()
            },
            capacity=self.capacity,
            sessions=len(self._sessions),
            jobs_in_flight=self._jobs_in_flight,
            uploads=self.budget.statistics(),
            connections=len(self._connections),
            open_streams=sum(c.statistics().open_streams for c in self._connections),
            pipelines=tuple(self.pipelines()),
            live=self.live_accounts().status(),
            payments=None if self.payments is None else self.payments.status(),
        )

    # -- QUIC -------------------------------------------------------------------------------

    async def handle_connection(self, connection: QuicConnectionHandle) -> None:
        """Serves one QUIC connection until it closes."""
        peer = str(connection.remote_address)
        self._connections.add(connection)
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        stream = await connection.accept_stream()
                    except TransportError:
                        break
                    nursery.start_soon(self._handle_stream, connection, stream, peer)
                nursery.cancel_scope.cancel()
        finally:
            self._connections.discard(connection)

    async def _handle_stream(
        self, connection: QuicConnectionHandle, stream: QuicStream, peer: str
    ) -> None:
        """Serves one stream; whatever happens in it ends it alone (module comment)."""
        try:
            await self._serve_stream(connection, stream, peer)
        except Exception:
            # Everything a peer can cause is answered where it happens: this is a bug. It
            # ends this stream; the connection's other streams go on.
            log.exception("stream %d from %s failed", stream.stream_id, peer)
            await stream.aclose()

    async def _serve_stream(
        self, connection: QuicConnectionHandle, stream: QuicStream, peer: str
    ) -> None:
        try:
            with trio.fail_after(CONTROL_TIMEOUT):
                first = await stream.receive_some(64 * 1024)
        except (TransportError, trio.TooSlowError) as exc:
            log.debug("stream from %s closed before its first frame: %s", peer, exc)
            await stream.aclose()
            return
        if not first:
            await _finish(stream)
            return
        if first[0] == FrameType.JOB:

            async def handler(
                job: Job, source: SegmentBuffer, sink: ResultSink
            ) -> Sequence[JobOutput]:
                return await self.run_job(job, source, sink, connection=connection)

            try:
                await serve_job(
                    Prepended(stream, first),
                    handler,
                    upload_timeout=self.upload_timeout,
                    peer=peer,
                    sign=self.payments.sign_result if self.payments is not None else None,
                    max_upload_size=self.budget.max_segment_size,
                    gate=self.budget.allowance(connection),
                )
                await stream.aclose()
            finally:
                self._give_back_memory()
        else:
            await self._control(connection, stream, first, peer)

    def _give_back_memory(self) -> None:
        """Returns the memory freed by ended uploads to the system once ``trim_after_bytes``
        of them were given back, or when the last job in flight ends (a burst is over).

        Synchronous (tens of ms), so that it runs when the job was cancelled too; at most once
        per ``trim_after_bytes`` while jobs keep coming."""
        freed = self.budget.bytes_released - self._trimmed_at
        if not self.trim_after_bytes or not freed:
            return
        if freed >= self.trim_after_bytes or (
            self.budget.jobs == 0 and freed >= self.trim_after_bytes // 64
        ):
            self._trimmed_at = self.budget.bytes_released
            trim_freed_memory()

    async def _control(
        self, connection: QuicConnectionHandle, stream: QuicStream, first: bytes, peer: str
    ) -> None:
        channel = MessageStream()
        channel.receive_data(first)
        worker: RemoteWorker | None = None
        try:
            while worker is None:
                while (message := channel.next_message()) is not None:
                    if isinstance(message, GetInfo):
                        await stream.send_all(channel.send(await self.info(message.sender)))
                    elif isinstance(message, Ping):
                        await stream.send_all(channel.send(Pong(nonce=message.nonce)))
                    elif isinstance(message, LiveOpen):
                        self.memory.check("a live AI session")
                        await serve_live_control(
                            self.live_accounts(),
                            stream,
                            channel,
                            message,
                            self.update_live,
                            peer=peer,
                            owner=connection,
                        )
                        return
                    elif isinstance(message, WorkerHello):
                        worker = await self._register(connection, stream, channel, message, peer)
                        if worker is None:
                            return
                        break
                    else:
                        raise RemoteProtocolError(
                            f"unexpected {type(message).__name__} on a control stream"
                        )
                if worker is not None:
                    break
                with trio.move_on_after(CONTROL_TIMEOUT):
                    data = await stream.receive_some(64 * 1024)
                    if not data:
                        # The peer is done asking: check it ended on a whole frame, then
                        # our FIN follows every answer (in ``finally``).
                        channel.receive_eof()
                        channel.next_message()
                        return
                    channel.receive_data(data)
                    continue
                return  # an idle control stream
            await self._watch_worker(worker, stream, channel)
        except LpstreamError as exc:
            if isinstance(exc, TransportError):
                # Routine for an info or ping stream; worth a line only for a worker's.
                log.log(
                    logging.INFO if worker is not None else logging.DEBUG,
                    "control stream from %s ended: %s",
                    peer,
                    exc,
                )
                return
            code = exc.code if isinstance(exc, ProtocolError) else 503
            log.warning("control stream from %s: %s", peer, exc)
            with contextlib.suppress(
                TransportError, trio.BrokenResourceError, trio.ClosedResourceError
            ):
                await stream.send_all(channel.send(Error(code=code, message=str(exc)[:1000])))
        except BaseException:
            stream.reset()  # cancelled, or a bug (``_handle_stream`` logs it): no clean end
            raise
        finally:
            if worker is not None:
                self._workers.pop(worker.worker_id, None)
                self._update_gauges()
                log.warning(
                    "worker %s (%s) left; its jobs move to other workers", worker.worker_id, peer
                )
                connection.close()
            await _finish(stream)

    async def _watch_worker(
        self, worker: RemoteWorker, stream: QuicStream, channel: MessageStream
    ) -> None:
        """Pings a registered worker; one that stops answering is dropped at once.

        A killed worker sends nothing (QUIC is UDP), so without this its jobs would hang
        until the QUIC idle timeout. Returns when the worker is gone.
        """
        await ping_until_silent(
            stream,
            channel,
            interval=self.worker_ping_interval,
            answer_within=self.worker_ping_timeout,
            peer=f"worker {worker.worker_id}",
            connection=worker.connection,
        )

    async def _register(
        self,
        connection: QuicConnectionHandle,
        stream: QuicStream,
        channel: MessageStream,
        hello: WorkerHello,
        peer: str,
    ) -> RemoteWorker | None:
        if not self.secret or not hmac.compare_digest(
            hello.secret.encode("utf-8"), self.secret.encode("utf-8")
        ):
            log.warning("worker at %s refused: wrong orchestrator secret", peer)
            await stream.send_all(
                channel.send(Error(code=403, message="wrong orchestrator secret"))
            )
            await stream.send_eof()
            await trio.sleep(0.2)  # let the answer leave before the connection closes
            connection.close(error_code=403, reason="wrong orchestrator secret")
            return None
        worker_id = f"remote-{next(self._ids)}"
        worker = RemoteWorker(
            worker_id=worker_id,
            capacity=max(1, hello.capacity),
            connection=connection,
            offered=hello.capabilities,
        )
        self._workers[worker_id] = worker
        self._update_gauges()
        await stream.send_all(channel.send(WorkerWelcome(worker_id=worker_id)))
        log.info("worker %s registered from %s with capacity %d", worker_id, peer, worker.capacity)
        return worker


async def _finish(stream: QuicStream) -> None:
    """Ends a stream we answered on: our FIN after everything sent (a reset could make the
    peer drop an answer it has not read yet), then the receiving side is let go."""
    with contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_eof()
    await stream.aclose()
