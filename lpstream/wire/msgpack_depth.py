"""How deep a msgpack body nests, measured without recursion (sans-IO).

msgspec recurses in C for nested values and only stops at the interpreter's recursion limit,
which libraries such as py_ecc raise to 100000 at import: a 64 KiB header of nested arrays
could then exhaust the C stack. So the nesting of every header is measured first, by a scan
that keeps one count per open container (items still to read in it) and no call stack.
"""

from __future__ import annotations

__all__ = ["MAX_NESTING", "msgpack_depth_exceeds"]

MAX_NESTING = 32
"""Deepest msgpack nesting accepted in a header."""

_FIXED_SIZES = {
    0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,
}  # fmt: skip
_LENGTH_PREFIXED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def msgpack_depth_exceeds(body: bytes, limit: int = MAX_NESTING) -> bool:
    """True if ``body``'s msgpack nests containers deeper than ``limit`` (iterative scan).

    A truncated or malformed body returns False: the decoder reports those itself.
    """
    pending: list[int] = []  # items left in each open container
    i, n = 0, len(body)
    while i < n:
        b = body[i]
        i += 1
        items = 0
        if b <= 0x7F or b >= 0xE0:
            pass
        elif b <= 0x8F:
            items = 2 * (b & 0x0F)
        elif b <= 0x9F:
            items = b & 0x0F
        elif b <= 0xBF:
            i += b & 0x1F
        elif b in _FIXED_SIZES:
            i += _FIXED_SIZES[b]
        elif b in _LENGTH_PREFIXED:
            size = _LENGTH_PREFIXED[b]
            i += size + int.from_bytes(body[i : i + size], "big")
        elif b in _EXT:
            size = _EXT[b]
            i += size + 1 + int.from_bytes(body[i : i + size], "big")
        elif b in _CONTAINERS:
            size, per = _CONTAINERS[b]
            items = per * int.from_bytes(body[i : i + size], "big")
            i += size
        else:
            return False  # 0xC1 is never used: malformed, left to the decoder
        if items:
            pending.append(items)
            if len(pending) > limit:
                return True
            continue
        while pending:
            pending[-1] -= 1
            if pending[-1]:
                break
            pending.pop()
    return False
