"""An orchestrator's QUIC identity: the key and self-signed certificate it keeps in its data dir.

The first start writes ``<data-dir>/quic-identity.pem``: the private key (PKCS #8), then the
certificate, in one file of mode 0600 that appears whole or not at all; later starts read it
back, so the certificate's fingerprint, and every address pinned to it
(``quic://host:port#sha256=…``), stays the same across restarts. The file is refused when group
or others may read it, or when its certificate is not its key's. The certificate never expires
(it is named by its fingerprint, not checked against a clock or a CA); to change it, stop the
orchestrator, delete the file, start again, and give workers and gateways the new address.

Without a data dir the identity is made for this run only, and the fingerprint changes with
every start.

The fingerprint, in hex, is also what ``openssl x509 -in quic-identity.pem -outform DER |
sha256sum`` prints.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Unpack

import attrs
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lpstream.errors import ConfigError
from lpstream.quic import Fingerprint, QuicTransport, server_configuration
from lpstream.quic.tls import make_self_signed_certificate
from payments.private_files import read_private_file, write_private_file

__all__ = ["IDENTITY_FILE", "OrchestratorIdentity", "load_identity"]

log = logging.getLogger("lpstream.orchestrator")

IDENTITY_FILE = "quic-identity.pem"
"""The identity's file name in the data dir."""


@attrs.frozen(kw_only=True)
class OrchestratorIdentity:
    """A QUIC private key and its self-signed certificate."""

    certificate_pem: bytes = attrs.field(repr=False)
    """The certificate, PEM."""
    private_key_pem: bytes = attrs.field(repr=False)
    """Its private key, PEM (PKCS #8, unencrypted)."""
    fingerprint: Fingerprint
    """SHA-256 of the certificate's DER: what addresses pin."""
    path: Path | None = None
    """The file it is kept in; None when it lasts for this run only."""

    @classmethod
    def generate(cls, path: Path | None = None) -> OrchestratorIdentity:
        """A new key and a certificate for it that never expires."""
        certificate_pem, private_key_pem = make_self_signed_certificate(lifetime=None)
        return cls(
            certificate_pem=certificate_pem,
            private_key_pem=private_key_pem,
            fingerprint=Fingerprint.of_pem(certificate_pem),
            path=path,
        )

    @classmethod
    def from_pem(cls, data: bytes, path: Path | None = None) -> OrchestratorIdentity:
        """Reads a private key and the certificate made for it from PEM text.

        Raises:
            ConfigError: a part is missing or unreadable, or the certificate is another key's.
        """
        where = f"QUIC identity {path}" if path is not None else "QUIC identity"
        try:
            key = serialization.load_pem_private_key(data, password=None)
            certificate = x509.load_pem_x509_certificate(data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where} is not a private key and its certificate: {exc}") from None
        if certificate.public_key() != key.public_key():
            raise ConfigError(f"{where}: its certificate is not its private key's")
        private_key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
        return cls(
            certificate_pem=certificate_pem,
            private_key_pem=private_key_pem,
            fingerprint=Fingerprint.of_pem(certificate_pem),
            path=path,
        )

    def server_configuration(self, **transport: Unpack[QuicTransport]) -> QuicConfiguration:
        """The QUIC server configuration that presents this certificate."""
        return server_configuration(self.certificate_pem, self.private_key_pem, **transport)


def load_identity(data_dir: str | Path | None) -> OrchestratorIdentity:
    """The identity kept in ``data_dir``, made and written there on first use; one for this
    run only when ``data_dir`` is None (module comment).

    Raises:
        ConfigError: the file cannot be read or written, is open to group or others, or is not
            a key and its certificate.
    """
    if data_dir is None:
        log.info("no --data-dir: this run's QUIC certificate, and its pin, are new")
        return OrchestratorIdentity.generate()
    path = Path(data_dir) / IDENTITY_FILE
    try:
        return OrchestratorIdentity.from_pem(read_private_file(path, "QUIC identity"), path)
    except FileNotFoundError:
        pass
    identity = OrchestratorIdentity.generate(path)
    try:
        write_private_file(path, identity.private_key_pem + identity.certificate_pem)
    except FileExistsError:  # another process made it first: use the one on disk
        return OrchestratorIdentity.from_pem(read_private_file(path, "QUIC identity"), path)
    except OSError as exc:
        raise ConfigError(f"cannot write QUIC identity {path}: {exc.strerror or exc}") from None
    log.info("made a QUIC identity in %s (certificate %s)", path, identity.fingerprint)
    return identity
