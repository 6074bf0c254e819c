"""Who may publish: one decision for RTMP, WHIP and SRT.

How this works (:meth:`PublishAuthorizer.authorize`, in this order):

1. ``--auth-webhook-url`` set: the webhook decides (:mod:`.hook`), nothing else is asked.
2. Neither publish keys nor JWT checks set: anyone may publish, as the client's address
   (the node's behaviour without access settings) — except over WHIP with ``--whip-token``
   set, where the bearer token must be that one.
3. Otherwise the request passes when one of the secrets it presents (``?key=``, ``?jwt=``,
   ``?token=``, the OBS stream key ``{stream}?key=…``, the WHIP bearer token) is a publish key
   (``key:`` identity), is a JWT allowing ``publish`` on the stream (``jwt:`` identity), or,
   over WHIP, is ``--whip-token``.

A refusal says why: 401 nothing valid was presented, 403 a valid token does not allow this
stream (or the webhook said 403), 503 the decision could not be made now (the hook or the
JWKS URL is unreachable).
"""

from __future__ import annotations

import attrs

from lpstream.access.hook import AuthWebhook
from lpstream.access.keys import SecretSet
from lpstream.access.tokens import JwtVerifier, VerifiedToken
from lpstream.access.values import Decision, Grant, PublishRequest, Refusal, identity_of

__all__ = ["PublishAuthorizer"]


@attrs.define
class PublishAuthorizer:
    """Decides every publish (see the module comment)."""

    keys: SecretSet | None = None
    """``--publish-key`` / ``--publish-keys``."""
    jwt: JwtVerifier | None = None
    """JWT checks (``--jwt-jwks``, ``--jwt-secret``)."""
    webhook: AuthWebhook | None = None
    """``--auth-webhook-url``."""
    whip_token: SecretSet | None = None
    """``--whip-token``: a WHIP bearer token that passes."""

    @property
    def enforced(self) -> bool:
        """Whether publishing needs credentials (a webhook, publish keys or JWT checks)."""
        return bool(self.webhook is not None or self.keys or self.jwt is not None)

    async def authorize(self, request: PublishRequest) -> Decision:
        """May ``request`` publish? A grant (with what the webhook set) or a refusal."""
        if self.webhook is not None:
            return await self._ask_webhook(request)
        whip_identity = (
            self.whip_token.match(request.bearer)
            if request.protocol == "whip" and self.whip_token
            else None
        )
        if whip_identity is not None:
            return Grant(identity=whip_identity)
        if not self.enforced:
            if request.protocol == "whip" and self.whip_token:
                return _wrong_or_missing(request.bearer is not None, "a bearer token")
            return Grant(identity=identity_of(None, request.remote_addr))
        presented = request.credentials()
        if self.keys:
            for secret in presented:
                identity = self.keys.match(secret)
                if identity is not None:
                    return Grant(identity=identity)
        if self.jwt is not None:
            verdict = await self.jwt.permit(presented, "publish", request.stream)
            if isinstance(verdict, VerifiedToken):
                return Grant(identity=verdict.identity)
            if verdict is not None:
                return verdict
        return _wrong_or_missing(bool(presented), "a stream key or token")

    async def _ask_webhook(self, request: PublishRequest) -> Decision:
        assert self.webhook is not None
        body: dict[str, object] = {
            "stream": request.stream,
            "protocol": request.protocol,
            "url": request.url,
            "query": request.query,
            "remote_addr": request.remote_addr,
        }
        token = request.bearer or request.stream_key
        if token:
            body["token"] = token
        return await self.webhook.decide(body, identity=identity_of(token, request.remote_addr))


def _wrong_or_missing(presented: bool, what: str) -> Refusal:
    if presented:
        return Refusal(reason=f"{what} was given, but it is not valid here", status=401)
    return Refusal(reason=f"publishing here needs {what}", status=401)
