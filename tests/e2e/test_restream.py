"""Restreams end to end: a stream on one gateway forwarded to a second ``lpstream dev``
(RTMP in) plays there, and after that destination is killed and started again the forward
reconnects by itself; ``--forward`` restreams every stream to ffmpeg listening for RTMP."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import av
import pytest

from benchmarks.harness.listeners import FfmpegListener, free_port
from tests.e2e.nodes import (
    NodeProcess,
    http_get,
    http_json,
    parse_media_playlist,
    push_command,
    running_dev,
    start_dev,
    wait_for,
)

pytestmark = pytest.mark.slow


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def listed_segments(node: NodeProcess, stream: str) -> list[int]:
    status, body = http_get(f"{node.url('http')}/hls/{stream}/source/index.m3u8", timeout=5)
    if status != 200:
        return []
    return [entry[0] for entry in parse_media_playlist(body.decode())[1]]


def forward_of(node: NodeProcess, stream: str) -> dict[str, Any]:
    forwards = http_json(f"{node.url('http')}/api/streams/{stream}/forward")["forwards"]
    assert len(forwards) == 1, forwards
    return dict(forwards[0])


def test_a_forward_plays_on_a_second_node_and_reconnects_after_it_restarts(
    tmp_path: Path,
) -> None:
    port = free_port()
    destination_flags = (f"--rtmp-addr=127.0.0.1:{port}",)
    with running_dev(tmp_path / "origin") as origin:
        destination = start_dev(tmp_path / "dest1", *destination_flags, name="dest1")
        publisher = subprocess.Popen(
            push_command(f"{origin.url('rtmp')}/live/show", seconds=40, size="640x360"),
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: listed_segments(origin, "show"), 30, "the stream to be live")
            base = f"{origin.url('http')}/api/streams/show/forward"
            code, refused = post_json(base, {"url": "http://127.0.0.1/live/copy"})
            assert code == 400 and "rtmp://" in refused["error"]
            code, started = post_json(base, {"url": f"rtmp://127.0.0.1:{port}/live/copy"})
            assert code == 201 and started["url"].endswith("/live/****"), started
            first = wait_for(
                lambda: len(listed_segments(destination, "copy")) >= 3,
                30,
                "the restream to play on the second node",
            )
            assert first
            master = http_get(f"{destination.url('http')}/hls/copy/index.m3u8")
            assert master[0] == 200
            assert forward_of(origin, "show")["state"] == "live"
            destination.stop()  # the destination goes away mid-stream
            wait_for(
                lambda: forward_of(origin, "show")["state"] in ("retrying", "connecting"),
                30,
                "the forward to notice",
            )
            destination = start_dev(tmp_path / "dest2", *destination_flags, name="dest2")
            wait_for(
                lambda: len(listed_segments(destination, "copy")) >= 2,
                40,
                "the forward to reconnect and play again",
            )
            forward = forward_of(origin, "show")
            assert forward["state"] == "live" and forward["reconnects"] >= 1, forward
            assert forward["bytes_sent"] > 0 and forward["last_error"], forward
            metrics = http_get(f"{origin.url('http')}/metrics")[1].decode()
            assert 'lpstream_forwards{state="live"} 1.0' in metrics
            stopped = urllib.request.urlopen(
                urllib.request.Request(f"{base}/{forward['id']}", method="DELETE"), timeout=10
            )
            assert json.loads(stopped.read())["id"] == forward["id"]
            assert http_json(base)["forwards"] == []
        finally:
            publisher.kill()
            publisher.wait()
            destination.stop()


def test_forward_flag_restreams_every_stream_to_ffmpeg(tmp_path: Path) -> None:
    received = tmp_path / "received.ts"
    listener = FfmpegListener("rtmp", received, key="feed")
    listener.wait_listening()
    url = f"rtmp://127.0.0.1:{listener.port}/live/{{stream}}"
    with running_dev(tmp_path / "node", f"--forward={url}") as node:
        subprocess.run(
            push_command(f"{node.url('rtmp')}/live/feed", seconds=8, size="320x180"),
            check=True,
            timeout=60,
        )
        assert listener.wait(timeout=30) == 0, listener.log()
    with av.open(str(received)) as container:
        kinds = {s.type for s in container.streams}
        assert {"video", "audio"} <= kinds
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
    assert frames >= 30 * 6, frames  # most of the 8 s arrived, decodable
