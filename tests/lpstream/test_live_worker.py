"""Live AI sessions on a worker: reuse across jobs, where parameter changes take effect, expiry."""

from __future__ import annotations

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
