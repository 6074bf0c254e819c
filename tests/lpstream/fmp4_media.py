"""Real fragmented MP4 for tests: encoded with PyAV, cut into the init section and fragments
with a small box walker of its own (so the tests do not rest on the code they check)."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from typing import cast

import attrs
import av
import numpy as np

__all__ = ["Fmp4Clip", "Fragment", "encode_fmp4"]

MOVFLAGS = "empty_moov+default_base_moof+frag_keyframe"


@attrs.frozen
class Fragment:
    """One ``moof`` + ``mdat``."""

    data: bytes
    first_frame: int
    """Index of its first frame in the clip."""
    frames: int


@attrs.frozen
class Fmp4Clip:
    """A clip split at its first ``moof``: the init section, then its fragments."""

    init: bytes
    fragments: tuple[Fragment, ...]
    rate: int
    gop: int

    @property
    def frames(self) -> int:
        return sum(f.frames for f in self.fragments)

    def segments(self) -> list[list[Fragment]]:
        """The fragments grouped by GOP: one HLS segment each, its fragments the parts."""
        groups: list[list[Fragment]] = []
        for fragment in self.fragments:
            if fragment.first_frame % self.gop == 0:
                groups.append([])
            groups[-1].append(fragment)
        return groups


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[str, int, int]]:
    """(type, start, end) of each box from ``start`` to ``end``."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        assert size >= 8, "this walker reads 32-bit box sizes only"
        yield kind.decode("latin-1"), pos, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: str) -> tuple[int, int]:
    return next((s, e) for k, s, e in _boxes(data, start, end) if k == kind)


def _samples(moof: bytes) -> int:
    traf = _child(moof, 8, len(moof), "traf")
    trun_start, _ = _child(moof, traf[0] + 8, traf[1], "trun")
    (count,) = struct.unpack(">I", moof[trun_start + 12 : trun_start + 16])
    return int(count)


def encode_fmp4(
    *,
    frames: int = 75,
    rate: int = 25,
    gop: int = 25,
    codec: str = "libx264",
    fragment_seconds: float = 0.2,
) -> Fmp4Clip:
    """A ``frames``-long 160x96 clip as fragmented MP4, a keyframe every ``gop`` frames, a
    fragment at every keyframe and every ``fragment_seconds``."""
    buffer = io.BytesIO()
    options = {"movflags": MOVFLAGS, "frag_duration": str(int(fragment_seconds * 1e6))}
    with av.open(buffer, "w", format="mp4", options=options) as out:
        settings = {"g": str(gop)}
        if codec == "libx264":
            settings |= {"preset": "ultrafast", "keyint_min": str(gop), "sc_threshold": "0"}
            settings["bf"] = "0"
        else:
            settings["preset"] = "12"
        stream = cast(av.VideoStream, out.add_stream(codec, rate=rate, options=settings))
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for index in range(frames):
            picture = np.zeros((96, 160, 3), np.uint8)
            picture[:, : (index * 2) % 160 + 1] = (index * 7) % 256
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = buffer.getvalue()
    boxes = list(_boxes(data))
    first_moof = next(i for i, (kind, _, _) in enumerate(boxes) if kind == "moof")
    init = data[: boxes[first_moof][1]]
    fragments = []
    seen = 0
    for (kind, start, _), (next_kind, _, end) in zip(
        boxes[first_moof:], boxes[first_moof + 1 :], strict=False
    ):
        if kind != "moof":
            continue
        assert next_kind == "mdat"
        count = _samples(data[start:end])
        fragments.append(Fragment(data=data[start:end], first_frame=seen, frames=count))
        seen += count
    assert seen == frames, (seen, frames)
    return Fmp4Clip(init=init, fragments=tuple(fragments), rate=rate, gop=gop)
