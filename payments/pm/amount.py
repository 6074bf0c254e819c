"""Amounts and prices as a status page shows them.

The ledger keeps exact rationals (a ticket's EV is face value x win probability, rarely a whole
number of wei). A person reads whole wei and ETH: ``Wei`` carries the exact amount for code that
checks sums, and the figures for people follow one rule, stated here once — whole wei are the
exact amount rounded down (floor, also below zero), the ETH figure is the exact amount rounded to
the nearest gwei (9 decimals).
"""

from __future__ import annotations

import math
from fractions import Fraction

import attrs

__all__ = ["ETH_DECIMALS", "WEI_PER_ETH", "PixelPrice", "Wei"]

WEI_PER_ETH = 10**18
ETH_DECIMALS = 9
"""Decimals of the ETH figure for people: to the gwei."""


@attrs.frozen
class Wei:
    """An amount of wei: exact inside, whole wei and rounded ETH for people."""

    exact: Fraction = attrs.field(converter=Fraction)
    """The amount as the ledger holds it."""

    @property
    def whole(self) -> int:
        """Whole wei, rounded down (floor)."""
        return math.floor(self.exact)

    @property
    def eth(self) -> float:
        """ETH rounded to the gwei, for people (not for sums)."""
        return round(float(self.exact / WEI_PER_ETH), ETH_DECIMALS) + 0.0  # + 0.0: never -0.0


@attrs.frozen(kw_only=True)
class PixelPrice:
    """A price of ``wei`` wei per ``pixels`` pixels, in lowest terms; exact."""

    wei: int
    """Wei per ``pixels`` pixels."""
    pixels: int
    """Pixels that cost ``wei``; 1 for a whole number of wei per pixel."""

    @classmethod
    def from_fraction(cls, per_pixel: Fraction | int) -> PixelPrice:
        """The price of a ``per_pixel`` wei per pixel."""
        price = Fraction(per_pixel)
        return cls(wei=price.numerator, pixels=price.denominator)

    @property
    def per_pixel(self) -> Fraction:
        """Wei per pixel, exact."""
        return Fraction(self.wei, self.pixels)
