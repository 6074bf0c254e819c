"""Payment, orchestrator, worker and GPU metrics of a paid gateway pool and a paid orchestrator
sharing one registry (as in ``lpstream dev``), over real QUIC on the embedded chain (a real
EVM): the wei counters equal the ledgers to the float, each payment check is timed, each
transcode job's round trip is observed, and an orchestrator leaving the pool takes its
series along."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import trio

from lpstream.config import HostPort
from lpstream.gateway.orchestrators import OrchestratorPool
from lpstream.gateway.payments import PaymentSender
from lpstream.jobs import JobError
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.orchestrator.orchestrator_metrics import gpu_sessions
from lpstream.orchestrator.payments import PaymentReceiver
from lpstream.quic import open_quic_connection
from lpstream.worker.live import LiveSessions
from lpstream.worker.local import LocalWorker
from payments.pm import TicketSender
from payments.store import TicketStore
from tests.lpstream.test_metrics import label_values, sample
from tests.lpstream.test_paid_orchestrator import (
    EV,
    Paid,
    full,
    job,
    paid,
    segment,
    segment_job,
    send,
)
from workers import nvenc_available

__all__ = ["paid", "segment"]  # the fixtures this module borrows


async def test_payments_in_wei_checks_and_round_trips_in_one_registry(
    paid: Paid, segment: bytes, nursery: trio.Nursery, tmp_path: Path
) -> None:
    metrics = Metrics()
    # Every ticket wins (but once in 10^12): its face value is capped a wei above its EV.
    receiver = PaymentReceiver(
        address=paid.receiver.address,
        watch=paid.watch,
        store=TicketStore(tmp_path / "won.sqlite"),
        store_limiter=trio.CapacityLimiter(1),
        price=Fraction(1),
        ticket_ev=EV,
        max_face_value=EV + 1,
        signing_key=paid.receiver.signing_key,
    )
    node = Orchestrator(
        secret="s", metrics=metrics, local=LocalWorker(capacity=4), payments=receiver
    )
    port = (await nursery.start(node.serve, "127.0.0.1", 0)).port
    sender = PaymentSender(sender=TicketSender(private_key=paid.gateway_key.private_key))
    pool = OrchestratorPool([HostPort("127.0.0.1", port)], payments=sender, watch=paid.watch)
    pool.export_metrics(metrics)  # what the gateway does with its pool
    await nursery.start(pool.run)
    orchestrator = f"127.0.0.1:{port}"

    for seq in range(2):
        await pool.transcode(segment_job(seq, "metered"), full(segment))
    async with open_quic_connection("127.0.0.1", port) as connection:
        with pytest.raises(JobError) as refused:
            await send(connection, job(0, b"", "unpaid"), segment)
    assert refused.value.code == 402

    text = metrics.render()
    sent, received = sender.status(), receiver.status()
    assert sent.tickets_sent > 0 and received.tickets_won == received.tickets_received > 0
    assert sample(text, "lpstream_payment_sent_wei_total") == float(sent.ev_sent.exact)
    assert sample(text, "lpstream_tickets_sent_total") == sent.tickets_sent
    assert sample(text, "lpstream_payment_received_wei_total") == float(received.ev_received.exact)
    assert sample(text, "lpstream_payment_won_wei_total") == received.tickets_won * (EV + 1)
    assert sample(text, "lpstream_tickets_won_total") == received.tickets_won
    assert sample(text, "lpstream_tickets_pending") == received.tickets_won  # none redeemed yet
    assert sample(text, "lpstream_payment_redeemed_wei_total") == 0
    assert sample(text, "lpstream_payment_billed_wei_total") == float(received.billed.exact) > 0
    assert sample(text, "lpstream_payments_refused_total") == 1
    # Each payment's check is timed, the refused one too.
    assert sample(text, "lpstream_payment_check_seconds_count", outcome="accepted") == 2
    assert sample(text, "lpstream_payment_check_seconds_count", outcome="refused") == 1
    # The pool's view of its orchestrator, and each job's round trip.
    assert sample(text, "lpstream_orchestrator_jobs_total", orchestrator=orchestrator) == 2
    assert sample(text, "lpstream_orchestrator_failures_total", orchestrator=orchestrator) == 0
    assert sample(text, "lpstream_orchestrator_connected", orchestrator=orchestrator) == 1
    score = sample(text, "lpstream_orchestrator_latency_score", orchestrator=orchestrator)
    assert score is not None and score > 0
    assert sample(text, "lpstream_segment_round_trip_seconds_count", orchestrator=orchestrator) == 2
    # The orchestrator's workers (no GPU here: no gpu series).
    assert sample(text, "lpstream_worker_capacity", worker="local") == 4
    assert sample(text, "lpstream_worker_sessions", worker="local") == 1
    assert label_values(text, "gpu") == set()

    # An orchestrator that leaves the pool takes its series along.
    pool.connections.orchestrators.clear()
    assert label_values(metrics.render(), "orchestrator") == set()


def test_gpu_series_name_the_devices_the_in_process_worker_uses() -> None:
    assert gpu_sessions(None, 0) == ({}, {})
    assert gpu_sessions(LocalWorker(encoder="x264"), 3) == ({}, {})
    on_cuda = LocalWorker(encoder="x264", live=LiveSessions(device="cuda"))
    assert gpu_sessions(on_cuda, 3) == ({}, {"cuda:0": 0})
    # NVENC where it runs; where it cannot, the worker refuses its jobs and no GPU is named.
    nvenc = LocalWorker(encoder="nvenc", live=LiveSessions(device="cuda:1"))
    encode = {"cuda:0": 3} if nvenc_available() else {}
    assert gpu_sessions(nvenc, 3) == (encode, {"cuda:1": 0})
