"""Reading back what a destination received, and waiting on a forward, for the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs
import av
import trio

from lpstream.restream import Forward, ForwardSegment, ForwardStatus


@attrs.frozen(kw_only=True)
class Received:
    """What a received MPEG-TS file holds."""

    video_frames: int
    audio_packets: int
    seconds: float
    """From the first to the last video timestamp, plus one frame."""
    sizes: tuple[tuple[int, int], ...]
    """Each run of one picture size, in order."""


def read_received(path: Path) -> Received:
    """Decodes every video frame of ``path``, checking each stream's timestamps go forward."""
    last: dict[str, int] = {}
    first_video: int | None = None
    frames = audio = 0
    sizes: list[tuple[int, int]] = []
    with av.open(str(path)) as container:
        assert container.streams.video and container.streams.audio
        for packet in container.demux():
            kind = packet.stream.type
            if packet.dts is not None:
                assert packet.dts > last.get(kind, -(2**40)), f"{kind} dts steps back"
                last[kind] = packet.dts
                if kind == "video" and first_video is None:
                    first_video = packet.dts
                if kind == "audio":
                    audio += 1
            if kind == "video":
                for frame in packet.decode():
                    assert isinstance(frame, av.VideoFrame)
                    frames += 1
                    if not sizes or sizes[-1] != (frame.width, frame.height):
                        sizes.append((frame.width, frame.height))
    assert first_video is not None
    return Received(
        video_frames=frames,
        audio_packets=audio,
        seconds=(last["video"] - first_video + 3000) / 90_000,
        sizes=tuple(sizes),
    )


async def wait_status(
    forward: Forward, check: Callable[[ForwardStatus], bool], within: float = 15.0
) -> ForwardStatus:
    """Polls the forward's status until ``check`` holds (failing after ``within`` seconds)."""
    with trio.fail_after(within):
        while not check(status := forward.status()):  # noqa: ASYNC110 (counters have no event)
            await trio.sleep(0.02)
    return status


def renumbered(segments: tuple[ForwardSegment, ...], first: int) -> list[ForwardSegment]:
    return [attrs.evolve(s, seq=first + i) for i, s in enumerate(segments)]
