"""The gateway's transcoding capacity, shared fairly among its publishers.

How this works
--------------
Every stream that transcodes claims the work its ladder costs, in pixels per second counted
as orchestrators count it (``lpstream.orchestrator.capacity.ladder_work``: the source's
picture and frame rate through the profiles), against the capacity the gateway's
orchestrators advertise (ORCH_INFO ``capacity``, in sessions' worth). Before each segment of
a stream goes out, ``admit`` decides:

* A stream that is transcoding keeps its room: what a publisher was given is never taken for
  someone else unless that publisher is over its share (below).
* A new stream, or one that was shed, is admitted when the admitted claims and its own fit in
  the capacity: while there is room, anyone may use it.
* When it does not fit, capacity is contended, and each publisher's share is the capacity
  divided by the publishers holding a transcoding stream, the newcomer's included (max-min
  fairness). A publisher that stays within its share with this stream gets it, and the room
  is taken from the publishers most over their share, newest stream first: those streams are
  shed. A publisher that would go over its share is the one refused: its stream is shed.
* A shed stream sends no segments (its renditions list gaps; its source rendition plays on)
  and is admitted again by the same rule at a later segment, once there is room.

The orchestrators judge their own room (other gateways use them too, and they count what
sessions measure, not estimates): when a segment of an admitted stream is still answered busy,
``refused`` applies the same rule as if the capacity were full, so a publisher within its
share may still shed an over-share stream and try again. A stream that streams were shed for
(now or when it was admitted) tries again while their sessions give their room back at the
orchestrator (within about a second of their last job:
``lpstream.orchestrator.workers.WorkerPool.reclaim_after``), until one of its segments is
``served``; its ladder retries for a few segment durations, so the segment is late, not
lost.

go-livepeer counts sessions on both sides (an orchestrator's and a broadcaster's
``-maxSessions``) and serves whoever comes first, so one publisher with many streams can
take every session a second publisher then finds full. Here the first come keep what they
were given only within their share. The rule needs no knowledge of the orchestrators' other
customers, and a capacity of 0 (no orchestrator has answered yet) admits everyone.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator

import attrs

from lpstream.orchestrator.capacity import work_text

__all__ = ["TranscodeShares"]

log = logging.getLogger("lpstream.gateway")


@attrs.define
class _Claim:
    identity: str
    order: int
    """When it joined (newest streams are shed first)."""
    work: int = 0
    """Pixels per second its ladder costs, as its last segment said."""
    admitted: bool = False
    """Whether its segments go out."""
    shed: str = ""
    """Why it was last shed ("" if never)."""
    awaits_room: bool = False
    """Streams were shed for it and none of its segments was served since: the room they
    held is on its way back from the orchestrator."""


def _no_capacity() -> int:
    return 0


@attrs.define
class TranscodeShares:
    """The gateway's live streams' claims on transcoding capacity (see the module comment)."""

    capacity: Callable[[], int] = _no_capacity
    """Pixels per second the orchestrators offer (0: unknown, everyone is admitted)."""
    _claims: dict[str, _Claim] = attrs.Factory(dict)
    _order: Iterator[int] = attrs.Factory(itertools.count)

    def join(self, stream: str, identity: str) -> None:
        """``identity`` publishes ``stream`` (it claims nothing until its first segment)."""
        self._claims[stream] = _Claim(identity=identity, order=next(self._order))

    def leave(self, stream: str) -> None:
        """``stream`` ended: its room is free."""
        self._claims.pop(stream, None)

    def held(self, identity: str) -> int:
        """Pixels per second ``identity``'s admitted streams hold."""
        return sum(c.work for c in self._claims.values() if c.admitted and c.identity == identity)

    def admit(self, stream: str, work: int) -> str:
        """Whether ``stream``'s next segment, its ladder costing ``work``, goes out: "" if it
        does, else why not (its publisher is over its share of contended capacity).
        A stream that never joined is always admitted."""
        claim = self._claims.get(stream)
        if claim is None:
            return ""
        claim.work = work
        if claim.admitted:
            return ""
        capacity = self.capacity()
        others = self._admitted_work()
        if capacity <= 0 or others + work <= capacity:
            claim.admitted = True
            return ""
        return self._contend(stream, claim, capacity, others + work - capacity)

    def served(self, stream: str) -> None:
        """A segment of ``stream`` was transcoded: the room it awaited has come."""
        claim = self._claims.get(stream)
        if claim is not None:
            claim.awaits_room = False

    def refused(self, stream: str) -> bool:
        """Every orchestrator answered ``stream``'s segment busy: sheds streams of publishers
        over their share if its own is within its share; True if streams were shed for it,
        now or before (the segment may be tried again while their room comes back), False if
        not (its publisher is over its share, or nobody is)."""
        claim = self._claims.get(stream)
        capacity = self.capacity()
        if claim is None or capacity <= 0:
            return False
        claim.admitted = False
        return not self._contend(stream, claim, capacity, claim.work, from_busy=True)

    def _admitted_work(self) -> int:
        return sum(c.work for c in self._claims.values() if c.admitted)

    def _contend(
        self, stream: str, claim: _Claim, capacity: int, needed: int, *, from_busy: bool = False
    ) -> str:
        """Capacity is short by ``needed``: admits ``claim`` if its publisher stays within
        its share, shedding over-share publishers' newest streams for the room (none needed
        past ``needed``); else sheds it and says why."""
        publishers = {c.identity for c in self._claims.values() if c.admitted}
        publishers.add(claim.identity)
        share = capacity / len(publishers)
        mine = self.held(claim.identity) + claim.work
        if mine > share:
            reason = (
                f"publisher {claim.identity} would hold {work_text(mine)}, over its fair share "
                f"({work_text(share)} of {work_text(capacity)}, {len(publishers)} publishers)"
            )
            if claim.shed != reason:
                log.warning("stream %r: not transcoded: %s", stream, reason)
            claim.shed = reason
            return reason
        shed = self._shed_over_share(share, needed, keep=claim.identity)
        if from_busy and not shed and not claim.awaits_room:
            return "no publisher is over its share"
        claim.admitted, claim.shed = True, ""
        claim.awaits_room = claim.awaits_room or bool(shed)
        return ""

    def _shed_over_share(self, share: float, needed: int, *, keep: str) -> list[str]:
        """Sheds the newest streams of the publishers most over ``share`` until ``needed``
        pixels per second are free or nobody is over; returns the streams shed."""
        shed: list[str] = []
        while needed > 0:
            over = {
                c.identity: self.held(c.identity) - share
                for c in self._claims.values()
                if c.admitted and c.identity != keep
            }
            over = {identity: excess for identity, excess in over.items() if excess > 0}
            if not over:
                break
            identity = max(over, key=lambda i: over[i])
            name, victim = max(
                ((n, c) for n, c in self._claims.items() if c.admitted and c.identity == identity),
                key=lambda item: item[1].order,
            )
            victim.admitted = False
            victim.shed = (
                f"publisher {identity} was over its fair share ({work_text(share)}) when "
                "another publisher needed the room"
            )
            log.warning("stream %r: no longer transcoded: %s", name, victim.shed)
            needed -= victim.work
            shed.append(name)
        return shed
