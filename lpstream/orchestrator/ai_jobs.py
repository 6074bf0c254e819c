"""Batch AI jobs at the orchestrator: which models it offers, at what price, on which worker.

How this works:

* The models offered are those its workers run (each worker's ``ai_models``: the local
  worker's ``--ai-models`` entries with a path, a remote worker's WORKER_HELLO), priced by the
  orchestrator's own ``--ai-models`` entries (``price_per_unit`` wei for ``pixels_per_unit``
  units). A paid orchestrator does not offer a model it has no price for (it would work for
  nothing); an off-chain one offers it free.
* A job is placed on the worker offering the model with the fewest of its batch jobs in flight
  for its capacity (``AiModelOffer.capacity``); a worker past ``queue_factor`` times its
  capacity takes no more (503 at once: work is refused, never queued without bound).
* Payment and billing are the orchestrator's (:meth:`Orchestrator.run_job`): the JOB's tickets
  are credited before any work, and the units the worker reports are billed at the price.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction

import attrs

from lpstream.errors import BusyError, RemoteProtocolError
from lpstream.orchestrator.workers import Worker
from lpstream.wire import AiModelOffer

__all__ = ["AiJobRouter", "price_of"]

log = logging.getLogger("lpstream.orchestrator")

ModelKey = tuple[str, str]
"""(capability, model id)."""


def price_of(offer: AiModelOffer) -> Fraction:
    """Wei per unit of ``offer``."""
    return Fraction(offer.price_per_unit, offer.pixels_per_unit)


@attrs.define
class AiJobRouter:
    """Offers and places batch AI jobs (see the module comment)."""

    prices: Sequence[AiModelOffer] = ()
    """The orchestrator's prices (its ``--ai-models`` entries)."""
    paid: bool = False
    """Whether the orchestrator is paid: then an unpriced model is not offered."""
    queue_factor: int = 8
    """Batch jobs a worker may hold per unit of a model's capacity (running or waiting)."""
    _in_flight: dict[tuple[str, ModelKey], int] = attrs.Factory(dict)
    _unpriced: set[ModelKey] = attrs.Factory(set)

    def offers(self, workers: Iterable[Worker]) -> tuple[AiModelOffer, ...]:
        """Every model some worker runs and this orchestrator prices, sorted."""
        priced = {(p.capability, p.model_id): p for p in self.prices}
        found: dict[ModelKey, AiModelOffer] = {}
        for worker in workers:
            for model in worker.ai_models():
                key = (model.capability, model.model_id)
                price = priced.get(key)
                if price is None and self.paid:
                    if key not in self._unpriced:
                        self._unpriced.add(key)
                        log.warning(
                            "%s %s runs on worker %s but has no price in --ai-models: not offered",
                            *key,
                            worker.worker_id,
                        )
                    continue
                known = found.get(key)
                found[key] = AiModelOffer(
                    capability=model.capability,
                    model_id=model.model_id,
                    price_per_unit=0 if price is None else price.price_per_unit,
                    pixels_per_unit=1 if price is None else price.pixels_per_unit,
                    warm=model.warm or (known is not None and known.warm),
                    capacity=model.capacity + (0 if known is None else known.capacity),
                )
        return tuple(found[key] for key in sorted(found))

    def offer(self, workers: Iterable[Worker], capability: str, model_id: str) -> AiModelOffer:
        """The offer for ``capability``/``model_id``.

        Raises:
            RemoteProtocolError: (400) it is not offered here; the message lists what is.
        """
        offers = self.offers(workers)
        for offer in offers:
            if offer.capability == capability and offer.model_id == model_id:
                return offer
        same = [o.model_id for o in offers if o.capability == capability]
        listed = ", ".join(same) if same else "none"
        raise RemoteProtocolError(
            f"{capability} model {model_id!r} is not offered here (offered: {listed})", code=400
        )

    def pick(
        self, workers: Iterable[Worker], capability: str, model_id: str, exclude: set[str]
    ) -> Worker:
        """The worker to run a job of the model on: the least loaded for its capacity.

        Raises:
            BusyError: every worker offering it (and not in ``exclude``) is full.
        """
        key = (capability, model_id)
        best: tuple[float, Worker] | None = None
        for worker in workers:
            if worker.worker_id in exclude:
                continue
            model = next((m for m in worker.ai_models() if (m.capability, m.model_id) == key), None)
            if model is None:
                continue
            room = max(1, model.capacity)
            held = self._in_flight.get((worker.worker_id, key), 0)
            if held >= room * self.queue_factor:
                continue
            load = held / room
            if best is None or load < best[0]:
                best = (load, worker)
        if best is None:
            raise BusyError(f"no worker has room for {capability} {model_id} now")
        return best[1]

    @contextlib.contextmanager
    def running(self, worker: Worker, capability: str, model_id: str) -> Iterator[None]:
        """Counts a job of the model on ``worker`` while it runs."""
        key = (worker.worker_id, (capability, model_id))
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield
        finally:
            left = self._in_flight[key] - 1
            if left:
                self._in_flight[key] = left
            else:
                del self._in_flight[key]

    def jobs_in_flight(self) -> int:
        return sum(self._in_flight.values())
