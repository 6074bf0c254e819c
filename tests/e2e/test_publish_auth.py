"""Publish authorization on a paid ``lpstream dev`` asking an auth webhook (a few lines of HTTP
server here): refused RTMP (real ffmpeg) and WHIP (a real offer) publishers are told why and
cost no ticket; an allowed one plays with the ladder the webhook set; a stream name stays its
key's owner's through ``--name-grace``; a stream's spend limit ends it with the reason."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from ingest.whip.bridge import open_asyncio_loop
from tests.e2e.nodes import NodeProcess, http_get, http_json, push_command, running_dev, wait_for
from tests.ingest.test_whip import AiortcPublisher

pytestmark = pytest.mark.slow

KEY_A = "studio-a-key-0001"
KEY_B = "studio-b-key-0002"
LADDER = [{"name": "144p", "width": 256, "height": 144, "bitrate": 200_000, "fps": 30}]


def decide(request: dict[str, Any]) -> tuple[int, dict[str, Any] | str]:
    """The operator's rules: ``refused`` never, ``capped`` with a tiny spend limit, the rest
    with one of the two keys (``allowed`` with a ladder of its own)."""
    stream = request["stream"]
    if stream == "refused":
        return 403, "no publishing on this name"
    if request.get("token") not in (KEY_A, KEY_B):
        return 401, "a studio key is required"
    if stream == "allowed":
        return 200, {"profiles": LADDER}
    if stream == "capped":
        return 200, {"spend_limit_wei": 1}
    return 200, {}


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status, answer = decide(json.loads(body))
        data = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    folder = tmp_path_factory.mktemp("publish-auth")
    flags = (
        f"--auth-webhook-url=http://127.0.0.1:{hook.server_address[1]}/auth",
        "--auth-webhook-cache=0",
        "--name-grace=30",
        "--block-time=0.2",
        f"--data-dir={folder / 'data'}",
    )
    try:
        with running_dev(folder, *flags, name="dev-auth", offchain=False, ready_timeout=90) as n:
            yield n
    finally:
        hook.shutdown()
        hook.server_close()


def tickets_sent(node: NodeProcess) -> int:
    return int(http_json(f"{node.url('http')}/api/status")["payments"]["gateway"]["tickets_sent"])


def stream_status(node: NodeProcess, stream: str) -> dict[str, Any]:
    status: dict[str, Any] = http_json(f"{node.url('http')}/api/status")["streams"][stream]
    return status


def push(node: NodeProcess, path: str, seconds: float = 4) -> subprocess.CompletedProcess[bytes]:
    cmd = push_command(f"{node.url('rtmp')}/live/{path}", seconds=seconds, size="320x180")
    return subprocess.run(cmd, capture_output=True, timeout=seconds + 30)


def whip_post(node: NodeProcess, stream: str, bearer: str | None) -> tuple[int, str]:
    async def make_offer() -> str:
        async with open_asyncio_loop("whip-client") as loop:
            client = AiortcPublisher(audio=False)
            sdp: str = await loop.run(client.offer)
            await loop.run(client.close)
        return sdp

    headers = {"Content-Type": "application/sdp"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    request = urllib.request.Request(
        f"{node.url('http')}/whip/{stream}",
        data=trio.run(make_offer).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_refused_publishers_hear_why_and_cost_no_ticket_and_the_allowed_one_plays(
    node: NodeProcess,
) -> None:
    refused = push(node, f"refused?key={KEY_A}")
    assert refused.returncode != 0
    assert "no publishing on this name" in refused.stderr.decode()
    keyless = push(node, "somecam")
    assert keyless.returncode != 0 and "a studio key is required" in keyless.stderr.decode()
    status, reason = whip_post(node, "refused", KEY_A)
    assert status == 403 and "no publishing on this name" in reason
    status, reason = whip_post(node, "othercam", None)
    assert status == 401 and "a studio key is required" in reason
    assert tickets_sent(node) == 0
    streams = http_json(f"{node.url('http')}/api/status")["streams"]
    assert "refused" not in streams and "somecam" not in streams

    # The OBS form: the stream key field holds "{stream}?key=...".
    allowed = push(node, f"allowed?key={KEY_A}", seconds=8)
    assert allowed.returncode == 0, allowed.stderr.decode()
    code, master = http_get(f"{node.url('http')}/hls/allowed/index.m3u8")
    assert code == 200
    assert "144p/index.m3u8" in master.decode() and "360p" not in master.decode()
    assert tickets_sent(node) > 0


def test_a_dropped_publishers_name_is_refused_to_another_key_within_the_grace(
    node: NodeProcess,
) -> None:
    first = push(node, f"grace?key={KEY_A}")
    assert first.returncode == 0, first.stderr.decode()
    wait_for(lambda: not stream_status(node, "grace")["live"], 10, "the stream to end")
    other = push(node, f"grace?key={KEY_B}")
    assert other.returncode != 0
    assert "kept for its publisher" in other.stderr.decode()
    back = push(node, f"grace?key={KEY_A}")
    assert back.returncode == 0, back.stderr.decode()


def test_a_stream_past_its_spend_limit_is_ended_with_the_reason(node: NodeProcess) -> None:
    capped = push(node, f"capped?key={KEY_B}", seconds=20)
    assert capped.returncode != 0
    assert "spend limit reached" in capped.stderr.decode()
    wait_for(
        lambda: not http_json(f"{node.url('http')}/api/status")["streams"]["capped"]["live"],
        10,
        "the capped stream to end",
    )
