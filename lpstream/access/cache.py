"""Decisions remembered for a short time, so a hook or a signature check is not asked again
for every request (an HLS player asks several times a second).

Sans-IO: every call takes ``now`` (the caller's clock). Entries live ``ttl`` seconds (or less,
where one is put with its own), at most ``max_entries`` of them; past that the oldest goes
first, so a client sending a new token each time costs a bounded amount of memory. Keys made
of what a client sends (a token, a stream name: as long as a request's head allows, tens of
KB) are remembered by :func:`decision_key`, a digest of fixed size, never as they came.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

import attrs

__all__ = ["DEFAULT_MAX_ENTRIES", "DecisionCache", "decision_key"]

DEFAULT_MAX_ENTRIES = 10_000
"""Decisions remembered at most."""

K = TypeVar("K", bound=Hashable)


def decision_key(*parts: str | None) -> bytes:
    """The cache key of a decision on ``parts`` (stream, protocol, token...): 32 bytes, however
    long the parts; distinct parts give distinct keys (each part is length-prefixed)."""
    digest = hashlib.sha256()
    for part in parts:
        data = b"" if part is None else part.encode("utf-8", "surrogatepass")
        size = -1 if part is None else len(data)
        digest.update(size.to_bytes(8, "big", signed=True) + data)
    return digest.digest()


V = TypeVar("V")


@attrs.define
class DecisionCache(Generic[K, V]):
    """``key`` -> value until it expires (see the module comment)."""

    ttl: float
    """Seconds an entry lives; 0 remembers nothing."""
    max_entries: int = DEFAULT_MAX_ENTRIES
    """Entries kept at most."""
    _entries: OrderedDict[K, tuple[float, V]] = attrs.field(init=False, factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, *, now: float) -> V | None:
        """The value put for ``key``, unless it expired by ``now``."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V, *, now: float, ttl: float | None = None) -> None:
        """Remembers ``value`` for ``key`` for ``ttl`` seconds (the cache's, or less)."""
        lifetime = self.ttl if ttl is None else min(ttl, self.ttl)
        self._entries.pop(key, None)
        self._forget_expired(now)
        if lifetime <= 0:
            return
        self._entries[key] = (now + lifetime, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _forget_expired(self, now: float) -> None:
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[key]
