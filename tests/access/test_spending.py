"""Spend limits: a payment that would pass a limit is refused before a ticket is made, and the
owner hears of it once; a windowed limit frees up as its window moves on."""

from __future__ import annotations

from fractions import Fraction

import pytest

from lpstream.gateway.spending import SpendAccount, SpendLedger, SpendLimitReached


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_stream_account_pays_up_to_its_limit_and_then_refuses_once_to_its_owner() -> None:
    heard: list[SpendLimitReached] = []
    account = SpendAccount(name="stream 'cam'", limit=1000, on_exhausted=heard.append)
    ledger = SpendLedger()
    ledger.open("s1", [account])
    ledger.charge("s1", 600)
    ledger.charge("s1", 400)
    with pytest.raises(SpendLimitReached) as refused:
        ledger.charge("s1", 1)
    assert refused.value.code == 402
    assert "stream 'cam' may spend 1000 wei" in str(refused.value)
    with pytest.raises(SpendLimitReached):
        ledger.charge("s1", 1)
    assert len(heard) == 1 and account.spent(0.0) == 1000


def test_a_refused_payment_charges_no_account_of_the_session() -> None:
    stream = SpendAccount(name="stream", limit=10_000)
    api = SpendAccount(name="API client api:x", limit=500, window=3600)
    ledger = SpendLedger(clock=Clock())
    ledger.open("ai", [stream, api])
    with pytest.raises(SpendLimitReached, match="API client api:x"):
        ledger.charge("ai", 501)
    assert stream.spent(0.0) == 0 and api.spent(0.0) == 0


def test_an_hourly_limit_frees_up_as_the_hour_moves_on() -> None:
    clock = Clock()
    heard: list[SpendLimitReached] = []
    account = SpendAccount(name="api", limit=100, window=3600, on_exhausted=heard.append)
    ledger = SpendLedger(clock=clock)
    ledger.open("a", [account])
    ledger.charge("a", Fraction(100))
    clock.now = 3599.0
    with pytest.raises(SpendLimitReached, match="per 1 h"):
        ledger.charge("a", 1)
    clock.now = 3600.0
    ledger.charge("a", 100)
    clock.now = 3700.0
    with pytest.raises(SpendLimitReached):
        ledger.charge("a", 1)
    assert len(heard) == 2  # a window that moved on makes the next refusal news again


def test_sessions_without_accounts_and_closed_sessions_pay_freely() -> None:
    account = SpendAccount(name="stream", limit=0)
    ledger = SpendLedger()
    ledger.charge("other", 10**18)
    ledger.open("s", [account])
    with pytest.raises(SpendLimitReached):
        ledger.charge("s", 1)
    ledger.close("s")
    ledger.charge("s", 10**18)
    assert ledger.accounts("s") == ()
