"""Who owns a stream name: its publisher keeps it while live and for a grace period after.

How this works (sans-IO: every call takes ``now``):

* :meth:`NameRegistry.claim` when a publish of a name is accepted, :meth:`NameRegistry.release`
  when it ends. From the release on, for ``grace`` seconds, only the same identity may claim
  the name again (:meth:`NameRegistry.may_publish`); after that it is free, and forgotten.
  Viewers on the name's URLs so never switch to someone else's picture when a publisher
  drops and comes back.
* While a name is live, another identity may not claim it either (the gateway refuses a
  second publisher of a live name anyway).
* Only with publish authorization on (``enforced``): without it every publisher is only its
  address, which proves nothing, and names are first come, first served as before.
* Memory is bounded by the live names plus the names released within ``grace``: released
  names are kept in release order and forgotten from the oldest on.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

__all__ = ["DEFAULT_NAME_GRACE", "NameRegistry"]

DEFAULT_NAME_GRACE = 30.0
"""Seconds a dropped publisher keeps its stream name (``--name-grace``)."""


@attrs.define
class NameRegistry:
    """Stream names and their owners (see the module comment)."""

    enforced: bool
    """Whether ownership is kept (publish authorization is on)."""
    grace: float = DEFAULT_NAME_GRACE
    """Seconds a released name stays its owner's."""
    _live: dict[str, str] = attrs.field(init=False, factory=dict)
    _released: OrderedDict[str, tuple[str, float]] = attrs.field(init=False, factory=OrderedDict)

    def __len__(self) -> int:
        """Names held now: live, or released and not yet forgotten."""
        return len(self._live) + len(self._released)

    def owner(self, name: str, *, now: float) -> str | None:
        """Who owns ``name`` now: its live publisher, or the last one within the grace."""
        self._forget_expired(now)
        if name in self._live:
            return self._live[name]
        released = self._released.get(name)
        return None if released is None else released[0]

    def held_for(self, name: str, *, now: float) -> float | None:
        """Seconds ``name`` stays its dropped publisher's; None when it is live or free."""
        self._forget_expired(now)
        released = self._released.get(name)
        return None if released is None else released[1] - now

    def may_publish(self, name: str, identity: str, *, now: float) -> bool:
        """Whether ``identity`` may publish ``name`` now."""
        if not self.enforced:
            return True
        owner = self.owner(name, now=now)
        return owner is None or owner == identity

    def claim(self, name: str, identity: str, *, now: float) -> bool:
        """Takes ``name`` for ``identity`` if it may publish it (:meth:`may_publish`);
        returns whether it did."""
        if not self.may_publish(name, identity, now=now):
            return False
        if self.enforced:
            self._released.pop(name, None)
            self._live[name] = identity
        return True

    def release(self, name: str, identity: str, *, now: float) -> None:
        """``identity``'s publish of ``name`` ended: the grace starts."""
        if self._live.get(name) != identity:
            return
        del self._live[name]
        if self.grace > 0:
            self._released[name] = (identity, now + self.grace)

    def _forget_expired(self, now: float) -> None:
        while self._released:
            name, (_, until) = next(iter(self._released.items()))
            if until > now:
                return
            del self._released[name]
