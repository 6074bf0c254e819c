"""Which orchestrator a session's next job goes to, and moving the session on failure.

How this works: a session (a stream's publish session, or its live AI session) sticks to the
orchestrator that served it last while that one is usable: offered work by its last info
check, not suspended, and, for a live AI session, offering the pipeline at no more than
``max_price_per_second``. Otherwise the ``Selector`` draws among the usable ones (those that
answered the last info check with free sessions first, the others only when nobody better is
left); when all of them are suspended, the one whose suspension ends first is tried.

A failure on the orchestrator's side suspends it for ``suspension`` seconds (and the selector
for some refreshes) and moves the session to the next orchestrator in the pool's order, so
the retry of the same segment goes elsewhere. Sessions are pinned by the orchestrator's key,
so an orchestrator leaving the pool unpins only its own sessions.
"""

from __future__ import annotations

import attrs
import trio

from lpstream.errors import BusyError
from lpstream.gateway.connections import KnownOrchestrator, OrchestratorConnections
from lpstream.gateway.selection import Candidate, Selector

__all__ = ["SessionPlacement"]


@attrs.define
class SessionPlacement:
    """Pins sessions to orchestrators (see the module comment)."""

    connections: OrchestratorConnections
    """The pool's orchestrators."""
    selector: Selector
    """Draws an orchestrator for a new or moved session (stake, price, random; latency)."""
    suspension: float = 10.0
    """Seconds a failed orchestrator is passed over (the selector also counts refreshes)."""
    max_price_per_second: int | None = None
    """Wei per second the gateway pays at most for a live AI session; None for no limit."""
    _sessions: dict[str, str] = attrs.Factory(dict)
    """Session -> the key of the orchestrator it is pinned to."""

    def pipeline_refusal(self, orch: KnownOrchestrator, pipeline: str) -> str:
        """Why ``orch`` cannot run ``pipeline`` ("" if it can, or if it is not known yet)."""
        if not pipeline or orch.pipelines is None:
            return ""
        price = orch.pipelines.get(pipeline)
        if price is None:
            return f"does not offer pipeline {pipeline!r}"
        if self.max_price_per_second is not None and price > self.max_price_per_second:
            return f"asks {price} wei/s for {pipeline!r}, above {self.max_price_per_second}"
        return ""

    def pipeline_unknown(self, pipeline: str) -> bool:
        """Whether some orchestrator is passed over for ``pipeline`` (its info may be old)."""
        return any(self.pipeline_refusal(o, pipeline) for o in self.connections.orchestrators)

    def pick(self, session: str, pipeline: str = "") -> KnownOrchestrator:
        """The session's orchestrator if it is still usable, else a fresh draw.

        Raises:
            BusyError: no orchestrator can take the work (with each one's reason).
        """
        orchestrators = self.connections.orchestrators
        if not orchestrators:
            raise BusyError("no orchestrators configured or discovered")
        now = trio.current_time()

        def usable(o: KnownOrchestrator) -> bool:
            return (
                not o.refused
                and not self.pipeline_refusal(o, pipeline)
                and o.suspended_until <= now
                and not self.selector.suspended(o.key)
            )

        current = next((o for o in orchestrators if o.key == self._sessions.get(session)), None)
        if current is not None and usable(current):
            return current
        offered = [
            o for o in orchestrators if not o.refused and not self.pipeline_refusal(o, pipeline)
        ]
        if not offered:
            reasons = "; ".join(
                f"{o.address}: {o.refused or self.pipeline_refusal(o, pipeline)}"
                for o in orchestrators
            )
            raise BusyError(f"no orchestrator can take the work ({reasons})")
        usable_now = [o for o in offered if usable(o)]
        # Those that answered the info check with free sessions first; the others only when
        # nobody better is left.
        preferred = [o for o in usable_now if o.answered and not o.full] or usable_now
        if pipeline:
            # A live AI session starts sooner where its pipeline is loaded already.
            preferred = [o for o in preferred if pipeline in o.warm] or preferred
        chosen = self.selector.select(
            [Candidate(key=o.key, stake=o.stake, score=o.score) for o in preferred]
        )
        if chosen is not None:
            orch = next(o for o in preferred if o.key == chosen.key)
        else:
            # Everything is suspended: try the one whose suspension ends first.
            orch = min(offered, key=lambda o: o.suspended_until)
        self._sessions[session] = orch.key
        return orch

    def failed(self, orch: KnownOrchestrator, session: str) -> None:
        """A job of ``session`` failed on ``orch``'s side: suspend it, move the session on."""
        self.selector.record_failure(orch.key)
        orch.failures += 1
        orch.suspended_until = trio.current_time() + self.suspension
        orchestrators = self.connections.orchestrators
        if orch in orchestrators:
            following = orchestrators[(orchestrators.index(orch) + 1) % len(orchestrators)]
            self._sessions[session] = following.key

    def succeeded(self, orch: KnownOrchestrator, round_trip: float, duration: float) -> None:
        """A job on ``orch`` answered ``round_trip`` seconds after its segment's last byte
        (the segment lasting ``duration`` seconds): its latency score."""
        orch.jobs += 1
        self.selector.record_success(orch.key, round_trip, duration)
