"""Ticket parameters: what an orchestrator issues to a sender, and how it picks them.

The recipient picks a face value big enough that a win pays for the redemption transaction many
times over (txCost * 100), but never more than the sender's reserve can cover for it (maxFloat),
then picks winProb so that each ticket is worth the EV it wants. It binds every parameter to a
fresh seed through ``recipient_rand``, so the parameters come back with the tickets and need no
storage: recomputing the HMAC and comparing the hash proves they are ours, unaltered.
"""

from __future__ import annotations

from fractions import Fraction

import attrs

from ._checks import check_hash, check_price, check_uint256
from .errors import InsufficientSenderReserveError
from .ticket import (
    TicketTerms,
    aux_data_for,
    recipient_rand,
    recipient_rand_hash,
    win_prob_for,
)

__all__ = [
    "EV_MULTIPLIER",
    "PARAMS_EXPIRATION_BLOCKS",
    "TX_COST_MULTIPLIER",
    "SenderInfo",
    "TicketParams",
    "face_value_for",
    "issue_ticket_params",
    "max_float",
]

PARAMS_EXPIRATION_BLOCKS = 40
"""Parameters expire this many blocks after the latest block seen when they were issued."""
TX_COST_MULTIPLIER = 100
"""Default face value = redemption transaction cost * this."""
EV_MULTIPLIER = 100
"""Face value when txCost * TX_COST_MULTIPLIER falls below the EV: EV * this."""


@attrs.frozen(kw_only=True)
class SenderInfo:
    """A sender's funds as the TicketBroker's ``getSenderInfo`` reports them."""

    deposit: int
    """Wei in the deposit: pays winning tickets first."""
    withdraw_round: int
    """Round from which the sender may withdraw; 0 when no unlock is in progress."""
    reserve: int
    """Wei left in the reserve (``fundsRemaining``)."""
    reserve_claimed_in_current_round: int = 0
    """Reserve wei claimed by orchestrators in the current round."""

    @property
    def unlocking(self) -> bool:
        """An unlock is in progress (the sender is heading for a withdrawal)."""
        return self.withdraw_round != 0

    def unlocks_soon(self, last_initialized_round: int) -> bool:
        """The funds unlock no later than the round after the last initialized one.

        The recipient refuses such a sender's tickets outright (a fatal error): they could not
        be redeemed in time.
        """
        return self.withdraw_round != 0 and self.withdraw_round <= last_initialized_round + 1


@attrs.frozen(kw_only=True, cache_hash=True)
class TicketParams(TicketTerms):
    """The parameters an orchestrator issues to one sender; tickets echo them back."""

    seed: bytes = attrs.field(validator=check_hash)
    """32 random bytes from which (with the secret) the recipient re-derives recipientRand."""
    expiration_block: int = attrs.field(validator=check_uint256)
    """The recipient takes tickets under these parameters only while the chain is below this."""
    price: Fraction = attrs.field(validator=check_price)
    """The price per pixel (wei) the tickets pay for, in lowest terms."""


def max_float(
    *,
    reserve: int,
    pool_size: int,
    claimed: int,
    reserve_claimed_in_current_round: int = 0,
    deposit: int = 0,
    pending: int = 0,
) -> int:
    """The most a recipient should let a sender owe it in face value; may be negative.

    Our allocation of the reserve, ``(reserve + claimed this round) // pool size - already
    claimed by us``, minus the face value of our tickets pending redemption unless the deposit
    covers them three times over.

    Args:
        reserve: the sender's reserve funds remaining.
        pool_size: the active orchestrator set's size; 0 gives an allocation of 0.
        claimed: what we already claimed from this sender's reserve this round.
        reserve_claimed_in_current_round: what all orchestrators claimed from it this round.
        deposit: the sender's deposit.
        pending: face value of our winning tickets from this sender awaiting redemption.
    """
    if pool_size == 0:
        allocation = 0
    else:
        allocation = (reserve + reserve_claimed_in_current_round) // pool_size - claimed
    if pending > 0 and deposit >= 3 * pending:
        return allocation
    return allocation - pending


def face_value_for(
    *,
    ev: int,
    tx_cost: int,
    max_float: int,
    max_face_value: int = 0,
    tx_cost_multiplier: int = TX_COST_MULTIPLIER,
) -> int:
    """The face value to offer a sender.

    txCost * 100, raised to EV * 100 if that is below the EV, capped by ``max_float`` and by
    ``max_face_value`` when it is positive.

    Raises:
        InsufficientSenderReserveError: the cap leaves less than the EV.
    """
    face_value = tx_cost * tx_cost_multiplier
    if face_value < ev:
        face_value = ev * EV_MULTIPLIER
    face_value = min(face_value, max_float)
    if max_face_value > 0:
        face_value = min(face_value, max_face_value)
    if face_value < ev:
        raise InsufficientSenderReserveError(
            f"insufficient sender reserve: max float {max_float} is below the ticket EV {ev}"
        )
    return face_value


def issue_ticket_params(
    *,
    recipient: str,
    secret: bytes,
    seed: bytes,
    sender: str,
    price: Fraction,
    ev: int,
    tx_cost: int,
    max_float: int,
    latest_block: int,
    creation_round: int,
    creation_round_block_hash: bytes,
    max_face_value: int = 0,
    tx_cost_multiplier: int = TX_COST_MULTIPLIER,
) -> TicketParams:
    """The ticket parameters an orchestrator issues to ``sender``.

    A zero price needs no payment: face value and winProb are then 0.

    Args:
        recipient: our address.
        secret: our 32-byte recipientRand secret.
        seed: 32 fresh random bytes for this issue (the caller draws them: this module does no
            I/O).
        sender: the gateway's address.
        price: our price per pixel in wei.
        ev: the EV we want per ticket, in wei.
        tx_cost: redeemGas * gasPrice, in wei.
        max_float: ``max_float(...)`` for this sender.
        latest_block: the latest block seen; the parameters expire 40 blocks later.
        creation_round: the last initialized round.
        creation_round_block_hash: that round's block hash.
        max_face_value: an operator's cap on the face value; 0 for none.
        tx_cost_multiplier: face value as a multiple of the transaction cost.

    Raises:
        InsufficientSenderReserveError: the sender's reserve cannot back a ticket of the EV.
    """
    if len(seed) != 32 or len(secret) != 32:
        raise ValueError("seed and secret are 32 bytes each")
    price = Fraction(price)
    face_value = 0
    if price > 0:
        face_value = face_value_for(
            ev=ev,
            tx_cost=tx_cost,
            max_float=max_float,
            max_face_value=max_face_value,
            tx_cost_multiplier=tx_cost_multiplier,
        )
    win_prob = win_prob_for(ev, face_value)
    expiration_block = latest_block + PARAMS_EXPIRATION_BLOCKS
    aux_data = aux_data_for(creation_round, creation_round_block_hash)
    rand = recipient_rand(
        secret,
        seed,
        sender,
        face_value,
        win_prob,
        expiration_block,
        price.numerator,
        price.denominator,
        aux_data,
    )
    return TicketParams(
        recipient=recipient,
        face_value=face_value,
        win_prob=win_prob,
        recipient_rand_hash=recipient_rand_hash(rand),
        seed=seed,
        expiration_block=expiration_block,
        price=price,
        creation_round=creation_round,
        creation_round_block_hash=creation_round_block_hash,
    )
