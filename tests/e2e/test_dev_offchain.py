"""``lpstream dev --offchain`` end to end: real ffmpeg pushes RTMP, HLS is read back over HTTP."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.hls_check import (
    HlsRecorder,
    check_recording,
    media_duration,
    read_master_with_ffmpeg,
)
from tests.e2e.nodes import (
    NodeProcess,
    http_get,
    http_json,
    parse_media_playlist,
    push_command,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.solo]

LADDER_720P = {"source": (1280, 720), "360p": (640, 360), "240p": (426, 240)}


def publish_and_record(
    node: NodeProcess,
    stream: str,
    out: Path,
    *,
    seconds: float,
    **push: Any,
) -> tuple[HlsRecorder, subprocess.Popen[bytes]]:
    rtmp = f"{node.url('rtmp')}/live/{stream}"
    publisher = subprocess.Popen(
        push_command(rtmp, seconds=seconds, **push), stderr=subprocess.PIPE
    )
    recorder = HlsRecorder(base=node.url("http"), stream=stream, out_dir=out)
    recorder.start()
    return recorder, publisher


def finish(recorder: HlsRecorder, publisher: subprocess.Popen[bytes], seconds: float) -> None:
    _, err = publisher.communicate(timeout=seconds + 30)
    assert publisher.returncode == 0, err.decode()
    recorder.wait(timeout=30)


def test_issue_publisher_for_20s_gives_a_full_ladder(dev_node: NodeProcess, tmp_path: Path) -> None:
    seconds = 20.0
    recorder, publisher = publish_and_record(dev_node, "t", tmp_path, seconds=seconds)
    base = dev_node.url("http")
    wait_for(lambda: http_get(f"{base}/hls/t/index.m3u8")[0] == 200, 20, "the master playlist")
    client_out = tmp_path / "client.ts"
    client = read_master_with_ffmpeg(f"{base}/hls/t/index.m3u8", client_out, timeout=60)
    finish(recorder, publisher, seconds)
    _, client_err = client.communicate(timeout=60)
    assert client.returncode == 0, client_err.decode()

    master = recorder.master
    for name, (w, h) in LADDER_720P.items():
        assert f"RESOLUTION={w}x{h}" in master and f'NAME="{name}"' in master
    assert master.count('CODECS="avc1.') == 3 and "mp4a.40.2" in master
    check_recording(
        recorder, expected_sizes=LADDER_720P, audio=True, gop_seconds=2, seconds=seconds
    )
    # ffmpeg as a player got the whole stream from the first segment to the end.
    assert media_duration(client_out) == pytest.approx(seconds, abs=1.0)

    status = http_json(f"{base}/api/status")
    assert status["role"] == "dev" and status["streams"]["t"]["live"] is False
    metrics = http_get(f"{base}/metrics")[1].decode()
    assert "lpstream_segments_in_total " in metrics and "lpstream_active_streams 0.0" in metrics


@pytest.mark.parametrize(
    ("stream", "push", "gop_seconds", "audio"),
    [
        ("bframes", {"bframes": 3}, 2.0, True),
        ("gop4", {"gop": 120}, 4.0, True),
        ("silent", {"audio": False}, 2.0, False),
    ],
)
def test_variants(
    dev_node: NodeProcess,
    tmp_path: Path,
    stream: str,
    push: dict[str, Any],
    gop_seconds: float,
    audio: bool,
) -> None:
    seconds = 12.0
    recorder, publisher = publish_and_record(dev_node, stream, tmp_path, seconds=seconds, **push)
    finish(recorder, publisher, seconds)
    check_recording(
        recorder, expected_sizes=LADDER_720P, audio=audio, gop_seconds=gop_seconds, seconds=seconds
    )


def test_two_publishers_at_once(dev_node: NodeProcess, tmp_path: Path) -> None:
    seconds = 10.0
    runs = [
        publish_and_record(dev_node, name, tmp_path, seconds=seconds) for name in ("left", "right")
    ]
    for recorder, publisher in runs:
        finish(recorder, publisher, seconds)
    for recorder, _ in runs:
        check_recording(
            recorder, expected_sizes=LADDER_720P, audio=True, gop_seconds=2, seconds=seconds
        )


def test_a_second_publisher_on_a_live_name_is_refused(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    rtmp = f"{dev_node.url('rtmp')}/live/taken"
    first = subprocess.Popen(push_command(rtmp, seconds=8, size="320x240"), stderr=subprocess.PIPE)
    base = dev_node.url("http")
    wait_for(
        lambda: http_get(f"{base}/hls/taken/source/index.m3u8")[0] == 200, 15, "first publisher"
    )
    second = subprocess.run(
        push_command(rtmp, seconds=3, size="320x240"), capture_output=True, timeout=30
    )
    assert second.returncode != 0
    _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err.decode()


def test_a_restarted_stream_continues_after_a_discontinuity(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    base = dev_node.url("http")
    rtmp = f"{dev_node.url('rtmp')}/live/again"
    for _ in range(2):
        subprocess.run(push_command(rtmp, seconds=5, size="320x240"), check=True, timeout=30)
        wait_for(
            lambda: b"#EXT-X-ENDLIST" in http_get(f"{base}/hls/again/240p/index.m3u8")[1],
            20,
            "the end of the publish",
        )
    for rendition in ("source", "360p", "240p"):
        text = http_get(f"{base}/hls/again/{rendition}/index.m3u8")[1].decode()
        _, entries, ended = parse_media_playlist(text)
        seqs = [seq for seq, *_ in entries]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # numbering runs on
        assert text.count("#EXT-X-DISCONTINUITY\n") == 1 and ended
        assert text.index("#EXT-X-DISCONTINUITY\n") < text.rindex(".ts")


def test_unknown_streams_are_404_and_the_watch_page_names_the_stream(dev_node: NodeProcess) -> None:
    base = dev_node.url("http")
    assert http_get(f"{base}/hls/nothing/index.m3u8")[0] == 404
    assert http_get(f"{base}/hls/nothing/360p/0.ts")[0] == 404
    assert http_get(f"{base}/hls/..%2f/index.m3u8")[0] == 404
    status, page = http_get(f"{base}/watch/demo")
    assert status == 200 and b"/hls/demo/index.m3u8" in page
