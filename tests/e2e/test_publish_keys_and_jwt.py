"""Publish keys, JWT publishing and the per-token AI spend limit on one paid ``lpstream dev``.

Publishers are real ffmpeg (RTMP) and a real WHIP offer; the JWKS file is written here from
keys made with ``cryptography`` (``tests.access.test_jwt``). A publish key works on the URL
(``rtmp://h/live/{stream}?key=K``), as OBS's stream key (server ``rtmp://h/live``, key
``{stream}?key=K``: ffmpeg's ``-rtmp_app``/``-rtmp_playpath``, and on the wire the same
``connect`` and ``publish`` as the URL form) and on the app (``rtmp://h/live?key=K/{stream}``:
ffmpeg sends the query in ``app`` and ``tcUrl``, the name bare). A wrong key, and a JWT that is
expired, for another audience, for another stream or badly signed, is refused with the reason
and costs no ticket. A live AI session an API token starts is stopped once that token has spent
its ``--api-spend-limit``, and says so on its control WebSocket."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from lpstream.access import secret_identity
from tests.access.test_jwt import AUDIENCE, IMPOSTOR, SIGNERS, Signer, jwks_document
from tests.e2e.nodes import NodeProcess, push_command, running_dev, wait_for
from tests.e2e.test_publish_auth import whip_post

pytestmark = pytest.mark.slow

PUBLISH_KEY = "studio-key-0001"
API_TOKEN = "api-token-for-tests-0001"
PRICE_PER_SECOND = 10**12
"""One ticket's EV (the default ``--ticket-ev``) a second of live AI."""
API_SPEND_LIMIT = 12 * 10**12
"""Wei per hour one API token's sessions may spend: the first payment of a session (ten
seconds ahead) fits, the top-up a few seconds later does not."""
SPENT = re.compile(
    r"spend limit reached: .* spent (?P<spent>\d+) and the next payment is (?P<next>\d+)"
)
"""The reason an account refuses a payment (``lpstream.gateway.spending``)."""
RSA, EDDSA = (next(s for s in SIGNERS if s.algorithm == a) for a in ("RS256", "EdDSA"))
WRONG_RSA = next(s for s in IMPOSTOR if s.algorithm == "RS256")
"""The RSA signer's key id with another key: its signatures do not verify."""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """Paid (tickets are counted), so not the offchain ``dev_node`` of ``tests/conftest.py``."""
    folder = tmp_path_factory.mktemp("publish-keys-jwt")
    jwks = folder / "jwks.json"
    jwks.write_text(json.dumps(jwks_document([RSA, EDDSA])))
    flags = (
        f"--publish-key={PUBLISH_KEY}",
        f"--jwt-jwks={jwks}",
        f"--jwt-audience={AUDIENCE}",
        f"--api-token={API_TOKEN}",
        f"--api-spend-limit={API_SPEND_LIMIT}",
        f"--price-per-second={PRICE_PER_SECOND}",
        "--block-time=0.2",
        f"--data-dir={folder / 'data'}",
    )
    with running_dev(folder, *flags, name="dev-keys", offchain=False, ready_timeout=90) as n:
        yield n


def token(signer: Signer, stream: str, *, audience: str = AUDIENCE, ttl: float = 600) -> str:
    """A JWT of ``signer`` allowing to publish ``stream``, for ``audience``, ``ttl`` s more."""
    claims = {
        "sub": "studio-jwt",
        "aud": audience,
        "exp": int(time.time() + ttl),
        "lpstream_permissions": [{"action": "publish", "path": stream}],
    }
    return signer.token(claims)


def api(node: NodeProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """``method /api/...`` with the API token; the status and the JSON answer (or None)."""
    request = urllib.request.Request(
        f"{node.url('http')}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            status, data = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, data = exc.code, exc.read()
    return status, json.loads(data) if data else None


def status(node: NodeProcess) -> dict[str, Any]:
    code, answer = api(node, "GET", "/api/status")
    assert code == 200, answer
    return dict(answer)


def tickets_sent(node: NodeProcess) -> int:
    return int(status(node)["payments"]["gateway"]["tickets_sent"])


def live(node: NodeProcess, stream: str) -> bool:
    return bool(status(node)["streams"].get(stream, {}).get("live"))


def push(
    url: str, *, seconds: float = 3, rtmp_options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[bytes]:
    """ffmpeg publishing 320x240 to ``url`` with ``rtmp_options`` (e.g. ``-rtmp_app``)."""
    cmd = push_command(url, seconds=seconds, size="320x240")
    cmd[-1:-1] = rtmp_options  # output options come before the output
    return subprocess.run(cmd, capture_output=True, timeout=seconds + 30)


def test_wrong_keys_and_bad_tokens_are_refused_with_the_reason_and_cost_no_ticket(
    node: NodeProcess,
) -> None:
    rtmp = f"{node.url('rtmp')}/live"
    before = tickets_sent(node)
    wrong_key = push(f"{rtmp}/nokey?key=not-the-studio-key")
    assert wrong_key.returncode != 0
    assert "a stream key or token was given, but it is not valid here" in wrong_key.stderr.decode()
    code, reason = whip_post(node, "nokey", "not-the-studio-key")
    assert code == 401 and "not valid here" in reason, reason

    refused = {
        "the token has expired": token(RSA, "jwt-bad", ttl=-60),
        "the token is not for this node (aud)": token(RSA, "jwt-bad", audience="elsewhere"),
        "the token does not allow to publish 'jwt-bad'": token(RSA, "jwt-ok"),
        "the token's signature does not verify": token(WRONG_RSA, "jwt-bad"),
    }
    for why, jwt in refused.items():
        pushed = push(f"{rtmp}/jwt-bad?jwt={jwt}")
        assert pushed.returncode != 0 and why in pushed.stderr.decode(), (why, pushed.stderr)
        code, reason = whip_post(node, "jwt-bad", jwt)
        assert code in (401, 403) and why in reason, (why, code, reason)
        # 401 for a token that is not valid, 403 for a valid one that does not allow this.
        assert (code == 403) == why.startswith("the token does not allow"), (why, code)

    assert tickets_sent(node) == before
    streams = status(node)["streams"]
    assert "nokey" not in streams and "jwt-bad" not in streams


def test_a_publish_key_opens_rtmp_on_the_url_as_the_obs_key_and_on_the_app_and_whip(
    node: NodeProcess,
) -> None:
    host = node.url("rtmp")
    on_url = push(f"{host}/live/key-url?key={PUBLISH_KEY}")
    assert on_url.returncode == 0, on_url.stderr.decode()
    obs = push(
        f"{host}/live",
        rtmp_options=("-rtmp_app", "live", "-rtmp_playpath", f"key-obs?key={PUBLISH_KEY}"),
    )
    assert obs.returncode == 0, obs.stderr.decode()
    on_app = push(f"{host}/live?key={PUBLISH_KEY}/key-app")
    assert on_app.returncode == 0, on_app.stderr.decode()
    streams = status(node)["streams"]
    assert {"key-url", "key-obs", "key-app"} <= streams.keys(), streams.keys()
    code, answer = whip_post(node, "key-whip", PUBLISH_KEY)
    assert code == 201, answer


def test_a_jwt_allowing_its_stream_publishes_it_over_rtmp_and_whip(node: NodeProcess) -> None:
    before = tickets_sent(node)
    pushed = push(f"{node.url('rtmp')}/live/jwt-ok?jwt={token(RSA, 'jwt-ok')}", seconds=5)
    assert pushed.returncode == 0, pushed.stderr.decode()
    assert tickets_sent(node) > before  # it was transcoded, and paid for
    wait_for(lambda: not live(node, "jwt-ok"), 10, "the RTMP publish to end")
    # The same publisher (the token's subject), another key type, as a WHIP bearer token.
    code, answer = whip_post(node, "jwt-ok", token(EDDSA, "jwt-ok"))
    assert code == 201, answer


async def stopped_session_events(url: str) -> list[dict[str, Any]]:
    """The events of a live AI control WebSocket up to and including ``stopped``."""
    events: list[dict[str, Any]] = []
    async with open_websocket_url(url) as ws:
        with trio.fail_after(60):
            while not events or events[-1]["type"] != "stopped":
                events.append(json.loads(await ws.get_message()))
    # The node closes the socket after ``stopped``; when its close arrives as we leave,
    # trio-websocket 0.12 returns from its close without closing the TCP stream.
    await ws._stream.aclose()
    return events


def test_an_api_tokens_ai_session_is_stopped_past_its_spend_limit(node: NodeProcess) -> None:
    stream = "ai-capped"
    cmd = push_command(
        f"{node.url('rtmp')}/live/{stream}?key={PUBLISH_KEY}", seconds=60, size="320x240"
    )
    publisher = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: live(node, stream), 20, "the stream to go live")
        code, started = api(
            node, "POST", f"/api/ai/{stream}", {"pipeline": "noop", "width": 128, "height": 128}
        )
        assert code == 201, started
        control = node.url("http").replace("http://", "ws://")
        events = trio.run(
            stopped_session_events, f"{control}/api/ai/{stream}/control?token={API_TOKEN}"
        )
        errors = [e["message"] for e in events if e["type"] == "error"]
        reached = next(filter(None, map(SPENT.search, errors)), None)
        assert reached is not None and "--api-spend-limit" in reached.string, events
        # It ran and paid first; the payment that would pass the limit was never made.
        spent, refused = int(reached["spent"]), int(reached["next"])
        assert 0 < spent <= API_SPEND_LIMIT < spent + refused, reached.string
        assert "spend limit reached" in events[-1]["reason"], events
        code, session = api(node, "GET", f"/api/ai/{stream}")
        assert code == 200 and not session["running"], session
        assert session["started_by"] == secret_identity("api", API_TOKEN), session
        assert "spend limit reached" in session["stopped"], session
        assert live(node, stream)  # only the token's session stops; the stream goes on
    finally:
        publisher.kill()
        publisher.wait()
