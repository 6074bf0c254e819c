"""The in-process worker's live AI side as the orchestrator reports it: its devices (each GPU
with the sessions on it), whether pipelines are isolated, the warm pipelines and the pipeline
children stopped, for ``/api/status`` and the metrics."""

from __future__ import annotations

import attrs

from lpstream.orchestrator.status import AiWorkerStatus, GpuStatus
from lpstream.worker.batch import BatchJobs
from lpstream.worker.live import LiveSessions

__all__ = ["ai_status"]


def ai_status(live: LiveSessions, batch: BatchJobs | None = None) -> AiWorkerStatus:
    """What ``live`` (and ``batch``) run on and how they fared, now."""
    on_device = live.sessions_by_device()
    failures: dict[str, dict[str, int]] = {}
    for (pipeline, kind), count in sorted(live.failures().items()):
        failures.setdefault(pipeline, {})[kind] = count
    return AiWorkerStatus(
        device=live.device,
        gpus=tuple(
            GpuStatus(**attrs.asdict(gpu), sessions=on_device.get(gpu.device, 0))
            for gpu in live.gpus
        ),
        isolation=live.isolate,
        sessions=sum(on_device.values()),
        warm=tuple(live.warm_names()),
        child_failures=failures,
        batch_models={} if batch is None else batch.models.statistics(),
    )
