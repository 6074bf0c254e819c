"""The RTMP handshake, server side: C0 C1 C2 in, S0 S1 S2 out.

Two forms are in use. In the *plain* form (the 2012 Adobe specification) S1 is random and S2
echoes C1. In the *digest* form (Flash Player 9 and later, librtmp, ffmpeg) C1 carries an
HMAC-SHA256 digest at an offset that the bytes before it choose, in one of two layouts
("schemas"); a server that finds one answers in kind: S1 carries its own digest in the same
schema, and S2 ends with an HMAC keyed by the client's digest. A client that sends a version in
C1 but no valid digest gets the plain form, which every client accepts.

Nothing here holds state; :class:`~ingest.rtmp.protocol.RtmpServerConnection` calls
:func:`server_response` once C1 is in.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Callable

from lpstream.errors import RemoteProtocolError

__all__ = [
    "C1_SIZE",
    "RTMP_VERSION",
    "HandshakeKind",
    "check_version",
    "find_digest",
    "server_response",
]

RTMP_VERSION = 3
"""The only C0 version accepted (6 and 8 are RTMPE, which is not supported)."""
C1_SIZE = 1536
"""Size of C1, C2, S1 and S2."""
DIGEST_SIZE = 32

_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FLASH_PLAYER_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
"""The client key; its first 30 bytes sign C1."""
FLASH_SERVER_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
"""The server key; its first 36 bytes sign S1, all 68 key the S2 signature."""
SERVER_VERSION = bytes((0x0D, 0x0E, 0x0A, 0x0D))
"""Bytes 4..7 of a digest-form S1 (any non-zero value marks the digest form)."""


class HandshakeKind(enum.Enum):
    """Which handshake form the client used (and the server answered with)."""

    PLAIN = "plain"
    DIGEST_SCHEMA0 = "digest-schema0"
    """Key block first, digest block second: the offset sits at bytes 772..775."""
    DIGEST_SCHEMA1 = "digest-schema1"
    """Digest block first: the offset sits at bytes 8..11 (ffmpeg and librtmp by default)."""


def check_version(version: int) -> None:
    """Checks C0.

    Raises:
        RemoteProtocolError: the version is not 3.
    """
    if version == RTMP_VERSION:
        return
    if version in (6, 8, 9):
        raise RemoteProtocolError(f"encrypted RTMP (RTMPE, version {version}) is not supported")
    raise RemoteProtocolError(f"RTMP version {version} in C0 is not supported (want 3)")


def digest_offset(block: bytes | bytearray, kind: HandshakeKind) -> int:
    """Where the 32-byte digest starts in a C1 or S1 of the given digest schema."""
    base = 772 if kind is HandshakeKind.DIGEST_SCHEMA0 else 8
    return sum(block[base : base + 4]) % 728 + base + 4


def _digest(block: bytes | bytearray, offset: int, key: bytes) -> bytes:
    message = bytes(block[:offset]) + bytes(block[offset + DIGEST_SIZE :])
    return hmac.new(key, message, hashlib.sha256).digest()


def find_digest(c1: bytes | bytearray) -> tuple[HandshakeKind, bytes]:
    """Finds the client digest in C1, trying both schemas.

    Returns:
        The schema and the digest, or ``(HandshakeKind.PLAIN, b"")`` when C1 has none.
    """
    if c1[4:8] == b"\x00\x00\x00\x00":
        return HandshakeKind.PLAIN, b""
    for kind in (HandshakeKind.DIGEST_SCHEMA1, HandshakeKind.DIGEST_SCHEMA0):
        offset = digest_offset(c1, kind)
        expected = _digest(c1, offset, FLASH_PLAYER_KEY[:30])
        if hmac.compare_digest(expected, bytes(c1[offset : offset + DIGEST_SIZE])):
            return kind, expected
    return HandshakeKind.PLAIN, b""


def server_response(
    c1: bytes | bytearray, random_bytes: Callable[[int], bytes] = os.urandom
) -> tuple[HandshakeKind, bytes]:
    """Builds S0 + S1 + S2 for a received C1.

    Args:
        c1: the client's 1536-byte C1.
        random_bytes: the source of the random filler (tests pass a fixed one).

    Returns:
        The form used and the 3073 bytes to send.
    """
    if len(c1) != C1_SIZE:
        raise ValueError(f"C1 must be {C1_SIZE} bytes")
    kind, client_digest = find_digest(c1)
    s0 = bytes((RTMP_VERSION,))
    if kind is HandshakeKind.PLAIN:
        # S1: time 0, zero version, random.  S2: C1 echoed.
        s1 = bytes(8) + random_bytes(C1_SIZE - 8)
        return kind, s0 + s1 + bytes(c1)
    s1_buf = bytearray(bytes(4) + SERVER_VERSION + random_bytes(C1_SIZE - 8))
    offset = digest_offset(s1_buf, kind)
    s1_buf[offset : offset + DIGEST_SIZE] = _digest(s1_buf, offset, FLASH_SERVER_KEY[:36])
    s2_buf = bytearray(random_bytes(C1_SIZE))
    signing_key = hmac.new(FLASH_SERVER_KEY, client_digest, hashlib.sha256).digest()
    s2_buf[-DIGEST_SIZE:] = hmac.new(
        signing_key, bytes(s2_buf[:-DIGEST_SIZE]), hashlib.sha256
    ).digest()
    return kind, s0 + bytes(s1_buf) + bytes(s2_buf)
