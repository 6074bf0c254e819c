"""Balances per (counterparty, session), in exact wei.

The orchestrator credits a (sender, session) with the EV of the tickets it accepted and debits
price * pixels once the work is done; it refuses work while the balance is below one ticket's
EV. The gateway keeps the mirror image per (orchestrator, session): credited with the EV it sent,
debited with the pixels the orchestrator reports. Balances may go negative (work done on trust
of the next payment). Everything is a ``Fraction``: a rounding error repeated over millions of
segments is real money, and tests can assert that the sums add up exactly.
"""

from __future__ import annotations

from fractions import Fraction

import attrs

from .validation import ReceivedPayment

__all__ = ["BalanceLedger", "LedgerStatistics"]

_ZERO = Fraction(0)


@attrs.frozen(kw_only=True)
class LedgerStatistics:
    """Totals of a ``BalanceLedger``; ``credited - debited == outstanding + closed``."""

    accounts: int
    """Open (counterparty, session) balances."""
    credited: Fraction
    """Everything ever credited."""
    debited: Fraction
    """Everything ever debited."""
    outstanding: Fraction
    """The sum of the open balances."""
    closed: Fraction
    """The sum of the balances removed by ``close``."""


@attrs.define
class BalanceLedger:
    """Exact balances keyed by (counterparty, session)."""

    _balances: dict[tuple[str, str], Fraction] = attrs.field(factory=dict, init=False)
    _credited: Fraction = attrs.field(default=_ZERO, init=False)
    _debited: Fraction = attrs.field(default=_ZERO, init=False)
    _closed: Fraction = attrs.field(default=_ZERO, init=False)

    def balance(self, account: str, session: str) -> Fraction:
        """The balance of ``(account, session)``; 0 when there is none."""
        return self._balances.get((account, session), _ZERO)

    def credit(self, account: str, session: str, amount: Fraction | int) -> Fraction:
        """Adds ``amount`` (≥ 0) and returns the new balance."""
        amount = Fraction(amount)
        if amount < 0:
            raise ValueError(f"cannot credit a negative amount: {amount}")
        key = (account, session)
        new = self._balances.get(key, _ZERO) + amount
        self._balances[key] = new
        self._credited += amount
        return new

    def credit_payment(self, session: str, received: ReceivedPayment) -> Fraction:
        """Credits the EV a validated payment earned to its sender's ``session``."""
        return self.credit(received.sender, session, received.credited_ev)

    def debit(self, account: str, session: str, amount: Fraction | int) -> Fraction:
        """Subtracts ``amount`` (≥ 0) and returns the new balance (which may be negative)."""
        amount = Fraction(amount)
        if amount < 0:
            raise ValueError(f"cannot debit a negative amount: {amount}")
        key = (account, session)
        new = self._balances.get(key, _ZERO) - amount
        self._balances[key] = new
        self._debited += amount
        return new

    def debit_pixels(self, account: str, session: str, pixels: int, price: Fraction) -> Fraction:
        """Debits the price of ``pixels`` pixels of work and returns the new balance."""
        return self.debit(account, session, pixels * price)

    def has_sufficient_balance(self, account: str, session: str, ticket_ev: Fraction) -> bool:
        """True when the balance is at least one ticket's EV: work may start."""
        return self.balance(account, session) >= ticket_ev

    def close(self, account: str, session: str) -> Fraction:
        """Forgets a finished session; returns the balance it had."""
        final = self._balances.pop((account, session), _ZERO)
        self._closed += final
        return final

    def statistics(self) -> LedgerStatistics:
        """Totals, for metrics and for checking that the sums add up."""
        return LedgerStatistics(
            accounts=len(self._balances),
            credited=self._credited,
            debited=self._debited,
            outstanding=sum(self._balances.values(), _ZERO),
            closed=self._closed,
        )
