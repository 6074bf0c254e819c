"""The sender's side: which parameters to accept, how many tickets to send, and making them.

A gateway pays per segment. The fee is the output pixels * price plus a 2% margin; it sends just
enough tickets to bring its credit with the orchestrator up to that fee (or to one ticket's EV,
whichever is more), and settles the credit from the pixels the orchestrator reports back
(``BalanceLedger``). Nonces count from 1 per recipientRandHash: the recipient refuses a nonce it
has seen, so a nonce is never handed out twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction

import attrs

from .crypto import address_of, keccak256, personal_message_hash, sign_hash
from .errors import NonceExhaustedError, TicketParamsRejectedError
from .params import SenderInfo, TicketParams
from .payment import MAX_TICKETS_PER_PAYMENT, Payment, TicketSenderParams
from .ticket import Ticket, encode_packed

__all__ = [
    "DEFAULT_MAX_EV",
    "DEFAULT_MAX_TOTAL_EV",
    "FEE_MARGIN",
    "NonceAllocator",
    "TicketSender",
    "check_ticket_params",
    "output_pixels",
    "segment_fee",
    "tickets_needed",
]

DEFAULT_MAX_EV = 3 * 10**12
"""The highest ticket EV (wei) a sender accepts by default."""
DEFAULT_MAX_TOTAL_EV = 2 * 10**13
"""The highest EV (wei) of one payment's tickets together a sender accepts by default."""
FEE_MARGIN = Fraction(102, 100)
"""A segment's fee is its output pixels * price * this."""
_MAX_UINT32 = 2**32 - 1


def _reject(reason: str, message: str) -> TicketParamsRejectedError:
    return TicketParamsRejectedError(message, reason=reason)


def check_ticket_params(
    params: TicketParams,
    *,
    count: int,
    latest_block: int,
    sender_info: SenderInfo,
    max_ev: Fraction | int = DEFAULT_MAX_EV,
    max_total_ev: Fraction | int = DEFAULT_MAX_TOTAL_EV,
) -> None:
    """Refuses parameters a sender should not pay with, or a sender that cannot pay.

    Checks, in order: expired or expiring within one block (``expired``: fetch fresh ones);
    EV ≥ faceValue; EV > ``max_ev``; EV * ``count`` > ``max_total_ev``; an unlock in progress;
    no deposit; no reserve; faceValue above the deposit.

    Raises:
        TicketParamsRejectedError: with the failing check's ``reason``.
    """
    if params.expiration_block <= latest_block + 1:
        raise _reject(
            "expired",
            f"ticket params expire at block {params.expiration_block}, latest is {latest_block}",
        )
    ev = params.ev
    if ev >= params.face_value:
        raise _reject(
            "ev_not_below_face_value", f"ticket EV {ev} is not below face value {params.face_value}"
        )
    if ev > max_ev:
        raise _reject(
            "ev_above_max", f"ticket EV {int(ev)} wei is above the max EV {int(max_ev)} wei"
        )
    if ev * count > max_total_ev:
        raise _reject(
            "total_ev_above_max",
            f"{count} tickets of EV {int(ev)} wei are above the max total EV "
            f"{int(max_total_ev)} wei",
        )
    if sender_info.unlocking:
        raise _reject(
            "unlock_in_progress", f"sender unlock in progress (round {sender_info.withdraw_round})"
        )
    if sender_info.deposit == 0:
        raise _reject("no_deposit", "sender has no deposit")
    if sender_info.reserve == 0:
        raise _reject("no_reserve", "sender has no reserve")
    if params.face_value > sender_info.deposit:
        raise _reject(
            "face_value_above_deposit",
            f"ticket face value {params.face_value} is above the deposit {sender_info.deposit}",
        )


def output_pixels(profiles: Iterable[tuple[int, int, Fraction | float, Fraction | float]]) -> int:
    """Σ over (width, height, fps, duration) of w * h * ceil(fps) * ceil(duration)."""
    return sum(w * h * math.ceil(fps) * math.ceil(duration) for w, h, fps, duration in profiles)


def segment_fee(pixels: int, price: Fraction) -> Fraction:
    """What a segment costs: pixels * 1.02 * price, exactly."""
    return pixels * FEE_MARGIN * price


def tickets_needed(*, fee: Fraction, ticket_ev: Fraction, credit: Fraction) -> int:
    """How many tickets to send: ceil((max(fee, EV) - credit) / EV), or 0 when credit covers it.

    Raises:
        ValueError: ``ticket_ev`` is not positive.
    """
    if ticket_ev <= 0:
        raise ValueError("a ticket EV must be positive to pay with tickets")
    min_credit = max(fee, ticket_ev)
    if credit >= min_credit:
        return 0
    return math.ceil((min_credit - credit) / ticket_ev)


@attrs.define
class NonceAllocator:
    """Hands out sender nonces per recipientRandHash: 1, 2, 3, … never one twice."""

    _last: dict[bytes, int] = attrs.field(factory=dict, init=False)

    def allocate(self, recipient_rand_hash: bytes, count: int = 1) -> range:
        """The next ``count`` nonces under ``recipient_rand_hash``.

        Raises:
            NonceExhaustedError: they would pass 2^32 - 1 (fetch fresh parameters).
        """
        if count < 0:
            raise ValueError("count must not be negative")
        first = self._last.get(recipient_rand_hash, 0) + 1
        last = first + count - 1
        if last > _MAX_UINT32:
            raise NonceExhaustedError("sender nonces exhausted for this recipientRandHash")
        if count:
            self._last[recipient_rand_hash] = last
        return range(first, last + 1)

    def forget(self, recipient_rand_hash: bytes) -> None:
        """Drops the counter of parameters that will not be used again."""
        self._last.pop(recipient_rand_hash, None)

    def __len__(self) -> int:
        return len(self._last)


@attrs.define
class TicketSender:
    """Makes signed payments for one sender key."""

    _private_key: bytes = attrs.field(repr=False, alias="private_key")
    _address: str = attrs.field(init=False)
    _nonces: NonceAllocator = attrs.field(factory=NonceAllocator, init=False)

    def __attrs_post_init__(self) -> None:
        self._address = address_of(self._private_key)

    @property
    def address(self) -> str:
        """The sender's checksummed address."""
        return self._address

    def forget(self, recipient_rand_hash: bytes) -> None:
        """Drops the nonce counter of parameters that will not be used again."""
        self._nonces.forget(recipient_rand_hash)

    def create_payment(self, params: TicketParams, count: int) -> Payment:
        """A payment of ``count`` tickets under ``params``, each signed, with fresh nonces.

        The caller decides first that the parameters are acceptable (``check_ticket_params``)
        and how many tickets to send (``tickets_needed``).

        Raises:
            ValueError: ``count`` is outside 0…100.
            NonceExhaustedError: the parameters have no nonces left.
        """
        if not 0 <= count <= MAX_TICKETS_PER_PAYMENT:
            raise ValueError(f"a payment carries 0 to {MAX_TICKETS_PER_PAYMENT} tickets")
        template = Ticket(
            recipient=params.recipient,
            sender=self._address,
            face_value=params.face_value,
            win_prob=params.win_prob,
            sender_nonce=0,
            recipient_rand_hash=params.recipient_rand_hash,
            creation_round=params.creation_round,
            creation_round_block_hash=params.creation_round_block_hash,
        )
        packed = encode_packed(template)
        head, tail = packed[:104], packed[136:]  # around the 32-byte nonce
        tickets = tuple(
            TicketSenderParams(
                sender_nonce=nonce,
                signature=sign_hash(
                    self._private_key,
                    personal_message_hash(keccak256(head + nonce.to_bytes(32, "big") + tail)),
                ),
            )
            for nonce in self._nonces.allocate(params.recipient_rand_hash, count)
        )
        return Payment(params=params, sender=self._address, tickets=tickets)
