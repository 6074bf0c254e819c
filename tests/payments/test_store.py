"""The SQLite queue of winning tickets: durable, once per ticket hash, and its selection rules."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.pm import (
    MAX_WIN_PROB,
    Ticket,
    WinningTicket,
    address_of,
    keccak256,
    recipient_rand_hash,
    sign_ticket,
    ticket_hash,
)
from payments.store import (
    SCHEMA_VERSION,
    StoredTicket,
    TicketStatus,
    TicketStore,
    TicketStoreError,
    TicketStoreStatistics,
    UnknownTicketError,
    is_due,
    is_stale,
)

SENDER_KEY = keccak256(b"gateway")
SENDER = address_of(SENDER_KEY)
RECIPIENT = address_of(keccak256(b"orchestrator"))
BLOCK_HASH = keccak256(b"round 7")


def make_winning(
    *,
    nonce: int = 1,
    face_value: int = 10**15,
    win_prob: int = MAX_WIN_PROB,
    creation_round: int = 7,
    block_hash: bytes = BLOCK_HASH,
    expiration_block: int = 1040,
    rand: int = 12345,
) -> WinningTicket:
    """A signed ticket that wins (winProb 2^256 - 1 by default), as the validator reports it."""
    ticket = Ticket(
        recipient=RECIPIENT,
        sender=SENDER,
        face_value=face_value,
        win_prob=win_prob,
        sender_nonce=nonce,
        recipient_rand_hash=recipient_rand_hash(rand),
        creation_round=creation_round,
        creation_round_block_hash=block_hash,
    )
    return WinningTicket(
        ticket=ticket,
        signature=sign_ticket(SENDER_KEY, ticket),
        recipient_rand=rand,
        expiration_block=expiration_block,
    )


def hash_of(winning: WinningTicket) -> bytes:
    return ticket_hash(winning.ticket)


def stats(**counts: int) -> TicketStoreStatistics:
    values = dict.fromkeys(
        (
            "pending",
            "redeemed",
            "dropped",
            "failed_attempts",
            "face_value_pending",
            "face_value_redeemed",
        ),
        0,
    )
    values.update(counts)
    return TicketStoreStatistics(**values)


@pytest.fixture
def store() -> Iterator[TicketStore]:
    with TicketStore(":memory:") as s:
        yield s


def test_a_stored_ticket_keeps_every_field_and_its_recipient_rand(tmp_path: Path) -> None:
    winning = make_winning(
        nonce=2**256 - 1,
        face_value=2**256 - 1,
        win_prob=2**255 + 3,
        rand=2**256 - 2,
        creation_round=2**40,
        expiration_block=2**62,
    )
    path = tmp_path / "tickets.db"
    with TicketStore(path) as store:
        store.add(winning)
    with TicketStore(path) as reopened:
        stored = reopened.get(hash_of(winning))
    assert stored == StoredTicket(
        ticket_hash=hash_of(winning), winning=winning, status=TicketStatus.PENDING
    )
    assert stored.recipient_rand == 2**256 - 2


def test_adding_a_ticket_twice_stores_it_once(store: TicketStore) -> None:
    winning = make_winning()
    store.add(winning)
    store.add(winning)
    assert store.statistics() == stats(pending=1, face_value_pending=10**15)
    store.mark_redeemed(hash_of(winning), "0xabc")
    store.add(winning)
    assert store.get(hash_of(winning)).status is TicketStatus.REDEEMED
    assert store.statistics() == stats(redeemed=1, face_value_redeemed=10**15)


def test_an_added_ticket_is_in_the_file_before_add_returns(tmp_path: Path) -> None:
    path = tmp_path / "tickets.db"
    store = TicketStore(path)
    store.add(make_winning())
    # Another connection (another process, after a crash) sees the committed row at once.
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM tickets").fetchone() == (1,)
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    store.close()


def test_due_tickets_have_expired_params_and_a_live_round(store: TicketStore) -> None:
    early = make_winning(nonce=1, expiration_block=100)
    late = make_winning(nonce=2, expiration_block=110)
    old = make_winning(nonce=3, expiration_block=90, creation_round=6)
    for w in (late, early, old):
        store.add(w)

    def due(latest_block: int, current_round: int) -> list[int]:
        return [s.ticket.sender_nonce for s in store.due(latest_block, current_round)]

    assert due(99, 7) == [3]
    assert due(100, 7) == [3, 1]  # expired once the chain reaches expirationBlock
    assert due(110, 7) == [3, 1, 2]  # earliest expiration first
    assert due(110, 8) == [1, 2]  # round 6 + 2 <= 8: the chain refuses it
    assert due(110, 9) == []


def test_a_failure_postpones_the_ticket_and_is_counted(store: TicketStore) -> None:
    winning = make_winning(expiration_block=100)
    store.add(winning)
    store.record_failure(hash_of(winning), "RPC timeout", 105)
    assert store.due(104, 7) == []
    [again] = store.due(105, 7)
    assert (again.attempts, again.last_error, again.next_attempt_block) == (1, "RPC timeout", 105)
    store.record_failure(hash_of(winning), "RPC timeout", 107)
    assert store.statistics().failed_attempts == 2


def test_stale_drops_tickets_whose_round_has_passed(store: TicketStore) -> None:
    fresh = make_winning(nonce=1, creation_round=8)
    old = make_winning(nonce=2, creation_round=7, face_value=5)
    for w in (fresh, old):
        store.add(w)
    assert store.stale(8) == []
    [dropped] = store.stale(9)
    assert dropped.ticket_hash == hash_of(old)
    assert (dropped.status, dropped.drop_reason) == (TicketStatus.DROPPED, "expired round")
    assert store.stale(9) == []
    assert store.statistics() == stats(pending=1, dropped=1, face_value_pending=10**15)


def test_redeemed_and_dropped_are_final(store: TicketStore) -> None:
    a, b = make_winning(nonce=1), make_winning(nonce=2)
    store.add(a)
    store.add(b)
    store.mark_redeemed(hash_of(a), "0x01")
    store.mark_redeemed(hash_of(a), "0x01")  # the same record again: nothing changes
    with pytest.raises(TicketStoreError, match="is redeemed, not pending"):
        store.mark_redeemed(hash_of(a), "0x02")
    with pytest.raises(TicketStoreError, match="is redeemed, not pending"):
        store.mark_dropped(hash_of(a), "why")
    store.mark_dropped(hash_of(b), "no block hash for round 7")
    with pytest.raises(TicketStoreError, match="is dropped, not pending"):
        store.record_failure(hash_of(b), "x", 1)
    assert store.get(hash_of(a)).tx_hash == "0x01"
    assert store.get(hash_of(b)).drop_reason == "no block hash for round 7"
    assert [s.status for s in store.tickets()] == [TicketStatus.REDEEMED, TicketStatus.DROPPED]
    assert store.tickets(TicketStatus.PENDING) == []


def test_an_unknown_hash_is_a_clear_error(store: TicketStore) -> None:
    with pytest.raises(UnknownTicketError, match="no ticket 0000"):
        store.get(bytes(32))
    with pytest.raises(UnknownTicketError):
        store.mark_redeemed(bytes(32), "0x01")


def test_statistics_add_face_values_by_status(store: TicketStore) -> None:
    for nonce, face in ((1, 2**255), (2, 2**255), (3, 7), (4, 11)):
        store.add(make_winning(nonce=nonce, face_value=face))
    [h1, h2, h3, _] = [s.ticket_hash for s in store.tickets()]
    store.mark_redeemed(h1, "0x01")
    store.mark_redeemed(h2, "0x02")
    store.record_failure(h3, "x", 0)
    store.mark_dropped(h3, "gave up")
    assert store.statistics() == stats(
        pending=1, redeemed=2, dropped=1, failed_attempts=1, face_value_pending=11,
        face_value_redeemed=2**256,
    )  # fmt: skip


def test_a_store_from_a_newer_lpstream_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tickets.db"
    TicketStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(TicketStoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        TicketStore(path)


def test_a_file_that_is_not_a_ticket_store_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(TicketStoreError, match="is not an lpstream ticket store"):
        TicketStore(garbage)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")
    with pytest.raises(TicketStoreError, match=r"not an lpstream ticket store.*accounts"):
        TicketStore(other)


async def test_the_store_works_from_trio_worker_threads(tmp_path: Path) -> None:
    store = TicketStore(tmp_path / "tickets.db")
    limiter = trio.CapacityLimiter(1)

    async def add(nonce: int) -> None:
        await trio.to_thread.run_sync(store.add, make_winning(nonce=nonce), limiter=limiter)

    async with trio.open_nursery() as nursery:
        for nonce in range(1, 9):
            nursery.start_soon(add, nonce)
    assert (await trio.to_thread.run_sync(store.statistics, limiter=limiter)).pending == 8
    store.close()


_points = st.integers(min_value=0, max_value=20)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(_points, _points, _points, st.booleans()), max_size=8),
    latest_block=_points,
    current_round=_points,
)
def test_due_and_stale_select_what_the_pure_rules_say(
    rows: list[tuple[int, int, int, bool]], latest_block: int, current_round: int
) -> None:
    with TicketStore(":memory:") as store:
        for nonce, (expiration, creation_round, next_attempt, redeemed) in enumerate(rows, 1):
            w = make_winning(
                nonce=nonce, expiration_block=expiration, creation_round=creation_round
            )
            store.add(w)
            if next_attempt:
                store.record_failure(hash_of(w), "x", next_attempt)
            if redeemed:
                store.mark_redeemed(hash_of(w), "0x01")
        everything = store.tickets()
        expected_due = {s.ticket_hash for s in everything if is_due(s, latest_block, current_round)}
        expected_stale = {
            s.ticket_hash
            for s in everything
            if s.status is TicketStatus.PENDING and is_stale(s, current_round)
        }
        assert {s.ticket_hash for s in store.due(latest_block, current_round)} == expected_due
        assert {s.ticket_hash for s in store.stale(current_round)} == expected_stale


def test_a_stored_ticket_is_a_frozen_value(store: TicketStore) -> None:
    store.add(make_winning())
    [stored] = store.tickets()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stored.attempts = 3  # type: ignore[misc]
