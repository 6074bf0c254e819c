"""A live AI session's control stream (``LiveControl``) over trio's in-memory streams, read by
the orchestrator's side of the wire protocol: a payment counted as sent reaches the
orchestrator before our end of the stream, and the orchestrator's bills lower our credit."""

from __future__ import annotations

from fractions import Fraction
from typing import Any, cast

import attrs
import pytest
import trio
import trio.testing

from lpstream.errors import BusyError
from lpstream.gateway import live_ai
from lpstream.gateway.live_control import LiveControl
from lpstream.media import VideoProfile
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


class SilentPool(Ledger):
    """One orchestrator that takes the session's control stream and payment and never says
    it credited it; no other orchestrator to move to."""

    def __init__(self) -> None:
        super().__init__()
        self.gate.set()
        self.theirs: list[trio.abc.HalfCloseableStream] = []

        class Placement:
            class connections:
                orchestrators: list[object] = []

                @staticmethod
                def find(key: str) -> object:
                    raise BusyError(f"{key} left the pool")

            @staticmethod
            def pick(session: str, pipeline: str) -> object:
                raise BusyError("no orchestrator offers it")

            @staticmethod
            def failed(orchestrator: object, session: str) -> None:
                pass

        self.placement = Placement()

    async def open_live_control(self, session: str, pipeline: str) -> tuple[str, Any]:
        ours, theirs = trio.testing.memory_stream_pair()
        self.theirs.append(theirs)
        return "127.0.0.1:1", ours


async def test_an_orchestrator_that_never_credits_the_payment_gets_no_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Jobs wait for the orchestrator's ``paid`` event; one that never sends it is left
    (here with nowhere to go: the session stops, saying why)."""
    monkeypatch.setattr(live_ai, "CREDIT_TIMEOUT", 0.5)
    pool = SilentPool()
    session = live_ai.LiveAiSession(
        stream="cam",
        session="s-ai",
        pipeline="noop",
        params={},
        profile=VideoProfile(name="ai", width=64, height=64, bitrate=100_000),
        pool=cast(Any, pool),
        paid=True,
    )
    async with session.subscribe() as events:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.run)
                await trio.sleep(0.2)
                assert not session.ready  # opened and paid, not credited: no job goes
                got = [await events.receive()]
                while got[-1]["type"] != "stopped":
                    got.append(await events.receive())
    errors = " ".join(e.get("message", "") for e in got if e["type"] == "error")
    assert "the payment was not acknowledged in 0.5 s" in errors, got
    assert not session.ready and not session.running
    assert pool.credit == PRICE * 10  # it was paid ahead once
