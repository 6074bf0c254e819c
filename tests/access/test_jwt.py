"""JWT publish and play permissions: a JWKS made here with ``cryptography`` (RS256, ES256,
EdDSA) and an HS256 secret; tokens signed here with PyJWT; what passes and what is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import jwt
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from lpstream.access import (
    Grant,
    JwksKeys,
    JwtVerifier,
    PlayAuthorizer,
    PlayRequest,
    PublishAuthorizer,
    PublishRequest,
    Refusal,
    VerifiedToken,
)
from lpstream.errors import ConfigError
from tests.access.hooks import Answer, serve_hook

SECRET = "an-hs256-secret-of-at-least-32-bytes!"
AUDIENCE = "lpstream-test"


@attrs.frozen
class Signer:
    """A private key, its algorithm and its key id."""

    algorithm: str
    kid: str
    key: Any

    def token(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(
            claims, self.key, algorithm=self.algorithm, headers={"kid": self.kid, **header}
        )


def _signers() -> list[Signer]:
    return [
        Signer("RS256", "rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        Signer("ES256", "ec-1", ec.generate_private_key(ec.SECP256R1())),
        Signer("EdDSA", "ed-1", ed25519.Ed25519PrivateKey.generate()),
    ]


SIGNERS = _signers()
IMPOSTOR = _signers()  # the same key ids, other keys


def jwks_document(signers: list[Signer]) -> dict[str, Any]:
    keys = []
    codecs: dict[str, Any] = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}
    for signer in signers:
        jwk = codecs[signer.algorithm].to_jwk(signer.key.public_key(), as_dict=True)
        keys.append({**jwk, "kid": signer.kid, "use": "sig"})
    return {"keys": keys}


@pytest.fixture
def jwks_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_document(SIGNERS)))
    yield path


def claims(*permissions: dict[str, str], expires_in: float = 300, **more: Any) -> dict[str, Any]:
    return {
        "sub": "studio-7",
        "exp": int(time.time() + expires_in),
        "lpstream_permissions": list(permissions),
        **more,
    }


PUBLISH_CAM = {"action": "publish", "path": "cam"}


def rtmp(stream: str, *, jwt_token: str) -> PublishRequest:
    return PublishRequest.from_rtmp(
        tc_url="rtmp://gw/live",
        app="live",
        publish_name=f"{stream}?jwt={jwt_token}",
        remote_addr="",
    )


def verifier(jwks_file: Path, **kwargs: Any) -> JwtVerifier:
    return JwtVerifier(keys=JwksKeys.from_source(str(jwks_file)), secret=SECRET, **kwargs)


@pytest.mark.parametrize("signer", SIGNERS, ids=lambda s: s.algorithm)
async def test_each_algorithm_of_the_jwks_grants_publish_on_its_stream(
    jwks_file: Path, signer: Signer
) -> None:
    authorizer = PublishAuthorizer(jwt=verifier(jwks_file))
    token = signer.token(claims(PUBLISH_CAM))
    assert await authorizer.authorize(rtmp("cam", jwt_token=token)) == Grant(
        identity="jwt:studio-7"
    )


async def test_hs256_with_the_secret_grants_publish(jwks_file: Path) -> None:
    authorizer = PublishAuthorizer(jwt=verifier(jwks_file))
    token = jwt.encode(claims(PUBLISH_CAM), SECRET, algorithm="HS256")
    for request in (
        rtmp("cam", jwt_token=token),
        PublishRequest(stream="cam", protocol="whip", url="/whip/cam", bearer=token),
        PublishRequest(stream="cam", protocol="srt", url="srt://gw", query=f"token={token}"),
        PublishRequest.from_rtmp(
            tc_url="rtmp://gw/live", app="live", publish_name=f"cam?key={token}", remote_addr=""
        ),
    ):
        assert await authorizer.authorize(request) == Grant(identity="jwt:studio-7")


RS = SIGNERS[0]


@pytest.mark.parametrize(
    ("token", "status", "reason"),
    [
        (RS.token(claims(PUBLISH_CAM, expires_in=-60)), 401, "expired"),
        (RS.token(claims(PUBLISH_CAM, aud="someone-else")), 401, "not for this node"),
        (RS.token(claims(PUBLISH_CAM)), 401, "no aud claim"),
        (RS.token(claims({"action": "publish", "path": "other"}, aud=AUDIENCE)), 403, "'cam'"),
        (RS.token(claims({"action": "read", "path": "cam"}, aud=AUDIENCE)), 403, "'cam'"),
        (IMPOSTOR[0].token(claims(PUBLISH_CAM, aud=AUDIENCE)), 401, "signature does not verify"),
        (IMPOSTOR[2].token(claims(PUBLISH_CAM, aud=AUDIENCE)), 401, "signature does not verify"),
        (
            RS.token({"sub": "x", "aud": AUDIENCE, "lpstream_permissions": [PUBLISH_CAM]}),
            401,
            "no exp",
        ),
        (RS.token(claims(PUBLISH_CAM, aud=AUDIENCE), kid="unknown"), 401, "key is not known"),
        (RS.token(claims(aud=AUDIENCE) | {"lpstream_permissions": 7}), 401, "permissions"),
        (jwt.encode(claims(PUBLISH_CAM, aud=AUDIENCE), key="", algorithm="none"), 401, "'none'"),
        (
            jwt.encode(claims(PUBLISH_CAM, aud=AUDIENCE), SECRET + "x", algorithm="HS256"),
            401,
            "verify",
        ),
    ],
    ids=[
        "expired",
        "wrong-audience",
        "no-audience",
        "wrong-stream",
        "wrong-action",
        "rsa-impostor",
        "ed25519-impostor",
        "no-exp",
        "unknown-kid",
        "bad-permissions",
        "alg-none",
        "wrong-secret",
    ],
)
async def test_bad_tokens_are_refused_with_the_reason(
    jwks_file: Path, token: str, status: int, reason: str
) -> None:
    authorizer = PublishAuthorizer(jwt=verifier(jwks_file, audience=AUDIENCE))
    refusal = await authorizer.authorize(rtmp("cam", jwt_token=token))
    assert isinstance(refusal, Refusal), refusal
    assert (refusal.status, reason in refusal.reason) == (status, True), refusal
    assert token not in refusal.reason


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


async def test_an_hmac_token_made_with_a_public_key_is_not_checked_against_it(
    jwks_file: Path,
) -> None:
    """Algorithm confusion: without --jwt-secret, HS256 is not taken at all."""
    public_pem = RS.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": RS.kid}).encode())
    body = _b64(json.dumps(claims(PUBLISH_CAM)).encode())
    signature = _b64(hmac.new(public_pem, head + b"." + body, hashlib.sha256).digest())
    forged = b".".join((head, body, signature)).decode()
    only_keys = JwtVerifier(keys=JwksKeys.from_source(str(jwks_file)))
    refusal = await only_keys.verify(forged)
    assert isinstance(refusal, Refusal) and "'HS256' are not accepted" in refusal.reason


@pytest.mark.parametrize(
    ("path", "stream", "allowed"),
    [
        ("", "anything", True),
        ("cam-*", "cam-7", True),
        ("cam-*", "cam", False),
        ("~^studio[0-9]+$", "studio12", True),
        ("~^studio[0-9]+$", "studio", False),
        ("~[", "x", False),
    ],
)
async def test_permission_paths_are_names_globs_or_regular_expressions(
    path: str, stream: str, allowed: bool
) -> None:
    checks = JwtVerifier(secret=SECRET)
    permissions = [{"action": "publish", "path": path}]
    # MediaMTX also takes the list as a string holding its JSON.
    for claim in (permissions, json.dumps(permissions)):
        token = jwt.encode(claims() | {"lpstream_permissions": claim}, SECRET, algorithm="HS256")
        verified = await checks.verify(token)
        assert isinstance(verified, VerifiedToken)
        assert verified.allows("publish", stream) is allowed
        assert not verified.allows("read", stream)


async def test_a_token_without_sub_is_a_hash_of_itself() -> None:
    without_sub = {k: v for k, v in claims(PUBLISH_CAM).items() if k != "sub"}
    token = jwt.encode(without_sub, SECRET, algorithm="HS256")
    verified = await JwtVerifier(secret=SECRET).verify(token)
    assert isinstance(verified, VerifiedToken)
    assert verified.identity.startswith("jwt:") and token not in verified.identity


def test_weak_or_missing_key_material_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        JwtVerifier(secret="short")
    with pytest.raises(ConfigError, match="--jwt-jwks or --jwt-secret"):
        JwtVerifier()
    (tmp_path / "bad.json").write_text('{"keys": 3}')
    with pytest.raises(ConfigError, match="not a JSON Web Key Set"):
        JwksKeys.from_source(str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="No such file"):
        JwksKeys.from_source(str(tmp_path / "missing.json"))


async def test_play_needs_a_token_that_allows_read_on_the_stream(jwks_file: Path) -> None:
    play = PlayAuthorizer(mode="jwt", jwt=verifier(jwks_file))
    reader = SIGNERS[1].token(claims({"action": "read", "path": "cam"}))

    def request(token: str | None, stream: str = "cam") -> PlayRequest:
        return PlayRequest(stream=stream, protocol="hls", url="/hls/cam/index.m3u8", token=token)

    assert await play.authorize(request(reader)) == Grant(identity="jwt:studio-7")
    missing = await play.authorize(request(None))
    assert isinstance(missing, Refusal) and missing.status == 401
    other = await play.authorize(request(reader, "other"))
    assert isinstance(other, Refusal) and other.status == 403
    publisher = SIGNERS[1].token(claims(PUBLISH_CAM))
    assert isinstance(await play.authorize(request(publisher)), Refusal)


async def test_a_jwks_url_is_fetched_once_and_again_only_for_an_unknown_kid(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    documents = [jwks_document(SIGNERS[:1]), jwks_document(SIGNERS)]
    hook = await serve_hook(
        nursery, lambda r: Answer.of_json(documents[min(len(hook.requests), 2) - 1])
    )
    checks = JwtVerifier(keys=JwksKeys.from_source(f"{hook.url}/jwks.json"))
    rsa_token = RS.token(claims(PUBLISH_CAM))
    ec_token = SIGNERS[1].token(claims(PUBLISH_CAM))
    assert isinstance(await checks.verify(rsa_token), VerifiedToken)
    assert isinstance(await checks.verify(rsa_token), VerifiedToken)
    assert len(hook.requests) == 1  # cached
    # ES256's kid is not in the first set; fetched again at most once per 30 s.
    assert isinstance(await checks.verify(ec_token), Refusal)
    assert len(hook.requests) == 1
    mock_clock.jump(31)
    assert isinstance(await checks.verify(ec_token), VerifiedToken)
    assert len(hook.requests) == 2
    for _ in range(5):
        await checks.verify(RS.token(claims(PUBLISH_CAM), kid="made-up"))
    assert len(hook.requests) == 2


async def test_an_unreachable_jwks_url_refuses_with_503(nursery: trio.Nursery) -> None:
    hook = await serve_hook(nursery, lambda r: Answer(status=500))
    checks = JwtVerifier(keys=JwksKeys.from_source(f"{hook.url}/jwks.json"))
    refusal = await checks.verify(RS.token(claims(PUBLISH_CAM)))
    assert isinstance(refusal, Refusal) and refusal.status == 503
    assert "cannot be read" in refusal.reason
