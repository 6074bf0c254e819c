"""Orchestrator capacity counted in work: what a session costs, and who gets a worker's room."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import pytest

from lpstream.errors import BusyError, MediaError, RemoteProtocolError
from lpstream.jobs import JobOutput, Relay
from lpstream.media import DEFAULT_PROFILES, VideoProfile
from lpstream.orchestrator.capacity import (
    SESSION_WORK,
    SessionCost,
    capacity_work,
    ladder_work,
    measured_work,
    pipeline_cost,
    upload_picture,
)
from lpstream.orchestrator.workers import WorkerPool
from lpstream.trickle import SegmentBuffer
from lpstream.wire import AiModelOffer, Job, LiveUpdated, ProfileSpec, RenditionInfo
from tests.mediatools import make_clip

TINY = (160, 90)
HD = (1280, 720)
P720 = VideoProfile(name="720p", width=1280, height=720, bitrate=3_000_000)


@attrs.define
class Worker:
    """A worker as the pool sees it (the pool places sessions; it runs nothing)."""

    worker_id: str
    capacity: int
    offered: tuple[str, ...] = ("transcode:h264",)

    def capabilities(self) -> tuple[str, ...]:
        return self.offered

    def ai_models(self) -> tuple[AiModelOffer, ...]:
        return ()

    async def run_job(
        self, job: Job, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[JobOutput]:
        raise AssertionError("the pool places sessions; it never runs a job")

    async def update_live(
        self, stream_id: str, session_id: str, params: Mapping[str, object]
    ) -> LiveUpdated:
        raise AssertionError("the pool places sessions; it never updates one")


def cost(
    picture: tuple[int, int], profiles: tuple[VideoProfile, ...] = DEFAULT_PROFILES
) -> SessionCost:
    return SessionCost(work=ladder_work(profiles, picture))


def pool(*workers: Worker, reclaim_after: float = 1.0) -> WorkerPool:
    out = WorkerPool(reclaim_after=reclaim_after)
    for worker in workers:
        out.add(worker)
    return out


def test_one_session_worth_is_the_default_ladder_of_a_720p30_source() -> None:
    assert ladder_work(DEFAULT_PROFILES, HD) == SESSION_WORK == 9_979_200
    assert ladder_work(DEFAULT_PROFILES, (640, 360)) == SESSION_WORK
    assert capacity_work(4) == 4 * SESSION_WORK


def test_a_ladder_costs_what_the_worker_encodes_never_the_upscaled_box() -> None:
    assert ladder_work(DEFAULT_PROFILES, TINY) == 2 * 160 * 90 * 30
    assert ladder_work((P720,), HD) == 1280 * 720 * 30
    assert ladder_work((attrs.evolve(P720, fps=60),), HD) == 1280 * 720 * 60
    assert ladder_work(DEFAULT_PROFILES, HD, fps=60) == 2 * SESSION_WORK
    # An unknown source counts the profiles' whole boxes.
    assert ladder_work(DEFAULT_PROFILES, (0, 0)) == SESSION_WORK


def test_a_live_session_costs_its_output_times_the_pipeline_factor() -> None:
    job = Job(
        stream_id="s",
        seq=0,
        duration_ms=2000,
        profiles=(ProfileSpec(name="ai", width=512, height=512, bitrate=1_000_000),),
        pipeline="img2img-diffusion",
    )
    assert pipeline_cost("img2img-diffusion") == 32.0
    assert pipeline_cost("noop") == 1.0 and pipeline_cost("not-installed") == 1.0
    estimate = SessionCost.of_job(job, HD)
    assert estimate == SessionCost(work=512 * 288 * 30 * 32, factor=32.0)


def test_a_job_measures_what_its_session_costs_dropped_frames_included() -> None:
    outputs = [
        RenditionInfo(
            name="ai",
            width=256,
            height=144,
            pixels=60 * 256 * 144,
            frames=60,
            size=1,
            duration_ms=2000,
            dropped=60,
        )
    ]
    assert measured_work(outputs) == 256 * 144 * 60
    assert SessionCost(work=1, factor=2.0).measured(outputs).work == 256 * 144 * 60 * 2
    assert measured_work([attrs.evolve(outputs[0], frames=0)]) is None
    assert SessionCost(work=7).measured([]) == SessionCost(work=7)


def test_four_tiny_sessions_leave_room_for_a_720p_one() -> None:
    """The issue's starvation: capacity 4 was four sessions whatever they cost."""
    workers = pool(Worker("local", capacity=4))
    for i in range(4):
        workers.assign(("tiny", str(i)), 0.0, set(), cost=cost(TINY))
    worker = workers.assign(("hd", "x"), 0.0, set(), cost=cost(HD))
    assert worker.worker_id == "local" and workers.sessions == 5
    assert workers.work == 4 * 864_000 + SESSION_WORK
    assert workers.in_use == 2  # sessions' worth, rounded up, as ORCH_INFO says


def test_a_full_worker_refuses_a_new_session_naming_the_budget() -> None:
    workers = pool(Worker("local", capacity=1))
    workers.assign(("a", "1"), 0.0, set(), cost=cost(HD))
    with pytest.raises(BusyError, match=r"needs 9.98 Mpx/s; the workers' capacity "):
        workers.check_room(cost(HD), 0.5)
    with pytest.raises(BusyError, match=r"\(9.98 Mpx/s, 1 sessions' worth\) has 0 Mpx/s free"):
        workers.assign(("b", "1"), 0.5, set(), cost=cost(HD))
    # The pinned session keeps its worker whatever its next job costs.
    assert workers.assign(("a", "1"), 0.6, set(), cost=cost(HD, (P720,))).worker_id == "local"


def test_a_session_bigger_than_a_worker_runs_alone_on_an_empty_one() -> None:
    workers = pool(Worker("small", capacity=1), Worker("other", capacity=1))
    big = cost(HD, (P720,))  # 2.8 sessions' worth
    assert workers.assign(("big", "1"), 0.0, set(), cost=big).worker_id in {"small", "other"}
    second = workers.assign(("big", "2"), 0.0, set(), cost=big)
    assert workers.holder(("big", "1")) is not second
    with pytest.raises(BusyError):
        workers.assign(("tiny", "1"), 0.0, set(), cost=cost(TINY))


def test_a_new_session_goes_where_most_work_is_free_and_where_its_need_is_offered() -> None:
    workers = pool(
        Worker("a", capacity=2),
        Worker("b", capacity=4),
        Worker("ai", capacity=1, offered=("transcode:h264", "pipeline:noop")),
    )
    assert workers.assign(("s", "1"), 0.0, set(), cost=cost(HD)).worker_id == "b"
    assert workers.assign(("s", "2"), 0.0, set(), cost=cost(HD)).worker_id == "b"
    assert workers.assign(("s", "3"), 0.0, {"b"}, cost=cost(HD)).worker_id == "a"
    live = workers.assign(("s", "4"), 0.0, set(), "pipeline:noop", cost(TINY))
    assert live.worker_id == "ai"
    with pytest.raises(RemoteProtocolError, match="no worker here offers pipeline:cartoon"):
        workers.assign(("s", "5"), 0.0, set(), "pipeline:cartoon", cost(TINY))


def test_an_idle_session_gives_its_room_to_a_newcomer_a_running_one_never() -> None:
    workers = pool(Worker("local", capacity=1), reclaim_after=1.0)
    workers.assign(("old", "1"), 0.0, set(), cost=cost(HD))
    workers.job_started(("old", "1"))
    with pytest.raises(BusyError):  # its job runs: the room is its own
        workers.assign(("new", "1"), 5.0, set(), cost=cost(HD))
    workers.job_ended(("old", "1"), 5.0)
    with pytest.raises(BusyError):  # idle for less than reclaim_after
        workers.assign(("new", "1"), 5.5, set(), cost=cost(HD))
    assert workers.assign(("new", "1"), 6.5, set(), cost=cost(HD)).worker_id == "local"
    assert workers.holder(("old", "1")) is None and workers.sessions == 1


def test_idle_sessions_are_reclaimed_only_as_far_as_the_newcomer_needs() -> None:
    workers = pool(Worker("local", capacity=4))
    for i in range(4):
        workers.assign(("hd", str(i)), float(i), set(), cost=cost(HD))
        workers.job_started(("hd", str(i)))
        workers.job_ended(("hd", str(i)), float(i))
    workers.assign(("new", "1"), 10.0, set(), cost=cost(HD))
    # The one idle longest went; the others keep their room.
    assert workers.holder(("hd", "0")) is None
    assert all(workers.holder(("hd", str(i))) is not None for i in (1, 2, 3))


def test_a_measured_job_corrects_the_estimate() -> None:
    workers = pool(Worker("local", capacity=2))
    key = ("s", "1")
    workers.assign(key, 0.0, set(), cost=cost(HD))
    workers.job_started(key)
    sixty = [
        RenditionInfo(
            name=p.name,
            width=w,
            height=h,
            pixels=120 * w * h,
            frames=120,
            size=1,
            duration_ms=2000,
        )
        for p, (w, h) in zip(DEFAULT_PROFILES, [(640, 360), (426, 240)], strict=True)
    ]
    workers.job_ended(key, 2.0, sixty)
    assert workers.work == 2 * SESSION_WORK  # a 60 fps source counts double
    with pytest.raises(BusyError):
        workers.check_room(cost(TINY), 2.1)


async def test_the_picture_of_a_new_session_is_read_from_its_first_sps(tmp_path: Path) -> None:
    path = tmp_path / "clip.ts"
    make_clip(path, seconds=1, size="320x180", fmt="mpegts")
    buffer = SegmentBuffer()
    data = path.read_bytes()
    for offset in range(0, len(data), 1880):  # as an upload trickles in
        buffer.append(data[offset : offset + 1880])
    buffer.close()
    assert await upload_picture(buffer) == (320, 180)


async def test_an_upload_without_video_has_no_picture_and_a_failed_one_raises() -> None:
    buffer = SegmentBuffer()
    buffer.append(b"\x47" + bytes(187))
    buffer.close()
    assert await upload_picture(buffer) == (0, 0)
    failed = SegmentBuffer()
    failed.fail(RuntimeError("gone"))
    with pytest.raises(MediaError):
        await upload_picture(failed)
