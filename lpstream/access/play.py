"""Who may watch (``--play-auth jwt|webhook``; off by default: anyone may).

How this works:

* ``jwt``: the token (``?token=…`` on HLS, ``Authorization: Bearer`` on WHEP) must be a JWT
  whose permissions allow ``read`` on the stream (:mod:`.tokens`).
* ``webhook``: the auth webhook decides, asked ``{"stream", "protocol": "hls" | "whep", "url",
  "remote_addr", "token"}`` (:mod:`.hook`).
* Over WHEP, ``--whep-token`` passes as it did before, in either mode.
* An HLS player asks for a playlist or a part several times a second: each decision is
  remembered per (stream, protocol, token) — the webhook's for ``--auth-webhook-cache``
  seconds (and per client address), a JWT's for ``JWT_DECISION_SECONDS`` and never past its
  ``exp`` — so one viewer costs one signature check or one hook call per few seconds, not
  per request.
"""

from __future__ import annotations

import time
from typing import Literal, TypeAlias

import attrs
import trio

from lpstream.access.cache import DecisionCache, decision_key
from lpstream.access.hook import AuthWebhook
from lpstream.access.keys import SecretSet
from lpstream.access.tokens import JwtVerifier
from lpstream.access.values import Decision, Grant, PlayRequest, Refusal, identity_of
from lpstream.errors import ConfigError
from lpstream.media import check_stream_name

__all__ = ["JWT_DECISION_SECONDS", "PLAY_AUTH_MODES", "PlayAuthMode", "PlayAuthorizer"]

PlayAuthMode: TypeAlias = Literal["jwt", "webhook"]
PLAY_AUTH_MODES: tuple[PlayAuthMode, ...] = ("jwt", "webhook")
JWT_DECISION_SECONDS = 10.0
"""Seconds a JWT's decision for a stream is remembered (never past the token's expiry)."""


def _may_exist(stream: str) -> bool:
    """Whether ``stream`` is a name a stream may have (a refusal for any other is not worth
    remembering: its reason names it, and it may be as long as a URL)."""
    try:
        check_stream_name(stream)
    except ValueError:
        return False
    return True


@attrs.define
class PlayAuthorizer:
    """Decides every play request (see the module comment)."""

    mode: PlayAuthMode
    """Who decides."""
    jwt: JwtVerifier | None = None
    """The JWT checks (mode ``jwt``)."""
    webhook: AuthWebhook | None = None
    """The auth webhook (mode ``webhook``)."""
    whep_token: SecretSet | None = None
    """``--whep-token``: a WHEP bearer token that passes."""
    _decided: DecisionCache[bytes, Decision] = attrs.field(
        init=False, factory=lambda: DecisionCache(ttl=JWT_DECISION_SECONDS)
    )

    def __attrs_post_init__(self) -> None:
        if self.mode == "jwt" and self.jwt is None:
            raise ConfigError("--play-auth jwt needs --jwt-jwks or --jwt-secret")
        if self.mode == "webhook" and self.webhook is None:
            raise ConfigError("--play-auth webhook needs --auth-webhook-url")

    async def authorize(self, request: PlayRequest) -> Decision:
        """May ``request`` watch? A grant or a refusal (401 without a token)."""
        token = request.token
        if request.protocol == "whep" and self.whep_token:
            identity = self.whep_token.match(token)
            if identity is not None:
                return Grant(identity=identity)
        if not token:
            how = "?token=…" if request.protocol == "hls" else "a bearer token"
            return Refusal(reason=f"watching this stream needs a token ({how})", status=401)
        if self.mode == "webhook":
            assert self.webhook is not None
            body = {
                "stream": request.stream,
                "protocol": request.protocol,
                "url": request.url,
                "remote_addr": request.remote_addr,
                "token": token,
            }
            return await self.webhook.decide(body, identity=identity_of(token, request.remote_addr))
        return await self._check_jwt(request.stream, request.protocol, token)

    async def _check_jwt(self, stream: str, protocol: str, token: str) -> Decision:
        assert self.jwt is not None
        key = decision_key(stream, protocol, token)
        remembered = self._decided.get(key, now=trio.current_time())
        if remembered is not None:
            return remembered
        verdict = await self.jwt.permit((token,), "read", stream)
        if verdict is None:
            verdict = Refusal(reason="the token is not a JWT", status=401)
        if isinstance(verdict, Refusal):
            if verdict.status != 503 and _may_exist(stream):
                self._decided.put(key, verdict, now=trio.current_time())
            return verdict
        grant = Grant(identity=verdict.identity)
        lifetime = verdict.expires_at - time.time()
        self._decided.put(key, grant, now=trio.current_time(), ttl=lifetime)
        return grant
