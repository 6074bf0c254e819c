"""QUIC between lpstream nodes: a thin trio driver for aioquic, and its TLS configurations.

The parts, each in its own module:

- ``flow_control``: the aioquic ``QuicConnection`` subclass that ties stream receive credit to
  what the application read (the only code that touches aioquic internals);
- ``stream``: ``QuicStream``, one bidirectional stream as a trio stream;
- ``connection``: ``QuicConnectionHandle`` and its driver loop (read, feed, drain, write,
  re-arm the timer);
- ``udp``: sockets, name resolution and batched datagram reads;
- ``client``: ``open_quic_connection``; ``server``: ``serve_quic``;
- ``tls``: certificates and aioquic configurations;
- ``pinning``: certificate fingerprints, and the handshake check of a pinned dial.
"""

from lpstream.quic.client import open_quic_connection
from lpstream.quic.connection import (
    STREAM_REFUSED,
    QuicConnectionHandle,
    QuicConnectionStatistics,
)
from lpstream.quic.pinning import CertificatePinError, Fingerprint
from lpstream.quic.server import serve_quic
from lpstream.quic.stream import SEND_BUFFER_HIGH_WATER, QuicStream
from lpstream.quic.tls import (
    ALPN,
    DEFAULT_MAX_DATAGRAM_SIZE,
    LOOPBACK_MAX_DATAGRAM_SIZE,
    NO_EXPIRY,
    QuicTransport,
    client_configuration,
    make_self_signed_certificate,
    server_configuration,
)

__all__ = [
    "ALPN",
    "DEFAULT_MAX_DATAGRAM_SIZE",
    "LOOPBACK_MAX_DATAGRAM_SIZE",
    "NO_EXPIRY",
    "SEND_BUFFER_HIGH_WATER",
    "STREAM_REFUSED",
    "CertificatePinError",
    "Fingerprint",
    "QuicConnectionHandle",
    "QuicConnectionStatistics",
    "QuicStream",
    "QuicTransport",
    "client_configuration",
    "make_self_signed_certificate",
    "open_quic_connection",
    "serve_quic",
    "server_configuration",
]
