"""How fast one address may guess the orchestrator's worker secret: ``HelloBackoff``.

How this works
--------------
Sans-IO: every call takes ``now`` (the driver passes ``trio.current_time()``). Addresses are
counted by source: an IPv4 address, or the /64 an IPv6 address is in (one host commonly holds
a whole /64, so counting single IPv6 addresses would count nothing).

* A wrong secret from an address is *refused*: the n-th refusal in a row is answered after
  ``first_delay * 2**(n-1)`` seconds, at most ``max_delay``, and until that answer is due the
  address is *backing off*.
* A hello from an address that is backing off is not read at all: it is refused at once
  without its secret being compared. So an address learns whether a guess was right at most
  once per delay, however many connections it opens; the answers it gets meanwhile say only
  "retry later".
* A right secret clears the address. An address that stays quiet for ``max_delay`` after its
  last delay ran out starts again from ``first_delay``.

Memory is bounded: at most ``max_addresses`` addresses are remembered; past that, those quiet
longest are forgotten first (an attacker who cycles through more addresses than that gains a
fresh first delay on each, which is the price of a bounded table).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

import attrs

__all__ = [
    "DEFAULT_FIRST_DELAY",
    "MAX_DELAY",
    "MAX_TRACKED_ADDRESSES",
    "HelloBackoff",
    "HelloBackoffStatistics",
    "source_of",
]

DEFAULT_FIRST_DELAY = 1.0
"""Seconds before an address's first wrong secret is answered (``--worker-hello-backoff``)."""
MAX_DELAY = 60.0
"""The longest delay: reached after seven wrong secrets in a row at the default."""
MAX_TRACKED_ADDRESSES = 4096
"""Addresses remembered at once."""


def source_of(host: str) -> str:
    """The key an address is counted under: the IPv4 address, or the IPv6 address's /64
    (an IPv4-mapped IPv6 address counts as its IPv4 address; a name counts as itself)."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@attrs.define
class _Source:
    refusals: int
    """Wrong secrets in a row."""
    until: float
    """When the last one's back-off ends."""


@attrs.frozen(kw_only=True)
class HelloBackoffStatistics:
    """What the back-off did."""

    refused: int
    """Wrong secrets answered (after their delay)."""
    turned_away: int
    """Hellos refused unread while their address was backing off."""
    addresses: int
    """Addresses remembered now."""


@attrs.define
class HelloBackoff:
    """Per-address exponential back-off for wrong worker secrets (module comment)."""

    first_delay: float = DEFAULT_FIRST_DELAY
    """Seconds before the first wrong secret is answered; 0 turns the back-off off."""
    max_delay: float = MAX_DELAY
    """The longest delay."""
    max_addresses: int = MAX_TRACKED_ADDRESSES
    """Addresses remembered at once."""
    _sources: OrderedDict[str, _Source] = attrs.Factory(OrderedDict)
    _refused: int = 0
    _turned_away: int = 0

    def wait_time(self, host: str, now: float) -> float:
        """Seconds until a hello from ``host`` may be read; 0 if it may be now.

        A positive answer counts the hello as turned away: the caller refuses it unread.
        """
        source = self._sources.get(source_of(host))
        if source is None or now >= source.until:
            return 0.0
        self._turned_away += 1
        return source.until - now

    def refuse(self, host: str, now: float) -> float:
        """Records a wrong secret from ``host``; returns the seconds to wait before answering
        it (``host`` backs off until then)."""
        self._refused += 1
        if self.first_delay <= 0:
            return 0.0
        key = source_of(host)
        source = self._sources.pop(key, None)
        if source is None or now >= source.until + self.max_delay:
            source = _Source(refusals=0, until=now)
        delay = min(self.max_delay, self.first_delay * 2**source.refusals)
        if delay < self.max_delay:
            source.refusals += 1  # stops counting once the delay is at its cap
        source.until = max(now, source.until) + delay
        self._sources[key] = source  # the most recent last: the oldest are forgotten first
        self._forget(now)
        return source.until - now

    def accept(self, host: str) -> None:
        """A right secret from ``host``: it starts again from ``first_delay``."""
        self._sources.pop(source_of(host), None)

    def statistics(self) -> HelloBackoffStatistics:
        """What the back-off did so far."""
        return HelloBackoffStatistics(
            refused=self._refused, turned_away=self._turned_away, addresses=len(self._sources)
        )

    def _forget(self, now: float) -> None:
        """Drops addresses that would start afresh anyway, then the oldest past the bound."""
        for key in [k for k, s in self._sources.items() if now >= s.until + self.max_delay]:
            del self._sources[key]
        while len(self._sources) > self.max_addresses:
            self._sources.popitem(last=False)
