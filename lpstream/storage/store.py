"""The object-store seam: where recordings and the live origin's HLS are written.

One small interface, :class:`ObjectStore` (put, get, list, delete, check), with two
implementations chosen by URL (:func:`lpstream.storage.open_store`): a local directory
(``file:///path``, :mod:`lpstream.storage.local`) and S3-compatible storage
(``s3://bucket/prefix?endpoint=…&region=…``, :mod:`lpstream.storage.s3`). Keys are relative,
``/``-separated, and checked by :func:`check_key` before anything touches the store, so no key
can name an object outside the store's prefix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import attrs

from lpstream.errors import LpstreamError

__all__ = [
    "MAX_KEY_LENGTH",
    "InvalidKey",
    "ObjectInfo",
    "ObjectStore",
    "StoreError",
    "StoreUnavailable",
    "check_key",
    "content_type_of",
    "is_key",
]

MAX_KEY_LENGTH = 512
"""Longest key accepted (S3 allows 1024 bytes with the prefix)."""

_KEY_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")

_CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".json": "application/json",
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
}


class StoreError(LpstreamError):
    """The store refused or failed an operation (the message says which and why)."""


class InvalidKey(StoreError):
    """A key, or a name or id that makes one, that no object can have (``..``, ``/``, ``%``,
    too long): refused before the store is asked."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or refuses the node (missing bucket, refused credentials):
    raised by ``check`` at start-up, and by an operation that failed after its retries."""


def check_key(key: str) -> str:
    """``key`` if it is a safe relative key: ``/``-separated parts of letters, digits, ``.``,
    ``_`` and ``-`` that do not start with ``.`` (so no ``..``, no empty part, no ``%``; the
    same characters as a stream name),
    at most :data:`MAX_KEY_LENGTH` long.

    Raises:
        InvalidKey: anything else.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"object key of {len(key)} characters (1 to {MAX_KEY_LENGTH})")
    for part in key.split("/"):
        if not _KEY_PART.fullmatch(part):
            raise InvalidKey(f"object key {key[:80]!r} has a part that is not allowed")
    return key


def is_key(name: str) -> bool:
    """Whether ``name`` passes :func:`check_key` (an object a listing may show)."""
    try:
        check_key(name)
    except InvalidKey:
        return False
    return True


def content_type_of(key: str) -> str:
    """The content type an object's name implies (``application/octet-stream`` otherwise)."""
    for suffix, kind in _CONTENT_TYPES.items():
        if key.endswith(suffix):
            return kind
    return "application/octet-stream"


@attrs.frozen
class ObjectInfo:
    """One object of a listing."""

    key: str
    """Its key, relative to the store's prefix."""
    size: int
    """Bytes."""
    modified: float
    """Last modified, seconds since the epoch."""


class ObjectStore(Protocol):
    """Where objects are written and read back (see the module comment).

    Every method is async and safe to call from several tasks at once; blocking clients run
    in threads behind it. Keys go through :func:`check_key`.
    """

    @property
    def url(self) -> str:
        """Where it writes, for logs and status (no credentials in it)."""

    def public_url(self, key: str) -> str | None:
        """Where a player could fetch ``key`` over HTTP straight from the store, if it can."""

    async def check(self) -> None:
        """Makes sure the store can be written and read (start-up).

        Raises:
            StoreUnavailable: it cannot, with the reason (missing bucket, refused
                credentials, unreachable endpoint, a directory that cannot be written).
        """

    async def put(self, key: str, data: bytes, *, content_type: str, cache_control: str) -> None:
        """Writes ``data`` under ``key``, whole or not at all (a reader never sees half).

        Raises:
            StoreError: it could not, after the retries the implementation makes.
        """

    async def get(self, key: str) -> bytes | None:
        """The object's bytes; None if there is none.

        Raises:
            StoreError: the store failed (not: the object is missing).
        """

    async def list(self, prefix: str) -> Sequence[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (``""``: all), in key order."""

    async def delete(self, key: str) -> None:
        """Removes the object; nothing happens if there is none."""
