"""Live AI sessions at the gateway: a pipeline run on a live stream's frames, steered while it
runs, paid by time.

How this works:

* A session belongs to one live stream and runs one pipeline. Its segments go to the
  orchestrators as pipeline jobs next to the transcode jobs, under the session id
  ``{publish session}-ai``; the output is the stream's ``ai`` rendition (``AiRendition``).
* ``run`` holds the session's control stream (``lpstream.gateway.live_control.LiveControl``,
  one per orchestrator): LIVE_OPEN to the orchestrator the session is pinned to, then, on
  chain, LIVE_PAYMENTs that keep the credit paid ahead at the orchestrator's price; what it
  bills lowers our credit, so when the session ends both sides hold the same balance to the
  wei.
* Parameter changes (``update``) go one at a time on that stream; the answer says at which
  frame the change took effect. Before the first job reached a worker a change is kept and
  sent with the jobs (the worker starts the session with it).
* Failover (``lpstream.gateway.live_failover`` decides): when the orchestrator's connection is
  lost, it refuses the session (an ERROR on the control stream, or a ``stopped`` event), or
  it stalls (no AI frame for three segment targets while input flows), the session is moved:
  the orchestrator is marked failed in the pool's placement (the same rule that moves a
  transcode session: suspended, the session's jobs go elsewhere), and a new control stream is
  opened on the orchestrator the placement picks now (the pipeline offered at an acceptable
  price), with a new payment session there; the jobs carry the latest parameters. What the old
  orchestrator said it billed stays counted; a refusing one settles as on a normal stop, a
  dead or stalled one cannot. Swaps are bounded (``SwapDecider``: a few per minute, backing
  off); when none is left, or only the failed orchestrator could take the session, it stops
  with ``error`` and ``stopped`` as before, saying why.
* Apps watching the session (``subscribe``) get events: ``params`` (a change took effect),
  ``stats`` (each segment: fps in/out, frames dropped, latency), ``billed``, ``paid``,
  ``swapped`` (old and new orchestrator, the reason, ``gap_ms`` from the last AI frame of the
  old one to the first of the new one), ``error``, ``stopped``. Each app has a bounded
  queue; a slow app misses events, it never holds up the session. Events and ``status`` hold
  status values (money as ``Wei``, latency as ``LatencySummary``) that
  ``lpstream.http.status.status_json`` renders: the orchestrator's exact wei figures
  (``billed_wei``, ``balance_wei``) reach apps as money (``billed``, ``balance``), never as
  fraction strings.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Mapping
from fractions import Fraction
from typing import Any

import attrs
import trio

from lpstream.errors import BusyError, LpstreamError, ProtocolError, TransportError
from lpstream.gateway.live_control import LiveControl, LiveControlPool, OrchestratorRefusal
from lpstream.gateway.live_failover import SwapDecider
from lpstream.gateway.status import LatencySummary, LiveAiStatus
from lpstream.media import VideoProfile
from lpstream.quic import QuicStream
from lpstream.taskgroups import one_error
from lpstream.wire import LiveEvent, LiveUpdate
from payments.pm import Wei

__all__ = [
    "AI_RENDITION",
    "LiveAiSession",
    "LiveControlPool",
    "OrchestratorRefusal",
    "ParamValue",
]

log = logging.getLogger("lpstream.gateway")

AI_RENDITION = "ai"
"""Name of a stream's live AI output rendition."""

ParamValue = str | int | float | bool

EVENT_QUEUE = 64
"""Events an app may have waiting before it misses some."""

OPEN_TIMEOUT = 10.0
"""Seconds a swap has to open the session on the next orchestrator (dial included)."""

CREDIT_TIMEOUT = 10.0
"""Seconds an orchestrator has to acknowledge a session's first payment (its ``paid``
event); jobs go only after it."""


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
    _control: LiveControl | None = None
    """The control stream on the current orchestrator (kept once it closed: its figures)."""
    _orchestrator: str = ""
    _billed_before: Fraction = Fraction(0)
    """What orchestrators the session left billed."""
    _seconds_before: int = 0
    _update_lock: trio.Lock = attrs.Factory(trio.Lock)
    _stop: trio.Event = attrs.Factory(trio.Event)
    _leave: trio.Event = attrs.Factory(trio.Event)
    """Set to end the current control stream (stopping, or the orchestrator stopped us)."""
    _stall: str = ""
    """Why the current orchestrator counts as stalled ("" while it does not)."""
    failover: SwapDecider = attrs.Factory(SwapDecider)
    """Decides stalls and swaps."""
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
        control = self._control  # the one the session runs on, or last ran on
        price, seconds, billed = (
            (control.price, control.seconds, control.billed) if control else (0, 0, Fraction(0))
        )
        balance = None if control is None else control.balance
        last = self.failover.last_swap
        return LiveAiStatus(
            pipeline=self.pipeline,
            params=dict(self.params),
            running=self.running,
            stopped=self.stop_reason or None,
            orchestrator=self._orchestrator or None,
            price_per_second=Wei(price),
            seconds_billed=self._seconds_before + seconds,
            billed=Wei(self._billed_before + billed),
            credit=Wei(credit),
            orchestrator_balance=None if balance is None else Wei(balance),
            settled=control is not None and control.settled,
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            dropped=self.dropped,
            segments=self.segments,
            failures=self.failures,
            stats=dict(self.last_stats),
            frame_latency_ms=self.frame_latency(),
            apps=len(self._apps),
            started_by=self.started_by,
            swaps=self.failover.swaps,
            last_swap_gap_ms=None if last is None else last.gap_ms,
        )

    @property
    def ready(self) -> bool:
        """Whether jobs may go: an orchestrator has the session open and paid (a segment
        before that, or during a swap, is a gap)."""
        return self.running and self._control is not None and self._control.ready

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

    def note_input(self, now: float, segment_target: float) -> None:
        """A source segment went to the pipeline at ``now`` (for stall detection)."""
        self.failover.input_sent(now, segment_target)

    def note_output(self, now: float) -> None:
        """An AI frame came back at ``now``; the first one after a swap reports it."""
        swap = self.failover.output_came(now)
        if swap is not None:
            log.warning(
                "live AI session %s/%s moved from %s to %s (%s): %s ms without AI frames",
                self.stream,
                self.session,
                swap.old,
                swap.new,
                swap.reason,
                swap.gap_ms,
            )
            self.emit(
                {
                    "type": "swapped",
                    "old": swap.old,
                    "new": swap.new,
                    "reason": swap.reason,
                    "gap_ms": swap.gap_ms,
                }
            )

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
            control = self._control
            if control is None or not control.ready:
                raise ProtocolError("the session has no orchestrator yet", code=503)
            answer = await control.exchange(
                LiveUpdate(stream_id=self.stream, session_id=self.session, params=dict(changes))
            )
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
        self._leave.set()

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
        reason = await self._serve(first=True)
        while reason is not None and not self._stop.is_set():
            old = self._orchestrator
            plan = self.failover.failed(reason, trio.current_time())
            self._mark_failed(old)
            if plan.give_up:
                raise BusyError(
                    f"orchestrator {old} failed and the session cannot move: {plan.give_up}"
                )
            log.warning(
                "live AI session %s/%s: orchestrator %s failed (%s); moving it in %.1f s",
                self.stream,
                self.session,
                old,
                reason,
                plan.delay,
            )
            with trio.move_on_after(plan.delay):
                await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                reason = await self._serve(first=False)
            except BusyError as exc:
                raise BusyError(f"orchestrator {old} failed ({reason}): {exc}") from None

    def _elsewhere(self) -> bool:
        """Whether another orchestrator of the pool offers the pipeline at an acceptable price
        (it may be suspended: the placement then tries the one free first)."""
        placement = self.pool.placement
        return any(
            o.key != self._orchestrator
            and not o.refused
            and not placement.pipeline_refusal(o, self.pipeline)
            for o in placement.connections.orchestrators
        )

    def _mark_failed(self, orchestrator: str) -> None:
        """Suspends ``orchestrator`` and unpins the session from it (the pool's rule)."""
        placement = self.pool.placement
        with contextlib.suppress(BusyError):  # it left the pool: nothing is pinned to it
            placement.failed(placement.connections.find(orchestrator), self.session)

    async def _open(self, *, first: bool) -> LiveControl:
        """A control stream to the orchestrator the session goes to now (``_orchestrator``).

        Raises:
            BusyError: on a swap, no orchestrator but the failed one can take the session.
        """
        if first:
            self._orchestrator, stream = await self.pool.open_live_control(
                self.session, self.pipeline
            )
            return self._control_on(stream)
        # A new paid session on the next orchestrator; what the old one billed stays counted.
        if self._control is not None:
            self._billed_before += self._control.billed
            self._seconds_before += self._control.seconds
            self._control = None
        chosen = self.pool.placement.pick(self.session, self.pipeline)
        if self.failover.same_again(chosen.key):
            raise BusyError(
                f"no other orchestrator offers {self.pipeline!r} at an acceptable price"
            )
        self._orchestrator = chosen.key
        key, stream = await self.pool.open_live_control(self.session, self.pipeline)
        if key != chosen.key:  # the pool moved it meanwhile: follow the pool
            self._orchestrator = key
        return self._control_on(stream)

    def _control_on(self, stream: QuicStream) -> LiveControl:
        return LiveControl(
            orchestrator=self._orchestrator,
            stream=stream,
            stream_id=self.stream,
            session=self.session,
            pool=self.pool,
            emit=self.emit,
            leave=self._leave,
            running=lambda: self.running,
            paid=self.paid,
            prepay=self.prepay,
            topup=self.topup,
        )

    async def _serve(self, *, first: bool) -> str | None:
        """Runs the session on one orchestrator: None once the session stops, or why that
        orchestrator failed it (its connection, a refusal, a stall).

        Raises:
            LpstreamError: the session cannot run (on the first orchestrator before it opened
                the session, as before failover existed; or our own side failed).
        """
        self._leave = trio.Event()
        if self._stop.is_set():
            self._leave.set()
        opened = False
        self._stall = ""
        control: LiveControl | None = None
        try:
            with trio.fail_after(math.inf if first else OPEN_TIMEOUT):
                control = await self._open(first=first)
            self._control = control
            await control.open(self.pipeline)
            opened = True
            self.failover.opened(self._orchestrator, trio.current_time())
            await control.pay()
            with one_error():  # the stream's reader, closer and stall watch run in a nursery
                await self._hold(control)
        except (TransportError, OrchestratorRefusal, BusyError, trio.TooSlowError) as exc:
            if self._stop.is_set():
                return None
            if (first and not opened) or (isinstance(exc, BusyError) and control is None):
                raise  # no orchestrator to move from, or none to move to
            return f"{_fault_kind(exc)}: {exc}"
        finally:
            self._ready = trio.Event()  # an update waits for the next stream, if any
            if control is not None:
                control.ready = False
                await control.stream.aclose()
        if self._stall:
            return self._stall
        if self._stop.is_set():
            return None
        if control.stopped_by:
            return f"stopped by the orchestrator: {control.stopped_by}"
        return "the orchestrator ended the control stream"

    async def _hold(self, control: LiveControl) -> None:
        """Reads the control stream until it ends; sends our end when the session leaves; ends
        it at a stall (``_stall`` says why)."""
        async with trio.open_nursery() as nursery:

            async def close_when_leaving() -> None:
                await self._leave.wait()
                await control.close()  # the orchestrator settles and ends the stream

            async def watch_for_stall() -> None:
                while not self._stall:
                    timer = self.failover.get_timer()
                    now = trio.current_time()
                    await trio.sleep(1.0 if timer is None else max(timer - now, 0.5))
                    stall = self.failover.stalled(trio.current_time())
                    if stall and not self._elsewhere():
                        self.emit({"type": "error", "message": f"{stall}; no other orchestrator"})
                        self.failover.bear_stall(trio.current_time())
                    else:
                        self._stall = stall
                nursery.cancel_scope.cancel()

            async def ready_when_credited() -> None:
                with trio.move_on_after(CREDIT_TIMEOUT):
                    await control.credited.wait()
                    control.ready = True
                    self._ready.set()
                    return
                # An orchestrator that never credits our payment never gets a job: move on.
                self._stall = f"the payment was not acknowledged in {CREDIT_TIMEOUT:g} s"
                nursery.cancel_scope.cancel()

            nursery.start_soon(ready_when_credited)
            nursery.start_soon(close_when_leaving)
            nursery.start_soon(watch_for_stall)
            await control.read()
            nursery.cancel_scope.cancel()


def _fault_kind(exc: Exception) -> str:
    """How an orchestrator failed a session, in words, for the ``swapped`` event's reason."""
    if isinstance(exc, TransportError):
        return "connection lost"
    if isinstance(exc, OrchestratorRefusal):
        return f"refused ({exc.code})"
    if isinstance(exc, trio.TooSlowError):
        return "no answer"
    return "cannot take the session"
