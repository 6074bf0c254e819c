"""Assembles the roles into running nodes: one root nursery, every server started with
``nursery.start`` so that "ready" is printed only once every port is listening.
"""

from __future__ import annotations

import logging
import random
import resource
import secrets
import shutil
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

import lpstream
from ingest.rtmp import RtmpServer
from ingest.whip import WhepPlayback, WhipIngest
from lpstream.budget import MemoryBudget, process_rss
from lpstream.chainwatch import ChainWatch
from lpstream.config import HostPort
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
from lpstream.media import VideoProfile
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.paid import (
    ChainOptions,
    DevEconomy,
    PaymentOptions,
    start_dev_economy,
    start_gateway_payments,
    start_orchestrator_payments,
)
from lpstream.quic import serve_quic
from lpstream.worker.local import LocalWorker
from lpstream.worker.remote import run_remote_worker

__all__ = [
    "GatewayOptions",
    "OrchestratorOptions",
    "run_dev",
    "run_gateway",
    "run_orchestrator",
    "run_worker",
]

log = logging.getLogger("lpstream")

Announce = Callable[[str], None]


@attrs.frozen(kw_only=True)
class GatewayOptions:
    """What ``lpstream gateway`` needs."""

    rtmp_addr: HostPort
    """Where broadcasters push RTMP."""
    http_addr: HostPort
    """Where viewers and operators reach HTTP."""
    orch_addrs: tuple[HostPort, ...]
    """Orchestrators to send segments to, in order of preference."""
    profiles: tuple[VideoProfile, ...]
    """The ladder made for every stream (the source is always passed through as well)."""
    segment_duration: float = 2.0
    """Target segment length in seconds."""
    part_target: float = 0.2
    """Target LL-HLS part length in seconds (the source rendition is published in parts)."""
    webhook_url: str | None = None
    """Discovery webhook answering ``[{"address": ..., "score": ...}]``."""
    weights: SelectionWeights = attrs.Factory(SelectionWeights)
    """Selection weights: stake, price, random (go-livepeer's defaults 0.7 / 0 / 0.3)."""
    selection_seed: int | None = None
    """Seed of the selection draws, for reproducible runs; None draws from the OS."""
    whip_token: str | None = None
    """Bearer token WHIP publishers must present; None lets anyone publish."""
    whip_hosts: tuple[str, ...] = ()
    """Addresses offered as WHIP (and WHEP) ICE host candidates; empty: every non-loopback
    address."""
    whep_token: str | None = None
    """Bearer token WHEP viewers must present; None lets anyone watch (as HLS does)."""
    whep_max_sessions: int = 100
    """WHEP viewers at once; more are answered 503."""
    pipeline: str = ""
    """Live AI pipeline every publish gets (``--pipeline``); empty for none."""
    pipeline_params: dict[str, str | int | float | bool] = attrs.Factory(dict)
    """Its starting parameters."""
    max_price_per_second: int | None = None
    """Paid: wei per second a live AI session may cost at most (None: no limit)."""
    http_limits: HttpLimits = attrs.Factory(HttpLimits)
    """What one HTTP client may cost (connections, timeouts, bodies)."""
    ingest_limits: IngestLimits = attrs.Factory(IngestLimits)
    """What each publisher may send (``--max-ingest-pixels``, ``--max-ingest-bitrate``)."""
    memory_budget: int = 0
    """Bytes of RSS above which new streams and AI sessions are refused (0: no budget)."""


@attrs.frozen(kw_only=True)
class OrchestratorOptions:
    """What ``lpstream orchestrator`` needs."""

    service_addr: HostPort
    """UDP address of the QUIC service."""
    secret: str
    """Shared with remote workers."""
    http_addr: HostPort | None = None
    """Admin HTTP (status, metrics), if wanted."""
    local_capacity: int = 2
    """Sessions the in-process worker takes; 0 leaves all work to remote workers."""
    encoder: str = "auto"
    """Encoder preference of the in-process worker."""
    price_per_second: int = 0
    """Paid: wei per second of a live AI session (pipelines without their own price)."""
    pipeline_prices: dict[str, int] = attrs.Factory(dict)
    """Paid: wei per second by pipeline."""
    memory_budget: int = 0
    """Bytes of RSS above which new jobs and live sessions are refused (0: no budget)."""
    http_limits: HttpLimits = attrs.Factory(HttpLimits)
    """What one client of the admin HTTP may cost."""


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


def _build_orchestrator(options: OrchestratorOptions, metrics: Metrics) -> Orchestrator:
    local = (
        LocalWorker(capacity=options.local_capacity, encoder=options.encoder)
        if options.local_capacity > 0
        else None
    )
    return Orchestrator(
        secret=options.secret,
        metrics=metrics,
        local=local,
        pipeline_prices=dict(options.pipeline_prices),
        default_pipeline_price=options.price_per_second,
        memory=MemoryBudget(limit=options.memory_budget),
    )


async def run_orchestrator(
    options: OrchestratorOptions,
    announce: Announce = print,
    *,
    chain: ChainOptions | None = None,
    payments: PaymentOptions | None = None,
    initialize_rounds: bool = False,
) -> None:
    """Runs an orchestrator until cancelled; paid when ``chain`` is given."""
    metrics = Metrics()
    orchestrator = _build_orchestrator(options, metrics)
    async with trio.open_nursery() as nursery:
        if chain is not None:
            receiver = await start_orchestrator_payments(
                nursery, chain, payments or PaymentOptions(), initialize_rounds=initialize_rounds
            )
            orchestrator.payments = receiver
            announce(f"orchestrator account: {receiver.address}")
        host, port = await nursery.start(
            serve_quic,
            options.service_addr.host,
            options.service_addr.port,
            orchestrator.handle_connection,
        )
        announce(f"orchestrator service: quic://{HostPort(host, port)}")
        if options.http_addr is not None:
            app = build_app(
                playback=None,
                status=lambda: {
                    "role": "orchestrator",
                    "version": lpstream.__version__,
                    **orchestrator.status(),
                },
                metrics=metrics,
                limits=options.http_limits,
            )
            server = HttpServer(app, limits=options.http_limits)
            bound = await nursery.start(_serve_http, server, options.http_addr)
            announce(f"orchestrator admin: http://{bound}/api/status")
        announce("lpstream orchestrator ready")


async def run_worker(
    orch_addr: HostPort, secret: str, capacity: int, encoder: str, announce: Announce = print
) -> None:
    """Runs a remote worker until cancelled."""
    local = LocalWorker(capacity=capacity, encoder=encoder)
    async with trio.open_nursery() as nursery:
        worker_id = await nursery.start(run_remote_worker, orch_addr, secret, local)
        announce(f"lpstream worker ready: registered with {orch_addr} as {worker_id}")


async def _start_gateway(
    nursery: trio.Nursery,
    options: GatewayOptions,
    metrics: Metrics,
    extra_status: Callable[[], Mapping[str, Any]] | None,
    role: str,
    announce: Announce,
    *,
    sender: PaymentSender | None = None,
    watch: ChainWatch | None = None,
) -> Gateway:
    sources: list[OrchestratorSource] = []
    if options.orch_addrs:
        sources.append(StaticSource(options.orch_addrs))
    if options.webhook_url:
        sources.append(WebhookSource(options.webhook_url))
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
        selector=Selector(weights=options.weights, rng=random.Random(options.selection_seed)),
        sources=sources if (options.webhook_url or not options.orch_addrs) else (),
        max_price_per_second=options.max_price_per_second,
    )
    await nursery.start(pool.run)
    gateway = Gateway(
        transcoder=pool,
        profiles=options.profiles,
        metrics=metrics,
        segment_target=options.segment_duration,
        part_target=options.part_target,
        live_control=pool,
        paid=sender is not None,
        pipeline=options.pipeline,
        pipeline_params=dict(options.pipeline_params),
        limits=options.ingest_limits,
        linger=options.ingest_limits.end_linger,
        memory=MemoryBudget(limit=options.memory_budget),
    )
    await nursery.start(gateway.run)
    rtmp = RtmpServer(handler=gateway)
    rtmp_host, rtmp_port = await nursery.start(
        rtmp.serve, options.rtmp_addr.host, options.rtmp_addr.port
    )
    whip = WhipIngest(handler=gateway, token=options.whip_token, host_addresses=options.whip_hosts)
    await nursery.start(whip.run)
    whep = WhepPlayback(
        source=gateway,
        token=options.whep_token,
        host_addresses=options.whip_hosts,
        max_sessions=options.whep_max_sessions,
    )
    await nursery.start(whep.run)

    def status() -> dict[str, Any]:
        out: dict[str, Any] = {"role": role, "version": lpstream.__version__}
        out.update(gateway.status())
        out["orchestrators"] = pool.status()
        out["rtmp"] = attrs.asdict(rtmp.statistics())
        out["whip"] = attrs.asdict(whip.statistics())
        out["whep"] = attrs.asdict(whep.statistics())
        out["http"] = attrs.asdict(server.statistics())
        out["memory"] = {
            "rss": process_rss(),
            "budget": gateway.memory.limit,
            "refused_total": gateway.memory.refused_total,
        }
        if extra_status is not None:
            out.update(extra_status())
        return out

    app = build_app(
        playback=gateway,
        status=status,
        metrics=metrics,
        whip=whip,
        whep=whep,
        ai=gateway,
        limits=options.http_limits,
    )
    server = HttpServer(app, limits=options.http_limits)
    http = await nursery.start(_serve_http, server, options.http_addr)
    rtmp_bound = HostPort(rtmp_host, rtmp_port)
    announce(f"ingest:   rtmp://{rtmp_bound}/live/{{stream}}")
    announce(f"ingest:   http://{http}/whip/{{stream}} (WHIP)")
    announce(f"playback: http://{http}/hls/{{stream}}/index.m3u8")
    announce(f"webrtc:   http://{http}/whep/{{stream}} (WHEP; /whep/{{stream}}/{{rendition}})")
    announce(f"watch:    http://{http}/watch/{{stream}}  (?whep=1: WebRTC)")
    announce(f"status:   http://{http}/api/status")
    return gateway


async def run_gateway(
    options: GatewayOptions,
    announce: Announce = print,
    *,
    chain: ChainOptions | None = None,
    payments: PaymentOptions | None = None,
) -> None:
    """Runs a gateway until cancelled; pays orchestrators when ``chain`` is given."""
    async with trio.open_nursery() as nursery:
        sender = watch = None
        if chain is not None:
            sender, watch = await start_gateway_payments(
                nursery, chain, payments or PaymentOptions()
            )
            announce(f"gateway account: {sender.address}")
        extra = None if sender is None else (lambda: {"payments": {"gateway": sender.status()}})
        await _start_gateway(
            nursery, options, Metrics(), extra, "gateway", announce, sender=sender, watch=watch
        )
        announce("lpstream gateway ready")


async def run_dev(
    gateway_options: GatewayOptions,
    orchestrator_options: OrchestratorOptions,
    *,
    demo_stream: str | None = None,
    payments: PaymentOptions | None = None,
    announce: Announce = print,
) -> None:
    """Gateway, orchestrator and worker in one process; paid on the embedded chain unless
    ``payments`` is None (off-chain)."""
    metrics = Metrics()
    orchestrator = _build_orchestrator(orchestrator_options, metrics)
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(
            serve_quic,
            orchestrator_options.service_addr.host,
            orchestrator_options.service_addr.port,
            orchestrator.handle_connection,
        )
        service = HostPort(host, port)
        announce(f"orchestrator: quic://{service} (remote workers join with --orch-secret)")
        economy: DevEconomy | None = None
        if payments is not None:
            economy = await start_dev_economy(nursery, payments, f"quic://{service}")
            orchestrator.payments = economy.receiver
            announce(
                f"chain: embedded, controller {economy.chain.controller}; "
                f"gateway {economy.sender.address}, orchestrator {economy.receiver.address}"
            )

        def status() -> dict[str, Any]:
            out: dict[str, Any] = {"orchestrator": orchestrator.status()}
            if economy is not None:
                out["payments"] = economy.status()
            return out

        options = attrs.evolve(gateway_options, orch_addrs=(service,))
        await _start_gateway(
            nursery,
            options,
            metrics,
            status,
            "dev",
            announce,
            sender=economy.sender if economy else None,
            watch=economy.watch if economy else None,
        )
        announce("lpstream dev ready")
        if demo_stream:
            nursery.start_soon(
                _push_demo,
                gateway_options.rtmp_addr,
                demo_stream,
                gateway_options.http_addr,
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
