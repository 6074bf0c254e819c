"""Batch AI failover in a paid network: a second orchestrator takes over when the first is
killed before answering, and nothing is billed twice.

``lpstream chain``, two paid orchestrators offering the same tiny text-to-image model (the
first cheaper, so the gateway tries it first; its model is not warm and its job is long) and a
paid gateway, each its own process. While the first orchestrator works on the request (its
status shows the job in flight, so its tickets were credited), it is killed (SIGKILL). The
gateway's connection to it fails, no output byte has reached the client yet, so the gateway
moves the request to the second orchestrator: the client gets one answer, the picture the
model makes for that seed. Then the ledgers: the second orchestrator billed exactly the
picture's pixels at its price, once; the gateway agrees with it to the wei; and every ticket's
EV the gateway sent was credited by one orchestrator or the other.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers", reason="needs lpstream[ai] (diffusers, transformers)")

from benchmarks.harness.batch_ai import MODELS, data_url_bytes, direct, post
from benchmarks.harness.tiny_ai_images import build_tiny_sd
from tests.e2e.money import wei
from tests.e2e.nodes import LPSTREAM, NodeProcess, http_json, wait_for
from tests.e2e.test_network_paid import (
    ETH,
    MAX_PRICE,
    bond_and_register,
    free_udp_ports,
    fund_gateway,
    paid_orchestrator_args,
    payments_of,
    run_scripts,
    start_chain,
    start_next_round,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]

PRICES = (2 * 10**8, 3 * 10**8)
"""Wei per output pixel at the first and the second orchestrator."""
MODEL = MODELS["text-to-image"]


def models_file(path: Path, model: Path, price: int, *, warm: bool) -> Path:
    entry = {
        "pipeline": "text-to-image",
        "model_id": MODEL,
        "path": str(model),
        "price_per_unit": price,
        "warm": warm,
    }
    path.write_text(json.dumps([entry]))
    return path


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[list[NodeProcess], NodeProcess, Path]]:
    started: list[NodeProcess] = []
    model = build_tiny_sd(tmp_path / "sd")
    try:
        chain = start_chain(tmp_path, started)
        gateway_account, seller_accounts = chain.accounts[0], chain.accounts[1:3]
        sellers = []
        services = []
        for i, (account, port) in enumerate(zip(seller_accounts, free_udp_ports(2), strict=True)):
            service = f"127.0.0.1:{port}"
            args = paid_orchestrator_args(
                chain,
                account,
                service_addr=service,
                http_addr="127.0.0.1:0",
                price=1000,
                capacity=1,
                data_dir=tmp_path / f"orch{i}",
            )
            file = models_file(tmp_path / f"models{i}.json", model, PRICES[i], warm=i == 1)
            node = NodeProcess([*args, f"--ai-models={file}"], name=f"orch{i}", log_dir=tmp_path)
            started.append(node)
            sellers.append(node)
            services.append(service)
        gateway = NodeProcess(
            [
                "gateway",
                "--rtmp-addr=127.0.0.1:0",
                "--http-addr=127.0.0.1:0",
                f"--max-price-per-unit={MAX_PRICE}",
                *chain.flags(),
                *gateway_account.flags(),
            ],
            name="gateway",
            log_dir=tmp_path,
        )
        started.append(gateway)
        for node in [*sellers, gateway]:
            node.wait_ready(timeout=90)
        run_scripts(
            [
                (LPSTREAM, fund_gateway(chain, gateway_account)),
                *(
                    (LPSTREAM, bond_and_register(chain, account, ETH, f"quic://{service}"))
                    for service, account in zip(services, seller_accounts, strict=True)
                ),
            ]
        )
        start_next_round(chain.url)
        yield sellers, gateway, model
    finally:
        for node in reversed(started):
            node.stop()  # the killed one too: it closes its log and its pipe


def test_a_second_orchestrator_takes_over_a_killed_ones_request(
    network: tuple[list[NodeProcess], NodeProcess, Path],
) -> None:
    (first, second), gateway, model = network
    base = gateway.url("http")

    def offered() -> bool:
        models = http_json(f"{base}/v1/models")["data"]
        return (
            sum(1 for m in models if m["id"] == MODEL) == 1
            and all(
                o["connected"] and o["refused"] == ""
                for o in http_json(f"{base}/api/status")["orchestrators"]
            )
            and len(http_json(f"{base}/api/status")["orchestrators"]) == 2
        )

    wait_for(offered, 60, "the gateway to offer both orchestrators' model")
    params = {
        "prompt": "a slow picture",
        "width": 128,
        "height": 128,
        "seed": 9,
        "num_inference_steps": 60,
    }
    answer: dict[str, Any] = {}

    def ask() -> None:
        answer["status"], answer["body"], _ = post(
            f"{base}/text-to-image",
            json.dumps({"model_id": MODEL, **params}).encode(),
            "application/json",
            timeout=240,
        )

    client = threading.Thread(target=ask)
    client.start()
    in_flight = wait_for(
        lambda: (s := http_json(f"{first.url('http')}/api/status"))["ai_jobs_in_flight"] > 0 and s,
        60,
        "the first orchestrator to take the request",
    )
    first_received = wei(in_flight["payments"]["ev_received"])
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    client.join(240)
    assert not client.is_alive()
    assert answer["status"] == 200, answer["body"]
    (image,) = json.loads(answer["body"])["images"]
    expected, units = direct("text-to-image", model, params)
    assert data_url_bytes(image["url"]) == bytes(expected.tracks[0])
    assert units == (128 * 128,)

    status = http_json(f"{second.url('http')}/api/status")["payments"]
    # Billed once, by the orchestrator that answered, at its price.
    assert wei(status["billed"]) == 128 * 128 * PRICES[1]
    gateway_payments = payments_of(gateway)["gateway"]
    # Every ticket sent was credited by one orchestrator or the other.
    assert wei(gateway_payments["ev_sent"]) == first_received + wei(status["ev_received"])
    # The gateway and the survivor agree on what is left of its credit, to the wei.
    credit = wei(gateway_payments["credit"][f"{service_of(second)}/ai-text-to-image"])
    assert credit == wei(status["balance"])


def service_of(node: NodeProcess) -> str:
    """The ``host:port`` an orchestrator serves on (from its log)."""
    for line in node.lines:
        if line.startswith("orchestrator service: quic://"):
            return line.removeprefix("orchestrator service: quic://").strip()
    raise AssertionError("no service address in its log")
