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

The schema and the rows are :mod:`payments.store_schema`'s; the values and the rules for one
ticket (:func:`is_due`, :func:`is_stale`) are :mod:`payments.stored_ticket`'s.

The API is blocking (SQLite is fast, but it waits on fsync): the node calls it through
``trio.to_thread.run_sync`` with one ``trio.CapacityLimiter`` for the store. Calls from several
threads are serialised by an internal lock. One node owns a store file at a time.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from .fsync import fsync_folder
from .pm import WinningTicket
from .store_schema import (
    COLUMNS,
    INSERT_TICKET,
    SCHEMA_VERSION,
    create_or_check_schema,
    enable_durable_commits,
    new_ticket_row,
    stored_ticket_from_row,
)
from .stored_ticket import (
    EXPIRED_ROUND,
    TICKET_VALIDITY_ROUNDS,
    StoredTicket,
    TicketStatus,
    TicketStoreError,
    TicketStoreStatistics,
    UnknownTicketError,
    is_due,
    is_stale,
)

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

_MAX_SQL_INT = 2**63 - 1
_MAX_COUNTER = 2**62
"""The largest round or block number stored (arithmetic on it stays inside int64)."""


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
        try:
            enable_durable_commits(self._db, self._path, memory=self._memory)
            with self._transaction() as db:
                create_or_check_schema(db, self._path)
        except sqlite3.DatabaseError as exc:
            raise TicketStoreError(f"{self._path} is not an lpstream ticket store: {exc}") from exc
        if not self._memory:
            fsync_folder(Path(self._path).resolve().parent)

    def add(self, ticket: WinningTicket) -> None:
        """Stores a winning ticket durably; a ticket already stored (same hash) is left as it is.

        When this returns the ticket is on disk (fsynced): only then acknowledge the payment.

        Raises:
            ValueError: creationRound or expirationBlock is beyond what a real chain reaches.
        """
        for name, value in (
            ("creation round", ticket.ticket.creation_round),
            ("expiration block", ticket.expiration_block),
        ):
            if not 0 <= value <= _MAX_COUNTER:
                raise ValueError(f"ticket {name} {value} is out of range")
        with self._transaction() as db:
            db.execute(INSERT_TICKET, new_ticket_row(ticket))

    def get(self, ticket_hash: bytes) -> StoredTicket:
        """The stored ticket with this hash.

        Raises:
            UnknownTicketError: no such ticket.
        """
        with self._reading() as db:
            row = db.execute(
                f"SELECT {COLUMNS} FROM tickets WHERE hash = ?", (ticket_hash,)
            ).fetchone()
        if row is None:
            raise UnknownTicketError(f"no ticket {ticket_hash.hex()} in the store")
        return stored_ticket_from_row(row)

    def tickets(self, status: TicketStatus | None = None) -> list[StoredTicket]:
        """Every stored ticket (of one status if given), oldest first."""
        query = f"SELECT {COLUMNS} FROM tickets"
        args: tuple[str, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status.value,)
        with self._reading() as db:
            rows = db.execute(query + " ORDER BY seq", args).fetchall()
        return [stored_ticket_from_row(row) for row in rows]

    def due(self, latest_block: int, current_round: int) -> list[StoredTicket]:
        """Pending tickets to redeem now: see ``is_due``. Earliest expiration first."""
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM tickets WHERE status = 'pending' "
                "AND expiration_block <= ? AND next_attempt_block <= ? "
                "AND creation_round + ? > ? ORDER BY expiration_block, seq",
                (
                    _clamp(latest_block),
                    _clamp(latest_block),
                    TICKET_VALIDITY_ROUNDS,
                    _clamp(current_round),
                ),
            ).fetchall()
        return [stored_ticket_from_row(row) for row in rows]

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
                db.execute(f"SELECT {COLUMNS} FROM tickets WHERE hash = ?", (h,)).fetchone()
                for h in hashes
            ]
        return [stored_ticket_from_row(row) for row in rows]

    def mark_redeemed(self, ticket_hash: bytes, tx_hash: str) -> None:
        """Records that the chain paid the ticket in ``tx_hash`` (durably, like ``add``).

        Marking it again with the same ``tx_hash`` does nothing.

        Raises:
            UnknownTicketError: no such ticket.
            TicketStoreError: the ticket was already redeemed in another transaction, or dropped.
        """
        self._update_pending(
            ticket_hash, "status = 'redeemed', tx_hash = ?", (tx_hash,), redeemed_in=tx_hash
        )

    def mark_dropped(self, ticket_hash: bytes, reason: str) -> None:
        """Gives up a pending ticket, recording why.

        Raises:
            UnknownTicketError: no such ticket.
            TicketStoreError: the ticket is not pending.
        """
        self._update_pending(ticket_hash, "status = 'dropped', drop_reason = ?", (reason,))

    def record_failure(self, ticket_hash: bytes, error: str, next_attempt_block: int) -> None:
        """Counts a failed attempt; the ticket is not due again before ``next_attempt_block``.

        Raises:
            UnknownTicketError: no such ticket.
            TicketStoreError: the ticket is not pending.
        """
        self._update_pending(
            ticket_hash,
            "attempts = attempts + 1, last_error = ?, next_attempt_block = ?",
            (error, _clamp(next_attempt_block)),
        )

    def _update_pending(
        self,
        ticket_hash: bytes,
        assignments: str,
        values: tuple[object, ...],
        *,
        redeemed_in: str | None = None,
    ) -> None:
        """``UPDATE tickets SET <assignments>`` for one pending ticket, in one transaction
        (see ``_pending`` for what happens to a ticket that is not pending)."""
        with self._transaction() as db:
            if self._pending(db, ticket_hash, redeemed_in=redeemed_in):
                db.execute(
                    f"UPDATE tickets SET {assignments} WHERE hash = ?", (*values, ticket_hash)
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
