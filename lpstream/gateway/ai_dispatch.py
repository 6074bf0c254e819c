"""Batch AI jobs from the gateway: pick an orchestrator offering the model, pay, request,
retry elsewhere before the first output byte.

How this works, in the order ``AiDispatch.run_ai_job`` reads:

1. Candidates: the orchestrators whose last info offered the model (``AiModelOffer``) at or
   under ``--max-price-per-capability`` for it, that are not ruled out (``refused``) nor
   suspended after a failure; cheapest first, then those keeping the model loaded (warm),
   then the fewest failures. A model nobody offers is the client's mistake (400, listing what
   is offered); one offered only above the limit, or by orchestrators all failing, is 503.
2. Pay: on chain the JOB carries tickets for the most the request can cost (its quote, in
   units, times the orchestrator's price: ``PaymentSender.job_payment``); after the answer
   the reservation settles against the units the orchestrator reports, at that price.
3. Request: one QUIC stream; the input goes up as the upload, the outputs come back as the
   worker produces them. RESULT is held back until the first output byte, and only then
   passed to the relay: until then nothing has reached the client, so a failure (a killed
   orchestrator, a 5xx, a timeout) moves the job to the next candidate, and a job is billed
   once, by the one orchestrator that answered.
4. Verify: a paid orchestrator's signature over the outputs must recover to the address its
   tickets are made out to, before the job counts as done.

The answer's client errors (400, 413: bad input the worker found) end the job at once; they
bill nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from fractions import Fraction
from functools import partial

import attrs
import trio

from lpstream.errors import BusyError, RemoteProtocolError, TransportError
from lpstream.gateway.ai_jobs import AiJobOutcome, AiJobRequest, ModelOffer
from lpstream.gateway.ai_prices import AiPriceLimits
from lpstream.gateway.connections import KnownOrchestrator, OrchestratorConnections
from lpstream.gateway.payments import JobPayment
from lpstream.gateway.ticket_terms import TicketTerms
from lpstream.jobs import JobError, JobResult, Relay, request_job
from lpstream.metrics import Metrics
from lpstream.trickle import SegmentBuffer
from lpstream.verification import VerificationError, verify_result
from lpstream.wire import AiModelOffer, Job, Rendition

__all__ = ["AiDispatch"]

log = logging.getLogger("lpstream.gateway")

FAULTS = (TransportError, JobError, BusyError, VerificationError, trio.TooSlowError)
"""What an orchestrator may have caused (a ``JobError`` under 500 is the request's own)."""

AI_STREAM = "ai"
"""The stream id of batch AI JOBs (they belong to no stream)."""


class _FirstByteRelay:
    """Passes a response on, holding RESULT back until the first output byte."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self._renditions: Sequence[Rendition] | None = None
        self.started = False

    async def start(self, renditions: Sequence[Rendition]) -> None:
        self._renditions = renditions

    async def data(self, track: int, payload: bytes) -> None:
        if not payload:
            return
        await self.begin()
        await self._relay.data(track, payload)

    async def begin(self) -> None:
        """Passes RESULT on, if it has not been (a response without bytes at its end)."""
        if not self.started and self._renditions is not None:
            self.started = True
            await self._relay.start(self._renditions)


@attrs.define
class AiDispatch:
    """Implements ``AiJobs`` over the gateway's orchestrators (see the module comment)."""

    connections: OrchestratorConnections
    terms: TicketTerms | None = None
    """Pays for each job; None off-chain."""
    limits: AiPriceLimits = attrs.Factory(AiPriceLimits)
    """``--max-price-per-capability``."""
    response_timeout: float = 900.0
    """Seconds from the end of a request's upload to its whole answer (a model may have to
    load first; an LLM writes for a while)."""
    attempts: int = 3
    """Orchestrators tried per request."""
    suspension: float = 10.0
    """Seconds an orchestrator that failed a job is passed over."""
    metrics: Metrics | None = None
    _seq: Iterator[int] = attrs.Factory(lambda: itertools.count(1))

    # -- offers -----------------------------------------------------------------------------

    def _usable(self) -> Iterator[tuple[KnownOrchestrator, AiModelOffer]]:
        """Every (orchestrator, offer) not ruled out, at or under the price limits."""
        for orch in self.connections.orchestrators:
            if orch.refused:
                continue
            for offer in orch.ai_models:
                if self.limits.allows(offer.capability, offer.model_id, _price(offer)):
                    yield orch, offer

    def offered_models(self) -> list[ModelOffer]:
        found: dict[tuple[str, str], list[AiModelOffer]] = {}
        for _, offer in self._usable():
            found.setdefault((offer.capability, offer.model_id), []).append(offer)
        models = []
        for (capability, model_id), offers in sorted(found.items()):
            cheapest = min(offers, key=_price)
            models.append(
                ModelOffer(
                    capability=capability,
                    model_id=model_id,
                    price_per_unit=cheapest.price_per_unit,
                    pixels_per_unit=cheapest.pixels_per_unit,
                    warm=any(o.warm for o in offers),
                    orchestrators=len(offers),
                )
            )
        return models

    def _candidates(
        self, capability: str, model_id: str
    ) -> list[tuple[KnownOrchestrator, AiModelOffer]]:
        """The orchestrators to try, best first (module comment).

        Raises:
            RemoteProtocolError: 400 nobody offers the model (any more: the HTTP routes
                check the offers first, ``ai_requests.choose_model``).
            BusyError: nobody usable offers it (above the price limit, suspended).
        """
        now = trio.current_time()
        offering = [
            (orch, offer)
            for orch in self.connections.orchestrators
            for offer in orch.ai_models
            if (offer.capability, offer.model_id) == (capability, model_id)
        ]
        if not offering:
            listed = sorted({o.model_id for _, o in self._usable() if o.capability == capability})
            raise RemoteProtocolError(
                f"{capability} model {model_id!r} is not offered by any orchestrator "
                f"(offered: {', '.join(listed) or 'none'})",
                code=400,
            )
        usable = [
            (orch, offer)
            for orch, offer in offering
            if not orch.refused
            and orch.suspended_until <= now
            and self.limits.allows(capability, model_id, _price(offer))
        ]
        if not usable:
            limit = self.limits.limit(capability, model_id)
            cheapest = min(_price(o) for _, o in offering)
            why = (
                f"the cheapest asks {cheapest} wei a unit, above the maximum {limit}"
                if limit is not None and cheapest > limit
                else "every orchestrator offering it is refused or suspended after a failure"
            )
            raise BusyError(f"{capability} {model_id}: {why}")
        usable.sort(key=lambda pair: (_price(pair[1]), not pair[1].warm, pair[0].failures))
        return usable

    # -- jobs -------------------------------------------------------------------------------

    async def run_ai_job(self, request: AiJobRequest, relay: Relay) -> AiJobOutcome:
        model_id = request.model_id
        candidates = self._candidates(request.capability, model_id)
        last: Exception | None = None
        tries = 0
        index = 0
        while tries < self.attempts and index < len(candidates):
            orch, offer = candidates[index]
            tries += 1
            held = _FirstByteRelay(relay)
            try:
                result = await self._run_on(orch, offer, request, model_id, held)
            except FAULTS as exc:
                if held.started:
                    raise  # output has reached the client: it cannot move
                if isinstance(exc, JobError) and exc.code == 402:
                    last = exc  # fresh parameters and credit next time: try it once more
                    log.warning("orchestrator %s refused a payment: %s", orch.key, exc)
                    if tries < self.attempts:
                        continue
                    break
                if isinstance(exc, JobError) and exc.code < 500:
                    raise
                last = exc
                self._failed(orch, exc)
                index += 1
                continue
            await held.begin()
            orch.jobs += 1
            return AiJobOutcome(
                outputs=tuple(result.outputs),
                orchestrator=orch.key,
                model_id=model_id,
                price=_price(offer) if self.terms is not None else Fraction(0),
            )
        if isinstance(last, JobError | BusyError):
            raise last
        raise JobError(f"every orchestrator tried failed; last error: {last}", code=502)

    def _failed(self, orch: KnownOrchestrator, exc: Exception) -> None:
        log.warning("orchestrator %s failed a batch AI job: %s; trying another", orch.key, exc)
        orch.failures += 1
        orch.suspended_until = trio.current_time() + self.suspension
        if isinstance(exc, TransportError | trio.TooSlowError):
            self.connections.drop(orch)

    async def _run_on(
        self,
        orch: KnownOrchestrator,
        offer: AiModelOffer,
        request: AiJobRequest,
        model_id: str,
        relay: _FirstByteRelay,
    ) -> JobResult:
        connection = await self.connections.connect(orch)
        session = f"ai-{request.capability}"
        async with self._payment(orch, offer, request, session) as payment:
            job = Job(
                stream_id=AI_STREAM,
                seq=next(self._seq),
                duration_ms=0,
                session_id=session,
                capability=request.capability,
                model_id=model_id,
                params=dict(request.params),
                payment=payment.header,
            )
            source = SegmentBuffer(max_size=max(1, len(request.input)))
            source.append(request.input)
            source.close()
            stream = await connection.open_stream()
            try:
                result = await request_job(
                    stream, job, source, response_timeout=self.response_timeout, relay=relay
                )
            finally:
                await stream.aclose()
            signer = self.terms.sender.recipient(orch.key) if self.terms else None
            if signer is not None:
                await trio.to_thread.run_sync(
                    partial(
                        verify_result,
                        job,
                        result.outputs,
                        result.signature,
                        expected_signer=signer,
                        check_pixels=False,
                    )
                )
            units = sum(o.info.pixels for o in result.outputs)
            if units > request.units:
                log.warning(
                    "orchestrator %s billed %d units for a request quoted at %d",
                    orch.key,
                    units,
                    request.units,
                )
            payment.settle(_price(offer) * units)
        return result

    @contextlib.asynccontextmanager
    async def _payment(
        self, orch: KnownOrchestrator, offer: AiModelOffer, request: AiJobRequest, session: str
    ) -> AsyncIterator[JobPayment]:
        """The job's payment while it runs: the tickets for its quote (none off-chain)."""
        if self.terms is None:
            yield JobPayment()
            return
        latest_block, funds = await self.terms.fresh(
            orch.key, partial(self.connections.get_info, orch)
        )
        fee = _price(offer) * request.units
        with self.terms.sender.job_payment(
            orch.key, session, fee, latest_block=latest_block, sender_info=funds
        ) as payment:
            yield payment


def _price(offer: AiModelOffer) -> Fraction:
    return Fraction(offer.price_per_unit, offer.pixels_per_unit)
