"""Reading codec headers bit by bit: the one bit reader the codec parsers share.

Video headers (H.264 and HEVC parameter sets, the AV1 sequence header, the VP9 frame
header) are bit strings read most significant bit first, with fixed-width fields and, in
the H.26x family, exp-Golomb codes. :class:`BitReader` reads them from bytes it is given and
raises ``ValueError`` when a field runs past their end, so a parser built on it never raises
``IndexError`` and never reads what it was not given. :func:`unescape_rbsp` undoes the
emulation prevention of H.264 and HEVC NAL units before their payload is read.
"""

from __future__ import annotations

__all__ = ["BitReader", "unescape_rbsp"]


class BitReader:
    """Reads fields from a byte string, most significant bit first."""

    def __init__(self, data: bytes, what: str = "header") -> None:
        """
        Args:
            data: the bytes to read.
            what: what they hold, for the error message (``"SPS"`` gives "SPS ends early").
        """
        self._data = data
        self._pos = 0
        self._what = what

    @property
    def position(self) -> int:
        """Bits read so far."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Bits left to read."""
        return len(self._data) * 8 - self._pos

    def _need(self, n: int) -> None:
        if n > self.remaining:
            raise ValueError(f"{self._what} ends early")

    def bit(self) -> int:
        """One bit, 0 or 1."""
        self._need(1)
        value = (self._data[self._pos >> 3] >> (7 - (self._pos & 7))) & 1
        self._pos += 1
        return value

    def flag(self) -> bool:
        """One bit as a boolean."""
        return self.bit() == 1

    def bits(self, n: int) -> int:
        """An ``n``-bit unsigned field (``u(n)`` / ``f(n)`` in the specifications)."""
        if n < 0:
            raise ValueError(f"{self._what}: negative field width")
        if n == 0:
            return 0
        self._need(n)
        first = self._pos >> 3
        last = (self._pos + n - 1) >> 3
        chunk = int.from_bytes(self._data[first : last + 1], "big")
        tail = (last + 1) * 8 - (self._pos + n)
        self._pos += n
        return (chunk >> tail) & ((1 << n) - 1)

    def skip(self, n: int) -> None:
        """Skips ``n`` bits."""
        if n < 0:
            raise ValueError(f"{self._what}: negative skip")
        self._need(n)
        self._pos += n

    def ue(self) -> int:
        """An unsigned exp-Golomb code (``ue(v)``), at most 32 bits long."""
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError(f"bad exp-Golomb code in {self._what}")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        """A signed exp-Golomb code (``se(v)``)."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def uvlc(self) -> int:
        """AV1's variable-length unsigned code (``uvlc()``)."""
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros >= 32:
                # The AV1 specification reads no value bits here and answers 2**32 - 1.
                return (1 << 32) - 1
        return (1 << zeros) - 1 + self.bits(zeros)


def unescape_rbsp(payload: bytes) -> bytes:
    """Removes the emulation prevention bytes of an H.264 or HEVC NAL unit payload: each
    ``03`` that follows ``00 00``.

    The specifications scan left to right and, at each ``00 00 03``, keep the two zeros and
    drop the ``03``; a non-overlapping search for that pattern is that scan.
    """
    return payload.replace(b"\x00\x00\x03", b"\x00\x00")
