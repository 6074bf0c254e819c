"""The auth webhook, against a real HTTP server on loopback that allows one stream and
refuses another: what the node sends, what an answer may set, and every way a hook can fail."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from lpstream.access import (
    AuthWebhook,
    Grant,
    PlayAuthorizer,
    PlayRequest,
    PublishAuthorizer,
    PublishRequest,
    Refusal,
    grant_from_answer,
    secret_identity,
)
from lpstream.media import VideoProfile
from tests.access.hooks import Answer, HookRequest, serve_hook

PROFILE = {
    "name": "720p",
    "width": 1280,
    "height": 720,
    "bitrate": 3_000_000,
    "fps": 30,
    "fpsDen": 1,
    "profile": "H264Main",
    "gop": "2.0",
}


def studio_hook(request: HookRequest) -> Answer:
    """Allows ``allowed`` (setting everything an answer may set), refuses ``refused``."""
    body = request.json()
    if body["stream"] == "allowed":
        return Answer.of_json(
            {
                "manifestID": "allowed",  # go-livepeer's field, read past
                "identity": "studio-7",
                "profiles": [PROFILE],
                "pipeline": "cartoon",
                "params": {"strength": 0.5},
                "record": True,
                "spend_limit_wei": "123456789012345678901234567890",
            }
        )
    if body["stream"] == "plain":
        return Answer(status=204)
    return Answer(status=403, body=b"stream refused: not in the schedule\n")


def rtmp(stream: str, key: str | None = "k3y-of-the-studio") -> PublishRequest:
    name = stream if key is None else f"{stream}?key={key}"
    return PublishRequest.from_rtmp(
        tc_url="rtmp://gw:1935/live", app="live", publish_name=name, remote_addr="192.0.2.4:5000"
    )


def authorizer(url: str, *, timeout: float = 2.0, cache: float = 10.0) -> PublishAuthorizer:
    return PublishAuthorizer(
        webhook=AuthWebhook.from_url(url, timeout=timeout, cache_seconds=cache)
    )


async def test_the_hook_allows_one_stream_with_what_it_sets_and_refuses_another(
    nursery: trio.Nursery,
) -> None:
    hook = await serve_hook(nursery, studio_hook)
    publish = authorizer(f"{hook.url}/auth")
    grant = await publish.authorize(rtmp("allowed"))
    assert grant == Grant(
        identity="studio-7",
        profiles=(VideoProfile.from_json(PROFILE),),
        pipeline="cartoon",
        params={"strength": 0.5},
        record=True,
        spend_limit_wei=123456789012345678901234567890,
    )
    refusal = await publish.authorize(rtmp("refused"))
    assert refusal == Refusal(
        reason="refused by the auth webhook (HTTP 403): stream refused: not in the schedule",
        status=403,
    )
    first = hook.requests[0]
    assert (first.method, first.path) == ("POST", "/auth")
    assert first.json() == {
        "stream": "allowed",
        "protocol": "rtmp",
        "url": "rtmp://gw:1935/live/allowed?key=k3y-of-the-studio",
        "query": "key=k3y-of-the-studio",
        "remote_addr": "192.0.2.4:5000",
        "token": "k3y-of-the-studio",
    }


async def test_an_empty_2xx_allows_as_the_key_or_the_address(nursery: trio.Nursery) -> None:
    hook = await serve_hook(nursery, studio_hook)
    publish = authorizer(hook.url)
    keyed = await publish.authorize(rtmp("plain"))
    assert keyed == Grant(identity=secret_identity("key", "k3y-of-the-studio"))
    assert await publish.authorize(rtmp("plain", key=None)) == Grant(identity="addr:192.0.2.4")
    assert "token" not in hook.requests[-1].json()


async def test_whip_sends_its_bearer_token(nursery: trio.Nursery) -> None:
    hook = await serve_hook(nursery, studio_hook)
    request = PublishRequest(
        stream="plain", protocol="whip", url="http://gw/whip/plain", bearer="b34rer-token"
    )
    assert isinstance(await authorizer(hook.url).authorize(request), Grant)
    sent = hook.requests[0].json()
    assert (sent["protocol"], sent["token"], sent["query"]) == ("whip", "b34rer-token", "")


async def test_decisions_are_remembered_per_stream_protocol_and_token(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    hook = await serve_hook(nursery, studio_hook)
    publish = authorizer(hook.url, cache=10)
    for _ in range(3):
        assert isinstance(await publish.authorize(rtmp("allowed")), Grant)
        assert isinstance(await publish.authorize(rtmp("refused")), Refusal)
    assert len(hook.requests) == 2
    await publish.authorize(rtmp("allowed", key="another-key-1"))  # another token: asked
    assert len(hook.requests) == 3
    mock_clock.jump(10)
    await publish.authorize(rtmp("allowed"))  # expired: asked again
    assert len(hook.requests) == 4


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        (Answer(status=401, body=b"who are you"), 401, "refused by the auth webhook: who are you"),
        (Answer(status=500), 503, "the auth webhook failed (HTTP 500)"),
        (Answer(status=302), 403, "HTTP 302"),
        (Answer(body=b"<html>ok</html>"), 503, "answer is not JSON"),
        (Answer.of_json(["a", "list"]), 503, "a JSON list, not an object"),
        (Answer(body=b"{" + b" " * 70_000 + b"}"), 503, "more than the 65536"),
        (Answer(body=b'{"a":' * 20 + b"1" + b"}" * 20), 503, "nested deeper than 8"),
        (Answer.of_json({"profiles": [{"name": "x"}]}), 503, "missing 'width'"),
        (Answer.of_json({"params": {"a": [1]}}), 503, "parameter 'a'"),
        (Answer.of_json({"record": "yes"}), 503, "record: true or false"),
        (Answer.of_json({"spend_limit_wei": -5}), 503, "spend_limit_wei"),
        (Answer.of_json({"identity": ""}), 503, "identity"),
        (Answer(delay=5), 503, "no answer within 0.3 s"),
    ],
    ids=[
        "401",
        "500",
        "302",
        "html",
        "list",
        "oversized",
        "deep",
        "bad-profile",
        "bad-params",
        "bad-record",
        "bad-limit",
        "bad-identity",
        "slow",
    ],
)
async def test_a_hook_that_fails_or_breaks_the_contract_refuses(
    nursery: trio.Nursery, answer: Answer, status: int, reason: str
) -> None:
    hook = await serve_hook(nursery, lambda r: answer)
    refusal = await authorizer(hook.url, timeout=0.3).authorize(rtmp("any"))
    assert isinstance(refusal, Refusal), refusal
    assert refusal.status == status and reason in refusal.reason, refusal


async def test_an_unreachable_hook_refuses_and_is_asked_again_next_time() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    webhook = AuthWebhook.from_url(f"http://127.0.0.1:{port}/", timeout=1, cache_seconds=10)
    refusal = await PublishAuthorizer(webhook=webhook).authorize(rtmp("any"))
    assert isinstance(refusal, Refusal) and refusal.status == 503
    assert (
        "no decision from the auth webhook" in refusal.reason and "127.0.0.1" not in refusal.reason
    )
    assert len(webhook.cache) == 0  # not remembered: the hook may be back in a moment


async def test_play_through_the_webhook(nursery: trio.Nursery) -> None:
    def viewers(request: HookRequest) -> Answer:
        body: dict[str, Any] = request.json()
        return Answer(status=200 if body["token"] == "ticket-42" else 403)

    hook = await serve_hook(nursery, viewers)
    webhook = AuthWebhook.from_url(hook.url, timeout=2, cache_seconds=10)
    play = PlayAuthorizer(mode="webhook", webhook=webhook)

    def request(token: str | None) -> PlayRequest:
        return PlayRequest(
            stream="cam",
            protocol="whep",
            url="http://gw/whep/cam",
            remote_addr="192.0.2.9:1",
            token=token,
        )

    assert await play.authorize(request("ticket-42")) == Grant(
        identity=secret_identity("key", "ticket-42")
    )
    assert isinstance(await play.authorize(request("ticket-43")), Refusal)
    missing = await play.authorize(request(None))
    assert isinstance(missing, Refusal) and missing.status == 401
    assert hook.requests[0].json() == {
        "stream": "cam",
        "protocol": "whep",
        "url": "http://gw/whep/cam",
        "remote_addr": "192.0.2.9:1",
        "token": "ticket-42",
    }
    assert len(hook.requests) == 2  # no token: refused without asking


def test_an_answer_without_our_fields_is_a_plain_grant() -> None:
    go_livepeer = {"manifestID": "m", "streamKey": "s", "presets": ["P240p30fps16x9"]}
    assert grant_from_answer(go_livepeer, identity="key:x") == Grant(identity="key:x")
    assert grant_from_answer(None, identity="addr:1.2.3.4") == Grant(identity="addr:1.2.3.4")
