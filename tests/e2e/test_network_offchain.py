"""Gateway, orchestrator and two workers as separate processes on loopback."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.e2e.hls_check import HlsRecorder, check_recording
from tests.e2e.nodes import LPSTREAM, NodeProcess, http_json, push_command, wait_for

pytestmark = pytest.mark.slow

SECRET = "network-test-secret"


@attrs.define
class Network:
    orchestrator: NodeProcess
    workers: list[NodeProcess]
    gateway: NodeProcess
    log_dir: Path


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    started: list[NodeProcess] = []
    try:
        orch = NodeProcess(
            [
                "orchestrator",
                "--offchain",
                "--service-addr=127.0.0.1:0",
                "--http-addr=127.0.0.1:0",
                f"--orch-secret={SECRET}",
                "--capacity=0",
            ],
            name="orchestrator",
            log_dir=tmp_path,
        )
        started.append(orch)
        orch.wait_ready()
        service = orch.hostport("quic")
        workers = []
        for i in range(2):
            worker = NodeProcess(
                ["worker", f"--orch-addr={service}", "--capacity=2"],
                name=f"worker{i}",
                log_dir=tmp_path,
            )
            started.append(worker)
            workers.append(worker)
        gateway = NodeProcess(
            [
                "gateway",
                "--offchain",
                f"--orch-addr={service}",
                "--rtmp-addr=127.0.0.1:0",
                "--http-addr=127.0.0.1:0",
            ],
            name="gateway",
            log_dir=tmp_path,
        )
        started.append(gateway)
        for node in started[1:]:
            node.wait_ready()
        yield Network(orchestrator=orch, workers=workers, gateway=gateway, log_dir=tmp_path)
    finally:
        for node in reversed(started):
            node.stop()


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers read the secret from the environment, as an operator would set it.
    monkeypatch.setenv("LPSTREAM_ORCH_SECRET", SECRET)


def test_killing_a_worker_mid_stream_leaves_no_hole(network: Network, tmp_path: Path) -> None:
    seconds = 20.0
    admin = network.orchestrator.url("http")
    status = http_json(f"{admin}/api/status")
    assert len(status["workers"]) == 2 and status["capacity"] == 4

    rtmp = f"{network.gateway.url('rtmp')}/live/net"
    publisher = subprocess.Popen(push_command(rtmp, seconds=seconds), stderr=subprocess.PIPE)
    recorder = HlsRecorder(base=network.gateway.url("http"), stream="net", out_dir=tmp_path)
    recorder.start()

    # Wait until a few segments are out, then kill -9 the worker serving the stream.
    wait_for(lambda: len(recorder.seqs("240p")) >= 2, 30, "two transcoded segments")

    def busy_worker() -> str | None:
        workers = http_json(f"{admin}/api/status")["workers"]
        return next((w for w, facts in workers.items() if facts["sessions"] > 0), None)

    serving = wait_for(busy_worker, 10, "a worker holding the session")
    victim = next(w for w in network.workers if any(serving in line for line in w.lines))
    time.sleep(0.7)  # land the kill inside a segment's transcode
    victim.stop(signal.SIGKILL)
    killed_at = time.monotonic()

    _, err = publisher.communicate(timeout=seconds + 30)
    assert publisher.returncode == 0, err.decode()
    recorder.wait(timeout=40)

    sizes = {"source": (1280, 720), "360p": (640, 360), "240p": (426, 240)}
    check_recording(recorder, expected_sizes=sizes, audio=True, gop_seconds=2, seconds=seconds)
    after = [key for key, t in recorder.arrivals.items() if t > killed_at and key[0] == "240p"]
    assert after, "no segment was transcoded after the kill"
    status = http_json(f"{admin}/api/status")
    assert list(status["workers"]) != [] and serving not in status["workers"]
    orch_log = network.orchestrator.log_path.read_text()
    assert f"worker {serving}" in orch_log
    # The segments that were in flight on the killed worker were moved, not dropped.
    assert f"worker {serving} failed net/" in orch_log and "trying another" in orch_log


def test_a_worker_with_the_wrong_secret_is_refused(network: Network) -> None:
    service = network.orchestrator.hostport("quic")
    result = subprocess.run(
        [*LPSTREAM, "worker", f"--orch-addr={service}", "--orch-secret=wrong"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert b"refused this worker: wrong orchestrator secret" in result.stderr
    assert "wrong orchestrator secret" in network.orchestrator.log_path.read_text()
    status = http_json(f"{network.orchestrator.url('http')}/api/status")
    assert len(status["workers"]) == 2


async def test_live_ai_runs_on_a_remote_worker_and_takes_changes_there(network: Network) -> None:
    """The pipeline job goes to a worker process through the orchestrator; its output is
    relayed back as it is encoded, and a WebSocket change reaches the worker's session."""
    import json

    import trio
    from trio_websocket import open_websocket_url

    from tests.e2e.test_live_ai import ai_segments, post_json, publish

    gateway = network.gateway
    base = gateway.url("http")
    stream = "remote-ai"
    # Long enough for a loaded machine to get the session going before the stream ends.
    proc = await trio.to_thread.run_sync(publish, gateway, stream, 24)
    try:
        status, answer = await trio.to_thread.run_sync(
            post_json,
            f"{base}/api/ai/{stream}",
            {"pipeline": "color-grade", "params": {"strength": 0.0}, "width": 256},
        )
        assert status == 201, answer
        ws_url = base.replace("http://", "ws://") + f"/api/ai/{stream}/control"
        async with open_websocket_url(ws_url) as ws:
            with trio.fail_after(30):
                while json.loads(await ws.get_message())["type"] != "stats":
                    pass
                await ws.send_message(json.dumps({"params": {"look": "mono", "strength": 1}}))
                while (event := json.loads(await ws.get_message()))["type"] != "params":
                    pass
        assert event["applied_pts"] > event["after_pts"] >= 0, event
        assert event["frames_between"] <= 1, event
        await trio.to_thread.run_sync(ai_segments, gateway, stream, 4)
    finally:
        await trio.to_thread.run_sync(proc.wait, 30)
    orch = http_json(f"{network.orchestrator.url('http')}/api/status")
    assert "color-grade" in orch["pipelines"], orch
    assert all(w["sessions"] <= 2 for w in orch["workers"].values())
