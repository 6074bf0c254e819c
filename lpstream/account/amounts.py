"""Amounts of ether on the command line: ``1.5eth``, ``2gwei``, ``100wei`` in, ``1.5 ETH`` out."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import click

__all__ = ["PERC_DIVISOR", "format_wei", "parse_wei", "percent_to_ppm", "wei_argument"]

_UNITS = {"wei": 0, "gwei": 9, "eth": 18, "ether": 18}
_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
PERC_DIVISOR = 1_000_000
"""The BondingManager's unit for rewardCut and feeShare: parts per million."""


def parse_wei(text: str) -> int:
    """Wei from ``"1000"`` (wei), ``"1.5eth"``, ``"2 gwei"``, ``"7wei"``.

    Raises:
        ValueError: not a non-negative whole number of wei.
    """
    match = _AMOUNT.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an amount: use wei, or a number with eth/gwei/wei")
    number, unit = match.group(1), match.group(2).lower() or "wei"
    if unit not in _UNITS:
        raise ValueError(f"{text!r}: unknown unit {unit!r} (use eth, gwei or wei)")
    try:
        value = Decimal(number).scaleb(_UNITS[unit])
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"{text!r} is not an amount") from None
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of wei")
    return int(value)


def format_wei(wei: int) -> str:
    """``1.5 ETH`` for 1500000000000000000; exact, with no trailing zeros."""
    text = f"{Decimal(wei).scaleb(-18):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} ETH"


def wei_argument(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A click callback: the amount in wei (see :func:`parse_wei`)."""
    if value is None or isinstance(value, int):
        return value
    try:
        return parse_wei(str(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def percent_to_ppm(ctx: click.Context, param: click.Parameter, value: float | None) -> int | None:
    """A click callback: a percentage as parts per million (the contracts' unit)."""
    if value is None:
        return None
    if not 0 <= value <= 100:
        raise click.BadParameter("a percentage from 0 to 100")
    return round(value * PERC_DIVISOR / 100)
