"""QUIC between lpstream nodes: a thin trio driver for aioquic, and its TLS configurations."""

from lpstream.quic.driver import (
    SEND_BUFFER_HIGH_WATER,
    STREAM_REFUSED,
    QuicConnectionHandle,
    QuicConnectionStatistics,
    QuicStream,
    open_quic_connection,
    serve_quic,
)
from lpstream.quic.tls import (
    ALPN,
    DEFAULT_MAX_DATAGRAM_SIZE,
    LOOPBACK_MAX_DATAGRAM_SIZE,
    client_configuration,
    make_self_signed_certificate,
    server_configuration,
)

__all__ = [
    "ALPN",
    "DEFAULT_MAX_DATAGRAM_SIZE",
    "LOOPBACK_MAX_DATAGRAM_SIZE",
    "SEND_BUFFER_HIGH_WATER",
    "STREAM_REFUSED",
    "QuicConnectionHandle",
    "QuicConnectionStatistics",
    "QuicStream",
    "client_configuration",
    "make_self_signed_certificate",
    "open_quic_connection",
    "serve_quic",
    "server_configuration",
]
