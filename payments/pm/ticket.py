"""Tickets: their hash, signature, win check and the arithmetic of their value.

A ticket is worth ``faceValue`` with probability ``winProb / (2^256 - 1)``. Its hash is
Solidity's ``abi.encodePacked`` of its fields, so lpstream's tickets redeem on Livepeer's
TicketBroker unchanged; the sender signs that hash EIP-191 style, and the ticket wins when
``keccak256(sig ‖ be32(recipientRand)) < winProb``. The recipient never stores recipientRand: it
re-derives it from its secret and the parameters it issued (HMAC-SHA256, see ``recipient_rand``),
which is also how it knows that the parameters echoed back to it are its own.

All numbers are exact: EV is a ``Fraction``, never a float.
"""

from __future__ import annotations

import hmac
from fractions import Fraction

import attrs

from ._checks import check_hash, check_uint256, checksummed
from .crypto import (
    address_bytes,
    keccak256,
    personal_message_hash,
    recover_address_bytes,
    sign_hash,
    to_checksum_address,
)

__all__ = [
    "MAX_WIN_PROB",
    "ZERO_ADDRESS",
    "ZERO_HASH",
    "Ticket",
    "TicketTerms",
    "aux_data_for",
    "encode_packed",
    "is_winning_ticket",
    "minbe",
    "recipient_rand",
    "recipient_rand_hash",
    "recover_signer",
    "sign_ticket",
    "ticket_ev",
    "ticket_hash",
    "win_prob_for",
]

MAX_WIN_PROB = 2**256 - 1
"""A ticket with this winProb always wins."""

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO_HASH = bytes(32)


def aux_data_for(creation_round: int, creation_round_block_hash: bytes) -> bytes:
    """be32(creationRound) ‖ blockHash; empty for round 0 with a zero hash (go-livepeer)."""
    if creation_round == 0 and creation_round_block_hash == ZERO_HASH:
        return b""
    return creation_round.to_bytes(32, "big") + creation_round_block_hash


@attrs.frozen(kw_only=True)
class TicketTerms:
    """What an orchestrator's ticket parameters fix and every ticket made under them repeats.

    The base of :class:`Ticket` (which adds the sender and its nonce) and of
    :class:`~payments.pm.params.TicketParams` (which adds what the recipient needs to check the
    tickets: seed, expiration block, price).
    """

    recipient: str = attrs.field(converter=checksummed)
    """The orchestrator's address, who may redeem: ``0x…`` in any case, kept checksummed."""
    face_value: int = attrs.field(validator=check_uint256)
    """Wei a winning ticket pays."""
    win_prob: int = attrs.field(validator=check_uint256)
    """Winning probability as a numerator over 2^256 - 1."""
    recipient_rand_hash: bytes = attrs.field(validator=check_hash)
    """keccak256(be32(recipientRand)): the recipient's commitment."""
    creation_round: int = attrs.field(default=0, validator=check_uint256)
    """The last initialized round when the parameters were issued; the tickets expire two
    rounds later."""
    creation_round_block_hash: bytes = attrs.field(default=ZERO_HASH, validator=check_hash)
    """The block hash the chain stored for ``creation_round``."""

    @property
    def aux_data(self) -> bytes:
        """The tickets' auxData: empty for round 0 with a zero hash, else the 64 bytes."""
        return aux_data_for(self.creation_round, self.creation_round_block_hash)

    @property
    def ev(self) -> Fraction:
        """A ticket's expected value in wei, exactly: faceValue * winProb / (2^256 - 1)."""
        return ticket_ev(self.face_value, self.win_prob)


@attrs.frozen(kw_only=True)
class Ticket(TicketTerms):
    """One probabilistic micropayment ticket, field for field as the TicketBroker sees it."""

    sender: str = attrs.field(converter=checksummed)
    """Whose deposit and reserve pay: ``0x…`` in any case, kept checksummed."""
    sender_nonce: int = attrs.field(validator=check_uint256)
    """Distinguishes the tickets made under one recipientRandHash (from 1)."""


def encode_packed(ticket: Ticket) -> bytes:
    """The ticket's fields as Solidity's ``abi.encodePacked`` lays them out (the hash input)."""
    return (
        address_bytes(ticket.recipient)
        + address_bytes(ticket.sender)
        + ticket.face_value.to_bytes(32, "big")
        + ticket.win_prob.to_bytes(32, "big")
        + ticket.sender_nonce.to_bytes(32, "big")
        + ticket.recipient_rand_hash
        + ticket.aux_data
    )


def ticket_hash(ticket: Ticket) -> bytes:
    """keccak256 of the ticket's ``abi.encodePacked`` fields (32 bytes)."""
    return keccak256(encode_packed(ticket))


def sign_ticket(private_key: bytes, ticket: Ticket) -> bytes:
    """The sender's EIP-191 signature of the ticket hash: 65 bytes, low s, v 27/28."""
    return sign_hash(private_key, personal_message_hash(ticket_hash(ticket)))


def recover_signer(ticket: Ticket, sig: bytes) -> str:
    """The checksummed address whose key made ``sig`` over this ticket.

    Raises:
        InvalidSignatureError: the signature is malformed (length, v, high or zero s) or
            recovers no key.
    """
    return to_checksum_address(
        recover_address_bytes(personal_message_hash(ticket_hash(ticket)), sig)
    )


def minbe(value: int) -> bytes:
    """Minimal big-endian bytes of a non-negative int; empty for 0 (Go's ``big.Int.Bytes``)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def recipient_rand(
    secret: bytes,
    seed: bytes,
    sender: str,
    face_value: int,
    win_prob: int,
    expiration_block: int,
    price_num: int,
    price_den: int,
    aux_data: bytes,
) -> int:
    """The recipient's random number for one parameter issue, as a uint256.

    HMAC-SHA256(secret, minbe(seed) ‖ sender[20] ‖ minbe(faceValue) ‖ minbe(winProb) ‖
    minbe(expirationBlock) ‖ minbe(price.num) ‖ minbe(price.den) ‖ auxData). The price must
    already be in lowest terms; the seed counts as a number, so its leading zero bytes drop.
    """
    msg = b"".join(
        (
            seed.lstrip(b"\x00"),
            address_bytes(sender),
            minbe(face_value),
            minbe(win_prob),
            minbe(expiration_block),
            minbe(price_num),
            minbe(price_den),
            aux_data,
        )
    )
    return int.from_bytes(hmac.digest(secret, msg, "sha256"), "big")


def recipient_rand_hash(rand: int) -> bytes:
    """keccak256(be32(recipientRand)): what the recipient commits to in its parameters."""
    return keccak256(rand.to_bytes(32, "big"))


def is_winning_ticket(sig: bytes, recipient_rand: int, win_prob: int) -> bool:
    """True when uint256(keccak256(sig ‖ be32(recipientRand))) < winProb."""
    return int.from_bytes(keccak256(sig + recipient_rand.to_bytes(32, "big")), "big") < win_prob


def win_prob_for(ev: int, face_value: int) -> int:
    """The winProb that gives a ticket of ``face_value`` an EV of at least ``ev`` (go-livepeer).

    0 for a zero face value, 2^256 - 1 when the face value equals the EV; otherwise
    EV * ceil((2^256 - 1) / faceValue).
    """
    if face_value == 0:
        return 0
    if face_value == ev:
        return MAX_WIN_PROB
    x, m = divmod(MAX_WIN_PROB, face_value)
    return ev * (x + 1) if m else ev * x


def ticket_ev(face_value: int, win_prob: int) -> Fraction:
    """faceValue * winProb / (2^256 - 1), exactly."""
    return Fraction(face_value * win_prob, MAX_WIN_PROB)
