"""Redeeming winning tickets on chain: the policy (pure) and a thin trio driver.

How this works
--------------
Winning tickets wait in the ``TicketStore`` until their parameters expire (PAYMENTS.md: no more
tickets can arrive under them, so the sender cannot be paid twice for the same recipientRand).
On every new block the driver:

1. takes the chain head (the block event's number, or asks the chain) and the current round;
2. drops the tickets too old for the chain to take (creationRound + 2 <= currentRound);
3. tries each due ticket in turn, and hands the chain's answer to ``RedemptionPolicy.decide``,
   which says what to record: redeemed, dropped, or retry at a later block.

``decide`` is pure: a used ticket (``TicketUsedError``) is dropped as "already redeemed" (the
chain paid it once, perhaps to a previous run of this node that died before recording it), a
round without a block hash (``NoBlockHashError``) is dropped, and anything else is retried with an
exponential backoff in blocks, until ``max_attempts`` failures.

Exactly-once: the chain marks a ticket used in the same transaction that pays it, and the store
records the outcome durably. A redemption and the recording of its outcome run under one
cancellation shield, so stopping the node does not split them; a crash between the two leaves
the ticket pending, and the next attempt is answered ``TicketUsedError`` and dropped: paid once,
counted once.

All chain and store calls block; they run in ``trio.to_thread.run_sync`` under the limiters the
node owns (one for the chain client, one for the store).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar, TypeVarTuple

import attrs
import trio

from lpstream.errors import LpstreamError

from .store import StoredTicket, TicketStore

__all__ = [
    "ALREADY_REDEEMED",
    "Drop",
    "MarkRedeemed",
    "NoBlockHashError",
    "Redeemer",
    "RedeemerStatistics",
    "RedemptionChain",
    "RedemptionDecision",
    "RedemptionError",
    "RedemptionPolicy",
    "Retry",
    "TicketUsedError",
    "apply_decision",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

ALREADY_REDEEMED = "already redeemed"
"""The drop reason for a ticket the chain calls used."""


class RedemptionError(LpstreamError):
    """The chain refused to redeem a ticket, for a reason that retrying cannot change."""


class TicketUsedError(RedemptionError):
    """The TicketBroker has already redeemed this ticket (``usedTickets`` is set)."""


class NoBlockHashError(RedemptionError):
    """The ticket's creation round has no block hash on chain: it can never be redeemed."""


class RedemptionChain(Protocol):
    """What redemption needs from a chain. Every call blocks; the driver runs them in a thread."""

    def latest_block(self) -> int:
        """The chain head's block number."""
        ...

    def current_round(self) -> int:
        """The current round."""
        ...

    def redeem(self, ticket: StoredTicket) -> str:
        """Redeems one winning ticket and waits for it to be mined.

        Returns:
            The transaction hash ("0x…").

        Raises:
            TicketUsedError: the ticket was already redeemed.
            NoBlockHashError: the ticket's creation round has no block hash.
            Exception: anything else; the ticket is tried again later.
        """
        ...


@attrs.frozen(kw_only=True)
class MarkRedeemed:
    """The chain paid the ticket."""

    tx_hash: str
    """The redeeming transaction."""


@attrs.frozen(kw_only=True)
class Drop:
    """Give the ticket up."""

    reason: str
    """Why, as the store records it."""


@attrs.frozen(kw_only=True)
class Retry:
    """Try again once the chain reaches ``next_attempt_block``."""

    error: str
    """What went wrong this time."""
    next_attempt_block: int
    """The first block of the next attempt."""


RedemptionDecision = MarkRedeemed | Drop | Retry


@attrs.frozen(kw_only=True)
class RedemptionPolicy:
    """What to do with the chain's answer to a redemption; pure, no I/O."""

    max_attempts: int = 30
    """Failures after which a ticket is dropped (the stale-round rule usually comes first)."""
    backoff_blocks: int = 1
    """Blocks to wait after the first failure; doubled after each further one."""
    max_backoff_blocks: int = 256
    """The longest wait between two attempts, in blocks."""

    def next_attempt_block(self, failures: int, latest_block: int) -> int:
        """The block of the next attempt after ``failures`` failures (at least 1)."""
        wait = min(self.backoff_blocks << min(failures - 1, 62), self.max_backoff_blocks)
        return latest_block + max(wait, 1)

    def decide(
        self, ticket: StoredTicket, outcome: str | Exception, latest_block: int
    ) -> RedemptionDecision:
        """The decision for ``ticket`` given what ``RedemptionChain.redeem`` did.

        Args:
            ticket: the ticket as it was before this attempt.
            outcome: the transaction hash, or the exception the chain raised.
            latest_block: the chain head of this attempt.
        """
        if isinstance(outcome, str):
            return MarkRedeemed(tx_hash=outcome)
        if isinstance(outcome, TicketUsedError):
            return Drop(reason=ALREADY_REDEEMED)
        if isinstance(outcome, NoBlockHashError):
            return Drop(reason=f"no block hash for round {ticket.creation_round}")
        error = f"{type(outcome).__name__}: {outcome}"
        failures = ticket.attempts + 1
        if failures >= self.max_attempts:
            return Drop(reason=f"gave up after {failures} attempts: {error}")
        return Retry(
            error=error, next_attempt_block=self.next_attempt_block(failures, latest_block)
        )


def apply_decision(store: TicketStore, ticket: StoredTicket, decision: RedemptionDecision) -> None:
    """Records ``decision`` for ``ticket`` in ``store`` (blocking)."""
    if isinstance(decision, MarkRedeemed):
        store.mark_redeemed(ticket.ticket_hash, decision.tx_hash)
    elif isinstance(decision, Drop):
        store.mark_dropped(ticket.ticket_hash, decision.reason)
    else:
        store.record_failure(ticket.ticket_hash, decision.error, decision.next_attempt_block)


@attrs.frozen(kw_only=True)
class RedeemerStatistics:
    """What a ``Redeemer`` did since it was made."""

    passes: int
    """Blocks handled (passes over the queue)."""
    redeemed: int
    """Tickets the chain paid."""
    already_redeemed: int
    """Tickets dropped because the chain had already redeemed them."""
    dropped: int
    """Tickets dropped for any other reason (no block hash, too many failures, too old)."""
    failed_attempts: int
    """Attempts that failed and will be retried."""
    chain_errors: int
    """Passes skipped because the chain head or round could not be read."""


@attrs.define
class Redeemer:
    """Redeems due tickets from ``store`` on ``chain`` on every new block.

    Args:
        store: the queue of winning tickets.
        chain: the chain to redeem on.
        limiter: the chain client's limiter.
        store_limiter: the store's limiter (defaults to ``limiter``).
        policy: the retry and drop rules.
    """

    _store: TicketStore = attrs.field(alias="store")
    _chain: RedemptionChain = attrs.field(alias="chain")
    _limiter: trio.CapacityLimiter = attrs.field(alias="limiter")
    _store_limiter: trio.CapacityLimiter | None = attrs.field(alias="store_limiter", default=None)
    policy: RedemptionPolicy = attrs.field(factory=RedemptionPolicy)
    _passes: int = attrs.field(default=0, init=False)
    _redeemed: int = attrs.field(default=0, init=False)
    _already_redeemed: int = attrs.field(default=0, init=False)
    _dropped: int = attrs.field(default=0, init=False)
    _failed: int = attrs.field(default=0, init=False)
    _chain_errors: int = attrs.field(default=0, init=False)

    async def run(self, block_events: trio.MemoryReceiveChannel[int]) -> None:
        """Makes one pass now (tickets left by a previous run), then one per new block.

        ``block_events`` carries the numbers of new chain heads. The blocks that queued up
        during a pass are handled by one pass, at the highest of them. Returns when the channel
        is closed; stop it by cancelling.
        """
        await self.redeem_due()
        async with block_events:
            async for block in block_events:
                latest, closed = block, False
                while True:
                    try:
                        latest = max(latest, block_events.receive_nowait())
                    except trio.WouldBlock:
                        break
                    except trio.EndOfChannel:
                        closed = True
                        break
                await self.redeem_due(latest)
                if closed:
                    return

    async def redeem_due(self, latest_block: int | None = None) -> None:
        """One pass: drop the tickets too old to redeem, then redeem the due ones.

        Args:
            latest_block: the chain head, if known; otherwise the chain is asked.
        """
        self._passes += 1
        try:
            head, current_round = await trio.to_thread.run_sync(
                self._chain_state, latest_block, limiter=self._limiter
            )
        except Exception as exc:
            self._chain_errors += 1
            logger.warning("redeemer: cannot read the chain head and round: %s", exc)
            return
        stale = await self._in_store(self._store.stale, current_round)
        for ticket in stale:
            self._dropped += 1
            logger.warning(
                "redeemer: dropped ticket %s (face value %d wei): round %d is too old",
                ticket.ticket_hash.hex(),
                ticket.ticket.face_value,
                ticket.creation_round,
            )
        due = await self._in_store(self._store.due, head, current_round)
        for ticket in due:
            await self._redeem(ticket, head)

    async def _redeem(self, ticket: StoredTicket, latest_block: int) -> None:
        # The shield keeps a redemption and the record of its outcome together: a cancelled
        # node does not forget a ticket the chain just paid (the chain client has its own
        # deadlines, so this ends).
        with trio.CancelScope(shield=True):
            outcome: str | Exception
            try:
                outcome = await trio.to_thread.run_sync(
                    self._chain.redeem, ticket, limiter=self._limiter
                )
            except Exception as exc:
                outcome = exc
            decision = self.policy.decide(ticket, outcome, latest_block)
            await self._in_store(apply_decision, self._store, ticket, decision)
        self._count(ticket, decision)

    def _count(self, ticket: StoredTicket, decision: RedemptionDecision) -> None:
        name = ticket.ticket_hash.hex()
        if isinstance(decision, MarkRedeemed):
            self._redeemed += 1
            logger.info("redeemer: redeemed ticket %s in %s", name, decision.tx_hash)
        elif isinstance(decision, Drop):
            if decision.reason == ALREADY_REDEEMED:
                self._already_redeemed += 1
            else:
                self._dropped += 1
            logger.warning("redeemer: dropped ticket %s: %s", name, decision.reason)
        else:
            self._failed += 1
            logger.warning(
                "redeemer: ticket %s failed (%s); next attempt at block %d",
                name,
                decision.error,
                decision.next_attempt_block,
            )

    def _chain_state(self, latest_block: int | None) -> tuple[int, int]:
        if latest_block is None:
            latest_block = self._chain.latest_block()
        return latest_block, self._chain.current_round()

    async def _in_store(self, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        limiter = self._limiter if self._store_limiter is None else self._store_limiter
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)

    def statistics(self) -> RedeemerStatistics:
        """Counters since the redeemer was made."""
        return RedeemerStatistics(
            passes=self._passes,
            redeemed=self._redeemed,
            already_redeemed=self._already_redeemed,
            dropped=self._dropped,
            failed_attempts=self._failed,
            chain_errors=self._chain_errors,
        )
