"""Reading money from /api/status (README, "Status"): whole wei as strings, rounded down."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

FRACTION = re.compile(r"^-?\d+/\d+$")
"""An exact rational as ``str(Fraction)`` writes it: what /api/status must never show."""


def wei(amount: Mapping[str, Any]) -> int:
    """The whole wei of a money figure (``{"wei": "123", "eth": 1.23e-16}``)."""
    return int(amount["wei"])


def fraction_strings(document: Any, path: str = "") -> Iterator[str]:
    """Where ``document`` (parsed JSON) holds a fraction string, as ``path = value``."""
    if isinstance(document, Mapping):
        for key, value in document.items():
            yield from fraction_strings(value, f"{path}/{key}")
    elif isinstance(document, list):
        for i, value in enumerate(document):
            yield from fraction_strings(value, f"{path}/{i}")
    elif isinstance(document, str) and FRACTION.match(document):
        yield f"{path} = {document}"
