"""TLS material and aioquic configurations for lpstream's QUIC links (ALPN ``lpstream/1``).

Defaults are tuned for bulk video between nodes:

- Flow-control windows: ``max_stream_data`` is the per-stream receive window. The driver
  extends it only as the application reads (see ``flow_control.py``), so it is both the most one
  stream can buffer on the receiving side and the most it can have in flight; 2 MiB covers
  1 Gbit/s at 16 ms RTT. ``max_data`` (connection-wide) starts larger and aioquic raises it as
  data arrives, so several streams are never held back by it.
- Datagram size: aioquic has no path-MTU discovery, so ``max_datagram_size`` is what every
  packet is built to. ``DEFAULT_MAX_DATAGRAM_SIZE`` (1350) fits inside the 1500-byte Ethernet
  MTU with IPv6 and tunnel headers to spare, as QUIC stacks commonly choose. On loopback (MTU
  65536) bigger datagrams mean fewer packets, and aioquic's cost is per packet (about 30 us
  of Python on each side), so ``open_quic_connection`` and ``serve_quic`` use
  ``LOOPBACK_MAX_DATAGRAM_SIZE`` for a loopback peer unless told otherwise (their
  ``loopback_datagram_size`` argument). Measured with ``benchmarks/quic_throughput.py``
  between two processes: about 300-380 Mbit/s at 1350 bytes, 2.6-3.2 Gbit/s at 16384. The
  ceiling is 16384: aioquic writes the STREAM frame length as a two-byte varint (< 16384).
- Congestion control: CUBIC (RFC 9438), the usual choice for fast long links; on loopback,
  where nothing is lost, CUBIC and Reno measure the same.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from typing import TypedDict, Unpack

from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "ALPN",
    "DEFAULT_MAX_DATAGRAM_SIZE",
    "LOOPBACK_MAX_DATAGRAM_SIZE",
    "NO_EXPIRY",
    "QuicTransport",
    "client_configuration",
    "make_self_signed_certificate",
    "server_configuration",
]

ALPN = "lpstream/1"
"""The ALPN token both ends of an lpstream QUIC connection must offer."""

DEFAULT_MAX_DATAGRAM_SIZE = 1350
"""QUIC payload per UDP datagram on real networks (fits a 1500-byte MTU with room to spare)."""

LOOPBACK_MAX_DATAGRAM_SIZE = 16384
"""QUIC payload per UDP datagram to a loopback peer (loopback MTU is 65536)."""

MAX_DATAGRAM_SIZE_CEILING = 16384
"""aioquic encodes STREAM frame lengths in two bytes, so larger packets would break."""

DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_MAX_DATA = 16 * 1024 * 1024
DEFAULT_MAX_STREAM_DATA = 2 * 1024 * 1024
DEFAULT_CONGESTION_CONTROL = "cubic"
ONE_YEAR = datetime.timedelta(days=365)


NO_EXPIRY = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
"""``notAfter`` of a certificate with no well-defined expiration (RFC 5280, 4.1.2.5)."""


def make_self_signed_certificate(
    common_name: str = "lpstream", *, lifetime: datetime.timedelta | None = ONE_YEAR
) -> tuple[bytes, bytes]:
    """Make a self-signed EC P-256 certificate.

    Args:
        common_name: the subject and the DNS name in the subjectAltName; ``localhost``,
            ``127.0.0.1`` and ``::1`` are added so a loopback peer can verify it when pinned.
        lifetime: how long it is valid; None for no expiry (:data:`NO_EXPIRY`), as a
            certificate named by its fingerprint needs (``lpstream.quic.pinning``).

    Returns:
        ``(certificate_pem, private_key_pem)``.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    not_after = NO_EXPIRY if lifetime is None else now + lifetime
    alt_names: list[x509.GeneralName] = [x509.DNSName(common_name)]
    if common_name != "localhost":
        alt_names.append(x509.DNSName("localhost"))
    alt_names += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


class QuicTransport(TypedDict, total=False):
    """How a connection carries data, the same for both ends; a setting left out takes the
    default named."""

    alpn: str
    """The application protocol to offer (client) or accept (server); :data:`ALPN`."""
    idle_timeout: float
    """Seconds without a packet from the peer before the connection closes; 30."""
    max_datagram_size: int
    """QUIC payload per UDP datagram (1200..16384); :data:`DEFAULT_MAX_DATAGRAM_SIZE`."""
    max_data: int
    """Initial connection-wide receive window; 16 MiB."""
    max_stream_data: int
    """Per-stream receive window (see the module comment); 2 MiB."""
    congestion_control: str
    """``"cubic"`` (the default) or ``"reno"``."""


def _configuration(
    transport: QuicTransport, *, is_client: bool, server_name: str | None = None
) -> QuicConfiguration:
    unknown = transport.keys() - QuicTransport.__annotations__.keys()
    if unknown:
        raise TypeError(f"unknown QUIC transport settings: {', '.join(sorted(unknown))}")
    max_datagram_size = transport.get("max_datagram_size", DEFAULT_MAX_DATAGRAM_SIZE)
    if not 1200 <= max_datagram_size <= MAX_DATAGRAM_SIZE_CEILING:
        raise ValueError(
            f"max_datagram_size must be between 1200 and {MAX_DATAGRAM_SIZE_CEILING}, "
            f"not {max_datagram_size}"
        )
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[transport.get("alpn", ALPN)],
        idle_timeout=transport.get("idle_timeout", DEFAULT_IDLE_TIMEOUT),
        max_datagram_size=max_datagram_size,
        max_data=transport.get("max_data", DEFAULT_MAX_DATA),
        max_stream_data=transport.get("max_stream_data", DEFAULT_MAX_STREAM_DATA),
        congestion_control_algorithm=transport.get(
            "congestion_control", DEFAULT_CONGESTION_CONTROL
        ),
        server_name=server_name,
    )


def server_configuration(
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    **transport: Unpack[QuicTransport],
) -> QuicConfiguration:
    """Build the configuration a node serves QUIC with.

    Args:
        cert_pem: the certificate (PEM); a fresh self-signed one when ``None``.
        key_pem: its private key (PEM); required when ``cert_pem`` is given.
        **transport: see :class:`QuicTransport` (``alpn`` is the protocol to accept).
    """
    configuration = _configuration(transport, is_client=False)
    if cert_pem is None:
        if key_pem is not None:
            raise ValueError("key_pem given without cert_pem")
        cert_pem, key_pem = make_self_signed_certificate()
    elif key_pem is None:
        raise ValueError("cert_pem given without key_pem")
    certificates = x509.load_pem_x509_certificates(cert_pem)
    configuration.certificate = certificates[0]
    configuration.certificate_chain = certificates[1:]
    configuration.private_key = serialization.load_pem_private_key(key_pem, password=None)
    return configuration


def client_configuration(
    *,
    verify: bool = False,
    cadata: bytes | None = None,
    server_name: str | None = None,
    **transport: Unpack[QuicTransport],
) -> QuicConfiguration:
    """Build the configuration a node dials QUIC with.

    Nodes name each other's certificates by fingerprint (``open_quic_connection``'s ``pin``),
    not through the Web PKI, so certificate chains are not verified unless asked.

    Args:
        verify: verify the server's certificate chain and name.
        cadata: PEM certificates to trust when verifying (a pinned self-signed certificate);
            the system store when ``None``.
        server_name: the name to send (SNI) and verify; the host dialled when ``None``.
        **transport: see :class:`QuicTransport` (``alpn`` is the protocol to offer).
    """
    configuration = _configuration(transport, is_client=True, server_name=server_name)
    if verify:
        configuration.verify_mode = ssl.CERT_REQUIRED
        if cadata is not None:
            configuration.load_verify_locations(cadata=cadata)
    else:
        configuration.verify_mode = ssl.CERT_NONE
    return configuration
