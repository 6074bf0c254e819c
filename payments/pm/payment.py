"""The payment as it travels in a JOB header: one set of ticket parameters, many signatures.

Every ticket in a payment shares the parameters the orchestrator issued and the sender's address;
only the nonce and the signature differ. So the wire form carries the parameters once and a list
of ``(senderNonce, signature)`` pairs, as a msgpack array:

    [recipient(bin 20), faceValue(bin ≤32), winProb(bin ≤32), recipientRandHash(bin 32),
     seed(bin 32), expirationBlock(int64), price.num(bin ≤32), price.den(bin ≤32),
     creationRound(int64), creationRoundBlockHash(bin 32), sender(bin 20),
     [[senderNonce(uint32), signature(bin 65)], … at most 100]]

uint256 values travel as minimal big-endian bytes (msgpack ints stop at 64 bits); a leading zero
byte is refused so that each payment has exactly one encoding. Anything malformed, oversized or
trailing is a ``MalformedPaymentError`` (status 400), never a crash.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Annotated

import attrs
import msgspec

from lpstream.errors import LocalProtocolError

from ._checks import checksummed
from .crypto import address_bytes, to_checksum_address
from .errors import MalformedPaymentError
from .params import TicketParams
from .ticket import Ticket

__all__ = [
    "MAX_PAYMENT_SIZE",
    "MAX_TICKETS_PER_PAYMENT",
    "Payment",
    "TicketSenderParams",
]

MAX_TICKETS_PER_PAYMENT = 100
"""The most tickets one payment may carry."""
MAX_PAYMENT_SIZE = 16 * 1024
"""The most bytes an encoded payment may take (100 tickets need about 7.5 KiB)."""
_MAX_UINT32 = 2**32 - 1
_MAX_INT64 = 2**63 - 1

_Address = Annotated[bytes, msgspec.Meta(min_length=20, max_length=20)]
_Hash = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
_Uint256 = Annotated[bytes, msgspec.Meta(max_length=32)]
_Int64 = Annotated[int, msgspec.Meta(ge=0, le=_MAX_INT64)]
_Uint32 = Annotated[int, msgspec.Meta(ge=0, le=_MAX_UINT32)]
_Signature = Annotated[bytes, msgspec.Meta(min_length=65, max_length=65)]


class _WirePayment(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    recipient: _Address
    face_value: _Uint256
    win_prob: _Uint256
    recipient_rand_hash: _Hash
    seed: _Hash
    expiration_block: _Int64
    price_num: _Uint256
    price_den: _Uint256
    creation_round: _Int64
    creation_round_block_hash: _Hash
    sender: _Address
    tickets: Annotated[
        list[tuple[_Uint32, _Signature]], msgspec.Meta(max_length=MAX_TICKETS_PER_PAYMENT)
    ]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_WirePayment)


def _minbe(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _uint(field: str, data: bytes) -> int:
    if data[:1] == b"\x00":
        raise MalformedPaymentError(f"payment {field} has a leading zero byte")
    return int.from_bytes(data, "big")


@attrs.frozen(kw_only=True)
class TicketSenderParams:
    """What differs between the tickets of one payment."""

    sender_nonce: int
    """The ticket's nonce under its recipientRandHash (uint32, from 1)."""
    signature: bytes
    """The sender's 65-byte EIP-191 signature of the ticket hash."""


@attrs.frozen(kw_only=True)
class Payment:
    """A batch of signed tickets under one set of parameters, from one sender."""

    params: TicketParams
    """The orchestrator's parameters, echoed; their price is the price the sender expects."""
    sender: str = attrs.field(converter=checksummed)
    """The gateway's address: ``0x…`` in any case, kept checksummed."""
    tickets: tuple[TicketSenderParams, ...] = ()
    """Nonce and signature of each ticket; may be empty when the sender's credit suffices."""

    @property
    def expected_price(self) -> Fraction:
        """The price per pixel the sender expects to pay."""
        return self.params.price

    @property
    def ev(self) -> Fraction:
        """The expected value of all the tickets together."""
        return self.params.ev * len(self.tickets)

    def ticket(self, sender_nonce: int) -> Ticket:
        """The ticket these parameters and this sender make with ``sender_nonce``."""
        p = self.params
        return Ticket(
            recipient=p.recipient,
            sender=self.sender,
            face_value=p.face_value,
            win_prob=p.win_prob,
            sender_nonce=sender_nonce,
            recipient_rand_hash=p.recipient_rand_hash,
            creation_round=p.creation_round,
            creation_round_block_hash=p.creation_round_block_hash,
        )

    def signed_tickets(self) -> Iterator[tuple[Ticket, bytes]]:
        """Each ticket with its signature, in order."""
        for t in self.tickets:
            yield self.ticket(t.sender_nonce), t.signature

    def encode(self) -> bytes:
        """The compact msgpack form (see the module docstring).

        Raises:
            LocalProtocolError: more than 100 tickets, a nonce outside uint32, a signature that
                is not 65 bytes, or a block number beyond int64.
        """
        p = self.params
        if len(self.tickets) > MAX_TICKETS_PER_PAYMENT:
            raise LocalProtocolError(
                f"a payment carries at most {MAX_TICKETS_PER_PAYMENT} tickets, "
                f"not {len(self.tickets)}"
            )
        if p.expiration_block > _MAX_INT64 or p.creation_round > _MAX_INT64:
            raise LocalProtocolError("expiration block and creation round must fit in int64")
        for t in self.tickets:
            if not 0 <= t.sender_nonce <= _MAX_UINT32 or len(t.signature) != 65:
                raise LocalProtocolError("each ticket needs a uint32 nonce and a 65-byte signature")
        return _encoder.encode(
            (
                address_bytes(p.recipient),
                _minbe(p.face_value),
                _minbe(p.win_prob),
                p.recipient_rand_hash,
                p.seed,
                p.expiration_block,
                _minbe(p.price.numerator),
                _minbe(p.price.denominator),
                p.creation_round,
                p.creation_round_block_hash,
                address_bytes(self.sender),
                [(t.sender_nonce, t.signature) for t in self.tickets],
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Payment:
        """Parses the bytes ``encode`` makes.

        Raises:
            MalformedPaymentError: the bytes are not one well-formed payment within the limits.
        """
        if len(data) > MAX_PAYMENT_SIZE:
            raise MalformedPaymentError(f"payment of {len(data)} bytes exceeds {MAX_PAYMENT_SIZE}")
        try:
            w = _decoder.decode(data)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise MalformedPaymentError(f"malformed payment: {exc}") from None
        price_num = _uint("price numerator", w.price_num)
        price_den = _uint("price denominator", w.price_den)
        if price_den == 0 or math.gcd(price_num, price_den) != 1:
            raise MalformedPaymentError("payment price is not a fraction in lowest terms")
        params = TicketParams(
            recipient=to_checksum_address(w.recipient),
            face_value=_uint("face value", w.face_value),
            win_prob=_uint("win prob", w.win_prob),
            recipient_rand_hash=w.recipient_rand_hash,
            seed=w.seed,
            expiration_block=w.expiration_block,
            price=Fraction(price_num, price_den),
            creation_round=w.creation_round,
            creation_round_block_hash=w.creation_round_block_hash,
        )
        return cls(
            params=params,
            sender=to_checksum_address(w.sender),
            tickets=tuple(
                TicketSenderParams(sender_nonce=nonce, signature=sig) for nonce, sig in w.tickets
            ),
        )
