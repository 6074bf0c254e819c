"""Where a restream goes: an ``rtmp://``, ``rtmps://`` or ``srt://`` address, checked.

How this works: a forward URL comes from an API caller, so everything in it is checked
before anything connects: its length, its characters (printable ASCII, no spaces), the
scheme, the host (a DNS name or an IP literal) and the port. The URL is split the way FFmpeg
and OBS read these addresses, not as a web URL: ``#`` is an ordinary character (SRT stream ids
such as ``#!::r=live/x,m=publish`` use it unescaped) and the query belongs to the RTMP stream
key (``rtmps://…/rtmp/KEY?s_bl=1&…`` is one key).

* RTMP: ``rtmp[s]://host[:port]/app/key``; the first path segment is the application, the
  rest (with any query) is the stream key. Port 1935 (``rtmps``: 443) when none is given.
* SRT: ``srt://host:port[?streamid=…&passphrase=…&pbkeylen=…&latency=…&mode=caller]``; the
  port is required (SRT has no default) and ``latency`` is in microseconds, as FFmpeg reads
  it. Only caller mode: the node connects out.

A stream key, an SRT stream id and a passphrase are secrets: :attr:`ForwardTarget.redacted` is
the form status and logs show, and the secrets are left out of the value's ``repr``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NoReturn
from urllib.parse import unquote

import attrs

from lpstream.errors import ProtocolError

__all__ = ["MAX_URL_LENGTH", "ForwardTarget", "parse_forward_url"]

MAX_URL_LENGTH = 2048
"""Longest forward URL accepted."""
MASK = "****"
"""What a secret is shown as."""

_DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}
_CONTAINERS = {"rtmp": "flv", "rtmps": "flv", "srt": "mpegts"}
_SRT_PARAMS = ("streamid", "passphrase", "pbkeylen", "latency", "mode")
_SRT_SECRETS = ("streamid", "passphrase")
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_MAX_STREAM_ID = 512
"""libsrt's limit on SRTO_STREAMID."""


@attrs.frozen(kw_only=True)
class ForwardTarget:
    """A checked forward destination (build it with :func:`parse_forward_url`)."""

    url: str = attrs.field(repr=False)
    """The URL as given, secrets included: never log or show it (use :attr:`redacted`)."""
    scheme: str
    """``rtmp``, ``rtmps`` or ``srt``."""
    host: str
    """DNS name or IP address (an IPv6 address without brackets)."""
    port: int
    app: str = ""
    """RTMP application (the first path segment); empty for SRT."""
    stream_key: str = attrs.field(default="", repr=False)
    """RTMP stream key (the rest of the path, with its query); empty for SRT."""
    stream_id: str | None = attrs.field(default=None, repr=False)
    """SRT stream id (``SRTO_STREAMID``), if any."""
    passphrase: str | None = attrs.field(default=None, repr=False)
    """SRT encryption passphrase, if any."""
    pbkeylen: int | None = None
    """SRT key length in bytes (16, 24 or 32) when a passphrase is set."""
    latency_ms: int | None = None
    """SRT latency in milliseconds, if given."""
    redacted: str
    """The URL with the stream key, stream id and passphrase masked: what status shows."""

    @property
    def container(self) -> str:
        """What the destination is sent: ``flv`` for RTMP, ``mpegts`` for SRT."""
        return _CONTAINERS[self.scheme]

    def scrub(self, text: str) -> str:
        """``text`` (an error from the destination, say) with this target's secrets masked."""
        for secret in (self.stream_key, self.stream_id, self.passphrase):
            if not secret:
                continue
            whole = {secret, unquote(secret)}
            forms = whole | {form.partition("?")[0] for form in whole}
            for form in sorted(forms, key=len, reverse=True):
                if len(form) >= 4:
                    text = text.replace(form, MASK)
        return text

    @property
    def tc_url(self) -> str:
        """The RTMP ``tcUrl`` of ``connect``: the URL up to and including the application."""
        return f"{self.scheme}://{_netloc(self.host, self.port)}/{self.app}"


def parse_forward_url(url: str) -> ForwardTarget:
    """Checks a forward URL and splits it into its parts.

    Raises:
        ProtocolError: (code 400) the URL is not one a forward can use; the message says why.
    """
    if not isinstance(url, str):
        _refuse("the forward URL must be a string")
    if len(url) > MAX_URL_LENGTH:
        _refuse(f"the forward URL is {len(url)} characters long (at most {MAX_URL_LENGTH})")
    bad = next((c for c in url if not 0x21 <= ord(c) <= 0x7E), None)
    if bad is not None:
        _refuse(
            f"the forward URL contains {bad!r}: only printable ASCII without spaces "
            "(percent-encode anything else)"
        )
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _CONTAINERS:
        shown = scheme if sep else url[:16]
        _refuse(f"a forward URL must start with rtmp://, rtmps:// or srt:// (got {shown!r})")
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:authority_end], rest[authority_end:]
    host, port = _split_authority(authority, scheme)
    if scheme == "srt":
        return _srt_target(url, host, port, tail)
    return _rtmp_target(url, scheme, host, port, tail)


def _refuse(reason: str) -> NoReturn:
    raise ProtocolError(reason, code=400)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_authority(authority: str, scheme: str) -> tuple[str, int | None]:
    if "@" in authority:
        _refuse("credentials in the forward URL's host part are not supported")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            _refuse("the forward URL's IPv6 address has no closing ']'")
        host, port_text = authority[1:end], authority[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            _refuse(f"{host!r} is not an IPv6 address")
        if port_text and not port_text.startswith(":"):
            _refuse("the forward URL's host part has text after the IPv6 address")
        port_text = port_text[1:]
    else:
        host, _, port_text = authority.partition(":")
        _check_host(host)
    port: int | None = None
    if port_text or authority.endswith(":"):
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            _refuse(f"the forward URL's port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    if not host:
        _refuse(f"the forward URL has no host: {scheme}://HOST[:PORT]/…")
    return host, port


def _check_host(host: str) -> None:
    if not host:
        return
    try:
        ipaddress.IPv4Address(host)
        return
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        _refuse(f"{host!r} is not a valid host name")


def _rtmp_target(url: str, scheme: str, host: str, port: int | None, tail: str) -> ForwardTarget:
    path = tail[1:] if tail.startswith("/") else tail
    app, _, key = path.partition("/")
    if not app or "?" in app or not key:
        _refuse(
            f"an {scheme} forward URL needs an application and a stream key: {scheme}://HOST[:PORT]/APP/KEY"
        )
    port = port if port is not None else _DEFAULT_PORTS[scheme]
    return ForwardTarget(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        app=app,
        stream_key=key,
        redacted=f"{scheme}://{_netloc(host, port)}/{app}/{MASK}",
    )


def _srt_target(url: str, host: str, port: int | None, tail: str) -> ForwardTarget:
    if port is None:
        _refuse("an srt forward URL needs a port: srt://HOST:PORT")
    path, _, query = tail.partition("?")
    if path not in ("", "/"):
        _refuse("an srt forward URL has no path: put a stream id in ?streamid=…")
    params: dict[str, str] = {}
    shown: list[str] = []
    for item in query.split("&") if query else ():
        name, sep, raw = item.partition("=")
        if not sep or name not in _SRT_PARAMS:
            _refuse(
                f"srt forward URL parameter {name!r} is not supported "
                f"(supported: {', '.join(_SRT_PARAMS)}, each as name=value)"
            )
        if name in params:
            _refuse(f"srt forward URL parameter {name!r} is given twice")
        params[name] = unquote(raw)
        shown.append(f"{name}={MASK if name in _SRT_SECRETS else raw}")
    if params.get("mode", "caller") != "caller":
        _refuse("an srt forward connects out: only mode=caller is supported")
    stream_id = params.get("streamid")
    if stream_id is not None and not 0 < len(stream_id.encode()) <= _MAX_STREAM_ID:
        _refuse(f"the srt stream id must be 1 to {_MAX_STREAM_ID} bytes long")
    passphrase = params.get("passphrase")
    if passphrase is not None and not 10 <= len(passphrase) <= 79:
        _refuse("the srt passphrase must be 10 to 79 characters long")
    pbkeylen = _int_param(params, "pbkeylen")
    if pbkeylen is not None and pbkeylen not in (16, 24, 32):
        _refuse("srt pbkeylen must be 16, 24 or 32")
    latency_us = _int_param(params, "latency")
    if latency_us is not None and not 0 <= latency_us <= 60_000_000:
        _refuse("srt latency (in microseconds) must be from 0 to 60000000")
    query_shown = f"?{'&'.join(shown)}" if shown else ""
    return ForwardTarget(
        url=url,
        scheme="srt",
        host=host,
        port=port,
        stream_id=stream_id,
        passphrase=passphrase,
        pbkeylen=pbkeylen,
        latency_ms=None if latency_us is None else latency_us // 1000,
        redacted=f"srt://{_netloc(host, port)}{query_shown}",
    )


def _int_param(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        _refuse(f"srt forward URL parameter {name} must be a whole number (got {raw!r})")
    return int(raw)
