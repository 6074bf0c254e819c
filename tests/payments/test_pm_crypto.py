"""Signing and recovering: Ethereum's rules for signatures, as the TicketBroker applies them."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.pm import (
    InvalidSignatureError,
    Ticket,
    address_of,
    keccak256,
    personal_message_hash,
    recover_hash_signer,
    recover_signer,
    sign_hash,
    sign_ticket,
    ticket_hash,
    to_checksum_address,
)
from payments.pm.crypto import SECP256K1_N

KEY = keccak256(b"sender key")
SENDER = address_of(KEY)
TICKET = Ticket(
    recipient="0x73AEd7b5dEb30222fa896f399d46cC99c7BEe57F",
    sender=SENDER,
    face_value=10**15,
    win_prob=2**200,
    sender_nonce=7,
    recipient_rand_hash=keccak256(b"rand"),
    creation_round=12,
    creation_round_block_hash=keccak256(b"block"),
)


def high_s(sig: bytes) -> bytes:
    """The same signature with s mirrored to the upper half (valid for secp256k1, not Ethereum)."""
    s = int.from_bytes(sig[32:64], "big")
    v = 55 - sig[64]  # 27 <-> 28: mirroring s flips the recovery parity
    return sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((v,))


def test_address_of_known_key() -> None:
    # The well-known address of private key 1.
    assert address_of((1).to_bytes(32, "big")) == "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"


def test_checksum_address_follows_eip55() -> None:
    # EIP-55's own examples.
    for address in (
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ):
        assert to_checksum_address(address.lower()) == address
        assert to_checksum_address(bytes.fromhex(address[2:])) == address


@pytest.mark.parametrize(
    "bad", ["0x1234", "73AEd7b5dEb30222fa896f399d46cC99c7BEe57F00", "0x" + "g" * 40]
)
def test_malformed_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an address"):
        to_checksum_address(bad)


def test_sign_and_recover_round_trip() -> None:
    sig = sign_ticket(KEY, TICKET)
    assert len(sig) == 65
    assert recover_signer(TICKET, sig) == SENDER


def test_signatures_are_deterministic_low_s_with_v_27_or_28() -> None:
    for nonce in range(1, 21):
        ticket = attrs.evolve(TICKET, sender_nonce=nonce)
        sig = sign_ticket(KEY, ticket)
        assert sig == sign_ticket(KEY, ticket)  # RFC 6979
        assert sig[64] in (27, 28)
        assert int.from_bytes(sig[32:64], "big") <= SECP256K1_N // 2


def test_both_v_values_occur_and_recover() -> None:
    seen = set()
    for i in range(40):
        msg = keccak256(i.to_bytes(4, "big"))
        sig = sign_hash(KEY, msg)
        seen.add(sig[64])
        assert recover_hash_signer(msg, sig) == SENDER
    assert seen == {27, 28}


def test_sign_ticket_signs_the_eip191_hash() -> None:
    sig = sign_ticket(KEY, TICKET)
    assert recover_hash_signer(personal_message_hash(ticket_hash(TICKET)), sig) == SENDER
    assert recover_hash_signer(ticket_hash(TICKET), sig) != SENDER


def test_coincurve_agrees_on_the_raw_signature() -> None:
    msg = keccak256(b"m")
    sig = sign_hash(KEY, msg)
    raw = PrivateKey(KEY).sign_recoverable(msg, hasher=None)
    assert sig[:64] == raw[:64]
    assert sig[64] == raw[64] + 27


def test_high_s_is_refused() -> None:
    sig = sign_ticket(KEY, TICKET)
    mirrored = high_s(sig)
    with pytest.raises(InvalidSignatureError, match="lower half"):
        recover_signer(TICKET, mirrored)


@pytest.mark.parametrize("length", [0, 64, 66])
def test_signatures_of_other_lengths_are_refused(length: int) -> None:
    sig = (sign_ticket(KEY, TICKET) * 2)[:length]
    with pytest.raises(InvalidSignatureError, match="65 bytes"):
        recover_signer(TICKET, sig)


@pytest.mark.parametrize("v", [0, 1, 26, 29, 255])
def test_v_other_than_27_or_28_is_refused(v: int) -> None:
    sig = sign_ticket(KEY, TICKET)
    with pytest.raises(InvalidSignatureError, match="v must be 27 or 28"):
        recover_signer(TICKET, sig[:64] + bytes((v,)))


def test_zero_s_and_out_of_range_r_are_refused() -> None:
    sig = sign_ticket(KEY, TICKET)
    with pytest.raises(InvalidSignatureError):
        recover_signer(TICKET, sig[:32] + bytes(32) + sig[64:])
    with pytest.raises(InvalidSignatureError, match="does not recover"):
        recover_signer(TICKET, SECP256K1_N.to_bytes(32, "big") + sig[32:])
    with pytest.raises(InvalidSignatureError, match="does not recover"):
        recover_signer(TICKET, bytes(32) + sig[32:])


def test_a_signature_for_another_ticket_recovers_someone_else() -> None:
    sig = sign_ticket(KEY, TICKET)
    other = attrs.evolve(TICKET, sender_nonce=8)
    assert recover_signer(other, sig) != SENDER


@settings(max_examples=25, deadline=None)
@given(key=st.integers(1, SECP256K1_N - 1), msg=st.binary(min_size=32, max_size=32))
def test_any_key_round_trips(key: int, msg: bytes) -> None:
    private_key = key.to_bytes(32, "big")
    sig = sign_hash(private_key, msg)
    assert int.from_bytes(sig[32:64], "big") <= SECP256K1_N // 2
    assert recover_hash_signer(msg, sig) == address_of(private_key)


def test_a_high_s_signature_from_the_library_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    # libsecp256k1 never emits high s; if a signer did, sign_hash must mirror s and flip v.
    class HighSKey(PrivateKey):
        def sign_recoverable(self, message: bytes, *args: Any, **kwargs: Any) -> bytes:
            sig = super().sign_recoverable(message, hasher=None)
            s = int.from_bytes(sig[32:64], "big")
            return sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((sig[64] ^ 1,))

    msg = keccak256(b"m")
    expected = sign_hash(KEY, msg)
    monkeypatch.setattr("payments.pm.crypto.PrivateKey", HighSKey)
    assert sign_hash(KEY, msg) == expected


def test_fast_recovery_agrees_with_coincurves_public_api() -> None:
    from payments.pm import crypto

    # The fast path reaches into coincurve's cffi module; if a coincurve release moves it, this
    # says so (validation would still work, through the portable path, ~5% slower).
    assert crypto._recover_uncompressed is not crypto._recover_public_portable
    for i in range(8):
        msg = keccak256(i.to_bytes(4, "big"))
        sig = sign_hash(KEY, msg)
        compact = sig[:64] + bytes((sig[64] - 27,))
        assert crypto._recover_uncompressed(msg, compact) == crypto._recover_public_portable(
            msg, compact
        )
        bad = SECP256K1_N.to_bytes(32, "big") + compact[32:]
        for recover in (crypto._recover_uncompressed, crypto._recover_public_portable):
            with pytest.raises(InvalidSignatureError):
                recover(msg, bad)
