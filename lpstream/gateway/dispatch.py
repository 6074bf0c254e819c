"""One segment to an orchestrator and its renditions back: pick, connect, pay, request, verify.

How this works, in the order ``SegmentDispatch.transcode`` reads:

1. Pick: the orchestrator the session is pinned to, or a fresh draw (``SessionPlacement``).
2. Connect: its QUIC connection (``OrchestratorConnections``), dialled if there is none.
3. Pay: on chain the segment's tickets ride in the JOB header. The payment is one context
   manager (``PaymentSender.segment_payment``): it reserves the expected fee while the job
   runs and settles it against the pixels billed; a live AI job is paid by time on its
   control stream instead, and nothing is paid off-chain.
4. Request: one QUIC stream per job; the segment's bytes go out while they are still being
   cut, and the answer must be complete ``response_timeout`` seconds after the upload ends.
5. Verify, before the result is used or paid for (``lpstream.verification``): when the
   orchestrator is paid, its signature over the renditions must recover to the address its
   tickets are made out to; and each rendition is decoded and its frames and pixels compared
   with the claims.

A failure on the orchestrator's side (a 5xx answer, a broken connection, a timeout, a failed
check) suspends it and moves the session, so the caller's retry goes elsewhere; nothing is
settled for it. Only a broken or silent connection is closed: a busy answer or a bad
rendition must not fail the other segments in flight on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from functools import partial

import attrs
import trio

from lpstream.errors import BusyError, TransportError
from lpstream.gateway.connections import KnownOrchestrator, OrchestratorConnections
from lpstream.gateway.payments import SegmentPayment
from lpstream.gateway.placement import SessionPlacement
from lpstream.gateway.segments import RenditionSegment, SegmentJob
from lpstream.gateway.ticket_terms import TicketTerms
from lpstream.jobs import JobError, JobResult, Relay, request_job
from lpstream.metrics import Metrics
from lpstream.quic import QuicConnectionHandle
from lpstream.trickle import SegmentBuffer
from lpstream.verification import VerificationError, verify_result
from lpstream.wire import Job, ProfileSpec

__all__ = ["SegmentDispatch"]

ORCHESTRATOR_FAULTS = (TransportError, JobError, BusyError, VerificationError, trio.TooSlowError)
"""What a job's orchestrator may have caused (a ``JobError`` under 500 is the job's own)."""


@attrs.define
class SegmentDispatch:
    """Implements ``SegmentTranscoder`` over the pool's orchestrators (see the module
    comment)."""

    connections: OrchestratorConnections
    placement: SessionPlacement
    terms: TicketTerms | None = None
    """Pays for each segment; None off-chain."""
    response_timeout: float = 8.0
    """Seconds from the end of a segment's upload to a complete answer."""
    verify: bool = True
    """Decode every rendition and compare it with the orchestrator's claims before using it."""
    metrics: Metrics | None = None
    """Where each transcode job's round trip is observed (``segment_round_trip_seconds``)."""

    async def transcode(
        self, job: SegmentJob, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[RenditionSegment]:
        orch = self.placement.pick(job.session, job.pipeline)
        try:
            connection = await self.connections.connect(orch)
            async with self._segment_payment(orch, job) as payment:
                wire_job = _wire_job(job, payment.header)
                sent = trio.current_time()
                result = await self._request(connection, wire_job, source, relay)
                if self.metrics is not None and not job.pipeline:
                    self.metrics.observe(
                        "segment_round_trip_seconds",
                        trio.current_time() - sent,
                        orchestrator=orch.key,
                    )
                # Live AI is paid by time, not by pixels, and its output is not reproducible:
                # decoding it to count pixels would only add latency.
                await self._verify(orch, wire_job, result, pixels=not job.pipeline)
                payment.settle(sum(o.info.pixels for o in result.outputs))
        except ORCHESTRATOR_FAULTS as exc:
            if not isinstance(exc, JobError) or exc.code >= 500:
                self.placement.failed(orch, job.session)
                # A slow pipeline job is the model's pace, not a silent connection.
                silent = isinstance(exc, trio.TooSlowError) and not job.pipeline
                if isinstance(exc, TransportError) or silent:
                    self.connections.drop(orch)
            raise
        # Latency score: from the segment's last byte to its renditions, over its duration.
        round_trip = trio.current_time() - (source.closed_at or trio.current_time())
        self.placement.succeeded(orch, round_trip, max(job.duration_ms, 1) / 1000)
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
            for o in result.outputs
        ]

    @contextlib.asynccontextmanager
    async def _segment_payment(
        self, orch: KnownOrchestrator, job: SegmentJob
    ) -> AsyncIterator[SegmentPayment]:
        """The segment's payment while its job runs (``PaymentSender.segment_payment``);
        nothing off-chain, nor for a live AI job (paid by time on its control stream)."""
        if self.terms is None or job.pipeline:
            yield SegmentPayment()
            return
        latest_block, funds = await self.terms.fresh(
            orch.key, partial(self.connections.get_info, orch)
        )
        with self.terms.sender.segment_payment(
            orch.key, job, latest_block=latest_block, sender_info=funds
        ) as payment:
            yield payment

    async def _request(
        self,
        connection: QuicConnectionHandle,
        job: Job,
        source: SegmentBuffer,
        relay: Relay | None,
    ) -> JobResult:
        stream = await connection.open_stream()
        try:
            return await request_job(
                stream, job, source, response_timeout=self.response_timeout, relay=relay
            )
        finally:
            await stream.aclose()

    async def _verify(
        self, orch: KnownOrchestrator, job: Job, result: JobResult, *, pixels: bool
    ) -> None:
        """Checks the signature of a paid orchestrator and, with ``verify`` and ``pixels``,
        the renditions' claims (off the trio thread: it decodes).

        Raises:
            VerificationError: a check failed.
        """
        signer = self.terms.sender.recipient(orch.key) if self.terms else None
        if not self.verify and signer is None:
            return
        await trio.to_thread.run_sync(
            partial(
                verify_result,
                job,
                result.outputs,
                result.signature,
                expected_signer=signer,
                check_pixels=self.verify and pixels,
            )
        )


def _wire_job(job: SegmentJob, payment: bytes) -> Job:
    """The JOB header for ``job``, carrying ``payment``."""
    return Job(
        stream_id=job.stream,
        seq=job.seq,
        duration_ms=job.duration_ms,
        profiles=tuple(ProfileSpec.from_profile(p) for p in job.profiles),
        session_id=job.session,
        payment=payment,
        pipeline=job.pipeline,
        params=dict(job.params),
    )
