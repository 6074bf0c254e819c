"""The settings of what broadcasters and viewers reach: ingest, playback, who may publish and
watch, the HTTP server, and what one publisher or client may cost."""

from __future__ import annotations

import attrs

from lpstream.config.setting import address_setting, setting
from lpstream.config.values import (
    HostPort,
    bitrate_text,
    memory_budget_text,
    parse_bitrate,
    parse_host_port,
    parse_memory_budget,
    parse_pixels,
    pixels_text,
    sized,
)
from lpstream.errors import ConfigError

__all__ = ["AccessSection", "HttpSection", "IngestSection", "LimitsSection", "PlaybackSection"]


def _srt_passphrase(text: str, flag: str) -> str:
    if not 10 <= len(text) <= 79:
        raise ConfigError(f"{flag}: an SRT passphrase has 10 to 79 characters (got {len(text)})")
    return text


def _srt_pbkeylen(text: str, flag: str) -> int:
    if text.strip() not in ("0", "16", "24", "32"):
        raise ConfigError(f"{flag}: the SRT key length is 16, 24 or 32 bytes (or 0), not {text!r}")
    return int(text)


@attrs.frozen(kw_only=True)
class IngestSection:
    """Where broadcasters publish and how their streams are cut."""

    rtmp_addr: HostPort = address_setting(  # noqa: RUF009 (a field specifier)
        HostPort("127.0.0.1", 1935),
        "Where broadcasters push RTMP: rtmp://HOST:PORT/live/{stream}.",
    )
    whip_host: tuple[str, ...] = setting(
        (),
        "Address to offer as a WHIP and WHEP ICE host candidate (repeat); default: every "
        "interface address but loopback. Use the public address behind a port forward, "
        "127.0.0.1 on one machine.",
        multiple=True,
    )
    srt_addr: HostPort | None = setting(  # noqa: RUF009 (a field specifier)
        None,
        "Also take SRT publishers (MPEG-TS, caller mode) on this UDP host:port: "
        "srt://HOST:PORT?streamid=#!::r=live/{stream},m=publish (or streamid=live/{stream}); "
        "default: off.",
        kind=HostPort,
        parse=lambda text, flag: parse_host_port(text, flag=flag),
    )
    srt_passphrase: str | None = setting(
        None,
        "Passphrase SRT publishers must encrypt with (10 to 79 characters); default: none.",
        parse=_srt_passphrase,
        secret=True,
    )
    srt_pbkeylen: int = setting(
        0,
        "AES key length in bytes of SRT encryption with --srt-passphrase: 16, 24 or 32; 0 takes "
        "the publisher's.",
        parse=_srt_pbkeylen,
    )
    srt_latency: int = setting(
        120,
        "SRT receiver latency in milliseconds: how long lost packets may take to be sent again.",
        kind=int,
        low=20,
        high=10_000,
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
    """Who may publish, watch and use the API, and from which web pages."""

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
    publish_key: tuple[str, ...] = setting(
        (),
        "A stream key publishers may use (repeat for more): ?key=KEY on the RTMP URL, "
        "{stream}?key=KEY as OBS's stream key, or the WHIP bearer token.",
        multiple=True,
        secret=True,
    )
    publish_keys: str | None = setting(
        None, "File of publish keys, one a line (# starts a comment), as --publish-key."
    )
    jwt_jwks: str | None = setting(
        None,
        "JSON Web Key Set (a file, or an http(s) URL fetched and cached) whose keys sign JWTs "
        "(RS256, ES256, EdDSA) that allow publishing or watching the streams their "
        "lpstream_permissions claim names; sent as ?jwt=, ?token=, the stream key or a bearer "
        "token.",
    )
    jwt_secret: str | None = setting(
        None, "HS256 secret (at least 32 bytes) of JWTs, as --jwt-jwks.", secret=True
    )
    jwt_audience: str | None = setting(
        None, "The aud every JWT must carry; default: aud is not checked."
    )
    auth_webhook_url: str | None = setting(
        None,
        "Ask this URL before accepting a publish (and a play with --play-auth webhook): "
        "POSTed JSON, a 2xx allows (its JSON answer may set profiles, pipeline, params, "
        "record, spend_limit_wei), anything else refuses; go-livepeer's -authWebhookUrl.",
    )
    auth_webhook_timeout: float = setting(
        2.0,
        "Seconds the auth webhook has to answer; later is a refusal.",
        kind=float,
        low=0.1,
        high=60,
    )
    auth_webhook_cache: float = setting(
        10.0,
        "Seconds an auth webhook's decision is reused for the same stream, protocol and "
        "token (0: ask every time).",
        kind=float,
        low=0,
        high=3600,
    )
    play_auth: str | None = setting(
        None,
        "Who may watch over HLS (?token=...) and WHEP (bearer token): jwt (a JWT allowing "
        "read) or webhook (the auth webhook decides); default: anyone.",
        choices=("jwt", "webhook"),
    )
    name_grace: float = setting(
        30.0,
        "Seconds a publisher that dropped keeps its stream name: with publish authorization "
        "on, only the same key or token may publish it again meanwhile.",
        kind=float,
        low=0,
        high=86400,
    )
    api_spend_limit: int | None = setting(
        None,
        "Paid gateways: wei per hour the live AI sessions one API client (token) starts may "
        "spend together; past it they are stopped with the reason. Default: no limit.",
        kind=int,
        low=0,
    )
    api_token: tuple[str, ...] = setting(
        (),
        "Bearer token for /api/* (and the live AI WebSocket, also as ?token=), /metrics and "
        "the batch AI routes that spend the gateway's money (/text-to-image, /image-to-image, "
        "/upscale, /audio-to-text, /llm, /v1/*: the OpenAI client's API key) (repeat for "
        "more); without one they answer loopback clients only.",
        multiple=True,
        secret=True,
    )
    api_token_file: str | None = setting(
        None, "File of API tokens, one a line (# starts a comment), as --api-token."
    )
    cors_origin: tuple[str, ...] = setting(
        (),
        "A web origin (https://example.com, or *) whose pages may use HLS, /api/status and "
        "the API (repeat for more); WHIP and WHEP allow any origin already.",
        multiple=True,
    )


_SECONDS = {"kind": float, "low": 0.5, "high": 3600}


@attrs.frozen(kw_only=True)
class HttpSection:
    """The HTTP server and what one client may cost it."""

    http_addr: HostPort | None = address_setting(  # noqa: RUF009 (a field specifier)
        HostPort("127.0.0.1", 8935),
        "HTTP for playback (/hls, /whep, /watch), WHIP ingest (/whip), /api/status and /metrics.",
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
    tls_cert: str | None = setting(
        None,
        "PEM certificate (chain) for HTTPS on --http-addr, with --tls-key: HTTP/2 and HTTP/1.1 "
        "by ALPN; default: plain HTTP.",
    )
    tls_key: str | None = setting(
        None, "PEM private key (unencrypted) of --tls-cert; both are read at start."
    )
    metrics_addr: HostPort | None = setting(  # noqa: RUF009 (a field specifier)
        None,
        "Also serve GET /metrics, and nothing else, on this host:port over plain HTTP, with no "
        "API token (for a private address a scraper reaches); default: none.",
        kind=HostPort,
        parse=lambda text, flag: parse_host_port(text, flag=flag),
    )


@attrs.frozen(kw_only=True)
class LimitsSection:
    """What publishers may send, how many streams each may hold, and how much memory the
    node may take."""

    max_ingest_pixels: int = setting(
        4096 * 2304,
        "Largest picture a publisher may send, as WIDTHxHEIGHT or a pixel count (0: none); a "
        "larger one is refused at its first frame.",
        kind=int,
        parse=sized(parse_pixels),
        show=pixels_text,
    )
    max_ingest_fps: int = setting(
        120,
        "Most video frames per second a publisher may send, by the stream's own timestamps "
        "and by arrival, over 2 s (0: none); over it the publish is stopped with a clear "
        "error (a 1000 fps stream within its first fraction of a second).",
        kind=int,
        low=0,
        high=100_000,
    )
    max_streams: int = setting(
        128,
        "Live streams this gateway takes at once (0: no limit); past it a publish is refused "
        "(RTMP error, WHIP 503) with the reason.",
        kind=int,
        low=0,
    )
    max_streams_per_key: int = setting(
        32,
        "Live streams one publisher identity may hold at once (0: no limit): what publish "
        "authorization names it, else its address; past it a publish is refused (RTMP "
        "error, WHIP 503) with the reason.",
        kind=int,
        low=0,
    )
    max_streams_per_addr: int = setting(
        32,
        "Live streams one source address (an IPv4 address, an IPv6 /64) may publish at once "
        "(0: no limit); past it a publish is refused (RTMP error, WHIP 503) with the reason.",
        kind=int,
        low=0,
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
