"""An orchestrator killed between winning a ticket and redeeming it loses nothing: after the
restart the ticket is redeemed on the chain exactly once (a real ``lpstream chain`` process,
a real SIGKILL)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from payments.chain.client import ChainClient
from payments.chain.devchain import dev_key
from payments.redeemer import Redeemer
from payments.store import TicketStatus, TicketStore
from tests.e2e.nodes import NodeProcess, wait_for

pytestmark = pytest.mark.slow

ETH = 10**18

WIN_AND_DIE = textwrap.dedent(
    """
    import os, signal, sys
    from payments.chain.client import ChainClient
    from payments.chain.devchain import dev_key
    from payments.pm import Ticket, WinningTicket, recipient_rand_hash, sign_ticket
    from payments.store import TicketStore

    url, controller, store_path = sys.argv[1:4]
    gateway, orchestrator = dev_key(0), dev_key(1)
    snapshot = ChainClient.connect(url, controller=controller, key=orchestrator).snapshot()
    rand = 0x1234567890
    ticket = Ticket(
        recipient=orchestrator.address,
        sender=gateway.address,
        face_value=3 * 10**15,
        win_prob=2**256 - 1,
        sender_nonce=1,
        recipient_rand_hash=recipient_rand_hash(rand),
        creation_round=snapshot.last_initialized_round,
        creation_round_block_hash=snapshot.round_block_hash,
    )
    winner = WinningTicket(
        ticket=ticket,
        signature=sign_ticket(gateway.private_key, ticket),
        recipient_rand=rand,
        expiration_block=snapshot.latest_block + 5,
    )
    TicketStore(store_path).add(winner)  # durable when it returns: the payment may be acked
    print("stored", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # dies before any redemption
    """
)


def test_a_ticket_won_before_a_crash_is_redeemed_once_after_restart(tmp_path: Path) -> None:
    chain = NodeProcess(
        ["chain", "--rpc-addr=127.0.0.1:0", "--block-time=0.1", "--round-length=100"],
        name="chain",
        log_dir=tmp_path,
    )
    try:
        chain.wait_ready(timeout=60)
        text = "\n".join(chain.lines)
        url = re.search(r"chain RPC: (\S+)", text)
        controller = re.search(r"controller: (0x[0-9a-fA-F]{40})", text)
        assert url and controller, text
        gateway_key, orchestrator_key = dev_key(0), dev_key(1)
        gateway = ChainClient.connect(url.group(1), controller=controller.group(1), key=gateway_key)
        orchestrator = ChainClient.connect(
            url.group(1), controller=controller.group(1), key=orchestrator_key
        )
        gateway.fund_deposit_and_reserve(ETH, ETH)
        orchestrator.bond(ETH)
        orchestrator.register(0, 100)
        deposit_before = gateway.sender_info(gateway_key.address).deposit

        store_path = tmp_path / "tickets.sqlite"
        crashed = subprocess.run(
            [sys.executable, "-c", WIN_AND_DIE, url.group(1), controller.group(1), str(store_path)],
            capture_output=True,
            timeout=60,
        )
        assert crashed.returncode == -9 and crashed.stdout == b"stored\n", crashed.stderr

        # The restarted orchestrator finds the ticket and redeems it once its parameters expire.
        def restart_and_redeem() -> None:
            with TicketStore(store_path) as store:
                assert store.statistics().pending <= 1
                redeemer = Redeemer(
                    store=store, chain=orchestrator, limiter=trio.CapacityLimiter(1)
                )
                trio.run(redeemer.redeem_due)

        def redeemed() -> bool:
            restart_and_redeem()
            with TicketStore(store_path) as store:
                return store.statistics().redeemed == 1

        wait_for(redeemed, 30, "the ticket to be redeemed after the restart")
        restart_and_redeem()  # and a second restart redeems nothing more
        with TicketStore(store_path) as store:
            (only,) = store.tickets()
            assert only.status is TicketStatus.REDEEMED
        face_value = 3 * 10**15
        assert orchestrator.pending_fees(orchestrator_key.address) == face_value
        assert gateway.sender_info(gateway_key.address).deposit == deposit_before - face_value
    finally:
        chain.stop()
