"""A fault in one stream's handling ends that stream only: proved on trio's task tree.

A real gateway and RTMP server run in this test's trio run; real ffmpeg publishers push two
streams. A fault is injected into one stream's segment handling (its transcoder raises an
error no code expects) and into one connection's publisher; the test then walks the task tree
from the root and finds every task of the other stream and connection still running, and the
gateway's own tasks too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from ingest.rtmp import RtmpServer
from lpstream.gateway.gateway import Gateway
from lpstream.gateway.stream import LiveStream, RenditionSegment, SegmentJob
from lpstream.jobs import Relay
from lpstream.media import VideoProfile
from lpstream.metrics import Metrics
from lpstream.trickle import SegmentBuffer
from tests.mediatools import make_clip


class InjectedFault(Exception):
    """Stands for a bug or an unforeseen error in one stream's handling."""


class FaultyForOneStream:
    """Copies the source segment as the ``copy`` rendition; faults on the stream ``bad``."""

    async def transcode(
        self, job: SegmentJob, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[RenditionSegment]:
        await source.wait_closed()
        if job.stream == "bad":
            raise InjectedFault("injected into the bad stream's segment handling")
        return [
            RenditionSegment(name="copy", width=320, height=180, pixels=0, data=source.getvalue())
        ]


def walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from walk(child)


def live_streams_in_tree() -> dict[str, list[str]]:
    """Stream name -> the names of the tasks running under its ``Gateway._run_stream``."""
    found: dict[str, list[str]] = {}
    for task in walk(trio.lowlevel.current_root_task()):  # type: ignore[arg-type]
        frame: Any = getattr(task.coro, "cr_frame", None)
        stream = frame.f_locals.get("stream") if frame is not None else None
        if task.name.endswith("Gateway._run_stream") and isinstance(stream, LiveStream):
            found[stream.name] = [t.name for t in walk(task)]
    return found


def task_names() -> list[str]:
    return [t.name for t in walk(trio.lowlevel.current_root_task())]  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("isolation") / "clip.flv"
    return make_clip(path, seconds=20, size="320x180", gop=15, audio=True)


async def wait_for(predicate: Any, what: str, seconds: float = 15) -> None:
    """Polls ``predicate``: the task tree has no event to wait on."""
    with trio.move_on_after(seconds):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_fault_in_one_streams_handling_ends_that_stream_only(clip: Path) -> None:
    gateway = Gateway(
        transcoder=FaultyForOneStream(),
        profiles=(VideoProfile(name="copy", width=320, height=180, bitrate=300_000),),
        metrics=Metrics(),
        segment_target=0.5,
    )
    rtmp = RtmpServer(handler=gateway)
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.run)
        _, port = await nursery.start(rtmp.serve, "127.0.0.1", 0)
        publishers = []
        for name in ("good", "bad"):
            command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(clip)]
            command += ["-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{name}"]
            publishers.append(
                await trio.lowlevel.open_process(
                    command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        try:
            await wait_for(lambda: set(live_streams_in_tree()) == {"good", "bad"}, "two streams")
            # The bad stream's first segment faults: its tree ends, and only its tree.
            await wait_for(lambda: set(live_streams_in_tree()) == {"good"}, "the bad one ended")
            good_tasks = live_streams_in_tree()["good"]
            assert any(
                name.endswith("RenditionLadder.transcode_segment") for name in good_tasks
            ) or any(name.endswith("LiveStream.run") for name in good_tasks)
            assert any(name.endswith("Gateway._expire_ended") for name in task_names())
            # The good publisher's connection is served on (trio names it by its runner).
            assert any(name.endswith("serve_listeners._run_handler") for name in task_names())
            assert 'errors_total{kind="internal"} 1.0' in gateway.metrics.render()
            # The good stream goes on making segments after the fault.
            playback = gateway.playback("good")
            assert playback is not None
            before = playback.stream.next_sequence()
            await wait_for(lambda: playback.stream.next_sequence() >= before + 3, "more segments")
            assert gateway.playback("bad") is not None  # its playlists end, they are not lost
            await wait_for(lambda: rtmp.statistics().active_publishers == 1, "one publisher")
        finally:
            for process in publishers:
                process.kill()
                await process.wait()
            nursery.cancel_scope.cancel()
