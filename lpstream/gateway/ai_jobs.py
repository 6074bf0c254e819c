"""Batch AI jobs as the gateway's HTTP routes see them: what is asked, what comes back.

The HTTP layer (:mod:`lpstream.http.ai_jobs`) turns a request of one of go-livepeer's AI
routes into an :class:`AiJobRequest` (checked and quoted by the capability's batch pipeline
class), hands it to an :class:`AiJobs` (the gateway: :mod:`lpstream.gateway.ai_dispatch`
picks an orchestrator offering the model, pays it inline and retries elsewhere when one fails
before its first output byte) with a ``Relay`` that receives the outputs as they arrive, and
renders the :class:`AiJobOutcome`.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Protocol

import attrs

from lpstream.jobs import JobOutput, Relay
from lpstream.wire.fields import ParamValue

__all__ = ["AiJobOutcome", "AiJobRequest", "AiJobs", "ModelOffer"]


@attrs.frozen(kw_only=True)
class AiJobRequest:
    """One batch AI request, checked by its pipeline class."""

    capability: str
    """``text-to-image``, ``image-to-image``, ``upscale``, ``audio-to-text``, ``llm``."""
    model_id: str
    """The model to run (``ai_requests.choose_model``: the one asked for, or the only one
    offered for the capability)."""
    params: Mapping[str, ParamValue]
    """Its parameters (validated; ``seed`` filled in)."""
    input: bytes = b""
    """Its input bytes (picture, audio, chat messages as JSON)."""
    units: int
    """The most units it can be billed (the pipeline class's ``quote``): paid ahead."""


@attrs.frozen(kw_only=True)
class AiJobOutcome:
    """A finished batch AI job."""

    outputs: tuple[JobOutput, ...]
    """Its output tracks in order; ``info.pixels`` holds each track's billed units."""
    orchestrator: str
    """Who did it."""
    model_id: str
    """The model that ran."""
    price: Fraction
    """Wei per unit it was billed at (0 off-chain)."""

    @property
    def units(self) -> int:
        """Units billed, all tracks together."""
        return sum(o.info.pixels for o in self.outputs)

    @property
    def billed(self) -> Fraction:
        """Wei billed."""
        return self.price * self.units


@attrs.frozen(kw_only=True)
class ModelOffer:
    """A model the network offers for a capability (``GET /v1/models``)."""

    capability: str
    model_id: str
    price_per_unit: int
    """Wei for ``pixels_per_unit`` units, at the cheapest orchestrator offering it."""
    pixels_per_unit: int
    warm: bool
    """Some orchestrator keeps it loaded."""
    orchestrators: int
    """How many orchestrators offer it at or under the gateway's maximum price."""


class AiJobs(Protocol):
    """What the HTTP routes need of the gateway."""

    def offered_models(self) -> list[ModelOffer]:
        """Every (capability, model) some usable orchestrator offers, sorted."""
        ...

    async def run_ai_job(self, request: AiJobRequest, relay: Relay) -> AiJobOutcome:
        """Runs ``request`` on an orchestrator; outputs go to ``relay`` as they arrive.

        ``relay.start`` is called once, when the first output byte arrives (so a failure
        before it can still move the job to another orchestrator), then ``relay.data`` per
        piece. Raises ``lpstream.errors.ProtocolError`` with the HTTP-like code (400 unknown
        model or bad input as the worker found it, 402, 403, 413, 503 nobody can take it,
        502/504 the orchestrator failed), ``BusyError`` (503).
        """
        ...
