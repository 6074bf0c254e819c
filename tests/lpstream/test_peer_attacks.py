"""Peers attacking an orchestrator over real QUIC on loopback (issue 11).

Each attack gets its answer on its own stream (ERROR with the code of the limit it broke, 403
for a stranger in someone else's live session), honest jobs beside it, on the same connection
and on another one, come back whole, and whatever the attack made the node hold is given back
when it ends.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import weakref
from pathlib import Path

import attrs
import pytest
import trio

from lpstream.budget import MemoryBudget
from lpstream.errors import TransportError
from lpstream.http.status import status_json
from lpstream.jobs import JobError, JobOutput, Relay, request_job
from lpstream.media import DEFAULT_PROFILES
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.orchestrator.uploads import MAX_SESSION_UPLOAD_BYTES, UploadBudget
from lpstream.quic import QuicConnectionHandle, QuicStream, open_quic_connection, serve_quic
from lpstream.trickle import SegmentBuffer
from lpstream.wire import (
    Error,
    FrameType,
    GetInfo,
    Job,
    LiveEvent,
    LiveOpen,
    Message,
    MessageStream,
    OrchInfo,
    Ping,
    Pong,
    ProfileSpec,
    encode_data,
    encode_frame,
    encode_message,
    encode_varint,
)
from lpstream.worker.local import LocalWorker
from tests.attacks.harness import RssSampler, rss_mb, wait_rss_below
from tests.e2e.nodes import NodeProcess
from tests.mediatools import make_clip

MB = 1_000_000
TS_NULL_PACKET = b"\x47\x1f\xff\x10" + b"\xff" * 184
"""An MPEG-TS null packet (PID 0x1FFF): demuxers skip it, so an upload padded with them keeps a
job decoding, and holding its upload, for as long as the peer keeps the stream open."""


@pytest.fixture(scope="module")
def segment(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("seg") / "seg.ts"
    make_clip(path, seconds=1, size="160x90", gop=30, audio=False, fmt="mpegts")
    return path.read_bytes()


def job(seq: int, session: str, stream: str = "s") -> Job:
    return Job(
        stream_id=stream,
        seq=seq,
        duration_ms=1000,
        profiles=tuple(ProfileSpec.from_profile(p) for p in DEFAULT_PROFILES),
        session_id=session,
    )


def full_buffer(data: bytes) -> SegmentBuffer:
    buffer = SegmentBuffer()
    buffer.append(data)
    buffer.close()
    return buffer


async def honest_job(
    connection: QuicConnectionHandle, segment: bytes, session: str, seq: int = 0
) -> list[JobOutput]:
    stream = await connection.open_stream()
    try:
        result = await request_job(
            stream, job(seq, session), full_buffer(segment), response_timeout=30
        )
    finally:
        await stream.aclose()
    assert [o.info.frames for o in result.outputs] == [30, 30]
    return result.outputs


async def upload(
    connection: QuicConnectionHandle,
    header: Job,
    segment: bytes,
    size: int,
    *,
    chunk: int = 256 * 1024,
) -> QuicStream:
    """An attacker's job stream: JOB, then ``segment`` padded with null packets to ``size``
    bytes, and no FIN. Sending stops early if the orchestrator stops reading (a refusal)."""
    stream = await connection.open_stream()
    padding = TS_NULL_PACKET * (chunk // len(TS_NULL_PACKET))
    try:
        await stream.send_all(encode_message(header) + encode_data(0, segment))
        sent = len(segment)
        while sent < size:
            piece = padding[: size - sent]
            await stream.send_all(encode_data(0, piece))
            sent += len(piece)
    except TransportError:
        pass  # STOP_SENDING: the orchestrator refused the job; its ERROR is on the way
    return stream


async def next_message(stream: QuicStream, channel: MessageStream) -> Message | None:
    """The next message on ``stream`` (None at its FIN)."""
    while (message := channel.next_message()) is None:
        data = await stream.receive_some()
        if not data:
            channel.receive_eof()
            return channel.next_message()
        channel.receive_data(data)
    return message


async def answer(stream: QuicStream) -> Message | None:
    """The first message the orchestrator answered on ``stream``."""
    with trio.fail_after(10):
        return await next_message(stream, MessageStream(accept=frozenset(FrameType)))


async def wait_until(condition: object) -> None:
    assert callable(condition)
    with trio.fail_after(10):
        while not condition():  # noqa: ASYNC110 (the orchestrator has no event for these)
            await trio.sleep(0.02)


@attrs.define
class RecordingWorker(LocalWorker):
    """The local worker, noting a weak reference to every upload it was given."""

    sources: list[weakref.ref[SegmentBuffer]] = attrs.Factory(list)

    async def run_job(
        self, job: Job, source: SegmentBuffer, relay: Relay | None = None
    ) -> list[JobOutput]:
        self.sources.append(weakref.ref(source))
        return await super().run_job(job, source, relay)


# -- (a) uploads over budget -----------------------------------------------------------------


async def test_uploads_over_their_budgets_are_refused_and_honest_jobs_complete(
    nursery: trio.Nursery, segment: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    worker = RecordingWorker(capacity=6)
    budget = UploadBudget(max_segment_size=2 * MB, max_session_jobs=2, max_session_bytes=3 * MB)
    orch = Orchestrator(secret="s", metrics=Metrics(), local=worker, budget=budget)
    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orch.handle_connection)
    async with (
        open_quic_connection("127.0.0.1", port) as attacker,
        open_quic_connection("127.0.0.1", port) as other_attacker,
        open_quic_connection("127.0.0.1", port) as gateway,
    ):
        async with trio.open_nursery() as honest:
            honest.start_soon(honest_job, attacker, segment, "h1")
            honest.start_soon(honest_job, gateway, segment, "h2")

            # One upload over the segment limit: 413, read no further.
            big = await upload(attacker, job(0, "x"), segment, 3 * MB)
            refused = await answer(big)
            assert isinstance(refused, Error) and refused.code == 413, refused
            assert "over 2000000 bytes" in refused.message

            # A session's third job in flight: 503 at once, before any of its bytes.
            held = [await upload(attacker, job(i, "y"), segment, MB // 2) for i in range(2)]
            await wait_until(lambda: budget.held("s", "y")[1] >= MB)
            third = await upload(other_attacker, job(2, "y"), segment, MB // 2)
            refused = await answer(third)
            assert isinstance(refused, Error) and refused.code == 503, refused
            assert "(max_session_jobs)" in refused.message

            # A session's uploads past its byte limit: the job that crosses it gets 503.
            held.append(await upload(other_attacker, job(0, "z"), segment, 2 * MB - 100_000))
            await wait_until(lambda: budget.held("s", "z")[1] >= 2 * MB - 100_000)
            crossing = await upload(other_attacker, job(1, "z"), segment, 2 * MB - 100_000)
            refused = await answer(crossing)
            assert isinstance(refused, Error) and refused.code == 503, refused
            assert "(max_session_bytes)" in refused.message
        assert orch.budget.jobs == 3  # the three held uploads, nothing of the refused ones

        # The attacker goes away mid-upload: everything it held is given back.
        for stream in held:
            stream.reset(0x10)
        await wait_until(lambda: orch.budget.jobs == 0 and orch.budget.bytes_held == 0)
        assert orch.status().connections == 3
        # The connections are still good for honest work.
        await honest_job(attacker, segment, "h1", seq=1)
    gc.collect()
    assert worker.sources and all(ref() is None for ref in worker.sources)
    assert orch.status().uploads.refused == {"max_session_jobs": 1, "max_session_bytes": 1}
    assert "refused with 413" in caplog.text and "Traceback" not in caplog.text


ATTACK_RSS_BUDGET_MB = MAX_SESSION_UPLOAD_BYTES / MB + 160
"""How much an orchestrator may grow under the attack below: the uploads one session may hold
(132 MB), plus what each of the 18 streams has in QUIC's receive window (2 MiB) and half-parsed,
plus heap not yet handed back (measured: 200 MB typical, 240 MB at most; without the budget the
node takes in all 720 MB and keeps it)."""


@pytest.mark.skipif(sys.platform != "linux", reason="reads RSS from /proc")
def test_anonymous_uploads_cannot_grow_a_real_orchestrator_past_its_budget(
    tmp_path: Path, segment: bytes
) -> None:
    """The issue's attack on ``lpstream orchestrator --offchain``: anonymous peers on three
    connections start eighteen 40 MB uploads (720 MB) in one session at once and keep them
    open. They are refused, by job count or by bytes held; the node grows by at most
    ``ATTACK_RSS_BUDGET_MB`` meanwhile, and comes back within 100 MB of where it was."""
    node = NodeProcess(
        [
            "orchestrator",
            "--offchain",
            "--orch-secret=S",
            "--capacity=6",
            "--service-addr=127.0.0.1:0",
        ],
        name="orchestrator",
        log_dir=tmp_path,
    )
    try:
        node.wait_ready()
        host, port = node.hostport("quic").rsplit(":", 1)
        pid = node.proc.pid

        async def attack() -> tuple[float, float, list[Error]]:
            async with open_quic_connection(host, int(port)) as gateway:
                await honest_job(gateway, segment, "warm-up")
                before = rss_mb(pid)
                refusals: list[Error] = []
                with RssSampler(pid) as sampler:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(honest_job, gateway, segment, "honest")
                        for _ in range(3):
                            nursery.start_soon(attacker, refusals)
                await honest_job(gateway, segment, "honest", seq=1)
            return before, sampler.peak, refusals

        async def attacker(refusals: list[Error]) -> None:
            async with open_quic_connection(host, int(port)) as connection:
                streams: list[QuicStream] = []

                async def one(seq: int) -> None:
                    stream = await upload(connection, job(seq, "x", "victim"), segment, 40 * MB)
                    streams.append(stream)
                    with trio.move_on_after(1.0):
                        message = await answer(stream)
                        assert isinstance(message, Error), message
                        refusals.append(message)

                async with trio.open_nursery() as nursery:
                    for seq in range(6):
                        nursery.start_soon(one, seq)
                for stream in streams:
                    stream.reset(0x10)  # the rest leave mid-upload

        before, peak, refusals = trio.run(attack)
        assert {r.code for r in refusals} == {503}, refusals
        limits = {r.message.rsplit("(", 1)[-1] for r in refusals}
        assert limits == {"max_session_jobs)", "max_session_bytes)"}, refusals
        assert peak - before < ATTACK_RSS_BUDGET_MB, (before, peak)
        after = wait_rss_below(pid, before + 100, timeout=15)
        assert after < before + 100, (before, peak, after)
        assert node.proc.poll() is None
    finally:
        node.stop()
    assert "Traceback" not in node.log_path.read_text()


# -- (b) live sessions belong to their connection ----------------------------------------------


async def test_a_live_session_runs_jobs_only_from_the_connection_that_opened_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    orch = Orchestrator(secret="s", metrics=Metrics(), local=LocalWorker(capacity=2))
    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orch.handle_connection)
    clip = make_clip(tmp_path / "ai.ts", seconds=1, size="160x90", audio=False, fmt="mpegts")
    ai_job = Job(
        stream_id="victim",
        seq=0,
        duration_ms=1000,
        profiles=(ProfileSpec(name="ai", width=160, height=90, bitrate=300_000),),
        session_id="abc-ai1f",
        pipeline="noop",
    )
    async with (
        open_quic_connection("127.0.0.1", port) as owner,
        open_quic_connection("127.0.0.1", port) as stranger,
    ):
        control = await owner.open_stream()
        channel = MessageStream()
        await control.send_all(
            channel.send(LiveOpen(stream_id="victim", session_id="abc-ai1f", pipeline="noop"))
        )
        await wait_until(lambda: orch.live.get(("victim", "abc-ai1f")) is not None)
        # Nothing public names the session.
        status = json.dumps(status_json(orch.status()))
        assert "abc-ai1f" not in status and "victim" not in status, status
        assert list(orch.status().live.sessions) == ["live-1"]

        # A stranger who knows the ids: 403, and nothing runs.
        stream = await stranger.open_stream()
        await stream.send_all(encode_message(ai_job) + encode_data(0, clip.read_bytes()))
        await stream.send_eof()
        refused = await answer(stream)
        assert isinstance(refused, Error) and refused.code == 403, refused
        assert "connection that opened it" in refused.message
        assert orch.local is not None and orch.local.live.get(("victim", "abc-ai1f")) is None

        # The owner's job on its own connection runs.
        stream = await owner.open_stream()
        result = await request_job(
            stream, ai_job, full_buffer(clip.read_bytes()), response_timeout=30
        )
        assert result.outputs[0].info.frames + result.outputs[0].info.dropped == 30
        await control.send_eof()
        events = []
        with trio.fail_after(10):
            while (message := await next_message(control, channel)) is not None:
                assert isinstance(message, LiveEvent)
                events.append(message.kind)
        assert events[-1] == "settled"
    orch.local.live.close()


# -- (c) answers before the FIN ----------------------------------------------------------------


async def test_every_control_answer_arrives_whole_before_a_clean_fin(nursery: trio.Nursery) -> None:
    orch = Orchestrator(secret="s", metrics=Metrics(), local=LocalWorker(capacity=1))
    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orch.handle_connection)
    answers: dict[int, Message] = {}

    async def ask(connection: QuicConnectionHandle, index: int) -> None:
        stream = await connection.open_stream()
        channel = MessageStream()
        request = GetInfo() if index % 2 else Ping(nonce=index)
        await stream.send_all(channel.send(request))
        await stream.send_eof()  # at once: PING + FIN, often in one packet
        with trio.fail_after(10):
            message = await next_message(stream, channel)
            assert message is not None, f"stream {index}: FIN without an answer"
            assert await next_message(stream, channel) is None  # then FIN, not a reset
        await stream.aclose()
        answers[index] = message

    async with open_quic_connection("127.0.0.1", port) as connection, trio.open_nursery() as asks:
        for index in range(50):
            asks.start_soon(ask, connection, index)
    assert len(answers) == 50
    for index, message in answers.items():
        expected = OrchInfo if index % 2 else Pong
        assert isinstance(message, expected), (index, message)
        assert not isinstance(message, Pong) or message.nonce == index


# -- (d) faults stay in their stream -----------------------------------------------------------


@attrs.define
class BuggyWorker(LocalWorker):
    """The local worker with a bug that one stream's jobs hit."""

    async def run_job(
        self, job: Job, source: SegmentBuffer, relay: Relay | None = None
    ) -> list[JobOutput]:
        if job.stream_id == "bug":
            raise KeyError("a bug in the worker")
        return await super().run_job(job, source, relay)


@attrs.define
class BuggyInfoOrchestrator(Orchestrator):
    """An orchestrator whose info has a bug for one sender: a control stream's task fails."""

    async def info(self, sender: str = "") -> OrchInfo:
        if sender == "0x" + "b" * 40:
            raise ZeroDivisionError("a bug in info")
        return await super().info(sender)


async def test_garbage_and_bugs_on_one_stream_end_only_that_stream(
    nursery: trio.Nursery, segment: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    orch = BuggyInfoOrchestrator(secret="s", metrics=Metrics(), local=BuggyWorker(capacity=4))
    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orch.handle_connection)

    async def refusal(connection: QuicConnectionHandle, data: bytes, fin: bool = True) -> int:
        stream = await connection.open_stream()
        try:
            await stream.send_all(data)
            if fin:
                await stream.send_eof()
        except TransportError:
            pass
        message = await answer(stream)
        await stream.aclose()
        assert isinstance(message, Error), message
        return message.code

    header = encode_message(job(0, "a"))
    async with (
        open_quic_connection("127.0.0.1", port) as attacker,
        open_quic_connection("127.0.0.1", port) as gateway,
    ):
        outputs: list[list[JobOutput]] = []

        async def honest(connection: QuicConnectionHandle, session: str) -> None:
            outputs.append(await honest_job(connection, segment, session))

        async with trio.open_nursery() as flows:
            flows.start_soon(honest, attacker, "h1")
            flows.start_soon(honest, gateway, "h2")
            codes = {
                "noise": await refusal(attacker, b"\xff\x00garbage"),
                "huge DATA frame": await refusal(
                    attacker,
                    header + bytes([FrameType.DATA]) + encode_varint(1 << 30),
                    fin=False,
                ),
                "JOB not msgpack": await refusal(attacker, encode_frame(FrameType.JOB, b"\xc1")),
                "JOB cut by FIN": await refusal(attacker, header[: len(header) // 2]),
                "DATA before JOB": await refusal(attacker, encode_data(0, b"x" * 100)),
                "a bug in the worker": await refusal(
                    attacker, encode_message(job(0, "a", stream="bug")) + encode_data(0, segment)
                ),
            }
            # A peer that vanishes mid-upload.
            vanishing = await upload(attacker, job(1, "v"), segment, 300_000)
            vanishing.reset(0x10)
            # A control stream whose task fails with a bug: that stream is reset.
            stream = await attacker.open_stream()
            await stream.send_all(MessageStream().send(GetInfo(sender="0x" + "b" * 40)))
            with trio.fail_after(5), pytest.raises(TransportError, match="reset by peer"):
                assert not await stream.receive_some()
        assert codes == {
            "noise": 400,
            "huge DATA frame": 413,
            "JOB not msgpack": 400,
            "JOB cut by FIN": 400,
            "DATA before JOB": 400,
            "a bug in the worker": 500,
        }
        assert len(outputs) == 2
        await wait_until(lambda: orch.budget.jobs == 0 and orch.status().jobs_in_flight == 0)
        assert orch.status().connections == 2
        # Both connections still work.
        await honest(attacker, "h1")
    # Peer faults are a line each at warning; only the two bugs carry a traceback.
    assert caplog.text.count("Traceback") == 2
    bugs = [r.getMessage().split(" from ")[0] for r in caplog.records if r.exc_info]
    assert sorted(bugs) == ["job bug/0", f"stream {stream.stream_id}"]


async def test_over_its_memory_budget_a_node_refuses_new_sessions_and_still_answers(
    nursery: trio.Nursery, segment: bytes
) -> None:
    orch = Orchestrator(
        secret="s", metrics=Metrics(), local=LocalWorker(capacity=2), memory=MemoryBudget(limit=1)
    )
    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orch.handle_connection)
    async with open_quic_connection("127.0.0.1", port) as connection:
        stream = await connection.open_stream()
        with pytest.raises(JobError, match="memory budget") as caught:
            await request_job(stream, job(0, "new"), full_buffer(segment), response_timeout=10)
        assert caught.value.code == 503
        await stream.aclose()
        control = await connection.open_stream()
        await control.send_all(
            MessageStream().send(LiveOpen(stream_id="s", session_id="ai", pipeline="noop"))
        )
        refused = await answer(control)
        assert isinstance(refused, Error) and refused.code == 503, refused
        assert orch.live.get(("s", "ai")) is None
        info = await connection.open_stream()
        await info.send_all(MessageStream().send(GetInfo()))
        assert isinstance(await answer(info), OrchInfo)
