"""Live AI failover in a paid network: the money adds up to the wei across the swap.

``lpstream chain``, two paid orchestrators (bonded and registered, a price per pixel and a
price per second of live AI) and a paid gateway, each its own process. A stream is
transcoded on one orchestrator while its live AI session (``noop``) runs on the other (the
seeded draws put them apart). The AI session's orchestrator is frozen with SIGSTOP just after
it billed a second: it falls silent, so the gateway moves the session to the other one (a
``swapped`` event) and pays it there in a new paid session. Once the session is stopped and
settled and the stream is over, the frozen orchestrator is thawed (SIGCONT) and every ledger
is read:

* every ticket the gateway sent was received, by one orchestrator or the other, and the EV
  the gateway sent is the EV they credited (whole wei, rounded down each);
* the survivor and the gateway agree on its credit to the wei (transcoding and live AI
  alike), and the session's own figures match what the survivor settled;
* what the session billed is the price per second times the seconds both orchestrators
  reported billing, and the frozen one kept no more credit than the gateway counts it has.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.e2e.money import fraction_strings, wei
from tests.e2e.nodes import LPSTREAM, NodeProcess, http_get, http_json, push_command, wait_for
from tests.e2e.test_live_ai import post_json
from tests.e2e.test_live_ai_paid import delete
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

pytestmark = [pytest.mark.slow, pytest.mark.solo]

STREAM = "paid-swap"
PRICE_PER_SECOND = 3 * 10**12
"""Wei per second of live AI, at both orchestrators: three tickets' EV."""
PRICE_PER_PIXEL = 150_000
SELECTION_SEED = 1
"""Its first two draws are 0.13 and 0.85: with stakes 3:2 (chances 0.57 and 0.43, in either
order) the stream's transcoding and its AI session go to different orchestrators."""
STAKES = (3 * ETH, 2 * ETH)


@attrs.frozen(kw_only=True)
class Seller:
    node: NodeProcess
    service: str
    """``host:port`` of its QUIC service, as registered on chain."""


@attrs.frozen(kw_only=True)
class PaidPair:
    sellers: list[Seller]
    gateway: NodeProcess

    def seller(self, service: str) -> Seller:
        return next(s for s in self.sellers if s.service == service)


@pytest.fixture
def paid_pair(tmp_path: Path) -> Iterator[PaidPair]:
    started: list[NodeProcess] = []
    try:
        chain = start_chain(tmp_path, started)
        gateway_account, seller_accounts = chain.accounts[0], chain.accounts[1:3]
        profiles = tmp_path / "profiles.json"
        profiles.write_text(
            json.dumps([{"name": "240p", "width": 426, "height": 240, "bitrate": 300000}])
        )
        sellers = []
        for i, (account, port) in enumerate(zip(seller_accounts, free_udp_ports(2), strict=True)):
            service = f"127.0.0.1:{port}"
            args = paid_orchestrator_args(
                chain,
                account,
                service_addr=service,
                http_addr="127.0.0.1:0",
                price=PRICE_PER_PIXEL,
                capacity=2,
                data_dir=tmp_path / f"orch{i}",
            )
            node = NodeProcess(
                [*args, f"--price-per-second={PRICE_PER_SECOND}"],
                name=f"orch{i}",
                log_dir=tmp_path,
            )
            started.append(node)
            sellers.append(Seller(node=node, service=service))
        gateway = NodeProcess(
            [
                "gateway",
                "--rtmp-addr=127.0.0.1:0",
                "--http-addr=127.0.0.1:0",
                f"--max-price-per-unit={MAX_PRICE}",
                f"--selection-seed={SELECTION_SEED}",
                f"--profiles={profiles}",
                *chain.flags(),
                *gateway_account.flags(),
            ],
            name="gateway",
            log_dir=tmp_path,
        )
        started.append(gateway)
        for node in [*(s.node for s in sellers), gateway]:
            node.wait_ready(timeout=60)
        run_scripts(
            [
                (LPSTREAM, fund_gateway(chain, gateway_account)),
                *(
                    (LPSTREAM, bond_and_register(chain, account, stake, f"quic://{s.service}"))
                    for s, account, stake in zip(sellers, seller_accounts, STAKES, strict=True)
                ),
            ]
        )
        start_next_round(chain.url)
        yield PaidPair(sellers=sellers, gateway=gateway)
    finally:
        for node in reversed(started):
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)  # a frozen one must hear the SIGINT
            node.stop()


def ai_segments(base: str) -> list[str]:
    status, body = http_get(f"{base}/hls/{STREAM}/ai/index.m3u8")
    if status != 200:
        return []
    return [line for line in body.decode().splitlines() if line and not line.startswith("#")]


async def freeze_after_a_billed_second(control: str, victim: NodeProcess) -> dict[str, Any]:
    """Freezes ``victim`` just after it billed a second (so no payment to it is in flight:
    the gateway pays on a ``billed`` event); returns the ``swapped`` event that follows."""
    async with open_websocket_url(control) as ws:
        with trio.fail_after(20):
            while json.loads(await ws.get_message())["type"] != "billed":
                pass
        await trio.sleep(0.5)
        victim.proc.send_signal(signal.SIGSTOP)
        with trio.fail_after(45):
            while True:
                event = json.loads(await ws.get_message())
                assert event["type"] != "stopped", event
                if event["type"] == "swapped":
                    return dict(event)


def test_a_swap_in_a_paid_network_keeps_the_money_exact(paid_pair: PaidPair) -> None:
    net = paid_pair
    base = net.gateway.url("http")
    services = {s.service for s in net.sellers}

    def offered() -> bool:
        pool = http_json(f"{base}/api/status")["orchestrators"]
        return {o["address"] for o in pool} == services and all(
            o["connected"] and o["answered"] and o["refused"] == "" for o in pool
        )

    wait_for(offered, 45, "the gateway to find both orchestrators on chain and offer them work")
    cmd = push_command(f"{net.gateway.url('rtmp')}/live/{STREAM}", seconds=90, size="320x180")
    publisher = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    frozen: NodeProcess | None = None
    try:
        wait_for(
            lambda: STREAM in http_json(f"{base}/api/status").get("streams", {}),
            20,
            "the stream to go live",
        )
        status, answer = post_json(
            f"{base}/api/ai/{STREAM}", {"pipeline": "noop", "width": 128, "height": 128}
        )
        assert status == 201, answer
        wait_for(
            lambda: http_json(f"{base}/api/ai/{STREAM}")["seconds_billed"] >= 2,
            40,
            "two seconds of live AI billed",
        )
        old = http_json(f"{base}/api/ai/{STREAM}")["orchestrator"]
        pool = {o["address"]: o for o in http_json(f"{base}/api/status")["orchestrators"]}
        (transcoder,) = [a for a, o in pool.items() if o["jobs"] > 0 and a != old] or [None]
        assert transcoder is not None, f"the seeded draws put both sessions on {old}: {pool}"
        victim, survivor = net.seller(old), net.seller(transcoder)
        frozen = victim.node

        control = base.replace("http://", "ws://") + f"/api/ai/{STREAM}/control"
        swapped = trio.run(freeze_after_a_billed_second, control, victim.node)
        assert (swapped["old"], swapped["new"]) == (victim.service, survivor.service), swapped
        print(f"\npaid live AI swap ({swapped['reason']}): {swapped['gap_ms']} ms without AI")
        before = len(ai_segments(base))
        billed_by_victim = http_json(f"{base}/api/ai/{STREAM}")["seconds_billed"]
        wait_for(
            lambda: http_json(f"{base}/api/ai/{STREAM}")["seconds_billed"] >= billed_by_victim + 3,
            30,
            "three seconds billed by the new orchestrator",
        )
        wait_for(lambda: len(ai_segments(base)) > before, 20, "ai segments after the swap")
        assert delete(f"{base}/api/ai/{STREAM}") == 204
        final = wait_for(
            lambda: (s := http_json(f"{base}/api/ai/{STREAM}"))["settled"] and s,
            20,
            "the session to settle on the new orchestrator",
        )
    finally:
        publisher.kill()
        publisher.wait()
    wait_for(
        lambda: not http_json(f"{base}/api/status")["streams"][STREAM]["live"],
        30,
        "the stream to end (its last segments done)",
    )
    assert frozen is not None
    frozen.proc.send_signal(signal.SIGCONT)
    time.sleep(2.0)  # it reads what waited for it, and finds its control stream gone

    assert final["orchestrator"] == survivor.service and final["swaps"] == 1, final
    assert not list(fraction_strings(final)), final
    # The session's money: whole wei a second, so the whole wei are exact; the survivor
    # settled what the gateway counts (the live credit is that session's alone).
    seconds = final["seconds_billed"]
    assert wei(final["billed"]) == seconds * PRICE_PER_SECOND > 0, final
    assert final["orchestrator_balance"] is not None, final
    assert wei(final["credit"]) == wei(final["orchestrator_balance"]), final

    sent = payments_of(net.gateway)["gateway"]
    got = {s.service: payments_of(s.node) for s in net.sellers}
    for service, facts in got.items():
        print(
            f"orchestrator {service}: {facts['tickets_received']} tickets, "
            f"{wei(facts['ev_received'])} wei received, {wei(facts['billed'])} billed, "
            f"{wei(facts['balance'])} left"
        )
        assert facts["payments_refused"] == 0, (service, facts)
        # Its own ledger: credit left = EV received - billed (each rounded down).
        assert wei(facts["ev_received"]) - wei(facts["billed"]) - wei(facts["balance"]) in (0, 1)
    # Every ticket sent was received, the frozen orchestrator's too: nothing was lost with it.
    assert sent["tickets_sent"] == sum(f["tickets_received"] for f in got.values()) > 0
    received = [wei(f["ev_received"]) for f in got.values()]
    assert 0 <= wei(sent["ev_sent"]) - sum(received) <= len(received) - 1

    def credits(service: str) -> list[int]:
        return [wei(c) for k, c in sent["credit"].items() if k.startswith(f"{service}/")]

    # The survivor and the gateway agree on its credit: EV paid minus billed, transcoding and
    # the live session together (whole wei each: a sum of n is at most n - 1 below).
    mine = credits(survivor.service)
    assert 0 <= wei(got[survivor.service]["balance"]) - sum(mine) <= max(len(mine) - 1, 0)
    # The frozen one could not settle; it kept no more than the gateway counts it holds.
    theirs = credits(victim.service)
    assert wei(got[victim.service]["balance"]) <= sum(theirs) + max(len(theirs) - 1, 0)
