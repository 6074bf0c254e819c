"""What each part of a node is given, read from the configuration's sections: the HTTP and
ingest budgets, stream limits, the worker's live sessions and model folder, payment and chain
options. One function per part, so each default is applied in one place."""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path

from lpstream.budget import default_memory_budget
from lpstream.config import Config, HostPort, HttpSection, LimitsSection
from lpstream.errors import ConfigError
from lpstream.gateway.ingest_limits import IngestLimits
from lpstream.gateway.publishers import StreamLimits
from lpstream.http.limits import HttpLimits
from lpstream.paid import ChainOptions, PaymentOptions
from lpstream.wire import AiModelOffer
from lpstream.worker.batch import BatchJobs
from lpstream.worker.live import LiveSessions, WarmPipeline
from workers.batch import AiModel, BatchModels, load_ai_models
from workers.gpu import discover_gpus, place_session, select_gpus
from workers.pipelines import ModelDirectory, PipelineError, PipelineRegistry

__all__ = [
    "ai_models",
    "ai_prices",
    "batch_jobs",
    "chain_options",
    "gateway_http_addr",
    "http_limits",
    "ingest_limits",
    "live_sessions",
    "memory_limit",
    "payment_options",
    "stream_limits",
]


def http_limits(section: HttpSection) -> HttpLimits:
    """The HTTP budgets of the ``http`` section."""
    return HttpLimits(
        max_connections=section.http_max_connections,
        keep_alive_timeout=section.http_keep_alive_timeout,
        send_timeout=section.http_send_timeout,
        body_timeout=section.http_body_timeout,
        max_uploads=section.http_max_uploads,
        dead_peer_timeout=section.http_dead_peer_timeout,
    )


def ingest_limits(config: Config) -> IngestLimits:
    """What each publisher may send, and how long an ended stream stays."""
    return IngestLimits(
        max_pixels=config.limits.max_ingest_pixels,
        max_fps=config.limits.max_ingest_fps,
        max_bitrate=config.limits.max_ingest_bitrate,
        end_linger=config.playback.end_linger,
    )


def stream_limits(section: LimitsSection) -> StreamLimits:
    """How many live streams the gateway, a publisher and an address may hold."""
    return StreamLimits(
        max_streams=section.max_streams,
        max_streams_per_key=section.max_streams_per_key,
        max_streams_per_addr=section.max_streams_per_addr,
    )


def live_sessions(config: Config) -> LiveSessions:
    """A worker's live AI sessions, whose pipelines load the models clients name from
    ``--models-dir`` (default ``<data-dir>/models``; none without either), each in a child
    process of its own with ``--pipeline-isolation``, on the GPUs of ``--gpus``, with the
    ``--warm`` pipelines to load (``LiveSessions.load_warm``).

    Raises:
        ConfigError: ``--gpus`` names a device this machine lacks, or a ``--warm`` pipeline
            is unknown or its parameters do not fit it.
    """
    worker = config.worker
    folder = worker.models_dir
    if folder is None and config.payments.data_dir is not None:
        folder = str(Path(config.payments.data_dir) / "models")
    models = ModelDirectory(None if folder is None else Path(folder))
    registry = PipelineRegistry(models=models)
    gpus = () if worker.gpus == "none" else select_gpus(worker.gpus, discover_gpus())
    warm = tuple(WarmPipeline(name=name, params=params) for name, params in worker.warm)
    for entry in warm:
        try:
            registry.create(entry.name, entry.params)  # checks the name and the parameters
        except PipelineError as exc:
            raise ConfigError(f"--warm {entry.name}: {exc}") from None
    return LiveSessions(
        registry=registry,
        isolate=worker.pipeline_isolation,
        pipeline_memory=worker.pipeline_memory,
        gpus=gpus,
        warm=warm,
    )


def ai_models(config: Config) -> tuple[AiModel, ...]:
    """The entries of ``--ai-models`` (none without it).

    Raises:
        ConfigError: the file cannot be used (the message names the entry and field).
    """
    if config.worker.ai_models is None:
        return ()
    return load_ai_models(config.worker.ai_models)


def ai_prices(config: Config) -> tuple[AiModelOffer, ...]:
    """An orchestrator's prices for batch AI models: every ``--ai-models`` entry."""
    return tuple(
        AiModelOffer(
            capability=m.pipeline,
            model_id=m.model_id,
            price_per_unit=m.price_per_unit,
            pixels_per_unit=m.pixels_per_unit,
            warm=m.warm,
            capacity=m.capacity,
        )
        for m in ai_models(config)
    )


def batch_jobs(config: Config, live: LiveSessions) -> BatchJobs | None:
    """A worker's batch AI models: the ``--ai-models`` entries with a ``path`` (None if
    none), in child processes with ``--pipeline-isolation``, placed on the GPUs the live
    sessions use, counting both (one GPU pool for live and batch AI).

    Raises:
        ConfigError: the file cannot be used, or a model's path does not exist.
    """
    models = tuple(m for m in ai_models(config) if m.path is not None)
    for model in models:
        assert model.path is not None
        if not Path(model.path).exists():
            raise ConfigError(
                f"--ai-models: {model.pipeline} {model.model_id!r}: {model.path} does not exist"
            )
    if not models:
        return None
    loaded: list[BatchModels] = []

    def place() -> str:
        if not live.gpus:
            return live.device
        counts = dict(live.sessions_by_device())
        for device, copies in loaded[0].devices().items():
            counts[device] = counts.get(device, 0) + copies
        loads = {
            int(device.partition(":")[2]): count
            for device, count in counts.items()
            if device.startswith("cuda:")
        }
        return f"cuda:{place_session(live.gpus, loads).index}"

    batch = BatchModels(
        models,
        isolate=config.worker.pipeline_isolation,
        device=live.device,
        place=place,
        memory_limit=config.worker.pipeline_memory,
    )
    loaded.append(batch)
    return BatchJobs(models=batch)


def memory_limit(section: LimitsSection) -> int:
    """The memory budget in bytes; ``auto`` (None) is resolved against this machine."""
    if section.memory_budget is None:
        return default_memory_budget()
    return section.memory_budget


def payment_options(config: Config) -> PaymentOptions:
    """Prices, ticket economics and the dev chain's pace from the ``payments`` and ``chain``
    sections; the ticket queue in ``data_dir``, or a fresh temporary folder if it is None."""
    pay = config.payments
    folder = pay.data_dir or tempfile.mkdtemp(prefix="lpstream-dev-")
    return PaymentOptions(
        price_per_unit=pay.price_per_unit,
        pixels_per_unit=pay.pixels_per_unit,
        ticket_ev=pay.ticket_ev,
        max_face_value=pay.max_face_value,
        max_price=None
        if pay.max_price_per_unit is None
        else Fraction(pay.max_price_per_unit, pay.pixels_per_unit),
        block_time=config.chain.block_time,
        round_length=config.chain.round_length,
        data_dir=Path(folder),
    )


def gateway_http_addr(config: Config) -> HostPort:
    """Where a gateway serves HTTP.

    Raises:
        ConfigError: ``http_addr`` is off (as it is by default only for an orchestrator).
    """
    if config.http.http_addr is None:
        raise ConfigError("a gateway needs --http-addr")
    return config.http.http_addr


def chain_options(config: Config) -> ChainOptions | None:
    """How a paid node reaches its chain; None off-chain.

    Raises:
        ConfigError: a paid node lacks one of the chain's flags.
    """
    chain = config.chain
    if config.payments.offchain:
        return None
    if chain.missing() or not (chain.eth_url and chain.controller and chain.keystore):
        raise ConfigError(f"a paid node needs {', '.join(chain.missing())}")
    return ChainOptions(
        eth_url=chain.eth_url,
        controller=chain.controller,
        keystore=Path(chain.keystore),
        passphrase_file=Path(chain.passphrase_file) if chain.passphrase_file else None,
    )
