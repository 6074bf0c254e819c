"""Orchestrator selection: go-livepeer's probabilities, known-fast preference, suspension."""

from __future__ import annotations

import math
import random
from collections import Counter
from fractions import Fraction

import attrs
import pytest

from lpstream.config import HostPort
from lpstream.gateway.selection import Candidate, SelectionWeights, Selector
from lpstream.wire.messages import OrchInfo

ETH = 10**18
CHI_SQUARE_CRITICAL_DF3_P001 = 16.266
"""The chi-square distribution's 99.9th percentile for 3 degrees of freedom."""


def four() -> list[Candidate]:
    return [
        Candidate(key="a:1", stake=1 * ETH, price=Fraction(0)),
        Candidate(key="b:1", stake=2 * ETH, price=Fraction(20)),
        Candidate(key="c:1", stake=4 * ETH, price=Fraction(60)),
        Candidate(key="d:1", stake=8 * ETH, price=Fraction(150)),
    ]


def selector(stake: float, price: float, rand: float, *, seed: int = 1) -> Selector:
    return Selector(SelectionWeights(stake=stake, price=price, random=rand), random.Random(seed))


def chi_square(counts: Counter[str], expected: dict[str, float]) -> float:
    draws = sum(counts.values())
    return sum((counts[key] - draws * p) ** 2 / (draws * p) for key, p in expected.items())


def test_draws_follow_the_probabilities_by_a_chi_square_test() -> None:
    chooser = selector(0.6, 0.3, 0.1, seed=20240601)
    candidates = four()
    expected = chooser.probabilities(candidates)
    draws = 20_000
    counts = Counter(chooser.select(candidates).key for _ in range(draws))  # type: ignore[union-attr]
    assert set(counts) == set(expected)
    assert chi_square(counts, expected) < CHI_SQUARE_CRITICAL_DF3_P001, (counts, expected)
    assert chooser.statistics().selections == draws
    # The test has power: the same draws are far from stake alone or a uniform draw.
    assert chi_square(counts, selector(1, 0, 0).probabilities(candidates)) > 100
    assert chi_square(counts, selector(0, 0, 1).probabilities(candidates)) > 100


def test_probabilities_add_up_to_one_and_mix_the_three_terms() -> None:
    candidates = four()
    p = selector(0.5, 0.3, 0.2).probabilities(candidates)
    exps = [math.exp(-float(c.price) / 100) for c in candidates]
    for candidate, e in zip(candidates, exps, strict=True):
        want = 0.5 * candidate.stake / (15 * ETH) + 0.3 * e / sum(exps) + 0.2 / 4
        assert p[candidate.key] == pytest.approx(want, rel=1e-12)
    assert math.fsum(p.values()) == pytest.approx(1.0, abs=1e-12)


def test_stake_only_weights_are_proportional_to_stake() -> None:
    p = selector(1, 0, 0).probabilities(four())
    assert p == {"a:1": 1 / 15, "b:1": 2 / 15, "c:1": 4 / 15, "d:1": 8 / 15}


def test_random_only_weights_are_uniform() -> None:
    assert set(selector(0, 0, 1).probabilities(four()).values()) == {0.25}


def test_price_only_weights_are_exp_of_minus_price_over_factor_normalised() -> None:
    candidates = four()
    chooser = Selector(SelectionWeights(stake=0, price=1, random=0, price_exp_factor=40.0))
    exps = [math.exp(-float(c.price) / 40.0) for c in candidates]
    p = chooser.probabilities(candidates)
    assert [p[c.key] for c in candidates] == pytest.approx([e / sum(exps) for e in exps])


def test_price_term_survives_prices_that_would_underflow_exp() -> None:
    candidates = [
        Candidate(key="cheap:1", price=Fraction(10**6)),
        Candidate(key="dear:1", price=Fraction(10**6 + 100)),
    ]
    p = selector(0, 1, 0).probabilities(candidates)
    assert p["cheap:1"] / p["dear:1"] == pytest.approx(math.e)


def test_defaults_are_go_livepeers() -> None:
    weights = SelectionWeights()
    assert (weights.stake, weights.price, weights.random) == (0.7, 0.0, 0.3)
    assert weights.price_exp_factor == 100.0


def test_without_stake_the_stake_term_is_dropped_and_the_rest_renormalised() -> None:
    off_chain = [attrs.evolve(c, stake=0) for c in four()]
    assert set(Selector().probabilities(off_chain).values()) == {0.25}
    price_only = selector(0, 1, 0).probabilities(off_chain)
    assert selector(0.5, 0.5, 0).probabilities(off_chain) == pytest.approx(price_only)
    assert set(selector(1, 0, 0).probabilities(off_chain).values()) == {0.25}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stake": -0.1},
        {"stake": 0, "price": 0, "random": 0},
        {"random": math.nan},
        {"price": math.inf},
        {"price_exp_factor": 0},
    ],
)
def test_bad_weights_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SelectionWeights(**kwargs)


def test_a_known_fast_session_is_preferred_to_a_draw() -> None:
    chooser = selector(1, 0, 0)
    candidates = [*four(), Candidate(key="fast:1", stake=0)]
    chooser.record_success("fast:1", round_trip=1.0, segment_duration=2.0)
    chooser.record_success("a:1", round_trip=1.8, segment_duration=2.0)
    assert {chooser.select(candidates) for _ in range(200)} == {candidates[-1]}
    assert chooser.statistics().fast_selections == 200


def test_a_latency_score_of_exactly_one_is_fast_enough() -> None:
    chooser = selector(1, 0, 0)
    candidates = [*four(), Candidate(key="edge:1")]
    chooser.record_success("edge:1", round_trip=2.0, segment_duration=2.0)
    assert chooser.select(candidates) == candidates[-1]


def test_a_known_slow_session_is_not_preferred() -> None:
    chooser = selector(1, 0, 0)
    candidates = four()
    chooser.record_success("d:1", round_trip=3.0, segment_duration=2.0)  # 1.5: slower than live
    picks = Counter(chooser.select(candidates).key for _ in range(500))  # type: ignore[union-attr]
    assert "d:1" not in picks and set(picks) == {"a:1", "b:1", "c:1"}
    # Only when every eligible one is known and slow does the lowest score win.
    chooser.record_success("c:1", round_trip=5.0, segment_duration=2.0)
    assert chooser.select(candidates, exclude={"a:1", "b:1"}) == candidates[3]


def test_a_failure_forgets_the_latency_score() -> None:
    chooser = selector(0, 0, 1)
    chooser.record_success("a:1", round_trip=0.2, segment_duration=2.0)
    assert chooser.statistics().latency_scores == {"a:1": 0.1}
    chooser.record_failure("a:1")
    assert chooser.statistics().latency_scores == {}


def refreshes_until_free(chooser: Selector, key: str) -> int:
    count = 0
    while chooser.suspended(key):
        chooser.refreshed()
        count += 1
    return count


def test_suspension_lasts_its_refreshes_and_grows_with_repeated_failures() -> None:
    chooser = Selector(penalty=1, max_penalty=8)
    assert not chooser.suspended("a:1")
    lengths = []
    for _ in range(5):
        chooser.record_failure("a:1")
        lengths.append(refreshes_until_free(chooser, "a:1"))
    assert lengths == [1, 2, 4, 8, 8]
    chooser.record_success("a:1", round_trip=1.0, segment_duration=2.0)
    chooser.record_failure("a:1")
    assert refreshes_until_free(chooser, "a:1") == 1


def test_failures_while_suspended_add_up() -> None:
    chooser = Selector(penalty=2)
    chooser.record_failure("a:1")  # 2
    chooser.record_failure("a:1")  # + 4
    assert chooser.statistics().suspended == {"a:1": 6}
    assert refreshes_until_free(chooser, "a:1") == 6
    assert chooser.statistics().suspended == {}


def test_suspended_excluded_and_full_candidates_are_never_selected() -> None:
    chooser = selector(0.7, 0, 0.3)
    candidates = [
        *four(),
        Candidate(key="full:1", stake=90 * ETH, capacity=2, in_use=2),
        Candidate(key="unknown-capacity:1", stake=1 * ETH, capacity=0, in_use=5),
    ]
    chooser.record_failure("d:1")
    picks = Counter(
        chooser.select(candidates, exclude={"a:1"}).key  # type: ignore[union-attr]
        for _ in range(2000)
    )
    assert set(picks) == {"b:1", "c:1", "unknown-capacity:1"}
    assert chooser.select(candidates, exclude={"a:1", "b:1", "c:1", "unknown-capacity:1"}) is None
    assert chooser.select([]) is None


def test_a_suspended_fast_session_is_passed_over() -> None:
    chooser = selector(1, 0, 0)
    chooser.record_success("d:1", round_trip=0.1, segment_duration=2.0)
    chooser.record_failure("d:1")
    chooser.record_success("d:1", round_trip=0.1, segment_duration=2.0)
    assert chooser.suspended("d:1")
    assert all(chooser.select(four()).key != "d:1" for _ in range(200))  # type: ignore[union-attr]
    chooser.refreshed()
    assert chooser.select(four()).key == "d:1"  # type: ignore[union-attr]


def test_min_score_leaves_out_low_scores_unless_none_passes() -> None:
    chooser = Selector(SelectionWeights(stake=0, random=1), random.Random(3), min_score=0.5)
    good = Candidate(key="good:1", score=0.9)
    low = Candidate(key="low:1", score=0.1)
    unscored = Candidate(key="unscored:1")
    assert {chooser.select([good, low, unscored]) for _ in range(200)} == {good}
    assert {chooser.select([low, unscored]) for _ in range(200)} == {low, unscored}


def test_record_success_refuses_nonsense() -> None:
    chooser = Selector()
    with pytest.raises(ValueError):
        chooser.record_success("a:1", round_trip=1.0, segment_duration=0.0)
    with pytest.raises(ValueError):
        chooser.record_success("a:1", round_trip=-1.0, segment_duration=2.0)


def test_retain_forgets_gone_orchestrators_but_not_their_suspension() -> None:
    chooser = Selector()
    chooser.record_success("a:1", round_trip=1.0, segment_duration=2.0)
    chooser.record_success("b:1", round_trip=1.0, segment_duration=2.0)
    chooser.record_failure("c:1")
    chooser.retain(["b:1"])
    assert chooser.statistics().latency_scores == {"b:1": 0.5}
    assert chooser.suspended("c:1")


def test_statistics_are_a_frozen_snapshot() -> None:
    chooser = Selector()
    chooser.record_failure("a:1")
    stats = chooser.statistics()
    chooser.refreshed()
    assert stats.suspended == {"a:1": 1} and stats.failures == 1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.failures = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.suspended["b:1"] = 1  # type: ignore[index]


def test_candidate_from_orch_info() -> None:
    info = OrchInfo(version="1", price_per_unit=3, pixels_per_unit=4, capacity=8, in_use=2)
    candidate = Candidate.from_info(HostPort("10.0.0.1", 8936), info, stake=5, score=0.5)
    assert candidate == Candidate(
        key="10.0.0.1:8936", stake=5, price=Fraction(3, 4), score=0.5, capacity=8, in_use=2
    )
