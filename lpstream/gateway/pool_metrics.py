"""The gateway's orchestrator pool as metrics (``POOL_FAMILIES``).

Per orchestrator the figures are read from the pool at each scrape, so the ``orchestrator``
label holds exactly the orchestrators in the pool then; one that leaves the pool also loses
its round-trip histogram. The round trips themselves are observed by ``SegmentDispatch`` as
jobs come back. The payment counters are the payment sender's running totals.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from lpstream.metric_families import POOL_FAMILIES
from lpstream.metrics import Metrics

if TYPE_CHECKING:
    from lpstream.gateway.orchestrators import OrchestratorPool

__all__ = ["collect_pool_metrics", "export_pool_metrics"]


def export_pool_metrics(pool: OrchestratorPool, metrics: Metrics) -> None:
    """Declares the pool's families in ``metrics`` and feeds them from now on."""
    metrics.declare(*POOL_FAMILIES)
    pool.dispatch.metrics = metrics
    metrics.add_collector(partial(collect_pool_metrics, pool, metrics))


def collect_pool_metrics(pool: OrchestratorPool, metrics: Metrics) -> None:
    """Sets the per-orchestrator figures and the payment totals from the pool now."""
    facts = pool.status()
    scores = pool.selector.statistics().latency_scores
    metrics.retain("orchestrator", {f.address for f in facts})

    def each(figure: str) -> list[tuple[dict[str, str], float]]:
        return [({"orchestrator": f.address}, float(getattr(f, figure))) for f in facts]

    metrics.replace("orchestrator_connected", each("connected"))
    metrics.replace("orchestrator_suspended", each("suspended"))
    metrics.replace("orchestrator_jobs_total", each("jobs"))
    metrics.replace("orchestrator_failures_total", each("failures"))
    metrics.replace(
        "orchestrator_latency_score",
        [({"orchestrator": f.address}, scores[f.address]) for f in facts if f.address in scores],
    )
    metrics.replace(
        "orchestrator_pipeline_price_wei_per_second",
        [
            ({"orchestrator": f.address, "pipeline": name}, float(price.exact))
            for f in facts
            for name, price in (f.pipelines or {}).items()
        ],
    )
    if pool.payments is not None:
        sent = pool.payments.status()
        metrics.replace("payment_sent_wei_total", [({}, float(sent.ev_sent.exact))])
        metrics.replace("tickets_sent_total", [({}, float(sent.tickets_sent))])
