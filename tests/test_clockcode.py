"""The glass-to-glass benchmark's clock code survives H.264 and a downscale, read in Python and
in JavaScript (the reader the browser runs, under Node.js)."""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest

from benchmarks.clockcode import JS_READER, band_rows, draw_clock, read_clock, read_clock_rgb

START_MS = 1_767_225_600_123  # 2026-01-01, past 2^40: every byte of the 48 bits is used
FRAMES = 12


def clock_frames(width: int, height: int) -> list[np.ndarray]:
    """yuv420p frames (as PyAV lays them out) over a moving pattern, a clock in each."""
    x = np.arange(width)[None, :]
    y = np.arange(height)[:, None]
    pattern = ((x * 3 + y * 5) % 256).astype(np.uint8)
    frames = []
    for n in range(FRAMES):
        luma = np.roll(pattern, n * 16, axis=1)
        draw_clock(luma, START_MS + n * 33)
        chroma = np.full((height // 2, width), 128, np.uint8)
        frames.append(np.concatenate([luma, chroma]))
    return frames


def h264_round_trip(
    frames: list[np.ndarray], width: int, height: int, out: tuple[int, int], bitrate: int
) -> list[av.VideoFrame]:
    """Encodes with libx264 (scaled to ``out`` first, as the ladder does) and decodes."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height = out
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, 30)
    encoder.bit_rate = bitrate
    encoder.options = {"preset": "veryfast", "tune": "zerolatency", "g": "30"}
    decoder = av.CodecContext.create("h264", "r")
    decoded: list[av.VideoFrame] = []
    for pts, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame = frame.reformat(width=out[0], height=out[1])
        frame.pts = pts
        for packet in encoder.encode(frame):
            decoded.extend(decoder.decode(packet))
    for packet in encoder.encode(None):
        decoded.extend(decoder.decode(packet))
    decoded.extend(decoder.decode(None))
    return decoded


def test_a_drawn_clock_reads_back_exactly() -> None:
    (frame,) = clock_frames(1280, 720)[:1]
    assert read_clock(frame[:720]) == START_MS


def test_a_frame_without_a_clock_is_unreadable_not_misread() -> None:
    assert read_clock(np.full((720, 1280), 128, np.uint8)) is None
    noise = np.random.default_rng(1).integers(0, 256, (240, 426), dtype=np.uint8)
    assert read_clock(noise) is None
    (frame,) = clock_frames(1280, 720)[:1]
    frame[20:40, 600:640] = 255 - frame[20:40, 600:640]  # flip a bit: the CRC refuses it
    assert read_clock(frame[:720]) is None


@pytest.mark.parametrize(
    ("out", "bitrate"), [((1280, 720), 2_000_000), ((640, 360), 400_000), ((426, 240), 250_000)]
)
def test_the_clock_survives_h264_and_the_ladder_downscale(
    out: tuple[int, int], bitrate: int
) -> None:
    decoded = h264_round_trip(clock_frames(1280, 720), 1280, 720, out, bitrate)
    assert len(decoded) == FRAMES
    read = [read_clock_rgb(f.to_ndarray(format="rgb24")) for f in decoded]
    assert read == [START_MS + n * 33 for n in range(FRAMES)]


def test_the_browser_reader_agrees_on_decoded_240p_pixels() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the JavaScript reader is not checked here")
    decoded = h264_round_trip(clock_frames(1280, 720), 1280, 720, (426, 240), 250_000)
    bands = []
    for frame in decoded[:4]:
        rgb = frame.to_ndarray(format="rgb24")[: band_rows(240)]
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        bands.append({"w": rgba.shape[1], "h": rgba.shape[0], "data": rgba.ravel().tolist()})
    script = JS_READER + (
        "const bands = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(bands.map(b => readClock(b.data, b.w, b.h))));"
    )
    result = subprocess.run(
        [node, "-e", script], input=json.dumps(bands), capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [START_MS + n * 33 for n in range(4)]
