"""When a live AI session leaves its orchestrator for another: the decision, without I/O.

How this works (``SwapDecider`` reads no clock: every call takes ``now``):

* The session tells the decider what happens: a control stream opened on an orchestrator
  (``opened``), a source segment went out (``input_sent``, with the segment target), an AI
  frame came back (``output_came``), the orchestrator failed (``failed``: its connection was
  lost, or it refused or stopped the session).
* Stalled: while input flows, no AI frame for ``stall_segments`` segment targets since the
  later of the last frame and the session's opening (``first_output_grace`` before the
  first frame of an orchestrator: a model may load cold). ``stalled(now)`` names it;
  ``get_timer()`` says when to ask again.
* A stall with no other orchestrator to go to is borne (``bear_stall``): the session stays
  where it is, which beats stopping it, and is checked again after the first frame's grace.
* A failure is answered with a ``SwapPlan``: try another orchestrator after ``delay``
  seconds, or give up (``give_up`` says why) when ``max_swaps`` swaps already happened within
  ``window`` seconds. The delay doubles with each recent swap (``backoff``, then 2x, 4x...),
  so an orchestrator pool that keeps failing is not hammered, and there is no swap loop.
* The gap: from the last AI frame before the failure to the first after it (a dead or
  stalled orchestrator sends none after, and a refusing one's jobs are refused, so that
  frame is the new orchestrator's). When the new orchestrator is open and its first frame
  is back, ``output_came`` returns the finished ``Swap`` (old, new, reason, gap); the session
  tells its apps.
"""

from __future__ import annotations

import collections

import attrs

__all__ = ["Swap", "SwapDecider", "SwapPlan"]


@attrs.frozen(kw_only=True)
class Swap:
    """A session that moved from one orchestrator to another."""

    old: str
    """The orchestrator it left (``host:port``)."""
    new: str
    """The orchestrator it runs on now."""
    reason: str
    """Why it left: the connection was lost, it stalled, it refused."""
    gap: float | None
    """Seconds from the last AI frame of the old orchestrator to the first of the new one;
    None when the old one never sent a frame."""

    @property
    def gap_ms(self) -> int | None:
        """The gap in whole milliseconds (None as ``gap``)."""
        return None if self.gap is None else round(self.gap * 1000)


@attrs.frozen(kw_only=True)
class SwapPlan:
    """What to do about a failed orchestrator."""

    delay: float = 0.0
    """Seconds to wait before opening the session elsewhere."""
    give_up: str = ""
    """Why the session stops instead ("" to swap)."""


@attrs.define
class SwapDecider:
    """Decides when a live AI session is stalled and whether it moves (see the module
    comment)."""

    stall_segments: float = 3.0
    """Segment targets without an AI frame, while input flows, that make a stall."""
    first_output_grace: float = 30.0
    """Seconds an orchestrator has for its first AI frame (a cold model loads)."""
    max_swaps: int = 3
    """Swaps allowed within ``window`` seconds."""
    window: float = 60.0
    backoff: float = 0.5
    """Seconds before the first swap of a window; doubled for each swap before it."""
    orchestrator: str = ""
    """The orchestrator the session runs on ("" before one opened it)."""
    swaps: int = 0
    """Swaps done (the session moved and its new orchestrator's first frame came)."""
    last_swap: Swap | None = None
    _stall_after: float | None = None
    _opened_at: float | None = None
    _last_input: float | None = None
    _last_output: float | None = None
    _failed: tuple[str, str, float, float | None] | None = None
    """The failure being recovered from: (orchestrator, reason, when, last frame before)."""
    _recent: collections.deque[float] = attrs.Factory(collections.deque)
    """When each swap of the last ``window`` seconds was decided."""

    def __attrs_post_init__(self) -> None:
        if not (self.stall_segments > 0 and self.first_output_grace > 0 and self.window > 0):
            raise ValueError("stall_segments, first_output_grace and window must be > 0")
        if self.max_swaps < 0 or self.backoff < 0:
            raise ValueError("max_swaps and backoff must be >= 0")

    # -- what happened -----------------------------------------------------------------------

    def opened(self, orchestrator: str, now: float) -> None:
        """The session's control stream is open on ``orchestrator``."""
        self.orchestrator = orchestrator
        self._opened_at = now
        self._last_input = None  # input counts from now on for the stall

    def input_sent(self, now: float, segment_target: float) -> None:
        """A source segment went to the pipeline (segments last ``segment_target`` s)."""
        self._stall_after = self.stall_segments * segment_target
        self._last_input = now

    def output_came(self, now: float) -> Swap | None:
        """An AI frame came back; returns the swap it completes, if it is the first frame
        after a failure and the new orchestrator is open."""
        self._last_output = now
        if self._failed is None or self._opened_at is None:
            return None
        old, reason, _, last_before = self._failed
        if self.orchestrator == old:
            return None
        self._failed = None
        self.swaps += 1
        self.last_swap = Swap(
            old=old,
            new=self.orchestrator,
            reason=reason,
            gap=None if last_before is None else now - last_before,
        )
        return self.last_swap

    def failed(self, reason: str, now: float) -> SwapPlan:
        """The orchestrator the session runs on failed: swap (after a delay) or give up."""
        old = self.orchestrator
        if self._failed is None:
            self._failed = (old, reason, now, self._last_output)
        else:  # the new one failed before its first frame: the gap runs from the first loss
            self._failed = (old, reason, now, self._failed[3])
        self.orchestrator = ""
        self._opened_at = None
        while self._recent and self._recent[0] <= now - self.window:
            self._recent.popleft()
        if len(self._recent) >= self.max_swaps:
            return SwapPlan(
                give_up=f"{reason}; {len(self._recent)} swaps within {self.window:g} s already"
            )
        delay = 0.0 if not self._recent else self.backoff * 2 ** (len(self._recent) - 1)
        self._recent.append(now)
        return SwapPlan(delay=delay)

    def bear_stall(self, now: float) -> None:
        """A stall is borne (no other orchestrator could take the session): the next deadline
        runs from ``now``, with the first frame's grace."""
        self._opened_at = now

    def same_again(self, orchestrator: str) -> bool:
        """Whether ``orchestrator``, picked for the swap, is the one that just failed."""
        return self._failed is not None and self._failed[0] == orchestrator

    # -- stalls ------------------------------------------------------------------------------

    def _deadline(self) -> float | None:
        """When the session counts as stalled if no frame comes (None: it cannot stall)."""
        if self._opened_at is None or self._stall_after is None or self._last_input is None:
            return None
        if self._last_output is None or self._last_output < self._opened_at:
            return self._opened_at + max(self.first_output_grace, self._stall_after)
        return self._last_output + self._stall_after

    def get_timer(self) -> float | None:
        """When ``stalled`` may next say yes (None: not before an orchestrator is open and
        input flows); a driver polls no faster than it needs to past it (the input may have
        stopped)."""
        return self._deadline()

    def stalled(self, now: float) -> str:
        """Why the orchestrator counts as stalled at ``now`` ("" if it does not): no AI frame
        by the deadline while input flowed within the last ``stall_segments`` targets."""
        deadline = self._deadline()
        if deadline is None or now < deadline:
            return ""
        assert self._last_input is not None and self._stall_after is not None
        assert self._opened_at is not None
        if now - self._last_input >= self._stall_after:
            return ""  # the input stopped too: nothing to wait for
        since = self._opened_at
        if self._last_output is not None and self._last_output >= self._opened_at:
            since = self._last_output
        return f"stalled: no AI output for {now - since:.1f} s while input flows"
