"""Failover across orchestrator processes: killed, stalled and lying orchestrators.

One gateway with three orchestrators (separate processes, each with its own worker). The
orchestrator serving the stream is killed with SIGKILL, frozen with SIGSTOP, or replaced by
one that corrupts its renditions. The HLS output must not miss a segment, and the largest gap
between consecutive segments appearing may exceed the normal one by at most one segment
duration (the network issue's bound); both gaps are printed.
"""

from __future__ import annotations

import itertools
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.e2e.hls_check import HlsRecorder, check_recording
from tests.e2e.nodes import NodeProcess, http_json, push_command, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.solo]

SIZES = {"source": (1280, 720), "360p": (640, 360), "240p": (426, 240)}
SEGMENT_SECONDS = 2.0
"""The publisher's GOP (60 frames at 30 fps): the segmenter cuts a segment at each keyframe."""
RECORDER_POLL_SECONDS = 0.3
"""How often ``HlsRecorder`` reloads the playlists: it sees a segment up to a poll late."""


@attrs.define
class Cluster:
    gateway: NodeProcess
    orchestrators: list[NodeProcess]


def start_cluster(
    tmp_path: Path, *, misbehaving_first: bool = False, gateway_args: tuple[str, ...] = ()
) -> Cluster:
    orchestrators = []
    for i in range(3):
        if i == 0 and misbehaving_first:
            node = NodeProcess(
                ["-m", "tests.e2e.misbehaving_orchestrator"],
                name="orch0",
                log_dir=tmp_path,
                program=[sys.executable],
            )
        else:
            node = NodeProcess(
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
        orchestrators.append(node)
    for node in orchestrators:
        node.wait_ready()
    addresses = ",".join(node.hostport("quic") for node in orchestrators)
    gateway = NodeProcess(
        [
            "gateway",
            "--offchain",
            f"--orch-addr={addresses}",
            "--rtmp-addr=127.0.0.1:0",
            "--http-addr=127.0.0.1:0",
            *gateway_args,
        ],
        name="gateway",
        log_dir=tmp_path,
    )
    gateway.wait_ready()
    return Cluster(gateway=gateway, orchestrators=orchestrators)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = start_cluster(tmp_path)
    try:
        yield c
    finally:
        c.gateway.stop()
        for node in c.orchestrators:
            node.stop(signal.SIGKILL)


def serving(cluster: Cluster) -> NodeProcess:
    """The orchestrator the gateway sends the stream to now."""

    def find() -> NodeProcess | None:
        status = http_json(f"{cluster.gateway.url('http')}/api/status")
        busy = [o for o in status["orchestrators"] if o["jobs"] > 0 and not o["suspended"]]
        if not busy:
            return None
        address = max(busy, key=lambda o: o["jobs"])["address"]
        return next(n for n in cluster.orchestrators if n.hostport("quic") == address)

    node: NodeProcess = wait_for(find, 30, "an orchestrator serving the stream")
    return node


def gaps(recorder: HlsRecorder, rendition: str) -> tuple[float, float]:
    times = sorted(t for (name, _), t in recorder.arrivals.items() if name == rendition)
    deltas = [b - a for a, b in itertools.pairwise(times)]
    return statistics.median(deltas), max(deltas)


def run_incident(cluster: Cluster, tmp_path: Path, seconds: float, incident: str) -> HlsRecorder:
    rtmp = f"{cluster.gateway.url('rtmp')}/live/fo"
    publisher = subprocess.Popen(push_command(rtmp, seconds=seconds), stderr=subprocess.PIPE)
    recorder = HlsRecorder(base=cluster.gateway.url("http"), stream="fo", out_dir=tmp_path)
    recorder.start()
    wait_for(lambda: len(recorder.seqs("240p")) >= 3, 40, "the stream to be running")
    victim = serving(cluster)
    if incident == "kill":
        victim.proc.send_signal(signal.SIGKILL)
    elif incident == "stop":
        victim.proc.send_signal(signal.SIGSTOP)
    _, err = publisher.communicate(timeout=seconds + 60)
    assert publisher.returncode == 0, err.decode()
    recorder.wait(timeout=60)
    if incident == "stop":
        victim.proc.send_signal(signal.SIGCONT)
    check_recording(recorder, expected_sizes=SIZES, audio=True, gop_seconds=2, seconds=seconds)
    normal, worst = gaps(recorder, "240p")
    print(f"\n{incident}: segment gap median {normal:.2f} s, worst {worst:.2f} s "
          f"({worst - normal:.2f} s beyond normal)")  # fmt: skip
    (tmp_path / f"gap-{incident}.txt").write_text(f"{normal:.3f} {worst:.3f}\n")
    # The network issue's bound: finding the orchestrator dead, stalled or lying and making
    # the segment again elsewhere costs at most one segment duration beyond the normal rhythm
    # (the median gap). A machine that keeps up puts out a segment every SEGMENT_SECONDS; a
    # loaded one that falls behind, every ``normal`` seconds: the larger is what making one
    # segment takes there. The player sees each segment up to a poll late, so one gap can
    # read a poll longer than it was (the median evens that out). Measured: kill +0.3 s,
    # stall +1.3 s, liar +0.4 s beyond a normal 1.9 s on a quiet machine; on one loaded past
    # real time, +1.2, +3.6 and +1.4 s beyond 3.5, 4.5 and 4.8 s.
    segment = max(SEGMENT_SECONDS, normal)
    assert worst - normal <= segment + RECORDER_POLL_SECONDS, (incident, normal, worst)
    return recorder


def test_sigkill_of_the_serving_orchestrator_leaves_no_hole(
    cluster: Cluster, tmp_path: Path
) -> None:
    run_incident(cluster, tmp_path, 60.0, "kill")
    log = cluster.gateway.log_path.read_text()
    assert "attempt 1/3 failed" in log


def test_a_stalled_orchestrator_is_left_behind(cluster: Cluster, tmp_path: Path) -> None:
    run_incident(cluster, tmp_path, 30.0, "stop")


def test_corrupted_renditions_suspend_the_orchestrator(tmp_path: Path) -> None:
    # Seed 1 makes the first uniform draw among three unknown orchestrators the first one
    # listed: the liar. Its renditions fail the gateway's decode check, it is suspended and
    # never settled, and the segment is made elsewhere.
    cluster = start_cluster(tmp_path, misbehaving_first=True, gateway_args=("--selection-seed=1",))
    try:
        run_incident(cluster, tmp_path, 12.0, "corrupt")
        status = http_json(f"{cluster.gateway.url('http')}/api/status")
        bad_address = cluster.orchestrators[0].hostport("quic")
        bad = next(o for o in status["orchestrators"] if o["address"] == bad_address)
        assert bad["failures"] >= 1 and bad["jobs"] == 0  # caught, never used
        assert "decodes to" in cluster.gateway.log_path.read_text()
    finally:
        cluster.gateway.stop()
        for node in cluster.orchestrators:
            node.stop(signal.SIGKILL)
