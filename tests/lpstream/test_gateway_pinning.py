"""A gateway dialling a pinned orchestrator address where another orchestrator answers.

Both are real orchestrators on real QUIC on loopback. The gateway pinned to A's certificate
refuses B in the handshake, says why in its log and its status, and sends B nothing: B's side
shows no connection past the handshake and no session. Pinned to B's own certificate, the same
gateway works with B.
"""

from __future__ import annotations

import logging

import pytest
import trio

from lpstream.config import HostPort
from lpstream.errors import BusyError
from lpstream.gateway.discovery import StaticSource
from lpstream.gateway.orchestrators import OrchestratorPool
from lpstream.gateway.segments import SegmentJob
from lpstream.media import DEFAULT_PROFILES
from lpstream.metrics import Metrics
from lpstream.orchestrator.address import PinnedAddress
from lpstream.orchestrator.identity import OrchestratorIdentity
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.trickle import SegmentBuffer
from lpstream.worker.local import LocalWorker
from tests.mediatools import make_clip


@pytest.fixture(scope="module")
def segment(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("seg") / "seg.ts"
    make_clip(path, seconds=1, size="320x240", gop=30, fmt="mpegts")
    return path.read_bytes()


def full(data: bytes) -> SegmentBuffer:
    buffer = SegmentBuffer()
    buffer.append(data)
    buffer.close()
    return buffer


def segment_job(session: str) -> SegmentJob:
    return SegmentJob(
        stream="s",
        session=session,
        seq=0,
        duration_ms=1000,
        profiles=DEFAULT_PROFILES,
        source_width=320,
        source_height=240,
    )


async def test_a_gateway_refuses_another_orchestrator_on_the_pinned_address(
    nursery: trio.Nursery, segment: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    a = OrchestratorIdentity.generate()
    b = Orchestrator(secret="", metrics=Metrics(), local=LocalWorker(capacity=2))
    served: PinnedAddress = await nursery.start(b.serve, "127.0.0.1", 0)
    assert served.pin != a.fingerprint

    wrong = PinnedAddress("127.0.0.1", served.port, a.fingerprint)
    gateway = OrchestratorPool([wrong])
    await nursery.start(gateway.run)
    [facts] = gateway.status()
    expected = (
        f"refusing 127.0.0.1:{served.port}: its certificate is {served.pin}, not the pinned "
        f"{a.fingerprint}; nothing was sent to it"
    )
    assert facts.refused == expected and not facts.connected
    assert f"is not offered work: {expected}" in caplog.text
    with pytest.raises(BusyError, match="not the pinned"):
        await gateway.transcode(segment_job("wrong"), full(segment))
    # B's side: nothing got past the handshake, no job, no session.
    status = b.status()
    assert status.connections == 0 and status.sessions == 0 and status.jobs_in_flight == 0
    assert "unpinned" not in caplog.text

    right = OrchestratorPool([served])
    await nursery.start(right.run)
    assert right.status()[0].refused == ""
    renditions = await right.transcode(segment_job("right"), full(segment))
    assert [r.name for r in renditions] == [p.name for p in DEFAULT_PROFILES]
    assert b.status().sessions == 1


async def test_an_unpinned_orchestrator_is_noted_once(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lpstream.gateway")
    b = Orchestrator(secret="", metrics=Metrics(), local=LocalWorker(capacity=1))
    served: PinnedAddress = await nursery.start(b.serve, "127.0.0.1", 0)
    plain = HostPort(served.host, served.port)
    gateway = OrchestratorPool([plain], sources=[StaticSource([plain])], refresh_interval=0.05)
    await nursery.start(gateway.run)
    await trio.sleep(0.3)  # a few refreshes: discovery lists it again each time
    notes = [r.getMessage() for r in caplog.records if "unpinned" in r.getMessage()]
    assert notes == [f"orchestrator {plain} is unpinned (allowed on loopback)"]
    assert gateway.status()[0].refused == ""
