"""What the orchestrator reports about itself: frozen values, rendered by lpstream.http.status.

Sessions are counted and live sessions named by label (``live-7``), never by id: an id is what
a gateway uses to pay and steer a session. Money is a ``payments.pm.Wei``, a price a
``payments.pm.PixelPrice``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from lpstream.orchestrator.hello_backoff import HelloBackoffStatistics
from lpstream.orchestrator.uploads import UploadStatistics
from lpstream.status_fields import OMIT_NONE
from payments.pm import PixelPrice, Wei
from workers.gpu import GpuInfo

__all__ = [
    "AiModelStatus",
    "AiWorkerStatus",
    "GpuStatus",
    "LiveSessionStatus",
    "LiveStatus",
    "OrchestratorStatus",
    "ReceiverStatus",
    "WorkerStatus",
]


@attrs.frozen(kw_only=True)
class WorkerStatus:
    """One worker (in process or remote)."""

    capacity: int
    """The work it takes, in sessions' worth (its ``--capacity``)."""
    sessions: int
    """Sessions it holds now."""


@attrs.frozen(kw_only=True)
class GpuStatus(GpuInfo):
    """One GPU of the in-process worker (``memory_free`` as it was at start), with its load."""

    sessions: int
    """Live AI sessions whose pipeline runs on it now."""


@attrs.frozen(kw_only=True)
class AiWorkerStatus:
    """The live AI side of the in-process worker."""

    device: str
    """Where sessions run when there is no GPU in ``gpus`` (``cpu``)."""
    gpus: Sequence[GpuStatus]
    """The GPUs sessions are placed on (``--gpus``); empty: ``device``."""
    isolation: bool
    """Whether each session's pipeline runs in a child process (``--pipeline-isolation``)."""
    sessions: int
    """Live AI sessions with a pipeline loaded here."""
    warm: Sequence[str]
    """Pipelines loaded at start (``--warm``) that loaded."""
    child_failures: Mapping[str, Mapping[str, int]]
    """Pipeline children stopped, by pipeline, then why: ``crashed``, ``hung``, ``memory``."""
    batch_models: Mapping[str, Mapping[str, Mapping[str, Any]]] = attrs.Factory(dict)
    """Batch AI models (``--ai-models``) by capability, then model id: whether loaded and
    where, requests, batches, the largest batch, failures, seconds worked."""


@attrs.frozen(kw_only=True)
class AiModelStatus:
    """A batch AI model the orchestrator offers."""

    capability: str
    model_id: str
    price_per_unit: Wei
    """Wei for ``pixels_per_unit`` units (pixels, milliseconds of audio, tokens)."""
    pixels_per_unit: int
    warm: bool
    """Some worker keeps it loaded."""
    capacity: int
    """Requests its workers run at once, together."""


@attrs.frozen(kw_only=True)
class LiveSessionStatus:
    """One live AI session's billing."""

    pipeline: str
    """The pipeline it runs."""
    stopped: str | None
    """Why it was stopped; None while it runs."""
    seconds: int
    """Seconds billed."""
    billed: Wei
    """What those seconds cost."""
    balance: Wei
    """The sender's balance on the session (paid minus billed; negative when behind)."""
    price_per_second: Wei
    """Its price (0: free)."""


@attrs.frozen(kw_only=True)
class LiveStatus:
    """The live AI sessions (``LiveAccounts.status``)."""

    sessions: Mapping[str, LiveSessionStatus]
    """By label (``live-7``), never by id."""
    stopped_total: int
    """Sessions stopped for not paying or by their gateway."""


@attrs.frozen(kw_only=True)
class ReceiverStatus:
    """The orchestrator's side of the payments (``PaymentReceiver.status``)."""

    address: str
    """Its Ethereum account (the tickets' recipient)."""
    price_per_pixel: PixelPrice
    """Its price."""
    ticket_ev: Wei
    """The EV of one ticket it asks for."""
    active: bool | None
    """Whether it is in the active set this round; None before it was checked."""
    tickets_received: int
    """Tickets received."""
    tickets_won: int
    """Of those, winning tickets."""
    payments_refused: int
    """Payments refused whole."""
    ev_received: Wei
    """The EV of the tickets credited."""
    billed: Wei
    """What the work done cost (pixels x price, and live seconds)."""
    balance: Wei
    """What senders hold in credit: ``ev_received - billed``."""
    tickets_pending: int
    """Winning tickets waiting to be redeemed."""
    tickets_redeemed: int
    """Winning tickets redeemed on chain."""
    tickets_dropped: int
    """Winning tickets given up (used, or their round has no block hash)."""
    face_value_redeemed: Wei
    """The face values redeemed."""


@attrs.frozen(kw_only=True)
class OrchestratorStatus:
    """The orchestrator role (``Orchestrator.status``)."""

    workers: Mapping[str, WorkerStatus]
    """By worker id."""
    capacity: int
    """The work all workers take, in sessions' worth (``--capacity`` summed)."""
    sessions: int
    """Sessions holding capacity."""
    capacity_pixels_per_second: int
    """The work all workers take, in pixels per second: the budget new sessions must fit
    (``lpstream.orchestrator.capacity``)."""
    work_pixels_per_second: int
    """The work the sessions hold now, in pixels per second (each one's estimate, or what
    its last job measured)."""
    jobs_in_flight: int
    """Jobs being worked on."""
    uploads: UploadStatistics
    """The upload budget's counts."""
    connections: int
    """Open QUIC connections."""
    open_streams: int
    """Open QUIC streams over all connections."""
    pipelines: Sequence[str]
    """Live AI pipelines it offers."""
    live: LiveStatus
    """Live AI sessions."""
    worker_hellos: HelloBackoffStatistics
    """Wrong worker secrets answered, and hellos turned away while their address backed off."""
    service: str | None = attrs.field(default=None, metadata=OMIT_NONE)
    """Its pinned QUIC address, ``quic://host:port#sha256=…``; absent before it serves."""
    payments: ReceiverStatus | None = attrs.field(default=None, metadata=OMIT_NONE)
    """The payments it takes; absent when it works for free (off chain)."""
    ai_models: Sequence[AiModelStatus] = ()
    """The batch AI models it offers, with their prices."""
    ai_jobs_in_flight: int = 0
    """Batch AI jobs running or waiting on its workers now."""
    ai: AiWorkerStatus | None = attrs.field(default=None, metadata=OMIT_NONE)
    """The in-process worker's live AI devices and pipelines; absent without one."""
