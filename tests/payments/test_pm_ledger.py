"""Balances: exact sums, and no credit from nothing, whatever the sequence of events."""

from __future__ import annotations

from fractions import Fraction

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from payments.pm import (
    BalanceLedger,
    Payment,
    SenderInfo,
    TicketParams,
    TicketSender,
    TicketValidator,
    address_of,
    aux_data_for,
    keccak256,
    recipient_rand,
    recipient_rand_hash,
    win_prob_for,
)

RECIPIENT = address_of(keccak256(b"orchestrator"))
SECRET = keccak256(b"secret")
FUNDED = SenderInfo(deposit=10**18, withdraw_round=0, reserve=10**18)
KEYS = [keccak256(b"gateway %d" % i) for i in range(2)]
PRICE = Fraction(1200, 7)


def issue(sender: str, seed: bytes, face_value: int) -> TicketParams:
    win_prob = win_prob_for(10**9, face_value)
    aux = aux_data_for(7, keccak256(b"round 7"))
    rand = recipient_rand(SECRET, seed, sender, face_value, win_prob, 1040, 1200, 7, aux)
    return TicketParams(
        recipient=RECIPIENT,
        face_value=face_value,
        win_prob=win_prob,
        recipient_rand_hash=recipient_rand_hash(rand),
        seed=seed,
        expiration_block=1040,
        price=PRICE,
        creation_round=7,
        creation_round_block_hash=keccak256(b"round 7"),
    )


def test_credit_debit_and_the_work_gate() -> None:
    ledger = BalanceLedger()
    ev = Fraction(10**9)
    assert ledger.balance("0xA", "s") == 0
    assert not ledger.has_sufficient_balance("0xA", "s", ev)
    assert ledger.credit("0xA", "s", ev) == ev
    assert ledger.has_sufficient_balance("0xA", "s", ev)
    assert ledger.debit_pixels("0xA", "s", 1000, PRICE) == ev - 1000 * PRICE
    assert not ledger.has_sufficient_balance("0xA", "s", ev)
    assert ledger.balance("0xA", "other session") == 0
    assert ledger.debit("0xA", "s", 10**9) < 0  # work on trust can go negative
    with pytest.raises(ValueError, match="negative"):
        ledger.credit("0xA", "s", -1)
    with pytest.raises(ValueError, match="negative"):
        ledger.debit("0xA", "s", Fraction(-1, 2))
    closed = ledger.close("0xA", "s")
    stats = ledger.statistics()
    assert stats.accounts == 0
    assert stats.closed == closed
    assert stats.credited - stats.debited == stats.outstanding + stats.closed


def test_credit_payment_credits_the_sender_the_validated_ev() -> None:
    sender = TicketSender(private_key=KEYS[0])
    params = issue(sender.address, keccak256(b"seed"), 10**15)
    validator = TicketValidator(recipient=RECIPIENT, secret=SECRET)
    ledger = BalanceLedger()
    received = validator.receive_payment(
        sender.create_payment(params, 3),
        sender_info=FUNDED,
        last_initialized_round=7,
        latest_block=1000,
    )
    assert ledger.credit_payment("session", received) == 3 * params.ev
    assert ledger.balance(sender.address, "session") == 3 * params.ev


class LedgerMachine(RuleBasedStateMachine):
    """Payments (fresh, replayed, forged), debits and closes, against a plain model."""

    def __init__(self) -> None:
        super().__init__()
        self.validator = TicketValidator(recipient=RECIPIENT, secret=SECRET)
        self.ledger = BalanceLedger()
        self.senders = [TicketSender(private_key=key) for key in KEYS]
        self.params = {
            (i, session): issue(s.address, keccak256(b"%d %s" % (i, session.encode())), fv)
            for i, s in enumerate(self.senders)
            for session, fv in (("a", 10**15), ("b", 7 * 10**14 + 3))
        }
        self.sent: list[tuple[str, Payment]] = []
        self.credited_tickets: set[tuple[bytes, int]] = set()
        self.model: dict[tuple[str, str], Fraction] = {}
        self.model_credited = Fraction(0)
        self.model_debited = Fraction(0)

    def _pay(self, session: str, payment: Payment) -> None:
        received = self.validator.receive_payment(
            payment, sender_info=FUNDED, last_initialized_round=7, latest_block=1000
        )
        self.ledger.credit_payment(session, received)
        # What the model says may be credited: leading tickets never credited before.
        rrh = payment.params.recipient_rand_hash
        new = [
            (rrh, t.sender_nonce)
            for t in payment.tickets[: received.credited_tickets]
            if (rrh, t.sender_nonce) not in self.credited_tickets
        ]
        assert len(new) == received.credited_tickets, "a ticket was credited twice"
        self.credited_tickets.update(new)
        assert received.credited_ev == len(new) * payment.params.ev
        key = (payment.sender, session)
        self.model[key] = self.model.get(key, Fraction(0)) + received.credited_ev
        self.model_credited += received.credited_ev

    @rule(sender=st.integers(0, 1), session=st.sampled_from(["a", "b"]), count=st.integers(0, 3))
    def pay(self, sender: int, session: str, count: int) -> None:
        payment = self.senders[sender].create_payment(self.params[(sender, session)], count)
        self.sent.append((session, payment))
        self._pay(session, payment)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        session, payment = data.draw(st.sampled_from(self.sent))
        self._pay(session, payment)

    @rule(
        sender=st.integers(0, 1),
        session=st.sampled_from(["a", "b"]),
        count=st.integers(1, 3),
        forged=st.integers(0, 2),
    )
    def pay_with_a_forgery(self, sender: int, session: str, count: int, forged: int) -> None:
        payment = self.senders[sender].create_payment(self.params[(sender, session)], count)
        index = min(forged, count - 1)
        tickets = list(payment.tickets)
        tickets[index] = attrs.evolve(tickets[index], signature=b"\x01" * 65)
        self._pay(session, attrs.evolve(payment, tickets=tuple(tickets)))

    @rule(
        sender=st.integers(0, 1),
        session=st.sampled_from(["a", "b"]),
        pixels=st.integers(0, 10**7),
    )
    def debit(self, sender: int, session: str, pixels: int) -> None:
        address = self.senders[sender].address
        self.ledger.debit_pixels(address, session, pixels, PRICE)
        key = (address, session)
        self.model[key] = self.model.get(key, Fraction(0)) - pixels * PRICE
        self.model_debited += pixels * PRICE

    @rule(sender=st.integers(0, 1), session=st.sampled_from(["a", "b"]))
    def close(self, sender: int, session: str) -> None:
        address = self.senders[sender].address
        assert self.ledger.close(address, session) == self.model.pop(
            (address, session), Fraction(0)
        )

    @invariant()
    def sums_add_up_exactly(self) -> None:
        stats = self.ledger.statistics()
        assert stats.credited == self.model_credited
        assert stats.debited == self.model_debited
        assert stats.credited - stats.debited == stats.outstanding + stats.closed
        assert stats.outstanding == sum(self.model.values(), Fraction(0))
        for (address, session), balance in self.model.items():
            assert self.ledger.balance(address, session) == balance

    @invariant()
    def credit_comes_only_from_distinct_valid_tickets(self) -> None:
        by_hash = {p.recipient_rand_hash: p.ev for p in self.params.values()}
        from_tickets = sum((by_hash[rrh] for rrh, _ in self.credited_tickets), Fraction(0))
        assert self.ledger.statistics().credited == from_tickets
        assert self.validator.statistics().credited_ev == from_tickets
        assert self.validator.statistics().tickets_credited == len(self.credited_tickets)


LedgerMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=15, deadline=None)
test_ledger_machine = LedgerMachine.TestCase
