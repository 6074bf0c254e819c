"""``lpstream dev`` with payments: tickets ride on every segment and settle on the embedded
chain; money is conserved to the wei."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.hls_check import HlsRecorder, check_recording
from tests.e2e.nodes import NodeProcess, http_json, push_command, wait_for

pytestmark = pytest.mark.slow

ETH = 10**18
PRICE = 50_000  # wei per pixel: about one ticket's EV per 720p -> 360p + 240p segment
EV = 10**12


def test_a_paid_stream_conserves_money_to_the_wei(tmp_path: Path) -> None:
    node = NodeProcess(
        [
            "dev",
            "--rtmp-addr=127.0.0.1:0",
            "--http-addr=127.0.0.1:0",
            "--service-addr=127.0.0.1:0",
            "--block-time=0.1",
            f"--price-per-unit={PRICE}",
            f"--ticket-ev={EV}",
            f"--max-face-value={2 * EV}",  # win probability 1/2: several tickets win
            f"--data-dir={tmp_path / 'data'}",
        ],
        name="dev-paid",
        log_dir=tmp_path,
    )
    try:
        node.wait_ready(timeout=90)
        base = node.url("http")
        start = http_json(f"{base}/api/status")["payments"]["chain"]
        assert start["gateway_deposit"] == 10 * ETH and start["gateway_reserve"] == 10 * ETH
        seconds = 20.0
        recorder = HlsRecorder(base=base, stream="paid", out_dir=tmp_path)
        recorder.start()
        publisher = subprocess.run(
            push_command(f"{node.url('rtmp')}/live/paid", seconds=seconds),
            capture_output=True,
            timeout=seconds + 30,
        )
        assert publisher.returncode == 0, publisher.stderr.decode()
        recorder.wait(timeout=30)
        sizes = {"source": (1280, 720), "360p": (640, 360), "240p": (426, 240)}
        check_recording(recorder, expected_sizes=sizes, audio=True, gop_seconds=2, seconds=seconds)

        def settled() -> dict[str, Any] | None:
            payments = http_json(f"{base}/api/status")["payments"]
            orch = payments["orchestrator"]
            done = orch["tickets_won"] > 0 and orch["tickets_pending"] == 0
            chain_caught_up = payments["chain"]["orchestrator_fees"] == orch["face_value_redeemed"]
            return payments if done and chain_caught_up else None

        payments = wait_for(settled, 60, "every winning ticket redeemed")
    finally:
        assert node.stop() == 0, node.log_path.read_text()[-3000:]

    gateway, orch, chain = payments["gateway"], payments["orchestrator"], payments["chain"]
    assert orch["tickets_won"] >= 2 and orch["tickets_redeemed"] == orch["tickets_won"]
    assert orch["tickets_dropped"] == 0 and orch["payments_refused"] == 0
    redeemed = orch["face_value_redeemed"]
    # On chain: the orchestrator's fees are exactly the face values redeemed ...
    assert chain["orchestrator_fees"] == redeemed
    # ... and the gateway's deposit plus reserve fell by exactly that much.
    spent = (start["gateway_deposit"] + start["gateway_reserve"]) - (
        chain["gateway_deposit"] + chain["gateway_reserve"]
    )
    assert spent == redeemed
    # Off chain: every ticket sent was received, and both sides agree on the credit left:
    # the EV paid minus price x the pixels the orchestrator billed.
    assert gateway["tickets_sent"] == orch["tickets_received"]
    assert Fraction(gateway["ev_sent"]) == Fraction(orch["ev_received"])
    credit = sum(Fraction(c) for c in gateway["credit"].values())
    assert (
        credit
        == Fraction(orch["balance"])
        == Fraction(orch["ev_received"]) - Fraction(orch["billed"])
    )
    assert Fraction(orch["billed"]) > 0
