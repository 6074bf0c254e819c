"""Ethereum's primitives as tickets need them: keccak256, addresses, EIP-191 signatures.

libsecp256k1 (through coincurve) does the curve work and keccak256 comes from pysha3's C code;
everything here is a thin, allocation-light wrapper, because ticket validation calls it once or
more per ticket. Signatures are Ethereum's 65-byte ``r ‖ s ‖ v`` with v ∈ {27, 28} and s in the
lower half of the curve order, the only form the TicketBroker accepts.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from coincurve import PrivateKey, PublicKey

from .errors import InvalidSignatureError

__all__ = [
    "SECP256K1_N",
    "address_bytes",
    "address_of",
    "keccak256",
    "personal_message_hash",
    "personal_sign_hash",
    "recover_address_bytes",
    "recover_hash_signer",
    "recover_personal_signer",
    "sign_hash",
    "to_checksum_address",
]

# pysha3's C extension: ~0.5 µs a hash, five to ten times faster than pycryptodome's binding,
# which matters because full ticket validation hashes four times per ticket.
_keccak_256: Callable[[bytes], Any] = importlib.import_module("_pysha3").keccak_256

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
"""The order of the secp256k1 group."""

_HALF_N = SECP256K1_N // 2
_PERSONAL_PREFIX = b"\x19Ethereum Signed Message:\n32"
_PERSONAL_SIGN_PREFIX = b"\x19Ethereum Signed Message:\n"
_RECIDS = {27: b"\x00", 28: b"\x01"}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def keccak256(data: bytes) -> bytes:
    """Ethereum's keccak256 (the pre-standard SHA-3 padding) of ``data``."""
    digest: bytes = _keccak_256(data).digest()
    return digest


def address_bytes(address: str) -> bytes:
    """The 20 bytes of a ``0x…`` address written in any case.

    Raises:
        ValueError: ``address`` is not ``0x`` followed by 40 hex digits.
    """
    if (
        len(address) != 42
        or address[:2] not in ("0x", "0X")
        or not _HEX_DIGITS.issuperset(address[2:])
    ):
        raise ValueError(f"not an address: {address!r}")
    return bytes.fromhex(address[2:])


def to_checksum_address(address: bytes | str) -> str:
    """The EIP-55 mixed-case form of an address given as 20 bytes or as ``0x…`` in any case.

    Raises:
        ValueError: not 20 bytes, or not ``0x`` and 40 hex digits.
    """
    if isinstance(address, str):
        return _checksum_text(address)
    if len(address) != 20:
        raise ValueError(f"an address is 20 bytes, not {len(address)}")
    return _checksum(bytes(address))


@functools.lru_cache(maxsize=4096)
def _checksum_text(address: str) -> str:
    return _checksum(address_bytes(address))


@functools.lru_cache(maxsize=4096)
def _checksum(raw: bytes) -> str:
    # Cached: a node meets few distinct addresses, and EIP-55 costs ~5 µs in Python.
    hex_address = raw.hex()
    nibbles = keccak256(hex_address.encode("ascii")).hex()
    return "0x" + "".join(
        c.upper() if n >= "8" else c for c, n in zip(hex_address, nibbles, strict=False)
    )


def address_of(private_key: bytes) -> str:
    """The checksummed address of a 32-byte private key."""
    public = PrivateKey(private_key).public_key.format(compressed=False)
    return to_checksum_address(keccak256(public[1:])[12:])


def personal_message_hash(message_hash: bytes) -> bytes:
    """EIP-191 personal-sign hash of a 32-byte message: keccak256("\\x19Ethereum…:\\n32" ‖ hash)."""
    return keccak256(_PERSONAL_PREFIX + message_hash)


def personal_sign_hash(message: bytes) -> bytes:
    """EIP-191 personal-sign hash of a message of any length, as wallets' ``personal_sign``
    hashes text: keccak256("\\x19Ethereum Signed Message:\\n" ‖ its length in decimal ‖ it).

    ``personal_message_hash`` is the same for a 32-byte message, on the tickets' hot path.
    """
    return keccak256(_PERSONAL_SIGN_PREFIX + str(len(message)).encode("ascii") + message)


def sign_hash(private_key: bytes, msg_hash: bytes) -> bytes:
    """Signs a 32-byte hash as is (no prefix): 65 bytes ``r ‖ s ‖ v``, low s, v ∈ {27, 28}.

    RFC 6979 nonces (libsecp256k1's default) make the signature deterministic.

    Raises:
        ValueError: the private key or the hash is not 32 bytes, or the key is not valid.
    """
    if len(msg_hash) != 32:
        raise ValueError("a message hash is 32 bytes")
    raw = PrivateKey(private_key).sign_recoverable(msg_hash, hasher=None)
    r, s, recid = raw[:32], int.from_bytes(raw[32:64], "big"), raw[64]
    if s > _HALF_N:  # libsecp256k1 already emits low s; keep the rule true whatever signs.
        s = SECP256K1_N - s
        recid ^= 1
    if recid > 1:  # r ≥ n: probability ~2^-128, and Ethereum cannot express it.
        raise ValueError("signature not expressible with v 27/28")
    return r + s.to_bytes(32, "big") + bytes((27 + recid,))


def _recover_public_portable(msg_hash: bytes, compact: bytes) -> bytes:
    try:
        return PublicKey.from_signature_and_message(compact, msg_hash, hasher=None).format(
            compressed=False
        )
    except ValueError as exc:  # r out of range, or no curve point with that x
        raise InvalidSignatureError(f"signature does not recover: {exc}") from None


def _make_fast_recover() -> Callable[[bytes, bytes], bytes] | None:
    """libsecp256k1's recovery called straight through coincurve's cffi module.

    Skips the PublicKey wrapper's objects and checks (this module has done them), which is worth
    ~5% of the whole ticket validation. None when coincurve's internals are not as expected.
    """
    try:
        binding = importlib.import_module("coincurve._libsecp256k1")
        ctx = importlib.import_module("coincurve.context").GLOBAL_CONTEXT.ctx
        ffi, lib = binding.ffi, binding.lib
        parse = lib.secp256k1_ecdsa_recoverable_signature_parse_compact
        recover = lib.secp256k1_ecdsa_recover
        serialize = lib.secp256k1_ec_pubkey_serialize
        uncompressed = lib.SECP256K1_EC_UNCOMPRESSED
        new, buffer = ffi.new, ffi.buffer
    except (ImportError, AttributeError):  # pragma: no cover - depends on coincurve's layout
        return None

    def fast_recover(msg_hash: bytes, compact: bytes) -> bytes:
        sig = new("secp256k1_ecdsa_recoverable_signature *")
        public = new("secp256k1_pubkey *")
        if not parse(ctx, sig, compact, compact[64]) or not recover(ctx, public, sig, msg_hash):
            raise InvalidSignatureError("signature does not recover")
        out = new("unsigned char[65]")
        serialize(ctx, out, new("size_t *", 65), public, uncompressed)
        result: bytes = buffer(out, 65)[:]
        return result

    return fast_recover


_recover_uncompressed = _make_fast_recover() or _recover_public_portable


def _recover_public(msg_hash: bytes, sig: bytes) -> bytes:
    """The 64-byte uncompressed public key (no 0x04 tag) that made ``sig`` over ``msg_hash``."""
    if len(sig) != 65:
        raise InvalidSignatureError(f"a signature is 65 bytes, not {len(sig)}")
    v = sig[64]
    if v != 27 and v != 28:
        raise InvalidSignatureError(f"signature v must be 27 or 28, not {v}")
    s = int.from_bytes(sig[32:64], "big")
    if s > _HALF_N or s == 0:
        raise InvalidSignatureError("signature s is not in the lower half of the curve order")
    return _recover_uncompressed(msg_hash, sig[:64] + _RECIDS[v])[1:]


def recover_address_bytes(msg_hash: bytes, sig: bytes) -> bytes:
    """The 20 address bytes of the signer of a raw 32-byte hash (hot path: no checksum work).

    Raises:
        InvalidSignatureError: as ``recover_hash_signer``.
    """
    digest: bytes = _keccak_256(_recover_public(msg_hash, sig)).digest()
    return digest[12:]


def recover_hash_signer(msg_hash: bytes, sig: bytes) -> str:
    """The checksummed address that signed a raw 32-byte hash (no EIP-191 prefix).

    Raises:
        InvalidSignatureError: not 65 bytes, v not 27/28, s high or zero, or no key recovers.
    """
    if len(msg_hash) != 32:
        raise ValueError("a message hash is 32 bytes")
    return to_checksum_address(recover_address_bytes(msg_hash, sig))


def recover_personal_signer(message_hash: bytes, sig: bytes) -> str:
    """The checksummed address that EIP-191 personal-signed the 32-byte ``message_hash``."""
    if len(message_hash) != 32:
        raise ValueError("a message hash is 32 bytes")
    return to_checksum_address(recover_address_bytes(personal_message_hash(message_hash), sig))
