"""The ``lpstream`` command. Every flag can also be set by an ``LPSTREAM_*`` variable
(``--rtmp-addr`` is ``LPSTREAM_RTMP_ADDR``) and by a key of a ``--config`` TOML file
(``rtmp-addr``); the flags are made from the settings of ``lpstream.config``.

Each command imports what it runs inside its function: ``lpstream --help`` loads no chain,
no media or AI library and no server.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import click

import lpstream
from lpstream.account import account, chain
from lpstream.cliopts import F, config_option, flag, option, run_until_stopped
from lpstream.config import ROLE_DEFAULTS, SECTIONS, Config, dump_toml
from lpstream.config.values import address
from lpstream.errors import LpstreamError

log = logging.getLogger("lpstream")

__all__ = ["main"]


def _flags(*names: str, role: str | None = None) -> Callable[[F], F]:
    """The flags of these settings, listed by ``--help`` in this order."""

    def decorate(fn: F) -> F:
        for name in reversed(names):
            fn = flag(name, role=role)(fn)
        return fn

    return decorate


def _profiles(path: str | None) -> Any:
    from lpstream.media import load_profiles

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

_existing_file = click.Path(exists=True, dir_okay=False)
profiles_opt = flag("profiles", type=_existing_file)
encoder_opt = flag("encoder")
log_level = flag("log_level")

_VIEWER_FLAGS = (
    "whip_token",
    "whip_host",
    "whep_token",
    "whep_max_sessions",
    "pipeline",
    "pipeline_params",
)
_ACCESS_FLAGS = (
    "publish_key",
    "publish_keys",
    "jwt_jwks",
    "jwt_secret",
    "jwt_audience",
    "auth_webhook_url",
    "auth_webhook_timeout",
    "auth_webhook_cache",
    "play_auth",
    "name_grace",
    "api_spend_limit",
    "api_token",
    "api_token_file",
    "cors_origin",
)
_OUTPUT_FLAGS = (
    "record",
    "record_store",
    "record_retention",
    "hls_origin",
    "forward",
    "store_queue",
)
_API_FLAGS = ("api_token", "api_token_file", "cors_origin")
_AI_WORKER_FLAGS = ("gpus", "pipeline_isolation", "pipeline_memory", "warm", "ai_models")
_SRT_FLAGS = ("srt_addr", "srt_passphrase", "srt_pbkeylen", "srt_latency")
_INGEST_LIMIT_FLAGS = (
    "max_ingest_pixels",
    "max_ingest_fps",
    "max_ingest_bitrate",
    "max_streams",
    "max_streams_per_key",
    "max_streams_per_addr",
    "end_linger",
)
_NODE_LIMIT_FLAGS = (
    "http_max_connections",
    "http_keep_alive_timeout",
    "http_send_timeout",
    "http_body_timeout",
    "http_max_uploads",
    "http_dead_peer_timeout",
    "tls_cert",
    "tls_key",
    "metrics_addr",
    "memory_budget",
)


def chain_flags(fn: F) -> F:
    """--eth-url, --controller, --keystore, --passphrase-file: how a node reaches its chain."""
    fn = flag("passphrase_file", type=_existing_file)(fn)
    fn = flag("keystore", type=_existing_file)(fn)
    return _flags("eth_url", "controller")(fn)


def _check_paid(config: Config) -> None:
    missing = [] if config.payments.offchain else config.chain.missing()
    if missing:
        raise click.UsageError(
            f"a paid node needs {', '.join(missing)} (or run free with --offchain)"
        )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(lpstream.__version__, prog_name="lpstream")
def main() -> None:
    """lpstream: an open-marketplace node for live video and real-time AI video."""


@main.command()
@config_option
@_flags("rtmp_addr", *_SRT_FLAGS, "http_addr", "service_addr")
@profiles_opt
@_flags("segment_duration", "part_target", "encoder", "capacity", role="dev")
@flag("orch_secret", help="Secret remote workers must present (default: random).")
@_flags("offchain", "demo_stream", "price_per_unit", "pixels_per_unit", role="dev")
@_flags("max_price_per_unit", "max_price_per_capability")
@_flags("ticket_ev", "max_face_value", "block_time", "round_length")
@flag(
    "data_dir",
    role="dev",
    type=click.Path(file_okay=False),
    help="Where the ticket queue and the orchestrator's QUIC identity live (default: a fresh "
    "temporary folder and a new certificate each run).",
)
@_flags(*_VIEWER_FLAGS, "price_per_second", "pipeline_price", "max_price_per_second")
@_flags(*_ACCESS_FLAGS, *_OUTPUT_FLAGS)
@_flags("models_dir", *_AI_WORKER_FLAGS, *_INGEST_LIMIT_FLAGS, *_NODE_LIMIT_FLAGS, "log_level")
def dev(**values: Any) -> None:
    """Gateway, orchestrator and worker in one process, paying with tickets on an embedded
    chain (or free with --offchain), ready for a stream."""
    config = Config.from_values(values, role="dev")
    _setup_logging(config.node.log_level)
    _profiles(config.playback.profiles)
    from lpstream.node import run_dev

    _run(lambda: run_dev(config, announce=_announce))


@main.command()
@config_option
@_flags("rtmp_addr", *_SRT_FLAGS, "http_addr", "orch_addr", "orch_webhook_url")
@_flags(
    "selection_stake_weight",
    "selection_price_weight",
    "selection_random_weight",
    "selection_seed",
)
@profiles_opt
@_flags("segment_duration", "part_target")
@flag("offchain", help="Run without payments.")
@chain_flags
@_flags("max_price_per_unit", "max_price_per_capability", "pixels_per_unit", *_VIEWER_FLAGS)
@flag("max_price_per_second")
@_flags(*_ACCESS_FLAGS, *_OUTPUT_FLAGS)
@_flags(*_INGEST_LIMIT_FLAGS, *_NODE_LIMIT_FLAGS, "log_level")
def gateway(**values: Any) -> None:
    """Take streams from broadcasters, pay orchestrators to transcode, serve viewers."""
    config = Config.from_values(values, role="gateway")
    _check_paid(config)
    selection = config.selection
    if not selection.orch_addr and not selection.orch_webhook_url and config.payments.offchain:
        raise click.UsageError(
            "give --orch-addr or --orch-webhook-url (or run paid: the chain's active set)"
        )
    from lpstream.gateway.selection import SelectionWeights

    try:
        SelectionWeights(
            stake=selection.selection_stake_weight,
            price=selection.selection_price_weight,
            random=selection.selection_random_weight,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--selection-*-weight") from None
    _setup_logging(config.node.log_level)
    _profiles(config.playback.profiles)
    from lpstream.node import run_gateway

    _run(lambda: run_gateway(config, announce=_announce))


@main.command()
@config_option
@flag("service_addr")
@flag(
    "http_addr",
    role="orchestrator",
    parse=address(7935),
    help="Admin HTTP (/api/status, /metrics); off unless given.",
)
@flag("orch_secret", required=True, help="Secret remote workers must present.")
@flag("worker_hello_backoff")
@flag(
    "capacity",
    type=click.IntRange(0, 64),
    help="Work the in-process worker takes, in sessions' worth (one: the default ladder from "
    "a 30 fps source of 640x360 or more, 9.98 Mpx/s); 0: remote workers only.",
)
@encoder_opt
@_flags("models_dir", *_AI_WORKER_FLAGS)
@flag("offchain", help="Run without payments.")
@chain_flags
@flag("price_per_unit", help="Price: wei per unit.")
@_flags("pixels_per_unit", "ticket_ev")
@flag("max_face_value", help="Cap on face values, wei (0: none).")
@flag("data_dir", type=click.Path(file_okay=False))
@_flags("initialize_rounds", "price_per_second", "pipeline_price", *_API_FLAGS)
@_flags(*_NODE_LIMIT_FLAGS, "log_level")
def orchestrator(**values: Any) -> None:
    """Sell transcoding and live AI: take jobs over QUIC and run them on workers."""
    config = Config.from_values(values, role="orchestrator")
    _check_paid(config)
    _setup_logging(config.node.log_level)
    from lpstream.node import run_orchestrator

    _run(lambda: run_orchestrator(config, announce=_announce))


@main.command()
@config_option
@flag("orch_addr", multiple=False, required=True, help="The orchestrator to work for.")
@flag("orch_secret", required=True, help="The orchestrator's secret.")
@flag("capacity")
@encoder_opt
@_flags("models_dir", *_AI_WORKER_FLAGS)
@log_level
def worker(**values: Any) -> None:
    """Transcode for an orchestrator (dials it and registers with its secret)."""
    config = Config.from_values(values, role="worker")
    if len(config.selection.orch_addr) != 1:
        raise click.BadParameter("give one orchestrator", param_hint="--orch-addr")
    _setup_logging(config.node.log_level)
    from lpstream.node import run_worker

    _run(lambda: run_worker(config, announce=_announce))


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
    """Transcode one file through the worker's ladder code into OUTPUT: one .ts per H.264
    profile, one fragmented .mp4 per HEVC or AV1 one."""
    _setup_logging(log_level)
    ladder = _profiles(profiles)
    from workers import transcode_file

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    try:
        results = transcode_file(Path(source), out, ladder, encoder=encoder)
    except LpstreamError as exc:
        raise click.ClickException(str(exc)) from None
    for r in results:
        click.echo(
            f"{r.name:>8}  {r.width}x{r.height}  {r.frames} frames  "
            f"{r.size / 1e6:.2f} MB  -> {out / (r.name + _suffix(ladder, r.name))}"
        )


def _suffix(ladder: Any, name: str) -> str:
    """The file suffix ``transcode`` writes rendition ``name`` under."""
    codec = next((p.codec for p in ladder if p.name == name), "h264")
    return ".ts" if codec == "h264" else ".mp4"


@main.group("config")
def config_group() -> None:
    """The configuration: every setting, its flag, variable and file key."""


def _all_flags(fn: F) -> F:
    names = [f.name for section in SECTIONS.values() for f in attrs.fields(section)]
    return _flags(*names)(fn)


@config_group.command("show")
@config_option
@option(
    "--role",
    type=click.Choice(["dev", "gateway", "orchestrator", "worker"]),
    default="gateway",
    help="Whose defaults to show where they differ by command ("
    + "; ".join(f"{r}: {', '.join(d)}" for r, d in ROLE_DEFAULTS.items())
    + ").",
)
@_all_flags
@click.pass_context
def config_show(ctx: click.Context, /, role: str, **values: Any) -> None:
    """Print the effective configuration as TOML (the keys of --config), secrets masked.

    It takes every flag, variable and --config file a node takes, so it shows what a node
    started the same way would run with."""
    from click.core import ParameterSource

    given = {
        name: value
        for name, value in values.items()
        if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
    }
    config = Config.from_values(given, role=role)
    click.echo(dump_toml(config, header=f"lpstream {lpstream.__version__}: {role}"), nl=False)


main.add_command(account)
main.add_command(chain)
