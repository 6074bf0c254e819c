"""The public keys that sign JWTs (``--jwt-jwks``): a JSON Web Key Set from a file or a URL.

How this works:

* A file is read once, when the node starts: a bad one stops the start with its reason.
* A URL is fetched when a token first needs a key (through the bounded
  :class:`~lpstream.webhook.WebhookClient`), then kept. A token naming a key id (``kid``) the
  set lacks makes it fetch again, at most once per ``REFETCH_INTERVAL`` seconds, so a stream of
  made-up key ids cannot turn the node into a load on the key server; the set is also fetched
  again once it is ``MAX_AGE`` old. While the URL cannot be read the last set read is used;
  with none yet, tokens are refused with 503 (no decision).
* Which key checks a token: the one with the token's ``kid``; a token without one is tried
  against the set's keys of its algorithm. Each key's algorithm is its ``alg`` or, without
  one, what its type says (RSA: RS256, EC P-256: ES256, OKP Ed25519: EdDSA).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import trio
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError

from lpstream.access.keys import read_small_file
from lpstream.errors import ConfigError, LpstreamError
from lpstream.webhook import WebhookClient, WebhookError

__all__ = ["MAX_AGE", "MAX_JWKS_BYTES", "REFETCH_INTERVAL", "JwksKeys", "KeysUnavailable"]

log = logging.getLogger("lpstream.access")

REFETCH_INTERVAL = 30.0
"""Seconds between fetches of a JWKS URL for key ids it did not have."""
MAX_AGE = 3600.0
"""Seconds after which a JWKS URL is fetched again anyway."""
MAX_JWKS_BYTES = 1 << 20
"""The largest key set read."""
FETCH_TIMEOUT = 5.0
"""Seconds a JWKS URL has to answer."""


class KeysUnavailable(LpstreamError):
    """No key set could be read from the JWKS URL yet."""


def _key_set(document: Any, where: str) -> list[PyJWK]:
    """The usable keys of a JWKS document (``{"keys": [...]}``).

    Raises:
        ValueError: naming ``where``: not a key set, or none of its keys usable.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError(f'{where}: not a JSON Web Key Set ({{"keys": [...]}})')
    try:
        keys = PyJWKSet.from_dict(document).keys
    except (PyJWKSetError, PyJWKError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    return list(keys)


@attrs.define
class JwksKeys:
    """The key set of ``--jwt-jwks`` (see the module comment)."""

    source: str
    """The file or URL."""
    _client: WebhookClient | None = attrs.field(default=None, alias="client")
    _keys: list[PyJWK] = attrs.field(factory=list, alias="keys")
    _loaded_at: float | None = attrs.field(default=None, init=False)
    _tried_at: float | None = attrs.field(default=None, init=False)
    _problem: str = attrs.field(default="", init=False)
    _lock: trio.Lock = attrs.field(factory=trio.Lock, init=False)

    @classmethod
    def from_source(cls, source: str) -> JwksKeys:
        """Keys from a file (read now) or an ``http(s)://`` URL (fetched when needed).

        Raises:
            ConfigError: the file cannot be read or holds no usable key; the URL is malformed.
        """
        if source.startswith(("http://", "https://")):
            client = WebhookClient(source, timeout=FETCH_TIMEOUT, max_bytes=MAX_JWKS_BYTES)
            return cls(source, client=client)
        data = read_small_file(source, limit=MAX_JWKS_BYTES, flag="--jwt-jwks")
        try:
            keys = _key_set(json.loads(data), f"--jwt-jwks {source}")
        except (ValueError, RecursionError) as exc:
            raise ConfigError(str(exc)) from None
        return cls(source, keys=keys)

    async def find(self, kid: str | None, algorithm: str) -> PyJWK | None:
        """The key for a token's ``kid`` and algorithm, or None.

        Raises:
            KeysUnavailable: a URL that has not been read yet cannot be read now.
        """
        now = trio.current_time()
        if self._client is not None:
            if self._loaded_at is None or now - self._loaded_at >= MAX_AGE:
                await self._fetch(now)
            if self._loaded_at is None:
                raise KeysUnavailable(f"the token keys cannot be read now ({self._problem})")
        found = self._pick(kid, algorithm)
        if found is None and kid is not None and self._client is not None:
            await self._fetch(now)
            found = self._pick(kid, algorithm)
        return found

    def _pick(self, kid: str | None, algorithm: str) -> PyJWK | None:
        for key in self._keys:
            if (kid is None or key.key_id == kid) and key.algorithm_name == algorithm:
                return key
        return None

    async def _fetch(self, now: float) -> None:
        """Reads the URL again, unless it was tried less than ``REFETCH_INTERVAL`` ago."""
        assert self._client is not None
        async with self._lock:
            if self._tried_at is not None and now - self._tried_at < REFETCH_INTERVAL:
                return
            self._tried_at = now
            try:
                self._keys = _key_set(await self._client.get_json(), f"JWKS {self.source}")
            except WebhookError as exc:
                self._problem = exc.problem
                log.warning("jwt: cannot read the key set: %s", exc)
                return
            except ValueError as exc:
                self._problem = "not a usable key set"
                log.warning("jwt: cannot read the key set: %s", exc)
                return
            self._loaded_at = now
