"""Shared by the batch AI end-to-end tests and benchmarks: the tiny models, the models file,
the same pipelines run in this process, and the HTTP calls a client makes."""

from __future__ import annotations

import base64
import io
import json
import math
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from benchmarks.harness.tiny_ai_images import build_tiny_sd, build_tiny_upscaler
from benchmarks.harness.tiny_ai_text import build_tiny_causal_lm, build_tiny_whisper
from workers.batch import BatchOutput, BatchRegistry, BatchRequest

__all__ = [
    "MODELS",
    "Recorded",
    "build_models",
    "data_url_bytes",
    "direct",
    "multipart",
    "picture",
    "post",
    "sse_events",
    "tone_wav",
    "write_models_file",
]

MODELS = {
    "text-to-image": "tiny/sd",
    "image-to-image": "tiny/sd",
    "upscale": "tiny/x4-upscaler",
    "audio-to-text": "tiny/whisper",
    "llm": "tiny/chat-lm",
}
"""The model id each capability runs in these tests."""


def build_models(root: Path) -> dict[str, Path]:
    """Builds every tiny model under ``root``; returns each capability's directory."""
    sd = build_tiny_sd(root / "sd")
    return {
        "text-to-image": sd,
        "image-to-image": sd,
        "upscale": build_tiny_upscaler(root / "upscaler"),
        "audio-to-text": build_tiny_whisper(root / "whisper"),
        "llm": build_tiny_causal_lm(root / "lm"),
    }


def write_models_file(
    path: Path,
    directories: dict[str, Path],
    prices: dict[str, tuple[int, int]],
    *,
    warm: bool = True,
) -> Path:
    """An ``--ai-models`` file for ``directories``, priced (price_per_unit, pixels_per_unit)."""
    entries = [
        {
            "pipeline": capability,
            "model_id": MODELS[capability],
            "path": str(directory),
            "price_per_unit": prices[capability][0],
            "pixels_per_unit": prices[capability][1],
            "warm": warm,
        }
        for capability, directory in directories.items()
    ]
    path.write_text(json.dumps(entries))
    return path


class Recorded:
    """A sink that keeps what a pipeline produced."""

    def __init__(self) -> None:
        self.outputs: list[BatchOutput] = []
        self.tracks: list[bytearray] = []
        self.pieces: list[tuple[int, bytes]] = []

    def start(self, outputs: Any) -> None:
        self.outputs = list(outputs)
        self.tracks = [bytearray() for _ in self.outputs]

    def data(self, track: int, payload: bytes) -> None:
        self.tracks[track] += payload
        self.pieces.append((track, payload))


def direct(
    capability: str, directory: Path, params: dict[str, Any], data: bytes = b""
) -> tuple[Recorded, tuple[int, ...]]:
    """Runs the capability's pipeline on the model in this process: what the network must
    give back byte for byte; with the units it bills."""
    cls = BatchRegistry().get(capability)
    pipeline = cls()
    pipeline.load(str(directory), "cpu")
    try:
        sink = Recorded()
        usage = pipeline.run(cls.checked(BatchRequest(params=params, input=data)), sink)
    finally:
        pipeline.unload()
    return sink, usage.units


def post(
    url: str,
    body: bytes,
    content_type: str,
    *,
    token: str | None = None,
    timeout: float = 120.0,
) -> tuple[int, bytes, str]:
    """POSTs ``body``; returns the status, the body and its content type (errors too)."""
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def multipart(
    fields: dict[str, str], files: dict[str, tuple[str, str, bytes]]
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body as browsers and HTTP clients write it."""
    boundary = f"----lpstream{uuid.uuid4().hex}"
    parts = []
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(head.encode() + value.encode() + b"\r\n")
    for name, (filename, content_type, data) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def picture(width: int, height: int, seed: int = 1) -> bytes:
    """A PNG of random pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def tone_wav(seconds: float, rate: int = 16000) -> tuple[bytes, int]:
    """A WAV of a tone, and its duration in whole milliseconds rounded up."""
    samples = int(seconds * rate)
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)
    out = io.BytesIO()
    with av.open(out, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue(), math.ceil(samples * 1000 / rate)


def data_url_bytes(url: str) -> bytes:
    """The bytes of a ``data:image/png;base64,...`` URL."""
    head, _, payload = url.partition(",")
    assert head == "data:image/png;base64", head
    return base64.b64decode(payload)


def sse_events(body: bytes) -> list[str]:
    """The ``data:`` payloads of a server-sent event stream, in order."""
    events = []
    for block in body.decode().split("\n\n"):
        lines = [line[5:].lstrip() for line in block.split("\n") if line.startswith("data:")]
        if lines:
            events.append("\n".join(lines))
    return events
