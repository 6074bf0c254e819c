"""Live AI sessions at the gateway: a pipeline run on a live stream's frames, steered while it
runs, paid by time.

How this works:

* A session belongs to one live stream and runs one pipeline. Its segments go to the
  orchestrators as pipeline jobs next to the transcode jobs, under the session id
  ``{publish session}-ai``; the output is the stream's ``ai`` rendition (``AiRendition``).
* ``run`` holds the session's control stream: LIVE_OPEN to the orchestrator the session is
  pinned to, then, on chain, LIVE_PAYMENTs that keep the credit ``prepay`` seconds ahead at
  the orchestrator's price (topped up when it falls under ``topup`` seconds). Every ``billed``
  or ``settled`` event lowers our credit by what was billed since the last one, so when the
  session ends both sides hold the same balance to the wei.
* Parameter changes (``update``) go one at a time on that stream; the answer says at which
  frame the change took effect. Before the first job reached a worker a change is kept and
  sent with the jobs (the worker starts the session with it).
* Apps watching the session (``subscribe``) get events: ``params`` (a change took effect),
  ``stats`` (each segment: fps in/out, frames dropped, latency), ``billed``, ``paid``,
  ``error``, ``stopped``. Each app has a bounded queue; a slow app misses events, it never
  holds up the session. Events and ``status`` hold status values (money as ``Wei``, latency
  as ``LatencySummary``) that ``lpstream.http.status.status_json`` renders: the orchestrator's
  exact wei figures (``billed_wei``, ``balance_wei``) reach apps as money (``billed``,
  ``balance``), never as fraction strings.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from fractions import Fraction
from typing import Any, Protocol

import attrs
import trio

from lpstream.errors import BusyError, LpstreamError, ProtocolError, TransportError
from lpstream.gateway.status import LatencySummary, LiveAiStatus
from lpstream.media import VideoProfile
from lpstream.quic import QuicStream
from lpstream.taskgroups import one_error
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

__all__ = ["AI_RENDITION", "LiveAiSession", "LiveControlPool", "ParamValue"]

log = logging.getLogger("lpstream.gateway")

AI_RENDITION = "ai"
"""Name of a stream's live AI output rendition."""

ParamValue = str | int | float | bool

EVENT_QUEUE = 64
"""Events an app may have waiting before it misses some."""


class LiveControlPool(Protocol):
    """What a session needs from the orchestrator pool."""

    async def open_live_control(self, session: str, pipeline: str) -> tuple[str, QuicStream]: ...

    async def live_payment(self, orchestrator: str, session: str, ahead: Fraction) -> bytes: ...

    def live_charge(self, orchestrator: str, session: str, amount: Fraction) -> None: ...

    async def live_price(self, orchestrator: str, pipeline: str) -> int: ...

    def live_credit(self, orchestrator: str, session: str) -> Fraction: ...


@attrs.define(eq=False)
class LiveAiSession:
    """One live stream's AI session (see the module comment)."""

    stream: str
    session: str
    """Session id of the pipeline jobs (``{publish session}-ai``)."""
    pipeline: str
    params: dict[str, ParamValue]
    """Current parameters; sent with every job, so a session restarted elsewhere keeps them."""
    profile: VideoProfile
    """The output rendition: the pipeline works at this size."""
    pool: LiveControlPool
    paid: bool = False
    started_by: str | None = None
    """Who started it through the API; None when the node did."""
    prepay: float = 10.0
    """Seconds of session paid ahead."""
    topup: float = 6.0
    """Pay again when the credit covers fewer seconds than this."""
    running: bool = True
    """False once stopped (by the app, the orchestrator, or the stream ending)."""
    stop_reason: str = ""
    _apps: set[trio.MemorySendChannel[dict[str, Any]]] = attrs.Factory(set)
    _control: QuicStream | None = None
    _channel: MessageStream = attrs.Factory(MessageStream)
    _orchestrator: str = ""
    _price: int = 0
    _billed: Fraction = Fraction(0)
    _seconds: int = 0
    _orchestrator_balance: Fraction | None = None
    """The balance the orchestrator last reported (wei, exact)."""
    _settled: bool = False
    _answers: trio.MemorySendChannel[LiveUpdated | LiveEvent] | None = None
    _update_lock: trio.Lock = attrs.Factory(trio.Lock)
    _stop: trio.Event = attrs.Factory(trio.Event)
    _ready: trio.Event = attrs.Factory(trio.Event)
    _frame_latency: collections.deque[float] = attrs.Factory(lambda: collections.deque(maxlen=900))
    """Seconds from a source frame reaching the gateway to its AI output coming back (the
    latest 900 frames: 30 s at 30 fps)."""
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    segments: int = 0
    failures: int = 0
    last_stats: dict[str, Any] = attrs.Factory(dict)

    # -- apps ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[trio.MemoryReceiveChannel[dict[str, Any]]]:
        """Events for one app, while the context is open."""
        send, receive = trio.open_memory_channel[dict[str, Any]](EVENT_QUEUE)
        self._apps.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._apps.discard(send)
            send.close()

    def emit(self, event: dict[str, Any]) -> None:
        for app in list(self._apps):
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                app.send_nowait(event)

    def status(self) -> LiveAiStatus:
        credit = (
            self.pool.live_credit(self._orchestrator, self.session)
            if self._orchestrator
            else Fraction(0)
        )
        balance = self._orchestrator_balance
        return LiveAiStatus(
            pipeline=self.pipeline,
            params=dict(self.params),
            running=self.running,
            stopped=self.stop_reason or None,
            orchestrator=self._orchestrator or None,
            price_per_second=Wei(self._price),
            seconds_billed=self._seconds,
            billed=Wei(self._billed),
            credit=Wei(credit),
            orchestrator_balance=None if balance is None else Wei(balance),
            settled=self._settled,
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            dropped=self.dropped,
            segments=self.segments,
            failures=self.failures,
            stats=dict(self.last_stats),
            frame_latency_ms=self.frame_latency(),
            apps=len(self._apps),
            started_by=self.started_by,
        )

    # -- segments (called by LiveStream) ------------------------------------------------------

    def note_segment(
        self, seq: int, duration: float, frames: int, dropped: int, latency: float
    ) -> None:
        """One segment's AI output was listed ``latency`` s after its source segment."""
        self.segments += 1
        self.frames_in += frames + dropped
        self.frames_out += frames
        self.dropped += dropped
        seconds = max(duration, 1e-3)
        self.last_stats = {
            "type": "stats",
            "seq": seq,
            "fps_in": round((frames + dropped) / seconds, 2),
            "fps_out": round(frames / seconds, 2),
            "dropped": dropped,
            "dropped_total": self.dropped,
            "latency_ms": round(latency * 1000, 1),
            "frame_latency_ms": self.frame_latency(),
        }
        self.emit(self.last_stats)

    def note_frame_latency(self, seconds: float) -> None:
        self._frame_latency.append(seconds)

    def frame_latency(self) -> LatencySummary:
        """The AI's added latency per frame, at the gateway."""
        return LatencySummary.from_samples(self._frame_latency)

    def note_failure(self, seq: int, message: str) -> None:
        self.failures += 1
        self.emit({"type": "error", "seq": seq, "message": message})

    # -- control ------------------------------------------------------------------------------

    async def update(self, changes: Mapping[str, ParamValue]) -> dict[str, Any]:
        """Sends a parameter change; returns the ``params`` event (also sent to the apps).

        Raises:
            ProtocolError: the change was refused (400 with the reason), or the session is
                not running (409).
        """
        if not self.running:
            raise ProtocolError(f"the session is stopped: {self.stop_reason}", code=409)
        async with self._update_lock:
            with trio.move_on_after(10):
                await self._ready.wait()
            if self._control is None or self._answers is None:
                raise ProtocolError("the session has no orchestrator yet", code=503)
            send, receive = trio.open_memory_channel[LiveUpdated | LiveEvent](1)
            self._answers = send
            update = LiveUpdate(
                stream_id=self.stream, session_id=self.session, params=dict(changes)
            )
            await self._control.send_all(self._channel.send(update))
            with trio.fail_after(10):
                answer = await receive.receive()
        if isinstance(answer, LiveEvent):
            if "no running job" in answer.message:
                # No worker has the session yet: it starts with these parameters.
                self.params.update(changes)
                queued: dict[str, Any] = {
                    "type": "params",
                    "params": dict(self.params),
                    "applied": "next job",
                }
                self.emit(queued)
                return queued
            raise ProtocolError(answer.message, code=400)
        self.params.update(changes)
        event: dict[str, Any] = {
            "type": "params",
            "params": dict(self.params),
            "version": answer.version,
            "after_pts": answer.after_pts,
            "applied_pts": answer.applied_pts,
            "frames_between": answer.frames_between,
        }
        self.emit(event)
        return event

    def stop(self, reason: str = "stopped by the app") -> None:
        if self.running:
            self.running = False
            self.stop_reason = reason
        self._stop.set()

    async def run(self) -> None:
        """Holds the control stream until the session stops; then settles."""
        try:
            with one_error():  # the control stream's reader and closer run in a nursery
                await self._run()
        except (LpstreamError, TransportError, trio.TooSlowError) as exc:
            log.warning("live AI session %s/%s: %s", self.stream, self.session, exc)
            self.emit({"type": "error", "message": str(exc)})
            self.stop(str(exc))
        finally:
            self.running = False
            self._ready.set()
            self.emit({"type": "stopped", "reason": self.stop_reason})

    async def _run(self) -> None:
        self._orchestrator, stream = await self.pool.open_live_control(self.session, self.pipeline)
        self._control = stream
        try:
            if self.paid:
                self._price = await self.pool.live_price(self._orchestrator, self.pipeline)
            await stream.send_all(
                self._channel.send(
                    LiveOpen(stream_id=self.stream, session_id=self.session, pipeline=self.pipeline)
                )
            )
            await self._pay()
            send, _ = trio.open_memory_channel[LiveUpdated | LiveEvent](1)
            self._answers = send
            self._ready.set()
            async with trio.open_nursery() as nursery:

                async def close_when_stopped() -> None:
                    await self._stop.wait()
                    await stream.send_eof()  # the orchestrator settles and ends the stream

                nursery.start_soon(close_when_stopped)
                await self._read(stream)
                nursery.cancel_scope.cancel()
        finally:
            self._control = None
            await stream.aclose()

    async def _pay(self) -> None:
        if not self.paid or not self._price:
            return
        credit = self.pool.live_credit(self._orchestrator, self.session)
        if credit >= Fraction(self._price) * Fraction(self.topup):
            return
        payment = await self.pool.live_payment(
            self._orchestrator, self.session, Fraction(self._price) * Fraction(self.prepay)
        )
        if payment:
            assert self._control is not None
            await self._control.send_all(self._channel.send(LivePayment(payment=payment)))

    async def _read(self, stream: QuicStream) -> None:
        while True:
            data = await stream.receive_some(64 * 1024)
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
                    raise ProtocolError(message.message, code=message.code)
                else:
                    raise ProtocolError(
                        f"unexpected {type(message).__name__} on a live control stream"
                    )

    async def _on_event(self, event: LiveEvent) -> None:
        figures = _app_figures(event.values)
        billed = figures.get("billed")
        if isinstance(billed, Wei):
            if billed.exact > self._billed:
                self.pool.live_charge(self._orchestrator, self.session, billed.exact - self._billed)
                self._billed = billed.exact
            seconds = figures.get("seconds")
            if isinstance(seconds, int):
                self._seconds = seconds
        balance = figures.get("balance")
        if isinstance(balance, Wei):
            self._orchestrator_balance = balance.exact
        if event.kind == "settled":
            self._settled = True
        self.emit({"type": event.kind, "message": event.message, **figures})
        if event.kind == "stopped":
            log.warning(
                "live AI session %s/%s stopped by the orchestrator: %s",
                self.stream,
                self.session,
                event.message,
            )
            self.stop(event.message or "stopped by the orchestrator")
        elif event.kind == "billed" and self.running:
            try:
                await self._pay()
            except BusyError as exc:
                self.emit({"type": "error", "message": f"cannot pay: {exc}"})


def _app_figures(values: Mapping[str, object]) -> dict[str, object]:
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
