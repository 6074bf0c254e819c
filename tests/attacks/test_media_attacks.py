"""Bad media against a real ``lpstream dev``: the stream that carries it goes on, the node lives.

The attacker is real ffmpeg publishing a clip over RTMP with its bitstream filters doing the
damage: ``noise`` corrupts bytes of the H.264 frames, their AVCC NAL lengths included (copied,
not encoded, so that the FLV writer does not re-frame the NAL units), ``setts`` makes the
timestamps jump three hours ahead and then to just below 2**32 ms (ffmpeg's FLV writer keeps 31
bits of it, so on the wire they land just below 2**31 and wrap there three seconds later).
Beside it an honest stream must stay whole. An audio-only publisher is refused with a reason it
can read.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.segmenter import AUDIO_ONLY_REFUSAL
from lpstream.playback.hls import MAX_SEGMENT_DURATION
from tests.attacks.harness import assert_whole, honest_stream, start_dev
from tests.e2e.nodes import NodeProcess, http_get, http_json, wait_for
from tests.mediatools import make_clip

pytestmark = [pytest.mark.slow, pytest.mark.solo]

JUMP_AHEAD_MS = 3 * 3600 * 1000
NEAR_WRAP_MS = 2**32 - 3_000
"""Where the second jump lands the stream, three seconds before a wrap."""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    dev = start_dev(tmp_path_factory.mktemp("media-attacks"))
    try:
        yield dev
    finally:
        assert dev.stop() == 0, dev.log_path.read_text()[-3000:]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 s of 320x180 at 30 fps, a keyframe every second, with AAC audio."""
    return make_clip(
        tmp_path_factory.mktemp("clip") / "clip.flv", seconds=16, size="320x180", gop=30
    )


def publish(node: NodeProcess, name: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *args,
            "-f", "flv", f"{node.url('rtmp')}/live/{name}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


class PlaylistWatch:
    """Reads a media playlist every 0.3 s in a thread and keeps the worst it saw."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.texts: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, body = http_get(self.url)
            if status == 200:
                self.texts.append(body.decode())
            self._stop.wait(0.3)

    def __enter__(self) -> PlaylistWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def most(self, pattern: str) -> float:
        values = [float(v) for t in self.texts for v in re.findall(pattern, t)]
        assert values, f"{pattern} never seen in {self.url}"
        return max(values)


def test_damaged_frames_and_timestamp_jumps_do_not_end_the_stream(
    node: NodeProcess, clip: Path, tmp_path: Path
) -> None:
    base = node.url("http")
    # Video bytes damaged throughout; at 5 s three hours ahead, at 10 s just below 2**32 ms.
    setts = (
        f"setts=ts=TS+gte(TS\\,5000)*{JUMP_AHEAD_MS}"
        f"+gte(TS\\,10000)*{NEAR_WRAP_MS - 10_000 - JUMP_AHEAD_MS}"
    )
    with honest_stream(node, "honest-m", tmp_path / "honest", seconds=22) as honest:
        attacker = publish(
            node, "jumpy", "-re", "-i", str(clip), "-c", "copy",
            "-bsf:v", f"noise=amount=200,{setts}", "-bsf:a", setts,
        )  # fmt: skip
        wait_for(
            lambda: http_get(f"{base}/hls/jumpy/source/index.m3u8")[0] == 200,
            20,
            "the attacker's playlist",
        )
        with PlaylistWatch(f"{base}/hls/jumpy/source/index.m3u8") as watch:
            _, err = attacker.communicate(timeout=40)
            time.sleep(1)  # the last segment gets listed
    # The attacker was never refused: ffmpeg sent all 16 s and left on its own.
    assert attacker.returncode == 0, err.decode(errors="replace")
    assert_whole(honest)
    status = http_json(f"{base}/api/status")
    assert status["streams"]["jumpy"]["segments_in"] >= 7  # 16 s in segments of about 2 s
    log = node.log_path.read_text()
    assert "stream 'jumpy': timestamps jumped" in log
    assert "stream 'jumpy': the muxer refused a packet" in log
    assert not re.search(r"stream 'jumpy': .*closing the stream", log), log[-3000:]
    # Playlists stayed sane all along: targets about the configured ones, never hours.
    assert watch.most(r"#EXT-X-TARGETDURATION:(\d+)") <= 4
    assert watch.most(r"PART-HOLD-BACK=([0-9.]+)") <= 3.0
    assert watch.most(r"#EXTINF:([0-9.]+),") <= min(4.0, MAX_SEGMENT_DURATION)
    # The jumps are marked alike in the source and in every transcoded rendition.
    assert "#EXT-X-ENDLIST" in watch.texts[-1]
    master = http_get(f"{base}/hls/jumpy/index.m3u8")[1].decode()
    renditions = re.findall(r"^([^#\s][^/]*)/index\.m3u8$", master, re.M)
    assert len(renditions) >= 2, master
    marks = {}
    for rendition in renditions:
        text = http_get(f"{base}/hls/jumpy/{rendition}/index.m3u8")[1].decode()
        sequence = re.search(r"#EXT-X-DISCONTINUITY-SEQUENCE:(\d+)", text)
        marks[rendition] = text.count("#EXT-X-DISCONTINUITY\n") + int(
            sequence[1] if sequence else 0
        )
    assert set(marks.values()) == {marks["source"]} and marks["source"] >= 2, marks


def test_an_audio_only_publish_is_refused_with_its_reason(node: NodeProcess) -> None:
    attacker = publish(
        node, "radio", "-readrate", "4", "-f", "lavfi", "-i", "sine", "-t", "40", "-c:a", "aac"
    )
    _, err = attacker.communicate(timeout=30)
    printed = err.decode(errors="replace")
    assert attacker.returncode != 0, printed
    assert AUDIO_ONLY_REFUSAL in printed, printed
    log = node.log_path.read_text()
    assert log.count(f"stream 'radio': {AUDIO_ONLY_REFUSAL}; closing the stream") == 1
    assert http_json(f"{node.url('http')}/api/status")["streams"]["radio"]["live"] is False
