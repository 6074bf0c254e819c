"""``lpstream dev`` with payments: tickets ride on every segment and settle on the embedded
chain; money is conserved to the wei, and /api/status shows it as whole wei and ETH."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.hls_check import HlsRecorder, check_recording
from tests.e2e.money import fraction_strings, wei
from tests.e2e.nodes import http_json, push_command, start_dev, wait_for

pytestmark = pytest.mark.slow

ETH = 10**18
PRICE = 50_000  # wei per pixel: about one ticket's EV per 720p -> 360p + 240p segment
EV = 10**12


def test_a_paid_stream_conserves_money_to_the_wei(tmp_path: Path) -> None:
    node = start_dev(
        tmp_path,
        "--block-time=0.1",
        f"--price-per-unit={PRICE}",
        f"--ticket-ev={EV}",
        f"--max-face-value={2 * EV}",  # win probability 1/2: several tickets win
        f"--data-dir={tmp_path / 'data'}",
        name="dev-paid",
        offchain=False,
        ready_timeout=90,
    )
    try:
        base = node.url("http")
        start = http_json(f"{base}/api/status")["payments"]["chain"]
        assert start["gateway_deposit"] == {"wei": str(10 * ETH), "eth": 10.0}
        assert wei(start["gateway_reserve"]) == 10 * ETH
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
            status: dict[str, Any] = http_json(f"{base}/api/status")
            payments = status["payments"]
            orch = payments["orchestrator"]
            done = orch["tickets_won"] > 0 and orch["tickets_pending"] == 0
            chain_caught_up = payments["chain"]["orchestrator_fees"] == orch["face_value_redeemed"]
            return status if done and chain_caught_up else None

        status = wait_for(settled, 60, "every winning ticket redeemed")
    finally:
        assert node.stop() == 0, node.log_path.read_text()[-3000:]

    # No exact rational anywhere in the status: money is whole wei (strings) and ETH.
    assert list(fraction_strings(status)) == []
    payments = status["payments"]
    gateway, orch, chain = payments["gateway"], payments["orchestrator"], payments["chain"]
    assert isinstance(orch["ev_received"]["wei"], str) and isinstance(orch["billed"]["eth"], float)
    assert orch["tickets_won"] >= 2 and orch["tickets_redeemed"] == orch["tickets_won"]
    assert orch["tickets_dropped"] == 0 and orch["payments_refused"] == 0
    redeemed = wei(orch["face_value_redeemed"])
    # On chain: the orchestrator's fees are exactly the face values redeemed ...
    assert wei(chain["orchestrator_fees"]) == redeemed
    # ... and the gateway's deposit plus reserve fell by exactly that much.
    spent = (wei(start["gateway_deposit"]) + wei(start["gateway_reserve"])) - (
        wei(chain["gateway_deposit"]) + wei(chain["gateway_reserve"])
    )
    assert spent == redeemed
    # Off chain: every ticket sent was received, and both sides agree on the credit left:
    # the EV paid minus price x the pixels the orchestrator billed. The ledgers agree exactly;
    # each figure shown is rounded down to whole wei, so equal amounts show equal wei, and a
    # sum of n rounded figures is at most n - 1 wei below the rounded sum.
    assert gateway["tickets_sent"] == orch["tickets_received"]
    assert gateway["ev_sent"] == orch["ev_received"]
    credits = [wei(c) for c in gateway["credit"].values()]
    assert 0 <= wei(orch["balance"]) - sum(credits) <= max(len(credits) - 1, 0)
    assert wei(orch["ev_received"]) - wei(orch["billed"]) - wei(orch["balance"]) in (0, 1)
    # 50 000 wei per pixel: what was billed is a whole number of wei.
    assert wei(orch["billed"]) > 0 and wei(orch["billed"]) % PRICE == 0
