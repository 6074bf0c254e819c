"""A live AI session's control stream on one orchestrator, and that orchestrator's bill.

How this works:

* The session (``lpstream.gateway.live_ai.LiveAiSession``) opens one ``LiveControl`` per
  orchestrator it runs on; a swap opens a new one, so what an orchestrator billed is always
  that orchestrator's alone (the session adds up what the ones it left billed).
* ``open`` learns the price (on chain), sends LIVE_OPEN and pays ahead; once the orchestrator
  says it credited the payment (its ``paid`` event; at once off chain or at price 0),
  ``credited`` is set and the session may send jobs and parameter changes (``exchange``, one
  at a time: the session holds a lock). A job sent before would be refused (402).
* ``pay`` keeps the credit ``prepay`` seconds ahead at the orchestrator's price, topped up
  when it falls under ``topup`` seconds. Every ``billed`` or ``settled`` event lowers our
  credit by what was billed since the last one, so when the session ends both sides hold the
  same balance to the wei. A payment counts as sent once it is made, so ``close`` (our end of
  the stream) waits for one being made to go out first: the orchestrator then credits it
  before it settles.
* ``read`` reads the stream until it ends: answers to a change go to the waiting
  ``exchange``, events to the session's apps (money as ``Wei``), an ERROR raises
  ``OrchestratorRefusal``. A ``stopped`` event sets ``stopped_by`` and ``leave``: the
  orchestrator settles and ends the stream, and the session decides where to go next.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, Protocol

import attrs
import trio

from lpstream.errors import BusyError, ProtocolError
from lpstream.gateway.placement import SessionPlacement
from lpstream.quic import QuicStream
from lpstream.wire import (
    Error,
    LiveEvent,
    LiveOpen,
    LivePayment,
    LiveUpdate,
    LiveUpdated,
    MessageStream,
)
from payments.pm import Wei

__all__ = ["LiveControl", "LiveControlPool", "OrchestratorRefusal", "app_figures"]

log = logging.getLogger("lpstream.gateway")

UPDATE_TIMEOUT = 10.0
"""Seconds the orchestrator has to answer a parameter change."""


class OrchestratorRefusal(ProtocolError):
    """The orchestrator answered the session's control stream with an ERROR."""


class LiveControlPool(Protocol):
    """What a session needs from the orchestrator pool."""

    async def open_live_control(self, session: str, pipeline: str) -> tuple[str, QuicStream]: ...

    async def live_payment(self, orchestrator: str, session: str, ahead: Fraction) -> bytes: ...

    def live_charge(self, orchestrator: str, session: str, amount: Fraction) -> None: ...

    async def live_price(self, orchestrator: str, pipeline: str) -> int: ...

    def live_credit(self, orchestrator: str, session: str) -> Fraction: ...

    @property
    def placement(self) -> SessionPlacement:
        """Where sessions are pinned: a failed orchestrator is marked there, so the session
        and its jobs move on by the pool's own rules."""
        ...


@attrs.define(eq=False)
class LiveControl:
    """The session's control stream on one orchestrator (see the module comment)."""

    orchestrator: str
    """The orchestrator's key (``host:port``)."""
    stream: QuicStream
    stream_id: str
    """The live stream's name."""
    session: str
    """The session id (``{publish session}-ai``)."""
    pool: LiveControlPool
    emit: Callable[[dict[str, Any]], None]
    """Sends an event to the session's apps."""
    leave: trio.Event
    """Set to end the stream; set here when the orchestrator stops the session."""
    running: Callable[[], bool]
    """Whether the session still runs (a stopped one pays no more)."""
    paid: bool = False
    prepay: float = 10.0
    """Seconds of session paid ahead."""
    topup: float = 6.0
    """Pay again when the credit covers fewer seconds than this."""
    price: int = 0
    """Wei per second (learnt at ``open``; 0 off chain)."""
    billed: Fraction = Fraction(0)
    """What the orchestrator billed (cumulative, as it reports)."""
    seconds: int = 0
    """Seconds it billed."""
    balance: Fraction | None = None
    """The balance the orchestrator last reported (wei, exact)."""
    settled: bool = False
    ready: bool = False
    """Open and paid: jobs and parameter changes may go."""
    credited: trio.Event = attrs.Factory(trio.Event)
    """Set when the orchestrator has credited the first payment (its ``paid`` event), or at
    once where nothing is paid: before that, a job would be refused (402)."""
    stopped_by: str = ""
    """Why the orchestrator stopped the session ("" while it did not)."""
    _channel: MessageStream = attrs.Factory(MessageStream)
    _answers: trio.MemorySendChannel[LiveUpdated | LiveEvent] | None = None
    _paying: trio.Lock = attrs.Factory(trio.Lock)
    """Held while a payment is made and sent: the stream's end waits for it."""

    async def open(self, pipeline: str) -> None:
        """Opens the session on the orchestrator: price, LIVE_OPEN, the first payment."""
        if self.paid:
            self.price = await self.pool.live_price(self.orchestrator, pipeline)
        await self.stream.send_all(
            self._channel.send(
                LiveOpen(stream_id=self.stream_id, session_id=self.session, pipeline=pipeline)
            )
        )

    async def pay(self) -> None:
        """Tops the credit up to ``prepay`` seconds when it covers fewer than ``topup``."""
        if not self.paid or not self.price:
            self.credited.set()
            return
        async with self._paying:
            credit = self.pool.live_credit(self.orchestrator, self.session)
            if credit >= Fraction(self.price) * Fraction(self.topup):
                return
            payment = await self.pool.live_payment(
                self.orchestrator, self.session, Fraction(self.price) * Fraction(self.prepay)
            )
            if payment:
                await self.stream.send_all(self._channel.send(LivePayment(payment=payment)))

    async def close(self) -> None:
        """Ends our side of the stream (the orchestrator then settles and ends its side),
        after a payment being made went out."""
        async with self._paying:
            await self.stream.send_eof()

    async def exchange(self, update: LiveUpdate) -> LiveUpdated | LiveEvent:
        """Sends a parameter change; returns the answer (``LiveUpdated``, or a LiveEvent
        saying why not).

        Raises:
            trio.TooSlowError: no answer within ``UPDATE_TIMEOUT``.
        """
        send, receive = trio.open_memory_channel[LiveUpdated | LiveEvent](1)
        self._answers = send
        await self.stream.send_all(self._channel.send(update))
        with trio.fail_after(UPDATE_TIMEOUT):
            return await receive.receive()

    async def read(self) -> None:
        """Reads the stream until the orchestrator ends it.

        Raises:
            OrchestratorRefusal: it answered with an ERROR.
            ProtocolError: it sent what a control stream does not carry.
        """
        while True:
            data = await self.stream.receive_some(64 * 1024)
            if not data:
                self._channel.receive_eof()
                return
            self._channel.receive_data(data)
            while (message := self._channel.next_message()) is not None:
                if isinstance(message, LiveUpdated) or (
                    isinstance(message, LiveEvent) and message.kind == "update-refused"
                ):
                    if self._answers is not None:
                        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                            self._answers.send_nowait(message)
                elif isinstance(message, LiveEvent):
                    await self._on_event(message)
                elif isinstance(message, Error):
                    raise OrchestratorRefusal(message.message, code=message.code)
                else:
                    raise ProtocolError(
                        f"unexpected {type(message).__name__} on a live control stream"
                    )

    async def _on_event(self, event: LiveEvent) -> None:
        figures = app_figures(event.values)
        billed = figures.get("billed")
        if isinstance(billed, Wei):
            if billed.exact > self.billed:
                self.pool.live_charge(self.orchestrator, self.session, billed.exact - self.billed)
                self.billed = billed.exact
            seconds = figures.get("seconds")
            if isinstance(seconds, int):
                self.seconds = seconds
        balance = figures.get("balance")
        if isinstance(balance, Wei):
            self.balance = balance.exact
        if event.kind == "settled":
            self.settled = True
        elif event.kind == "paid":
            self.credited.set()
        self.emit({"type": event.kind, "message": event.message, **figures})
        if event.kind == "stopped":
            log.warning(
                "live AI session %s/%s stopped by the orchestrator: %s",
                self.stream_id,
                self.session,
                event.message,
            )
            # It settles and ends the stream; the session moves on.
            self.stopped_by = event.message or "no reason given"
            self.leave.set()
        elif event.kind == "billed" and self.running():
            try:
                await self.pay()
            except BusyError as exc:
                self.emit({"type": "error", "message": f"cannot pay: {exc}"})


def app_figures(values: Mapping[str, object]) -> dict[str, object]:
    """An orchestrator's figures as apps get them: an exact wei figure (``billed_wei``: a
    decimal or fraction string) and the price per second become money (``billed``: ``Wei``).

    Raises:
        ProtocolError: a wei figure is not a number.
    """
    figures: dict[str, object] = {}
    for key, value in values.items():
        if key.endswith("_wei"):
            try:
                figures[key.removesuffix("_wei")] = Wei(Fraction(str(value)))
            except (ValueError, ZeroDivisionError):
                raise ProtocolError(f"live event figure {key}: {value!r} is not wei") from None
        elif key == "price_per_second" and isinstance(value, int):
            figures[key] = Wei(value)
        else:
            figures[key] = value
    return figures
