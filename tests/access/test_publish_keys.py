"""Publish keys: where a stream key comes from (RTMP URL, OBS stream key, WHIP bearer), how it
is matched, who it makes the publisher, and what a node without publish settings does."""

from __future__ import annotations

from pathlib import Path

import pytest

from lpstream.access import (
    Grant,
    NameRegistry,
    NodeAccess,
    PublishAuthorizer,
    PublishRequest,
    Refusal,
    SecretSet,
    read_secret_file,
    secret_identity,
)
from lpstream.config import AccessSection
from lpstream.errors import ConfigError

KEY = "k3y-of-the-studio"
OTHER = "k3y-of-someone-else"


def rtmp(publish_name: str, tc_url: str = "rtmp://gw.example:1935/live") -> PublishRequest:
    return PublishRequest.from_rtmp(
        tc_url=tc_url, app="live", publish_name=publish_name, remote_addr="198.51.100.7:50000"
    )


def whip(bearer: str | None, stream: str = "cam") -> PublishRequest:
    return PublishRequest(
        stream=stream,
        protocol="whip",
        url=f"http://gw.example/whip/{stream}",
        remote_addr="[2001:db8::5]:443",
        bearer=bearer,
    )


def keyed(*keys: str) -> PublishAuthorizer:
    return PublishAuthorizer(keys=SecretSet.of("key", keys, flag="--publish-key"))


def test_the_stream_key_comes_from_the_url_the_obs_key_or_the_bearer() -> None:
    # ffmpeg: rtmp://gw/live/cam?key=K sends the publish name "cam?key=K".
    request = rtmp(f"cam?key={KEY}")
    assert (request.stream, request.stream_key, request.query) == ("cam", KEY, f"key={KEY}")
    assert request.url == f"rtmp://gw.example:1935/live/cam?key={KEY}"
    # A client that puts the query on the app's URL instead.
    on_app = rtmp("cam", tc_url=f"rtmp://gw.example/live?key={KEY}")
    assert (on_app.stream, on_app.stream_key) == ("cam", KEY)
    assert whip(KEY).stream_key == KEY
    assert rtmp("cam").stream_key is None


async def test_a_matching_key_passes_as_a_hash_of_itself() -> None:
    authorizer = keyed(OTHER, KEY)
    for request in (rtmp(f"cam?key={KEY}"), whip(KEY)):
        grant = await authorizer.authorize(request)
        assert grant == Grant(identity=secret_identity("key", KEY))
        assert KEY not in grant.identity and grant.identity.startswith("key:")
    assert (await authorizer.authorize(rtmp(f"cam?key={OTHER}"))) != grant  # one per key


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (rtmp("cam"), "publishing here needs a stream key or token"),
        (rtmp("cam?key=wrong-key-123"), "is not valid here"),
        (rtmp(f"cam?key={KEY}x"), "is not valid here"),
        (whip(None), "publishing here needs a stream key or token"),
        (whip(KEY[:-1]), "is not valid here"),
    ],
    ids=["none", "wrong", "longer", "whip-none", "whip-shorter"],
)
async def test_no_key_or_a_wrong_one_is_refused_with_the_reason(
    request_: PublishRequest, reason: str
) -> None:
    refusal = await keyed(KEY).authorize(request_)
    assert isinstance(refusal, Refusal) and refusal.status == 401
    assert reason in refusal.reason and KEY not in refusal.reason


async def test_without_publish_settings_anyone_publishes_as_their_address() -> None:
    open_node = PublishAuthorizer()
    assert not open_node.enforced
    assert await open_node.authorize(rtmp("cam")) == Grant(identity="addr:198.51.100.7")
    assert await open_node.authorize(whip(None)) == Grant(identity="addr:2001:db8::5")


async def test_the_whip_token_keeps_guarding_whip_alone_and_passes_beside_keys() -> None:
    token = SecretSet.of("whip", ["w1"], flag="--whip-token", min_length=1)
    only_whip = PublishAuthorizer(whip_token=token)
    assert isinstance(await only_whip.authorize(whip("w1")), Grant)
    assert isinstance(await only_whip.authorize(whip(None)), Refusal)
    assert isinstance(await only_whip.authorize(whip("w2")), Refusal)
    assert isinstance(await only_whip.authorize(rtmp("cam")), Grant)  # RTMP as before
    with_keys = PublishAuthorizer(keys=SecretSet.of("key", [KEY], flag="k"), whip_token=token)
    assert isinstance(await with_keys.authorize(whip("w1")), Grant)
    assert isinstance(await with_keys.authorize(whip(KEY)), Grant)
    assert isinstance(await with_keys.authorize(rtmp("cam?key=w1")), Refusal)  # WHIP's only


def test_a_keys_file_has_one_a_line_with_comments(tmp_path: Path) -> None:
    file = tmp_path / "keys"
    file.write_text(f"# the studio\n{KEY}  # main\n\n   {OTHER}\n")
    assert read_secret_file(file, flag="--publish-keys") == (KEY, OTHER)
    (tmp_path / "empty").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=r"--publish-keys .*no secret in it"):
        read_secret_file(tmp_path / "empty", flag="--publish-keys")
    with pytest.raises(ConfigError, match=r"--publish-keys .*No such file"):
        read_secret_file(tmp_path / "missing", flag="--publish-keys")


@pytest.mark.parametrize("secret", ["short", "has space in it", "x" * 5000, "********"])
def test_unusable_keys_are_a_configuration_error(secret: str) -> None:
    with pytest.raises(ConfigError, match="--publish-key"):
        SecretSet.of("key", [secret], flag="--publish-key")


async def test_the_access_section_builds_keys_from_flags_and_file(tmp_path: Path) -> None:
    file = tmp_path / "keys"
    file.write_text(f"{OTHER}\n")
    access = NodeAccess.from_section(AccessSection(publish_key=(KEY,), publish_keys=str(file)))
    assert access.publish.enforced and access.names.enforced
    assert access.play is None and access.api_tokens is None
    for key in (KEY, OTHER):
        assert isinstance(await access.publish.authorize(rtmp(f"cam?key={key}")), Grant)
    assert not NodeAccess.from_section(AccessSection()).names.enforced


def test_names_without_publish_authorization_are_first_come_first_served() -> None:
    names = NameRegistry(enforced=False)
    assert names.claim("cam", "addr:1.2.3.4", now=0)
    names.release("cam", "addr:1.2.3.4", now=1)
    assert names.may_publish("cam", "addr:5.6.7.8", now=1.5)
