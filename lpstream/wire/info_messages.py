"""The messages of control streams: what an orchestrator offers, liveness, worker sign-up.

Their encoding is :mod:`lpstream.wire.messages`'; a control stream (:mod:`lpstream.wire.control`)
carries them in any order.
"""

from __future__ import annotations

from typing import Annotated

import attrs
import msgspec

from lpstream.wire.fields import (
    MAX_CAPABILITIES,
    MAX_INT64,
    MAX_PARAM_VALUE,
    MAX_TICKET_PARAMS_SIZE,
    SIGNATURE_SIZE,
    Address,
    Capabilities,
    Count,
    ModelId,
    Name,
    Text,
)

__all__ = [
    "AiModelOffer",
    "End",
    "GetInfo",
    "OrchInfo",
    "Ping",
    "PipelineOffer",
    "Pong",
    "WorkerHello",
    "WorkerWelcome",
]


@attrs.frozen(kw_only=True)
class GetInfo:
    """GET_INFO: asks for an ORCH_INFO."""

    sender: Address = ""
    """The asking gateway's Ethereum address: ticket parameters are issued per sender.
    Empty off-chain."""


@attrs.frozen(kw_only=True)
class PipelineOffer:
    """A live AI pipeline an orchestrator runs, and its price."""

    name: Name
    """Pipeline name, as a JOB's ``pipeline`` names it."""
    price_per_second: Count = 0
    """Wei per second of live session (0 off-chain or free)."""


@attrs.frozen(kw_only=True)
class AiModelOffer:
    """A batch AI model an orchestrator runs (or a worker has), and its price."""

    capability: Name
    """The capability (``text-to-image``, ``llm``...), as a JOB's ``capability`` names it."""
    model_id: ModelId
    """The model."""
    price_per_unit: Count = 0
    """Wei for ``pixels_per_unit`` units of the capability (pixels, milliseconds of audio,
    tokens); 0 off-chain or free. A worker's hello leaves it 0: the orchestrator prices."""
    pixels_per_unit: Annotated[int, msgspec.Meta(ge=1, le=MAX_INT64)] = 1
    """Units the price is for."""
    warm: bool = False
    """Kept loaded: a request starts without waiting for the load."""
    capacity: Count = 1
    """Requests it runs at once (more wait in line)."""


@attrs.frozen(kw_only=True)
class OrchInfo:
    """ORCH_INFO: what an orchestrator offers."""

    version: Text
    """Software version."""
    price_per_unit: Count = 0
    """Price in wei for ``pixels_per_unit`` pixels."""
    pixels_per_unit: Annotated[int, msgspec.Meta(ge=1, le=MAX_INT64)] = 1
    """Pixels the price is for."""
    capabilities: Capabilities = ()
    """What it can run (``transcode``, pipeline names)."""
    capacity: Count = 0
    """The work its workers take, in sessions' worth: one is the pixels per second of the
    default ladder (360p and 240p) from a 30 fps source (``lpstream.orchestrator.capacity``).
    Cheap sessions (small pictures, short ladders) take less than one each, a 720p ladder
    more."""
    in_use: Count = 0
    """The work its sessions hold now, in sessions' worth, rounded up: ``in_use`` equal to
    ``capacity`` means a default session no longer fits."""
    ticket_params: Annotated[bytes, msgspec.Meta(max_length=MAX_TICKET_PARAMS_SIZE)] = b""
    """Opaque ticket parameters (defined by the payments module)."""
    address: Address = ""
    """The orchestrator's Ethereum address (the tickets' recipient); empty off-chain."""
    pipelines: Annotated[tuple[PipelineOffer, ...], msgspec.Meta(max_length=MAX_CAPABILITIES)] = ()
    """Live AI pipelines its workers have, with their prices."""
    certificate_signature: Annotated[bytes, msgspec.Meta(max_length=SIGNATURE_SIZE)] = b""
    """The orchestrator's Ethereum key (``address``) signing its QUIC certificate's
    fingerprint: 65 bytes, or empty off-chain and from older orchestrators. The message signed
    and the check are :mod:`lpstream.orchestrator.certificate_claim`'s."""
    warm: Annotated[tuple[Name, ...], msgspec.Meta(max_length=MAX_CAPABILITIES)] = ()
    """Live AI pipelines whose models its workers keep loaded (``--warm``): a session of one
    starts without waiting for the load. Empty from older orchestrators."""
    ai_models: Annotated[tuple[AiModelOffer, ...], msgspec.Meta(max_length=MAX_CAPABILITIES)] = ()
    """Batch AI models its workers run, with their prices (``--ai-models``). Empty from older
    orchestrators."""


@attrs.frozen(kw_only=True)
class Ping:
    """PING: liveness probe."""

    nonce: Count
    """Echoed in the PONG."""


@attrs.frozen(kw_only=True)
class Pong:
    """PONG: answer to a PING."""

    nonce: Count
    """The PING's nonce."""


@attrs.frozen(kw_only=True)
class WorkerHello:
    """WORKER_HELLO: a worker registers with an orchestrator."""

    secret: Annotated[str, msgspec.Meta(max_length=MAX_PARAM_VALUE)]
    """Shared secret proving the worker belongs to this orchestrator."""
    capacity: Count
    """The work it takes, in sessions' worth (``OrchInfo.capacity``; its ``--capacity``)."""
    capabilities: Capabilities = ()
    """What it can run."""
    version: Text = ""
    """Software version."""
    ai_models: Annotated[tuple[AiModelOffer, ...], msgspec.Meta(max_length=MAX_CAPABILITIES)] = ()
    """Batch AI models it has loaded or can load (its ``--ai-models``; prices are the
    orchestrator's)."""


@attrs.frozen(kw_only=True)
class WorkerWelcome:
    """WORKER_WELCOME: the orchestrator accepted a worker."""

    worker_id: Name
    """The id the orchestrator gave it."""


@attrs.frozen(kw_only=True)
class End:
    """END: reserved; no more messages in this direction.

    Job streams do not use it: they end with QUIC FIN, which QUIC keeps apart from a reset,
    so a second end marker would only add a way to disagree. It stays for transports or
    streams that cannot half-close.
    """
