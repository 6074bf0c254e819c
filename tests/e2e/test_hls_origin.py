"""The live origin end to end: ``lpstream dev --hls-origin s3://…`` writes a live stream's HLS
to a real S3 server while it is live; the store is read over plain HTTP, as a CDN in front of
it would: no playlist ever names an object that is not yet there, ffmpeg plays the stream
from the store's URLs, and the cache headers are a CDN's.
"""

from __future__ import annotations

import subprocess
import threading
import urllib.request
from pathlib import Path

import attrs
import pytest

from benchmarks.harness.objects import S3Server, running_s3
from lpstream.playback.hls import KEEP_EXTRA
from tests.e2e.hls_check import media_duration, read_master_with_ffmpeg
from tests.e2e.nodes import http_get, http_json, parse_media_playlist, running_dev, wait_for
from tests.e2e.stored_media import (
    bucket_keys,
    gateway_http,
    live_master,
    master_renditions,
    metric,
    pushing,
    wait_pushed,
)
from tests.mediatools import probe_streams

pytestmark = pytest.mark.slow

SECONDS = 24.0
"""Long enough for segments to slide out of the window and be deleted."""
WINDOW = 6
"""Segments a live playlist lists (the gateway's default)."""


@attrs.define
class OriginPoller:
    """Reads the origin's playlists every 0.1 s like a player and fetches every URI each one
    names right after reading it; records each that was not there."""

    server: S3Server
    root: str
    """``{prefix}/{stream}``: where the stream's HLS is in the bucket."""
    renditions: list[str] = attrs.Factory(list)
    fetched: dict[str, int] = attrs.Factory(dict)
    """Every URI (from the stream's folder) named so far: its size, fetched when first named."""
    missing: list[str] = attrs.Factory(list)
    """What a playlist named but the store did not have (``playlist -> uri: status``)."""
    playlists_read: int = 0
    ended: set[str] = attrs.Factory(set)
    errors: list[str] = attrs.Factory(list)
    _stop: threading.Event = attrs.Factory(threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def wait_ended(self, timeout: float) -> None:
        wait_for(
            lambda: self.renditions and self.ended >= set(self.renditions),
            timeout,
            "ENDLIST in every origin playlist",
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except Exception as exc:
                self.errors.append(repr(exc))
            self._stop.wait(0.1)

    def _get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.server.object_url(f"{self.root}/{path}"))

    def _poll(self) -> None:
        status, body = self._get("index.m3u8")
        if status != 200:
            return
        self.playlists_read += 1
        names = master_renditions(body.decode())
        self._fetch_named("index.m3u8", [f"{name}/index.m3u8" for name in names])
        self.renditions = names
        for name in names:
            status, body = self._get(f"{name}/index.m3u8")
            if status != 200:
                continue  # reported by _fetch_named
            self.playlists_read += 1
            _, entries, ended = parse_media_playlist(body.decode())
            self._fetch_named(f"{name}/index.m3u8", [f"{name}/{uri}" for *_, uri, _ in entries])
            if ended:
                self.ended.add(name)

    def _fetch_named(self, playlist: str, paths: list[str]) -> None:
        for path in paths:
            if path in self.fetched and not path.endswith(".m3u8"):
                continue
            status, body = self._get(path)
            if status != 200:
                self.missing.append(f"{playlist} -> {path}: HTTP {status}")
            else:
                self.fetched[path] = len(body)


def _headers(url: str) -> dict[str, str]:
    """The response headers of a GET, as a CDN in front of the store sees them."""
    with urllib.request.urlopen(url, timeout=5) as response:
        response.read()
        return {name.lower(): value for name, value in response.headers.items()}


def test_a_player_reads_the_live_stream_from_the_store(tmp_path: Path) -> None:
    stream = "origin-show"
    with (
        running_s3() as s3,
        running_dev(tmp_path / "logs", "--hls-origin", s3.store_url("live")) as node,
    ):
        base, root = gateway_http(node), f"live/{stream}"
        poller = OriginPoller(server=s3, root=root)
        poller.start()
        client: subprocess.Popen[bytes] | None = None
        try:
            with pushing(f"{node.url('rtmp')}/live/{stream}", seconds=SECONDS, size="640x360") as p:
                # The gateway's own playback goes on as before.
                assert master_renditions(live_master(base, stream)) == ["source", "360p", "240p"]
                wait_for(lambda: poller.renditions, 20, "the origin's master playlist")
                client_out = tmp_path / "client.ts"
                client = read_master_with_ffmpeg(
                    s3.object_url(f"{root}/index.m3u8"), client_out, timeout=60
                )
                wait_for(lambda: any(k.endswith(".ts") for k in poller.fetched), 10, "a segment")
                segment = next(k for k in poller.fetched if k.endswith(".ts"))
                segment_headers = _headers(s3.object_url(f"{root}/{segment}"))
                playlist_headers = _headers(s3.object_url(f"{root}/source/index.m3u8"))
                origin = http_json(f"{base}/api/status")["streams"][stream]["outputs"]["origin"]
                wait_pushed(p, SECONDS + 30)
            poller.wait_ended(30)
            _, client_err = client.communicate(timeout=60)
        finally:
            poller.stop()
            if client is not None and client.poll() is None:
                client.kill()
                client.communicate()
        metrics = http_get(f"{base}/metrics")[1].decode()
        keys = bucket_keys(s3)

    assert poller.errors == [] and poller.missing == [], (poller.errors, poller.missing)
    # Every segment of every rendition was seen (0.1 s polls, a 6-segment window).
    for name in ("source", "360p", "240p"):
        seen = [path for path in poller.fetched if path.startswith(f"{name}/")]
        assert len(seen) >= SECONDS / 2 - 1, (name, sorted(poller.fetched))
    assert poller.playlists_read > 100

    assert client is not None and client.returncode == 0, client_err.decode()
    played = media_duration(client_out)
    assert played >= 8.0, played
    video = [f for f in probe_streams(client_out) if f["type"] == "video"]
    assert video and isinstance(video[0]["frames"], int) and video[0]["frames"] >= 8 * 30

    assert segment_headers["content-type"] == "video/mp2t"
    assert "immutable" in segment_headers["cache-control"], segment_headers
    assert playlist_headers["content-type"] == "application/vnd.apple.mpegurl"
    assert playlist_headers["cache-control"] == "public, max-age=1", playlist_headers

    assert origin["state"] == "writing" and origin["stored"] >= 1, origin
    assert metric(metrics, "lpstream_store_uploaded_bytes_total", store="origin") > 0
    assert metric(metrics, "lpstream_store_upload_seconds_count", store="origin") >= SECONDS / 2
    assert metric(metrics, "lpstream_store_upload_failures_total", store="origin") == 0
    assert metric(metrics, "lpstream_store_segments_lost_total", store="origin") == 0

    # Only the stream's folder was written, and old segments were deleted behind the window.
    assert keys and all(key.startswith(f"{root}/") for key in keys), keys
    for name in ("source", "360p", "240p"):
        kept = [key for key in keys if key.startswith(f"{root}/{name}/") and key.endswith(".ts")]
        assert WINDOW <= len(kept) <= WINDOW + KEEP_EXTRA, kept
