"""How a status value's field is laid out in /api/status (rendered by ``lpstream.http.status``).

Status values are frozen attrs classes; each field renders as a key of its own unless its
metadata says otherwise with one of these markers.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import attrs

__all__ = ["INLINE", "OMIT_NONE", "is_inline", "omits_none"]

INLINE = MappingProxyType({"status_inline": True})
"""The field's keys are merged into its parent's (a None value adds none)."""
OMIT_NONE = MappingProxyType({"status_omit_none": True})
"""The key is left out while the value is None (a section a node does not have)."""


def is_inline(field: attrs.Attribute[Any]) -> bool:
    """Whether ``field`` is marked ``INLINE``."""
    return bool(field.metadata.get("status_inline"))


def omits_none(field: attrs.Attribute[Any]) -> bool:
    """Whether ``field`` is marked ``OMIT_NONE``."""
    return bool(field.metadata.get("status_omit_none"))
