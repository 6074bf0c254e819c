"""The payment's wire form: exact round trips, and clean refusals of anything malformed."""

from __future__ import annotations

from fractions import Fraction

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from payments.pm import (
    MAX_PAYMENT_SIZE,
    MAX_TICKETS_PER_PAYMENT,
    MalformedPaymentError,
    Payment,
    TicketParams,
    TicketSender,
    TicketSenderParams,
    keccak256,
    recover_signer,
)

SENDER = TicketSender(private_key=keccak256(b"payment sender"))
PARAMS = TicketParams(
    recipient="0x73AEd7b5dEb30222fa896f399d46cC99c7BEe57F",
    face_value=35 * 10**15,
    win_prob=2**230 + 12345,
    recipient_rand_hash=keccak256(b"rrh"),
    seed=b"\x00" + keccak256(b"seed")[1:],
    expiration_block=123_456_789,
    price=Fraction(1200, 7),
    creation_round=3456,
    creation_round_block_hash=keccak256(b"block"),
)
PAYMENT = SENDER.create_payment(PARAMS, 3)
ENCODED = PAYMENT.encode()


def wire(payment: Payment) -> list[object]:
    """The payment's msgpack array, to be tampered with."""
    decoded = msgspec.msgpack.decode(payment.encode())
    assert isinstance(decoded, list)
    return decoded


def test_round_trip_is_exact() -> None:
    decoded = Payment.decode(ENCODED)
    assert decoded == PAYMENT
    assert decoded.encode() == ENCODED
    assert decoded.expected_price == Fraction(1200, 7)
    assert decoded.ev == 3 * PARAMS.ev


def test_encoding_is_compact() -> None:
    # 3 tickets: ~70 bytes each plus ~230 bytes of parameters.
    assert len(ENCODED) < 450
    full = SENDER.create_payment(PARAMS, MAX_TICKETS_PER_PAYMENT)
    assert len(full.encode()) < MAX_PAYMENT_SIZE


def test_decoded_addresses_are_checksummed_and_tickets_verify() -> None:
    lower = Payment(params=PARAMS, sender=SENDER.address.lower(), tickets=PAYMENT.tickets)
    decoded = Payment.decode(lower.encode())
    assert decoded.sender == SENDER.address
    assert decoded.params.recipient == PARAMS.recipient
    for ticket, sig in decoded.signed_tickets():
        assert recover_signer(ticket, sig) == SENDER.address


def test_empty_and_extreme_payments_round_trip() -> None:
    extreme = Payment(
        params=TicketParams(
            recipient="0x" + "ff" * 20,
            face_value=2**256 - 1,
            win_prob=0,
            recipient_rand_hash=bytes(32),
            seed=bytes(32),
            expiration_block=2**63 - 1,
            price=Fraction(0),
            creation_round=0,
            creation_round_block_hash=bytes(32),
        ),
        sender="0x" + "00" * 20,
        tickets=(TicketSenderParams(sender_nonce=2**32 - 1, signature=b"\xff" * 65),),
    )
    assert Payment.decode(extreme.encode()) == extreme
    empty = Payment(params=PARAMS, sender=SENDER.address)
    assert Payment.decode(empty.encode()) == empty


def test_every_truncation_is_a_clean_400() -> None:
    for end in range(len(ENCODED)):
        with pytest.raises(MalformedPaymentError) as info:
            Payment.decode(ENCODED[:end])
        assert info.value.code == 400
        assert isinstance(info.value, RemoteProtocolError)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(MalformedPaymentError):
        Payment.decode(ENCODED + b"\x00")


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, b"\x01" * 19),  # recipient too short
        (1, b"\x01" * 33),  # face value beyond uint256
        (1, b"\x00\x01"),  # leading zero: not canonical
        (3, b"\x01" * 31),  # recipientRandHash too short
        (4, b"\x01" * 33),  # seed too long
        (5, -1),  # negative block
        (5, 2**63),  # block beyond int64
        (5, "1040"),  # wrong type
        (6, b"\x02"),  # price 2/14: not in lowest terms
        (7, b""),  # zero denominator
        (8, b"round"),
        (10, b"\x01" * 21),  # sender too long
        (11, [[1, b"\x01" * 64]]),  # 64-byte compact signature
        (11, [[1, b"\x01" * 66]]),
        (11, [[2**32, b"\x01" * 65]]),  # nonce beyond uint32
        (11, [[1]]),
        (11, [[1, b"\x01" * 65, 3]]),
        (11, [[1, b"\x01" * 65]] * (MAX_TICKETS_PER_PAYMENT + 1)),
    ],
)
def test_malformed_fields_are_refused(index: int, value: object) -> None:
    fields = wire(PAYMENT)
    if index == 6:
        fields[7] = b"\x0e"
    fields[index] = value
    with pytest.raises(MalformedPaymentError):
        Payment.decode(msgspec.msgpack.encode(fields))


@pytest.mark.parametrize("shape", [[], {"a": 1}, b"bytes", 5, None])
def test_other_shapes_are_refused(shape: object) -> None:
    with pytest.raises(MalformedPaymentError):
        Payment.decode(msgspec.msgpack.encode(shape))


def test_missing_and_extra_fields_are_refused() -> None:
    fields = wire(PAYMENT)
    for bad in (fields[:-1], [*fields, 1]):
        with pytest.raises(MalformedPaymentError):
            Payment.decode(msgspec.msgpack.encode(bad))


def test_oversized_input_is_refused_before_parsing() -> None:
    with pytest.raises(MalformedPaymentError, match="exceeds"):
        Payment.decode(b"\x00" * (MAX_PAYMENT_SIZE + 1))


def test_encode_refuses_what_decode_would_refuse() -> None:
    too_many = Payment(
        params=PARAMS,
        sender=SENDER.address,
        tickets=(TicketSenderParams(sender_nonce=1, signature=b"\x01" * 65),)
        * (MAX_TICKETS_PER_PAYMENT + 1),
    )
    short_sig = Payment(
        params=PARAMS,
        sender=SENDER.address,
        tickets=(TicketSenderParams(sender_nonce=1, signature=b"\x01" * 64),),
    )
    big_nonce = Payment(
        params=PARAMS,
        sender=SENDER.address,
        tickets=(TicketSenderParams(sender_nonce=2**32, signature=b"\x01" * 65),),
    )
    for payment in (too_many, short_sig, big_nonce):
        with pytest.raises(LocalProtocolError):
            payment.encode()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_decode_or_fail_cleanly(data: bytes) -> None:
    try:
        payment = Payment.decode(data)
    except MalformedPaymentError:
        return
    assert Payment.decode(payment.encode()) == payment


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, len(ENCODED) - 1), byte=st.integers(0, 255))
def test_single_byte_corruption_decodes_or_fails_cleanly(position: int, byte: int) -> None:
    data = bytearray(ENCODED)
    data[position] = byte
    try:
        payment = Payment.decode(bytes(data))
    except MalformedPaymentError:
        return
    assert Payment.decode(payment.encode()) == payment
