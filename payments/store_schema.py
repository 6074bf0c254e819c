"""The ticket store's SQLite schema: creating it, checking it, and rows to and from values.

How this works
--------------
A store file holds a ``schema_version`` table with one row and the ``tickets`` table. Opening
a file either finds no tables (a new store: the schema is created and version
:data:`SCHEMA_VERSION` recorded), or finds ``schema_version`` (the version is checked: a newer
one is refused, an older one would be migrated here, inside the same transaction), or finds
other tables (not a ticket store: refused, nothing is written).

uint256 values (face value, winProb, sender nonce, recipientRand) do not fit SQLite's int64,
so they are stored as decimal text; rounds and blocks are integers.

Durability is set per connection: WAL mode with ``synchronous=FULL``, so that every commit
fsyncs the write-ahead log before it returns.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .pm import Ticket, WinningTicket
from .pm import ticket_hash as _ticket_hash
from .stored_ticket import StoredTicket, TicketStatus, TicketStoreError

__all__ = [
    "COLUMNS",
    "INSERT_TICKET",
    "SCHEMA_VERSION",
    "create_or_check_schema",
    "enable_durable_commits",
    "new_ticket_row",
    "stored_ticket_from_row",
]

SCHEMA_VERSION = 1
"""The schema this code writes; a store with a newer one is refused."""

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

COLUMNS = (
    "hash, recipient, sender, face_value, win_prob, sender_nonce, recipient_rand_hash, "
    "creation_round, creation_round_block_hash, signature, recipient_rand, expiration_block, "
    "status, attempts, next_attempt_block, last_error, tx_hash, drop_reason"
)
"""The columns a ``SELECT`` reads for :func:`stored_ticket_from_row`, in its order."""

INSERT_TICKET = (
    "INSERT OR IGNORE INTO tickets (hash, recipient, sender, face_value, win_prob, "
    "sender_nonce, recipient_rand_hash, creation_round, creation_round_block_hash, "
    "signature, recipient_rand, expiration_block) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""Adds a new ticket (pending, no attempts) from :func:`new_ticket_row`; a stored one stays."""


def enable_durable_commits(db: sqlite3.Connection, path: str, *, memory: bool) -> None:
    """WAL mode with ``synchronous=FULL`` (an in-memory database keeps its own mode).

    Raises:
        TicketStoreError: SQLite refused WAL mode for a file.
    """
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if not memory and mode != "wal":
        raise TicketStoreError(f"ticket store {path}: SQLite refused WAL mode (got {mode!r})")
    # FULL: in WAL mode every commit fsyncs the log, so a committed ticket survives a
    # power cut, not only a crash of the process.
    db.execute("PRAGMA synchronous=FULL")


def create_or_check_schema(db: sqlite3.Connection, path: str) -> None:
    """Creates the schema in an empty database or checks an existing store's version.

    Call it inside a transaction: what it writes is committed with the caller's ``COMMIT``.

    Raises:
        TicketStoreError: the database is not a ticket store, or its schema is newer.
    """
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" in tables:
        row = db.execute("SELECT version FROM schema_version").fetchone()
        version = None if row is None else row[0]
        if not isinstance(version, int):
            raise TicketStoreError(f"ticket store {path} has no readable schema version")
        if version > SCHEMA_VERSION:
            raise TicketStoreError(
                f"ticket store {path} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this lpstream knows: upgrade lpstream to use it"
            )
        # Older versions would be migrated here, inside this transaction.
    elif tables - {"sqlite_sequence"}:
        raise TicketStoreError(
            f"{path} is an SQLite database but not an lpstream ticket store "
            f"(it has tables {', '.join(sorted(tables))})"
        )
    else:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))


def new_ticket_row(ticket: WinningTicket) -> tuple[Any, ...]:
    """The values :data:`INSERT_TICKET` takes for ``ticket``."""
    t = ticket.ticket
    return (
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


def stored_ticket_from_row(row: Any) -> StoredTicket:
    """A ``StoredTicket`` from a row of :data:`COLUMNS`."""
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
