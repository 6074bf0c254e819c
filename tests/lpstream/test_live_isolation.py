"""A worker's live AI pipelines in child processes: a crash ends neither the session nor the
transcodes beside it; warm pipelines start sessions sooner; ``--gpus`` picks the devices."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import av
import pytest
import trio

from lpstream.config import Config
from lpstream.errors import ConfigError, MediaError
from lpstream.http.status import status_json
from lpstream.media import DEFAULT_PROFILES
from lpstream.metrics import Metrics
from lpstream.orchestrator.ai_status import ai_status
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.orchestrator.orchestrator_metrics import collect_orchestrator_metrics
from lpstream.role_settings import live_sessions
from lpstream.trickle import SegmentBuffer
from lpstream.wire.messages import Job, ProfileSpec
from lpstream.worker.live import LiveSessions, WarmPipeline
from lpstream.worker.local import LocalWorker
from tests.mediatools import make_clip
from tests.workers.faulty_pipelines import FaultyPipeline
from workers.gpu import GpuInfo, discover_gpus, place_session, select_gpus
from workers.pipelines import PipelineRegistry
from workers.pipelines.isolated import IsolatedRunner

pytest.importorskip("torch")


def faulty_registry() -> PipelineRegistry:
    registry = PipelineRegistry(entry_points=False)
    registry.register(FaultyPipeline, source="tests")
    return registry


def source_of(data: bytes) -> SegmentBuffer:
    source = SegmentBuffer()
    source.append(data)
    source.close()
    return source


@pytest.mark.slow
async def test_a_killed_pipeline_child_restarts_and_transcodes_beside_it_miss_nothing(
    tmp_path: Path,
) -> None:
    live = LiveSessions(registry=faulty_registry(), isolate=True, first_backoff=0.2)
    worker = LocalWorker(capacity=2, live=live)
    segment = make_clip(
        tmp_path / "seg.ts", seconds=2, size="160x90", audio=False, fmt="mpegts"
    ).read_bytes()
    profile = ProfileSpec.from_profile(DEFAULT_PROFILES[-1])
    ladder = tuple(ProfileSpec.from_profile(p) for p in DEFAULT_PROFILES)
    transcoded: list[int] = []
    live_results: list[str] = []
    key = ("s", "a")

    def live_job(seq: int) -> Job:
        return Job(
            stream_id="s",
            session_id="a",
            seq=seq,
            duration_ms=2000,
            profiles=(profile,),
            pipeline="faulty",
            params={"frame_seconds": 0.02},
        )

    async def transcode_stream(done: trio.Event) -> None:
        seq = 0
        while not done.is_set():
            job = Job(stream_id="t", session_id="b", seq=seq, duration_ms=2000, profiles=ladder)
            outputs = await worker.run_job(job, source_of(segment))
            assert [o.info.frames for o in outputs] == [60] * len(ladder)
            transcoded.append(seq)
            seq += 1

    async def kill_mid_job(after: int) -> int:
        session = live.get(key)
        assert session is not None
        runner = session.runner
        assert isinstance(runner, IsolatedRunner) and runner.pid is not None
        while runner.statistics().frames_out < after + 5:  # noqa: ASYNC110 (a worker thread's count)
            await trio.sleep(0.01)
        pid = runner.pid
        os.kill(pid, signal.SIGKILL)
        return pid

    async def live_stream(done: trio.Event) -> None:
        # The first job starts the child and loads the pipeline.
        [output] = await worker.run_job(live_job(0), source_of(segment))
        live_results.append("frames")
        session = live.get(key)
        assert session is not None
        before = session.runner.statistics().frames_out
        killed: list[int] = []

        async def killer() -> None:
            killed.append(await kill_mid_job(before))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(killer)
            with pytest.raises(MediaError, match="killed by SIGKILL; restarting in"):
                await worker.run_job(live_job(1), source_of(segment))
        live_results.append("error")
        await trio.sleep(0.3)  # the back-off
        [output] = await worker.run_job(live_job(2), source_of(segment))
        assert output.info.frames > 0 and output.data
        live_results.append("frames")
        runner = session.runner
        assert isinstance(runner, IsolatedRunner) and runner.pid not in (None, *killed)
        assert live.failures() == {("faulty", "crashed"): 1}
        # What /api/status and the metrics say of it.
        status = ai_status(live)
        assert status.isolation and status.device == "cpu" and status.sessions == 1
        assert status.child_failures == {"faulty": {"crashed": 1}}
        metrics = Metrics()
        orchestrator = Orchestrator(secret="s" * 16, metrics=metrics, local=worker)
        collect_orchestrator_metrics(orchestrator)
        assert (
            'lpstream_pipeline_child_failures_total{kind="crashed",pipeline="faulty"} 1'
            in metrics.render()
        )
        done.set()

    done = trio.Event()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transcode_stream, done)
            nursery.start_soon(live_stream, done)
    live.close()
    assert live_results == ["frames", "error", "frames"]
    assert transcoded == list(range(len(transcoded))) and len(transcoded) >= 2


def start_to_first_frame(live: LiveSessions, session: str) -> float:
    """Seconds from a session's request to its first AI frame (a frame in, a frame out)."""
    picture = av.VideoFrame(160, 90, "yuv420p")
    picture.pts = 0
    started = time.perf_counter()
    handle = live.acquire(("s", session), "faulty", {"load_seconds": 1.0}, time.monotonic())
    handle.runner.prepare()
    [out] = handle.push(picture)
    assert out.pts == 0
    return time.perf_counter() - started


@pytest.mark.slow
def test_a_warm_pipeline_starts_a_session_sooner_than_a_cold_one() -> None:
    cold_sessions = LiveSessions(registry=faulty_registry(), isolate=True)
    warm_sessions = LiveSessions(
        registry=faulty_registry(),
        isolate=True,
        warm=(WarmPipeline(name="faulty", params={"load_seconds": 1.0}),),
    )
    try:
        cold = start_to_first_frame(cold_sessions, "cold")
        warm_sessions.load_warm()
        assert warm_sessions.warm_names() == ["faulty"]
        warm = start_to_first_frame(warm_sessions, "warm")
        print(
            f"session start to first AI frame: cold {cold * 1000:.0f} ms, warm {warm * 1000:.0f} ms"
        )
        assert warm < cold - 0.8  # the model's load (1 s) and the child's start are gone
        # The warm runner went to the session; another is loading for the next one.
        assert warm_sessions.get(("s", "warm")) is not None
    finally:
        cold_sessions.close()
        warm_sessions.close()


def test_the_worker_advertises_its_warm_pipelines() -> None:
    live = LiveSessions(registry=faulty_registry(), warm=(WarmPipeline(name="faulty", params={}),))
    worker = LocalWorker(live=live)
    assert "warm:faulty" not in worker.capabilities()
    live.load_warm()  # in this process (no isolation): quick
    assert "warm:faulty" in worker.capabilities() and "pipeline:faulty" in worker.capabilities()
    live.close()


# -- devices ------------------------------------------------------------------------------

GPUS = (
    GpuInfo(index=0, name="A", memory_total=80, memory_free=10, nvenc=True, nvdec=True),
    GpuInfo(index=1, name="B", memory_total=80, memory_free=70, nvenc=True, nvdec=True),
    GpuInfo(index=2, name="C", memory_total=80, memory_free=40, nvenc=True, nvdec=True),
)


def test_gpus_all_none_and_indices_pick_devices_and_an_unknown_index_is_refused() -> None:
    assert select_gpus("all", GPUS) == GPUS
    assert select_gpus("none", GPUS) == ()
    assert select_gpus("2,0", GPUS) == (GPUS[2], GPUS[0])
    with pytest.raises(ConfigError, match="no GPU 5 on this machine \\(present: 0, 1, 2\\)"):
        select_gpus("0,5", GPUS)
    with pytest.raises(ConfigError, match="no GPU 0 on this machine \\(present: none\\)"):
        select_gpus("0", ())


def test_a_session_goes_to_the_least_loaded_gpu_then_the_one_with_most_free_memory() -> None:
    assert place_session(GPUS, {}) is GPUS[1]
    assert place_session(GPUS, {1: 1}) is GPUS[2]
    assert place_session(GPUS, {0: 1, 1: 1, 2: 1}) is GPUS[1]


@pytest.mark.skipif(bool(discover_gpus()), reason="this machine has a GPU")
def test_without_a_gpu_sessions_run_isolated_on_the_cpu_and_an_index_stops_the_start() -> None:
    for values in ({}, {"gpus": "none"}, {"gpus": "all"}):
        sessions = live_sessions(Config.from_values(values, role="worker"))
        assert sessions.gpus == () and sessions.device == "cpu" and sessions.isolate
    in_process = Config.from_values({"pipeline_isolation": False}, role="worker")
    assert not live_sessions(in_process).isolate
    with pytest.raises(ConfigError, match="--gpus: there is no GPU 1 on this machine"):
        live_sessions(Config.from_values({"gpus": "1"}, role="worker"))


def test_warm_flag_values_are_checked_at_start() -> None:
    config = Config.from_values({"warm": (("noop", {}),)}, role="worker")
    assert [w.name for w in live_sessions(config).warm] == ["noop"]
    with pytest.raises(ConfigError, match="--warm nothing-here: unknown pipeline"):
        live_sessions(Config.from_values({"warm": (("nothing-here", {}),)}, role="worker"))
    with pytest.raises(ConfigError, match="--warm color-grade"):
        live_sessions(
            Config.from_values({"warm": (("color-grade", {"strength": 9.0}),)}, role="worker")
        )


def test_orch_info_carries_warm_pipelines_and_older_infos_read_as_none_warm() -> None:
    import msgspec

    from lpstream.wire.info_messages import OrchInfo

    info = OrchInfo(version="1", warm=("faulty",))
    body = msgspec.msgpack.encode(info)
    assert msgspec.msgpack.decode(body, type=OrchInfo).warm == ("faulty",)
    older = msgspec.msgpack.encode({"version": "0.9", "capacity": 2})  # no "warm" key
    assert msgspec.msgpack.decode(older, type=OrchInfo).warm == ()


def test_stopping_the_worker_while_a_warm_pipeline_loads_stops_its_child_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker stops while a warm pipeline's child is still loading its model: the child
    is stopped with it, and that is no failure to report."""
    live = LiveSessions(
        registry=faulty_registry(),
        isolate=True,
        warm=(WarmPipeline(name="faulty", params={"load_seconds": 5.0}),),
    )
    loader = threading.Thread(target=live.load_warm)
    loader.start()
    deadline = time.monotonic() + 30
    while not (live._warm_slots and live._warm_slots[0].loading is not None):
        assert time.monotonic() < deadline, "the warm pipeline never began to load"
        time.sleep(0.01)
    runner = live._warm_slots[0].loading
    assert isinstance(runner, IsolatedRunner)
    while runner.pid is None:
        assert time.monotonic() < deadline, "no child was started"
        time.sleep(0.01)
    pid = runner.pid
    started = time.monotonic()
    live.close()
    loader.join(timeout=10)
    assert not loader.is_alive() and time.monotonic() - started < 5  # not the 5 s load
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_status_names_each_gpu_with_its_sessions() -> None:
    gpus = tuple(
        GpuInfo(index=i, name="NVIDIA H100", memory_total=80 << 30, memory_free=79 << 30,
                nvenc=False, nvdec=True)
        for i in (0, 1)
    )  # fmt: skip
    status = status_json(ai_status(LiveSessions(gpus=gpus, isolate=True)))
    assert [g["index"] for g in status["gpus"]] == [0, 1]
    assert status["gpus"][1] == {
        "index": 1,
        "name": "NVIDIA H100",
        "memory_total": 80 << 30,
        "memory_free": 79 << 30,
        "nvenc": False,
        "nvdec": True,
        "sessions": 0,
    }
    assert status["isolation"] and status["sessions"] == 0 and status["child_failures"] == {}
