"""SRT ingest in a running ``lpstream dev --srt-addr``: real SRT publishers, the HLS ladder read
back over HTTP, and callers that misbehave while another stream flows."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from benchmarks.harness.listeners import srt_listener_supported
from ingest.srt import SrtSocket, srt_available
from lpstream.errors import TransportError
from tests.e2e.hls_check import HlsRecorder, check_recording
from tests.e2e.nodes import NodeProcess, http_get, http_json, push_command, wait_for
from tests.mediatools import make_clip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not srt_available(), reason="libsrt is not installed on this machine"),
    pytest.mark.skipif(
        not srt_listener_supported(), reason="the ffmpeg on PATH was built without libsrt"
    ),
]

PASSPHRASE = "lpstream-srt-test"
LADDER = {"source": (640, 360), "360p": (640, 360), "240p": (426, 240)}


@pytest.fixture(scope="module")
def dev_flags() -> tuple[str, ...]:
    return ("--srt-addr=127.0.0.1:0", f"--srt-passphrase={PASSPHRASE}")


def srt_address(node: NodeProcess) -> tuple[str, int]:
    for line in node.lines:
        found = re.search(r"srt://([\d.]+):(\d+)\?streamid=", line)
        if found:
            return found.group(1), int(found.group(2))
    raise AssertionError(f"no SRT ingest announced: {node.lines}")


def srt_url(node: NodeProcess, stream_id: str, passphrase: str = PASSPHRASE) -> str:
    host, port = srt_address(node)
    # linger: ffmpeg closes at once at the end, and live SRT drops what it has not sent yet
    return f"srt://{host}:{port}?streamid={stream_id}&passphrase={passphrase}&linger=2"


def srt_push(url: str, *, seconds: float) -> subprocess.Popen[bytes]:
    """The issue's ffmpeg publisher, over SRT: ``-f mpegts srt://…``."""
    command = push_command("unused", seconds=seconds, size="640x360")
    command[-3:] = ["-f", "mpegts", url]
    return subprocess.Popen(command, stderr=subprocess.PIPE)


def record(node: NodeProcess, stream: str, out: Path) -> HlsRecorder:
    recorder = HlsRecorder(base=node.url("http"), stream=stream, out_dir=out)
    recorder.start()
    return recorder


def finish(publisher: subprocess.Popen[bytes], recorder: HlsRecorder, seconds: float) -> None:
    _, err = publisher.communicate(timeout=seconds + 30)
    assert publisher.returncode == 0, err.decode()
    recorder.wait(timeout=30)


def log_lines(node: NodeProcess, words: str) -> list[str]:
    return [line for line in node.log_path.read_text().splitlines() if words in line]


def test_ffmpeg_publishes_over_srt_and_the_ladder_plays(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    seconds = 10.0
    recorder = record(dev_node, "cam", tmp_path)
    publisher = srt_push(srt_url(dev_node, "#!::r=live/cam,m=publish"), seconds=seconds)
    finish(publisher, recorder, seconds)
    check_recording(recorder, expected_sizes=LADDER, audio=True, gop_seconds=2, seconds=seconds)
    assert 'CODECS="avc1.' in recorder.master and "mp4a.40.2" in recorder.master
    assert len(log_lines(dev_node, "SRT 127.0.0.1:")) >= 2  # publishing, then ended


@pytest.mark.skipif(
    shutil.which("srt-live-transmit") is None,
    reason="srt-live-transmit is not installed (Debian package srt-tools)",
)
def test_srt_live_transmit_publishes_a_ts_file(dev_node: NodeProcess, tmp_path: Path) -> None:
    seconds = 8.0
    clip = make_clip(tmp_path / "clip.ts", seconds=seconds, size="640x360", gop=60, fmt="mpegts")
    recorder = record(dev_node, "file", tmp_path)
    url = srt_url(dev_node, "live/file")  # linger=2: srt-live-transmit takes it as ffmpeg does
    # The file is played out at its own pace (ffmpeg -re) into srt-live-transmit's stdin, as a
    # live source would be; srt-live-transmit is the SRT publisher.
    pace = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
         "-f", "mpegts", "pipe:1"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert pace.stdout is not None
    # srt-live-transmit does not stop at the end of its input: its exit timer ends it.
    sender = subprocess.run(
        ["srt-live-transmit", "-q", f"-t:{seconds + 4:g}", "file://con", url],
        stdin=pace.stdout,
        capture_output=True,
        timeout=60,
    )
    pace.stdout.close()
    assert pace.wait(timeout=10) == 0
    assert sender.returncode == 0, sender.stderr.decode()
    recorder.wait(timeout=60)
    check_recording(recorder, expected_sizes=LADDER, audio=True, gop_seconds=2, seconds=seconds)


def test_a_wrong_passphrase_is_refused_and_logged_and_the_node_lives(
    dev_node: NodeProcess,
) -> None:
    attempt = subprocess.run(
        [
            *push_command("unused", seconds=2, size="320x240")[:-3],
            "-f",
            "mpegts",
            srt_url(dev_node, "live/intruder", passphrase="not-the-passphrase"),
        ],
        capture_output=True,
        timeout=30,
    )
    assert attempt.returncode != 0
    wait_for(lambda: log_lines(dev_node, "stream 'intruder': refused"), 5, "the refusal")
    (line,) = log_lines(dev_node, "stream 'intruder': refused")
    assert "WARNING" in line and "Incorrect passphrase (BADSECRET)" in line
    assert "not-the-passphrase" not in dev_node.log_path.read_text()
    assert dev_node.proc.poll() is None
    assert "intruder" not in http_json(f"{dev_node.url('http')}/api/status")["streams"]


def test_random_bytes_and_a_stalled_sender_are_closed_while_a_stream_flows(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    seconds = 16.0
    host, port = srt_address(dev_node)
    recorder = record(dev_node, "flowing", tmp_path)
    publisher = srt_push(srt_url(dev_node, "live/flowing"), seconds=seconds)
    stalled = SrtSocket.connect(
        host,
        port,
        connect_timeout=3,
        write_timeout=3,
        stream_id="#!::r=live/stalled,m=publish",
        passphrase=PASSPHRASE,
    )
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for size in [1, 16, 188, 1316, 1456, 1500] * 200:
                udp.sendto(os.urandom(size), (host, port))
                time.sleep(0.001)
        wait_for(lambda: log_lines(dev_node, "stream 'stalled': closing"), 14, "the stall")
        with pytest.raises(TransportError):  # the node closed it: sends fail soon after
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                stalled.send(bytes(188))
                time.sleep(0.1)
    finally:
        stalled.close()
    finish(publisher, recorder, seconds)
    check_recording(recorder, expected_sizes=LADDER, audio=True, gop_seconds=2, seconds=seconds)
    (line,) = log_lines(dev_node, "stream 'stalled': closing")
    assert "stalled sender: no data for 10 s" in line
    assert dev_node.proc.poll() is None


def test_a_name_another_publisher_holds_is_refused(dev_node: NodeProcess, tmp_path: Path) -> None:
    seconds = 10.0
    base = dev_node.url("http")
    recorder = record(dev_node, "held", tmp_path)
    rtmp = subprocess.Popen(
        push_command(f"{dev_node.url('rtmp')}/live/held", seconds=seconds, size="640x360"),
        stderr=subprocess.PIPE,
    )
    wait_for(lambda: http_get(f"{base}/hls/held/source/index.m3u8")[0] == 200, 15, "the stream")
    second = srt_push(srt_url(dev_node, "live/held"), seconds=3)
    _, err = second.communicate(timeout=30)
    assert second.returncode != 0, err.decode()
    (line,) = log_lines(dev_node, "stream 'held': closing: publish refused")
    assert "WARNING" in line
    finish(rtmp, recorder, seconds)
    check_recording(recorder, expected_sizes=LADDER, audio=True, gop_seconds=2, seconds=seconds)
