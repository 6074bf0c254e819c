"""The gateway's orchestrator pool: the objects that send work to orchestrators, composed.

* ``OrchestratorConnections`` (``connections.py``): the orchestrators, one QUIC connection
  each, their infos checked and the list refreshed by discovery.
* ``SessionPlacement`` (``placement.py``): which orchestrator a session's next job goes to,
  suspension and moving on failure.
* ``SegmentDispatch`` (``dispatch.py``): one segment out and its renditions back (pick,
  connect, pay, request, verify); the pool's ``transcode``.
* ``TicketTerms`` (``ticket_terms.py``): what paying needs from the chain; None off-chain.

The pool also serves live AI sessions (``LiveControlPool``): their control streams, opened to
an orchestrator that offers the pipeline, and their payments by time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from fractions import Fraction
from functools import partial

import attrs
import trio

from lpstream.chainwatch import ChainWatch
from lpstream.config import HostPort
from lpstream.errors import BusyError
from lpstream.gateway.connections import OrchestratorConnections
from lpstream.gateway.discovery import OrchestratorSource
from lpstream.gateway.dispatch import SegmentDispatch
from lpstream.gateway.payments import PaymentSender
from lpstream.gateway.placement import SessionPlacement
from lpstream.gateway.pool_metrics import export_pool_metrics
from lpstream.gateway.segments import RenditionSegment, SegmentJob
from lpstream.gateway.selection import Selector
from lpstream.gateway.status import OrchestratorFacts
from lpstream.gateway.ticket_terms import TicketTerms
from lpstream.jobs import Relay
from lpstream.metrics import Metrics
from lpstream.orchestrator.capacity import capacity_work
from lpstream.quic import QuicStream
from lpstream.trickle import SegmentBuffer

__all__ = ["OrchestratorPool"]


@attrs.define
class OrchestratorPool:
    """Implements the gateway's ``SegmentTranscoder`` and ``LiveControlPool`` over QUIC."""

    addresses: Sequence[HostPort]
    payments: PaymentSender | None = None
    """Pays for each segment; None off-chain (``watch`` comes with it)."""
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
    terms: TicketTerms | None = attrs.field(init=False)
    connections: OrchestratorConnections = attrs.field(init=False)
    placement: SessionPlacement = attrs.field(init=False)
    dispatch: SegmentDispatch = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if (self.payments is None) != (self.watch is None):
            raise ValueError("payments and watch go together (both on chain, neither off)")
        self.terms = (
            None
            if self.payments is None or self.watch is None
            else TicketTerms(sender=self.payments, watch=self.watch)
        )
        self.connections = OrchestratorConnections(
            addresses=self.addresses,
            listener=self.selector,
            terms=self.terms,
            sources=self.sources,
            refresh_interval=self.refresh_interval,
            capability=self.capability,
            info_deadline=self.info_deadline,
        )
        self.placement = SessionPlacement(
            connections=self.connections,
            selector=self.selector,
            suspension=self.suspension,
            max_price_per_second=self.max_price_per_second,
        )
        self.dispatch = SegmentDispatch(
            connections=self.connections,
            placement=self.placement,
            terms=self.terms,
            response_timeout=self.response_timeout,
            verify=self.verify,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Holds the connections and refreshes them; runs until cancelled."""
        await self.connections.run(task_status=task_status)

    def status(self) -> list[OrchestratorFacts]:
        scores = self.selector.statistics().latency_scores
        return [
            attrs.evolve(facts, latency_score=scores.get(facts.address))
            for facts in self.connections.status()
        ]

    def export_metrics(self, metrics: Metrics) -> None:
        """Feeds ``metrics`` from now on: per orchestrator, round trips, payments sent
        (``lpstream.gateway.pool_metrics``)."""
        export_pool_metrics(self, metrics)

    def work_capacity(self) -> int:
        """Pixels per second of transcoding the orchestrators that may be offered work said
        they take (0 before any said)."""
        return sum(
            capacity_work(o.capacity) for o in self.connections.orchestrators if not o.refused
        )

    async def transcode(
        self, job: SegmentJob, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[RenditionSegment]:
        return await self.dispatch.transcode(job, source, relay)

    # -- live AI sessions (``LiveControlPool``) -----------------------------------------------

    async def open_live_control(self, session: str, pipeline: str) -> tuple[str, QuicStream]:
        """Opens a stream to the orchestrator ``session`` is (or now gets) pinned to, one
        that offers ``pipeline``; returns its key and the stream.

        Pipelines come and go with an orchestrator's workers, so when none is known to offer
        ``pipeline`` the infos are asked for again at once rather than at the next refresh."""
        try:
            orch = self.placement.pick(session, pipeline)
        except BusyError:
            if not self.placement.pipeline_unknown(pipeline):
                raise
            await self.connections.check_infos()
            orch = self.placement.pick(session, pipeline)
        connection = await self.connections.connect(orch)
        return orch.key, await connection.open_stream()

    async def live_price(self, orchestrator: str, pipeline: str) -> int:
        """``orchestrator``'s price per second for ``pipeline``, from a fresh ORCH_INFO.

        Raises:
            BusyError: it does not offer the pipeline (or asks too much), or it is gone.
        """
        orch = self.connections.find(orchestrator)
        info = await self.connections.refresh_info(orch)
        problem = self.placement.pipeline_refusal(orch, pipeline)
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

    async def live_payment(self, orchestrator: str, session: str, ahead: Fraction) -> bytes:
        """Tickets that bring ``session``'s credit with ``orchestrator`` up to ``ahead`` wei
        (empty off-chain, or when the credit is already there)."""
        if self.terms is None:
            return b""
        orch = self.connections.find(orchestrator)
        latest_block, funds = await self.terms.fresh(
            orchestrator, partial(self.connections.get_info, orch)
        )
        return self.terms.sender.live_payment(
            orchestrator, session, ahead, latest_block=latest_block, sender_info=funds
        )
