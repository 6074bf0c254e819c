"""Assembles the roles into running nodes from the configuration's sections
(``lpstream.config.Config``): one root nursery, every server started with ``nursery.start``
so that "ready" is printed only once every port is listening.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
from collections.abc import AsyncIterator, Callable

import attrs
import trio
from starlette.types import ASGIApp

import lpstream
from ingest.rtmp import RtmpServer
from ingest.srt import SrtServer, srt_available
from ingest.whip import WhepPlayback, WhipIngest
from lpstream.access import NodeAccess
from lpstream.budget import MemoryBudget
from lpstream.chainwatch import ChainWatch
from lpstream.config import Config, HostPort, HttpSection
from lpstream.demo import push_demo
from lpstream.errors import ConfigError
from lpstream.gateway.admission import DECISION_MARGIN, PublishAdmission
from lpstream.gateway.ai_dispatch import AiDispatch
from lpstream.gateway.ai_prices import parse_max_prices
from lpstream.gateway.discovery import (
    ChainSource,
    DiscoveryError,
    OrchestratorSource,
    StaticSource,
    WebhookSource,
)
from lpstream.gateway.fair_share import TranscodeShares
from lpstream.gateway.gateway import Gateway
from lpstream.gateway.orchestrators import OrchestratorPool
from lpstream.gateway.output_hub import OutputHub
from lpstream.gateway.payments import PaymentSender
from lpstream.gateway.publishers import PublisherTable
from lpstream.gateway.selection import SelectionWeights, Selector
from lpstream.gateway.spending import SpendLedger
from lpstream.http.api_guard import warn_if_open
from lpstream.http.app import build_app
from lpstream.http.metrics_app import metrics_server
from lpstream.http.server import HttpServer, raise_open_file_limit
from lpstream.http.status import GatewayNodeStatus, OrchestratorNodeStatus
from lpstream.http.tls import ServerTls, load_server_tls
from lpstream.media import load_profiles
from lpstream.metrics import Metrics
from lpstream.orchestrator.address import service_url
from lpstream.orchestrator.hello_backoff import HelloBackoff
from lpstream.orchestrator.identity import load_identity
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.paid import (
    DevEconomy,
    PaymentsStatus,
    start_dev_economy,
    start_gateway_payments,
    start_orchestrator_payments,
)
from lpstream.role_settings import (
    ai_prices,
    batch_jobs,
    chain_options,
    gateway_http_addr,
    http_limits,
    ingest_limits,
    live_sessions,
    memory_limit,
    payment_options,
    stream_limits,
)
from lpstream.worker.local import LocalWorker
from lpstream.worker.remote import run_remote_worker

__all__ = [
    "run_dev",
    "run_gateway",
    "run_orchestrator",
    "run_worker",
]

log = logging.getLogger("lpstream")

Announce = Callable[[str], None]


async def _start_http(
    nursery: trio.Nursery, section: HttpSection, app: ASGIApp, addr: HostPort, tls: ServerTls | None
) -> tuple[HttpServer, str]:
    """Serves ``app`` on ``addr`` (HTTPS with ``tls``) within the section's limits; returns
    the server and its base URL."""
    raise_open_file_limit()
    server = HttpServer(app, limits=http_limits(section), tls=tls)
    bound = await nursery.start(server.serve, addr)
    return server, f"{server.scheme}://{bound}"


async def _start_metrics(
    nursery: trio.Nursery, section: HttpSection, metrics: Metrics, announce: Announce
) -> None:
    """Serves ``/metrics`` alone on ``metrics_addr``, if it is set."""
    if section.metrics_addr is not None:
        server = metrics_server(metrics, http_limits(section))
        bound = await nursery.start(server.serve, section.metrics_addr)
        announce(f"metrics:  http://{bound}/metrics")


@contextlib.asynccontextmanager
async def _open_live(local: LocalWorker | None) -> AsyncIterator[None]:
    """Loads the ``--warm`` pipelines and batch AI models before the worker serves; stops
    every pipeline child when it stops."""
    if local is None:
        yield
        return
    try:
        await trio.to_thread.run_sync(local.live.load_warm)
        if local.batch is not None:
            await trio.to_thread.run_sync(local.batch.models.load_warm)
        yield
    finally:
        local.live.close()
        if local.batch is not None:
            local.batch.models.close()


def _local_worker(config: Config) -> LocalWorker:
    """The worker of this process: transcoding, live AI and batch AI (``--ai-models``)."""
    live = live_sessions(config)
    return LocalWorker(
        capacity=config.worker.capacity,
        encoder=config.worker.encoder,
        live=live,
        batch=batch_jobs(config, live),
    )


def _build_orchestrator(config: Config, secret: str, metrics: Metrics) -> Orchestrator:
    worker = config.worker
    local = _local_worker(config) if worker.capacity > 0 else None
    return Orchestrator(
        secret=secret,
        metrics=metrics,
        local=local,
        pipeline_prices=dict(config.payments.pipeline_price),
        default_pipeline_price=config.payments.price_per_second,
        memory=MemoryBudget(limit=memory_limit(config.limits)),
        identity=load_identity(config.payments.data_dir),
        hello_backoff=HelloBackoff(first_delay=config.orchestrator.worker_hello_backoff),
        ai_prices=ai_prices(config),
    )


async def run_orchestrator(config: Config, announce: Announce = print) -> None:
    """Runs an orchestrator until cancelled; paid unless ``offchain``.

    Raises:
        ConfigError: no ``orch_secret``, or a paid node without its chain's settings.
    """
    if not config.orchestrator.orch_secret:
        raise ConfigError("an orchestrator needs --orch-secret")
    chain = chain_options(config)
    tls = load_server_tls(config.http.tls_cert, config.http.tls_key)
    access = NodeAccess.from_section(config.access)
    metrics = Metrics()
    orchestrator = _build_orchestrator(config, config.orchestrator.orch_secret, metrics)
    service_addr, http_addr = config.orchestrator.service_addr, config.http.http_addr
    limits = http_limits(config.http)
    async with _open_live(orchestrator.local), trio.open_nursery() as nursery:
        if chain is not None:
            receiver = await start_orchestrator_payments(
                nursery,
                chain,
                payment_options(config),
                initialize_rounds=config.chain.initialize_rounds,
            )
            orchestrator.payments = receiver
            announce(f"orchestrator account: {receiver.address}")
        service = await nursery.start(orchestrator.serve, service_addr.host, service_addr.port)
        announce(f"orchestrator service: quic://{HostPort(service.host, service.port)}")
        announce(f"orchestrator pinned address: {service_url(service)}")
        if http_addr is not None:
            app = build_app(
                playback=None,
                status=lambda: OrchestratorNodeStatus(
                    role="orchestrator",
                    version=lpstream.__version__,
                    orchestrator=orchestrator.status(),
                ),
                metrics=metrics,
                limits=limits,
                api_tokens=access.api_tokens,
                cors_origins=access.cors_origins,
                orchestrator_admin=orchestrator,
            )
            warn_if_open(http_addr, access.api_tokens)
            _, web = await _start_http(nursery, config.http, app, http_addr, tls)
            announce(f"orchestrator admin: {web}/api/status")
        await _start_metrics(nursery, config.http, metrics, announce)
        announce("lpstream orchestrator ready")


async def run_worker(config: Config, announce: Announce = print) -> None:
    """Runs a remote worker for the first ``orch_addr`` until cancelled.

    Raises:
        ConfigError: no ``orch_addr`` or no ``orch_secret``.
    """
    secret = config.orchestrator.orch_secret
    if not config.selection.orch_addr or not secret:
        raise ConfigError("a worker needs --orch-addr and --orch-secret")
    orch_addr = config.selection.orch_addr[0]
    local = _local_worker(config)
    async with _open_live(local), trio.open_nursery() as nursery:
        worker_id = await nursery.start(run_remote_worker, orch_addr, secret, local)
        announce(f"lpstream worker ready: registered with {orch_addr} as {worker_id}")


async def _start_gateway(
    nursery: trio.Nursery,
    config: Config,
    metrics: Metrics,
    extra_status: Callable[[GatewayNodeStatus], GatewayNodeStatus] | None,
    role: str,
    announce: Announce,
    *,
    orch_addrs: tuple[HostPort, ...],
    sender: PaymentSender | None = None,
    watch: ChainWatch | None = None,
    tls: ServerTls | None = None,
    orchestrator: Orchestrator | None = None,
) -> Gateway:
    selection, access, playback = config.selection, config.access, config.playback
    node_access = NodeAccess.from_section(access)
    ai_limits = parse_max_prices(config.payments.max_price_per_capability)
    webhook_url = selection.orch_webhook_url
    sources: list[OrchestratorSource] = []
    if orch_addrs:
        sources.append(StaticSource(orch_addrs))
    if webhook_url:
        sources.append(WebhookSource(webhook_url))
    if not sources and watch is not None:
        sources.append(ChainSource(watch))  # on chain: the current round's active set
    initial: list[HostPort] = []
    for source in sources:
        try:
            initial += [d.address for d in await source.discover() if d.address not in initial]
        except DiscoveryError as exc:
            log.warning("discovery: %s", exc)
    announce(f"orchestrators: {', '.join(map(str, initial)) or 'none yet (discovery retries)'}")
    pool = OrchestratorPool(
        initial,
        payments=sender,
        watch=watch,
        selector=Selector(
            weights=SelectionWeights(
                stake=selection.selection_stake_weight,
                price=selection.selection_price_weight,
                random=selection.selection_random_weight,
            ),
            rng=random.Random(selection.selection_seed),
        ),
        sources=sources if (webhook_url or not orch_addrs) else (),
        max_price_per_second=config.payments.max_price_per_second,
    )
    await nursery.start(pool.run)
    ai_jobs = AiDispatch(
        connections=pool.connections, terms=pool.terms, limits=ai_limits, metrics=metrics
    )
    outputs = await OutputHub.from_section(config.outputs, metrics)
    await nursery.start(outputs.run)
    gateway = Gateway(
        transcoder=pool,
        profiles=load_profiles(playback.profiles),
        metrics=metrics,
        segment_target=config.ingest.segment_duration,
        part_target=playback.part_target,
        live_control=pool,
        paid=sender is not None,
        pipeline=config.ai.pipeline,
        pipeline_params=dict(config.ai.pipeline_params),
        limits=ingest_limits(config),
        linger=playback.end_linger,
        memory=MemoryBudget(limit=memory_limit(config.limits)),
        publishers=PublisherTable(stream_limits(config.limits)),
        shares=TranscodeShares(capacity=pool.work_capacity),
        admission=PublishAdmission(
            node_access.publish,
            node_access.names,
            deadline=access.auth_webhook_timeout + DECISION_MARGIN,
        ),
        spending=sender.spending if sender is not None else SpendLedger(),
        api_spend_limit=access.api_spend_limit,
        outputs=outputs,
    )
    await nursery.start(gateway.run)
    rtmp = RtmpServer(handler=gateway)
    rtmp_host, rtmp_port = await nursery.start(
        rtmp.serve, config.ingest.rtmp_addr.host, config.ingest.rtmp_addr.port
    )
    hosts = config.ingest.whip_host
    # With publish authorization on, the WHIP token is one credential among the others and
    # the gateway checks it (a publish key or JWT passes without it).
    whip_token = None if node_access.publish.enforced else access.whip_token
    whip = WhipIngest(handler=gateway, token=whip_token, host_addresses=hosts)
    await nursery.start(whip.run)
    srt_started = await _start_srt(nursery, config, gateway)
    whep = WhepPlayback(
        source=gateway,
        token=None if node_access.play else access.whep_token,  # then play auth checks it
        host_addresses=hosts,
        max_sessions=playback.whep_max_sessions,
    )
    await nursery.start(whep.run)

    def status() -> GatewayNodeStatus:
        out = GatewayNodeStatus(
            role=role,
            version=lpstream.__version__,
            gateway=gateway.status(),
            orchestrators=pool.status(),
            rtmp=rtmp.statistics(),
            whip=whip.statistics(),
            whep=whep.statistics(),
            srt=None if srt_started is None else srt_started[0].statistics(),
            http=server.statistics(),
        )
        return out if extra_status is None else extra_status(out)

    app = build_app(
        playback=gateway,
        status=status,
        metrics=metrics,
        whip=whip,
        whep=whep,
        ai=gateway,
        ai_jobs=ai_jobs,
        limits=http_limits(config.http),
        api_tokens=node_access.api_tokens,
        play=node_access.play,
        cors_origins=node_access.cors_origins,
        recordings=outputs,
        forwards=outputs,
        orchestrator_admin=orchestrator,
    )
    warn_if_open(gateway_http_addr(config), node_access.api_tokens)
    server, web = await _start_http(nursery, config.http, app, gateway_http_addr(config), tls)
    rtmp_bound = HostPort(rtmp_host, rtmp_port)
    announce(f"ingest:   rtmp://{rtmp_bound}/live/{{stream}}")
    announce(f"ingest:   {web}/whip/{{stream}} (WHIP)")
    if srt_started is not None:
        srt_url = f"srt://{srt_started[1]}?streamid=#!::r=live/{{stream}},m=publish"
        announce(f"ingest:   {srt_url} (SRT)")
    announce(f"playback: {web}/hls/{{stream}}/index.m3u8")
    announce(f"webrtc:   {web}/whep/{{stream}} (WHEP; /whep/{{stream}}/{{rendition}})")
    announce(f"watch:    {web}/watch/{{stream}}  (?whep=1: WebRTC)")
    announce(f"status:   {web}/api/status")
    if outputs.record_store is not None:
        announce(f"records:  {outputs.record_store.url} (replay: {web}/vod/{{stream}}/{{id}}/…)")
    if outputs.origin_store is not None:
        announce(f"origin:   {outputs.origin_store.url}")
    await _start_metrics(nursery, config.http, metrics, announce)
    return gateway


async def _start_srt(
    nursery: trio.Nursery, config: Config, gateway: Gateway
) -> tuple[SrtServer, HostPort] | None:
    """Starts SRT ingest where ``--srt-addr`` asks for it; returns it and the address it
    bound.

    Raises:
        ConfigError: libsrt is not installed.
    """
    ingest = config.ingest
    if ingest.srt_addr is None:
        return None
    if not srt_available():
        raise ConfigError("--srt-addr needs libsrt (Debian: apt install libsrt1.5-gnutls)")
    srt = SrtServer(
        handler=gateway,
        passphrase=ingest.srt_passphrase,
        pbkeylen=ingest.srt_pbkeylen,
        latency_ms=ingest.srt_latency,
    )
    host, port = await nursery.start(srt.serve, ingest.srt_addr.host, ingest.srt_addr.port)
    return srt, HostPort(host, port)


async def run_gateway(config: Config, announce: Announce = print) -> None:
    """Runs a gateway until cancelled; pays orchestrators unless ``offchain``.

    Raises:
        ConfigError: a paid node without its chain's settings.
    """
    chain = chain_options(config)
    tls = load_server_tls(config.http.tls_cert, config.http.tls_key)
    async with trio.open_nursery() as nursery:
        sender = watch = None
        if chain is not None:
            sender, watch = await start_gateway_payments(nursery, chain, payment_options(config))
            announce(f"gateway account: {sender.address}")
        extra = (
            None
            if sender is None
            else (lambda s: attrs.evolve(s, payments=PaymentsStatus(gateway=sender.status())))
        )
        await _start_gateway(
            nursery,
            config,
            Metrics(),
            extra,
            "gateway",
            announce,
            orch_addrs=config.selection.orch_addr,
            sender=sender,
            watch=watch,
            tls=tls,
        )
        announce("lpstream gateway ready")


async def run_dev(config: Config, announce: Announce = print) -> None:
    """Gateway, orchestrator and worker in one process; paid on the embedded chain unless
    ``offchain``. Without ``orch_secret`` remote workers join with a random one; without
    ``data_dir`` the tickets go to a fresh temporary folder."""
    tls = load_server_tls(config.http.tls_cert, config.http.tls_key)
    metrics = Metrics()
    secret = config.orchestrator.orch_secret or new_secret()
    orchestrator = _build_orchestrator(config, secret, metrics)
    service_addr = config.orchestrator.service_addr
    async with _open_live(orchestrator.local), trio.open_nursery() as nursery:
        pinned = await nursery.start(orchestrator.serve, service_addr.host, service_addr.port)
        service = HostPort(pinned.host, pinned.port)
        announce(f"orchestrator: quic://{service} (remote workers join with --orch-secret)")
        announce(f"orchestrator pinned address: {service_url(pinned)}")
        economy: DevEconomy | None = None
        if not config.payments.offchain:
            payments = payment_options(config)
            economy = await start_dev_economy(nursery, payments, service_url(pinned))
            orchestrator.payments = economy.receiver
            announce(
                f"chain: embedded, controller {economy.chain.controller}; "
                f"gateway {economy.sender.address}, orchestrator {economy.receiver.address}"
            )

        def status(gateway: GatewayNodeStatus) -> GatewayNodeStatus:
            return attrs.evolve(
                gateway,
                orchestrator=orchestrator.status(),
                payments=None if economy is None else economy.status(),
            )

        await _start_gateway(
            nursery,
            config,
            metrics,
            status,
            "dev",
            announce,
            orch_addrs=(service,),
            sender=economy.sender if economy else None,
            watch=economy.watch if economy else None,
            tls=tls,
            orchestrator=orchestrator,
        )
        announce("lpstream dev ready")
        if config.node.demo_stream:
            nursery.start_soon(
                push_demo,
                config.ingest.rtmp_addr,
                config.node.demo_stream,
                f"{'http' if tls is None else 'https'}://{gateway_http_addr(config)}",
                announce,
            )


def new_secret() -> str:
    return secrets.token_urlsafe(24)
