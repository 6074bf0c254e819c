"""``lpstream dev``'s demo stream: a test pattern pushed over RTMP with ffmpeg."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable

import trio

from lpstream.config import HostPort

__all__ = ["push_demo"]

log = logging.getLogger("lpstream")


async def push_demo(rtmp: HostPort, stream: str, web: str, announce: Callable[[str], None]) -> None:
    """Pushes a test pattern with ffmpeg, restarting it if it stops."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        log.warning("ffmpeg is not installed: no demo stream (install it, or push your own)")
        return
    url = f"rtmp://{rtmp}/live/{stream}"
    command = [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-g",
        "60",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        "-f",
        "flv",
        url,
    ]
    announce(f"demo stream: pushing a test pattern to {url}")
    announce(f"watch it:    ffplay {web}/hls/{stream}/index.m3u8  (or {web}/watch/{stream})")
    while True:
        await trio.run_process(command, check=False, stdin=subprocess.DEVNULL)
        await trio.sleep(2)
