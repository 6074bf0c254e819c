"""A node's access control, built once from the ``access`` section of its configuration."""

from __future__ import annotations

import urllib.parse

import attrs

from lpstream.access.hook import AuthWebhook
from lpstream.access.jwks import JwksKeys
from lpstream.access.keys import SecretSet, read_secret_file
from lpstream.access.names import NameRegistry
from lpstream.access.play import PLAY_AUTH_MODES, PlayAuthorizer
from lpstream.access.publish import PublishAuthorizer
from lpstream.access.tokens import JwtVerifier
from lpstream.config import AccessSection
from lpstream.errors import ConfigError

__all__ = ["NodeAccess", "check_cors_origin"]


def check_cors_origin(origin: str) -> str:
    """``origin`` as browsers send it in ``Origin``: ``*``, or ``scheme://host[:port]`` with
    the host in lower case (a trailing ``/`` is dropped).

    Raises:
        ConfigError: naming ``--cors-origin``.
    """
    if origin == "*":
        return origin
    try:
        parts = urllib.parse.urlsplit(origin.removesuffix("/"))
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ConfigError(
            f"--cors-origin {origin!r}: give * or scheme://host[:port], as a browser sends it"
        )
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    return f"{parts.scheme}://{host.lower()}" + (f":{port}" if port is not None else "")


def _secrets(
    kind: str, given: tuple[str, ...], file: str | None, *, flags: tuple[str, str]
) -> SecretSet | None:
    """The secrets given by the flag ``flags[0]`` and in the file of ``flags[1]``."""
    secrets = given + (read_secret_file(file, flag=flags[1]) if file else ())
    return SecretSet.of(kind, secrets, flag=flags[0]) if secrets else None


@attrs.frozen(kw_only=True)
class NodeAccess:
    """Who may publish, watch and use the API; which web pages may ask."""

    publish: PublishAuthorizer
    """Decides every publish (RTMP, WHIP, SRT)."""
    play: PlayAuthorizer | None
    """Decides every play (HLS, WHEP); None: anyone may watch."""
    api_tokens: SecretSet | None
    """The tokens of ``/api/*``, the live AI WebSocket and ``/metrics``; None: loopback
    clients only."""
    names: NameRegistry
    """Stream name ownership (kept while publish authorization is on)."""
    cors_origins: tuple[str, ...] = ()
    """Web origins whose pages may use HLS and the API (``*``: any)."""

    @classmethod
    def from_section(cls, section: AccessSection) -> NodeAccess:
        """Reads the key and token files and the JWKS file now.

        Raises:
            ConfigError: a file cannot be read or holds nothing usable, a secret is too short,
                a URL or origin is malformed, or ``play_auth`` lacks what it needs.
        """
        jwt = None
        if section.jwt_jwks is not None or section.jwt_secret is not None:
            jwt = JwtVerifier(
                keys=JwksKeys.from_source(section.jwt_jwks) if section.jwt_jwks else None,
                secret=section.jwt_secret,
                audience=section.jwt_audience,
            )
        webhook = None
        if section.auth_webhook_url:
            webhook = AuthWebhook.from_url(
                section.auth_webhook_url,
                timeout=section.auth_webhook_timeout,
                cache_seconds=section.auth_webhook_cache,
            )
        whip = section.whip_token
        publish = PublishAuthorizer(
            keys=_secrets(
                "key",
                section.publish_key,
                section.publish_keys,
                flags=("--publish-key", "--publish-keys"),
            ),
            jwt=jwt,
            webhook=webhook,
            whip_token=SecretSet.of("whip", (whip,), flag="--whip-token", min_length=1)
            if whip
            else None,
        )
        play = None
        if section.play_auth is not None:
            mode = next((m for m in PLAY_AUTH_MODES if m == section.play_auth), None)
            if mode is None:
                raise ConfigError(f"--play-auth {section.play_auth!r}: use jwt or webhook")
            whep = section.whep_token
            play = PlayAuthorizer(
                mode=mode,
                jwt=jwt,
                webhook=webhook,
                whep_token=SecretSet.of("whep", (whep,), flag="--whep-token", min_length=1)
                if whep
                else None,
            )
        return cls(
            publish=publish,
            play=play,
            api_tokens=_secrets(
                "api",
                section.api_token,
                section.api_token_file,
                flags=("--api-token", "--api-token-file"),
            ),
            names=NameRegistry(enforced=publish.enforced, grace=section.name_grace),
            cors_origins=tuple(dict.fromkeys(check_cors_origin(o) for o in section.cors_origin)),
        )
