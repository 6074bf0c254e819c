"""Money as a status page shows it: whole wei rounded down, ETH to the gwei, prices exact."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from payments.pm import WEI_PER_ETH, PixelPrice, Wei

amounts = st.fractions(min_value=-(10**30), max_value=10**30, max_denominator=2**256 - 1)


@given(amounts)
def test_whole_wei_is_the_amount_rounded_down(amount: Fraction) -> None:
    whole = Wei(amount).whole
    assert isinstance(whole, int)
    assert whole <= amount < whole + 1


@given(amounts)
def test_the_eth_figure_is_the_amount_to_the_gwei(amount: Fraction) -> None:
    eth = amount / WEI_PER_ETH
    # Half a gwei of rounding, plus a float's precision (coarser than a gwei past millions).
    tolerance = Fraction(1, 2 * 10**9) + abs(eth) / 2**51
    assert abs(Fraction(Wei(amount).eth) - eth) <= tolerance


@given(st.lists(amounts, min_size=1, max_size=50))
def test_a_sum_of_whole_wei_is_at_most_n_minus_one_below_the_whole_sum(
    parts: list[Fraction],
) -> None:
    # The rule the end-to-end tests use to compare the two sides' ledgers from /api/status.
    shortfall = Wei(sum(parts, Fraction(0))).whole - sum(Wei(p).whole for p in parts)
    assert 0 <= shortfall <= len(parts) - 1


def test_whole_wei_keeps_every_digit_past_2_to_the_53() -> None:
    amount = 1000 * WEI_PER_ETH + 1
    assert amount > 2**53
    assert Wei(amount).whole == amount and Wei(amount).eth == 1000.0


def test_an_amount_below_zero_rounds_down_too() -> None:
    assert Wei(Fraction(-1, 2)).whole == -1
    assert Wei(Fraction(-3)).whole == -3


def test_equal_amounts_are_equal_however_written() -> None:
    assert Wei(Fraction(6, 4)) == Wei(Fraction(3, 2)) and Wei(2) == Wei(Fraction(4, 2))


@given(st.fractions(min_value=Fraction(1, 10**6), max_value=10**12, max_denominator=10**9))
def test_a_price_is_exact(per_pixel: Fraction) -> None:
    price = PixelPrice.from_fraction(per_pixel)
    assert price.per_pixel == per_pixel
    assert math.gcd(price.wei, price.pixels) == 1 and price.pixels >= 1
