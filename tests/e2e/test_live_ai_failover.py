"""Live AI failover across orchestrator processes: the orchestrator serving a stream's live
AI session is killed with SIGKILL; the gateway moves the session to the other orchestrator,
tells the app with a ``swapped`` event (old, new, reason, gap), and the ``ai`` rendition goes
on in HLS under the same sequence numbers, every listed segment decoding. The gap (last AI
frame of the old orchestrator to the first of the new one) is printed."""

from __future__ import annotations

import io
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import av
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.e2e.nodes import (
    NodeProcess,
    http_get,
    http_json,
    parse_media_playlist,
    push_command,
    wait_for,
)
from tests.e2e.test_live_ai import post_json

pytestmark = [pytest.mark.slow, pytest.mark.solo]

STREAM = "swap"


@attrs.define
class Network:
    gateway: NodeProcess
    orchestrators: list[NodeProcess]

    def by_address(self, address: str) -> NodeProcess:
        return next(o for o in self.orchestrators if o.hostport("quic") == address)


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    """Two off-chain orchestrators (each with its in-process worker) and a gateway using both,
    with a one-rendition ladder: the AI rendition is the work here."""
    profiles = tmp_path / "profiles.json"
    profiles.write_text(
        json.dumps([{"name": "240p", "width": 426, "height": 240, "bitrate": 300000}])
    )
    orchestrators = [
        NodeProcess(
            [
                "orchestrator",
                "--offchain",
                "--service-addr=127.0.0.1:0",
                "--orch-secret=s",
                "--capacity=4",
            ],
            name=f"orch{i}",
            log_dir=tmp_path,
        )
        for i in range(2)
    ]
    started = list(orchestrators)
    try:
        for node in orchestrators:
            node.wait_ready()
        gateway = NodeProcess(
            [
                "gateway",
                "--offchain",
                f"--orch-addr={','.join(o.hostport('quic') for o in orchestrators)}",
                "--rtmp-addr=127.0.0.1:0",
                "--http-addr=127.0.0.1:0",
                f"--profiles={profiles}",
            ],
            name="gateway",
            log_dir=tmp_path,
        )
        started.append(gateway)
        gateway.wait_ready()
        yield Network(gateway=gateway, orchestrators=orchestrators)
    finally:
        for node in reversed(started):
            node.stop(signal.SIGKILL)


def ai_playlist(base: str) -> list[tuple[int, float, str, bool]]:
    status, body = http_get(f"{base}/hls/{STREAM}/ai/index.m3u8")
    if status != 200:
        return []
    return parse_media_playlist(body.decode())[1]


def listed_ai(base: str) -> list[int]:
    return [seq for seq, _, _, gap in ai_playlist(base) if not gap]


async def kill_and_wait_for_swap(control: str, victim: NodeProcess) -> dict[str, Any]:
    """Watches the session's events, kills ``victim``; returns the ``swapped`` event."""
    async with open_websocket_url(control) as ws:
        victim.proc.send_signal(signal.SIGKILL)
        with trio.fail_after(45):
            while True:
                event = json.loads(await ws.get_message())
                assert event["type"] != "stopped", event
                if event["type"] == "swapped":
                    return dict(event)


def frames_in(data: bytes) -> int:
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        return sum(1 for _ in container.decode(video=0))


def test_sigkill_of_the_serving_orchestrator_moves_the_ai_session(network: Network) -> None:
    base = network.gateway.url("http")
    cmd = push_command(f"{network.gateway.url('rtmp')}/live/{STREAM}", seconds=70, gop=30)
    publisher = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: STREAM in http_json(f"{base}/api/status").get("streams", {}),
            20,
            "the stream to go live",
        )
        status, answer = post_json(
            f"{base}/api/ai/{STREAM}",
            {"pipeline": "noop", "width": 128, "height": 128, "params": {}},
        )
        assert status == 201, answer
        wait_for(lambda: len(listed_ai(base)) >= 3, 40, "three ai segments")
        old = http_json(f"{base}/api/ai/{STREAM}")["orchestrator"]
        victim = network.by_address(old)
        before = max(listed_ai(base))
        control = base.replace("http://", "ws://") + f"/api/ai/{STREAM}/control"
        swapped = trio.run(kill_and_wait_for_swap, control, victim)
        survivor = next(o for o in network.orchestrators if o is not victim)
        assert swapped["old"] == old, swapped
        assert swapped["new"] == survivor.hostport("quic"), swapped
        assert swapped["reason"].startswith("connection lost"), swapped
        assert isinstance(swapped["gap_ms"], int) and swapped["gap_ms"] > 0, swapped
        print(f"\nlive AI swap after SIGKILL: {swapped['gap_ms']} ms without AI frames")
        # The rendition goes on: new segments are listed after the swap...
        after = wait_for(
            lambda: (new := [s for s in listed_ai(base) if s > before + 3]) and new,
            40,
            "ai segments from the new orchestrator",
        )
        state = http_json(f"{base}/api/ai/{STREAM}")
        assert state["running"] and state["orchestrator"] == swapped["new"], state
        assert state["swaps"] == 1, state
        assert state["last_swap_gap_ms"] == swapped["gap_ms"], state
        # ...under the same numbering as the other renditions: every listed one decodes.
        entries = ai_playlist(base)
        seqs = [seq for seq, _, _, _ in entries]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), entries
        assert max(after) in seqs
        for seq, _, uri, gap in entries:
            if gap:
                continue
            code, data = http_get(f"{base}/hls/{STREAM}/ai/{uri}")
            assert code == 200, (seq, code)
            assert frames_in(data) > 0, seq
        _, source, _ = parse_media_playlist(
            http_get(f"{base}/hls/{STREAM}/240p/index.m3u8")[1].decode()
        )
        assert max(after) <= max(seq for seq, _, _, _ in source) + 1
    finally:
        publisher.kill()
        publisher.wait()
