"""Shared secrets: publish keys (``--publish-key``, ``--publish-keys FILE``) and API tokens
(``--api-token``, ``--api-token-file``), matched in constant time.

A presented secret is compared with every secret of the set, always all of them, as SHA-256
digests with ``hmac.compare_digest``: how long the answer takes says nothing about how much
of a secret was right, nor which one matched. The match is named by
:func:`~lpstream.access.values.secret_identity`, never by the secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

import attrs

from lpstream.access.values import secret_identity
from lpstream.config import MASK
from lpstream.errors import ConfigError

__all__ = [
    "MAX_SECRET_FILE_BYTES",
    "MIN_SECRET_LENGTH",
    "SecretSet",
    "read_secret_file",
    "read_small_file",
]

MAX_SECRET_FILE_BYTES = 1 << 20
"""The largest keys or tokens file read."""
MIN_SECRET_LENGTH = 8
"""The shortest key or token accepted (a guessable one would guard nothing)."""
MAX_SECRET_LENGTH = 4096
"""The longest key or token compared (a longer one presented is refused as it is)."""


def read_small_file(path: str | Path, *, limit: int, flag: str) -> bytes:
    """The bytes of a file a flag names, at most ``limit`` of them.

    Raises:
        ConfigError: naming ``flag`` and the file: it cannot be read, or is larger.
    """
    try:
        with Path(path).open("rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ConfigError(f"{flag} {path}: larger than {limit} bytes")
    return data


def read_secret_file(path: str | Path, *, flag: str) -> tuple[str, ...]:
    """The secrets of a file: one a line; blank lines and ``#`` comments are skipped.

    Raises:
        ConfigError: naming ``flag``: the file cannot be read, is too large, or has none.
    """
    data = read_small_file(path, limit=MAX_SECRET_FILE_BYTES, flag=flag)
    lines = (line.split("#", 1)[0].strip() for line in data.decode("utf-8", "replace").splitlines())
    found = tuple(line for line in lines if line)
    if not found:
        raise ConfigError(f"{flag} {path}: no secret in it (one a line, # for comments)")
    return found


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@attrs.frozen
class SecretSet:
    """Secrets a client may present; each matched presents as ``kind:<short hash>``."""

    kind: str
    """What they are (``key``, ``api``): the identity's prefix."""
    _digests: tuple[tuple[bytes, str], ...] = attrs.field(alias="digests")

    @classmethod
    def of(
        cls,
        kind: str,
        secrets: Iterable[str],
        *,
        flag: str,
        min_length: int = MIN_SECRET_LENGTH,
    ) -> SecretSet:
        """The set of ``secrets`` (duplicates once).

        Raises:
            ConfigError: naming ``flag``: a secret shorter than ``min_length`` or longer
                than ``MAX_SECRET_LENGTH``, holding whitespace, or the mask ``lpstream config
                show`` writes in place of a secret (a file it printed, used as it is).
        """
        unique = dict.fromkeys(secrets)
        for secret in unique:
            if secret == MASK:
                raise ConfigError(
                    f"{flag}: {MASK!r} is what `lpstream config show` writes in place of a "
                    "secret; give the secret itself"
                )
            if not max(1, min_length) <= len(secret) <= MAX_SECRET_LENGTH:
                raise ConfigError(
                    f"{flag}: a secret of {len(secret)} characters; use "
                    f"{min_length} to {MAX_SECRET_LENGTH}"
                )
            if any(c.isspace() for c in secret):
                raise ConfigError(f"{flag}: a secret holds whitespace")
        return cls(kind, tuple((_digest(s), secret_identity(kind, s)) for s in unique))

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def match(self, presented: str | None) -> str | None:
        """The identity of the secret ``presented`` is, or None (see the module comment)."""
        if presented is None or len(presented) > MAX_SECRET_LENGTH:
            return None
        digest = _digest(presented)
        found = None
        for candidate, identity in self._digests:
            if hmac.compare_digest(candidate, digest):
                found = identity
        return found
