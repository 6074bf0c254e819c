"""Watches a live HLS stream over HTTP like a player, keeps every segment, checks them."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import attrs

from tests.e2e.nodes import http_get, parse_media_playlist
from tests.mediatools import probe_streams


def init_sections(playlist: str) -> dict[str, str]:
    """The EXT-X-MAP init section each segment URI of a media playlist is read with."""
    current: str | None = None
    maps: dict[str, str] = {}
    for line in playlist.splitlines():
        found = re.match(r'#EXT-X-MAP:URI="([^"]+)"', line)
        if found:
            current = found.group(1)
        elif line and not line.startswith("#") and current is not None:
            maps[line] = current
    return maps


@attrs.define
class HlsRecorder:
    """Polls the master and media playlists and downloads each segment once."""

    base: str
    stream: str
    out_dir: Path
    master: str = ""
    renditions: list[str] = attrs.Factory(list)
    segments: dict[tuple[str, int], Path] = attrs.Factory(dict)
    durations: dict[tuple[str, int], float] = attrs.Factory(dict)
    gaps: list[tuple[str, int]] = attrs.Factory(list)
    ended: set[str] = attrs.Factory(set)
    arrivals: dict[tuple[str, int], float] = attrs.Factory(dict)
    errors: list[str] = attrs.Factory(list)
    _stop: threading.Event = attrs.Factory(threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except Exception as exc:
                self.errors.append(repr(exc))
            if self.renditions and self.ended >= set(self.renditions):
                return
            time.sleep(0.3)

    def _poll(self) -> None:
        if not self.renditions:
            status, body = http_get(f"{self.base}/hls/{self.stream}/index.m3u8")
            if status != 200:
                return
            self.master = body.decode()
            names = re.findall(r"^([^#\s][^/]*)/index\.m3u8$", self.master, re.M)
            expected = re.findall(r'NAME="([^"]+)"', self.master)
            if names != expected:
                self.errors.append(f"master names {expected} do not match URIs {names}")
            self.renditions = names
        for name in self.renditions:
            if name in self.ended:
                continue
            status, body = http_get(f"{self.base}/hls/{self.stream}/{name}/index.m3u8")
            if status != 200:
                continue
            _, entries, ended = parse_media_playlist(body.decode())
            maps = init_sections(body.decode())
            for seq, duration, uri, gap in entries:
                key = (name, seq)
                if gap:
                    if key not in self.gaps:
                        self.gaps.append(key)
                    continue
                if key in self.segments:
                    continue
                status, data = http_get(f"{self.base}/hls/{self.stream}/{name}/{uri}")
                if status != 200:
                    self.errors.append(f"{name}/{uri}: HTTP {status}")
                    continue
                init_uri = maps.get(uri)
                suffix = ".ts"
                if init_uri is not None:  # fragmented MP4: the init section, then the media
                    status, init = http_get(f"{self.base}/hls/{self.stream}/{name}/{init_uri}")
                    if status != 200:
                        self.errors.append(f"{name}/{init_uri}: HTTP {status}")
                        continue
                    data, suffix = init + data, ".mp4"
                path = self.out_dir / f"{self.stream}-{name}-{seq}{suffix}"
                path.write_bytes(data)
                self.segments[key] = path
                self.durations[key] = duration
                self.arrivals[key] = time.monotonic()
            if ended:
                self.ended.add(name)

    def wait(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        self._stop.set()
        assert not self._thread.is_alive(), f"stream {self.stream} did not end: {self.ended}"

    def seqs(self, rendition: str) -> list[int]:
        return sorted(seq for (name, seq) in self.segments if name == rendition)


def check_recording(
    rec: HlsRecorder,
    *,
    expected_sizes: dict[str, tuple[int, int]],
    audio: bool,
    gop_seconds: float,
    seconds: float,
) -> None:
    """Every segment of every rendition decodes, has the right size and its share of time."""
    assert rec.errors == []
    assert rec.renditions == list(expected_sizes), rec.master
    assert rec.gaps == []
    source_seqs = rec.seqs("source")
    assert source_seqs == list(range(source_seqs[0], source_seqs[0] + len(source_seqs)))
    # A stream of N seconds cut at GOPs of g seconds (target 2 s) has about N / max(2, g) segments.
    per_segment = max(2.0, gop_seconds)
    assert abs(len(source_seqs) - seconds / per_segment) <= 1.5
    for name, size in expected_sizes.items():
        assert rec.seqs(name) == source_seqs, f"{name} has different segments than the source"
        for seq in source_seqs:
            path = rec.segments[(name, seq)]
            facts = probe_streams(path)
            video = [f for f in facts if f["type"] == "video"]
            audio_tracks = [f for f in facts if f["type"] == "audio"]
            assert len(video) == 1 and video[0]["size"] == size, (path, facts)
            listed = rec.durations[(name, seq)]
            frames = video[0]["frames"]
            assert isinstance(frames, int)
            last = seq == source_seqs[-1]
            if not last:
                assert abs(listed - per_segment) <= 0.1, (path, listed)
            assert abs(frames / 30 - listed) <= 0.1, (path, frames, listed)
            if audio:
                assert len(audio_tracks) == 1, (path, facts)
                audio_frames = audio_tracks[0]["frames"]
                assert isinstance(audio_frames, int)
                # AAC frames are 1024 samples at 44.1 kHz.
                assert abs(audio_frames * 1024 / 44100 - listed) <= 0.2, (path, audio_frames)
            else:
                assert audio_tracks == []


def read_master_with_ffmpeg(url: str, out: Path, timeout: float) -> subprocess.Popen[bytes]:
    """Starts ffmpeg as an HLS client copying the first variant from the live start."""
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-live_start_index", "0",
        "-i", url, "-map", "0:p:0", "-c", "copy", "-f", "mpegts", str(out),
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def media_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        check=True,
        text=True,
    )
    return float(out.stdout.strip())
