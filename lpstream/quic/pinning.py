"""Certificate pins: a QUIC server named by its certificate's fingerprint, checked in the handshake.

How this works
--------------
lpstream nodes do not use the Web PKI between themselves. An orchestrator serves a self-signed
certificate that it keeps in its data dir (``lpstream.orchestrator.identity``), and whoever
dials it names that certificate by its :class:`Fingerprint`: the SHA-256 of the certificate's
DER bytes, written ``sha256=`` and 64 hex digits. lpstream writes lowercase; it reads either
case, and OpenSSL's colon-separated form (``openssl x509 -noout -fingerprint -sha256``).

A pinned dial (``open_quic_connection(..., pin=...)``) checks the certificate inside aioquic's
TLS client, right after the server's CertificateVerify. At that point the server has proved
that it holds the private key of the certificate it sent, and the client has not sent its
Finished yet, so it has no 1-RTT keys and cannot have sent one byte of application data: a
worker's secret or a gateway's ticket never reaches a server that fails the check. A certificate
with another fingerprint raises TLS's bad_certificate alert; aioquic closes the connection with
CRYPTO_ERROR and the reason, and ``open_quic_connection`` raises :class:`CertificatePinError`,
which names both fingerprints.

This module and ``flow_control`` are the only ones that touch aioquic internals: here, the TLS
client's CertificateVerify handler and the peer certificate it keeps. An aioquic upgrade is
checked here too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable

import attrs
from aioquic._buffer import Buffer  # aioquic.buffer re-exports it implicitly
from aioquic.quic.connection import QuicConnection
from aioquic.tls import AlertBadCertificate, Context
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from lpstream.errors import ConfigError, TransportError

__all__ = [
    "CertificateCheck",
    "CertificatePinError",
    "Fingerprint",
    "PinCheck",
    "check_server_certificate",
    "presented_certificate",
]

CertificateCheck = Callable[[bytes], None]
"""Called with the server certificate's DER bytes; raises ``AlertBadCertificate`` to refuse it."""

_HEX_PIN = re.compile(r"[0-9a-fA-F]{64}")
_OPENSSL_PIN = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){31}")


def _sha256_digest(digest: bytes) -> bytes:
    if len(digest) != 32:
        raise ValueError(f"a SHA-256 digest is 32 bytes, not {len(digest)}")
    return bytes(digest)


@attrs.frozen
class Fingerprint:
    """A certificate's SHA-256 fingerprint: what a pin names (module comment)."""

    digest: bytes = attrs.field(converter=_sha256_digest, repr=lambda digest: digest.hex())
    """The 32 bytes of SHA-256 over the certificate's DER encoding."""

    @classmethod
    def of_certificate(cls, der: bytes) -> Fingerprint:
        """The fingerprint of a certificate given as DER bytes."""
        return cls(hashlib.sha256(der).digest())

    @classmethod
    def of_pem(cls, pem: bytes) -> Fingerprint:
        """The fingerprint of the first certificate in PEM text.

        Raises:
            ValueError: no certificate in ``pem``.
        """
        certificate = x509.load_pem_x509_certificate(pem)
        return cls.of_certificate(certificate.public_bytes(Encoding.DER))

    @classmethod
    def from_text(cls, text: str, *, flag: str = "certificate pin") -> Fingerprint:
        """Reads ``sha256=`` followed by 64 hex digits (either case, colons allowed).

        Raises:
            ConfigError: naming ``flag`` and the form expected.
        """
        algorithm, sep, value = text.strip().partition("=")
        if not sep or algorithm.lower() != "sha256":
            raise ConfigError(
                f"{flag}: {text!r} is not a pin; write sha256= and the certificate's 64 hex digits"
            )
        if not (_HEX_PIN.fullmatch(value) or _OPENSSL_PIN.fullmatch(value)):
            raise ConfigError(f"{flag}: a sha256 pin is 64 hex digits, not {value!r}")
        return cls(bytes.fromhex(value.replace(":", "")))

    def __str__(self) -> str:
        return f"sha256={self.digest.hex()}"


class CertificatePinError(TransportError):
    """A pinned server presented a certificate with another fingerprint: nothing was sent."""

    def __init__(self, peer: str, pinned: Fingerprint, presented: Fingerprint) -> None:
        super().__init__(
            f"refusing {peer}: its certificate is {presented}, not the pinned {pinned}; "
            "nothing was sent to it"
        )
        self.pinned = pinned
        """The fingerprint the address named."""
        self.presented = presented
        """The fingerprint of the certificate the server presented."""


@attrs.define
class PinCheck:
    """A :data:`CertificateCheck` that accepts only the certificate ``pin`` names."""

    pin: Fingerprint
    """The fingerprint a certificate must have."""
    presented: Fingerprint | None = None
    """The server certificate's fingerprint, once the server sent one."""

    @property
    def refused(self) -> bool:
        """Whether the server presented a certificate and it was not the pinned one."""
        return self.presented is not None and self.presented != self.pin

    def __call__(self, der: bytes) -> None:
        self.presented = Fingerprint.of_certificate(der)
        if not hmac.compare_digest(self.presented.digest, self.pin.digest):
            raise AlertBadCertificate(f"certificate {self.presented} is not the pinned {self.pin}")

    def error(self, peer: str) -> CertificatePinError:
        """The error that says what was refused (once ``refused``)."""
        assert self.presented is not None
        return CertificatePinError(peer, self.pin, self.presented)


def check_server_certificate(tls: Context, check: CertificateCheck) -> None:
    """Makes aioquic's TLS client run ``check`` on the server certificate as soon as the server
    has proved it holds its key (its CertificateVerify), before the handshake can finish.

    Call it on a client connection's TLS context before the server's first flight is read.
    """
    verify_signature = tls._client_handle_certificate_verify

    def verify_then_check(input_buf: Buffer) -> None:
        verify_signature(input_buf)
        certificate = tls._peer_certificate
        if certificate is None:  # pragma: no cover - aioquic sets it before this state
            raise AlertBadCertificate("the server sent no certificate")
        check(certificate.public_bytes(Encoding.DER))

    tls._client_handle_certificate_verify = verify_then_check  # type: ignore[method-assign]


def presented_certificate(quic: QuicConnection) -> bytes | None:
    """The DER bytes of the certificate the peer presented on ``quic``; None before it did
    (and always on a server, whose clients present none)."""
    tls: Context | None = getattr(quic, "tls", None)
    certificate = None if tls is None else tls._peer_certificate
    return None if certificate is None else certificate.public_bytes(Encoding.DER)
