"""attrs validators shared by the value classes."""

from __future__ import annotations

from fractions import Fraction

import attrs

from .crypto import to_checksum_address

_UINT256 = 2**256


def checksummed(value: str) -> str:
    """An address given as ``0x`` and 40 hex digits in any case, in its EIP-55 form."""
    return to_checksum_address(value)


def check_uint256(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    """An int in [0, 2^256)."""
    if not 0 <= value < _UINT256:
        raise ValueError(f"{attribute.name} must be a uint256, not {value}")


def check_hash(_instance: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    """Exactly 32 bytes."""
    if len(value) != 32:
        raise ValueError(f"{attribute.name} must be 32 bytes, not {len(value)}")


def check_price(_instance: object, attribute: attrs.Attribute[Fraction], value: Fraction) -> None:
    """A non-negative Fraction."""
    if not isinstance(value, Fraction) or value.numerator < 0:
        raise ValueError(f"{attribute.name} must be a non-negative Fraction, not {value!r}")
