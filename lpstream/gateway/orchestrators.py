"""The gateway's orchestrators: QUIC connections, session stickiness and moving on failure.

Each orchestrator address gets one QUIC connection, dialled on first use and again after it
fails, held open by a task in the pool's nursery. A stream's session sticks to the orchestrator
that served it last; when a job fails with a server-side error (5xx, a broken connection, a
timeout) the orchestrator is suspended for ``suspension`` seconds and the session moves to the
next one, so the gateway's retry of the same segment goes elsewhere.

Every result is verified before it is used or paid for (``lpstream.verification``): when the
orchestrator is paid, its signature over the renditions must recover to the address its
tickets are made out to; and each rendition is decoded and its frames and pixels compared
with the claims. A failed check is treated like a failed job: suspension, retry elsewhere,
nothing settled.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import AsyncIterator, Callable, Sequence
from fractions import Fraction
from functools import partial

import attrs
import trio

from lpstream.chainwatch import ChainWatch
from lpstream.config import HostPort
from lpstream.errors import BusyError, LpstreamError, TransportError
from lpstream.gateway.discovery import (
    DiscoveredOrchestrator,
    OrchestratorSource,
    refresh_infos,
    refusal,
)
from lpstream.gateway.payments import PaymentSender, SegmentPayment
from lpstream.gateway.selection import Candidate, Selector
from lpstream.gateway.status import OrchestratorFacts
from lpstream.gateway.stream import RenditionSegment, SegmentJob
from lpstream.jobs import JobError, Relay, request_job
from lpstream.keepalive import keep_alive
from lpstream.quic import QuicConnectionHandle, QuicStream, open_quic_connection
from lpstream.taskgroups import one_error
from lpstream.trickle import SegmentBuffer
from lpstream.verification import VerificationError, verify_result
from lpstream.wire import Error, GetInfo, Job, MessageStream, OrchInfo, ProfileSpec
from payments.pm import SenderInfo, Wei

__all__ = ["OrchestratorPool"]

log = logging.getLogger("lpstream.gateway")


@attrs.define
class _Orchestrator:
    address: HostPort
    connection: QuicConnectionHandle | None = None
    connecting: trio.Event | None = None
    suspended_until: float = -math.inf
    failures: int = 0
    jobs: int = 0
    stake: int = 0
    score: float | None = None
    refused: str = ""
    """Why the last info check ruled it out (capability, price, ticket parameters); "" if not."""
    answered: bool = True
    """Whether it answered the last info check within the deadline."""
    full: bool = False
    """Whether its last info said every session was in use."""
    pipelines: dict[str, int] | None = None
    """Live AI pipelines its last info offered, with their price per second (None: no info
    yet)."""


@attrs.define
class OrchestratorPool:
    """Implements the gateway's ``SegmentTranscoder`` over QUIC."""

    addresses: Sequence[HostPort]
    payments: PaymentSender | None = None
    """Pays for each segment; None off-chain."""
    watch: ChainWatch | None = None
    """The chain as last read (needed with payments)."""
    response_timeout: float = 8.0
    """Seconds from the end of a segment's upload to a complete answer."""
    suspension: float = 10.0
    """Seconds a failed orchestrator is passed over (the selector also counts refreshes)."""
    selector: Selector = attrs.Factory(lambda: Selector(rng=random.Random()))
    """Draws an orchestrator for a new or moved session (stake, price, random; latency)."""
    sources: Sequence[OrchestratorSource] = ()
    """Discovery sources refreshed every ``refresh_interval``; none keeps ``addresses``."""
    refresh_interval: float = 5.0
    """Seconds between discovery refreshes (and suspension countdown steps)."""
    verify: bool = True
    """Decode every rendition and compare it with the orchestrator's claims before using it."""
    capability: str = "transcode:h264"
    """What an orchestrator's info must list to be offered work."""
    info_deadline: float = 0.5
    """Seconds the parallel info check waits for answers (go-livepeer's discovery timeout)."""
    max_price_per_second: int | None = None
    """Wei per second the gateway pays at most for a live AI session; None for no limit."""
    _orchestrators: list[_Orchestrator] = attrs.field(init=False)
    _sessions: dict[str, int] = attrs.Factory(dict)
    _nursery: trio.Nursery | None = None
    _sender_info_at: tuple[int, SenderInfo] | None = None

    def __attrs_post_init__(self) -> None:
        self._orchestrators = [_Orchestrator(address=a) for a in self.addresses]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Holds the connections; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._check_infos()
            nursery.start_soon(self._refresh)
            task_status.started()
            await trio.sleep_forever()

    def status(self) -> list[OrchestratorFacts]:
        now = trio.current_time()
        return [
            OrchestratorFacts(
                address=str(o.address),
                connected=o.connection is not None,
                suspended=o.suspended_until > now,
                failures=o.failures,
                jobs=o.jobs,
                refused=o.refused,
                answered=o.answered,
                full=o.full,
                pipelines=None
                if o.pipelines is None
                else {name: Wei(price) for name, price in o.pipelines.items()},
            )
            for o in self._orchestrators
        ]

    def _offers(self, orch: _Orchestrator, pipeline: str) -> str:
        """Why ``orch`` cannot run ``pipeline`` ("" if it can, or if it is not known yet)."""
        if not pipeline or orch.pipelines is None:
            return ""
        price = orch.pipelines.get(pipeline)
        if price is None:
            return f"does not offer pipeline {pipeline!r}"
        if self.max_price_per_second is not None and price > self.max_price_per_second:
            return f"asks {price} wei/s for {pipeline!r}, above {self.max_price_per_second}"
        return ""

    def _pick(self, session: str, pipeline: str = "") -> int:
        """The session's orchestrator if it is still good, else a fresh draw by the selector
        among those that can (and, for a live AI session, offer ``pipeline``)."""
        if not self._orchestrators:
            raise BusyError("no orchestrators configured or discovered")
        now = trio.current_time()

        def usable(o: _Orchestrator) -> bool:
            return (
                not o.refused
                and not self._offers(o, pipeline)
                and o.suspended_until <= now
                and not self.selector.suspended(str(o.address))
            )

        current = self._sessions.get(session)
        if (
            current is not None
            and current < len(self._orchestrators)
            and usable(self._orchestrators[current])
        ):
            return current
        offered = [
            o for o in self._orchestrators if not o.refused and not self._offers(o, pipeline)
        ]
        if not offered:
            reasons = "; ".join(
                f"{o.address}: {o.refused or self._offers(o, pipeline)}"
                for o in self._orchestrators
            )
            raise BusyError(f"no orchestrator can take the work ({reasons})")
        usable_now = [o for o in offered if usable(o)]
        # Those that answered the info check with free sessions first; the others only when
        # nobody better is left.
        preferred = [o for o in usable_now if o.answered and not o.full] or usable_now
        candidates = [
            Candidate(key=str(o.address), stake=o.stake, score=o.score) for o in preferred
        ]
        chosen = self.selector.select(candidates)
        if chosen is not None:
            index = next(
                i for i, o in enumerate(self._orchestrators) if str(o.address) == chosen.key
            )
        else:
            # Everything is suspended: try the one whose suspension ends first.
            first = min(offered, key=lambda o: o.suspended_until)
            index = self._orchestrators.index(first)
        self._sessions[session] = index
        return index

    async def _refresh(self) -> None:
        """Counts suspensions down, re-runs discovery and the info check."""
        while True:
            await trio.sleep(self.refresh_interval)
            self.selector.refreshed()
            await self._discover()
            await self._check_infos()

    async def _check_infos(self) -> None:
        """Asks every orchestrator for its info at once and rules out those that cannot work.

        Answers later than ``info_deadline`` are left out of this round (the orchestrator is
        drawn only when no answering one is usable); those lacking the capability, above the
        maximum price or with unusable ticket parameters are not offered work until a later
        check says otherwise. Accepted ticket parameters are kept for the next payments.
        """
        if not self._orchestrators:
            return
        by_address = {o.address: o for o in self._orchestrators}
        sender = self.payments.address if self.payments is not None else ""

        async def ask(address: HostPort) -> OrchInfo:
            with one_error():
                connection = await self._connection(by_address[address])
            return await _get_info(connection, sender)

        infos = await refresh_infos(by_address, ask, deadline=self.info_deadline)
        validate: Callable[[HostPort, OrchInfo], None] | None = None
        snapshot = self.watch.snapshot if self.watch is not None else None
        sender_info: SenderInfo | None = None
        if self.payments is not None and snapshot is not None:
            try:
                sender_info = await self._sender_info()
            except LpstreamError as exc:  # ticket parameters are checked again at payment
                log.warning("cannot read this gateway's deposit and reserve: %s", exc)
        if self.payments is not None and snapshot is not None and sender_info is not None:
            payments, funds = self.payments, sender_info

            def validate(address: HostPort, info: OrchInfo) -> None:
                payments.accept_params(
                    str(address),
                    info.ticket_params,
                    latest_block=snapshot.latest_block,
                    sender_info=funds,
                )

        max_price = self.payments.max_price if self.payments is not None else None
        for address, orch in by_address.items():
            info = infos.get(address)
            orch.answered = info is not None
            refused = orch.refused  # no answer in time: the last verdict stands
            if info is not None:
                refused = refusal(
                    address,
                    info,
                    capability=self.capability,
                    max_price=max_price,
                    validate_params=validate,
                    suspended=lambda _: False,  # suspension is checked at each draw
                )
            if refused != orch.refused:
                if refused:
                    log.warning("orchestrator %s is not offered work: %s", address, refused)
                else:
                    log.info("orchestrator %s is offered work again", address)
            orch.refused = refused
            orch.full = info is not None and 0 < info.capacity <= info.in_use
            if info is not None:
                orch.pipelines = {p.name: p.price_per_second for p in info.pipelines}

    async def _discover(self) -> None:
        """With discovery sources, updates the orchestrator list."""
        if not self.sources:
            return
        found: dict[str, DiscoveredOrchestrator] = {}
        for source in self.sources:
            try:
                for d in await source.discover():
                    found.setdefault(str(d.address), d)
            except LpstreamError as exc:
                log.warning("discovery failed: %s", exc)
        if not found:
            return  # keep what we had rather than stopping work
        known = {str(o.address): o for o in self._orchestrators}
        for key, d in found.items():
            if key in known:
                known[key].stake, known[key].score = d.stake, d.score
            else:
                self._orchestrators.append(
                    _Orchestrator(address=d.address, stake=d.stake, score=d.score)
                )
                log.info("discovered orchestrator %s", key)
        gone = [o for o in self._orchestrators if str(o.address) not in found]
        for o in gone:
            log.info("orchestrator %s is no longer offered", o.address)
            if o.connection is not None:
                o.connection.close()
        if gone:
            self._orchestrators = [o for o in self._orchestrators if o not in gone]
            self._sessions.clear()
        self.selector.retain(found)

    async def _connection(self, orch: _Orchestrator) -> QuicConnectionHandle:
        while orch.connection is None:
            if orch.connecting is not None:
                await orch.connecting.wait()
                if orch.connection is None:
                    raise TransportError(f"cannot connect to orchestrator {orch.address}")
                break
            orch.connecting = trio.Event()
            try:
                assert self._nursery is not None, "OrchestratorPool.run has not started"
                orch.connection = await self._nursery.start(self._hold, orch)
            finally:
                orch.connecting.set()
                orch.connecting = None
        return orch.connection

    async def _hold(
        self, orch: _Orchestrator, *, task_status: trio.TaskStatus[QuicConnectionHandle]
    ) -> None:
        started = False
        try:
            async with open_quic_connection(orch.address.host, orch.address.port) as conn:
                task_status.started(conn)
                started = True
                # A killed or frozen orchestrator sends nothing: pings find it within
                # ``answer_within`` and closing the connection fails its jobs at once.
                await keep_alive(conn, peer=f"orchestrator {orch.address}")
                await conn.wait_closed()
        except TransportError as exc:
            log.warning("orchestrator %s: %s", orch.address, exc)
            if not started:
                raise  # the dialler gets the error; after that, the next job dials again
        finally:
            orch.connection = None

    async def _sender_info(self) -> SenderInfo:
        assert self.watch is not None and self.payments is not None
        snapshot = self.watch.snapshot
        block = snapshot.latest_block if snapshot else -1
        if self._sender_info_at is None or self._sender_info_at[0] != block:
            info: SenderInfo = await self.watch.call(
                self.watch.chain.sender_info, self.payments.address
            )
            self._sender_info_at = (block, info)
        return self._sender_info_at[1]

    async def _ticket_params(
        self, orch: _Orchestrator, connection: QuicConnectionHandle
    ) -> tuple[int, SenderInfo]:
        """Makes sure ``orch``'s ticket parameters are fresh; (latest block, our funds)."""
        assert self.payments is not None and self.watch is not None
        snapshot = self.watch.snapshot
        if snapshot is None:
            raise BusyError("the chain has not been read yet")
        key = str(orch.address)
        sender_info = await self._sender_info()
        if self.payments.needs_params(key, snapshot.latest_block):
            info = await _get_info(connection, self.payments.address)
            self.payments.accept_params(
                key,
                info.ticket_params,
                latest_block=snapshot.latest_block,
                sender_info=sender_info,
            )
        return snapshot.latest_block, sender_info

    async def open_live_control(self, session: str, pipeline: str) -> tuple[str, QuicStream]:
        """Opens a stream to the orchestrator ``session`` is (or now gets) pinned to, one
        that offers ``pipeline``; returns its key and the stream.

        Pipelines come and go with an orchestrator's workers, so when none is known to offer
        ``pipeline`` the infos are asked for again at once rather than at the next refresh."""
        try:
            index = self._pick(session, pipeline)
        except BusyError:
            if not any(self._offers(o, pipeline) for o in self._orchestrators):
                raise
            await self._check_infos()
            index = self._pick(session, pipeline)
        orch = self._orchestrators[index]
        with one_error():
            connection = await self._connection(orch)
        return str(orch.address), await connection.open_stream()

    async def live_price(self, orchestrator: str, pipeline: str) -> int:
        """``orchestrator``'s price per second for ``pipeline``, from a fresh ORCH_INFO.

        Raises:
            BusyError: it does not offer the pipeline.
        """
        orch = self._find(orchestrator)
        with one_error():
            connection = await self._connection(orch)
        info = await _get_info(connection, self.payments.address if self.payments else "")
        orch.pipelines = {p.name: p.price_per_second for p in info.pipelines}
        problem = self._offers(orch, pipeline)
        if problem:
            raise BusyError(f"orchestrator {orchestrator} {problem}")
        for offer in info.pipelines:
            if offer.name == pipeline:
                return offer.price_per_second
        raise BusyError(f"orchestrator {orchestrator} does not offer pipeline {pipeline!r}")

    def live_credit(self, orchestrator: str, session: str) -> Fraction:
        return self.payments.credit(orchestrator, session) if self.payments else Fraction(0)

    def live_charge(self, orchestrator: str, session: str, amount: Fraction) -> None:
        if self.payments is not None:
            self.payments.charge(orchestrator, session, amount)

    def _find(self, orchestrator: str) -> _Orchestrator:
        orch = next((o for o in self._orchestrators if str(o.address) == orchestrator), None)
        if orch is None:
            raise BusyError(f"orchestrator {orchestrator} is gone")
        return orch

    async def live_payment(self, orchestrator: str, session: str, ahead: Fraction) -> bytes:
        """Tickets that bring ``session``'s credit with ``orchestrator`` up to ``ahead`` wei
        (empty off-chain, or when the credit is already there)."""
        if self.payments is None or self.watch is None:
            return b""
        orch = self._find(orchestrator)
        with one_error():
            connection = await self._connection(orch)
        latest_block, sender_info = await self._ticket_params(orch, connection)
        return self.payments.live_payment(
            orchestrator, session, ahead, latest_block=latest_block, sender_info=sender_info
        )

    @contextlib.asynccontextmanager
    async def _segment_payment(
        self, orch: _Orchestrator, connection: QuicConnectionHandle, job: SegmentJob
    ) -> AsyncIterator[SegmentPayment]:
        """The segment's payment while its job runs (``PaymentSender.segment_payment``);
        nothing off-chain, nor for a live AI job (paid by time on its control stream)."""
        if self.payments is None or self.watch is None or job.pipeline:
            yield SegmentPayment()
            return
        latest_block, sender_info = await self._ticket_params(orch, connection)
        with self.payments.segment_payment(
            str(orch.address),
            job.session,
            job.profiles,
            (job.source_width, job.source_height),
            job.fps,
            job.duration_ms / 1000,
            latest_block=latest_block,
            sender_info=sender_info,
        ) as payment:
            yield payment

    async def transcode(
        self, job: SegmentJob, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[RenditionSegment]:
        index = self._pick(job.session, job.pipeline)
        orch = self._orchestrators[index]
        try:
            with one_error():
                connection = await self._connection(orch)
            async with self._segment_payment(orch, connection, job) as payment:
                wire_job = Job(
                    stream_id=job.stream,
                    seq=job.seq,
                    duration_ms=job.duration_ms,
                    profiles=tuple(ProfileSpec.from_profile(p) for p in job.profiles),
                    session_id=job.session,
                    payment=payment.header,
                    pipeline=job.pipeline,
                    params=dict(job.params),
                )
                stream = await connection.open_stream()
                try:
                    result = await request_job(
                        stream,
                        wire_job,
                        source,
                        response_timeout=self.response_timeout,
                        relay=relay,
                    )
                    outputs = result.outputs
                finally:
                    await stream.aclose()
                signer = self.payments.recipient(str(orch.address)) if self.payments else None
                if self.verify or signer is not None:
                    await trio.to_thread.run_sync(
                        partial(
                            verify_result,
                            wire_job,
                            outputs,
                            result.signature,
                            expected_signer=signer,
                            # Live AI is paid by time, not by pixels, and its output is not
                            # reproducible: decoding it to count pixels would only add latency.
                            check_pixels=self.verify and not job.pipeline,
                        )
                    )
                payment.settle(sum(o.info.pixels for o in outputs))
        except (
            TransportError,
            JobError,
            BusyError,
            VerificationError,
            trio.TooSlowError,
        ) as exc:
            retryable = not isinstance(exc, JobError) or exc.code >= 500
            if retryable:
                self.selector.record_failure(str(orch.address))
                orch.failures += 1
                orch.suspended_until = trio.current_time() + self.suspension
                self._sessions[job.session] = (index + 1) % len(self._orchestrators)
                # Only a broken or silent connection is dropped: a busy answer or a bad
                # rendition must not fail the other segments in flight on it.
                # A slow pipeline job is the model's pace, not a silent connection.
                silent = isinstance(exc, trio.TooSlowError) and not job.pipeline
                if orch.connection is not None and (isinstance(exc, TransportError) or silent):
                    orch.connection.close()
            raise
        orch.jobs += 1
        # Latency score: from the segment's last byte to its renditions, over its duration.
        round_trip = trio.current_time() - (source.closed_at or trio.current_time())
        self.selector.record_success(str(orch.address), round_trip, max(job.duration_ms, 1) / 1000)
        return [
            RenditionSegment(
                name=o.info.name,
                width=o.info.width,
                height=o.info.height,
                pixels=o.info.pixels,
                data=o.data,
                frames=o.info.frames,
                dropped=o.info.dropped,
            )
            for o in outputs
        ]


async def _get_info(connection: QuicConnectionHandle, sender: str) -> OrchInfo:
    """Asks an orchestrator for its ORCH_INFO (with ticket parameters for ``sender``)."""
    stream = await connection.open_stream()
    channel = MessageStream()
    try:
        await stream.send_all(channel.send(GetInfo(sender=sender)))
        with trio.fail_after(5):
            while (message := channel.next_message()) is None:
                data = await stream.receive_some(64 * 1024)
                if not data:
                    raise TransportError("orchestrator closed the info stream")
                channel.receive_data(data)
        await stream.send_eof()  # done asking: the orchestrator ends the stream quietly
    finally:
        await stream.aclose()
    if isinstance(message, Error):
        raise JobError(f"GET_INFO refused: {message.message}", code=message.code)
    if not isinstance(message, OrchInfo):
        raise JobError(f"GET_INFO answered with {type(message).__name__}", code=502)
    return message
