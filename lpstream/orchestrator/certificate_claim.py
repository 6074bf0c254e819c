"""The orchestrator's claim that the QUIC certificate it serves is its own, signed with its
ticket key, and the gateway's check of that claim.

How this works
--------------
On chain a gateway pays an Ethereum address, and the ServiceRegistry says where that address
serves; but whoever answers at that place could be anyone. So the orchestrator signs, with the
key its tickets are made out to (``ORCH_INFO.address``), the text

    lpstream orchestrator QUIC certificate sha256=<64 lowercase hex digits>

as EIP-191 ``personal_sign`` (ASCII, hashed with its length; any wallet makes or checks the
same signature, e.g. ``cast wallet sign``), and sends the 65 bytes as
``ORCH_INFO.certificate_signature``. The gateway rebuilds the text from the fingerprint it
*observed* in the handshake (``QuicConnectionHandle.peer_fingerprint``), recovers the signer
and compares it with the address it pays: a certificate the orchestrator did not sign, or a
signature by another key, recovers to another address. Off-chain there is no key and nothing
is signed.
"""

from __future__ import annotations

from lpstream.quic import Fingerprint
from lpstream.wire import OrchInfo
from payments.pm import (
    InvalidSignatureError,
    address_bytes,
    personal_sign_hash,
    recover_address_bytes,
    sign_hash,
)

__all__ = [
    "CLAIM_PREFIX",
    "certificate_belongs_to",
    "certificate_claim",
    "certificate_signer",
    "sign_certificate",
]

CLAIM_PREFIX = b"lpstream orchestrator QUIC certificate "
"""What the signed text says before the fingerprint."""


def certificate_claim(fingerprint: Fingerprint) -> bytes:
    """The text an orchestrator signs for its certificate (module comment)."""
    return CLAIM_PREFIX + str(fingerprint).encode("ascii")


def sign_certificate(private_key: bytes, fingerprint: Fingerprint) -> bytes:
    """The 65-byte personal signature of :func:`certificate_claim` by ``private_key``."""
    return sign_hash(private_key, personal_sign_hash(certificate_claim(fingerprint)))


def certificate_signer(fingerprint: Fingerprint, signature: bytes) -> bytes | None:
    """The 20 address bytes that signed the claim for ``fingerprint``; None when the signature
    is malformed or recovers no key."""
    try:
        return recover_address_bytes(personal_sign_hash(certificate_claim(fingerprint)), signature)
    except InvalidSignatureError:
        return None


def certificate_belongs_to(info: OrchInfo, observed: Fingerprint | None, recipient: str) -> bool:
    """Whether the certificate a connection presented belongs to the address the gateway pays.

    Args:
        info: the ORCH_INFO read on that connection.
        observed: the fingerprint of the certificate the connection presented.
        recipient: the address the gateway's tickets are made out to (the one the chain lists).

    Returns:
        True only if ``info`` carries a signature of ``observed``'s claim by ``recipient``.
    """
    if observed is None or not info.certificate_signature:
        return False
    try:
        paid = address_bytes(recipient)
    except ValueError:
        return False
    return certificate_signer(observed, info.certificate_signature) == paid
