"""The gateway's pool against real orchestrators on loopback QUIC: the info check before work."""

from __future__ import annotations

import pytest
import trio

from lpstream.config import HostPort
from lpstream.errors import BusyError
from lpstream.gateway.orchestrators import OrchestratorPool
from lpstream.gateway.selection import SelectionWeights, Selector
from lpstream.gateway.stream import SegmentJob
from lpstream.media import DEFAULT_PROFILES
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.quic import QuicConnectionHandle, serve_quic
from lpstream.trickle import SegmentBuffer
from lpstream.worker.local import LocalWorker
from payments.pm import Wei
from tests.mediatools import make_clip


@pytest.fixture(scope="module")
def segment(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("seg") / "seg.ts"
    make_clip(path, seconds=2, size="320x240", gop=60, fmt="mpegts")
    return path.read_bytes()


def segment_job(seq: int, session: str) -> SegmentJob:
    return SegmentJob(
        stream="s", session=session, seq=seq, duration_ms=2000, profiles=DEFAULT_PROFILES
    )


def full(data: bytes) -> SegmentBuffer:
    buffer = SegmentBuffer()
    buffer.append(data)
    buffer.close()
    return buffer


async def start_orchestrator(nursery: trio.Nursery) -> HostPort:
    orch = Orchestrator(secret="", metrics=Metrics(), local=LocalWorker(capacity=8))
    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orch.handle_connection)
    return HostPort("127.0.0.1", port)


async def start_mute_orchestrator(nursery: trio.Nursery) -> HostPort:
    """Accepts QUIC and streams, reads what comes, never answers (a hung node)."""

    async def mute(connection: QuicConnectionHandle) -> None:
        async with trio.open_nursery() as streams:
            while True:
                stream = await connection.accept_stream()
                streams.start_soon(stream.receive_some)

    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, mute)
    return HostPort("127.0.0.1", port)


async def test_an_orchestrator_without_the_capability_is_not_offered_work(
    nursery: trio.Nursery, segment: bytes
) -> None:
    address = await start_orchestrator(nursery)
    pool = OrchestratorPool([address], capability="transcode:hevc")
    await nursery.start(pool.run)
    [facts] = pool.status()
    assert facts.answered is True
    assert facts.refused == "does not offer transcode:hevc"
    with pytest.raises(BusyError, match=r"no orchestrator can take the work .*transcode:hevc"):
        await pool.transcode(segment_job(0, "a"), full(segment))
    assert pool.status()[0].jobs == 0


async def test_an_orchestrator_silent_past_the_deadline_is_drawn_last(
    nursery: trio.Nursery, segment: bytes
) -> None:
    """Only the answering orchestrator gets sessions; the silent one is a last resort."""
    good = await start_orchestrator(nursery)
    silent = await start_mute_orchestrator(nursery)
    pool = OrchestratorPool(
        [silent, good],
        selector=Selector(weights=SelectionWeights(stake=0, price=0, random=1)),
        info_deadline=0.5,
    )
    started = trio.current_time()
    await nursery.start(pool.run)
    assert trio.current_time() - started < 2.0  # the info check waited the deadline, no more
    by_address = {f.address: f for f in pool.status()}
    assert by_address[str(silent)].answered is False
    assert by_address[str(good)].answered is True
    for session in "abcdefgh":  # uniform draws: the silent one would get half of these
        await pool.transcode(segment_job(0, session), full(segment))
    by_address = {f.address: f for f in pool.status()}
    assert by_address[str(good)].jobs == 8
    assert by_address[str(silent)].jobs == 0


async def test_a_live_ai_session_goes_only_to_an_orchestrator_offering_its_pipeline(
    nursery: trio.Nursery, segment: bytes
) -> None:
    from lpstream.worker.live import LiveSessions
    from workers.pipelines import PipelineRegistry

    bare = LocalWorker(
        capacity=8, live=LiveSessions(registry=PipelineRegistry(builtins=False, entry_points=False))
    )
    orch = Orchestrator(secret="", metrics=Metrics(), local=bare)
    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orch.handle_connection)
    without = HostPort("127.0.0.1", port)
    with_ai = await start_orchestrator(nursery)
    pool = OrchestratorPool([without, with_ai], selector=Selector(weights=SelectionWeights()))
    await nursery.start(pool.run)
    offers = {f.address: f.pipelines for f in pool.status()}
    assert offers[str(without)] == {}
    assert offers[str(with_ai)] == {name: Wei(0) for name in PipelineRegistry().names()}
    for n in range(4):
        job = SegmentJob(
            stream="s",
            session=f"ai-{n}",
            seq=0,
            duration_ms=2000,
            profiles=(DEFAULT_PROFILES[-1],),
            pipeline="color-grade",
        )
        [output] = await pool.transcode(job, full(segment))
        assert output.frames > 0
    jobs = {f.address: f.jobs for f in pool.status()}
    assert jobs == {str(without): 0, str(with_ai): 4}
    # A pipeline nobody offers is refused with the reason, before any work.
    with pytest.raises(BusyError, match="does not offer pipeline 'no-such'"):
        await pool.transcode(
            SegmentJob(
                stream="s",
                session="x",
                seq=0,
                duration_ms=2000,
                profiles=(DEFAULT_PROFILES[-1],),
                pipeline="no-such",
            ),
            full(segment),
        )


async def test_a_pipeline_that_appears_after_the_info_check_is_found_at_once(
    nursery: trio.Nursery,
) -> None:
    """Workers bring pipelines with them: a session asking for one the last info did not list
    asks again instead of failing until the next refresh."""
    from lpstream.worker.live import LiveSessions
    from workers.pipelines import PipelineRegistry
    from workers.pipelines.effects import ColorGradePipeline

    registry = PipelineRegistry(builtins=False, entry_points=False)
    orch = Orchestrator(
        secret="",
        metrics=Metrics(),
        local=LocalWorker(capacity=8, live=LiveSessions(registry=registry)),
    )
    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orch.handle_connection)
    pool = OrchestratorPool([HostPort("127.0.0.1", port)], refresh_interval=3600)
    await nursery.start(pool.run)
    assert pool.status()[0].pipelines == {}
    registry.register(ColorGradePipeline)  # a worker with the pipeline joins
    with trio.fail_after(5):
        key, stream = await pool.open_live_control("late", "color-grade")
    await stream.aclose()
    assert key == f"127.0.0.1:{port}"
    assert pool.status()[0].pipelines == {"color-grade": Wei(0)}
    with pytest.raises(BusyError, match="does not offer pipeline 'no-such'"):
        await pool.open_live_control("other", "no-such")


@pytest.mark.slow
async def test_a_live_ai_session_goes_to_an_orchestrator_with_its_pipeline_warm(
    nursery: trio.Nursery, segment: bytes
) -> None:
    from lpstream.worker.live import LiveSessions, WarmPipeline

    cold = await start_orchestrator(nursery)
    live = LiveSessions(warm=(WarmPipeline(name="color-grade", params={}),))
    await trio.to_thread.run_sync(live.load_warm)
    try:
        orch = Orchestrator(secret="", metrics=Metrics(), local=LocalWorker(capacity=8, live=live))
        _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orch.handle_connection)
        warm = HostPort("127.0.0.1", port)
        pool = OrchestratorPool([cold, warm], selector=Selector(weights=SelectionWeights()))
        await nursery.start(pool.run)
        for n in range(4):
            job = SegmentJob(
                stream="s",
                session=f"ai-{n}",
                seq=0,
                duration_ms=2000,
                profiles=(DEFAULT_PROFILES[-1],),
                pipeline="color-grade",
            )
            [output] = await pool.transcode(job, full(segment))
            assert output.frames > 0
        jobs = {f.address: f.jobs for f in pool.status()}
        assert jobs == {str(cold): 0, str(warm): 4}, jobs
    finally:
        live.close()
