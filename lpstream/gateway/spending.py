"""Spend limits: the most a stream, or an API client's live AI sessions, may pay.

How this works (sans-IO: the ledger reads the clock it is given, never trio's):

* A :class:`SpendAccount` is a limit in wei, over the account's whole life (a stream's
  ``spend_limit_wei`` from its publish grant) or over a sliding window (``--api-spend-limit``,
  wei per hour per API identity).
* The :class:`SpendLedger` knows which accounts each payment session (the ``session`` of a
  segment job or of a live AI session) charges. ``PaymentSender`` asks it once per payment,
  before a ticket is made: :meth:`SpendLedger.charge` notes the wei on every account of the
  session, or, when one of them would pass its limit, notes nothing and raises
  :class:`SpendLimitReached`. So the gateway never pays more than a limit, and the one check
  covers segments and live AI alike.
* An account's ``on_exhausted`` is called once, with the error, the first time it refuses:
  the gateway ends the stream (or stops the API client's sessions) with that reason.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from fractions import Fraction

import attrs

from lpstream.errors import ProtocolError

__all__ = ["API_SPEND_WINDOW", "SpendAccount", "SpendLedger", "SpendLimitReached"]

API_SPEND_WINDOW = 3600.0
"""Seconds over which ``--api-spend-limit`` counts an API identity's spending."""


class SpendLimitReached(ProtocolError):
    """A payment would take an account past its limit (code 402)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=402)


@attrs.define(eq=False)
class SpendAccount:
    """What one stream or API identity may spend (see the module comment)."""

    name: str
    """Whose it is, in words (``stream 'cam'``, ``API client api:1a2b…``)."""
    limit: int
    """Wei it may spend (within ``window``)."""
    window: float | None = None
    """Seconds the spending is counted over; None: the account's whole life."""
    source: str = ""
    """Where the limit comes from (``--api-spend-limit``), for the reason."""
    on_exhausted: Callable[[SpendLimitReached], None] | None = None
    """Called once, the first time the account refuses a payment."""
    _spent: collections.deque[tuple[float, Fraction]] = attrs.field(
        init=False, factory=collections.deque
    )
    _total: Fraction = attrs.field(init=False, default=Fraction(0))
    _exhausted: bool = attrs.field(init=False, default=False)

    def spent(self, now: float) -> Fraction:
        """Wei spent (within the window, as of ``now``)."""
        if self.window is not None:
            while self._spent and self._spent[0][0] <= now - self.window:
                self._total -= self._spent.popleft()[1]
        return self._total

    def refusal(self, wei: Fraction, now: float) -> SpendLimitReached | None:
        """Why paying ``wei`` more is not allowed, or None."""
        spent = self.spent(now)
        if spent + wei <= self.limit:
            return None
        per = "" if self.window is None else f" per {self.window / 3600:g} h"
        by = f" ({self.source})" if self.source else ""
        return SpendLimitReached(
            f"spend limit reached: {self.name} may spend {self.limit} wei{per}{by}, "
            f"spent {int(spent)} and the next payment is {int(wei)}"
        )

    def note(self, wei: Fraction, now: float) -> None:
        """``wei`` was spent at ``now``."""
        self._total += wei
        self._exhausted = False  # a window moved on: the next refusal is news again
        if self.window is not None:
            self._spent.append((now, wei))

    def exhausted(self, error: SpendLimitReached) -> None:
        """The account refused ``error``: tell its owner, once."""
        if not self._exhausted:
            self._exhausted = True
            if self.on_exhausted is not None:
                self.on_exhausted(error)


@attrs.define
class SpendLedger:
    """The accounts each payment session charges (see the module comment)."""

    clock: Callable[[], float] = time.monotonic
    """Where ``now`` comes from for windowed accounts."""
    _sessions: dict[str, tuple[SpendAccount, ...]] = attrs.field(init=False, factory=dict)

    def open(self, session: str, accounts: Iterable[SpendAccount]) -> None:
        """Payments of ``session`` from now on charge ``accounts`` (none: no limit)."""
        found = tuple(accounts)
        if found:
            self._sessions[session] = found
        else:
            self._sessions.pop(session, None)

    def close(self, session: str) -> None:
        """``session`` pays no more."""
        self._sessions.pop(session, None)

    def accounts(self, session: str) -> tuple[SpendAccount, ...]:
        """The accounts ``session`` charges."""
        return self._sessions.get(session, ())

    def charge(self, session: str, wei: Fraction | int) -> None:
        """Notes a payment of ``wei`` by ``session`` on its accounts.

        Raises:
            SpendLimitReached: one account would pass its limit; nothing was noted.
        """
        accounts = self._sessions.get(session)
        if not accounts or not wei:
            return
        amount, now = Fraction(wei), self.clock()
        for account in accounts:
            error = account.refusal(amount, now)
            if error is not None:
                account.exhausted(error)
                raise error
        for account in accounts:
            account.note(amount, now)
