"""JWTs that say which streams their holder may publish or watch (``--jwt-jwks``,
``--jwt-secret``, ``--jwt-audience``).

How this works:

* Algorithms: RS256, ES256 and EdDSA with a key of the JWKS (:mod:`.jwks`), HS256 with
  ``--jwt-secret``; a token's ``alg`` picks which, and no other is taken (never ``none``, never
  an HMAC check with a public key). Keys below the recommended size are refused.
* Claims: ``exp`` is required and checked; ``aud`` must be ``--jwt-audience`` when that is set.
  The permissions are MediaMTX's shape under the claim ``lpstream_permissions``: a list (or a
  string holding the JSON of one) of ``{"action": "publish" | "read", "path": P}``, where P is
  a stream name, a glob (``cam-*``), ``~`` and a regular expression (searched, as MediaMTX
  does), or empty or absent for every stream.
* Who: ``jwt:`` and the token's ``sub``, or a short hash of the token without one, so one
  publisher stays one identity across the tokens it is given.
* A refusal names what was wrong, never the token: 401 for a token that is not valid
  (expired, wrong audience, bad signature, unknown key), 403 for a valid one without the
  permission for this stream (as RFC 6750 has it), 503 when the key set cannot be read.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import attrs
import jwt

from lpstream.access.jwks import JwksKeys, KeysUnavailable
from lpstream.access.values import Refusal, secret_identity
from lpstream.errors import ConfigError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "MIN_SECRET_BYTES",
    "PERMISSIONS_CLAIM",
    "Action",
    "JwtPermission",
    "JwtVerifier",
    "VerifiedToken",
]

Action: TypeAlias = Literal["publish", "read"]

PERMISSIONS_CLAIM = "lpstream_permissions"
"""The claim that lists what a token allows."""
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256", "EdDSA")
"""The algorithms checked with a JWKS key."""
MIN_SECRET_BYTES = 32
"""The shortest ``--jwt-secret`` (RFC 7518: an HS256 key is at least the hash's size)."""
MAX_TOKEN_LENGTH = 8192
"""The longest token read."""
MAX_PERMISSIONS = 64
"""Permissions read from one token at most."""


@attrs.frozen
class JwtPermission:
    """One entry of the permissions claim."""

    action: str
    """``publish`` or ``read`` (others are kept and allow nothing here)."""
    path: str = ""
    """The streams: a name, a glob, ``~regex``, or "" for all."""

    def allows(self, action: Action, stream: str) -> bool:
        if self.action != action:
            return False
        if not self.path:
            return True
        if self.path.startswith("~"):
            try:
                return re.search(self.path[1:], stream) is not None
            except re.error:
                return False
        return fnmatch.fnmatchcase(stream, self.path)


@attrs.frozen(kw_only=True)
class VerifiedToken:
    """A token whose signature and claims were checked."""

    identity: str
    """``jwt:`` and its subject (or a short hash of the token)."""
    permissions: tuple[JwtPermission, ...]
    """What it allows."""
    expires_at: float
    """Its ``exp``, in seconds since the epoch."""

    def allows(self, action: Action, stream: str) -> bool:
        return any(p.allows(action, stream) for p in self.permissions)


def _permissions(claims: dict[str, Any]) -> tuple[JwtPermission, ...]:
    raw = claims.get(PERMISSIONS_CLAIM)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            raise ValueError(f"{PERMISSIONS_CLAIM} is not JSON") from None
    if raw is None:
        raise ValueError(f"the token has no {PERMISSIONS_CLAIM} claim")
    if not isinstance(raw, list) or len(raw) > MAX_PERMISSIONS:
        raise ValueError(f"{PERMISSIONS_CLAIM} must be a list of at most {MAX_PERMISSIONS}")
    found = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise ValueError(f"{PERMISSIONS_CLAIM}: an entry is not an object")
        action, path = entry.get("action"), entry.get("path", "")
        if not isinstance(action, str) or not isinstance(path, str | None):
            raise ValueError(f"{PERMISSIONS_CLAIM}: action and path must be strings")
        found.append(JwtPermission(action, path or ""))
    return tuple(found)


def _refusal_for(exc: jwt.PyJWTError) -> Refusal:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return Refusal(reason=f"the token has no {exc.claim} claim", status=401)
    reason = {
        jwt.ExpiredSignatureError: "the token has expired",
        jwt.InvalidAudienceError: "the token is not for this node (aud)",
        jwt.InvalidSignatureError: "the token's signature does not verify",
        jwt.ImmatureSignatureError: "the token is not valid yet",
        jwt.InvalidKeyError: "the token's key is too weak",
    }.get(type(exc))
    return Refusal(reason=reason or f"the token is not valid: {exc}", status=401)


@attrs.define
class JwtVerifier:
    """Checks JWTs against the JWKS and/or the HS256 secret (see the module comment)."""

    keys: JwksKeys | None = None
    """Public keys (RS256, ES256, EdDSA)."""
    secret: str | None = None
    """The HS256 secret."""
    audience: str | None = None
    """The ``aud`` every token must carry; None: not checked."""

    def __attrs_post_init__(self) -> None:
        if self.keys is None and self.secret is None:
            raise ConfigError("JWT checks need --jwt-jwks or --jwt-secret")
        if self.secret is not None and len(self.secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"--jwt-secret must be at least {MIN_SECRET_BYTES} bytes")

    @staticmethod
    def looks_like_jwt(text: str) -> bool:
        """Whether ``text`` has a JWT's shape (three base64url parts), not what it says."""
        return text.count(".") == 2 and len(text) <= MAX_TOKEN_LENGTH

    async def verify(self, token: str) -> VerifiedToken | Refusal:
        """The token, checked; or why it is refused (503 when its keys cannot be read)."""
        if not self.looks_like_jwt(token):
            return Refusal(reason="the token is not a JWT", status=401)
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            key: Any
            if algorithm == "HS256" and self.secret is not None:
                key = self.secret
            elif algorithm in ASYMMETRIC_ALGORITHMS and self.keys is not None:
                kid = header.get("kid")
                key = await self.keys.find(kid if isinstance(kid, str) else None, algorithm)
                if key is None:
                    return Refusal(reason="the token's signing key is not known", status=401)
            else:
                return Refusal(
                    reason=f"tokens signed with {algorithm!r} are not accepted", status=401
                )
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                options={
                    "require": ["exp"],
                    "verify_aud": self.audience is not None,
                    "enforce_minimum_key_length": True,
                },
            )
        except KeysUnavailable as exc:
            return Refusal(reason=str(exc), status=503)
        except jwt.PyJWTError as exc:
            return _refusal_for(exc)
        try:
            permissions = _permissions(claims)
        except ValueError as exc:
            return Refusal(reason=f"the token's permissions cannot be read: {exc}", status=401)
        subject = claims.get("sub")
        identity = (
            f"jwt:{subject}"
            if isinstance(subject, str) and 0 < len(subject) <= 128 and subject.isprintable()
            else secret_identity("jwt", token)
        )
        return VerifiedToken(
            identity=identity, permissions=permissions, expires_at=float(claims["exp"])
        )

    async def permit(
        self, tokens: Sequence[str], action: Action, stream: str
    ) -> VerifiedToken | Refusal | None:
        """The first of ``tokens`` that is a valid JWT allowing ``action`` on ``stream``; else
        the refusal of the last one that looked like a JWT; None if none did."""
        refusal: Refusal | None = None
        for token in tokens:
            if not self.looks_like_jwt(token):
                continue
            verified = await self.verify(token)
            if isinstance(verified, Refusal):
                refusal = verified
            elif verified.allows(action, stream):
                return verified
            else:
                verb = "publish" if action == "publish" else "watch"
                refusal = Refusal(reason=f"the token does not allow to {verb} {stream!r}")
        return refusal
