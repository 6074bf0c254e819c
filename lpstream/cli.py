"""The ``lpstream`` command. Every flag can also be set by an ``LPSTREAM_*`` variable:
``--rtmp-addr`` is ``LPSTREAM_RTMP_ADDR``, ``--orch-secret`` is ``LPSTREAM_ORCH_SECRET``.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import click

import lpstream
from lpstream.cliopts import F, option, run_until_stopped
from lpstream.config import (
    HostPort,
    parse_bitrate,
    parse_byte_size,
    parse_host_port,
    parse_pixels,
)
from lpstream.errors import ConfigError, LpstreamError
from lpstream.media import VideoProfile, load_profiles

log = logging.getLogger("lpstream")

__all__ = ["main"]


def _addr(flag: str, default_port: int) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            if isinstance(value, tuple | list):
                items = [v for item in value for v in str(item).split(",") if v.strip()]
                return tuple(
                    parse_host_port(v, default_port=default_port, flag=flag) for v in items
                )
            return parse_host_port(value, default_port=default_port, flag=flag)
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from None

    return convert


def _profiles(path: str | None) -> tuple[VideoProfile, ...]:
    try:
        return load_profiles(path)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--profiles") from None


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("hypercorn").setLevel(logging.WARNING)
    logging.getLogger("quic").setLevel(logging.WARNING)


def _announce(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


_run = run_until_stopped


log_level = option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    help="How much to log (to stderr).",
)
profiles_opt = option(
    "--profiles",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON file with the transcoding ladder (go-livepeer format); default 360p + 240p.",
)
segment_opt = option(
    "--segment-duration",
    type=click.FloatRange(0.5, 10.0),
    default=2.0,
    help="Target segment length in seconds (segments are cut at keyframes).",
)
part_opt = option(
    "--part-target",
    type=click.FloatRange(0.1, 1.0),
    default=0.2,
    help="LL-HLS part length in seconds (parts are cut at frames; players get the source "
    "rendition part by part and hold back 3 parts: 0.2 s parts keep hls.js about 1.2 s "
    "behind the camera).",
)
rtmp_opt = option(
    "--rtmp-addr",
    default="127.0.0.1:1935",
    callback=_addr("--rtmp-addr", 1935),
    help="Where broadcasters push RTMP: rtmp://HOST:PORT/live/{stream}.",
)
http_opt = option(
    "--http-addr",
    default="127.0.0.1:8935",
    callback=_addr("--http-addr", 8935),
    help="HTTP for playback (/hls, /whep, /watch), WHIP ingest (/whip), /api/status and /metrics.",
)
whip_token_opt = option(
    "--whip-token",
    default=None,
    help="Bearer token WHIP publishers must send (Authorization: Bearer ...); default: none.",
)
whip_host_opt = option(
    "--whip-host",
    multiple=True,
    help="Address to offer as a WHIP and WHEP ICE host candidate (repeat); default: every "
    "interface address but loopback. Use the public address behind a port forward, 127.0.0.1 "
    "on one machine.",
)
whep_token_opt = option(
    "--whep-token",
    default=None,
    help="Bearer token WHEP viewers must send (Authorization: Bearer ...); default: none, "
    "anyone may watch (as with HLS).",
)
whep_sessions_opt = option(
    "--whep-max-sessions",
    type=click.IntRange(0),
    default=100,
    help="WHEP (WebRTC) viewers this node serves at once; more get 503 (0 refuses all).",
)
pipeline_opt = option(
    "--pipeline",
    default=None,
    help="Live AI pipeline run on every stream published (its output is the 'ai' rendition, "
    "/hls/{stream}/ai/index.m3u8); default: none (start one with POST /api/ai/{stream}).",
)
pipeline_params_opt = option(
    "--pipeline-params",
    default=None,
    help="Starting parameters of --pipeline, as a JSON object, e.g. '{\"strength\": 0.5}'.",
)
price_per_second_opt = option(
    "--price-per-second",
    type=click.IntRange(0),
    default=1_000_000_000_000,
    help="Paid nodes: wei per second of a live AI session, for pipelines without their own "
    "--pipeline-price.",
)
max_price_per_second_opt = option(
    "--max-price-per-second",
    type=click.IntRange(0),
    default=None,
    help="Paid gateways: wei per second a live AI session may cost at most; orchestrators "
    "asking more for the pipeline are not used. Default: no limit.",
)
pipeline_price_opt = option(
    "--pipeline-price",
    multiple=True,
    help="Paid nodes: NAME=WEI, the price per second of one pipeline (repeat).",
)


def _parsed(
    parse: Callable[..., int], flag: str
) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return value
        if value == "auto" and flag == "--memory-budget":
            from lpstream.budget import default_memory_budget

            return default_memory_budget()
        try:
            return parse(str(value), flag=flag)
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from None

    return convert


memory_budget_opt = option(
    "--memory-budget",
    default="auto",
    callback=_parsed(parse_byte_size, "--memory-budget"),
    help="Resident memory (e.g. 4G, 512M; 0: none) above which new work is refused (a new "
    "stream: RTMP error or HTTP 503; a live AI session or an orchestrator job: 503) instead "
    "of the process growing; auto: 75% of the machine's (or the container's) memory.",
)


def limit_flags(fn: F) -> F:
    """--max-ingest-pixels, --max-ingest-bitrate, --end-linger, handed to the command as
    ``ingest_limits`` (an ``IngestLimits``)."""

    @functools.wraps(fn)
    def command(
        *args: Any,
        max_ingest_pixels: int,
        max_ingest_bitrate: int,
        end_linger: float,
        **kwargs: Any,
    ) -> Any:
        from lpstream.gateway.ingest_limits import IngestLimits

        limits = IngestLimits(
            max_pixels=max_ingest_pixels, max_bitrate=max_ingest_bitrate, end_linger=end_linger
        )
        return fn(*args, ingest_limits=limits, **kwargs)

    wrapped: Any = command
    for decorate in (
        option(
            "--end-linger",
            type=click.FloatRange(0, 3600),
            default=60.0,
            help="Seconds an ended stream's playlists and segments stay served (and in "
            "memory); a publish of the same name within it continues them.",
        ),
        option(
            "--max-ingest-bitrate",
            default="60M",
            callback=_parsed(parse_bitrate, "--max-ingest-bitrate"),
            help="Most bits per second one publisher may send, averaged over 2 s (e.g. 60M, "
            "8000k; 0: none). Over it the publish is stopped with a clear error; a segment is "
            "limited to what 8 s at this rate (plus 2 s of burst, plus 10%) can fill.",
        ),
        option(
            "--max-ingest-pixels",
            default="4096x2304",
            callback=_parsed(parse_pixels, "--max-ingest-pixels"),
            help="Largest picture a publisher may send, as WIDTHxHEIGHT or a pixel count (0: "
            "none); a larger one is refused at its first frame.",
        ),
    ):
        wrapped = decorate(wrapped)
    return wrapped  # type: ignore[no-any-return]


def http_limit_flags(fn: F) -> F:
    """--http-max-connections and the HTTP timeouts, handed to the command as ``http_limits``
    (an ``HttpLimits``)."""

    @functools.wraps(fn)
    def command(
        *args: Any,
        http_max_connections: int,
        http_keep_alive_timeout: float,
        http_send_timeout: float,
        http_body_timeout: float,
        http_max_uploads: int,
        http_dead_peer_timeout: float,
        **kwargs: Any,
    ) -> Any:
        from lpstream.http.limits import HttpLimits

        limits = HttpLimits(
            max_connections=http_max_connections,
            keep_alive_timeout=http_keep_alive_timeout,
            send_timeout=http_send_timeout,
            body_timeout=http_body_timeout,
            max_uploads=http_max_uploads,
            dead_peer_timeout=http_dead_peer_timeout,
        )
        return fn(*args, http_limits=limits, **kwargs)

    wrapped: Any = command
    seconds = click.FloatRange(0.5, 3600)
    for decorate in (
        option(
            "--http-dead-peer-timeout",
            type=seconds,
            default=60.0,
            help="Seconds until an HTTP connection whose client vanished without closing is "
            "dropped (TCP keepalive probes it from half of this on).",
        ),
        option(
            "--http-max-uploads",
            type=click.IntRange(1),
            default=64,
            help="HTTP request bodies (WHIP/WHEP offers, AI starts) being received at once, "
            "node-wide; more get 503.",
        ),
        option(
            "--http-body-timeout",
            type=seconds,
            default=10.0,
            help="Seconds an HTTP request body may take to arrive whole; slower ones get 408.",
        ),
        option(
            "--http-send-timeout",
            type=seconds,
            default=30.0,
            help="Seconds a write may wait for an HTTP client to read before it is dropped.",
        ),
        option(
            "--http-keep-alive-timeout",
            type=seconds,
            default=5.0,
            help="Seconds an idle HTTP connection is kept, and the most a client may take to "
            "send a request's headers.",
        ),
        option(
            "--http-max-connections",
            type=click.IntRange(8),
            default=1024,
            help="HTTP connections open at once (WebSockets included); 32 more are answered "
            "503, the rest wait. Lowered to fit the open-file limit (raised to the hard limit "
            "at start), with 256 descriptors kept for the rest of the node.",
        ),
    ):
        wrapped = decorate(wrapped)
    return wrapped  # type: ignore[no-any-return]


def _pipeline_params(text: str | None) -> dict[str, str | int | float | bool]:
    if not text:
        return {}
    from lpstream.errors import ProtocolError
    from lpstream.http.ai import parse_params

    try:
        return parse_params(json.loads(text))
    except (ValueError, ProtocolError) as exc:
        raise click.BadParameter(str(exc), param_hint="--pipeline-params") from None


def _pipeline_prices(values: tuple[str, ...]) -> dict[str, int]:
    prices: dict[str, int] = {}
    for value in values:
        name, _, wei = value.partition("=")
        if not name or not wei.isdigit():
            raise click.BadParameter(f"{value!r}: expected NAME=WEI", param_hint="--pipeline-price")
        prices[name] = int(wei)
    return prices


service_opt = option(
    "--service-addr",
    default="127.0.0.1:8936",
    callback=_addr("--service-addr", 8936),
    help="UDP address of the orchestrator's QUIC service.",
)
encoder_opt = option(
    "--encoder",
    type=click.Choice(["auto", "libx264", "nvenc"]),
    default="auto",
    help="Video encoder: auto picks NVENC when a GPU is present, else libx264.",
)


def chain_flags(fn: F) -> F:
    """--eth-url, --controller, --keystore, --passphrase-file: how a node reaches its chain."""
    fn = option(
        "--passphrase-file",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="File holding the keystore passphrase (mode 0600); prompted for if absent.",
    )(fn)
    fn = option(
        "--keystore",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Encrypted JSON keystore of this node's Ethereum account.",
    )(fn)
    fn = option(
        "--controller", default=None, help="Address of the protocol's Controller contract."
    )(fn)
    fn = option(
        "--eth-url", default=None, help="Ethereum JSON-RPC URL (e.g. from `lpstream chain`)."
    )(fn)
    return fn


def _chain_options(
    offchain: bool,
    eth_url: str | None,
    controller: str | None,
    keystore: str | None,
    passphrase_file: str | None,
) -> Any:
    from lpstream.paid import ChainOptions

    if offchain:
        return None
    missing = [
        flag
        for flag, value in (
            ("--eth-url", eth_url),
            ("--controller", controller),
            ("--keystore", keystore),
        )
        if not value
    ]
    if missing:
        raise click.UsageError(
            f"a paid node needs {', '.join(missing)} (or run free with --offchain)"
        )
    assert eth_url and controller and keystore
    return ChainOptions(
        eth_url=eth_url,
        controller=controller,
        keystore=Path(keystore),
        passphrase_file=Path(passphrase_file) if passphrase_file else None,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(lpstream.__version__, prog_name="lpstream")
def main() -> None:
    """lpstream: an open-marketplace node for live video and real-time AI video."""


@main.command()
@rtmp_opt
@http_opt
@service_opt
@profiles_opt
@segment_opt
@part_opt
@encoder_opt
@option("--capacity", type=click.IntRange(1, 64), default=4, help="Sessions the worker takes.")
@option("--orch-secret", default=None, help="Secret remote workers must present (default: random).")
@option("--offchain", is_flag=True, default=False, help="Run without payments (no chain).")
@option(
    "--demo-stream", default=None, help="Push a test pattern into this stream name with ffmpeg."
)
@option(
    "--price-per-unit", type=click.IntRange(0), default=1, help="Orchestrator price: wei per unit."
)
@option("--pixels-per-unit", type=click.IntRange(1), default=1, help="Pixels in a price unit.")
@option(
    "--max-price-per-unit",
    type=click.IntRange(0),
    default=None,
    help="Gateway: refuse orchestrators above this many wei per unit (default: no limit).",
)
@option("--ticket-ev", type=click.IntRange(1), default=10**12, help="Target EV per ticket, wei.")
@option(
    "--max-face-value",
    type=click.IntRange(0),
    default=0,
    help="Cap on a ticket's face value in wei (0: none); lower caps win more often.",
)
@option(
    "--block-time", type=click.FloatRange(0.01, 60), default=0.5, help="Embedded chain: s/block."
)
@option(
    "--round-length",
    type=click.IntRange(45),
    default=100,
    help="Embedded chain: blocks per round (more than the 40-block ticket expiry).",
)
@option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the ticket queue lives (default: a fresh temporary folder).",
)
@whip_token_opt
@whip_host_opt
@whep_token_opt
@whep_sessions_opt
@pipeline_opt
@pipeline_params_opt
@price_per_second_opt
@pipeline_price_opt
@max_price_per_second_opt
@limit_flags
@http_limit_flags
@memory_budget_opt
@log_level
def dev(
    rtmp_addr: HostPort,
    http_addr: HostPort,
    service_addr: HostPort,
    profiles: str | None,
    segment_duration: float,
    part_target: float,
    encoder: str,
    capacity: int,
    orch_secret: str | None,
    offchain: bool,
    demo_stream: str | None,
    price_per_unit: int,
    pixels_per_unit: int,
    max_price_per_unit: int | None,
    ticket_ev: int,
    max_face_value: int,
    block_time: float,
    round_length: int,
    data_dir: str | None,
    whip_token: str | None,
    whip_host: tuple[str, ...],
    whep_token: str | None,
    whep_max_sessions: int,
    pipeline: str | None,
    pipeline_params: str | None,
    price_per_second: int,
    pipeline_price: tuple[str, ...],
    max_price_per_second: int | None,
    ingest_limits: Any,
    http_limits: Any,
    memory_budget: int,
    log_level: str,
) -> None:
    """Gateway, orchestrator and worker in one process, paying with tickets on an embedded
    chain (or free with --offchain), ready for a stream."""
    from lpstream.node import GatewayOptions, OrchestratorOptions, new_secret, run_dev
    from lpstream.paid import PaymentOptions

    _setup_logging(log_level)
    payments = None
    if not offchain:
        folder = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="lpstream-dev-"))
        payments = PaymentOptions(
            price_per_unit=price_per_unit,
            pixels_per_unit=pixels_per_unit,
            ticket_ev=ticket_ev,
            max_face_value=max_face_value,
            max_price=None
            if max_price_per_unit is None
            else Fraction(max_price_per_unit, pixels_per_unit),
            block_time=block_time,
            round_length=round_length,
            data_dir=folder,
        )
    gateway_options = GatewayOptions(
        rtmp_addr=rtmp_addr,
        http_addr=http_addr,
        orch_addrs=(),
        profiles=_profiles(profiles),
        segment_duration=segment_duration,
        part_target=part_target,
        whip_token=whip_token,
        whip_hosts=whip_host,
        whep_token=whep_token,
        whep_max_sessions=whep_max_sessions,
        pipeline=pipeline or "",
        pipeline_params=_pipeline_params(pipeline_params),
        max_price_per_second=max_price_per_second,
        ingest_limits=ingest_limits,
        http_limits=http_limits,
        memory_budget=memory_budget,
    )
    orch_options = OrchestratorOptions(
        service_addr=service_addr,
        secret=orch_secret or new_secret(),
        local_capacity=capacity,
        encoder=encoder,
        price_per_second=price_per_second,
        pipeline_prices=_pipeline_prices(pipeline_price),
        memory_budget=memory_budget,
    )
    _run(
        lambda: run_dev(
            gateway_options,
            orch_options,
            demo_stream=demo_stream,
            payments=payments,
            announce=_announce,
        )
    )


@main.command()
@rtmp_opt
@http_opt
@option(
    "--orch-addr",
    multiple=True,
    callback=_addr("--orch-addr", 8936),
    help="Orchestrator QUIC address (repeat, or separate with commas). Without it and without "
    "--orch-webhook-url, a paid gateway uses the chain's active set.",
)
@option(
    "--orch-webhook-url",
    default=None,
    help='Discovery webhook answering [{"address": "host:port", "score": 0.9}, ...].',
)
@option("--selection-stake-weight", type=click.FloatRange(0), default=0.7, help="Selection: stake.")
@option("--selection-price-weight", type=click.FloatRange(0), default=0.0, help="Selection: price.")
@option(
    "--selection-random-weight", type=click.FloatRange(0), default=0.3, help="Selection: chance."
)
@option(
    "--selection-seed",
    type=int,
    default=None,
    help="Seed the selection draws (reproducible runs and tests); default: random.",
)
@profiles_opt
@segment_opt
@part_opt
@option("--offchain", is_flag=True, default=False, help="Run without payments.")
@chain_flags
@option(
    "--max-price-per-unit",
    type=click.IntRange(0),
    default=None,
    help="Refuse orchestrators asking more wei per unit than this (default: no limit).",
)
@option("--pixels-per-unit", type=click.IntRange(1), default=1, help="Pixels in a price unit.")
@whip_token_opt
@whip_host_opt
@whep_token_opt
@whep_sessions_opt
@pipeline_opt
@pipeline_params_opt
@max_price_per_second_opt
@limit_flags
@http_limit_flags
@memory_budget_opt
@log_level
def gateway(
    rtmp_addr: HostPort,
    http_addr: HostPort,
    orch_addr: tuple[HostPort, ...],
    orch_webhook_url: str | None,
    selection_stake_weight: float,
    selection_price_weight: float,
    selection_random_weight: float,
    selection_seed: int | None,
    profiles: str | None,
    segment_duration: float,
    part_target: float,
    offchain: bool,
    eth_url: str | None,
    controller: str | None,
    keystore: str | None,
    passphrase_file: str | None,
    max_price_per_unit: int | None,
    pixels_per_unit: int,
    whip_token: str | None,
    whip_host: tuple[str, ...],
    whep_token: str | None,
    whep_max_sessions: int,
    pipeline: str | None,
    pipeline_params: str | None,
    max_price_per_second: int | None,
    ingest_limits: Any,
    http_limits: Any,
    memory_budget: int,
    log_level: str,
) -> None:
    """Take streams from broadcasters, pay orchestrators to transcode, serve viewers."""
    from lpstream.gateway.selection import SelectionWeights
    from lpstream.node import GatewayOptions, run_gateway
    from lpstream.paid import PaymentOptions

    chain = _chain_options(offchain, eth_url, controller, keystore, passphrase_file)
    if not orch_addr and not orch_webhook_url and chain is None:
        raise click.UsageError(
            "give --orch-addr or --orch-webhook-url (or run paid: the chain's active set)"
        )
    try:
        weights = SelectionWeights(
            stake=selection_stake_weight,
            price=selection_price_weight,
            random=selection_random_weight,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--selection-*-weight") from None
    payments = PaymentOptions(
        max_price=None
        if max_price_per_unit is None
        else Fraction(max_price_per_unit, pixels_per_unit)
    )
    _setup_logging(log_level)
    options = GatewayOptions(
        rtmp_addr=rtmp_addr,
        http_addr=http_addr,
        orch_addrs=orch_addr,
        profiles=_profiles(profiles),
        segment_duration=segment_duration,
        part_target=part_target,
        webhook_url=orch_webhook_url,
        weights=weights,
        selection_seed=selection_seed,
        whip_token=whip_token,
        whip_hosts=whip_host,
        whep_token=whep_token,
        whep_max_sessions=whep_max_sessions,
        pipeline=pipeline or "",
        pipeline_params=_pipeline_params(pipeline_params),
        max_price_per_second=max_price_per_second,
        ingest_limits=ingest_limits,
        http_limits=http_limits,
        memory_budget=memory_budget,
    )
    _run(lambda: run_gateway(options, announce=_announce, chain=chain, payments=payments))


@main.command()
@service_opt
@option(
    "--http-addr",
    default=None,
    callback=_addr("--http-addr", 7935),
    help="Admin HTTP (/api/status, /metrics); off unless given.",
)
@option("--orch-secret", required=True, help="Secret remote workers must present.")
@option(
    "--capacity",
    type=click.IntRange(0, 64),
    default=2,
    help="Sessions the in-process worker takes (0: remote workers only).",
)
@encoder_opt
@option("--offchain", is_flag=True, default=False, help="Run without payments.")
@chain_flags
@option("--price-per-unit", type=click.IntRange(0), default=0, help="Price: wei per unit.")
@option("--pixels-per-unit", type=click.IntRange(1), default=1, help="Pixels in a price unit.")
@option("--ticket-ev", type=click.IntRange(1), default=10**12, help="Target EV per ticket, wei.")
@option(
    "--max-face-value", type=click.IntRange(0), default=0, help="Cap on face values, wei (0: none)."
)
@option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=".lpstream",
    help="Where the winning-ticket queue (SQLite) lives.",
)
@option(
    "--initialize-rounds",
    is_flag=True,
    default=False,
    help="Initialize each new round on chain as soon as it starts.",
)
@price_per_second_opt
@pipeline_price_opt
@http_limit_flags
@memory_budget_opt
@log_level
def orchestrator(
    service_addr: HostPort,
    http_addr: HostPort | None,
    orch_secret: str,
    capacity: int,
    encoder: str,
    offchain: bool,
    eth_url: str | None,
    controller: str | None,
    keystore: str | None,
    passphrase_file: str | None,
    price_per_unit: int,
    pixels_per_unit: int,
    ticket_ev: int,
    max_face_value: int,
    data_dir: str,
    initialize_rounds: bool,
    price_per_second: int,
    pipeline_price: tuple[str, ...],
    http_limits: Any,
    memory_budget: int,
    log_level: str,
) -> None:
    """Sell transcoding and live AI: take jobs over QUIC and run them on workers."""
    from lpstream.node import OrchestratorOptions, run_orchestrator
    from lpstream.paid import PaymentOptions

    chain = _chain_options(offchain, eth_url, controller, keystore, passphrase_file)
    payments = PaymentOptions(
        price_per_unit=price_per_unit,
        pixels_per_unit=pixels_per_unit,
        ticket_ev=ticket_ev,
        max_face_value=max_face_value,
        data_dir=Path(data_dir),
    )
    _setup_logging(log_level)
    options = OrchestratorOptions(
        service_addr=service_addr,
        secret=orch_secret,
        http_addr=http_addr,
        local_capacity=capacity,
        encoder=encoder,
        price_per_second=price_per_second,
        pipeline_prices=_pipeline_prices(pipeline_price),
        memory_budget=memory_budget,
        http_limits=http_limits,
    )
    _run(
        lambda: run_orchestrator(
            options,
            announce=_announce,
            chain=chain,
            payments=payments,
            initialize_rounds=initialize_rounds,
        )
    )


@main.command()
@option(
    "--orch-addr",
    required=True,
    callback=_addr("--orch-addr", 8936),
    help="The orchestrator to work for.",
)
@option("--orch-secret", required=True, help="The orchestrator's secret.")
@option("--capacity", type=click.IntRange(1, 64), default=2, help="Sessions to take at once.")
@encoder_opt
@log_level
def worker(
    orch_addr: HostPort, orch_secret: str, capacity: int, encoder: str, log_level: str
) -> None:
    """Transcode for an orchestrator (dials it and registers with its secret)."""
    from lpstream.node import run_worker

    _setup_logging(log_level)
    _run(lambda: run_worker(orch_addr, orch_secret, capacity, encoder, announce=_announce))


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder.",
)
@profiles_opt
@encoder_opt
@log_level
def transcode(source: str, output: str, profiles: str | None, encoder: str, log_level: str) -> None:
    """Transcode one file through the worker's ladder code: one .ts per profile in OUTPUT."""
    from workers import transcode_file

    _setup_logging(log_level)
    ladder = _profiles(profiles)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    try:
        results = transcode_file(Path(source), out, ladder, encoder=encoder)
    except LpstreamError as exc:
        raise click.ClickException(str(exc)) from None
    for r in results:
        click.echo(
            f"{r.name:>8}  {r.width}x{r.height}  {r.frames} frames  "
            f"{r.size / 1e6:.2f} MB  -> {out / (r.name + '.ts')}"
        )


def _add_chain_commands() -> None:
    # Imported last: these modules use ``option`` from this one.
    from lpstream.account_cli import account, chain

    main.add_command(account)
    main.add_command(chain)


_add_chain_commands()
