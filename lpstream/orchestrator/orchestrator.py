"""The orchestrator role: takes jobs over QUIC, hands them to workers, answers with renditions.

How this works:

* ``serve`` serves QUIC with the orchestrator's identity (``lpstream.orchestrator.identity``:
  the key and certificate it keeps in its data dir), so its address can be pinned
  (``quic://host:port#sha256=…``); a paid orchestrator signs the certificate's fingerprint
  with its ticket key in its ORCH_INFO (``lpstream.orchestrator.certificate_claim``).
* Every QUIC connection is served by ``handle_connection``. Each stream a peer opens starts
  with one frame whose type says what the stream is: JOB (a gateway's segment), or a control
  message: GET_INFO or PING, LIVE_OPEN, or WORKER_HELLO (a remote worker registering; it must
  carry the orchestrator's secret, otherwise it gets ERROR 403, after a delay that grows with
  each wrong secret from its address, and the connection is closed).
* Workers are the in-process ``LocalWorker`` and ``RemoteWorker``s (one per registered
  connection), kept with the sessions pinned to them in a ``WorkerPool``
  (``lpstream.orchestrator.workers``): capacity is counted in the work a session costs, pixels
  per second (``lpstream.orchestrator.capacity``; a new session's is estimated from its JOB and
  the first SPS of its upload), and a new session that no worker has room for is answered
  503 at once.
* Control streams (info, pings, live AI control, worker sign-up) are served by
  ``lpstream.orchestrator.control``.
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
* A job naming a ``capability`` is a batch AI job (text-to-image, llm...): it must name a
  model some worker runs and the orchestrator prices (``lpstream.orchestrator.ai_jobs``; 400
  otherwise), is paid in the JOB like a segment, and its outputs stream back as the worker
  produces them; it is billed the units the worker reports times the model's price, and moves
  to another worker when one fails before any output has left.
* Faults stay in their stream: whatever a peer sends is answered with ERROR on that stream
  (logged once, at warning; a peer that leaves, at debug), and even an unexpected error in
  one stream's task (a bug) ends that stream only, never the connection's other streams.
  Every answer is followed by our FIN, never by a reset, so a peer that sends its request and
  FIN at once always reads the whole answer.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import attrs
import trio

import lpstream
from lpstream.budget import MemoryBudget, trim_freed_memory
from lpstream.errors import BusyError, MediaError, RemoteProtocolError, TransportError
from lpstream.jobs import JobError, JobOutput, Prepended, ResultSink, serve_job
from lpstream.metrics import Metrics
from lpstream.orchestrator.address import PinnedAddress, service_url
from lpstream.orchestrator.ai_jobs import AiJobRouter, price_of
from lpstream.orchestrator.ai_status import ai_status
from lpstream.orchestrator.capacity import SessionCost, upload_picture
from lpstream.orchestrator.certificate_claim import sign_certificate
from lpstream.orchestrator.control import CONTROL_TIMEOUT, finish_stream, serve_control
from lpstream.orchestrator.hello_backoff import HelloBackoff
from lpstream.orchestrator.identity import OrchestratorIdentity
from lpstream.orchestrator.live import LiveAccounts
from lpstream.orchestrator.orchestrator_metrics import (
    export_orchestrator_metrics,
    timed_payment_check,
)
from lpstream.orchestrator.payments import PaymentReceiver
from lpstream.orchestrator.status import AiModelStatus, OrchestratorStatus, WorkerStatus
from lpstream.orchestrator.uploads import TRIM_AFTER_BYTES, UploadBudget
from lpstream.orchestrator.workers import RemoteWorker, SessionKey, Worker, WorkerPool
from lpstream.quic import QuicConnectionHandle, QuicStream, serve_quic
from lpstream.trickle import SegmentBuffer
from lpstream.wire import (
    MAX_CAPABILITIES,
    AiModelOffer,
    FrameType,
    Job,
    LiveUpdate,
    LiveUpdated,
    OrchInfo,
    PipelineOffer,
    WorkerHello,
)
from lpstream.worker.local import LocalWorker
from payments.pm import Payment, Wei

__all__ = ["CONTROL_TIMEOUT", "Orchestrator", "RemoteWorker", "Worker"]

log = logging.getLogger("lpstream.orchestrator")

WARM = "warm:"
"""Capability prefix of a pipeline a worker keeps loaded (ORCH_INFO lists them in ``warm``)."""


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
    identity: OrchestratorIdentity | None = None
    """The QUIC key and certificate it serves with (``load_identity``); ``serve`` makes one
    for the run when None."""
    hello_backoff: HelloBackoff = attrs.Factory(HelloBackoff)
    """How fast one address may try worker secrets (``--worker-hello-backoff``)."""
    ai_prices: Sequence[AiModelOffer] = ()
    """Its prices for batch AI models (``--ai-models``)."""
    ai: AiJobRouter = attrs.field(init=False)
    """The batch AI models offered, and their jobs' placement."""
    service_address: PinnedAddress | None = attrs.field(default=None, init=False)
    """Where ``serve`` listens, pinned to ``identity``; None before."""
    live: LiveAccounts = attrs.field(init=False)
    pool: WorkerPool = attrs.field(init=False, factory=WorkerPool)
    """The workers and the sessions pinned to them."""
    _ids: Iterator[int] = attrs.Factory(lambda: itertools.count(1))
    _jobs_in_flight: int = 0
    _connections: set[QuicConnectionHandle] = attrs.Factory(set)
    _trimmed_at: int = 0
    """``budget.bytes_released`` when free memory was last handed back."""

    def __attrs_post_init__(self) -> None:
        self.ai = AiJobRouter(prices=tuple(self.ai_prices), paid=self.payments is not None)
        self.live = LiveAccounts(
            payments=self.payments,
            prices=dict(self.pipeline_prices),
            default_price=self.default_pipeline_price,
            metrics=self.metrics,
        )
        if self.local is not None:
            self.pool.add(self.local)
        export_orchestrator_metrics(self)
        self._update_gauges()

    # -- capacity ---------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.pool.capacity

    def _expire_sessions(self, now: float) -> None:
        if self.local is not None:
            self.local.live.expire(now)  # idle live AI sessions free their models
        self.pool.expire(now, self.session_ttl)

    async def _check_room(
        self, key: SessionKey, job: Job, source: SegmentBuffer, need: str
    ) -> SessionCost | None:
        """Raises ``BusyError`` unless ``key``'s session has a worker or one has room for
        what it costs (and a new session ``ProtocolError`` 503 while the node is over its
        memory budget); returns a new session's cost (None for a pinned one)."""
        self._expire_sessions(trio.current_time())
        if self.pool.holder(key) is not None:
            return None
        self.memory.check("a new session")  # work already running is never cut
        cost = SessionCost.of_job(job, await upload_picture(source))
        self.pool.check_room(cost, trio.current_time(), need)
        return cost

    def _assign(
        self, key: SessionKey, exclude: set[str], need: str, cost: SessionCost | None
    ) -> Worker:
        now = trio.current_time()
        self._expire_sessions(now)
        pinned = self.pool.holder(key)
        worker = self.pool.assign(key, now, exclude, need, cost)
        if pinned is None or pinned.worker_id in exclude:  # a new session was pinned
            self._update_gauges()
        return worker

    def add_remote_worker(
        self, connection: QuicConnectionHandle, hello: WorkerHello
    ) -> RemoteWorker:
        """Registers the worker that sent ``hello`` on ``connection`` (its secret checked)."""
        worker = RemoteWorker(
            worker_id=f"remote-{next(self._ids)}",
            capacity=max(1, hello.capacity),
            connection=connection,
            offered=hello.capabilities,
            ai_offered=hello.ai_models,
        )
        self.pool.add(worker)
        self._update_gauges()
        return worker

    def remove_worker(self, worker_id: str) -> None:
        """Forgets a worker that left; its sessions move to other workers."""
        self.pool.remove(worker_id)
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.metrics.set("workers", len(self.pool))
        self.metrics.set("sessions", self.pool.sessions)
        self.metrics.set("capacity", self.capacity)
        self.metrics.set("capacity_pixels_per_second", self.pool.work_capacity)
        self.metrics.set("work_pixels_per_second", self.pool.work)

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
        if job.capability:
            return await self._run_ai_job(job, source, sink)
        job.video_profiles()  # range-check the profiles before any work (400 if bad)
        key = (job.stream_id, job.session_id)
        need = f"pipeline:{job.pipeline}" if job.pipeline else ""
        # A busy answer must not have taken the payment first.
        cost = await self._check_room(key, job, source, need)
        sender = ""
        if job.pipeline:
            # Live sessions are paid by time on their control stream: 402 if short.
            self.live_accounts().check_job(
                job.stream_id, job.session_id, job.pipeline, trio.current_time(), connection
            )
        elif self.payments is not None:
            # Paid before any compute: a bad or short payment is a 402 here.
            with timed_payment_check(self.metrics):
                sender = await self.payments.receive(job.payment, job.session_id)
        outputs, seconds = await self._on_workers(
            lambda tried: self._assign(key, tried, need, cost),
            lambda worker: self._run_on(worker, key, job, source, sink),
            f"{job.stream_id}/{job.seq}",
            sink,
            failed=MediaError,
            moved=lambda: self.pool.release(key),
        )
        self.metrics.inc("transcode_seconds_total", seconds)
        if self.payments is not None and not job.pipeline:
            self.payments.bill(sender, job.session_id, sum(o.info.pixels for o in outputs))
        return outputs

    async def _on_workers(
        self,
        pick: Callable[[set[str]], Worker],
        run: Callable[[Worker], Awaitable[Sequence[JobOutput]]],
        what: str,
        sink: ResultSink | None,
        *,
        failed: Callable[[str], Exception],
        moved: Callable[[], None] = lambda: None,
    ) -> tuple[Sequence[JobOutput], float]:
        """Runs a job on the worker ``pick`` gives (it is told those tried), moving it to
        another after a worker's failure (``moved`` then) while none of its output has left;
        returns the outputs and the seconds the last worker took.

        Raises:
            BusyError: no worker has room (before any was tried).
            JobError: the job's own error (under 500), as the worker answered it.
            Exception: ``failed(reason)``: a worker failed mid-answer, or every worker tried.
        """
        tried: set[str] = set()
        last_error: Exception | None = None
        self._jobs_in_flight += 1
        try:
            for _ in range(self.attempts):
                try:
                    worker = pick(tried)
                except BusyError:
                    if last_error is not None:
                        break
                    self.metrics.inc("jobs_total", outcome="busy")
                    raise
                tried.add(worker.worker_id)
                started = trio.current_time()
                try:
                    outputs = await run(worker)
                except (TransportError, JobError, trio.TooSlowError) as exc:
                    if isinstance(exc, JobError) and exc.code < 500:
                        raise
                    last_error = exc
                    self.metrics.inc("worker_failures_total")
                    if sink is not None and sink.started:
                        raise failed(f"worker failed mid-answer: {exc}") from None
                    log.warning(
                        "worker %s failed %s: %s; trying another", worker.worker_id, what, exc
                    )
                    moved()
                    continue
                self.metrics.inc("jobs_total", outcome="ok")
                return outputs, trio.current_time() - started
            self.metrics.inc("jobs_total", outcome="failed")
            raise failed(f"every worker tried failed; last error: {last_error}")
        finally:
            self._jobs_in_flight -= 1

    async def _run_ai_job(
        self, job: Job, source: SegmentBuffer, sink: ResultSink | None
    ) -> Sequence[JobOutput]:
        """Runs a batch AI job (module comment): paid before any work, billed its units."""
        self.ai.paid = self.payments is not None
        offer = self.ai.offer(self.pool, job.capability, job.model_id)  # 400: not offered
        self.memory.check("a new batch AI job")  # 503 past the node's memory budget
        sender = ""
        if self.payments is not None:
            with timed_payment_check(self.metrics):
                sender = await self.payments.receive(job.payment, job.session_id)

        async def run(worker: Worker) -> Sequence[JobOutput]:
            with self.ai.running(worker, job.capability, job.model_id):
                return await worker.run_job(job, source, sink)

        outputs, seconds = await self._on_workers(
            lambda tried: self.ai.pick(self.pool, job.capability, job.model_id, tried),
            run,
            f"{job.capability} {job.model_id}",
            sink,
            # 502/503: a gateway that has passed no output byte on may go elsewhere.
            failed=lambda reason: RemoteProtocolError(
                reason, code=502 if sink is not None and sink.started else 503
            ),
        )
        self.metrics.inc("ai_job_seconds_total", seconds, capability=job.capability)
        units = sum(o.info.pixels for o in outputs)
        self.metrics.inc("ai_units_total", units, capability=job.capability)
        if self.payments is not None and units:
            self.payments.charge(sender, job.session_id, price_of(offer) * units)
        return outputs

    async def _run_on(
        self,
        worker: Worker,
        key: SessionKey,
        job: Job,
        source: SegmentBuffer,
        sink: ResultSink | None,
    ) -> Sequence[JobOutput]:
        """Runs ``job`` on ``worker``; the pool hears while it runs and what it measured."""
        self.pool.job_started(key)
        outputs: Sequence[JobOutput] = ()
        try:
            outputs = await worker.run_job(job, source, sink if job.pipeline else None)
            return outputs
        finally:
            self.pool.job_ended(key, trio.current_time(), [o.info for o in outputs])
            self._update_gauges()

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
            price_fields["certificate_signature"] = self._sign_certificate()
        return OrchInfo(
            version=lpstream.__version__,
            capabilities=tuple(c for c in self.capabilities() if not c.startswith(WARM))[
                :MAX_CAPABILITIES
            ],
            warm=tuple(self.warm_pipelines())[:MAX_CAPABILITIES],
            ai_models=self.ai.offers(self.pool)[:MAX_CAPABILITIES],
            capacity=self.capacity,
            in_use=self.pool.in_use,
            pipelines=tuple(
                PipelineOffer(name=name, price_per_second=self.live_accounts().price_of(name))
                for name in self.pipelines()
            )[:MAX_CAPABILITIES],
            **price_fields,
        )

    def _sign_certificate(self) -> bytes:
        """Its certificate's fingerprint signed with its ticket key; empty without either."""
        payments, identity = self.payments, self.identity
        if payments is None or not payments.signing_key or identity is None:
            return b""
        return sign_certificate(payments.signing_key, identity.fingerprint)  # tens of us

    def live_accounts(self) -> LiveAccounts:
        """The live sessions' billing, with the payments in use now (set after start)."""
        self.live.payments = self.payments
        return self.live

    def capabilities(self) -> tuple[str, ...]:
        """What the registered workers offer together, sorted; transcoding always (a node
        whose workers are still joining takes work as before: 503 until one has room)."""
        return self.pool.capabilities()

    def pipelines(self) -> list[str]:
        """Names of the live AI pipelines some worker runs."""
        prefix = "pipeline:"
        return [c[len(prefix) :] for c in self.capabilities() if c.startswith(prefix)]

    def warm_pipelines(self) -> list[str]:
        """Names of the live AI pipelines some worker keeps loaded (``--warm``)."""
        return [c[len(WARM) :] for c in self.capabilities() if c.startswith(WARM)]

    async def update_live(self, update: LiveUpdate) -> LiveUpdated:
        """Routes a parameter change to the worker holding the session.

        Raises:
            RemoteProtocolError: 404 when no job of the session has reached a worker, or as
                the worker answered.
        """
        worker = self.pool.holder((update.stream_id, update.session_id))
        if worker is None:
            raise RemoteProtocolError(
                f"session {update.session_id} has no running job to change", code=404
            )
        return await worker.update_live(update.stream_id, update.session_id, dict(update.params))

    def status(self) -> OrchestratorStatus:
        self._expire_sessions(trio.current_time())
        return OrchestratorStatus(
            workers={
                w.worker_id: WorkerStatus(capacity=w.capacity, sessions=self.pool.load(w.worker_id))
                for w in self.pool
            },
            capacity=self.capacity,
            sessions=self.pool.sessions,
            capacity_pixels_per_second=self.pool.work_capacity,
            work_pixels_per_second=self.pool.work,
            jobs_in_flight=self._jobs_in_flight,
            uploads=self.budget.statistics(),
            connections=len(self._connections),
            open_streams=sum(c.statistics().open_streams for c in self._connections),
            pipelines=tuple(self.pipelines()),
            live=self.live_accounts().status(),
            worker_hellos=self.hello_backoff.statistics(),
            service=None if self.service_address is None else service_url(self.service_address),
            payments=None if self.payments is None else self.payments.status(),
            ai_models=tuple(
                AiModelStatus(
                    capability=o.capability,
                    model_id=o.model_id,
                    price_per_unit=Wei(o.price_per_unit),
                    pixels_per_unit=o.pixels_per_unit,
                    warm=o.warm,
                    capacity=o.capacity,
                )
                for o in self.ai.offers(self.pool)
            ),
            ai_jobs_in_flight=self.ai.jobs_in_flight(),
            ai=None if self.local is None else ai_status(self.local.live, self.local.batch),
        )

    # -- QUIC -------------------------------------------------------------------------------

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[PinnedAddress] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serves QUIC on ``host:port`` with its identity until cancelled.

        Started with the bound address, pinned to the identity's certificate (also kept in
        ``service_address``).
        """
        if self.identity is None:
            self.identity = OrchestratorIdentity.generate()
        async with trio.open_nursery() as nursery:
            bound_host, bound_port = await nursery.start(
                functools.partial(
                    serve_quic,
                    host,
                    port,
                    self.handle_connection,
                    configuration=self.identity.server_configuration(),
                )
            )
            self.service_address = PinnedAddress(bound_host, bound_port, self.identity.fingerprint)
            task_status.started(self.service_address)

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
            await finish_stream(stream)
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
            await serve_control(self, connection, stream, first, peer)

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
