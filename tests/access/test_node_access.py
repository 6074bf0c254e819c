"""Access control on a real ``lpstream dev --offchain``: real ffmpeg publishes over RTMP; a
player with the viewer's token gets every playlist, segment and part and decodes the stream,
one without gets 401; WHEP wants a bearer; the API wants its token; a node whose HTTP is
reachable from other machines without an API token says so and serves the API to loopback
clients only."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import av
import jwt
import pytest

from tests.e2e.nodes import NodeProcess, http_get, push_command, running_dev, wait_for

SECRET = "node-play-secret-of-at-least-32-bytes"
API_TOKEN = "node-api-token-1"
STREAM = "guarded"


def token_for(stream: str, action: str = "read") -> str:
    claims = {
        "sub": "viewer",
        "exp": int(time.time() + 600),
        "lpstream_permissions": [{"action": action, "path": stream}],
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def dev_flags() -> tuple[str, ...]:
    return ("--play-auth=jwt", f"--jwt-secret={SECRET}", f"--api-token={API_TOKEN}")


def request(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, bytes]:
    call = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(call, timeout=10) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


URI = re.compile(r'URI="([^"]*)"')


def followed_uris(playlist: str) -> list[str]:
    """The URIs a player follows now: URI lines, parts and rendition reports (not the
    preload hint, a part still to come)."""
    found = []
    for line in playlist.splitlines():
        if line and not line.startswith("#"):
            found.append(line)
        elif not line.startswith("#EXT-X-PRELOAD-HINT"):
            found += URI.findall(line)
    return found


@pytest.mark.slow
def test_a_viewer_with_the_token_plays_and_one_without_is_refused(dev_node: NodeProcess) -> None:
    base = dev_node.url("http")
    token = token_for(STREAM)
    query = f"token={urllib.parse.quote(token)}"
    master = f"{base}/hls/{STREAM}/index.m3u8"
    publisher = subprocess.Popen(
        push_command(
            f"{dev_node.url('rtmp')}/live/{STREAM}?jwt={token_for(STREAM, 'publish')}",
            seconds=10,
            size="640x360",
        ),
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: http_get(f"{master}?{query}")[0] == 200, 25, "the master playlist")
        # PyAV (FFmpeg's HLS demuxer) follows the playlists' URIs, each with the token.
        with av.open(f"{master}?{query}", timeout=10) as container:
            frames = 0
            for _ in container.decode(video=0):
                frames += 1
                if frames >= 30:
                    break
        assert frames >= 30
        # Every URI of every playlist, with the token carried in it, answers.
        pending, seen = [f"{master}?{query}"], set()
        while pending:
            url = pending.pop()
            if url in seen:
                continue
            seen.add(url)
            status, body = http_get(url)
            assert status == 200, url
            if url.split("?")[0].endswith(".m3u8"):
                for uri in followed_uris(body.decode()):
                    assert uri.endswith(f"?{query}"), (url, uri)
                    pending.append(urllib.parse.urljoin(url, uri))
            else:
                assert body[:1] == b"\x47" and len(body) % 188 == 0
        segments = [u for u in seen if re.search(r"/\d+\.ts\?", u)]
        assert len(segments) >= 2, seen
        for url in [master, f"{base}/hls/{STREAM}/source/index.m3u8", segments[0].split("?")[0]]:
            status, body = http_get(url)
            assert status == 401, (url, status, body)
        other = f"token={urllib.parse.quote(token_for('someone-else'))}"
        assert http_get(f"{master}?{other}")[0] == 403
    finally:
        _, err = publisher.communicate(timeout=40)
    assert publisher.returncode == 0, err.decode()


def test_whep_and_the_api_want_their_tokens(dev_node: NodeProcess) -> None:
    base = dev_node.url("http")
    sdp = {"Content-Type": "application/sdp"}
    status, _ = request(f"{base}/whep/{STREAM}", method="POST", headers=sdp, body=b"v=0\r\n")
    assert status == 401
    viewer = {**sdp, "Authorization": f"Bearer {token_for(STREAM)}"}
    status, body = request(f"{base}/whep/{STREAM}", method="POST", headers=viewer, body=b"v=0\r\n")
    assert status == 415 and b"offer has no video" in body  # let in: WHEP reads the offer
    for path in ("/api/status", "/metrics"):
        assert request(f"{base}{path}")[0] == 401
        bearer = {"Authorization": f"Bearer {API_TOKEN}"}
        assert request(f"{base}{path}", headers=bearer)[0] == 200


def _own_address() -> str | None:
    """An address of this machine other than loopback, if it has one."""
    for *_, sockaddr in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
        host = str(sockaddr[0])
        if not host.startswith("127."):
            return host
    return None


def test_a_node_open_to_others_without_an_api_token_warns_and_serves_loopback_only(
    tmp_path: Path,
) -> None:
    with running_dev(tmp_path, "--http-addr=0.0.0.0:0") as node:
        port = node.url("http").rsplit(":", 1)[1]
        log = node.log_path.read_text()
        assert "no --api-token is set" in log, log[-2000:]
        assert http_get(f"http://127.0.0.1:{port}/api/status")[0] == 200
        address = _own_address()
        if address is not None:
            status, body = http_get(f"http://{address}:{port}/api/status")
            assert status == 403 and b"--api-token" in body
            assert http_get(f"http://{address}:{port}/watch/x")[0] == 200
