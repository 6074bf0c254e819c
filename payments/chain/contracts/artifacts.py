"""The committed compiled artifacts (``build/<Name>.json``), read without a compiler."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import attrs

__all__ = ["CONTRACT_NAMES", "Artifact", "load_artifact"]

CONTRACT_NAMES = (
    "Controller",
    "Minter",
    "RoundsManager",
    "BondingManager",
    "TicketBroker",
    "ServiceRegistry",
)
"""Every contract, in deployment order; also the names they are registered under."""

_BUILD_DIR = Path(__file__).resolve().parent / "build"


@attrs.frozen(kw_only=True)
class Artifact:
    """One compiled contract, as ``build.py`` wrote it."""

    name: str
    """The contract's name (its source file's stem)."""
    abi: list[dict[str, Any]] = attrs.field(eq=False)
    """The JSON ABI, as web3 takes it."""
    bytecode: str
    """Deployment bytecode, ``0x``-prefixed hex."""
    compiler: str
    """The compiler that made it, e.g. ``vyper-0.4.3``."""
    source_sha256: str
    """SHA-256 (hex) of the source it was compiled from."""


@functools.cache
def load_artifact(name: str) -> Artifact:
    """The committed artifact of contract ``name`` (e.g. ``"TicketBroker"``).

    Raises:
        KeyError: no contract has that name.
    """
    if name not in CONTRACT_NAMES:
        raise KeyError(f"no contract named {name!r}; have {', '.join(CONTRACT_NAMES)}")
    data = json.loads((_BUILD_DIR / f"{name}.json").read_text())
    return Artifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=data["bytecode"],
        compiler=data["compiler"],
        source_sha256=data["sourceSha256"],
    )
