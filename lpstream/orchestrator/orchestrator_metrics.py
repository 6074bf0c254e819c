"""The orchestrator as metrics (``ORCHESTRATOR_FAMILIES``): its workers and GPUs, read at each
scrape; the time each payment check takes; the payment totals in wei.

Workers are labelled by id (``local``, ``remote-N``) and only while registered. GPUs are
those the in-process worker uses: the CUDA device its live AI pipelines run on, and, when it
encodes with NVENC, the device FFmpeg opens for it (the first, ``cuda:0``). A node without a
GPU has no ``gpu`` series. Remote workers' GPUs are their own processes' business.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from fractions import Fraction
from functools import partial
from typing import TYPE_CHECKING

import trio

from lpstream.errors import LpstreamError, RemoteProtocolError
from lpstream.metric_families import ORCHESTRATOR_FAMILIES
from lpstream.metrics import Metrics
from lpstream.worker.local import LocalWorker
from workers.gpu import NVENC, choose_encoder

if TYPE_CHECKING:
    from lpstream.orchestrator.orchestrator import Orchestrator

__all__ = [
    "collect_orchestrator_metrics",
    "export_orchestrator_metrics",
    "gpu_sessions",
    "timed_payment_check",
]

NVENC_DEVICE = "cuda:0"
"""The device FFmpeg's NVENC encoder opens when it is not told one."""


def export_orchestrator_metrics(orchestrator: Orchestrator) -> None:
    """Declares the orchestrator's families and reads its live figures at each scrape."""
    orchestrator.metrics.declare(*ORCHESTRATOR_FAMILIES)
    orchestrator.metrics.add_collector(partial(collect_orchestrator_metrics, orchestrator))


def collect_orchestrator_metrics(orchestrator: Orchestrator) -> None:
    """Sets the per-worker, per-GPU and payment figures from the orchestrator now."""
    metrics, pool = orchestrator.metrics, orchestrator.pool
    metrics.replace(
        "worker_sessions", [({"worker": w.worker_id}, float(pool.load(w.worker_id))) for w in pool]
    )
    metrics.replace("worker_capacity", [({"worker": w.worker_id}, float(w.capacity)) for w in pool])
    encode, pipelines = gpu_sessions(orchestrator.local, pool.load("local"))
    metrics.replace("gpu_encode_sessions", [({"gpu": g}, float(n)) for g, n in encode.items()])
    metrics.replace("gpu_pipeline_sessions", [({"gpu": g}, float(n)) for g, n in pipelines.items()])
    if orchestrator.local is not None:
        metrics.replace(
            "pipeline_child_failures_total",
            [
                ({"pipeline": pipeline, "kind": kind}, float(count))
                for (pipeline, kind), count in orchestrator.local.live.failures().items()
            ],
        )
    payments = orchestrator.payments
    if payments is None:
        return
    status = payments.status()
    totals: list[tuple[str, Fraction | int]] = [
        ("payment_received_wei_total", status.ev_received.exact),
        ("payment_won_wei_total", payments.face_value_won),
        ("payment_redeemed_wei_total", status.face_value_redeemed.exact),
        ("payment_billed_wei_total", status.billed.exact),
        ("tickets_received_total", status.tickets_received),
        ("tickets_won_total", status.tickets_won),
        ("tickets_redeemed_total", status.tickets_redeemed),
        ("payments_refused_total", status.payments_refused),
        ("tickets_pending", status.tickets_pending),
    ]
    for name, value in totals:
        metrics.replace(name, [({}, float(value))])


def gpu_sessions(
    local: LocalWorker | None, local_sessions: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Sessions per GPU of the in-process worker: (encoded with NVENC, live AI pipelines).

    ``local_sessions`` is what the worker pool has pinned to it."""
    if local is None:
        return {}, {}
    encode: dict[str, int] = {}
    try:
        if choose_encoder(local.encoder) == NVENC:
            encode[NVENC_DEVICE] = local_sessions
    except LpstreamError:
        pass  # an encoder that cannot run here: the worker refuses its jobs, no GPU is used
    live = local.live
    devices = [g.device for g in live.gpus] if live.gpus else [live.device]
    pipelines = {_gpu_name(d): 0 for d in devices if d.startswith("cuda")}  # each, even idle
    for device, sessions in live.sessions_by_device().items():
        if device.startswith("cuda"):
            pipelines[_gpu_name(device)] = pipelines.get(_gpu_name(device), 0) + sessions
    return encode, pipelines


def _gpu_name(device: str) -> str:
    """``cuda`` as ``cuda:0``: the series are named by device index."""
    return device if ":" in device else f"{device}:0"


@contextlib.contextmanager
def timed_payment_check(metrics: Metrics | None) -> Iterator[None]:
    """Observes how long the payment check in the block takes (``payment_check_seconds``):
    ``accepted`` when it returns, ``refused`` when it raises ``RemoteProtocolError``."""
    started = trio.current_time()
    try:
        yield
    except RemoteProtocolError:
        if metrics is not None:
            metrics.observe(
                "payment_check_seconds", trio.current_time() - started, outcome="refused"
            )
        raise
    if metrics is not None:
        metrics.observe("payment_check_seconds", trio.current_time() - started, outcome="accepted")
