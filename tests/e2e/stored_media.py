"""What the tests of recordings and the live origin share: reading a store back the way a
player or an operator would, playing HLS with ffmpeg, and the gateway's own answers.

A store is read without lpstream: an S3 bucket over plain HTTP GETs of its public object URLs
(listing with the harness's boto3 client), a directory as files.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import attrs

from benchmarks.harness.objects import S3Server
from tests.e2e.nodes import (
    NodeProcess,
    http_get,
    http_json,
    parse_media_playlist,
    push_command,
    wait_for,
)
from tests.mediatools import probe_streams

__all__ = [
    "DirectoryReader",
    "Played",
    "S3Reader",
    "StoreReader",
    "bucket_keys",
    "check_recording_in_store",
    "gateway_http",
    "live_master",
    "master_renditions",
    "metric",
    "play_with_ffmpeg",
    "pushing",
    "recordings_of",
    "wait_pushed",
    "wait_recordings",
]


class StoreReader(Protocol):
    """A store as seen from outside lpstream; keys are relative to the store's root."""

    def get(self, key: str) -> bytes | None:
        """The object's bytes; None if there is none."""

    def keys(self) -> list[str]:
        """Every object's key, sorted."""


@attrs.frozen
class S3Reader:
    """The objects under ``prefix`` in the harness's bucket, read over plain HTTP."""

    server: S3Server
    prefix: str

    def get(self, key: str) -> bytes | None:
        status, body = http_get(self.server.object_url(f"{self.prefix}/{key}"))
        if status == 404:
            return None
        assert status == 200, (key, status, body[:200])
        return body

    def keys(self) -> list[str]:
        start = f"{self.prefix}/"
        return [key[len(start) :] for key in bucket_keys(self.server) if key.startswith(start)]


@attrs.frozen
class DirectoryReader:
    """The files under a ``file://`` store's root."""

    root: Path

    def get(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def keys(self) -> list[str]:
        return sorted(
            str(path.relative_to(self.root)) for path in self.root.rglob("*") if path.is_file()
        )


def bucket_keys(server: S3Server) -> list[str]:
    """Every key in the harness's bucket, sorted."""
    keys: list[str] = []
    paginator = server.client().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=server.bucket):
        keys += [item["Key"] for item in page.get("Contents", ())]
    return sorted(keys)


def gateway_http(node: NodeProcess) -> str:
    """The gateway's ``http://host:port``, read from its ``status:`` line.

    ``NodeProcess.url("http")`` answers the first ``http://`` the node printed, which is an S3
    endpoint when a store URL names one (the stores are announced before the gateway).
    """
    for line in node.lines:
        match = re.match(r"status:\s+(http://[^\s/]+)/api/status$", line)
        if match:
            return match.group(1)
    raise KeyError(f"{node.name} announced no status address: {node.lines}")


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text page (0 if it is absent)."""
    label_text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    wanted = f"{name}{{{label_text}}}" if labels else name
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == wanted:
            return float(value)
    return 0.0


def recordings_of(base: str, stream: str) -> list[dict[str, Any]]:
    """``GET /api/recordings?stream=`` (oldest first)."""
    listed: list[dict[str, Any]] = http_json(f"{base}/api/recordings?stream={stream}")["recordings"]
    return listed


def wait_recordings(
    base: str, stream: str, states: Sequence[str], timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Waits until the stream's recordings are in ``states`` (oldest first); answers them."""

    def settled() -> list[dict[str, Any]] | None:
        listed = recordings_of(base, stream)
        return listed if [r["state"] for r in listed] == list(states) else None

    found: list[dict[str, Any]] = wait_for(settled, timeout, f"recordings of {stream} {states}")
    return found


def master_renditions(master: str) -> list[str]:
    """The ``NAME``s of a master playlist's variants, in order (each checked to be the
    ``NAME/index.m3u8`` that follows it)."""
    names = re.findall(r'NAME="([^"]+)"', master)
    uris = re.findall(r"^([^#\s][^/]*)/index\.m3u8$", master, re.M)
    assert names == uris, master
    return names


def _resolutions(master: str) -> dict[str, tuple[int, int]]:
    found = re.findall(r'RESOLUTION=([0-9]+)x([0-9]+),[^\n]*NAME="([^"]+)"', master)
    return {name: (int(w), int(h)) for w, h, name in found}


def check_recording_in_store(
    reader: StoreReader,
    recording: dict[str, Any],
    *,
    renditions: Sequence[str],
    seconds: float | None = None,
    decode: bool = True,
) -> dict[str, float]:
    """Checks an ended recording as a player finds it in the store: a master naming
    ``renditions``; each media playlist ``VOD`` with ``EXT-X-ENDLIST`` naming only stored
    segments (with ``decode``, every one decodes with its listed length of video and audio);
    with ``seconds``, each lasts that long (± 1 s). Answers each rendition's seconds."""
    prefix = f"{recording['stream']}/{recording['id']}/"
    master_bytes = reader.get(prefix + "index.m3u8")
    assert master_bytes is not None, f"no master playlist under {prefix}"
    master = master_bytes.decode()
    assert master_renditions(master) == list(renditions), master
    sizes = _resolutions(master)
    lasting: dict[str, float] = {}
    for name in renditions:
        text_bytes = reader.get(f"{prefix}{name}/index.m3u8")
        assert text_bytes is not None, f"{prefix}{name}/index.m3u8 is missing"
        text = text_bytes.decode()
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in text, text
        _, entries, ended = parse_media_playlist(text)
        assert ended and entries, text
        assert not any(gap for *_, gap in entries), text
        lasting[name] = sum(duration for _, duration, _, _ in entries)
        if seconds is not None:
            assert abs(lasting[name] - seconds) <= 1.0, (name, lasting[name], text)
        for _, duration, uri, _ in entries:
            data = reader.get(f"{prefix}{name}/{uri}")
            assert data is not None, f"{name}/index.m3u8 names {uri}, which is not stored"
            if decode:
                _check_segment(data, duration, sizes[name], f"{prefix}{name}/{uri}")
    return lasting


def _check_segment(data: bytes, duration: float, size: tuple[int, int], where: str) -> None:
    # PyAV reads a path: the segment goes through a temporary file.
    with tempfile.NamedTemporaryFile(suffix=".ts") as file:
        file.write(data)
        file.flush()
        facts = probe_streams(Path(file.name))
    video = [f for f in facts if f["type"] == "video"]
    audio = [f for f in facts if f["type"] == "audio"]
    assert len(video) == 1 and video[0]["size"] == size, (where, facts)
    frames = video[0]["frames"]
    assert isinstance(frames, int) and abs(frames / 30 - duration) <= 0.1, (where, facts)
    assert len(audio) == 1, (where, facts)
    audio_frames = audio[0]["frames"]
    # AAC frames are 1024 samples at 44.1 kHz.
    assert isinstance(audio_frames, int), (where, facts)
    assert abs(audio_frames * 1024 / 44100 - duration) <= 0.2, (where, facts)


@attrs.frozen
class Played:
    """What ffmpeg made of a playlist it played to the end."""

    frames: int
    """Video frames of its first video output."""
    seconds: float
    """The end of the output's timeline."""


def play_with_ffmpeg(url: str, *, maps: Sequence[str] = ("0",), timeout: float = 60) -> Played:
    """Plays ``url`` in ffmpeg as a player would, decoding every mapped stream to nothing;
    fails the test unless ffmpeg read it all without an error."""
    cmd = ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "error", "-i", url]
    for stream in maps:
        cmd += ["-map", stream]
    # Frames keep the input's 90 kHz timestamps: in ffmpeg's default 1/30 s the millisecond
    # jitter of RTMP timestamps rounds two frames onto one tick, which it reports as an error.
    cmd += ["-enc_time_base", "-1", "-f", "null", "-", "-progress", "pipe:1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0 and not done.stderr.strip(), (url, done.stderr[-2000:])
    progress = dict(
        line.split("=", 1) for line in done.stdout.splitlines() if "=" in line
    )  # the last report wins
    return Played(frames=int(progress["frame"]), seconds=int(progress["out_time_us"]) / 1e6)


def live_master(base: str, stream: str, timeout: float = 20.0) -> str:
    """The gateway's own live master playlist of ``stream``, once it has one."""

    def ready() -> bytes | None:
        status, body = http_get(f"{base}/hls/{stream}/index.m3u8")
        return body if status == 200 else None

    master: bytes = wait_for(ready, timeout, f"the live master playlist of {stream}")
    return master.decode()


@contextmanager
def pushing(rtmp: str, *, seconds: float, size: str) -> Iterator[subprocess.Popen[bytes]]:
    """ffmpeg publishing ``seconds`` of test video to ``rtmp`` for the block; it is killed if
    it still runs at the end (see :func:`wait_pushed`)."""
    publisher = subprocess.Popen(
        push_command(rtmp, seconds=seconds, size=size), stderr=subprocess.PIPE
    )
    try:
        yield publisher
    finally:
        if publisher.poll() is None:
            publisher.kill()
        publisher.communicate()


def wait_pushed(publisher: subprocess.Popen[bytes], timeout: float) -> None:
    """Waits for the publisher to finish; it must have pushed all of it."""
    _, err = publisher.communicate(timeout=timeout)
    assert publisher.returncode == 0, err.decode(errors="replace")
