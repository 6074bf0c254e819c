"""Glass-to-glass latency: a wall clock drawn into every source frame, read back at display.

How this works:

* Glass (in): a Python process makes 1280x720 frames at 30 frames/s and draws into each, as a
  64-cell black-and-white code (``benchmarks.clockcode``: 48-bit milliseconds + CRC-16), the
  value of ``time.time()`` at the moment the frame is handed to the encoder: written into the
  stdin of an ``ffmpeg ... -c:v libx264 -tune zerolatency`` that publishes RTMP (or writes
  ffmpeg's own HLS, the peer), or returned from the ``recv()`` of an aiortc video track that
  publishes WHIP.
* Glass (out): headless Chromium plays the stream. A ``requestVideoFrameCallback`` on the
  ``<video>`` draws each presented frame's code band onto a canvas and decodes it in
  JavaScript; the frame's display time is ``Date.now()`` moved to the callback's
  ``expectedDisplayTime``. Latency = display time - drawn time, same machine, same wall clock
  (checked: ``Date.now()`` against ``time.time()`` around a DevTools round trip).
* Players: hls.js (the copy the node serves) on a page of this benchmark with the config each
  path names, the node's own watch page ``/watch/{stream}`` as shipped, and its WebRTC page
  ``/watch/{stream}?whep=1`` (WHEP). This benchmark's page is served from a small HTTP server
  that also serves ffmpeg's HLS files and passes ``/node/...`` through to the node (hls.js
  needs one origin; the pass-through adds a loopback hop to lpstream's figures, not the peer's).
* One ``lpstream dev --offchain`` serves every lpstream path. Paths sharing a source run one
  after the other on one publish. A path is ``--joins`` viewers in turn, each a fresh Chromium
  (where an LL-HLS player starts depends on when it joins, relative to parts and keyframes):
  each opens once the playlist holds four segments (a viewer joining a live stream, not one
  racing its first segment), plays ``--warmup`` seconds, then every frame it presents for
  ``--seconds / --joins`` is a sample. The samples of all joins are pooled.

Peers, one per kind of path, measured in the same run; a path is compared only with a peer of
its own kind:

* plain HLS (``rtmp-hls``): the ffmpeg command line's HLS muxer (``-f hls -hls_time 2
  -hls_list_size 6``) fed by the same frame source and encoder settings, played by the same
  hls.js page in plain mode (``ffmpeg-hls``);
* LL-HLS and WebRTC (WHEP): no peer of the same kind runs here (Debian's FFmpeg 5.1 writes
  neither LL-HLS parts nor WHIP/WHEP), so these paths are reported as absolute figures and
  against the issue's targets, never divided by the plain-HLS peer.

Every source is encoded by libx264 (ffmpeg's for RTMP and the peer, aiortc's for WHIP) and the
node transcodes with libx264 too (``--encoder libx264``); the FFmpeg and x264 builds of the
node (PyAV) and of the ffmpeg command line are printed. Start-up counts on neither side: the
node and the peer's ffmpeg run before any player opens.

Live AI paths (``rtmp-ai-hls``, ``rtmp-ai-llhls``, ``whip-whep-ai``) start the ``noop``
pipeline on the publish (``POST /api/ai/{stream}``, 512x512 box: a 1280x720 source becomes
512x288) and play its ``ai`` rendition. Their peer is the same path without the pipeline
(``rtmp-hls``, ``rtmp-llhls``, ``whip-whep``), measured in the same run, and also played
alongside in each join: the clock value drawn into the source is in the ai frame too, so
pairing the two players' samples by clock value gives the
latency the pipeline adds to each frame, under the same load.

    .venv/bin/python -m benchmarks.glass_to_glass [--seconds 24] [--joins 4] [--warmup 5]
        [--paths rtmp-llhls,rtmp-llhls-watch,rtmp-hls,rtmp-ai-hls,rtmp-ai-llhls,ffmpeg-hls,
                 whip-llhls,whip-whep,whip-whep-ai] [--json]

(Run it as a module from the checkout.)
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import av
import numpy as np
import numpy.typing as npt
import trio
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)

from benchmarks.clockcode import JS_READER, band_rows, draw_clock
from benchmarks.harness.browser import Browser, Page, chromium_path, open_browser
from benchmarks.harness.nodes import NodeProcess, parse_media_playlist
from benchmarks.harness.toolchain import (
    cli_toolchain,
    encoder_flag,
    lpstream_toolchain,
    print_toolchains,
)
from ingest.whip.bridge import open_asyncio_loop
from lpstream.http.watch import hls_js
from workers.gpu import X264

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 1280, 720, 30
ENCODER = ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30"]
JOIN_SEGMENTS = 4
"""Segments the playlist holds before a player opens."""
AI_RENDITION = "ai"
"""The rendition a stream's live AI output is served as."""
AI_SIZE = (512, 512)
"""The box the live AI pipeline works in (a 1280x720 source is scaled to 512x288)."""

METHOD = """\
method: glass = time.time() when a {size} frame is handed to the encoder (written into
  ffmpeg's stdin for RTMP and the ffmpeg-HLS peer; returned to aiortc's H.264 sender for WHIP),
  drawn into that frame as a 64-cell code (48-bit ms since the epoch + CRC-16).
  display = Date.now() at the frame's expectedDisplayTime in headless Chromium's
  requestVideoFrameCallback; the callback draws the presented frame to a canvas and decodes
  the code. latency = display - glass, one machine, one wall clock. Frames whose code fails the
  CRC are counted as unreadable, never as samples. Each path is {joins} viewers in turn (a fresh
  Chromium each, once the playlist holds {join} segments): each plays {warmup:g} s, then every
  frame it presents for {per_join:g} s is a sample; the samples of the {joins} are pooled.
  live AI paths: POST /api/ai/{{stream}} {{"pipeline": "noop", "width": {ai_w}, "height": {ai_h}}}
  on the publish, then wait for {join} segments in the ai playlist. Each join plays the ai
  rendition and, in a second window of the same Chromium, the baseline path's player on the
  source rendition; added latency = ai latency - source latency of the frames with the same
  clock value (each frame shown by both players)."""


# --- paths ---------------------------------------------------------------------------------


class Ingest(enum.Enum):
    """How the clock frames leave the source process."""

    RTMP = "rtmp"
    """ffmpeg (libx264 zerolatency, 1 s GOP) publishing FLV to the node's RTMP ingest."""
    WHIP = "whip"
    """aiortc publishing H.264 (its own libx264 encoder) to the node's ``/whip/{stream}``."""
    FFMPEG_HLS = "ffmpeg-hls"
    """ffmpeg (same encoder settings) writing its own HLS (2 s segments) into a folder."""


class Player(enum.Enum):
    """How a path is played; :data:`KIND` says what kind of delivery each one is."""

    HLSJS_LL = "hls.js lowLatencyMode:true (hls.js defaults: PART-HOLD-BACK)"
    HLSJS_PLAIN = "hls.js lowLatencyMode:false liveSyncDurationCount:3"
    WATCH_PAGE = "the node's /watch/{stream} page as shipped (hls.js)"
    WHEP = "the node's /watch/{stream}?whep=1 page (WebRTC, WHEP)"


@attrs.frozen(kw_only=True)
class LatencyPath:
    """One measured way from glass to glass."""

    name: str
    ingest: Ingest
    player: Player
    target_ms: float | None
    """The issue's target for the median, if it sets one."""
    rendition: str | None = None
    """A media playlist (``source``, ``360p``, an AI output) instead of the master playlist;
    for WHEP, the rendition the WebRTC page asks for (``/whep/{stream}/{rendition}``)."""
    what: str = ""
    pipeline: str | None = None
    """A live AI pipeline started on the stream (``POST /api/ai/{stream}``) before the player
    opens; ``rendition`` is then its output."""
    baseline: str | None = None
    """The path whose latency this one adds to: measured on its own earlier in the run, and
    played alongside this one in every join (same Chromium, its source rendition), so that
    the two players' latencies for the same drawn clock value give the added latency of each
    frame."""
    added_target_ms: float | None = None
    """The issue's target for the added latency's p95 (over ``baseline``)."""

    @property
    def stream(self) -> str:
        return f"g2g-{self.ingest.value}"


# Paths run in this order; those with the same ingest share one publish. A live-AI path starts
# its pipeline on that publish before its player opens (and it keeps running for the paths of
# the group after it), so it comes after the path it is compared with.
PATHS: dict[str, LatencyPath] = {
    p.name: p
    for p in (
        LatencyPath(
            name="rtmp-llhls",
            ingest=Ingest.RTMP,
            player=Player.HLSJS_LL,
            target_ms=1500,
            what="RTMP -> lpstream LL-HLS, hls.js low-latency",
        ),
        LatencyPath(
            name="rtmp-llhls-watch",
            ingest=Ingest.RTMP,
            player=Player.WATCH_PAGE,
            target_ms=1500,
            what="RTMP -> lpstream LL-HLS, the /watch page as shipped",
        ),
        LatencyPath(
            name="rtmp-hls",
            ingest=Ingest.RTMP,
            player=Player.HLSJS_PLAIN,
            target_ms=6000,
            what="RTMP -> lpstream HLS (2 s segments), hls.js plain",
        ),
        LatencyPath(
            name="rtmp-ai-hls",
            ingest=Ingest.RTMP,
            player=Player.HLSJS_PLAIN,
            target_ms=None,
            rendition=AI_RENDITION,
            pipeline="noop",
            baseline="rtmp-hls",
            added_target_ms=100,
            what="RTMP -> lpstream live AI noop -> the ai rendition's HLS, hls.js plain",
        ),
        LatencyPath(
            name="rtmp-ai-llhls",
            ingest=Ingest.RTMP,
            player=Player.HLSJS_LL,
            target_ms=None,
            rendition=AI_RENDITION,
            pipeline="noop",
            baseline="rtmp-llhls",
            added_target_ms=100,
            what="RTMP -> lpstream live AI noop -> the ai rendition's LL-HLS parts, hls.js "
            "low-latency",
        ),
        LatencyPath(
            name="ffmpeg-hls",
            ingest=Ingest.FFMPEG_HLS,
            player=Player.HLSJS_PLAIN,
            target_ms=None,
            what="peer: ffmpeg -f hls -hls_time 2, hls.js plain",
        ),
        LatencyPath(
            name="whip-llhls",
            ingest=Ingest.WHIP,
            player=Player.HLSJS_LL,
            target_ms=1500,
            what="WHIP -> lpstream LL-HLS, hls.js low-latency",
        ),
        LatencyPath(
            name="whip-whep",
            ingest=Ingest.WHIP,
            player=Player.WHEP,
            target_ms=200,
            what="WHIP -> lpstream WHEP passthrough, WebRTC",
        ),
        LatencyPath(
            name="whip-whep-ai",
            ingest=Ingest.WHIP,
            player=Player.WHEP,
            target_ms=None,
            rendition=AI_RENDITION,
            pipeline="noop",
            baseline="whip-whep",
            added_target_ms=100,
            what="WHIP -> lpstream live AI noop -> WHEP of the ai rendition, WebRTC",
        ),
    )
}
PEER = "ffmpeg-hls"
"""The plain-HLS peer."""
KIND = {
    Player.HLSJS_PLAIN: "HLS",
    Player.HLSJS_LL: "LL-HLS",
    Player.WATCH_PAGE: "LL-HLS",
    Player.WHEP: "WebRTC",
}
"""The kind of delivery of each player; a path is compared only with a peer of its kind."""
PEERS = {"HLS": PEER}
"""The peer of each kind that runs here (LL-HLS and WebRTC have none)."""
HLSJS_CONFIG: dict[Player, dict[str, Any]] = {
    Player.HLSJS_LL: {"lowLatencyMode": True},
    Player.HLSJS_PLAIN: {"lowLatencyMode": False, "liveSyncDurationCount": 3},
}


# --- the source process ------------------------------------------------------------------


class ClockPicture:
    """yuv420p frames (PyAV's layout: Y rows, then U and V rows) of a moving pattern with the
    clock in the top band; chroma is grey under the band."""

    def __init__(self, width: int, height: int) -> None:
        x = np.arange(width)[None, :]
        y = np.arange(height)[:, None]
        checker = ((x // 64 + y // 64) % 2) * 80
        self._luma = (40 + checker + (x + y) % 96).astype(np.uint8)
        u = np.broadcast_to((64 + x[:, ::2] // 10) % 256, (height // 2, width // 2)).copy()
        v = np.broadcast_to((96 + y[::2, :] // 6) % 256, (height // 2, width // 2)).copy()
        grey = (band_rows(height) + 1) // 2
        u[:grey] = v[:grey] = 128
        self.height = height
        self.buffer = np.concatenate(
            [
                np.empty((height, width), np.uint8),
                u.astype(np.uint8).reshape(height // 4, width),
                v.astype(np.uint8).reshape(height // 4, width),
            ]
        )

    def next(self, n: int) -> npt.NDArray[np.uint8]:
        """Frame ``n`` with the clock drawn at the moment of the call."""
        luma = self.buffer[: self.height]
        luma[:] = np.roll(self._luma, n * 6, axis=1)
        draw_clock(luma, round(time.time() * 1000))
        return self.buffer


def source_ffmpeg(output: list[str], width: int, height: int) -> dict[str, int]:
    """Writes clock frames into ffmpeg's stdin in real time until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p",
        "-s", f"{width}x{height}", "-r", str(FPS), "-i", "-", *ENCODER, "-pix_fmt", "yuv420p",
        *output,
    ]  # fmt: skip
    ffmpeg = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert ffmpeg.stdin is not None
    picture = ClockPicture(width, height)
    start = time.monotonic()
    frames = late = 0
    behind = 0.0
    try:
        while not stop.is_set() and ffmpeg.poll() is None:
            # On a 30 frames/s schedule; a frame that is late goes at once (the stream's
            # timestamps stay on the schedule, the drawn time is when it really went).
            wait = start + frames / FPS - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -1 / FPS:
                late += 1
                behind = max(behind, -wait)
            ffmpeg.stdin.write(picture.next(frames).data)
            frames += 1
    except BrokenPipeError:
        pass
    finally:
        with contextlib.suppress(BrokenPipeError):
            ffmpeg.stdin.close()
        ffmpeg.wait()
    return {
        "frames": frames,
        "seconds": round(time.monotonic() - start),
        "late": late,
        "max_behind_ms": round(behind * 1000),
    }


class ClockTrack(VideoStreamTrack):
    """aiortc video at 30 frames/s, the clock drawn when aiortc takes the frame."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self._picture = ClockPicture(width, height)
        self.frames = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self._picture.next(self.frames), format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base
        self.frames += 1
        return frame


class WhipPublisher:
    """A non-trickle WHIP client (as OBS is); its coroutines run on the asyncio loop."""

    def __init__(self, width: int, height: int) -> None:
        self.track = ClockTrack(width, height)
        self.pc: RTCPeerConnection | None = None

    async def offer(self) -> str:
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video = pc.addTransceiver(self.track, direction="sendonly")
        capabilities = RTCRtpSender.getCapabilities("video")
        assert capabilities is not None
        video.setCodecPreferences(
            [c for c in capabilities.codecs if c.mimeType.lower() == "video/h264"]
        )
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        assert self.pc is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""urllib without any proxy from the environment: everything here is on loopback."""


def _http(
    method: str, url: str, body: bytes | None = None, kind: str = "application/sdp"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": kind})
    try:
        with _OPENER.open(request, timeout=20) as response:
            return int(response.status), dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def source_whip(url: str, width: int, height: int) -> dict[str, int]:
    """Publishes clock frames with WHIP until SIGTERM."""
    publisher = WhipPublisher(width, height)
    started = time.monotonic()
    async with open_asyncio_loop("whip-publisher") as loop:
        try:
            offer = await loop.run(publisher.offer)
            status, headers, body = await trio.to_thread.run_sync(
                _http, "POST", url, offer.encode()
            )
            if status != 201:
                raise SystemExit(f"WHIP answered {status}: {body.decode(errors='replace')}")
            await loop.run(publisher.accept, body.decode())
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            location = urllib.parse.urljoin(url, headers.get("Location", ""))
            await trio.to_thread.run_sync(_http, "DELETE", location)
        finally:
            await loop.run(publisher.close)
    return {"frames": publisher.track.frames, "seconds": round(time.monotonic() - started)}


def run_source(kind: str, to: str, size: str) -> None:
    """The ``--source`` mode: this process is the camera. Prints its counts as JSON."""
    width, height = (int(v) for v in size.split("x"))
    if kind == "rtmp":
        counts = source_ffmpeg(["-f", "flv", to], width, height)
    elif kind == "ffmpeg-hls":
        output = ["-f", "hls", "-hls_time", "2", "-hls_list_size", "6", f"{to}/index.m3u8"]
        counts = source_ffmpeg(output, width, height)
    else:
        counts = trio.run(source_whip, to, width, height)
    print(json.dumps(counts), flush=True)


@contextlib.contextmanager
def open_source(kind: Ingest, to: str, size: str, log: Path) -> Iterator[dict[str, int]]:
    """Runs the source process for the block; the dict gets its counts when it has ended."""
    counts: dict[str, int] = {}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.glass_to_glass", "--source", kind.value,
             "--to", to, "--size", size],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
        try:
            yield counts
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            with contextlib.suppress(ValueError):
                counts.update(json.loads(out.decode().strip().splitlines()[-1]))


# --- the player page, the peer's files and the pass-through to the node ---------------------

PLAYER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>glass to glass</title></head>
<body style="margin:0;background:#000">
<video id="video" autoplay muted playsinline style="width:1280px;height:720px"></video>
<script src="/hls.min.js"></script>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const source = params.get("src");
const video = document.getElementById("video");
const hls = new Hls(JSON.parse(params.get("config")));
window.player = {engine: "hls.js " + Hls.version, hls: hls, errors: []};
hls.on(Hls.Events.ERROR, (event, data) => {
  window.player.errors.push(data.details);
  if (!data.fatal) return;
  if (data.type === Hls.ErrorTypes.NETWORK_ERROR) setTimeout(() => hls.loadSource(source), 1000);
  else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
});
hls.loadSource(source);
hls.attachMedia(video);
</script></body></html>
"""

MEASURE_JS = (
    JS_READER
    + """
(() => {
  if (window.g2g) return true;
  const video = document.querySelector("video");
  const canvas = document.createElement("canvas");
  canvas.width = CLOCK.columns * 8;
  canvas.height = CLOCK.rows * 8;
  const context = canvas.getContext("2d", {willReadFrequently: true});
  const g2g = window.g2g = {samples: [], unreadable: 0};
  function presented(now, meta) {
    // The wall clock at the moment this frame is shown (expectedDisplayTime is on the
    // performance.now() timeline; Date.now() is the clock Python's time.time() reads).
    const shown = Date.now() + (meta.expectedDisplayTime - performance.now());
    const band = clockBandRows(video.videoHeight);
    context.drawImage(video, 0, 0, video.videoWidth, band, 0, 0, canvas.width, canvas.height);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const drawn = readClock(pixels, canvas.width, canvas.height);
    if (drawn === null) g2g.unreadable += 1;
    else g2g.samples.push([shown - drawn, video.videoHeight, drawn]);
    video.requestVideoFrameCallback(presented);
  }
  video.requestVideoFrameCallback(presented);
  return true;
})()
"""
)

POLL_JS = """(() => {
  const p = window.player || {};
  return {samples: window.g2g.samples.splice(0), unreadable: window.g2g.unreadable,
          error: p.error || null, state: p.state || null, errors: (p.errors || []).length,
          hlsLatency: p.hls ? p.hls.latency : null};
})()"""


WEBRTC_STATS_JS = """(async () => {
  const pc = window.player && window.player.pc;
  if (!pc) return null;
  let out = null;
  (await pc.getStats()).forEach(s => {
    if (s.type !== "inbound-rtp" || s.kind !== "video") return;
    out = {jitter_buffer_ms: s.jitterBufferEmittedCount
             ? 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount : null,
           decode_ms: s.framesDecoded ? 1000 * s.totalDecodeTime / s.framesDecoded : null,
           frames_decoded: s.framesDecoded, frames_dropped: s.framesDropped};
  });
  return out;
})()"""
"""Chromium's own averages for the WebRTC receiver (the WHEP page keeps its RTCPeerConnection
in ``window.player.pc``)."""


class _Handler(http.server.BaseHTTPRequestHandler):
    server: PlayerServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/player.html":
            self._answer(200, PLAYER_PAGE.encode(), "text/html")
        elif path == "/hls.min.js":
            self._answer(200, self.server.script, "text/javascript")
        elif path.startswith("/peer/"):
            file = self.server.peer_dir / Path(path).name
            try:
                body = file.read_bytes()
            except OSError:
                self._answer(404, b"not found\n", "text/plain")
                return
            kind = "application/vnd.apple.mpegurl" if file.suffix == ".m3u8" else "video/mp2t"
            self._answer(200, body, kind)
        elif path.startswith("/node/"):
            url = f"http://{self.server.node}{self.path.removeprefix('/node')}"
            try:
                with _OPENER.open(url, timeout=30) as response:
                    status, body = int(response.status), response.read()
                    kind = response.headers.get("Content-Type", "application/octet-stream")
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read()
                kind = exc.headers.get("Content-Type", "text/plain")
            except OSError as exc:
                status, body, kind = 502, str(exc).encode(), "text/plain"
            self._answer(status, body, kind)
        else:
            self._answer(404, b"not found\n", "text/plain")

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)


class PlayerServer(http.server.ThreadingHTTPServer):
    """This benchmark's page, hls.js, ffmpeg's HLS folder at ``/peer/`` and the node at
    ``/node/``, all on one origin."""

    daemon_threads = True

    def __init__(self, node: str, peer_dir: Path, script: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.node = node
        self.peer_dir = peer_dir
        self.script = script

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


# --- measuring -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class PathResult:
    """What the players of one path showed, every join pooled."""

    name: str
    what: str
    target_ms: float | None
    samples: list[float] = attrs.Factory(list)
    """One latency (ms) per presented frame whose clock was read."""
    heights: dict[int, int] = attrs.Factory(dict)
    """Samples per rendition height."""
    unreadable: int = 0
    """Presented frames whose clock failed the CRC."""
    seconds: float = 0.0
    """Time the samples were taken over."""
    join_medians: list[float] = attrs.Factory(list)
    """The median of each join (a fresh player) on its own."""
    load_average: float | None = None
    """The machine's 1-minute load average as the path ended."""
    hls_latency_s: float | None = None
    """hls.js's own estimate (``hls.latency``: behind the playlist's live edge), median."""
    webrtc: list[dict[str, Any]] = attrs.Factory(list)
    """Chromium's WebRTC receiver statistics at the end of each join (WHEP only)."""
    paired: list[float] = attrs.Factory(list)
    """Added latency per frame (ms): this player's latency minus the baseline player's, for
    each clock value both players showed (players in the same join, side by side)."""
    paired_join_medians: list[float] = attrs.Factory(list)
    alongside: list[float] = attrs.Factory(list)
    """The baseline player's own samples, taken alongside this path's."""
    ai_segments: list[dict[str, Any]] = attrs.Factory(list)
    """The gateway's statistics of each AI segment listed while this path was measured."""
    error: str | None = None

    @property
    def median(self) -> float | None:
        return float(np.median(self.samples)) if self.samples else None

    @property
    def p95(self) -> float | None:
        return float(np.percentile(self.samples, 95)) if self.samples else None

    def added(self) -> dict[str, Any] | None:
        """The added latency over the baseline, paired frame by frame (None: no baseline)."""
        path = PATHS[self.name]
        if path.baseline is None:
            return None
        d = np.asarray(self.paired) if self.paired else None
        b = np.asarray(self.alongside) if self.alongside else None
        latencies = [float(x["latency_ms"]) for x in self.ai_segments if "latency_ms" in x]
        return {
            "baseline": path.baseline,
            "target_p95_ms": path.added_target_ms,
            "pairs": len(self.paired),
            "percentiles_ms": None
            if d is None
            else {str(q): round(float(np.percentile(d, q)), 1) for q in PERCENTILES},
            "min_ms": None if d is None else round(float(d.min()), 1),
            "max_ms": None if d is None else round(float(d.max()), 1),
            "histogram": histogram(self.paired),
            "join_medians_ms": [round(m, 1) for m in self.paired_join_medians],
            "alongside_median_ms": None if b is None else round(float(np.median(b)), 1),
            "alongside_p95_ms": None if b is None else round(float(np.percentile(b, 95)), 1),
            "ai_segments": len(self.ai_segments),
            "ai_segment_latency_ms": {
                "median": round(float(np.median(latencies)), 1) if latencies else None,
                "p95": round(float(np.percentile(latencies, 95)), 1) if latencies else None,
            },
            "ai_dropped": sum(int(x.get("dropped", 0)) for x in self.ai_segments),
            "ai_fps_out": [x.get("fps_out") for x in self.ai_segments],
        }

    def summary(self) -> dict[str, Any]:
        s = np.asarray(self.samples) if self.samples else None
        return {
            "path": self.name,
            "what": self.what,
            "samples": len(self.samples),
            "median_ms": None if s is None else round(float(np.median(s)), 1),
            "p95_ms": None if s is None else round(float(np.percentile(s, 95)), 1),
            "min_ms": None if s is None else round(float(s.min()), 1),
            "max_ms": None if s is None else round(float(s.max()), 1),
            "target_ms": self.target_ms,
            "join_medians_ms": [round(m, 1) for m in self.join_medians],
            "frames_per_s": round(len(self.samples) / self.seconds, 1) if self.seconds else 0,
            "unreadable": self.unreadable,
            "heights": {str(h): n for h, n in sorted(self.heights.items())},
            "hls_js_latency_s": self.hls_latency_s,
            "load_average": self.load_average,
            "webrtc_receiver": self.webrtc,
            "added": self.added(),
            "error": self.error,
        }


PERCENTILES = (5, 25, 50, 75, 95)


def histogram(values: Sequence[float], bins: int = 8) -> list[tuple[float, float, int]]:
    """(from ms, to ms, count) over ``bins`` equal bins from the least to the largest value."""
    if not values:
        return []
    counts, edges = np.histogram(np.asarray(values), bins=bins)
    return [
        (round(float(edges[i]), 1), round(float(edges[i + 1]), 1), int(n))
        for i, n in enumerate(counts)
    ]


class JoinFailed(Exception):
    """A player showed no readable frame."""


@attrs.define
class Tally:
    """Samples gathered across the joins of one path."""

    samples: list[float] = attrs.Factory(list)
    heights: Counter[int] = attrs.Factory(Counter)
    unreadable: int = 0
    join_medians: list[float] = attrs.Factory(list)
    hls_latency: list[float] = attrs.Factory(list)
    clock_checks: list[tuple[float, float]] = attrs.Factory(list)
    webrtc: list[dict[str, Any]] = attrs.Factory(list)
    seconds: float = 0.0
    paired: list[float] = attrs.Factory(list)
    paired_join_medians: list[float] = attrs.Factory(list)
    alongside: list[float] = attrs.Factory(list)


async def clock_check(page: Page) -> tuple[float, float]:
    """Date.now() - time.time() in ms, and its uncertainty (half the best round trip)."""
    best = (0.0, float("inf"))
    for _ in range(5):
        before = time.time()
        browser_ms = float(await page.evaluate("Date.now()"))
        after = time.time()
        half = (after - before) * 500
        if half < best[1]:
            best = (browser_ms - (before + after) * 500, half)
    return best


@attrs.define
class Viewer:
    """One player page of a join and what it showed while sampled."""

    page: Page
    samples: list[tuple[float, int, int]] = attrs.Factory(list)
    """(latency ms, video height, drawn clock value ms) per presented frame."""
    unreadable: int = 0
    hls_latency: list[float] = attrs.Factory(list)

    async def poll(self) -> dict[str, Any]:
        polled: dict[str, Any] = await self.page.evaluate(POLL_JS)
        return polled

    async def take(self) -> None:
        polled = await self.poll()
        self.samples.extend((float(a), int(b), int(c)) for a, b, c in polled["samples"])
        self.unreadable = int(polled["unreadable"])
        if polled["hlsLatency"] is not None:
            self.hls_latency.append(float(polled["hlsLatency"]))


async def open_page(browser: Browser, url: str) -> Page:
    """``Browser.new_page`` in a window of its own: each player is the visible tab of its
    window, so that two players of one join both present frames (a hidden tab may not)."""
    return await browser.new_page(url, new_window=True)


async def measure_join(
    urls: Sequence[str], *, warmup: float, seconds: float, log: Path, tally: Tally
) -> list[Viewer]:
    """One viewer (or players side by side, one window each, in one fresh Chromium): opens
    ``urls``, plays ``warmup`` s, samples ``seconds`` s. Fills ``tally`` with the first
    player's samples and returns every player's."""
    async with open_browser(log) as browser:
        viewers = [Viewer(page=await open_page(browser, url)) for url in urls]
        for viewer in viewers:
            await viewer.page.evaluate(MEASURE_JS)
        tally.clock_checks.append(await clock_check(viewers[0].page))
        waiting = dict(zip(urls, viewers, strict=True))
        polled: dict[str, Any] = {}
        with trio.move_on_after(40):
            while waiting:
                await trio.sleep(0.5)
                for url, viewer in list(waiting.items()):
                    polled = await viewer.poll()
                    if polled["samples"]:
                        del waiting[url]
                    elif str(polled["error"] or "").lower().startswith("error"):
                        raise JoinFailed(f"{polled['error']} at {url}")
        if waiting:
            why = str(polled.get("error") or "no readable frame shown in 40 s")
            state = f" (page: {polled['state']})" if polled.get("state") else ""
            raise JoinFailed(f"{why}{state} at {', '.join(waiting)}")
        await trio.sleep(warmup)
        before = [int((await v.poll())["unreadable"]) for v in viewers]
        started = trio.current_time()
        deadline = started + seconds
        while trio.current_time() < deadline:
            await trio.sleep(min(1.0, max(0.0, deadline - trio.current_time())))
            for viewer in viewers:
                await viewer.take()
        main = viewers[0]
        stats = await main.page.evaluate(WEBRTC_STATS_JS)
        if stats is not None:
            tally.webrtc.append(
                {k: round(v, 1) if isinstance(v, float) else v for k, v in stats.items()}
            )
        tally.seconds += trio.current_time() - started
        for viewer, unreadable in zip(viewers, before, strict=True):
            viewer.unreadable -= unreadable
        tally.unreadable += main.unreadable
        tally.hls_latency.extend(main.hls_latency)
        tally.samples.extend(latency for latency, _, _ in main.samples)
        tally.heights.update(height for _, height, _ in main.samples)
        if main.samples:
            tally.join_medians.append(float(np.median([x[0] for x in main.samples])))
        return viewers


def pair(viewer: Viewer, baseline: Viewer) -> list[float]:
    """Per clock value shown by both players: this player's latency minus the baseline's."""
    shown = {drawn: latency for latency, _, drawn in reversed(baseline.samples)}
    return [latency - shown[drawn] for latency, _, drawn in viewer.samples if drawn in shown]


async def measure(
    path: LatencyPath,
    urls: Sequence[str],
    *,
    joins: int,
    warmup: float,
    seconds: float,
    logs: Path,
    ai_segments: list[dict[str, Any]] | None = None,
) -> tuple[PathResult, list[tuple[float, float]]]:
    """``joins`` viewers one after another, ``seconds / joins`` sampled each, pooled. With a
    second URL (the baseline) each join plays both side by side and pairs their frames."""
    tally = Tally()
    failures: list[str] = []
    for join in range(joins):
        log = logs / f"chromium-{path.name}-{join}.log"
        try:
            viewers = await measure_join(
                urls, warmup=warmup, seconds=seconds / joins, log=log, tally=tally
            )
        except JoinFailed as exc:
            failures.append(str(exc))
            continue
        if len(viewers) > 1:
            paired = pair(viewers[0], viewers[1])
            tally.paired.extend(paired)
            tally.alongside.extend(latency for latency, _, _ in viewers[1].samples)
            if paired:
                tally.paired_join_medians.append(float(np.median(paired)))
    error = None
    if failures:
        error = f"{len(failures)} of {joins} joins failed: {failures[0]}"
    result = PathResult(
        name=path.name,
        what=path.what,
        target_ms=path.target_ms,
        samples=tally.samples,
        heights=dict(tally.heights),
        unreadable=tally.unreadable,
        seconds=tally.seconds,
        join_medians=tally.join_medians,
        webrtc=tally.webrtc,
        load_average=round(os.getloadavg()[0], 1),
        hls_latency_s=round(float(np.median(tally.hls_latency)), 2) if tally.hls_latency else None,
        paired=tally.paired,
        paired_join_medians=tally.paired_join_medians,
        alongside=tally.alongside,
        ai_segments=list(ai_segments or []),
        error=error,
    )
    return result, tally.clock_checks


def segments_now(
    ingest: Ingest, node: str, stream: str, peer_dir: Path, rendition: str = "source"
) -> int:
    """Segments (not gaps) in a media playlist of ``stream`` (or in the peer's playlist)."""
    try:
        if ingest is Ingest.FFMPEG_HLS:
            text = (peer_dir / "index.m3u8").read_text()
        else:
            url = f"http://{node}/hls/{stream}/{rendition}/index.m3u8"
            with _OPENER.open(url, timeout=5) as response:
                text = response.read().decode()
    except OSError:
        return 0
    return sum(1 for *_, gap in parse_media_playlist(text)[1] if not gap)


async def wait_for_segments(count: Callable[[], int], what: str, seconds: float) -> None:
    deadline = trio.current_time() + seconds
    while await trio.to_thread.run_sync(count) < JOIN_SEGMENTS:
        if trio.current_time() > deadline:
            raise TimeoutError(f"timed out after {seconds:g} s waiting for {what}")
        await trio.sleep(0.25)


def player_url(path: LatencyPath, server: PlayerServer, node: str) -> str:
    if path.player is Player.WATCH_PAGE:
        return f"http://{node}/watch/{path.stream}"
    if path.player is Player.WHEP:
        rendition = f"&rendition={path.rendition}" if path.rendition else ""
        return f"http://{node}/watch/{path.stream}?whep=1{rendition}"
    if path.ingest is Ingest.FFMPEG_HLS:
        src = "/peer/index.m3u8"
    elif path.rendition is None:
        src = f"/node/hls/{path.stream}/index.m3u8"
    else:
        src = f"/node/hls/{path.stream}/{path.rendition}/index.m3u8"
    query = urllib.parse.urlencode({"src": src, "config": json.dumps(HLSJS_CONFIG[path.player])})
    return f"{server.base}/player.html?{query}"


def baseline_url(path: LatencyPath, server: PlayerServer, node: str) -> str | None:
    """The player of ``path.baseline`` on its source rendition, to run alongside ``path``."""
    if path.baseline is None:
        return None
    baseline = PATHS[path.baseline]
    if baseline.player is not Player.WHEP:  # the media playlist: the master may pick ``ai``
        baseline = attrs.evolve(baseline, rendition="source")
    return player_url(baseline, server, node)


def start_pipeline(node: str, stream: str, pipeline: str) -> str | None:
    """Starts a live AI pipeline on ``stream``; None, or why it did not start."""
    width, height = AI_SIZE
    body = {"pipeline": pipeline, "params": {}, "width": width, "height": height}
    try:
        status, _, answer = _http(
            "POST", f"http://{node}/api/ai/{stream}", json.dumps(body).encode(), "application/json"
        )
    except OSError as exc:
        return f"POST /api/ai/{stream} failed: {exc}"
    if status != 201:
        return f"POST /api/ai/{stream} answered {status}: {answer.decode(errors='replace')}"
    return None


def ai_stats(node: str, stream: str) -> dict[str, Any] | None:
    """The gateway's latest per-segment statistics of the stream's AI session."""
    try:
        status, _, body = _http("GET", f"http://{node}/api/ai/{stream}")
    except OSError:
        return None
    if status != 200:
        return None
    stats = json.loads(body).get("stats")
    return stats if isinstance(stats, dict) and "seq" in stats else None


async def gather_ai_stats(node: str, stream: str, into: list[dict[str, Any]]) -> None:
    """Appends each new AI segment's statistics to ``into`` (polled every 0.5 s) until
    cancelled."""
    seen: set[int] = set()
    while True:
        stats = await trio.to_thread.run_sync(ai_stats, node, stream)
        if stats is not None and int(stats["seq"]) not in seen:
            seen.add(int(stats["seq"]))
            into.append(stats)
        await trio.sleep(0.5)


def whep_available(node: str, stream: str) -> str | None:
    """None if the node has WHEP routes, else why not."""
    try:
        status = _http("OPTIONS", f"http://{node}/whep/{stream}")[0]
    except OSError as exc:
        return f"WHEP not available ({exc})"
    return None if status in (200, 204) else f"WHEP not available (OPTIONS answered {status})"


@attrs.frozen(kw_only=True)
class Report:
    results: list[PathResult]
    clock_offset_ms: tuple[float, float]
    """The largest Date.now() - time.time() seen, and its uncertainty."""
    sources: dict[str, dict[str, int]]


@attrs.frozen(kw_only=True)
class Bench:
    """What every path of one run shares."""

    node: NodeProcess
    server: PlayerServer
    peer_dir: Path
    logs: Path
    size: str
    joins: int
    warmup: float
    seconds: float

    @property
    def http(self) -> str:
        return self.node.hostport("http")


async def run_group(
    bench: Bench, ingest: Ingest, group: Sequence[LatencyPath], checks: list[tuple[float, float]]
) -> tuple[list[PathResult], dict[str, int]]:
    """Publishes from one source and measures each path of ``group`` on that publish."""
    stream = group[0].stream
    if ingest is Ingest.RTMP:
        to = f"{bench.node.url('rtmp')}/live/{stream}"
    elif ingest is Ingest.WHIP:
        to = f"http://{bench.http}/whip/{stream}"
    else:
        to = str(bench.peer_dir)
    results: list[PathResult] = []
    log = bench.logs / f"source-{ingest.value}.log"
    with open_source(ingest, to, bench.size, log) as counts:
        count = functools.partial(segments_now, ingest, bench.http, stream, bench.peer_dir)
        try:
            await wait_for_segments(count, f"{JOIN_SEGMENTS} segments of {stream}", 40)
        except TimeoutError as exc:
            failed = f"{exc} (source log: {log})"
            return [PathResult(name=p.name, what=p.what, target_ms=p.target_ms, error=failed)
                    for p in group], counts  # fmt: skip
        started: str | None = None
        for path in group:
            why: str | None = None
            if path.player is Player.WHEP:
                why = await trio.to_thread.run_sync(whep_available, bench.http, stream)
            if why is None and path.pipeline is not None:
                why = await open_pipeline(bench, path, started)
                started = path.pipeline if why is None else started
            if why is not None:
                results.append(
                    PathResult(name=path.name, what=path.what, target_ms=path.target_ms, error=why)
                )
                continue
            urls = [player_url(path, bench.server, bench.http)]
            alongside = baseline_url(path, bench.server, bench.http)
            if alongside is not None:
                urls.append(alongside)
            segments: list[dict[str, Any]] = []
            async with trio.open_nursery() as nursery:
                if path.pipeline is not None:
                    nursery.start_soon(gather_ai_stats, bench.http, stream, segments)
                result, path_checks = await measure(
                    path,
                    urls,
                    joins=bench.joins,
                    warmup=bench.warmup,
                    seconds=bench.seconds,
                    logs=bench.logs,
                    ai_segments=segments,
                )
                nursery.cancel_scope.cancel()
            results.append(result)
            checks.extend(path_checks)
    return results, counts


async def open_pipeline(bench: Bench, path: LatencyPath, started: str | None) -> str | None:
    """Starts ``path.pipeline`` on the group's publish (once) and waits for its rendition's
    playlist to hold ``JOIN_SEGMENTS`` segments; None, or why it could not."""
    assert path.pipeline is not None and path.rendition is not None
    if started is not None and started != path.pipeline:
        return f"the stream already runs {started!r}"
    if started is None:
        why = await trio.to_thread.run_sync(start_pipeline, bench.http, path.stream, path.pipeline)
        if why is not None:
            return why
    count = functools.partial(
        segments_now, path.ingest, bench.http, path.stream, bench.peer_dir, path.rendition
    )
    try:
        await wait_for_segments(count, f"{JOIN_SEGMENTS} segments of {path.rendition}", 60)
    except TimeoutError as exc:
        return str(exc)
    return None


async def run_paths(
    paths: Sequence[LatencyPath],
    *,
    seconds: float,
    joins: int,
    warmup: float,
    size: str,
    logs: Path,
) -> Report:
    script = hls_js()
    if script is None:
        raise SystemExit("hls.js is not installed: run scripts/setup")
    if chromium_path() is None:
        raise SystemExit("chromium is not installed: run scripts/setup")
    node = NodeProcess(
        ["dev", "--offchain", "--rtmp-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0",
         "--service-addr=127.0.0.1:0", "--whip-host=127.0.0.1", "--log-level=warning",
         f"--encoder={encoder_flag(X264)}"],
        name="dev", log_dir=logs,
    )  # fmt: skip
    peer_dir = logs / "ffmpeg-hls"
    peer_dir.mkdir()
    results: list[PathResult] = []
    checks: list[tuple[float, float]] = []
    sources: dict[str, dict[str, int]] = {}
    try:
        await trio.to_thread.run_sync(node.wait_ready)
        server = PlayerServer(node.hostport("http"), peer_dir, script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        bench = Bench(node=node, server=server, peer_dir=peer_dir, logs=logs, size=size,
                      joins=joins, warmup=warmup, seconds=seconds)  # fmt: skip
        try:
            for ingest in dict.fromkeys(p.ingest for p in paths):
                group = [p for p in paths if p.ingest is ingest]
                group_results, counts = await run_group(bench, ingest, group, checks)
                results.extend(group_results)
                sources[ingest.value] = counts
        finally:
            server.shutdown()
            server.server_close()
    finally:
        await trio.to_thread.run_sync(node.stop)
    offset = max(checks, key=lambda c: abs(c[0])) if checks else (0.0, 0.0)
    return Report(results=results, clock_offset_ms=offset, sources=sources)


# --- output --------------------------------------------------------------------------------


def peer_of(path: LatencyPath) -> str | None:
    """The peer ``path`` is compared with: one of its own kind, for a path without a pipeline
    (a pipeline path is compared with its baseline instead)."""
    peer = PEERS.get(KIND[path.player])
    return peer if peer != path.name and path.pipeline is None else None


def ratios(report: Report) -> dict[str, float]:
    """Like-for-like ratios only: a path over the peer of its kind, a pipeline path over its
    baseline; and each median over the issue's target."""
    medians = {r.name: r.median for r in report.results}
    out: dict[str, float] = {}
    for name, median in medians.items():
        if median is None:
            continue
        peer = peer_of(PATHS[name])
        peer_median = medians.get(peer) if peer else None
        if peer_median:
            out[f"{name} / {peer}"] = round(median / peer_median, 3)
        target = PATHS[name].target_ms
        if target:
            out[f"{name} / target"] = round(median / target, 3)
    by_name = {r.name: r for r in report.results}
    for result in report.results:
        path = PATHS[result.name]
        if path.baseline is None:
            continue
        baseline = by_name.get(path.baseline)
        if baseline is not None and baseline.median and result.median:
            out[f"{result.name} / {path.baseline}"] = round(result.median / baseline.median, 3)
        if result.paired and path.added_target_ms:
            p95 = float(np.percentile(result.paired, 95))
            out[f"{result.name} added p95 / target"] = round(p95 / path.added_target_ms, 3)
    return out


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}"


def method_text(args: argparse.Namespace) -> str:
    return METHOD.format(
        joins=args.joins,
        join=JOIN_SEGMENTS,
        warmup=args.warmup,
        per_join=args.seconds / args.joins,
        size=args.size,
        ai_w=AI_SIZE[0],
        ai_h=AI_SIZE[1],
    )


def print_report(report: Report, args: argparse.Namespace) -> None:
    print(method_text(args))
    print_toolchains(X264)
    offset, plus_minus = report.clock_offset_ms
    print(
        f"clock check: Date.now() - time.time() = {offset:+.1f} ms (+/- {plus_minus:.1f} ms), "
        "worst of the players"
    )
    encoder = " ".join(ENCODER)
    print(f"RTMP source: ffmpeg -f rawvideo -s {args.size} -r {FPS} -i - {encoder} -f flv URL")
    print(f"peer:        ffmpeg -f rawvideo ... {encoder} -f hls -hls_time 2 -hls_list_size 6")
    print("WHIP source: aiortc H.264 (its libx264: zerolatency, baseline), video only")
    for kind, counts in report.sources.items():
        line = f"  source {kind}: {counts.get('frames', 0)} frames in {counts.get('seconds', 0)} s"
        if "late" in counts:
            line += (
                f", {counts['late']} written over a frame late"
                f" (at worst {counts.get('max_behind_ms', 0)} ms behind)"
            )
        print(line)
    print()
    header = ("path", "samples", "median", "p95", "min", "max", "target", "fps", "load")
    print("{:<17} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>5} {:>5}  {}".format(*header, "joins"))
    for result in report.results:
        s = result.summary()
        if result.error and not result.samples:
            print(f"{s['path']:<17} {result.error}")
            continue
        heights = " ".join(f"{h}p:{n}" for h, n in s["heights"].items())
        joins = "/".join(_ms(m) for m in s["join_medians_ms"])
        print(
            f"{s['path']:<17} {s['samples']:>7} {_ms(s['median_ms']):>7} {_ms(s['p95_ms']):>7} "
            f"{_ms(s['min_ms']):>7} {_ms(s['max_ms']):>7} {_ms(s['target_ms']):>7} "
            f"{s['frames_per_s']:>5} {s['load_average']:>5}  {joins}  {heights}"
            + (f" unreadable:{s['unreadable']}" if s["unreadable"] else "")
        )
    for result in report.results:
        if result.error and result.samples:
            print(f"{result.name}: {result.error}")
        for n, stats in enumerate(result.webrtc):
            print(
                f"{result.name} join {n}, Chromium's WebRTC receiver: jitter buffer"
                f" {_ms(stats.get('jitter_buffer_ms'))} ms, decode {stats.get('decode_ms')} ms"
                f" a frame, {stats.get('frames_dropped')} of {stats.get('frames_decoded')}"
                " frames dropped"
            )
    print(
        "(ms; fps: frames presented per second; load: 1-min load average, 2 cores here;"
        " joins: each viewer's median; 720p:N: samples per rendition height)"
    )
    print()
    for result in report.results:
        player = PATHS[result.name].player.value.replace("{stream}", PATHS[result.name].stream)
        print(f"  {result.name:<17} {result.what}; player: {player}")
    print()
    kinds = {KIND[PATHS[r.name].player] for r in report.results}
    for kind in sorted(kinds - PEERS.keys()):
        print(
            f"{kind}: no peer of this kind runs here (Debian's FFmpeg 5.1 writes neither LL-HLS "
            "nor WHIP/WHEP); absolute figures and targets only"
        )
    print()
    print_added(report)
    for name, value in ratios(report).items():
        print(f"ratio {name + ':':<40} {value:.2f}")


def print_added(report: Report) -> None:
    """The added latency of each path that has a baseline, two ways."""
    by_name = {r.name: r for r in report.results}
    for result in report.results:
        added = result.added()
        if added is None:
            continue
        name, baseline = result.name, by_name.get(added["baseline"])
        print(f"added latency of {name} over {added['baseline']} (target p95 <= "
              f"{_ms(added['target_p95_ms'])} ms):")  # fmt: skip
        if baseline is not None and baseline.median is not None and result.median is not None:
            assert baseline.p95 is not None and result.p95 is not None
            print(
                f"  paths measured one after the other: median {result.median:.0f} - "
                f"{baseline.median:.0f} = {result.median - baseline.median:+.0f} ms, "
                f"p95 {result.p95:.0f} - {baseline.p95:.0f} = {result.p95 - baseline.p95:+.0f} ms"
            )
        if added["pairs"]:
            q = added["percentiles_ms"]
            print(
                f"  side by side, same clock value in both players ({added['pairs']} frames):"
                f" p5 {q['5']:+.0f}, p25 {q['25']:+.0f}, median {q['50']:+.0f},"
                f" p75 {q['75']:+.0f}, p95 {q['95']:+.0f} ms"
                f" (min {added['min_ms']:+.0f}, max {added['max_ms']:+.0f});"
                f" per join {'/'.join(f'{m:+.0f}' for m in added['join_medians_ms'])}"
            )
            bins = ", ".join(f"[{a:+.0f},{b:+.0f}):{n}" for a, b, n in added["histogram"])
            print(f"    per-frame distribution (ms): {bins}")
            print(
                f"    the {added['baseline']} player alongside: median "
                f"{_ms(added['alongside_median_ms'])}, p95 {_ms(added['alongside_p95_ms'])} ms"
            )
        else:
            print("  side by side: no clock value shown by both players")
        seg = added["ai_segment_latency_ms"]
        fps = [f for f in added["ai_fps_out"] if f is not None]
        print(
            f"  gateway, {added['ai_segments']} ai segments while measured: source segment's "
            f"last byte -> ai segment listed median {_ms(seg['median'])}, p95 "
            f"{_ms(seg['p95'])} ms; fps out {min(fps, default=0):g}..{max(fps, default=0):g}, "
            f"{added['ai_dropped']} frames dropped"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=24.0, help="sampled per path")
    parser.add_argument("--joins", type=int, default=4, help="fresh players per path")
    parser.add_argument("--warmup", type=float, default=5.0, help="played before sampling")
    parser.add_argument(
        "--paths",
        default=",".join(PATHS),
        help=f"comma-separated subset of: {', '.join(PATHS)}",
    )
    parser.add_argument("--size", default=f"{WIDTH}x{HEIGHT}", help="source frame size")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep-logs", action="store_true", help="keep the node/browser logs")
    parser.add_argument("--source", choices=[i.value for i in Ingest], help=argparse.SUPPRESS)
    parser.add_argument("--to", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.source:
        run_source(args.source, args.to, args.size)
        return
    names = [n.strip() for n in args.paths.split(",") if n.strip()]
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        parser.error(f"unknown paths {unknown}; known: {', '.join(PATHS)}")
    # Ordered as PATHS is, so that paths sharing a source are measured on one publish.
    paths = [p for p in PATHS.values() if p.name in names]
    logs = Path(tempfile.mkdtemp(prefix="lpstream-g2g-"))
    try:
        report = trio.run(
            lambda: run_paths(
                paths,
                seconds=args.seconds,
                joins=args.joins,
                warmup=args.warmup,
                size=args.size,
                logs=logs,
            )
        )
    except BaseException:
        print(f"logs kept in {logs}", file=sys.stderr)
        raise
    if args.json:
        print(
            json.dumps(
                {
                    "method": method_text(args),
                    "settings": {
                        "seconds": args.seconds,
                        "joins": args.joins,
                        "warmup": args.warmup,
                        "size": args.size,
                        "encoder": ENCODER,
                    },
                    "toolchains": [
                        lpstream_toolchain(X264).describe(),
                        cli_toolchain(X264).describe(),
                    ],
                    "clock_offset_ms": [round(v, 1) for v in report.clock_offset_ms],
                    "sources": report.sources,
                    "paths": [r.summary() for r in report.results],
                    "ratios": ratios(report),
                },
                indent=2,
            )
        )
    else:
        print_report(report, args)
    if args.keep_logs:
        print(f"logs: {logs}", file=sys.stderr)
    else:
        shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    main()
