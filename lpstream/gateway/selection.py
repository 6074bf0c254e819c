"""Which orchestrator gets the next segment: go-livepeer's selection rules, without I/O.

How this works (after go-livepeer's ``server/selection.go`` and
``server/selection_algorithm.go``):

1. Eligible candidates: not excluded by the caller, not suspended, not full
   (``in_use >= capacity`` where the capacity is known, > 0). With ``min_score`` > 0 the
   candidates whose webhook score is below it are left out too, unless that would leave
   none (go-livepeer's ``MinPerfScore`` filter; an unknown score counts as 0, as there).
2. Known and fast first (go-livepeer's ``MinLSSelector``): each successful segment records a
   latency score, ``round_trip / segment_duration`` (the last one counts, as a go-livepeer
   session carries the score of its last segment). If any eligible candidate has a score at
   or under ``latency_threshold`` (1.0: it answers faster than real time), the lowest wins.
3. Otherwise a draw by probability among the candidates with no score yet (go-livepeer's
   ``selectUnknownSession``); only when every eligible candidate is known and slow does the
   lowest score win, as ``MinLSSelector`` pops the best known session when no unknown one is
   left.

The probability of candidate *i* among *n* (``ProbabilitySelectionAlgorithm``)::

    p_i = (w_stake * stake_i / sum(stake)
           + w_price * exp(-price_i / f) / sum_j exp(-price_j / f)
           + w_random / n) / (w_stake + w_price + w_random)

with ``price`` in wei per pixel and ``f`` = ``price_exp_factor`` (go-livepeer's
``-selectPriceExpFactor``, default 100). Two differences from go-livepeer, both documented
where they happen: the weights are divided by their sum (go-livepeer assumes they add up to
1), and when the total stake is 0 (off-chain) the stake term is dropped and the other weights
renormalised (go-livepeer gives every candidate a stake share of 1 there, so the shares no
longer add up to 1). The price term is computed as ``exp(-(price_i - min_price) / f)``, the
same ratio without underflow when prices are large next to ``f``.

Suspension (go-livepeer's ``suspender``) is counted in discovery refreshes, not seconds: the
pool calls ``refreshed()`` after each refresh. A failure adds ``penalty * 2**(strikes - 1)``
refreshes to what remains of the suspension (capped at ``max_penalty``), where ``strikes``
counts the failures since the orchestrator's last success: go-livepeer adds each penalty to
the remaining count; the doubling makes an orchestrator that keeps failing wait longer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from fractions import Fraction
from types import MappingProxyType

import attrs

from lpstream.config import HostPort
from lpstream.wire.messages import OrchInfo

__all__ = [
    "DEFAULT_PRICE_EXP_FACTOR",
    "LATENCY_SCORE_THRESHOLD",
    "Candidate",
    "SelectionWeights",
    "Selector",
    "SelectorStatistics",
]

DEFAULT_PRICE_EXP_FACTOR = 100.0
"""go-livepeer's ``-selectPriceExpFactor`` default: how much a price step of one wei per pixel
matters (``exp(-price / factor)``)."""

LATENCY_SCORE_THRESHOLD = 1.0
"""go-livepeer's ``SELECTOR_LATENCY_SCORE_THRESHOLD``: a known session at or under it (faster
than real time) is preferred to a draw."""


@attrs.frozen(kw_only=True)
class Candidate:
    """An orchestrator that could take the next segment."""

    key: str
    """The orchestrator's service address as text (``str(HostPort)``); unique."""
    stake: int = 0
    """Its total stake in wei; 0 off-chain."""
    price: Fraction = Fraction(0)
    """Its price in wei per pixel."""
    score: float | None = None
    """A discovery webhook's score for it, if one gave one."""
    capacity: int = 0
    """Concurrent jobs it takes; 0 if unknown."""
    in_use: int = 0
    """Jobs it runs now."""

    @classmethod
    def from_info(
        cls, address: HostPort, info: OrchInfo, *, stake: int = 0, score: float | None = None
    ) -> Candidate:
        """A candidate from an orchestrator's ORCH_INFO (price = price_per_unit / pixels)."""
        return cls(
            key=str(address),
            stake=stake,
            price=Fraction(info.price_per_unit, max(info.pixels_per_unit, 1)),
            score=score,
            capacity=info.capacity,
            in_use=info.in_use,
        )

    @property
    def full(self) -> bool:
        """Whether it reported a capacity and uses all of it."""
        return self.capacity > 0 and self.in_use >= self.capacity


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, not {value!r}")


@attrs.frozen(kw_only=True)
class SelectionWeights:
    """How much stake, price and chance count (go-livepeer's ``-selectStakeWeight``,
    ``-selectPriceWeight``, ``-selectRandWeight``; defaults 0.7 / 0 / 0.3)."""

    stake: float = attrs.field(default=0.7, validator=_non_negative)
    """Weight of the stake share."""
    price: float = attrs.field(default=0.0, validator=_non_negative)
    """Weight of the price share, ``exp(-price / price_exp_factor)`` normalised."""
    random: float = attrs.field(default=0.3, validator=_non_negative)
    """Weight of the uniform share, ``1 / n``."""
    price_exp_factor: float = attrs.field(default=DEFAULT_PRICE_EXP_FACTOR)
    """Wei per pixel over which a price difference makes a candidate e times less likely."""

    @price_exp_factor.validator
    def _check_factor(self, attribute: attrs.Attribute[float], value: float) -> None:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"price_exp_factor must be a finite number > 0, not {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.stake + self.price + self.random <= 0:
            raise ValueError("selection weights: at least one of stake, price, random must be > 0")


@attrs.frozen(kw_only=True)
class SelectorStatistics:
    """A snapshot of a ``Selector``'s state."""

    selections: int
    """Candidates returned by ``select()``."""
    fast_selections: int
    """Of those, the ones picked as known and fast (no draw)."""
    successes: int
    """Calls to ``record_success()``."""
    failures: int
    """Calls to ``record_failure()``."""
    suspended: Mapping[str, int]
    """Suspended keys and the refreshes left of their suspension."""
    latency_scores: Mapping[str, float]
    """The last latency score (round trip / segment duration) of each known key."""


@attrs.define
class Selector:
    """Picks orchestrators; remembers latency scores and suspensions (see the module notes).

    Not thread-safe; the gateway calls it from the trio thread only.
    """

    weights: SelectionWeights = attrs.Factory(SelectionWeights)
    rng: random.Random = attrs.Factory(random.Random)
    """The draws' source of randomness (seed it in tests)."""
    penalty: int = attrs.field(default=1, kw_only=True)
    """Refreshes a first failure suspends for (go-livepeer: pool size / orchestrators per
    stream, which is 1 for small pools)."""
    max_penalty: int = attrs.field(default=32, kw_only=True)
    """The longest suspension, in refreshes."""
    min_score: float = attrs.field(default=0.0, kw_only=True)
    """Leave out candidates whose webhook score is below this (0: no filter)."""
    latency_threshold: float = attrs.field(default=LATENCY_SCORE_THRESHOLD, kw_only=True)
    """A known candidate at or under this latency score is preferred to a draw."""
    _latency: dict[str, float] = attrs.field(init=False, factory=dict)
    _strikes: dict[str, int] = attrs.field(init=False, factory=dict)
    _suspended: dict[str, int] = attrs.field(init=False, factory=dict)
    _selections: int = attrs.field(init=False, default=0)
    _fast_selections: int = attrs.field(init=False, default=0)
    _successes: int = attrs.field(init=False, default=0)
    _failures: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.penalty <= self.max_penalty:
            raise ValueError(
                f"need 1 <= penalty <= max_penalty, not {self.penalty} and {self.max_penalty}"
            )
        if not self.latency_threshold > 0:
            raise ValueError(f"latency_threshold must be > 0, not {self.latency_threshold}")

    def probabilities(self, candidates: Sequence[Candidate]) -> dict[str, float]:
        """Each candidate's chance in a draw among exactly these candidates (sums to 1)."""
        n = len(candidates)
        if n == 0:
            return {}
        w = self.weights
        total_stake = sum(max(c.stake, 0) for c in candidates)
        # Off-chain (no stake anywhere) the stake term has nothing to say: drop it and let the
        # other weights share the whole; if it was the only weight, the draw is uniform.
        w_stake = w.stake if total_stake > 0 else 0.0
        w_price, w_random = w.price, w.random
        total_weight = w_stake + w_price + w_random
        if total_weight <= 0:
            w_random, total_weight = 1.0, 1.0
        if w_price > 0:
            # exp(-p_i/f) / sum_j exp(-p_j/f), shifted by the lowest price: same ratio, and
            # the best price always weighs exp(0) = 1, so the sum never underflows to 0.
            lowest = min(c.price for c in candidates)
            factors = [math.exp(-float(c.price - lowest) / w.price_exp_factor) for c in candidates]
            price_sum = math.fsum(factors)
        else:
            factors, price_sum = [0.0] * n, 1.0
        result: dict[str, float] = {}
        for candidate, factor in zip(candidates, factors, strict=True):
            stake_share = max(candidate.stake, 0) / total_stake if total_stake > 0 else 0.0
            result[candidate.key] = (
                w_stake * stake_share + w_price * factor / price_sum + w_random / n
            ) / total_weight
        return result

    def select(
        self, candidates: Sequence[Candidate], *, exclude: Collection[str] = frozenset()
    ) -> Candidate | None:
        """The candidate for the next segment, or None if none is eligible."""
        eligible = [
            c
            for c in candidates
            if c.key not in exclude and c.key not in self._suspended and not c.full
        ]
        if self.min_score > 0:
            scored = [c for c in eligible if (c.score or 0.0) >= self.min_score]
            eligible = scored or eligible  # none passes: the scores say nothing (go-livepeer)
        if not eligible:
            return None
        known = [c for c in eligible if c.key in self._latency]
        best = min(known, key=lambda c: self._latency[c.key], default=None)
        chosen: Candidate | None
        if best is not None and self._latency[best.key] <= self.latency_threshold:
            self._fast_selections += 1
            chosen = best
        else:
            unknown = [c for c in eligible if c.key not in self._latency]
            chosen = self._draw(unknown) if unknown else best
        if chosen is not None:
            self._selections += 1
        return chosen

    def _draw(self, candidates: Sequence[Candidate]) -> Candidate:
        probabilities = self.probabilities(candidates)
        point = self.rng.random()  # in [0, 1); the shares add up to 1 within rounding
        cumulative = 0.0
        for candidate in candidates:
            cumulative += probabilities[candidate.key]
            if point < cumulative:
                return candidate
        # Rounding left the sum a hair under `point`: the last one with any chance.
        return next(c for c in reversed(candidates) if probabilities[c.key] > 0)

    def record_success(self, key: str, round_trip: float, segment_duration: float) -> None:
        """A segment came back from ``key`` ``round_trip`` seconds after it was sent.

        Its latency score becomes ``round_trip / segment_duration``, and its strikes are
        forgotten (a later failure is a first one again).
        """
        if not (math.isfinite(round_trip) and round_trip >= 0):
            raise ValueError(f"round_trip must be a finite number >= 0, not {round_trip!r}")
        if not (math.isfinite(segment_duration) and segment_duration > 0):
            raise ValueError(f"segment_duration must be > 0, not {segment_duration!r}")
        self._successes += 1
        self._latency[key] = round_trip / segment_duration
        self._strikes.pop(key, None)

    def record_failure(self, key: str) -> None:
        """A job on ``key`` failed on its side: suspend it and forget its latency score."""
        self._failures += 1
        strikes = self._strikes.get(key, 0) + 1
        self._strikes[key] = strikes
        # 2**(strikes-1) grows without bound; stop doubling once past the cap.
        doubling = 2 ** min(strikes - 1, self.max_penalty.bit_length())
        penalty = min(self.penalty * doubling, self.max_penalty)
        self._suspended[key] = min(self._suspended.get(key, 0) + penalty, self.max_penalty)
        self._latency.pop(key, None)

    def suspended(self, key: str) -> bool:
        """Whether ``key`` is passed over until more refreshes have happened."""
        return key in self._suspended

    def refreshed(self) -> None:
        """The pool refreshed its orchestrators: every suspension is one refresh shorter."""
        self._suspended = {key: left - 1 for key, left in self._suspended.items() if left > 1}

    def retain(self, keys: Iterable[str]) -> None:
        """Forgets the latency scores and strikes of orchestrators no longer discovered.

        Suspensions run their course, so one cannot escape its suspension by leaving the
        discovery list for a refresh.
        """
        kept = set(keys) | self._suspended.keys()
        self._latency = {k: v for k, v in self._latency.items() if k in kept}
        self._strikes = {k: v for k, v in self._strikes.items() if k in kept}

    def statistics(self) -> SelectorStatistics:
        return SelectorStatistics(
            selections=self._selections,
            fast_selections=self._fast_selections,
            successes=self._successes,
            failures=self._failures,
            suspended=MappingProxyType(dict(self._suspended)),
            latency_scores=MappingProxyType(dict(self._latency)),
        )
