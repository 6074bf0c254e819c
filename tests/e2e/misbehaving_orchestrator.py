"""An orchestrator that returns corrupted renditions: a real process for failover tests.

It is the real ``Orchestrator`` with a worker that flips bytes in every rendition it makes
(keeping the sizes, so the wire protocol is satisfied and only checking the media finds it).

    python -m tests.e2e.misbehaving_orchestrator --service-addr 127.0.0.1:0
"""

from __future__ import annotations

import argparse

import attrs
import trio

from lpstream.config import parse_host_port
from lpstream.jobs import JobOutput, Relay
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.quic import serve_quic
from lpstream.trickle import SegmentBuffer
from lpstream.wire import Job
from lpstream.worker.local import LocalWorker


@attrs.define
class CorruptingWorker(LocalWorker):
    """Transcodes for real, then overwrites the middle of every rendition with noise."""

    async def run_job(
        self, job: Job, source: SegmentBuffer, relay: Relay | None = None
    ) -> list[JobOutput]:
        outputs = await super().run_job(job, source, relay)
        corrupted = []
        for output in outputs:
            data = bytearray(output.data)
            start = len(data) // 4
            data[start : start + len(data) // 2] = bytes(len(data) // 2)
            corrupted.append(attrs.evolve(output, data=bytes(data)))
        return corrupted


async def main(service_addr: str) -> None:
    addr = parse_host_port(service_addr, default_port=8936)
    orchestrator = Orchestrator(secret="", metrics=Metrics(), local=CorruptingWorker(capacity=4))
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(
            serve_quic, addr.host, addr.port, orchestrator.handle_connection
        )
        print(f"orchestrator service: quic://{host}:{port}", flush=True)
        print("misbehaving orchestrator ready", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--service-addr", default="127.0.0.1:0")
    trio.run(main, parser.parse_args().service_addr)
