"""Pipelines in child processes: the guardian's rules, the frame ring, and real children
that crash (SIGKILL), hang or hoard memory being stopped and restarted."""

from __future__ import annotations

import itertools
import os
import signal
import time

import av
import numpy as np
import pytest
from av.video.frame import VideoFrame

from tests.workers.faulty_pipelines import FaultyPipeline
from workers.frames import planes_as_arrays
from workers.pipelines import PipelineError
from workers.pipelines.frame_ring import FrameRecycler, FrameRing, frame_bytes
from workers.pipelines.guardian import FailureKind, PipelineGuardian
from workers.pipelines.isolated import IsolatedRunner
from workers.pipelines.supervision import resident_memory

pytest.importorskip("torch")


def frame(pts: int, width: int = 64, height: int = 36) -> VideoFrame:
    picture = av.VideoFrame(width, height, "yuv420p")
    rng = np.random.default_rng(pts)
    for plane in planes_as_arrays(picture):
        plane[:] = rng.integers(0, 256, plane.shape, dtype=np.uint8)
    picture.pts = pts
    return picture


def same_pixels(a: VideoFrame, b: VideoFrame) -> bool:
    return all(
        np.array_equal(x, y) for x, y in zip(planes_as_arrays(a), planes_as_arrays(b), strict=True)
    )


# -- the guardian's rules (no process, no clock) ------------------------------------------


def test_back_off_doubles_with_failures_in_a_row_up_to_the_most() -> None:
    guardian = PipelineGuardian(first_backoff=0.5, max_backoff=3.0, healthy_after=60.0)
    now = 100.0
    waits = []
    for _ in range(5):
        guardian.started(now)
        failure = guardian.failed(FailureKind.CRASHED, "killed", now + 1.0)
        waits.append(failure.restart_at - (now + 1.0))
        assert guardian.wait_before_start(now + 1.0) == pytest.approx(waits[-1])
        now = failure.restart_at
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert guardian.restarts == 4


def test_a_healthy_stretch_resets_the_back_off() -> None:
    guardian = PipelineGuardian(first_backoff=0.5, healthy_after=60.0)
    guardian.started(0.0)
    guardian.failed(FailureKind.HUNG, "slow", 1.0)
    guardian.started(2.0)
    assert guardian.failed(FailureKind.HUNG, "slow", 3.0).failures_in_row == 2
    guardian.started(4.0)
    later = guardian.failed(FailureKind.MEMORY, "big", 4.0 + 61.0)
    assert later.failures_in_row == 1
    assert later.restart_at == 65.5


def test_memory_over_the_limit_is_a_problem_and_under_it_is_not() -> None:
    guardian = PipelineGuardian(memory_limit=512 * 2**20)
    assert guardian.memory_problem(512 * 2**20) is None
    problem = guardian.memory_problem(600 * 2**20)
    assert problem is not None and "600 MiB" in problem and "--pipeline-memory" in problem
    assert PipelineGuardian().memory_problem(2**40) is None


# -- the frame ring -----------------------------------------------------------------------


def test_a_frame_crosses_the_ring_bit_for_bit_with_its_timestamp() -> None:
    ring = FrameRing.create(3, frame_bytes(64, 36))
    other = FrameRing.attach(ring.name, 3, ring.slot_bytes)  # as a child does
    try:
        source = frame(7)
        header = ring.write(2, source)
        copy = other.read(header)
        assert same_pixels(copy, source)
        assert copy.pts == 7 and (copy.width, copy.height) == (64, 36)
        assert not ring.fits(66, 36)
        with pytest.raises(ValueError, match="does not fit"):
            ring.write(0, frame(1, 66, 36))
    finally:
        other.close()
        ring.close(unlink=True)


def test_the_recycler_reuses_only_frames_no_one_holds() -> None:
    recycler = FrameRecycler(4)
    first = recycler.acquire(64, 36)
    held = recycler.acquire(64, 36)
    assert held is not first
    first_id = id(first)
    del first
    again = recycler.acquire(64, 36)
    assert id(again) == first_id  # let go of: reused
    assert recycler.acquire(64, 36) is not held  # still held: never handed out twice


# -- real children ------------------------------------------------------------------------


@pytest.mark.slow
def test_frames_go_through_a_child_unchanged_and_parameter_changes_apply() -> None:
    runner = IsolatedRunner(FaultyPipeline)
    try:
        runner.prepare()
        assert runner.pid is not None and runner.pid != os.getpid()
        source = frame(0)
        [out] = runner.push(source)
        assert same_pixels(out, source) and out.pts == 0
        assert runner.update({"frame_seconds": 0.001}).get_float("frame_seconds") == 0.001
        assert runner.version == 1 and runner.applied_version == 0
        [out] = runner.push(frame(1))
        assert runner.applied_version == 1
        # A bigger picture gets a bigger ring; frames still come back whole.
        big = frame(2, 320, 180)
        [out] = runner.push(big)
        assert same_pixels(out, big)
    finally:
        runner.stop()
    assert runner.pid is None


@pytest.mark.slow
def test_a_child_killed_with_sigkill_is_restarted_after_its_back_off() -> None:
    runner = IsolatedRunner(FaultyPipeline, guardian=PipelineGuardian(first_backoff=0.3))
    try:
        runner.prepare()
        first = runner.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        with pytest.raises(PipelineError, match="killed by SIGKILL; restarting in"):
            runner.push(frame(0))
        with pytest.raises(PipelineError, match="is restarting"):
            runner.push(frame(1))  # within the back-off: no new child yet
        time.sleep(0.35)
        [out] = runner.push(frame(2))
        assert out.pts == 2 and runner.pid not in (None, first)
        assert runner.guardian.restarts == 1
        assert [f.kind for f in runner.failures] == [FailureKind.CRASHED]
    finally:
        runner.stop()


@pytest.mark.slow
def test_a_hanging_child_is_stopped_at_its_deadline_and_restarted() -> None:
    guardian = PipelineGuardian(frame_deadline=1.0, first_backoff=0.2)
    runner = IsolatedRunner(FaultyPipeline, {"hang_at": 2}, guardian=guardian)
    try:
        runner.push(frame(0))
        runner.push(frame(1))
        started = time.monotonic()
        with pytest.raises(PipelineError, match="did not return a frame within 1 s"):
            runner.push(frame(2))
        assert 0.9 < time.monotonic() - started < 5.0
        runner.update({"hang_at": -1})  # the restarted child gets the newest parameters
        time.sleep(0.25)
        [out] = runner.push(frame(3))
        assert out.pts == 3
        assert [f.kind for f in runner.failures] == [FailureKind.HUNG]
    finally:
        runner.stop()


@pytest.mark.slow
def test_a_child_past_its_memory_limit_is_stopped_and_restarted() -> None:
    guardian = PipelineGuardian(first_backoff=0.2)
    runner = IsolatedRunner(FaultyPipeline, {"hoard_at": 1, "hoard_mib": 600}, guardian=guardian)
    try:
        runner.prepare()
        assert runner.pid is not None
        rss = resident_memory(runner.pid)
        assert rss is not None
        guardian.memory_limit = rss + 300 * 2**20  # room to work, not for the hoard
        runner.push(frame(0))
        with pytest.raises(PipelineError, match=r"past its limit of .* \(--pipeline-memory\)"):
            runner.push(frame(1))
        assert [f.kind for f in runner.failures] == [FailureKind.MEMORY]
        runner.update({"hoard_at": -1})
        time.sleep(0.25)
        assert [o.pts for o in runner.push(frame(2))] == [2]
    finally:
        runner.stop()


@pytest.mark.slow
def test_a_limit_below_what_the_pipeline_needs_backs_off_instead_of_looping() -> None:
    guardian = PipelineGuardian(memory_limit=1 * 2**20, first_backoff=0.3, max_backoff=5.0)
    runner = IsolatedRunner(FaultyPipeline, {"load_seconds": 0.5}, guardian=guardian)
    try:
        starts = 0
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            try:
                runner.prepare()
            except PipelineError as exc:
                assert "past its limit" in str(exc)
                starts += "is restarting" not in str(exc)
            time.sleep(0.05)
        # 0.3 + 0.6 + 1.2 + 2.4 s of back-off: a handful of starts in 4 s, not dozens.
        assert 2 <= starts <= 4
        waits = [f.restart_at for f in runner.failures]
        gaps = [b - a for a, b in itertools.pairwise(waits)]
        assert all(g > 0.3 for g in gaps)
        assert all(f.kind is FailureKind.MEMORY for f in runner.failures)
    finally:
        runner.stop()
