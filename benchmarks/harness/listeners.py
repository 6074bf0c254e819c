"""ffmpeg as a restream destination: listening for RTMP or SRT, writing what arrives to a file.

``ffmpeg -listen 1 -i rtmp://…`` and ``ffmpeg -i 'srt://…?mode=listener'`` accept one
publisher and remux it (``-c copy``) to MPEG-TS, so a test or a benchmark can read back what
a forward sent with PyAV or ffprobe. The listener is ready once its socket is bound, which is
read from ``/proc/net`` (a probe connection would be taken for the publisher). ffmpeg exits
by itself when the publisher disconnects; :meth:`FfmpegListener.kill` plays a destination
that dies.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["FfmpegListener", "free_port", "srt_listener_supported"]

_PROC_FILES = {
    "rtmp": ("/proc/net/tcp", "/proc/net/tcp6"),
    "srt": ("/proc/net/udp", "/proc/net/udp6"),
}
_TCP_LISTEN, _TCP_ESTABLISHED = "0A", "01"


def free_port(kind: str = "tcp") -> int:
    """A loopback port nothing is bound to now (TCP, or UDP for ``kind="udp"``)."""
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def srt_listener_supported() -> bool:
    """Whether the ``ffmpeg`` on PATH was built with libsrt."""
    if shutil.which("ffmpeg") is None:
        return False
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-protocols"], capture_output=True, text=True, check=False
    ).stdout
    return any(line.strip() == "srt" for line in out.splitlines())


def _bound(kind: str, port: int) -> bool:
    """Whether a socket of ``kind`` (rtmp: a TCP listener, srt: UDP) is bound to ``port``.
    For RTMP, a connection ffmpeg already accepted counts too: ``-listen 1`` closes its
    listening socket at once, so a publisher that dials as soon as the port is open (a
    forward reconnecting) leaves no LISTEN line to find."""
    hex_port = f":{port:04X}"
    for path in _PROC_FILES[kind]:
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            on_port = len(fields) > 3 and fields[1].endswith(hex_port)
            if on_port and (kind == "srt" or fields[3] in (_TCP_LISTEN, _TCP_ESTABLISHED)):
                return True
    return False


class FfmpegListener:
    """One ffmpeg waiting for a publisher on loopback (see the module comment)."""

    def __init__(
        self,
        kind: str,
        out: Path,
        *,
        port: int | None = None,
        app: str = "live",
        key: str = "key",
        log_path: Path | None = None,
    ) -> None:
        if kind not in _PROC_FILES:
            raise ValueError(f"kind must be 'rtmp' or 'srt', not {kind!r}")
        self.kind = kind
        self.out = out
        self.port = port if port is not None else free_port("udp" if kind == "srt" else "tcp")
        if kind == "rtmp":
            self.url = f"rtmp://127.0.0.1:{self.port}/{app}/{key}"
            source = ["-listen", "1", "-f", "flv", "-i", self.url]
        else:
            self.url = f"srt://127.0.0.1:{self.port}"
            source = ["-f", "mpegts", "-i", f"{self.url}?mode=listener"]
        self.log_path = log_path if log_path is not None else out.with_suffix(".log")
        self._log = self.log_path.open("wb")
        command = [
            "ffmpeg", "-hide_banner", "-loglevel", "warning", "-nostdin", "-y", *source,
            "-c", "copy", "-flush_packets", "1", "-f", "mpegts", str(out),
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._log)

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Returns once ffmpeg's socket is bound.

        Raises:
            RuntimeError: ffmpeg exited or did not bind in time (its log says why); it is
                stopped then, its log closed.
        """
        deadline = time.monotonic() + timeout
        while not _bound(self.kind, self.port):
            if self.proc.poll() is not None:
                self.kill()
                raise RuntimeError(f"ffmpeg exited ({self.proc.returncode}): {self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"ffmpeg did not listen on {self.port} in {timeout} s")
            time.sleep(0.05)

    def wait(self, timeout: float = 30.0) -> int:
        """Waits for ffmpeg to exit (the publisher left); returns its exit status."""
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def stop(self, timeout: float = 10.0) -> int:
        """Asks ffmpeg to finish (SIGINT: it closes its output properly) and waits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """Kills ffmpeg at once: the destination dies mid-stream."""
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        self._log.close()
        return code

    def log(self) -> str:
        """What ffmpeg wrote to its log so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> FfmpegListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
