"""What access control is asked and what it answers: a publish or play request, a grant, a
refusal; and the one way a secret becomes an identity that can be logged."""

from __future__ import annotations

import hashlib
import ipaddress
import urllib.parse
from collections.abc import Mapping
from typing import Literal, TypeAlias

import attrs

from lpstream.media import VideoProfile

__all__ = [
    "Decision",
    "Grant",
    "ParamValue",
    "PlayProtocol",
    "PlayRequest",
    "PublishProtocol",
    "PublishRequest",
    "Refusal",
    "host_of",
    "identity_of",
    "secret_identity",
]

PublishProtocol: TypeAlias = Literal["rtmp", "whip", "srt"]
PlayProtocol: TypeAlias = Literal["hls", "whep"]
ParamValue: TypeAlias = str | int | float | bool
"""A live AI pipeline parameter (as ``POST /api/ai/{stream}`` takes them)."""

STREAM_KEY_PARAMETER = "key"
"""The query parameter that carries a stream key (``rtmp://host/live/{stream}?key=…``)."""
TOKEN_PARAMETERS = ("jwt", "token")
"""The query parameters that carry a token (a JWT, or what a webhook reads)."""


def secret_identity(kind: str, secret: str) -> str:
    """``kind:`` and a short hash of ``secret``: who presented it, without the secret itself
    (so it can be logged and shown)."""
    return f"{kind}:{hashlib.sha256(secret.encode()).hexdigest()[:12]}"


def host_of(remote_addr: str) -> str:
    """The host of ``host:port`` (``[v6]:port``, or a bare host)."""
    if remote_addr.startswith("["):
        return remote_addr[1:].split("]", 1)[0]
    host, sep, port = remote_addr.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host
    try:
        return str(ipaddress.ip_address(remote_addr))
    except ValueError:
        return remote_addr if not sep else host


def identity_of(token: str | None, remote_addr: str) -> str:
    """Who presented ``token`` (``key:`` and its short hash), or, with none, the client's
    address (``addr:HOST``): the identity where nothing more specific is known."""
    if token:
        return secret_identity("key", token)
    return f"addr:{host_of(remote_addr)}" if remote_addr else "anonymous"


def _query_values(query: str) -> Mapping[str, str]:
    """The first value of each parameter of a query string."""
    values: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=False):
        values.setdefault(name, value)
    return values


@attrs.frozen(kw_only=True)
class PublishRequest:
    """Someone asks to publish a stream."""

    stream: str
    """The stream name (query string removed)."""
    protocol: PublishProtocol
    """How: ``rtmp``, ``whip`` or ``srt``."""
    url: str
    """The URL the client asked for, as it gave it (query string included)."""
    query: str = ""
    """The query string of the request (without ``?``): of the RTMP URL, the OBS stream key
    (``{stream}?key=…``) or the WHIP URL."""
    remote_addr: str = ""
    """The client's ``host:port``."""
    bearer: str | None = None
    """The ``Authorization: Bearer`` token (WHIP), if any."""

    @classmethod
    def from_rtmp(
        cls, *, tc_url: str, app: str, publish_name: str, remote_addr: str
    ) -> PublishRequest:
        """The request of an RTMP ``publish``: ``publish_name`` is what the client sent (OBS
        sends its stream key there, ``{stream}?key=…``); the query of the app or ``tc_url``
        counts too. The URL is ``tc_url/publish_name``."""
        stream, _, name_query = publish_name.partition("?")
        base = tc_url or f"rtmp:///{app}"
        base_query = urllib.parse.urlsplit(base).query or app.partition("?")[2]
        query = "&".join(q for q in (name_query, base_query) if q)
        return cls(
            stream=stream,
            protocol="rtmp",
            url=f"{base.split('?', 1)[0].rstrip('/')}/{publish_name}",
            query=query,
            remote_addr=remote_addr,
        )

    @property
    def stream_key(self) -> str | None:
        """The stream key: ``?key=…``, else the bearer token."""
        return _query_values(self.query).get(STREAM_KEY_PARAMETER) or self.bearer

    def credentials(self) -> tuple[str, ...]:
        """Every secret the client presented, each once: stream key, tokens, bearer."""
        values = _query_values(self.query)
        found = [values.get(name) for name in (STREAM_KEY_PARAMETER, *TOKEN_PARAMETERS)]
        return tuple(dict.fromkeys(c for c in (*found, self.bearer) if c))


@attrs.frozen(kw_only=True)
class PlayRequest:
    """Someone asks to watch a stream."""

    stream: str
    """The stream name."""
    protocol: PlayProtocol
    """How: ``hls`` or ``whep``."""
    url: str
    """The URL asked for."""
    remote_addr: str = ""
    """The client's ``host:port``."""
    token: str | None = None
    """The token presented (``?token=…`` for HLS, the bearer for WHEP), if any."""


@attrs.frozen(kw_only=True)
class Grant:
    """Yes, and what comes with it."""

    identity: str
    """Who: a short hash of the key or token, a JWT's subject, what a webhook named, or the
    client's address where nothing was asked. Never a secret."""
    profiles: tuple[VideoProfile, ...] | None = None
    """The stream's ladder, where a webhook set it; None: the node's."""
    pipeline: str | None = None
    """A live AI pipeline to run on the stream, where a webhook set one."""
    params: Mapping[str, ParamValue] = attrs.field(factory=dict)
    """That pipeline's parameters."""
    record: bool = False
    """Whether the stream is to be recorded."""
    spend_limit_wei: int | None = None
    """The most this publisher may spend, in wei; None: no limit of its own."""


@attrs.frozen(kw_only=True)
class Refusal:
    """No, and why (the client is told)."""

    reason: str
    """One line for the client."""
    status: Literal[401, 403, 503] = 403
    """401: no valid credentials (none, or not valid); 403: valid ones that do not allow
    this; 503: could not decide now (a hook or key server is down)."""


Decision: TypeAlias = Grant | Refusal
