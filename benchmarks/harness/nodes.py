"""Runs the real ``lpstream`` program as subprocesses and talks to it like a user would.

Used by the end-to-end tests and by the benchmarks alike.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LOOPBACK_PORTS",
    "LPSTREAM",
    "NodeProcess",
    "http_get",
    "http_json",
    "parse_media_playlist",
    "push_command",
    "start_dev",
    "wait_for",
]

LPSTREAM = [sys.executable, "-m", "lpstream"]


class NodeProcess:
    """An ``lpstream`` subprocess whose announced addresses are read from its stdout."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        name: str,
        log_dir: Path,
        program: Sequence[str] = tuple(LPSTREAM),
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [*program, *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if "ready" in line:
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 30.0) -> None:
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} did not start:\n{self.log_path.read_text()[-3000:]}")

    def url(self, scheme: str) -> str:
        """The first announced ``scheme://host:port`` (e.g. ``rtmp``, ``http``, ``quic``)."""
        for line in self.lines:
            match = re.search(rf"{scheme}://([^\s/]+)", line)
            if match:
                return f"{scheme}://{match.group(1)}"
        raise KeyError(f"{self.name} announced no {scheme}:// address: {self.lines}")

    def hostport(self, scheme: str) -> str:
        return self.url(scheme).split("://", 1)[1]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


LOOPBACK_PORTS = (
    "--rtmp-addr=127.0.0.1:0",
    "--http-addr=127.0.0.1:0",
    "--service-addr=127.0.0.1:0",
)
"""Every listener of ``lpstream dev`` on a free loopback port: runs never collide."""


def start_dev(
    log_dir: Path,
    *flags: str,
    name: str = "dev",
    offchain: bool = True,
    ready_timeout: float = 30.0,
    program: Sequence[str] = tuple(LPSTREAM),
) -> NodeProcess:
    """Starts ``lpstream dev`` (``--offchain`` unless told) on free loopback ports with
    ``flags`` and waits until it is ready; a node that does not get ready is stopped."""
    args = ["dev", *(["--offchain"] if offchain else []), *LOOPBACK_PORTS, *flags]
    log_dir.mkdir(parents=True, exist_ok=True)
    node = NodeProcess(args, name=name, log_dir=log_dir, program=program)
    try:
        node.wait_ready(ready_timeout)
    except BaseException:
        node.stop()
        raise
    return node


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_json(url: str) -> Any:
    status, body = http_get(url)
    assert status == 200, (url, status, body)
    return json.loads(body)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def push_command(
    rtmp_url: str,
    *,
    seconds: float,
    gop: int = 60,
    bframes: int | None = None,
    audio: bool = True,
    size: str = "1280x720",
) -> list[str]:
    """The issue's ffmpeg publisher command, with the variations the tests need."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re"]
    cmd += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine"]
    cmd += ["-t", str(seconds), "-c:v", "libx264", "-g", str(gop)]
    if bframes is not None:
        cmd += ["-bf", str(bframes)]
    if audio:
        cmd += ["-c:a", "aac"]
    cmd += ["-f", "flv", rtmp_url]
    return cmd


def parse_media_playlist(text: str) -> tuple[int, list[tuple[int, float, str, bool]], bool]:
    """Returns (media sequence, [(seq, duration, uri, gap)], ended).

    Reads a playlist the way a plain HLS player does: LL-HLS tags (EXT-X-PART, the preload
    hint, rendition reports) are tag lines and skipped; only segment URIs are entries.
    """
    media_sequence = 0
    entries: list[tuple[int, float, str, bool]] = []
    duration = 0.0
    gap = False
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            media_sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].rstrip(","))
        elif line == "#EXT-X-GAP":
            gap = True
        elif line and not line.startswith("#"):
            entries.append((media_sequence + len(entries), duration, line, gap))
            gap = False
    return media_sequence, entries, "#EXT-X-ENDLIST" in text
