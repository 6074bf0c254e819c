"""TLS on the HTTP port: the server's certificate and key, read once at start.

The contexts are hypercorn's (``Config.create_ssl_context``: TLS 1.2 and later, ECDHE with
AES-GCM, no compression), so HTTP/2 is offered as RFC 7540 requires it; the server
(:mod:`lpstream.http.server`) does the handshakes itself, within its header deadline.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import attrs
from hypercorn.config import Config as HypercornConfig

from lpstream.errors import ConfigError

__all__ = ["ALPN", "ServerTls", "load_server_tls"]

ALPN = ("h2", "http/1.1")
"""What the HTTP port offers by ALPN, in order of preference."""
_REFUSAL_ALPN = ("http/1.1",)
"""What a connection over the cap is offered: its ``503`` is written as HTTP/1.1."""


@attrs.frozen(kw_only=True)
class ServerTls:
    """The HTTP port's TLS contexts, both holding the same certificate and key."""

    context: ssl.SSLContext
    """For served connections: HTTP/2 or HTTP/1.1, as the client prefers."""
    refusal_context: ssl.SSLContext
    """For connections answered ``503`` (over ``max_connections``): HTTP/1.1 only."""


def _context(cert: str, key: str, alpn: tuple[str, ...]) -> ssl.SSLContext:
    config = HypercornConfig()
    config.certfile, config.keyfile = cert, key
    config.alpn_protocols = list(alpn)
    context = config.create_ssl_context()
    assert context is not None  # both files are set
    return context


def _read_pem(path: str, flag: str, marker: bytes) -> bytes:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None
    if marker not in text:
        raise ConfigError(f"{flag}: {path} holds no PEM {marker.decode().strip('- ').lower()}")
    return text


def load_server_tls(cert: str | None, key: str | None) -> ServerTls | None:
    """The TLS of the HTTP port from PEM files (``--tls-cert``, ``--tls-key``); None when
    neither is given (plain HTTP).

    Raises:
        ConfigError: one file given without the other; a file that cannot be read or holds no
            PEM certificate (key); an encrypted key; a key that does not match the
            certificate.
    """
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise ConfigError(f"{given} needs {missing} too (HTTPS takes both, PEM files)")
    _read_pem(cert, "--tls-cert", b"CERTIFICATE-----")
    if b"ENCRYPTED" in _read_pem(key, "--tls-key", b"PRIVATE KEY-----"):
        # OpenSSL would ask for its passphrase on the terminal.
        raise ConfigError(f"--tls-key: {key} is encrypted; give the key unencrypted")
    try:
        return ServerTls(
            context=_context(cert, key, ALPN), refusal_context=_context(cert, key, _REFUSAL_ALPN)
        )
    except ssl.SSLError as exc:
        raise ConfigError(
            f"--tls-cert/--tls-key: cannot use {cert} with {key}: {exc.reason or exc}"
        ) from None
