"""Name ownership with grace and the decision cache, both sans-IO: every call takes ``now``."""

from __future__ import annotations

from lpstream.access import DEFAULT_NAME_GRACE, DecisionCache, NameRegistry

OWNER, STRANGER = "key:aaaaaaaaaaaa", "key:bbbbbbbbbbbb"


def test_a_dropped_publisher_keeps_its_name_for_the_grace_period() -> None:
    names = NameRegistry(enforced=True, grace=30)
    assert names.claim("cam", OWNER, now=100)
    assert not names.may_publish("cam", STRANGER, now=110)  # live: someone else's
    names.release("cam", OWNER, now=120)
    assert names.owner("cam", now=120) == OWNER
    assert not names.may_publish("cam", STRANGER, now=149.9)
    assert not names.claim("cam", STRANGER, now=149.9)
    assert names.may_publish("cam", OWNER, now=149.9)
    assert names.may_publish("cam", STRANGER, now=150)  # the grace is over
    assert names.owner("cam", now=150) is None


def test_the_owner_comes_back_within_the_grace_and_keeps_it_again() -> None:
    names = NameRegistry(enforced=True, grace=30)
    names.claim("cam", OWNER, now=0)
    names.release("cam", OWNER, now=10)
    assert names.claim("cam", OWNER, now=20)
    names.release("cam", OWNER, now=50)
    assert not names.may_publish("cam", STRANGER, now=79)  # a fresh grace from 50


def test_a_release_by_someone_else_changes_nothing() -> None:
    names = NameRegistry(enforced=True)
    names.claim("cam", OWNER, now=0)
    names.release("cam", STRANGER, now=1)
    assert names.owner("cam", now=2) == OWNER


def test_without_grace_a_name_is_free_once_released() -> None:
    names = NameRegistry(enforced=True, grace=0)
    names.claim("cam", OWNER, now=0)
    names.release("cam", OWNER, now=1)
    assert names.claim("cam", STRANGER, now=1)
    assert DEFAULT_NAME_GRACE == 30


def test_released_names_are_forgotten_after_their_grace() -> None:
    names = NameRegistry(enforced=True, grace=5)
    for i in range(1000):
        names.claim(f"s{i}", OWNER, now=i)
        names.release(f"s{i}", OWNER, now=i)
    names.owner("any", now=2000)
    assert len(names) == 0


def test_decisions_expire_and_the_cache_stays_bounded() -> None:
    cache: DecisionCache[str, str] = DecisionCache(ttl=10, max_entries=3)
    cache.put("a", "yes", now=0)
    assert cache.get("a", now=9.9) == "yes"
    assert cache.get("a", now=10) is None
    cache.put("b", "no", now=20, ttl=2)  # its own, shorter life
    assert cache.get("b", now=21) == "no" and cache.get("b", now=22) is None
    for key in "cdef":
        cache.put(key, key, now=30)
    assert len(cache) == 3 and cache.get("c", now=30) is None  # the oldest went first
    cache.put("g", "x", now=50, ttl=0)
    assert cache.get("g", now=50) is None
    assert len(DecisionCache[str, str](ttl=0)) == 0
