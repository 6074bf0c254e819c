"""Assembles the roles into running nodes from the configuration's sections
(``lpstream.config.Config``): one root nursery, every server started with ``nursery.start``
so that "ready" is printed only once every port is listening.
"""

from __future__ import annotations

import logging
import random
import resource
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import attrs
import trio

import lpstream
from ingest.rtmp import RtmpServer
from ingest.whip import WhepPlayback, WhipIngest
from lpstream.budget import MemoryBudget, default_memory_budget
from lpstream.chainwatch import ChainWatch
from lpstream.config import Config, HostPort, HttpSection, LimitsSection
from lpstream.errors import ConfigError
from lpstream.gateway.discovery import (
    ChainSource,
    DiscoveryError,
    OrchestratorSource,
    StaticSource,
    WebhookSource,
)
from lpstream.gateway.gateway import Gateway
from lpstream.gateway.ingest_limits import IngestLimits
from lpstream.gateway.orchestrators import OrchestratorPool
from lpstream.gateway.payments import PaymentSender
from lpstream.gateway.selection import SelectionWeights, Selector
from lpstream.http.app import build_app
from lpstream.http.limits import HttpLimits
from lpstream.http.server import HttpServer
from lpstream.http.status import GatewayNodeStatus, OrchestratorNodeStatus
from lpstream.media import load_profiles
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.paid import (
    ChainOptions,
    DevEconomy,
    PaymentOptions,
    PaymentsStatus,
    start_dev_economy,
    start_gateway_payments,
    start_orchestrator_payments,
)
from lpstream.quic import serve_quic
from lpstream.worker.local import LocalWorker
from lpstream.worker.remote import run_remote_worker

__all__ = [
    "chain_options",
    "gateway_http_addr",
    "http_limits",
    "ingest_limits",
    "memory_limit",
    "payment_options",
    "run_dev",
    "run_gateway",
    "run_orchestrator",
    "run_worker",
]

log = logging.getLogger("lpstream")

Announce = Callable[[str], None]


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
        max_bitrate=config.limits.max_ingest_bitrate,
        end_linger=config.playback.end_linger,
    )


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


def raise_open_file_limit() -> int:
    """Raises this process's soft limit on open files to its hard limit, once, and logs it;
    returns the soft limit in force (the HTTP connection cap is fitted under it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("open files: cannot raise the limit from %d to %d: %s", soft, hard, exc)
            return soft
        log.info("open files: limit raised from %d to %d (the hard limit)", soft, hard)
    return hard


async def _serve_http(
    server: HttpServer, addr: HostPort, *, task_status: trio.TaskStatus[HostPort]
) -> None:
    """Serves ``server`` on ``addr`` (within its limits: connections, timeouts, WebSocket
    message size) until cancelled; reports the bound address."""
    raise_open_file_limit()
    await server.serve(addr, task_status=task_status)


def _build_orchestrator(config: Config, secret: str, metrics: Metrics) -> Orchestrator:
    worker = config.worker
    local = (
        LocalWorker(capacity=worker.capacity, encoder=worker.encoder)
        if worker.capacity > 0
        else None
    )
    return Orchestrator(
        secret=secret,
        metrics=metrics,
        local=local,
        pipeline_prices=dict(config.payments.pipeline_price),
        default_pipeline_price=config.payments.price_per_second,
        memory=MemoryBudget(limit=memory_limit(config.limits)),
    )


async def run_orchestrator(config: Config, announce: Announce = print) -> None:
    """Runs an orchestrator until cancelled; paid unless ``offchain``.

    Raises:
        ConfigError: no ``orch_secret``, or a paid node without its chain's settings.
    """
    if not config.orchestrator.orch_secret:
        raise ConfigError("an orchestrator needs --orch-secret")
    chain = chain_options(config)
    metrics = Metrics()
    orchestrator = _build_orchestrator(config, config.orchestrator.orch_secret, metrics)
    service_addr, http_addr = config.orchestrator.service_addr, config.http.http_addr
    limits = http_limits(config.http)
    async with trio.open_nursery() as nursery:
        if chain is not None:
            receiver = await start_orchestrator_payments(
                nursery,
                chain,
                payment_options(config),
                initialize_rounds=config.chain.initialize_rounds,
            )
            orchestrator.payments = receiver
            announce(f"orchestrator account: {receiver.address}")
        host, port = await nursery.start(
            serve_quic,
            service_addr.host,
            service_addr.port,
            orchestrator.handle_connection,
        )
        announce(f"orchestrator service: quic://{HostPort(host, port)}")
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
            )
            server = HttpServer(app, limits=limits)
            bound = await nursery.start(_serve_http, server, http_addr)
            announce(f"orchestrator admin: http://{bound}/api/status")
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
    local = LocalWorker(capacity=config.worker.capacity, encoder=config.worker.encoder)
    async with trio.open_nursery() as nursery:
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
) -> Gateway:
    selection, access, playback = config.selection, config.access, config.playback
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
    )
    await nursery.start(gateway.run)
    rtmp = RtmpServer(handler=gateway)
    rtmp_host, rtmp_port = await nursery.start(
        rtmp.serve, config.ingest.rtmp_addr.host, config.ingest.rtmp_addr.port
    )
    hosts = config.ingest.whip_host
    whip = WhipIngest(handler=gateway, token=access.whip_token, host_addresses=hosts)
    await nursery.start(whip.run)
    whep = WhepPlayback(
        source=gateway,
        token=access.whep_token,
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
        limits=http_limits(config.http),
    )
    server = HttpServer(app, limits=http_limits(config.http))
    http = await nursery.start(_serve_http, server, gateway_http_addr(config))
    rtmp_bound = HostPort(rtmp_host, rtmp_port)
    announce(f"ingest:   rtmp://{rtmp_bound}/live/{{stream}}")
    announce(f"ingest:   http://{http}/whip/{{stream}} (WHIP)")
    announce(f"playback: http://{http}/hls/{{stream}}/index.m3u8")
    announce(f"webrtc:   http://{http}/whep/{{stream}} (WHEP; /whep/{{stream}}/{{rendition}})")
    announce(f"watch:    http://{http}/watch/{{stream}}  (?whep=1: WebRTC)")
    announce(f"status:   http://{http}/api/status")
    return gateway


async def run_gateway(config: Config, announce: Announce = print) -> None:
    """Runs a gateway until cancelled; pays orchestrators unless ``offchain``.

    Raises:
        ConfigError: a paid node without its chain's settings.
    """
    chain = chain_options(config)
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
        )
        announce("lpstream gateway ready")


async def run_dev(config: Config, announce: Announce = print) -> None:
    """Gateway, orchestrator and worker in one process; paid on the embedded chain unless
    ``offchain``. Without ``orch_secret`` remote workers join with a random one; without
    ``data_dir`` the tickets go to a fresh temporary folder."""
    metrics = Metrics()
    secret = config.orchestrator.orch_secret or new_secret()
    orchestrator = _build_orchestrator(config, secret, metrics)
    service_addr = config.orchestrator.service_addr
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(
            serve_quic, service_addr.host, service_addr.port, orchestrator.handle_connection
        )
        service = HostPort(host, port)
        announce(f"orchestrator: quic://{service} (remote workers join with --orch-secret)")
        economy: DevEconomy | None = None
        if not config.payments.offchain:
            payments = payment_options(config)
            economy = await start_dev_economy(nursery, payments, f"quic://{service}")
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
        )
        announce("lpstream dev ready")
        if config.node.demo_stream:
            nursery.start_soon(
                _push_demo,
                config.ingest.rtmp_addr,
                config.node.demo_stream,
                gateway_http_addr(config),
                announce,
            )


async def _push_demo(rtmp: HostPort, stream: str, http: HostPort, announce: Announce) -> None:
    """Pushes a test pattern with ffmpeg, restarting it if it stops."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        log.warning("ffmpeg is not installed: no demo stream (install it, or push your own)")
        return
    url = f"rtmp://{rtmp}/live/{stream}"
    command = [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-g",
        "60",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        "-f",
        "flv",
        url,
    ]
    announce(f"demo stream: pushing a test pattern to {url}")
    announce(
        f"watch it:    ffplay http://{http}/hls/{stream}/index.m3u8  (or http://{http}/watch/{stream})"
    )
    while True:
        await trio.run_process(command, check=False, stdin=subprocess.DEVNULL)
        await trio.sleep(2)


def new_secret() -> str:
    return secrets.token_urlsafe(24)
