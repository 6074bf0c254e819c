"""The node's configuration as frozen sections, each setting with its one default.

How this works: every setting is a field of a section, declared with :func:`setting` — its
default, its help (which the flag shows), how text becomes its value, whether it is a secret.
Its name is its key everywhere: the field ``max_ingest_bitrate`` is the flag
``--max-ingest-bitrate``, the variable ``LPSTREAM_MAX_INGEST_BITRATE`` and the key
``max-ingest-bitrate`` of a configuration file. The command line (``lpstream.cli``) makes its
flags from these fields and :meth:`Config.from_values` builds the sections from what the flags,
the environment and the file gave, so a default is written here and nowhere else. The few
defaults that differ by command on purpose are in :data:`ROLE_DEFAULTS`, with the reason.

This module imports nothing heavy: ``lpstream --help`` reads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from lpstream.config.values import (
    HostPort,
    Parse,
    address,
    bitrate_text,
    memory_budget_text,
    parse_addresses,
    parse_bitrate,
    parse_memory_budget,
    parse_pipeline_params,
    parse_pipeline_price,
    parse_pixels,
    pixels_text,
    sized,
)

__all__ = [
    "ROLE_DEFAULTS",
    "SECTIONS",
    "AccessSection",
    "AiSection",
    "ChainSection",
    "Config",
    "HttpSection",
    "IngestSection",
    "LimitsSection",
    "NodeSection",
    "OrchestratorSection",
    "PaymentsSection",
    "PlaybackSection",
    "SelectionSection",
    "Setting",
    "WorkerSection",
    "key_of",
    "setting_of",
]

_SETTING = "lpstream.setting"


@attrs.frozen(kw_only=True)
class Setting:
    """How one field is set from text and shown."""

    help: str
    """What it does, as ``--help`` says it."""
    kind: type = str
    """``str``, ``int``, ``float`` or ``bool`` (a flag without a value); what ``parse`` gives
    otherwise."""
    low: float | None = None
    """Smallest number allowed (``int`` and ``float``)."""
    high: float | None = None
    """Largest number allowed."""
    choices: tuple[str, ...] = ()
    """The values allowed, if only some are."""
    parse: Parse | None = None
    """Text to value, where it is more than a number or a string."""
    show: Callable[[Any], Any] | None = None
    """Value to what a configuration file writes (a string, number, boolean or list)."""
    multiple: bool = False
    """The flag may be repeated; the value is a tuple (a list in a file)."""
    secret: bool = False
    """Masked by ``lpstream config show``."""


def setting(default: Any, help: str, **spec: Any) -> Any:
    """A section field: its default and how it is set (see :class:`Setting`)."""
    return attrs.field(default=default, metadata={_SETTING: Setting(help=help, **spec)})


def setting_of(field: attrs.Attribute[Any]) -> Setting:
    """The :class:`Setting` of a section field."""
    return field.metadata[_SETTING]  # type: ignore[no-any-return]


def key_of(name: str) -> str:
    """The key of a field: ``max_ingest_bitrate`` -> ``max-ingest-bitrate``."""
    return name.replace("_", "-")


_RTMP_ADDR = HostPort("127.0.0.1", 1935)
_HTTP_ADDR = HostPort("127.0.0.1", 8935)
_SERVICE_ADDR = HostPort("127.0.0.1", 8936)
_NO_PARAMS: Any = attrs.Factory(dict)
_address_1935 = address(1935)
_address_8935 = address(8935)
_address_8936 = address(8936)
_json = json.dumps


@attrs.frozen(kw_only=True)
class IngestSection:
    """Where broadcasters publish and how their streams are cut."""

    rtmp_addr: HostPort = setting(  # noqa: RUF009 (a field specifier)
        _RTMP_ADDR,
        "Where broadcasters push RTMP: rtmp://HOST:PORT/live/{stream}.",
        kind=HostPort,
        parse=_address_1935,
    )
    whip_host: tuple[str, ...] = setting(
        (),
        "Address to offer as a WHIP and WHEP ICE host candidate (repeat); default: every "
        "interface address but loopback. Use the public address behind a port forward, "
        "127.0.0.1 on one machine.",
        multiple=True,
    )
    segment_duration: float = setting(
        2.0,
        "Target segment length in seconds (segments are cut at keyframes).",
        kind=float,
        low=0.5,
        high=10.0,
    )


@attrs.frozen(kw_only=True)
class PlaybackSection:
    """What viewers get: the ladder, LL-HLS parts, WebRTC viewers, how long an ended stream
    stays."""

    profiles: str | None = setting(
        None,
        "JSON file with the transcoding ladder (go-livepeer format); default 360p + 240p.",
    )
    part_target: float = setting(
        0.2,
        "LL-HLS part length in seconds (parts are cut at frames; players get the source "
        "rendition part by part and hold back 3 parts: 0.2 s parts keep hls.js about 1.2 s "
        "behind the camera).",
        kind=float,
        low=0.1,
        high=1.0,
    )
    whep_max_sessions: int = setting(
        100,
        "WHEP (WebRTC) viewers this node serves at once; more get 503 (0 refuses all).",
        kind=int,
        low=0,
    )
    end_linger: float = setting(
        60.0,
        "Seconds an ended stream's playlists and segments stay served (and in memory); a "
        "publish of the same name within it continues them.",
        kind=float,
        low=0,
        high=3600,
    )


@attrs.frozen(kw_only=True)
class AccessSection:
    """Who may publish and watch (publish keys, JWTs and API tokens join these)."""

    whip_token: str | None = setting(
        None,
        "Bearer token WHIP publishers must send (Authorization: Bearer ...); default: none.",
        secret=True,
    )
    whep_token: str | None = setting(
        None,
        "Bearer token WHEP viewers must send (Authorization: Bearer ...); default: none, "
        "anyone may watch (as with HLS).",
        secret=True,
    )


@attrs.frozen(kw_only=True)
class SelectionSection:
    """Which orchestrators a gateway uses."""

    orch_addr: tuple[HostPort, ...] = setting(
        (),
        "Orchestrator QUIC address (repeat, or separate with commas). Without it and without "
        "--orch-webhook-url, a paid gateway uses the chain's active set.",
        kind=HostPort,
        parse=parse_addresses,
        show=lambda addrs: [str(a) for a in addrs],
        multiple=True,
    )
    orch_webhook_url: str | None = setting(
        None, 'Discovery webhook answering [{"address": "host:port", "score": 0.9}, ...].'
    )
    selection_stake_weight: float = setting(0.7, "Selection: stake.", kind=float, low=0)
    selection_price_weight: float = setting(0.0, "Selection: price.", kind=float, low=0)
    selection_random_weight: float = setting(0.3, "Selection: chance.", kind=float, low=0)
    selection_seed: int | None = setting(
        None,
        "Seed the selection draws (reproducible runs and tests); default: random.",
        kind=int,
    )


@attrs.frozen(kw_only=True)
class PaymentsSection:
    """Prices and tickets."""

    offchain: bool = setting(False, "Run without payments (no chain).", kind=bool)
    price_per_unit: int = setting(0, "Orchestrator price: wei per unit.", kind=int, low=0)
    pixels_per_unit: int = setting(1, "Pixels in a price unit.", kind=int, low=1)
    max_price_per_unit: int | None = setting(
        None,
        "Gateway: refuse orchestrators asking more wei per unit than this (default: no limit).",
        kind=int,
        low=0,
    )
    ticket_ev: int = setting(10**12, "Target EV per ticket, wei.", kind=int, low=1)
    max_face_value: int = setting(
        0,
        "Cap on a ticket's face value in wei (0: none); lower caps win more often.",
        kind=int,
        low=0,
    )
    price_per_second: int = setting(
        1_000_000_000_000,
        "Paid nodes: wei per second of a live AI session, for pipelines without their own "
        "--pipeline-price.",
        kind=int,
        low=0,
    )
    pipeline_price: tuple[tuple[str, int], ...] = setting(
        (),
        "Paid nodes: NAME=WEI, the price per second of one pipeline (repeat).",
        kind=tuple,
        parse=parse_pipeline_price,
        show=lambda prices: [f"{name}={wei}" for name, wei in prices],
        multiple=True,
    )
    max_price_per_second: int | None = setting(
        None,
        "Paid gateways: wei per second a live AI session may cost at most; orchestrators "
        "asking more for the pipeline are not used. Default: no limit.",
        kind=int,
        low=0,
    )
    data_dir: str | None = setting(
        ".lpstream",
        "Where the winning-ticket queue (SQLite) lives.",
    )


@attrs.frozen(kw_only=True)
class ChainSection:
    """How a paid node reaches its chain (and, for ``dev``, the embedded chain's pace)."""

    eth_url: str | None = setting(None, "Ethereum JSON-RPC URL (e.g. from `lpstream chain`).")
    controller: str | None = setting(None, "Address of the protocol's Controller contract.")
    keystore: str | None = setting(None, "Encrypted JSON keystore of this node's Ethereum account.")
    passphrase_file: str | None = setting(
        None, "File holding the keystore passphrase (mode 0600); prompted for if absent."
    )
    block_time: float = setting(0.5, "Embedded chain: s/block.", kind=float, low=0.01, high=60)
    round_length: int = setting(
        100,
        "Embedded chain: blocks per round (more than the 40-block ticket expiry).",
        kind=int,
        low=45,
    )
    initialize_rounds: bool = setting(
        False, "Initialize each new round on chain as soon as it starts.", kind=bool
    )

    def missing(self) -> list[str]:
        """The flags a paid node needs that are not set."""
        given = {"--eth-url": self.eth_url, "--controller": self.controller}
        given["--keystore"] = self.keystore
        return [flag for flag, value in given.items() if not value]


@attrs.frozen(kw_only=True)
class OrchestratorSection:
    """The orchestrator's service and the secret its remote workers present."""

    service_addr: HostPort = setting(  # noqa: RUF009 (a field specifier)
        _SERVICE_ADDR,
        "UDP address of the orchestrator's QUIC service.",
        kind=HostPort,
        parse=_address_8936,
    )
    orch_secret: str | None = setting(
        None, "Secret remote workers must present (dev: random if absent).", secret=True
    )


@attrs.frozen(kw_only=True)
class WorkerSection:
    """The worker that transcodes and runs pipelines."""

    capacity: int = setting(2, "Sessions the worker takes at once.", kind=int, low=1, high=64)
    encoder: str = setting(
        "auto",
        "Video encoder: auto picks NVENC when a GPU is present, else libx264.",
        choices=("auto", "libx264", "nvenc"),
    )


@attrs.frozen(kw_only=True)
class AiSection:
    """Live AI run on every stream."""

    pipeline: str = setting(
        "",
        "Live AI pipeline run on every stream published (its output is the 'ai' rendition, "
        "/hls/{stream}/ai/index.m3u8); default: none (start one with POST /api/ai/{stream}).",
    )
    pipeline_params: dict[str, str | int | float | bool] = setting(  # noqa: RUF009 (a field specifier)
        _NO_PARAMS,
        "Starting parameters of --pipeline, as a JSON object, e.g. '{\"strength\": 0.5}'.",
        kind=dict,
        parse=parse_pipeline_params,
        show=_json,
    )


_SECONDS = {"kind": float, "low": 0.5, "high": 3600}


@attrs.frozen(kw_only=True)
class HttpSection:
    """The HTTP server and what one client may cost it."""

    http_addr: HostPort | None = setting(  # noqa: RUF009 (a field specifier)
        _HTTP_ADDR,
        "HTTP for playback (/hls, /whep, /watch), WHIP ingest (/whip), /api/status and /metrics.",
        kind=HostPort,
        parse=_address_8935,
    )
    http_max_connections: int = setting(
        1024,
        "HTTP connections open at once (WebSockets included); 32 more are answered 503, the "
        "rest wait. Lowered to fit the open-file limit (raised to the hard limit at start), "
        "with 256 descriptors kept for the rest of the node.",
        kind=int,
        low=8,
    )
    http_keep_alive_timeout: float = setting(
        5.0,
        "Seconds an idle HTTP connection is kept, and the most a client may take to send a "
        "request's headers.",
        **_SECONDS,
    )
    http_send_timeout: float = setting(
        30.0,
        "Seconds a write may wait for an HTTP client to read before it is dropped.",
        **_SECONDS,
    )
    http_body_timeout: float = setting(
        10.0,
        "Seconds an HTTP request body may take to arrive whole; slower ones get 408.",
        **_SECONDS,
    )
    http_max_uploads: int = setting(
        64,
        "HTTP request bodies (WHIP/WHEP offers, AI starts) being received at once, "
        "node-wide; more get 503.",
        kind=int,
        low=1,
    )
    http_dead_peer_timeout: float = setting(
        60.0,
        "Seconds until an HTTP connection whose client vanished without closing is dropped "
        "(TCP keepalive probes it from half of this on).",
        **_SECONDS,
    )


@attrs.frozen(kw_only=True)
class LimitsSection:
    """What publishers may send and how much memory the node may take."""

    max_ingest_pixels: int = setting(
        4096 * 2304,
        "Largest picture a publisher may send, as WIDTHxHEIGHT or a pixel count (0: none); a "
        "larger one is refused at its first frame.",
        kind=int,
        parse=sized(parse_pixels),
        show=pixels_text,
    )
    max_ingest_bitrate: int = setting(
        60_000_000,
        "Most bits per second one publisher may send, averaged over 2 s (e.g. 60M, 8000k; 0: "
        "none). Over it the publish is stopped with a clear error; a segment is limited to "
        "what 8 s at this rate (plus 2 s of burst, plus 10%) can fill.",
        kind=int,
        parse=sized(parse_bitrate),
        show=bitrate_text,
    )
    memory_budget: int | None = setting(
        None,
        "Resident memory (e.g. 4G, 512M; 0: none) above which new work is refused (a new "
        "stream: RTMP error or HTTP 503; a live AI session or an orchestrator job: 503) "
        "instead of the process growing; auto: 75% of the machine's (or the container's) "
        "memory.",
        kind=int,
        parse=parse_memory_budget,
        show=memory_budget_text,
    )


@attrs.frozen(kw_only=True)
class NodeSection:
    """The process itself."""

    log_level: str = setting(
        "info", "How much to log (to stderr).", choices=("debug", "info", "warning", "error")
    )
    demo_stream: str | None = setting(
        None, "Push a test pattern into this stream name with ffmpeg."
    )


SECTIONS: Mapping[str, type] = {
    "ingest": IngestSection,
    "playback": PlaybackSection,
    "access": AccessSection,
    "selection": SelectionSection,
    "payments": PaymentsSection,
    "chain": ChainSection,
    "orchestrator": OrchestratorSection,
    "worker": WorkerSection,
    "ai": AiSection,
    "http": HttpSection,
    "limits": LimitsSection,
    "node": NodeSection,
}
"""Every section by its name (its table in a configuration file)."""

ROLE_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    # dev runs the whole network in one process: its in-process worker is the only one, the
    # embedded chain's tickets need a price to pay, and a run keeps nothing by default.
    "dev": {"capacity": 4, "price_per_unit": 1, "data_dir": None},
    # An orchestrator's HTTP is an admin port (status, metrics), off unless asked for.
    "orchestrator": {"http_addr": None},
}
"""The defaults that differ by command, on purpose; every other default is its field's."""


@attrs.frozen(kw_only=True)
class Config:
    """A node's whole configuration, one section each."""

    ingest: IngestSection = attrs.Factory(IngestSection)
    playback: PlaybackSection = attrs.Factory(PlaybackSection)
    access: AccessSection = attrs.Factory(AccessSection)
    selection: SelectionSection = attrs.Factory(SelectionSection)
    payments: PaymentsSection = attrs.Factory(PaymentsSection)
    chain: ChainSection = attrs.Factory(ChainSection)
    orchestrator: OrchestratorSection = attrs.Factory(OrchestratorSection)
    worker: WorkerSection = attrs.Factory(WorkerSection)
    ai: AiSection = attrs.Factory(AiSection)
    http: HttpSection = attrs.Factory(HttpSection)
    limits: LimitsSection = attrs.Factory(LimitsSection)
    node: NodeSection = attrs.Factory(NodeSection)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], *, role: str | None = None) -> Config:
        """The configuration from parsed values by field name (what the flags gave); a field
        not in ``values`` takes ``role``'s default, else its own."""
        chosen = {**ROLE_DEFAULTS.get(role or "", {}), **values}
        sections = {
            name: section(
                **{f.name: chosen[f.name] for f in attrs.fields(section) if f.name in chosen}
            )
            for name, section in SECTIONS.items()
        }
        return cls(**sections)

    def items(self) -> Iterator[tuple[str, attrs.Attribute[Any], Any]]:
        """Every setting as (section name, field, value), in the order of the sections."""
        for name in SECTIONS:
            section = getattr(self, name)
            for field in attrs.fields(type(section)):
                yield name, field, getattr(section, field.name)
