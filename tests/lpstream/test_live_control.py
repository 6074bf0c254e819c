"""A live AI session's control stream (``LiveControl``) over trio's in-memory streams, read by
the orchestrator's side of the wire protocol: a payment counted as sent reaches the
orchestrator before our end of the stream, and the orchestrator's bills lower our credit."""

from __future__ import annotations

from fractions import Fraction
from typing import Any, cast

import attrs
import trio
import trio.testing

from lpstream.gateway.live_control import LiveControl
from lpstream.wire import LiveEvent, LiveOpen, LivePayment, Message, MessageStream

PRICE = 3 * 10**12


@attrs.define
class Ledger:
    """The pool's side of a session's money: a credit raised by payments and lowered by bills.
    A payment can be held at ``gate`` (as one waits for fresh ticket parameters)."""

    credit: Fraction = Fraction(0)
    gate: trio.Event = attrs.Factory(trio.Event)
    asked: trio.Event = attrs.Factory(trio.Event)

    async def live_payment(self, orchestrator: str, session: str, ahead: Fraction) -> bytes:
        self.asked.set()
        await self.gate.wait()
        self.credit += ahead
        return b"tickets worth " + str(ahead).encode()

    def live_credit(self, orchestrator: str, session: str) -> Fraction:
        return self.credit

    def live_charge(self, orchestrator: str, session: str, amount: Fraction) -> None:
        self.credit -= amount

    async def live_price(self, orchestrator: str, pipeline: str) -> int:
        return PRICE


def control_on(stream: trio.abc.HalfCloseableStream, ledger: Ledger) -> LiveControl:
    return LiveControl(
        orchestrator="127.0.0.1:1",
        stream=cast(Any, stream),
        stream_id="cam",
        session="s-ai",
        pool=cast(Any, ledger),
        emit=lambda event: None,
        leave=trio.Event(),
        running=lambda: True,
        paid=True,
    )


async def read_all(stream: trio.abc.HalfCloseableStream) -> list[Message]:
    """Everything the orchestrator's side reads until our end of the stream."""
    channel = MessageStream()
    messages: list[Message] = []
    while data := await stream.receive_some(65536):
        channel.receive_data(bytes(data))
        while (message := channel.next_message()) is not None:
            messages.append(message)
    channel.receive_eof()
    return messages


async def test_closing_waits_for_a_payment_being_made_to_go_out() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    ledger = Ledger()
    control = control_on(ours, ledger)
    await control.open("noop")
    assert control.price == PRICE
    async with trio.open_nursery() as nursery:
        nursery.start_soon(control.pay)
        await ledger.asked.wait()  # the payment is being made ...
        nursery.start_soon(control.close)  # ... when the session leaves
        await trio.testing.wait_all_tasks_blocked()
        ledger.gate.set()
        messages = await read_all(theirs)
    assert isinstance(messages[0], LiveOpen)
    (payment,) = messages[1:]
    assert isinstance(payment, LivePayment)
    assert payment.payment == f"tickets worth {PRICE * 10}".encode()  # 10 s ahead


async def test_bills_lower_the_credit_by_what_was_billed_since_the_last() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    ledger = Ledger(credit=Fraction(100 * PRICE))
    ledger.gate.set()
    control = control_on(ours, ledger)
    await control.open("noop")
    peer = MessageStream()
    for seconds in (1, 2, 3):
        event = LiveEvent(
            kind="billed", values={"seconds": seconds, "billed_wei": str(seconds * PRICE)}
        )
        await theirs.send_all(peer.send(event))
    await theirs.send_all(
        peer.send(
            LiveEvent(kind="settled", values={"billed_wei": str(3 * PRICE), "balance_wei": "7/2"})
        )
    )
    await theirs.send_eof()
    await control.read()
    assert control.seconds == 3 and control.billed == 3 * PRICE and control.settled
    assert control.balance == Fraction(7, 2)
    assert ledger.credit == 97 * PRICE  # each bill charged once, whatever the repeats


async def test_jobs_wait_until_the_orchestrator_says_it_credited_the_first_payment() -> None:
    """A paid session may send jobs once the orchestrator's ``paid`` event has come (a job
    before it would be refused with 402); an unpaid one at once."""
    ours, theirs = trio.testing.memory_stream_pair()
    ledger = Ledger()
    ledger.gate.set()
    control = control_on(ours, ledger)
    await control.open("noop")
    await control.pay()
    assert not control.credited.is_set()  # paid, not yet credited
    peer = MessageStream()
    await theirs.send_all(peer.send(LiveEvent(kind="billed", values={"billed_wei": "0"})))
    await theirs.send_all(peer.send(LiveEvent(kind="paid", values={"balance_wei": "30"})))
    await theirs.send_eof()
    await control.read()
    assert control.credited.is_set()

    free_ours, _ = trio.testing.memory_stream_pair()
    free = attrs.evolve(control_on(free_ours, ledger), paid=False)
    await free.open("noop")
    await free.pay()
    assert free.credited.is_set()
