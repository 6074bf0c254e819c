"""The orchestrator's queue of winning tickets, in SQLite.

How this works
--------------
A winning ticket is money only while it can still be redeemed, and the sender has already been
told it was accepted once the payment is acknowledged. So ``add`` commits the ticket durably
*before* it returns, and the orchestrator calls it before acknowledging; a crash (even a power
cut) after that point leaves the ticket in the queue for the next start.

Durability: the database runs in WAL mode with ``synchronous=FULL``, so every commit fsyncs the
write-ahead log before ``commit()`` returns; each mutating call is one ``BEGIN IMMEDIATE`` …
``COMMIT`` transaction. Creating a store also fsyncs its folder, so the new files' names survive.

A ticket row is identified by its ticket hash (the TicketBroker's ``usedTickets`` key), so a ticket
is stored once however often it is added. Its life is a small state machine::

    pending --mark_redeemed--> redeemed
    pending --mark_dropped / stale--> dropped
    pending --record_failure--> pending (attempts + 1, next_attempt_block later)

Only ``pending`` tickets change state; the two others are final and kept as a record.

Unlike everything else on the recipient side, a stored ticket keeps its recipientRand:
redemption reveals it to the chain, and the node secret that derived it may not survive a restart.

The API is blocking (SQLite is fast, but it waits on fsync): the node calls it through
``trio.to_thread.run_sync`` with one ``trio.CapacityLimiter`` for the store. Calls from several
threads are serialised by an internal lock. One node owns a store file at a time.
"""

from __future__ import annotations

import enum
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs

from lpstream.errors import LpstreamError

from .pm import Ticket, WinningTicket
from .pm import ticket_hash as _ticket_hash

__all__ = [
    "EXPIRED_ROUND",
    "SCHEMA_VERSION",
    "TICKET_VALIDITY_ROUNDS",
    "StoredTicket",
    "TicketStatus",
    "TicketStore",
    "TicketStoreError",
    "TicketStoreStatistics",
    "UnknownTicketError",
    "is_due",
    "is_stale",
]

SCHEMA_VERSION = 1
"""The schema this code writes; a store with a newer one is refused."""

TICKET_VALIDITY_ROUNDS = 2
"""A ticket is redeemable while creationRound + 2 > currentRound (TicketBroker)."""

EXPIRED_ROUND = "expired round"
"""The drop reason ``stale`` records."""

_MAX_SQL_INT = 2**63 - 1
_MAX_COUNTER = 2**62
"""The largest round or block number stored (arithmetic on it stays inside int64)."""

_SCHEMA = """
CREATE TABLE schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE tickets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    recipient TEXT NOT NULL,
    sender TEXT NOT NULL,
    face_value TEXT NOT NULL,            -- uint256, decimal
    win_prob TEXT NOT NULL,              -- uint256, decimal
    sender_nonce TEXT NOT NULL,          -- uint256, decimal
    recipient_rand_hash BLOB NOT NULL,
    creation_round INTEGER NOT NULL,
    creation_round_block_hash BLOB NOT NULL,
    signature BLOB NOT NULL,
    recipient_rand TEXT NOT NULL,        -- uint256, decimal
    expiration_block INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'redeemed', 'dropped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_block INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    tx_hash TEXT,
    drop_reason TEXT
);
CREATE INDEX tickets_pending ON tickets (status, expiration_block);
"""

_COLUMNS = (
    "hash, recipient, sender, face_value, win_prob, sender_nonce, recipient_rand_hash, "
    "creation_round, creation_round_block_hash, signature, recipient_rand, expiration_block, "
    "status, attempts, next_attempt_block, last_error, tx_hash, drop_reason"
)


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


class TicketStore:
    """A durable queue of winning tickets in one SQLite file (or ``":memory:"``).

    Opening a path creates the file and its schema, or checks the schema of an existing store.

    Raises:
        TicketStoreError: the file is not a ticket store, or one written by a newer lpstream.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._lock = threading.Lock()
        self._memory = self._path == ":memory:"
        try:
            self._db = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except sqlite3.Error as exc:
            raise TicketStoreError(f"cannot open ticket store {self._path}: {exc}") from exc
        try:
            self._setup()
        except BaseException:
            self._db.close()
            raise

    @property
    def path(self) -> str:
        """Where the store lives."""
        return self._path

    def _setup(self) -> None:
        db = self._db
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if not self._memory and mode != "wal":
                raise TicketStoreError(
                    f"ticket store {self._path}: SQLite refused WAL mode (got {mode!r})"
                )
            # FULL: in WAL mode every commit fsyncs the log, so a committed ticket survives a
            # power cut, not only a crash of the process.
            db.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                tables = {
                    row[0]
                    for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                }
                if "schema_version" in tables:
                    row = db.execute("SELECT version FROM schema_version").fetchone()
                    version = None if row is None else row[0]
                    if not isinstance(version, int):
                        raise TicketStoreError(
                            f"ticket store {self._path} has no readable schema version"
                        )
                    if version > SCHEMA_VERSION:
                        raise TicketStoreError(
                            f"ticket store {self._path} has schema version {version}, newer "
                            f"than the {SCHEMA_VERSION} this lpstream knows: upgrade lpstream "
                            "to use it"
                        )
                    # Older versions would be migrated here, inside this transaction.
                elif tables - {"sqlite_sequence"}:
                    raise TicketStoreError(
                        f"{self._path} is an SQLite database but not an lpstream ticket store "
                        f"(it has tables {', '.join(sorted(tables))})"
                    )
                else:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        except sqlite3.DatabaseError as exc:
            raise TicketStoreError(f"{self._path} is not an lpstream ticket store: {exc}") from exc
        if not self._memory:
            _fsync_folder(Path(self._path).resolve().parent)

    def add(self, ticket: WinningTicket) -> None:
        """Stores a winning ticket durably; a ticket already stored (same hash) is left as it is.

        When this returns the ticket is on disk (fsynced): only then acknowledge the payment.

        Raises:
            ValueError: creationRound or expirationBlock is beyond what a real chain reaches.
        """
        t = ticket.ticket
        for name, value in (
            ("creation round", t.creation_round),
            ("expiration block", ticket.expiration_block),
        ):
            if not 0 <= value <= _MAX_COUNTER:
                raise ValueError(f"ticket {name} {value} is out of range")
        row = (
            _ticket_hash(t),
            t.recipient,
            t.sender,
            str(t.face_value),
            str(t.win_prob),
            str(t.sender_nonce),
            t.recipient_rand_hash,
            t.creation_round,
            t.creation_round_block_hash,
            bytes(ticket.signature),
            str(ticket.recipient_rand),
            ticket.expiration_block,
        )
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO tickets (hash, recipient, sender, face_value, win_prob, "
                "sender_nonce, recipient_rand_hash, creation_round, creation_round_block_hash, "
                "signature, recipient_rand, expiration_block) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def get(self, ticket_hash: bytes) -> StoredTicket:
        """The stored ticket with this hash.

        Raises:
            UnknownTicketError: no such ticket.
        """
        with self._reading() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM tickets WHERE hash = ?", (ticket_hash,)
            ).fetchone()
        if row is None:
            raise UnknownTicketError(f"no ticket {ticket_hash.hex()} in the store")
        return _stored(row)

    def tickets(self, status: TicketStatus | None = None) -> list[StoredTicket]:
        """Every stored ticket (of one status if given), oldest first."""
        query = f"SELECT {_COLUMNS} FROM tickets"
        args: tuple[str, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status.value,)
        with self._reading() as db:
            rows = db.execute(query + " ORDER BY seq", args).fetchall()
        return [_stored(row) for row in rows]

    def due(self, latest_block: int, current_round: int) -> list[StoredTicket]:
        """Pending tickets to redeem now: see ``is_due``. Earliest expiration first."""
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM tickets WHERE status = 'pending' "
                "AND expiration_block <= ? AND next_attempt_block <= ? "
                "AND creation_round + ? > ? ORDER BY expiration_block, seq",
                (
                    _clamp(latest_block),
                    _clamp(latest_block),
                    TICKET_VALIDITY_ROUNDS,
                    _clamp(current_round),
                ),
            ).fetchall()
        return [_stored(row) for row in rows]

    def stale(self, current_round: int) -> list[StoredTicket]:
        """Drops the pending tickets too old to redeem (``is_stale``) and returns them, dropped.

        Their drop reason is ``"expired round"``.
        """
        where = "WHERE status = 'pending' AND creation_round + ? <= ?"
        args = (TICKET_VALIDITY_ROUNDS, _clamp(current_round))
        with self._transaction() as db:
            hashes = [row[0] for row in db.execute(f"SELECT hash FROM tickets {where}", args)]
            db.execute(
                f"UPDATE tickets SET status = 'dropped', drop_reason = ? {where}",
                (EXPIRED_ROUND, *args),
            )
            rows = [
                db.execute(f"SELECT {_COLUMNS} FROM tickets WHERE hash = ?", (h,)).fetchone()
                for h in hashes
            ]
        return [_stored(row) for row in rows]

    def mark_redeemed(self, ticket_hash: bytes, tx_hash: str) -> None:
        """Records that the chain paid the ticket in ``tx_hash`` (durably, like ``add``).

        Marking it again with the same ``tx_hash`` does nothing.

        Raises:
            UnknownTicketError: no such ticket.
            TicketStoreError: the ticket was already redeemed in another transaction, or dropped.
        """
        with self._transaction() as db:
            if self._pending(db, ticket_hash, redeemed_in=tx_hash):
                db.execute(
                    "UPDATE tickets SET status = 'redeemed', tx_hash = ? WHERE hash = ?",
                    (tx_hash, ticket_hash),
                )

    def mark_dropped(self, ticket_hash: bytes, reason: str) -> None:
        """Gives up a pending ticket, recording why.

        Raises:
            UnknownTicketError: no such ticket.
            TicketStoreError: the ticket is not pending.
        """
        with self._transaction() as db:
            if self._pending(db, ticket_hash):
                db.execute(
                    "UPDATE tickets SET status = 'dropped', drop_reason = ? WHERE hash = ?",
                    (reason, ticket_hash),
                )

    def record_failure(self, ticket_hash: bytes, error: str, next_attempt_block: int) -> None:
        """Counts a failed attempt; the ticket is not due again before ``next_attempt_block``.

        Raises:
            UnknownTicketError: no such ticket.
            TicketStoreError: the ticket is not pending.
        """
        with self._transaction() as db:
            if self._pending(db, ticket_hash):
                db.execute(
                    "UPDATE tickets SET attempts = attempts + 1, last_error = ?, "
                    "next_attempt_block = ? WHERE hash = ?",
                    (error, _clamp(next_attempt_block), ticket_hash),
                )

    def _pending(
        self, db: sqlite3.Connection, ticket_hash: bytes, *, redeemed_in: str | None = None
    ) -> bool:
        """True if the ticket is pending; False if already redeemed in ``redeemed_in``."""
        row = db.execute(
            "SELECT status, tx_hash FROM tickets WHERE hash = ?", (ticket_hash,)
        ).fetchone()
        if row is None:
            raise UnknownTicketError(f"no ticket {ticket_hash.hex()} in the store")
        status, tx_hash = row
        if status == TicketStatus.PENDING.value:
            return True
        if redeemed_in is not None and tx_hash == redeemed_in:
            return False
        raise TicketStoreError(f"ticket {ticket_hash.hex()} is {status}, not pending")

    def statistics(self) -> TicketStoreStatistics:
        """Counts by status, failed attempts and face values."""
        counts = dict.fromkeys(TicketStatus, 0)
        face = dict.fromkeys(TicketStatus, 0)
        failed_attempts = 0
        with self._reading() as db:
            for status, face_value, attempts in db.execute(
                "SELECT status, face_value, attempts FROM tickets"
            ):
                s = TicketStatus(status)
                counts[s] += 1
                face[s] += int(face_value)
                failed_attempts += attempts
        return TicketStoreStatistics(
            pending=counts[TicketStatus.PENDING],
            redeemed=counts[TicketStatus.REDEEMED],
            dropped=counts[TicketStatus.DROPPED],
            failed_attempts=failed_attempts,
            face_value_pending=face[TicketStatus.PENDING],
            face_value_redeemed=face[TicketStatus.REDEEMED],
        )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` … ``COMMIT`` under the lock; rolled back on any error."""
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise TicketStoreError(f"ticket store {self._path}: {exc}") from exc

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with SQLite's errors mapped to ours."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise TicketStoreError(f"ticket store {self._path}: {exc}") from exc

    def close(self) -> None:
        """Closes the database; the store cannot be used afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> TicketStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _clamp(value: int) -> int:
    """Chain numbers fit SQLite's int64; a caller's larger one means "beyond anything stored"."""
    return max(-_MAX_SQL_INT, min(value, _MAX_SQL_INT))


def _stored(row: Any) -> StoredTicket:
    """A ``StoredTicket`` from a row of ``_COLUMNS``."""
    (
        hash_,
        recipient,
        sender,
        face_value,
        win_prob,
        sender_nonce,
        recipient_rand_hash,
        creation_round,
        creation_round_block_hash,
        signature,
        recipient_rand,
        expiration_block,
        status,
        attempts,
        next_attempt_block,
        last_error,
        tx_hash,
        drop_reason,
    ) = row
    ticket = Ticket(
        recipient=str(recipient),
        sender=str(sender),
        face_value=int(face_value),
        win_prob=int(win_prob),
        sender_nonce=int(sender_nonce),
        recipient_rand_hash=bytes(recipient_rand_hash),
        creation_round=int(creation_round),
        creation_round_block_hash=bytes(creation_round_block_hash),
    )
    return StoredTicket(
        ticket_hash=bytes(hash_),
        winning=WinningTicket(
            ticket=ticket,
            signature=bytes(signature),
            recipient_rand=int(recipient_rand),
            expiration_block=int(expiration_block),
        ),
        status=TicketStatus(status),
        attempts=int(attempts),
        next_attempt_block=int(next_attempt_block),
        last_error=None if last_error is None else str(last_error),
        tx_hash=None if tx_hash is None else str(tx_hash),
        drop_reason=None if drop_reason is None else str(drop_reason),
    )


def _fsync_folder(folder: Path) -> None:
    """Makes the names of files just created in ``folder`` durable (POSIX; no-op elsewhere)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
