"""The orchestrator over real QUIC on loopback: jobs, capacity, secrets and bad peers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import attrs
import pytest
import trio

from lpstream.jobs import JobError, request_job
from lpstream.media import DEFAULT_PROFILES
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.quic import QuicConnectionHandle, open_quic_connection, serve_quic
from lpstream.trickle import SegmentBuffer
from lpstream.wire import (
    Error,
    FrameType,
    GetInfo,
    Job,
    MessageStream,
    OrchInfo,
    ProfileSpec,
    WorkerHello,
    encode_data,
    encode_message,
    encode_varint,
)
from lpstream.worker.local import LocalWorker
from tests.mediatools import make_clip

SECRET = "s3cret"


@pytest.fixture(scope="module")
def segment(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("seg") / "seg.ts"
    make_clip(path, seconds=2, size="320x240", gop=60, fmt="mpegts")
    return path.read_bytes()


def job(seq: int, session: str = "a") -> Job:
    return Job(
        stream_id="s",
        seq=seq,
        duration_ms=2000,
        profiles=tuple(ProfileSpec.from_profile(p) for p in DEFAULT_PROFILES),
        session_id=session,
    )


def full_buffer(data: bytes) -> SegmentBuffer:
    buffer = SegmentBuffer()
    buffer.append(data)
    buffer.close()
    return buffer


@pytest.fixture
async def orchestrator(nursery: trio.Nursery) -> AsyncIterator[tuple[Orchestrator, int]]:
    orch = Orchestrator(secret=SECRET, metrics=Metrics(), local=LocalWorker(capacity=1))
    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orch.handle_connection)
    yield orch, port


async def ask(connection: QuicConnectionHandle, message: GetInfo | WorkerHello) -> object:
    stream = await connection.open_stream()
    channel = MessageStream()
    await stream.send_all(channel.send(message))
    with trio.fail_after(5):
        while (answer := channel.next_message()) is None:
            channel.receive_data(await stream.receive_some())
    await stream.aclose()
    return answer


async def test_a_job_comes_back_as_the_ladder(
    orchestrator: tuple[Orchestrator, int], segment: bytes
) -> None:
    orch, port = orchestrator
    async with open_quic_connection("127.0.0.1", port) as connection:
        info = await ask(connection, GetInfo())
        assert isinstance(info, OrchInfo) and info.capacity == 1
        stream = await connection.open_stream()
        result = await request_job(stream, job(0), full_buffer(segment), response_timeout=20)
        outputs = result.outputs
    assert [(o.info.name, o.info.width, o.info.height, o.info.frames) for o in outputs] == [
        ("360p", 320, 240, 60),
        ("240p", 320, 240, 60),
    ]
    assert all(o.info.pixels == 60 * 320 * 240 and o.info.size == len(o.data) for o in outputs)
    assert orch.status().jobs_in_flight == 0


def ladder(renditions: int) -> tuple[ProfileSpec, ...]:
    """``renditions`` profiles whose boxes a 320x240 source fills: each costs 320x240 at 30 fps
    (2.3 Mpx/s)."""
    return tuple(
        ProfileSpec(name=f"r{i}", width=640, height=480, bitrate=300_000) for i in range(renditions)
    )


async def test_a_new_session_beyond_capacity_is_answered_busy(
    orchestrator: tuple[Orchestrator, int], segment: bytes
) -> None:
    """Capacity 1 is 9.98 Mpx/s: a 4-rendition ladder of a 320x240 source (9.2 Mpx/s) fills it."""
    orch, port = orchestrator
    orch.pool.reclaim_after = 60  # the first session keeps its room however slow the test
    async with open_quic_connection("127.0.0.1", port) as connection:
        first = await connection.open_stream()
        big = attrs.evolve(job(0, "a"), profiles=ladder(4))
        await request_job(first, big, full_buffer(segment), response_timeout=20)
        second = await connection.open_stream()
        with pytest.raises(
            JobError,
            match=r"busy: a new session needs 9.22 Mpx/s; the workers' capacity "
            r"\(9.98 Mpx/s, 1 sessions' worth\) has 0.763 Mpx/s free",
        ) as caught:
            await request_job(
                second, attrs.evolve(big, session_id="b"), full_buffer(segment), response_timeout=20
            )
        assert caught.value.code == 503


async def test_small_sessions_share_what_one_large_session_would_fill(
    orchestrator: tuple[Orchestrator, int], segment: bytes
) -> None:
    """Capacity is counted in pixels per second, not sessions: on capacity 1, two 320x240
    sources with a 2-rendition ladder (4.6 Mpx/s each) run at once, a third does not fit."""
    orch, port = orchestrator
    orch.pool.reclaim_after = 60
    async with open_quic_connection("127.0.0.1", port) as connection:
        for session in ("a", "b"):
            stream = await connection.open_stream()
            small = attrs.evolve(job(0, session), profiles=ladder(2))
            result = await request_job(stream, small, full_buffer(segment), response_timeout=20)
            assert [o.info.name for o in result.outputs] == ["r0", "r1"]
        assert orch.status().sessions == 2
        info = await ask(connection, GetInfo())
        assert isinstance(info, OrchInfo) and (info.capacity, info.in_use) == (1, 1)
        stream = await connection.open_stream()
        with pytest.raises(JobError, match=r"busy: a new session needs 4\.61 Mpx/s") as caught:
            third = attrs.evolve(job(0, "c"), profiles=ladder(2))
            await request_job(stream, third, full_buffer(segment), response_timeout=20)
        assert caught.value.code == 503


async def test_a_wrong_worker_secret_is_refused_with_403(
    orchestrator: tuple[Orchestrator, int], caplog: pytest.LogCaptureFixture
) -> None:
    orch, port = orchestrator
    async with open_quic_connection("127.0.0.1", port) as connection:
        answer = await ask(connection, WorkerHello(secret="guess", capacity=4))
        assert answer == Error(code=403, message="wrong orchestrator secret")
        with trio.fail_after(5):
            await connection.wait_closed()
    assert "refused: wrong orchestrator secret" in caplog.text
    assert list(orch.status().workers) == ["local"]


async def test_bad_streams_are_closed_and_good_ones_flow(
    orchestrator: tuple[Orchestrator, int], segment: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """An oversized header and a reset upload each end their own stream only."""
    caplog.set_level(logging.INFO)
    orch, port = orchestrator
    async with open_quic_connection("127.0.0.1", port) as connection:
        good_outputs: list[object] = []
        async with trio.open_nursery() as nursery:

            async def honest() -> None:
                buffer = SegmentBuffer()
                stream = await connection.open_stream()
                async with trio.open_nursery() as inner:
                    inner.start_soon(_trickle, buffer, segment)
                    good_outputs.extend(
                        (await request_job(stream, job(1), buffer, response_timeout=20)).outputs
                    )

            nursery.start_soon(honest)

            # 1. A JOB frame announcing a 1 MiB header: refused before the body is buffered.
            oversized = await connection.open_stream()
            await oversized.send_all(bytes([FrameType.JOB]) + encode_varint(1 << 20) + b"x" * 100)
            answer = MessageStream()
            with trio.fail_after(5):
                while (reply := answer.next_message()) is None:
                    data = await oversized.receive_some()
                    assert data, "stream closed without an ERROR"
                    answer.receive_data(data)
            assert isinstance(reply, Error) and reply.code == 413
            await oversized.aclose()

            # 2. An upload reset half-way: the orchestrator drops the job.
            reset = await connection.open_stream()
            await reset.send_all(encode_message(job(2, "a")))
            await reset.send_all(encode_data(0, segment[:50_000]))
            reset.reset(0x10)

            # 3. Random bytes.
            noise = await connection.open_stream()
            await noise.send_all(b"\xff\x00garbage")
            await noise.send_eof()
            with trio.fail_after(5):
                while await noise.receive_some():
                    pass
            await noise.aclose()

        assert len(good_outputs) == 2
        with trio.fail_after(5):
            # Polled: the orchestrator has no event for "all streams retired", and needs none.
            while orch.status().open_streams or orch.status().jobs_in_flight:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert orch.status().connections == 1
    assert "refused with 413" in caplog.text
    assert "unknown frame type 255" in caplog.text  # the random bytes


async def _trickle(buffer: SegmentBuffer, data: bytes) -> None:
    for start in range(0, len(data), 20_000):
        buffer.append(data[start : start + 20_000])
        await trio.sleep(0.01)
    buffer.close()
