"""Live AI paid by time on ``lpstream dev`` (embedded chain): an honest session runs for a
minute and both sides hold the same credit to the wei at the end; a session that is never
paid is refused work and stopped, with the reason, by the orchestrator."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from lpstream.quic import open_quic_connection
from lpstream.wire import (
    CONTROL_FRAME_TYPES,
    Error,
    FrameType,
    Job,
    LiveEvent,
    LiveOpen,
    MessageStream,
    ProfileSpec,
)
from tests.e2e.money import fraction_strings, wei
from tests.e2e.nodes import NodeProcess, http_json, push_command, running_dev, wait_for
from tests.e2e.test_live_ai import post_json

pytestmark = [pytest.mark.slow, pytest.mark.solo]

PRICE_PER_SECOND = 3 * 10**12
"""Three tickets' EV a second."""
EV = 10**12


@pytest.fixture(scope="module")
def paid_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    folder = tmp_path_factory.mktemp("live-ai-paid")
    flags = (
        "--block-time=0.2",
        f"--ticket-ev={EV}",
        f"--price-per-second={PRICE_PER_SECOND}",
        f"--data-dir={folder / 'data'}",
    )
    with running_dev(folder, *flags, name="dev-paid", offchain=False, ready_timeout=90) as node:
        yield node


def delete(url: str) -> int:
    request = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


async def next_event(url: str, kind: str) -> dict[str, Any]:
    """The next event of ``kind`` on a live AI control WebSocket."""
    async with open_websocket_url(url) as ws:
        with trio.fail_after(15):
            while (event := json.loads(await ws.get_message()))["type"] != kind:
                pass
    return dict(event)


def test_an_honest_session_runs_a_minute_and_settles_to_the_wei(paid_node: NodeProcess) -> None:
    base = paid_node.url("http")
    stream = "paid-ai"
    cmd = push_command(f"{paid_node.url('rtmp')}/live/{stream}", seconds=80, gop=30, size="320x180")
    publisher = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: stream in http_json(f"{base}/api/status").get("streams", {}),
            20,
            "the stream to go live",
        )
        status, answer = post_json(
            f"{base}/api/ai/{stream}",
            {"pipeline": "noop", "width": 128, "height": 128},
        )
        assert status == 201, answer
        assert wei(answer["price_per_second"]) == 0  # learnt from the orchestrator once it opens
        state = wait_for(
            lambda: (s := http_json(f"{base}/api/ai/{stream}"))["seconds_billed"] >= 1 and s,
            30,
            "the first second billed",
        )
        assert wei(state["price_per_second"]) == PRICE_PER_SECOND
        # The apps' events carry money the same way: whole wei, never a fraction string.
        control = base.replace("http://", "ws://") + f"/api/ai/{stream}/control"
        billed = trio.run(next_event, control, "billed")
        assert wei(billed["billed"]) == billed["seconds"] * PRICE_PER_SECOND > 0, billed
        assert wei(billed["price_per_second"]) == PRICE_PER_SECOND, billed
        assert not list(fraction_strings(billed)), billed
        started = time.monotonic()
        while time.monotonic() - started < 60:
            time.sleep(5)
            state = http_json(f"{base}/api/ai/{stream}")
            assert state["running"], state
            # Paid ahead all along: the credit never ran out.
            assert wei(state["credit"]) > 0, state
        assert delete(f"{base}/api/ai/{stream}") == 204
        final = wait_for(
            lambda: (s := http_json(f"{base}/api/ai/{stream}"))["settled"] and s,
            20,
            "the session to settle",
        )
    finally:
        publisher.kill()
        publisher.wait()
    seconds = final["seconds_billed"]
    assert 60 <= seconds <= 70, final
    # A whole number of wei a second: the whole wei are the exact amount.
    assert wei(final["billed"]) == seconds * PRICE_PER_SECOND
    # Both sides: what was paid minus what was billed. The ledgers agree exactly, so the
    # same amount rounded down the same way shows the same whole wei.
    assert final["orchestrator_balance"] is not None
    assert wei(final["credit"]) == wei(final["orchestrator_balance"]), final
    assert not list(fraction_strings(final)), final  # money as /api/status shows it
    assert final["segments"] >= 25 and final["failures"] == 0, final
    payments = http_json(f"{base}/api/status")["payments"]
    assert payments["orchestrator"]["payments_refused"] == 0
    # Every ticket sent was credited (transcoding and the live session alike): the same exact
    # amount, so the same whole wei.
    assert payments["gateway"]["ev_sent"] == payments["orchestrator"]["ev_received"]
    assert int(payments["gateway"]["ev_sent"]["wei"]) > 0


async def test_a_session_that_never_pays_is_refused_and_stopped(paid_node: NodeProcess) -> None:
    host, port = paid_node.hostport("quic").rsplit(":", 1)
    job = Job(
        stream_id="thief",
        seq=0,
        duration_ms=2000,
        profiles=(ProfileSpec(name="ai", width=128, height=128, bitrate=500_000),),
        pipeline="noop",
        session_id="unpaid",
    )
    async with open_quic_connection(host, int(port)) as connection:
        # A pipeline job without a paid session: refused before any work.
        stream = await connection.open_stream()
        channel = MessageStream(accept=CONTROL_FRAME_TYPES | {FrameType.JOB})
        await stream.send_all(channel.send(job))
        await stream.send_eof()
        answer = await _next_message(stream, channel)
        assert isinstance(answer, Error) and answer.code == 402, answer
        assert "payment required" in answer.message
        # A session opened but never paid is stopped after the grace period, saying why.
        control = await connection.open_stream()
        channel = MessageStream()
        await control.send_all(
            channel.send(LiveOpen(stream_id="thief", session_id="unpaid", pipeline="noop"))
        )
        events: list[LiveEvent] = []
        with trio.fail_after(15):
            while True:
                message = await _next_message(control, channel)
                if message is None:
                    break
                assert isinstance(message, LiveEvent)
                events.append(message)
    kinds = [e.kind for e in events]
    assert kinds[0] == "stopped" and "no payment" in events[0].message, events
    assert kinds[-1] == "settled" and events[-1].values["billed_wei"] == "0", events
    live = http_json(f"{paid_node.url('http')}/api/status")["orchestrator"]["live"]
    assert live["sessions"] == {} and live["stopped_total"] >= 1, live


async def _next_message(stream: Any, channel: MessageStream) -> Any:
    while (message := channel.next_message()) is None:
        data = await stream.receive_some(65536)
        if not data:
            return None
        channel.receive_data(data)
    return message
