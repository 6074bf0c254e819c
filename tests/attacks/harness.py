"""What every attack test needs: a real node, an honest stream beside the attack, and RSS.

An attack test starts ``lpstream dev --offchain`` (or another role) as a subprocess, starts an
honest publisher (ffmpeg, small picture so that two cores keep up), runs the attack, and then
checks what the issue asks: the node is alive, the honest stream's renditions are whole (no
``EXT-X-GAP``, no missing segment), the attacker got its refusal, and the node's resident
memory stayed inside the budget during the attack and came back after it.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs

from tests.e2e.hls_check import HlsRecorder
from tests.e2e.nodes import NodeProcess, http_get, push_command, start_dev, wait_for

__all__ = [
    "HonestStream",
    "RssSampler",
    "assert_whole",
    "honest_stream",
    "rss_mb",
    "start_dev",
    "wait_rss_below",
]

HONEST_SIZE = "320x180"
"""The honest publisher's picture: small, so the ladder keeps up on two cores under attack."""


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@attrs.define
class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread; ``peak`` is the most."""

    pid: int
    interval: float = 0.1
    samples: list[float] = attrs.Factory(list)
    _stop: threading.Event = attrs.Factory(threading.Event)
    _thread: threading.Thread | None = None

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(rss_mb(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)


@attrs.define
class HonestStream:
    """A well-behaved ffmpeg publisher and a player recording every rendition's segments."""

    name: str
    publisher: subprocess.Popen[bytes]
    recorder: HlsRecorder

    def finish(self, timeout: float = 60.0) -> None:
        """Waits for the publisher to end and the playlists to end; both must end cleanly."""
        _, err = self.publisher.communicate(timeout=timeout)
        assert self.publisher.returncode == 0, err.decode(errors="replace")
        self.recorder.wait(timeout=30)


@contextmanager
def honest_stream(
    node: NodeProcess,
    name: str,
    out_dir: Path,
    *,
    seconds: float,
    size: str = HONEST_SIZE,
    extra: Sequence[str] = (),
) -> Iterator[HonestStream]:
    """Publishes ``seconds`` of a test pattern as ``name`` and records its HLS from the start.

    The body runs once the master playlist is served (so the stream is really live); on exit the
    publisher and recorder are finished (or killed on error)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rtmp = f"{node.url('rtmp')}/live/{name}"
    command = push_command(rtmp, seconds=seconds, size=size, gop=30)
    publisher = subprocess.Popen([*command[:-1], *extra, command[-1]], stderr=subprocess.PIPE)
    recorder = HlsRecorder(base=node.url("http"), stream=name, out_dir=out_dir)
    stream = HonestStream(name=name, publisher=publisher, recorder=recorder)
    try:
        base = node.url("http")
        wait_for(
            lambda: http_get(f"{base}/hls/{name}/index.m3u8")[0] == 200,
            30,
            f"the master playlist of {name}",
        )
        recorder.start()
        yield stream
        stream.finish(timeout=seconds + 60)
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()


def assert_whole(stream: HonestStream, *, min_segments: int = 2) -> None:
    """Every rendition has every segment the source has, none of them a gap."""
    recorder = stream.recorder
    assert recorder.errors == [], recorder.errors
    assert recorder.gaps == [], f"gaps in {stream.name}: {recorder.gaps}"
    source = recorder.seqs("source")
    assert len(source) >= min_segments, f"{stream.name}: only {source} segments"
    assert source == list(range(source[0], source[0] + len(source))), source
    for rendition in recorder.renditions:
        assert recorder.seqs(rendition) == source, (
            f"{stream.name}/{rendition}: {recorder.seqs(rendition)} vs source {source}"
        )


def wait_rss_below(pid: int, limit_mb: float, timeout: float) -> float:
    """Waits until the process's RSS is at most ``limit_mb``; returns the last reading."""
    deadline = time.monotonic() + timeout
    reading = rss_mb(pid)
    while reading > limit_mb and time.monotonic() < deadline:
        time.sleep(0.25)
        reading = rss_mb(pid)
    return reading
