"""Test helpers that make real media with the ffmpeg CLI and read it back with PyAV."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import av

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


def flv_events(path: Path) -> Iterator[MediaEvent]:
    """Reads an FLV file as the RTMP ingest would deliver it: configs, then packets in order."""
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is not None:
            yield CodecConfig(
                kind=TrackKind.VIDEO, codec="h264", data=bytes(video.codec_context.extradata or b"")
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
