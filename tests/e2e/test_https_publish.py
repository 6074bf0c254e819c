"""``lpstream dev`` over HTTPS (issue 13): a browser publishes WHIP from the page, and the
long-lived requests work over HTTP/1.1 and HTTP/2.

The node runs with a certificate from a test CA (``tests.lpstream.test_tls``). Headless
Chromium trusts it by the certificate's public key (``--ignore-certificate-errors-spki-list``),
loads ``/publish/{stream}`` over HTTPS (HTTP/2) and publishes its fake camera with WHIP; the
stream's ladder is then checked over HTTPS and played in a second tab. The other test follows
LL-HLS blocking reloads and steers live AI over its control WebSocket, each over HTTP/1.1 and
over HTTP/2.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from benchmarks.harness.browser import chromium_path, open_browser
from tests.e2e.nodes import NodeProcess, push_command, wait_for
from tests.lpstream.test_tls import (
    Certificates,
    H2WebSocket,
    client_context,
    https_get,
    make_certificates,
)

pytestmark = [pytest.mark.slow, pytest.mark.solo]

HINT_LINE = re.compile(r'^#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.ts"$', re.MULTILINE)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def dev_flags(certs: Certificates) -> tuple[str, ...]:
    return ("--whip-host=127.0.0.1", f"--tls-cert={certs.cert}", f"--tls-key={certs.key}")


async def test_a_browser_publishes_with_whip_over_https_and_the_stream_plays(
    dev_node: NodeProcess, certs: Certificates, tmp_path: Path
) -> None:
    if chromium_path() is None:
        pytest.fail("chromium is not installed: run scripts/setup")
    base = dev_node.url("https")
    trust = f"--ignore-certificate-errors-spki-list={certs.spki_sha256}"
    async with open_browser(tmp_path / "chromium.log", trust) as chromium:
        camera = await chromium.new_page(f"{base}/publish/webcam")
        protocol = "performance.getEntriesByType('navigation')[0].nextHopProtocol"
        assert await camera.evaluate(protocol) == "h2"
        state = await camera.wait_for(
            "window.publisher && (window.publisher.error || window.publisher.state)",
            20,
            lambda s: s in ("connection connected",) or str(s).startswith("error"),
        )
        assert state == "connection connected", state
        master = await trio.to_thread.run_sync(
            lambda: wait_for(
                lambda: (r := https_get(f"{base}/hls/webcam/index.m3u8", certs))[0] == 200 and r[1],
                30,
                "the master playlist of the WHIP stream",
            )
        )
        text = master.decode()
        assert 'NAME="source"' in text and "RESOLUTION=426x240" in text, text
        viewer = await chromium.new_page(f"{base}/watch/webcam")
        clock = "document.getElementById('video').currentTime"
        start: float = await viewer.wait_for(clock, 40, lambda t: t > 0.5)
        await viewer.wait_for(clock, 20, lambda t: t > start + 2)
        assert await viewer.evaluate(protocol) == "h2"
        status = await trio.to_thread.run_sync(lambda: https_get(f"{base}/api/status", certs))
        assert status[0] == 200 and '"webcam"' in status[1].decode()


def curl_get(url: str, certs: Certificates, version: str) -> tuple[str, str]:
    """``GET url`` with curl trusting the test CA, as HTTP ``version`` (1.1 or 2): the body
    and the version curl negotiated."""
    options = ["--cacert", str(certs.ca), f"--http{version}", "--write-out", "\n%{http_version}"]
    answer = subprocess.run(
        ["curl", "--silent", "--show-error", "--fail", "--max-time", "15", *options, url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert answer.returncode == 0, answer
    body, _, negotiated = answer.stdout.rpartition("\n")
    return body, negotiated


def post_json(url: str, certs: Certificates, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10, context=client_context(certs)) as reply:
        return int(reply.status), json.loads(reply.read())


async def wait_for_event(receive: Any, kind: str) -> dict[str, Any]:
    """The next event of type ``kind`` from a live AI control socket."""
    with trio.fail_after(30):
        while (event := json.loads(await receive()))["type"] != kind:
            pass
    return dict(event)


async def test_blocking_playlist_reloads_and_the_ai_websocket_work_over_http11_and_http2(
    dev_node: NodeProcess, certs: Certificates
) -> None:
    base, stream = dev_node.url("https"), "longpoll"
    media = f"{base}/hls/{stream}/source/index.m3u8"
    publisher = await trio.lowlevel.open_process(
        push_command(f"{dev_node.url('rtmp')}/live/{stream}", seconds=30, gop=30, size="640x360"),
        stderr=subprocess.DEVNULL,
    )
    try:
        await trio.to_thread.run_sync(
            lambda: wait_for(lambda: https_get(media, certs)[0] == 200, 20, "the playlist")
        )
        for version in ("1.1", "2", "1.1", "2"):
            text = (await trio.to_thread.run_sync(https_get, media, certs))[1].decode()
            hint = HINT_LINE.search(text)
            assert hint is not None, text
            msn, part = hint.groups()
            # Held until the hinted part is cut, then listed.
            held, negotiated = await trio.to_thread.run_sync(
                curl_get, f"{media}?_HLS_msn={msn}&_HLS_part={part}", certs, version
            )
            assert negotiated == version
            assert f'URI="{msn}.{part}.ts"' in held, held

        status, answer = await trio.to_thread.run_sync(
            post_json,
            f"{base}/api/ai/{stream}",
            certs,
            {"pipeline": "color-grade", "params": {"look": "mono", "strength": 0.0}},
        )
        assert status == 201, answer
        target = f"/api/ai/{stream}/control"
        wss = base.replace("https://", "wss://") + target
        async with open_websocket_url(wss, ssl_context=client_context(certs)) as ws:
            await wait_for_event(ws.get_message, "stats")  # the session runs on a worker
            await ws.send_message(json.dumps({"params": {"strength": 1.0}}))
            assert (await wait_for_event(ws.get_message, "params"))["params"]["strength"] == 1.0
        port = int(base.rsplit(":", 1)[1])
        with trio.fail_after(30):
            h2_ws = await H2WebSocket.open(port, certs, target)
        await wait_for_event(h2_ws.receive, "stats")
        await h2_ws.send(json.dumps({"params": {"strength": 0.5}}))
        assert (await wait_for_event(h2_ws.receive, "params"))["params"]["strength"] == 0.5
        await h2_ws.aclose()
    finally:
        publisher.kill()
        await publisher.wait()
