"""How deep a JSON text nests, counted without parsing it.

Python's JSON parsers recurse per level, and a process whose recursion limit was raised (web3
imports py_ecc, which raises it to 100000) can overflow the C stack on deep input: every JSON
a peer sends is measured here first and refused past its limit. Sans-IO: bytes in, a number
out.
"""

from __future__ import annotations

import itertools
import re

__all__ = ["json_nesting"]

_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_nesting(body: bytes) -> int:
    """How deep lists and objects nest in ``body`` (brackets inside strings do not count)."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(_BRACKET_STEP[b] for b in brackets), default=0)
