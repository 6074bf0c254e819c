"""Redemption: the pure policy, and the driver against an in-memory TicketBroker.

``MemoryChain`` is a small but real chain for redemption: it keeps the used-ticket set, the round
block hashes and the payouts, and checks a ticket the way the TicketBroker does (round hash,
validity period, recipientRand, used, signature, win).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from payments.pm import (
    is_winning_ticket,
    keccak256,
    recipient_rand_hash,
    recover_signer,
    ticket_hash,
)
from payments.redeemer import (
    ALREADY_REDEEMED,
    Drop,
    MarkRedeemed,
    NoBlockHashError,
    Redeemer,
    RedeemerStatistics,
    RedemptionChain,
    RedemptionPolicy,
    Retry,
    TicketUsedError,
)
from payments.store import StoredTicket, TicketStatus, TicketStore, TicketStoreStatistics

from .test_store import BLOCK_HASH, hash_of, make_winning

ROOT = Path(__file__).resolve().parents[2]


@attrs.define
class MemoryChain:
    """An in-memory TicketBroker: redeems each ticket once and remembers what it paid."""

    block: int = 1000
    round: int = 7
    block_hashes: dict[int, bytes] = attrs.field(factory=lambda: {7: BLOCK_HASH})
    used: set[bytes] = attrs.field(factory=set)
    paid: list[bytes] = attrs.field(factory=list)
    """Ticket hashes paid, in order."""
    failures: list[Exception] = attrs.field(factory=list)
    """Errors the next ``redeem`` calls raise first (a flaky RPC)."""
    state_failures: int = 0
    """How many of the next chain-state reads fail."""

    def latest_block(self) -> int:
        if self.state_failures:
            self.state_failures -= 1
            raise ConnectionError("RPC down")
        return self.block

    def current_round(self) -> int:
        return self.round

    def redeem(self, ticket: StoredTicket) -> str:
        if self.failures:
            raise self.failures.pop(0)
        t = ticket.ticket
        h = ticket_hash(t)
        block_hash = self.block_hashes.get(t.creation_round)
        if block_hash is None:
            raise NoBlockHashError(f"round {t.creation_round} has no block hash")
        if block_hash != t.creation_round_block_hash:
            raise RuntimeError("ticket creationRound blockHash invalid")
        if t.creation_round + 2 <= self.round:
            raise RuntimeError("ticket is expired")
        if recipient_rand_hash(ticket.recipient_rand) != t.recipient_rand_hash:
            raise RuntimeError("recipientRand does not match recipientRandHash")
        if h in self.used:
            raise TicketUsedError("ticket is used")
        if recover_signer(t, ticket.signature) != t.sender:
            raise RuntimeError("invalid signature over ticket hash")
        if not is_winning_ticket(ticket.signature, ticket.recipient_rand, t.win_prob):
            raise RuntimeError("ticket did not win")
        self.used.add(h)
        self.paid.append(h)
        return "0x" + keccak256(b"tx" + h).hex()


@pytest.fixture
def store() -> Iterator[TicketStore]:
    with TicketStore(":memory:") as s:
        yield s


def _check_protocol(chain: MemoryChain) -> RedemptionChain:
    return chain  # mypy checks that MemoryChain implements the seam


def counts(**values: int) -> RedeemerStatistics:
    fields = ("passes", "redeemed", "already_redeemed", "dropped", "failed_attempts")
    return RedeemerStatistics(**{**dict.fromkeys(fields, 0), "chain_errors": 0, **values})


# --- the policy, without trio --------------------------------------------------------------


def stored(attempts: int = 0) -> StoredTicket:
    w = make_winning()
    return StoredTicket(
        ticket_hash=hash_of(w), winning=w, status=TicketStatus.PENDING, attempts=attempts
    )


def test_a_transaction_hash_marks_the_ticket_redeemed() -> None:
    assert RedemptionPolicy().decide(stored(), "0xfeed", 1000) == MarkRedeemed(tx_hash="0xfeed")


def test_a_used_ticket_is_dropped_as_already_redeemed() -> None:
    decision = RedemptionPolicy().decide(stored(), TicketUsedError("used"), 1000)
    assert decision == Drop(reason=ALREADY_REDEEMED)


def test_a_round_without_block_hash_is_dropped() -> None:
    decision = RedemptionPolicy().decide(stored(), NoBlockHashError("none"), 1000)
    assert decision == Drop(reason="no block hash for round 7")


@pytest.mark.parametrize(
    ("attempts", "next_block"), [(0, 1001), (1, 1002), (2, 1004), (3, 1008), (6, 1016)]
)
def test_other_failures_retry_with_exponential_backoff(attempts: int, next_block: int) -> None:
    policy = RedemptionPolicy(max_attempts=10, backoff_blocks=1, max_backoff_blocks=16)
    decision = policy.decide(stored(attempts), TimeoutError("RPC timeout"), 1000)
    assert decision == Retry(error="TimeoutError: RPC timeout", next_attempt_block=next_block)


def test_a_ticket_that_keeps_failing_is_given_up() -> None:
    policy = RedemptionPolicy(max_attempts=3)
    decision = policy.decide(stored(attempts=2), RuntimeError("reverted"), 1000)
    assert decision == Drop(reason="gave up after 3 attempts: RuntimeError: reverted")


# --- the driver ------------------------------------------------------------------------------


async def redeem_blocks(redeemer: Redeemer, chain: MemoryChain, *blocks: int) -> None:
    """What ``Redeemer.run`` does at start and then on each of these blocks, one at a time."""
    await redeemer.redeem_due()
    for block in blocks:
        chain.block = block
        await redeemer.redeem_due()


def open_redeemer(store: TicketStore, chain: MemoryChain, **policy: int) -> Redeemer:
    return Redeemer(
        store=store,
        chain=chain,
        limiter=trio.CapacityLimiter(1),
        policy=RedemptionPolicy(**policy),
    )


async def test_a_ticket_is_redeemed_once_its_params_expire(store: TicketStore) -> None:
    chain = MemoryChain(block=1000)
    winning = make_winning(expiration_block=1040)
    store.add(winning)
    redeemer = open_redeemer(store, chain)
    await redeem_blocks(redeemer, chain, 1039, 1040, 1041)
    assert chain.paid == [hash_of(winning)]
    assert store.get(hash_of(winning)).tx_hash == "0x" + keccak256(b"tx" + hash_of(winning)).hex()
    assert redeemer.statistics() == counts(passes=4, redeemed=1)


async def test_used_tickets_and_rounds_without_hash_are_dropped(store: TicketStore) -> None:
    chain = MemoryChain(block=2000, round=8)
    used = make_winning(nonce=1)
    unhashed = make_winning(nonce=2, creation_round=8, block_hash=keccak256(b"round 8"))
    for w in (used, unhashed):
        store.add(w)
    chain.used.add(hash_of(used))
    redeemer = open_redeemer(store, chain)
    await redeem_blocks(redeemer, chain)
    assert chain.paid == []
    assert store.get(hash_of(used)).drop_reason == ALREADY_REDEEMED
    assert store.get(hash_of(unhashed)).drop_reason == "no block hash for round 8"
    assert redeemer.statistics() == counts(passes=1, already_redeemed=1, dropped=1)


async def test_a_failing_redemption_is_retried_later(store: TicketStore) -> None:
    chain = MemoryChain(block=2000)
    winning = make_winning()
    store.add(winning)
    chain.failures = [ConnectionError("reset"), TimeoutError("slow")]
    redeemer = open_redeemer(store, chain, backoff_blocks=2)
    # 2000: fails, next at 2002. 2001: not due. 2002: fails, next at 2006. 2006: redeemed.
    await redeem_blocks(redeemer, chain, 2001, 2002, 2003, 2006)
    assert chain.paid == [hash_of(winning)]
    assert store.statistics() == TicketStoreStatistics(
        pending=0,
        redeemed=1,
        dropped=0,
        failed_attempts=2,
        face_value_pending=0,
        face_value_redeemed=10**15,
    )
    assert redeemer.statistics() == counts(passes=5, redeemed=1, failed_attempts=2)


async def test_failures_are_bounded(store: TicketStore) -> None:
    chain = MemoryChain(block=2000)
    winning = make_winning()
    store.add(winning)
    chain.failures = [RuntimeError("reverted")] * 3
    redeemer = open_redeemer(store, chain, max_attempts=3, max_backoff_blocks=1)
    await redeem_blocks(redeemer, chain, 2001, 2002, 2003)
    assert chain.paid == []
    assert store.get(hash_of(winning)).drop_reason == (
        "gave up after 3 attempts: RuntimeError: reverted"
    )
    assert redeemer.statistics() == counts(passes=4, failed_attempts=2, dropped=1)


async def test_tickets_too_old_for_the_chain_are_dropped_unredeemed(store: TicketStore) -> None:
    chain = MemoryChain(block=2000, round=9)
    winning = make_winning()  # round 7: 7 + 2 <= 9
    store.add(winning)
    redeemer = open_redeemer(store, chain)
    await redeem_blocks(redeemer, chain)
    assert chain.paid == []
    assert store.get(hash_of(winning)).drop_reason == "expired round"
    assert redeemer.statistics() == counts(passes=1, dropped=1)


async def test_an_unreadable_chain_skips_the_pass(store: TicketStore) -> None:
    chain = MemoryChain(block=2000, state_failures=1)
    store.add(make_winning())
    redeemer = open_redeemer(store, chain)
    await redeem_blocks(redeemer, chain, 2001)
    assert len(chain.paid) == 1
    assert redeemer.statistics() == counts(passes=2, redeemed=1, chain_errors=1)


async def until_waiting(receive: trio.MemoryReceiveChannel[int]) -> None:
    """Returns once the redeemer waits for the next block (its pass is over)."""
    while not receive.statistics().tasks_waiting_receive:
        await trio.testing.wait_all_tasks_blocked(cushion=0.001)


async def test_run_makes_a_pass_at_start_and_one_per_block(store: TicketStore) -> None:
    chain = MemoryChain(block=1000)
    store.add(make_winning(expiration_block=1002))
    redeemer = open_redeemer(store, chain)
    send, receive = trio.open_memory_channel[int](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(redeemer.run, receive)
        async with send:
            await until_waiting(receive)
            await send.send(1001)
            await until_waiting(receive)  # the pass for 1001 is over
            assert chain.paid == []
            await send.send(1002)
    # The pass at start used the chain's head (1000); the others the blocks sent.
    assert len(chain.paid) == 1
    assert redeemer.statistics() == counts(passes=3, redeemed=1)


async def test_blocks_that_queue_up_during_a_pass_make_one_pass(store: TicketStore) -> None:
    chain = MemoryChain(block=1000)
    store.add(make_winning(expiration_block=1003))
    redeemer = open_redeemer(store, chain)
    send, receive = trio.open_memory_channel[int](10)
    async with send:
        for block in (1001, 1002, 1003):
            send.send_nowait(block)
    await redeemer.run(receive)  # returns when the channel is closed
    # The start, then the three blocks at once, at the highest.
    assert redeemer.statistics() == counts(passes=2, redeemed=1)


async def test_cancelling_does_not_split_a_redemption_from_its_record(store: TicketStore) -> None:
    entered, release = threading.Event(), threading.Event()

    @attrs.define
    class SlowChain(MemoryChain):
        def redeem(self, ticket: StoredTicket) -> str:
            entered.set()
            release.wait(10)
            return super().redeem(ticket)

    chain = SlowChain(block=2000)
    winning = make_winning()
    store.add(winning)
    _, receive = trio.open_memory_channel[int](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(open_redeemer(store, chain).run, receive)
        await trio.to_thread.run_sync(entered.wait, 10)
        nursery.cancel_scope.cancel()
        release.set()
    assert chain.paid == [hash_of(winning)]
    assert store.get(hash_of(winning)).status is TicketStatus.REDEEMED


async def test_running_again_over_the_same_store_redeems_nothing_twice(tmp_path: Path) -> None:
    chain = MemoryChain(block=2000)
    path = tmp_path / "tickets.db"
    with TicketStore(path) as store:
        for nonce in (1, 2, 3):
            store.add(make_winning(nonce=nonce))
        await redeem_blocks(open_redeemer(store, chain), chain)
    with TicketStore(path) as store:
        again = open_redeemer(store, chain)
        await redeem_blocks(again, chain, 2001)
        assert store.statistics().redeemed == 3
    assert len(chain.paid) == 3
    assert again.statistics() == counts(passes=2)


# --- crashes: a real process killed with SIGKILL ---------------------------------------------


def child_main() -> None:
    """The orchestrator that dies: ``MODE STORE USED`` on the command line.

    ``after-add``: stores a winning ticket, says so, waits to be killed (before any redemption).
    ``after-chain``: also redeems it on a chain whose used set lives in the file USED, says so,
    and waits to be killed before recording the redemption in the store.
    """
    mode, store_path, used_path = sys.argv[1:4]
    store = TicketStore(store_path)
    winning = make_winning()
    store.add(winning)  # durable when it returns: the payment may be acknowledged now
    if mode == "after-chain":
        chain = MemoryChain(block=2000)
        chain.redeem(store.get(hash_of(winning)))
        fd = os.open(used_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, b"".join(chain.used))
        os.fsync(fd)
        os.close(fd)
    print(mode, flush=True)
    time.sleep(60)


def run_and_kill(mode: str, store_path: Path, used_path: Path) -> None:
    code = "from tests.payments.test_redeemer import child_main; child_main()"
    with subprocess.Popen(
        [sys.executable, "-c", code, mode, str(store_path), str(used_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == mode
        finally:
            child.kill()  # SIGKILL: no cleanup, no close, no atexit
        assert child.wait(10) == -9


async def test_a_ticket_acknowledged_before_a_crash_is_redeemed_once_after(
    tmp_path: Path,
) -> None:
    store_path, used_path = tmp_path / "tickets.db", tmp_path / "used"
    await trio.to_thread.run_sync(run_and_kill, "after-add", store_path, used_path)
    winning = make_winning()
    chain = MemoryChain(block=2000)
    with TicketStore(store_path) as store:
        assert [s.ticket_hash for s in store.tickets()] == [hash_of(winning)]
        first = open_redeemer(store, chain)
        await redeem_blocks(first, chain, 2001)
    with TicketStore(store_path) as store:  # restarted once more
        await redeem_blocks(open_redeemer(store, chain), chain, 2002)
        assert store.statistics().redeemed == 1
    assert chain.paid == [hash_of(winning)]
    assert first.statistics() == counts(passes=2, redeemed=1)


async def test_a_crash_after_the_chain_paid_is_counted_once(tmp_path: Path) -> None:
    store_path, used_path = tmp_path / "tickets.db", tmp_path / "used"
    await trio.to_thread.run_sync(run_and_kill, "after-chain", store_path, used_path)
    winning = make_winning()
    chain = MemoryChain(block=2000, used={used_path.read_bytes()})  # the chain outlived us
    assert chain.used == {hash_of(winning)}
    with TicketStore(store_path) as store:
        assert store.get(hash_of(winning)).status is TicketStatus.PENDING
        redeemer = open_redeemer(store, chain)
        await redeem_blocks(redeemer, chain, 2001)
        assert store.get(hash_of(winning)).drop_reason == ALREADY_REDEEMED
        assert store.statistics().pending == 0
    assert chain.paid == []  # no second payment
    assert redeemer.statistics() == counts(passes=2, already_redeemed=1)
