"""Test helpers that make real media with the ffmpeg CLI and read it back with PyAV."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import av
import numpy as np

from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind


def ffmpeg(*args: str) -> None:
    """Runs the ffmpeg CLI quietly; raises with its stderr on failure."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.decode(errors='replace')}")


def make_clip(
    path: Path,
    *,
    seconds: float = 4.0,
    size: str = "640x360",
    rate: int = 30,
    gop: int = 60,
    audio: bool = True,
    bframes: int = 0,
    fmt: str = "flv",
) -> Path:
    """Writes a testsrc2 clip with libx264 (and AAC audio) into ``path``."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440"]
    args += ["-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop)]
    args += [
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-bf",
        str(bframes),
        "-pix_fmt",
        "yuv420p",
    ]
    if audio:
        args += ["-c:a", "aac", "-b:a", "64k"]
    args += ["-f", fmt, str(path)]
    ffmpeg(*args)
    return path


_CODEC_NAMES = {"libdav1d": "av1"}
"""Decoder names PyAV reports, as the codec names of our ``CodecConfig``."""

ENHANCED_ENCODERS = {"hevc": "libx265", "av1": "libsvtav1", "vp9": "libvpx-vp9", "vp8": "libvpx"}
"""The PyAV encoder for each codec beyond H.264: those an Enhanced RTMP (FourCC) FLV carries,
and VP8 (WebRTC's; write it to a ``.mkv``)."""
ENCODER_OPTIONS = {
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error:open-gop=0"},
    "libsvtav1": {"preset": "12", "svtav1-params": "keyint=60"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
}


SAMPLE_RATE = 44_100
"""The sound's rate in the clips written here (FFmpeg's AAC frames: 1024 samples)."""


def write_enhanced(
    out: av.container.OutputContainer,
    codec: str,
    *,
    seconds: float,
    size: tuple[int, int],
    rate: int = 30,
    gop: int = 60,
    audio: bool = True,
    paced: bool = False,
) -> None:
    """Encodes ``seconds`` of a moving gradient in ``codec`` (hevc, av1 or vp9), with a
    440 Hz AAC tone when ``audio``, into ``out``; ``paced`` holds each frame to real time
    (a live publisher)."""
    encoder = ENHANCED_ENCODERS[codec]
    width, height = size
    video = cast(
        av.VideoStream, out.add_stream(encoder, rate=rate, options=ENCODER_OPTIONS[encoder])
    )
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.codec_context.gop_size = gop
    sound = out.add_stream("aac", rate=SAMPLE_RATE) if audio else None
    ramp = np.add.outer(np.arange(height), np.arange(width)).astype(np.int64)
    tone = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    samples = 0
    start = time.monotonic()
    for i in range(int(seconds * rate)):
        picture = np.stack([ramp + i * 3, ramp * 2 - i, np.full_like(ramp, i * 5)], axis=-1)
        frame = av.VideoFrame.from_ndarray((picture % 256).astype(np.uint8), format="rgb24")
        frame.pts = i
        out.mux(video.encode(frame))
        while sound is not None and samples < (i + 1) * SAMPLE_RATE / rate:
            at = samples % SAMPLE_RATE
            chunk = np.resize(tone[at : at + 1024], 1024)[None, :]
            sound_frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            sound_frame.sample_rate, sound_frame.pts = SAMPLE_RATE, samples
            out.mux(sound.encode(sound_frame))
            samples += 1024
        ahead = start + (i + 1) / rate - time.monotonic()
        if paced and ahead > 0:
            time.sleep(ahead)
    out.mux(video.encode(None))
    if sound is not None:
        out.mux(sound.encode(None))


def make_enhanced_clip(
    path: Path,
    codec: str,
    *,
    seconds: float = 4.0,
    size: tuple[int, int] = (320, 240),
    rate: int = 30,
    gop: int = 60,
    audio: bool = True,
) -> Path:
    """Writes a clip of ``codec`` (:func:`write_enhanced`) into an FLV file the way PyAV's
    FFmpeg writes Enhanced RTMP, or into the container ``path``'s suffix names."""
    with av.open(str(path), "w", format="flv" if path.suffix == ".flv" else None) as out:
        write_enhanced(out, codec, seconds=seconds, size=size, rate=rate, gop=gop, audio=audio)
    return path


def flv_events(path: Path) -> Iterator[MediaEvent]:
    """Reads an FLV file as the RTMP ingest would deliver it: configs, then packets in order."""
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is not None:
            codec = _CODEC_NAMES.get(video.codec_context.name, video.codec_context.name)
            yield CodecConfig(
                kind=TrackKind.VIDEO, codec=codec, data=bytes(video.codec_context.extradata or b"")
            )
        if audio is not None:
            yield CodecConfig(
                kind=TrackKind.AUDIO, codec="aac", data=bytes(audio.codec_context.extradata or b"")
            )
        for packet in container.demux():
            if packet.size == 0 or packet.dts is None:
                continue
            kind = TrackKind.VIDEO if packet.stream.type == "video" else TrackKind.AUDIO
            yield MediaPacket(
                kind=kind,
                dts=int(packet.dts),
                pts=int(packet.pts if packet.pts is not None else packet.dts),
                keyframe=bool(packet.is_keyframe) or kind is TrackKind.AUDIO,
                data=bytes(packet),
            )


def probe_streams(path: Path) -> list[dict[str, object]]:
    """Decodes a media file fully with PyAV; returns per-stream facts (frames, size, span)."""
    facts: list[dict[str, object]] = []
    with av.open(str(path)) as container:
        streams: Sequence[av.stream.Stream] = list(container.streams)
        counts = {s.index: 0 for s in streams}
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        sizes: dict[int, tuple[int, int]] = {}
        for packet in container.demux(*streams):
            idx = packet.stream.index
            for frame in packet.decode():
                counts[idx] += 1
                if not isinstance(frame, av.VideoFrame | av.AudioFrame):
                    continue
                if frame.time is not None:
                    first.setdefault(idx, float(frame.time))
                    last[idx] = float(frame.time)
                if isinstance(frame, av.VideoFrame):
                    sizes[idx] = (frame.width, frame.height)
        for s in streams:
            facts.append(
                {
                    "type": s.type,
                    "frames": counts.get(s.index, 0),
                    "size": sizes.get(s.index),
                    "first": first.get(s.index),
                    "last": last.get(s.index),
                }
            )
    return facts
