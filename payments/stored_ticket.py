"""A winning ticket as the store holds it, where it is in its life, and the store's errors.

A stored ticket is ``pending`` until the chain pays it (``redeemed``) or it is given up
(``dropped``); the two last are final. :func:`is_due` and :func:`is_stale` are the rules the
store's queries apply, stated once for one ticket.
"""

from __future__ import annotations

import enum

import attrs

from lpstream.errors import LpstreamError

from .pm import Ticket, WinningTicket

__all__ = [
    "EXPIRED_ROUND",
    "TICKET_VALIDITY_ROUNDS",
    "StoredTicket",
    "TicketStatus",
    "TicketStoreError",
    "TicketStoreStatistics",
    "UnknownTicketError",
    "is_due",
    "is_stale",
]

TICKET_VALIDITY_ROUNDS = 2
"""A ticket is redeemable while creationRound + 2 > currentRound (TicketBroker)."""

EXPIRED_ROUND = "expired round"
"""The drop reason ``stale`` records."""


class TicketStoreError(LpstreamError):
    """The ticket store cannot be opened or used as asked."""


class UnknownTicketError(TicketStoreError, KeyError):
    """No ticket with this hash is in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TicketStatus(enum.Enum):
    """Where a stored ticket is in its life."""

    PENDING = "pending"
    """Waiting to be redeemed."""
    REDEEMED = "redeemed"
    """The chain paid it (``tx_hash`` names the transaction)."""
    DROPPED = "dropped"
    """Given up (``drop_reason`` says why)."""


@attrs.frozen(kw_only=True)
class StoredTicket:
    """A winning ticket as the store holds it."""

    ticket_hash: bytes
    """The ticket's hash: its key here and in the TicketBroker's ``usedTickets``."""
    winning: WinningTicket
    """The ticket, its signature, recipientRand and expirationBlock."""
    status: TicketStatus
    """Pending, redeemed or dropped."""
    attempts: int = 0
    """Failed redemption attempts so far."""
    next_attempt_block: int = 0
    """No new attempt before this block (backoff after a failure)."""
    last_error: str | None = None
    """The last failure, as recorded."""
    tx_hash: str | None = None
    """The redeeming transaction, once redeemed."""
    drop_reason: str | None = None
    """Why it was dropped, once dropped."""

    @property
    def ticket(self) -> Ticket:
        """The ticket as the TicketBroker takes it."""
        return self.winning.ticket

    @property
    def signature(self) -> bytes:
        """The sender's 65-byte signature."""
        return self.winning.signature

    @property
    def recipient_rand(self) -> int:
        """The recipientRand redemption reveals."""
        return self.winning.recipient_rand

    @property
    def expiration_block(self) -> int:
        """The parameters' expirationBlock: redeem only once the chain reaches it."""
        return self.winning.expiration_block

    @property
    def creation_round(self) -> int:
        """The round the ticket's parameters were issued in."""
        return self.winning.ticket.creation_round


@attrs.frozen(kw_only=True)
class TicketStoreStatistics:
    """Counts of what the store holds."""

    pending: int
    """Tickets waiting to be redeemed."""
    redeemed: int
    """Tickets the chain paid."""
    dropped: int
    """Tickets given up."""
    failed_attempts: int
    """Failed redemption attempts over all tickets."""
    face_value_pending: int
    """Wei the pending tickets are worth."""
    face_value_redeemed: int
    """Wei the redeemed tickets were worth."""


def is_due(ticket: StoredTicket, latest_block: int, current_round: int) -> bool:
    """True when a pending ticket should be tried now (what ``TicketStore.due`` selects).

    Its parameters have expired (the chain reached expirationBlock, the rule the validator and
    go-livepeer use), it is still redeemable (creationRound + 2 > currentRound), and its backoff
    is over.
    """
    return (
        ticket.status is TicketStatus.PENDING
        and ticket.expiration_block <= latest_block
        and ticket.next_attempt_block <= latest_block
        and not is_stale(ticket, current_round)
    )


def is_stale(ticket: StoredTicket, current_round: int) -> bool:
    """True when the chain would refuse the ticket for its age (creationRound + 2 <= round)."""
    return ticket.creation_round + TICKET_VALIDITY_ROUNDS <= current_round
