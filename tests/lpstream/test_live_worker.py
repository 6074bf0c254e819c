"""Live AI sessions on a worker: reuse across jobs, where parameter changes take effect, expiry."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from av.video.frame import VideoFrame

from lpstream.worker.live import LiveSessions
from workers.pipelines import InvalidParamsError, PipelineError

pytest.importorskip("torch")


def frame(pts: int) -> VideoFrame:
    picture = av.VideoFrame(64, 36, "yuv420p")
    for plane, value in zip(picture.planes, (120, 90, 160), strict=True):
        plane.update(bytes([value]) * plane.buffer_size)
    picture.pts = pts
    return picture


def test_a_session_is_reused_by_its_jobs_and_keeps_its_pipeline() -> None:
    sessions = LiveSessions()
    first = sessions.acquire(("s", "a"), "color-grade", {"strength": 0.5}, now=0.0)
    assert sessions.acquire(("s", "a"), "color-grade", {}, now=1.0) is first
    assert first.runner.params.get_float("strength") == 0.5  # a later job's params are ignored
    with pytest.raises(PipelineError, match="start a new session"):
        sessions.acquire(("s", "a"), "cartoon", {}, now=2.0)
    assert sessions.acquire(("s", "b"), "cartoon", {}, now=2.0) is not first
    sessions.close()


def test_a_change_reports_the_frame_before_it_and_the_frame_it_applied_at() -> None:
    sessions = LiveSessions()
    session = sessions.acquire(("s", "a"), "color-grade", {"strength": 0.0}, now=0.0)
    for pts in range(0, 3000, 1000):
        session.push(frame(pts))
    with pytest.raises(InvalidParamsError, match="strength"):
        session.update({"strength": 2.0})
    version = session.update({"strength": 1.0})
    assert version == 1
    pending = session.applied(version)
    assert pending.after_pts == 2000 and pending.applied_pts is None
    [out] = session.push(frame(3000))
    applied = session.applied(version)
    assert applied.after_pts == 2000 and applied.applied_pts == 3000 == out.pts
    assert applied.frames_between == 0
    # Two changes before the next frame apply together, at that frame.
    second, third = session.update({"look": "mono"}), session.update({"strength": 0.7})
    session.push(frame(4000))
    assert session.applied(second).applied_pts == session.applied(third).applied_pts == 4000
    assert session.runner.params.get_float("strength") == 0.7
    sessions.close()


def test_idle_sessions_are_stopped_but_never_while_busy() -> None:
    sessions = LiveSessions(idle_timeout=30.0)
    session = sessions.acquire(("s", "a"), "noop", {}, now=0.0)
    with session.running():
        sessions.expire(now=100.0)
        assert sessions.get(("s", "a")) is session
    sessions.expire(now=100.0)
    assert sessions.get(("s", "a")) is None
    with pytest.raises(PipelineError, match="stopped"):
        session.push(frame(0))


async def test_the_jobs_of_a_session_run_in_the_order_they_came(tmp_path: Path) -> None:
    """The next segment's job arrives while the first still waits for the model: it waits
    its turn instead of taking the session first (which ran the stream backwards)."""
    import time
    from typing import ClassVar

    import trio

    from lpstream.media import DEFAULT_PROFILES
    from lpstream.trickle import SegmentBuffer
    from lpstream.wire.messages import Job, ProfileSpec
    from lpstream.worker.local import LocalWorker
    from tests.mediatools import make_clip
    from workers.pipelines import PipelineRegistry
    from workers.pipelines.base import PipelineContext, PipelineSpec
    from workers.pipelines.noop import NoopPipeline
    from workers.pipelines.params import Params

    class SlowToLoad(NoopPipeline):
        spec: ClassVar[PipelineSpec] = PipelineSpec(
            name="slow-to-load", description="Passes frames through after a 1 s model load."
        )

        def prepare(self, context: PipelineContext, params: Params) -> None:
            time.sleep(1.0)

    registry = PipelineRegistry(builtins=False, entry_points=False)
    registry.register(SlowToLoad)
    worker = LocalWorker(capacity=2, live=LiveSessions(registry=registry))
    clip = make_clip(tmp_path / "seg.ts", seconds=1, size="160x90", audio=False, fmt="mpegts")
    segment = clip.read_bytes()
    profile = ProfileSpec.from_profile(DEFAULT_PROFILES[-1])
    finished: list[int] = []

    async def run(seq: int) -> None:
        job = Job(
            stream_id="s",
            session_id="a",
            seq=seq,
            duration_ms=1000,
            profiles=(profile,),
            pipeline="slow-to-load",
        )
        source = SegmentBuffer()
        source.append(segment)
        source.close()
        [output] = await worker.run_job(job, source)
        assert output.info.frames + output.info.dropped == 30
        finished.append(seq)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for seq in range(3):
                nursery.start_soon(run, seq)
                await trio.sleep(0.1)  # each arrives while the first waits for the model
    assert finished == [0, 1, 2]
    worker.live.close()
