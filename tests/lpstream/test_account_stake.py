"""``lpstream account unbond``, ``rebond`` and ``withdraw-stake`` against a real ``lpstream
chain`` process, and the unbonding locks ``lpstream account status`` lists.

The chain runs as the user runs it, with 10-block rounds of 0.4 s blocks (4 s a round; the
unbonding period is the dev chain's 2 rounds), so a lock made now is not withdrawable for at
least 4 s — time enough for the checks that it is not, on a loaded machine — and is
withdrawable within about 12 s. Each test uses a dev account of its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import Result
from web3 import HTTPProvider, Web3

from payments.chain.contracts import DEFAULT_PARAMETERS
from tests.lpstream.test_account_cli import ROOT, RunningChain, _read_until, run, status

ETH = 10**18
ROUND_SECONDS = 10 * 0.4


@pytest.fixture(scope="module")
def stake_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningChain]:
    keys = tmp_path_factory.mktemp("dev-keys")
    command = [sys.executable, "-m", "lpstream", "chain", "--rpc-addr", "127.0.0.1:0"]
    command += ["--block-time", "0.4", "--round-length", "10", "--accounts", "3"]
    command += ["--keystore-dir", str(keys)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LPSTREAM_")}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        text = "\n".join(_read_until(proc, "lpstream chain ready", timeout=30))
        url = re.search(r"^chain RPC: (\S+)$", text, re.M)
        controller = re.search(r"^controller: (0x[0-9a-fA-F]{40})$", text, re.M)
        assert url and controller, text
        yield RunningChain(url=url.group(1), controller=controller.group(1), keys=keys)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def ok(args: list[str], env: dict[str, str]) -> Result:
    result = run(args, env)
    assert result.exit_code == 0, result.output
    return result


def tx_cost(chain: RunningChain, result: Result) -> int:
    """The gas a command's one transaction cost, from its receipt."""
    (tx_hash,) = re.findall(r"^sent (0x[0-9a-f]{64}), waiting", result.stdout, re.M)
    receipt = Web3(HTTPProvider(chain.url)).eth.get_transaction_receipt(tx_hash)
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def unchanging(report: dict[str, Any]) -> dict[str, Any]:
    """A status report without what moves on its own (the chain's head and round)."""
    return {k: v for k, v in report.items() if k not in ("current_round", "latest_block")}


def test_unbond_then_withdraw_stake_after_the_unbonding_period(stake_chain: RunningChain) -> None:
    env = stake_chain.env(0)
    ok(["bond", "3eth"], env)
    unbonded = ok(["unbond", "1eth"], env)
    assert re.search(r"^sent 0x[0-9a-f]{64}, waiting for receipt…$", unbonded.stdout, re.M)
    assert re.search(r"^mined in block \d+$", unbonded.stdout, re.M)
    said = re.search(
        r"^unbonding 1 ETH: lock 0, withdraw-stake from round (\d+) \(now round (\d+)\)$",
        unbonded.stdout,
        re.M,
    )
    assert said, unbonded.stdout
    withdraw_round, now = int(said.group(1)), int(said.group(2))
    assert withdraw_round == now + DEFAULT_PARAMETERS.unbonding_period

    report = status(stake_chain, 0)
    assert report["bonded"] == 2 * ETH
    assert report["unbonding_locks"] == [
        {"id": 0, "amount": ETH, "withdraw_round": withdraw_round, "withdrawable": False}
    ]
    text = ok(["status"], env).stdout
    assert re.search(
        rf"^unbonding: +lock 0: 1 ETH \({ETH} wei\), withdrawable from round {withdraw_round}$",
        text,
        re.M,
    )

    early = run(["withdraw-stake", "0"], env)
    assert early.exit_code == 1
    assert f"lock 0 can be withdrawn from round {withdraw_round}; it is round" in early.output
    assert "sent 0x" not in early.output
    assert unchanging(status(stake_chain, 0)) == unchanging(report)

    deadline = time.monotonic() + 4 * ROUND_SECONDS
    while status(stake_chain, 0)["current_round"] < withdraw_round:
        assert time.monotonic() < deadline, "the chain's rounds do not advance"
        time.sleep(0.1)
    ready = status(stake_chain, 0)
    assert ready["unbonding_locks"][0]["withdrawable"] is True
    assert "withdrawable now" in ok(["status"], env).stdout
    done = ok(["withdraw-stake", "0"], env)
    assert "withdrew 1 ETH of stake (lock 0)" in done.stdout
    after = status(stake_chain, 0)
    assert after["balance"] == ready["balance"] + ETH - tx_cost(stake_chain, done)
    assert after["unbonding_locks"] == [] and after["bonded"] == 2 * ETH
    assert re.search(r"^unbonding: +\(none\)$", ok(["status"], env).stdout, re.M)


def test_rebond_cancels_an_unbonding_lock(stake_chain: RunningChain) -> None:
    env = stake_chain.env(1)
    ok(["bond", "2eth"], env)
    address = status(stake_chain, 1)["address"]
    ok(["unbond", "0.5eth"], env)
    assert [lock["id"] for lock in status(stake_chain, 1)["unbonding_locks"]] == [0]
    rebonded = ok(["rebond", "0"], env)
    assert re.search(r"^mined in block \d+$", rebonded.stdout, re.M)
    assert f"rebonded 0.5 ETH from lock 0 to {address}" in rebonded.stdout
    report = status(stake_chain, 1)
    assert report["unbonding_locks"] == [] and report["bonded"] == 2 * ETH
    gone = run(["rebond", "0"], env)
    assert gone.exit_code == 1 and f"{address} has no unbonding lock 0 (none pending" in gone.output

    # Everything unbonded: the lock is bonded back to the account itself (rebondFromUnbonded).
    ok(["unbond", "2eth"], env)
    assert status(stake_chain, 1)["bonded"] == 0
    elsewhere = run(["rebond", "1", "--to", "0x" + "11" * 20], env)
    assert elsewhere.exit_code == 0, elsewhere.output
    assert f"rebonded 2 ETH from lock 1 to 0x{'11' * 20}" in elsewhere.stdout
    report = status(stake_chain, 1)
    assert report["bonded"] == 2 * ETH and report["unbonding_locks"] == []


def test_mistakes_are_clear_errors_and_change_nothing(stake_chain: RunningChain) -> None:
    env = stake_chain.env(2)
    ok(["bond", "1eth"], env)
    ok(["unbond", "0.25eth"], env)
    before = status(stake_chain, 2)
    address = before["address"]

    too_much = run(["unbond", "5eth"], env)
    assert too_much.exit_code == 1
    assert f"cannot unbond 5 ETH: {address} has 0.75 ETH bonded" in too_much.output
    unknown = run(["withdraw-stake", "9"], env)
    assert unknown.exit_code == 1
    assert f"{address} has no unbonding lock 9 (pending: 0;" in unknown.output
    assert run(["rebond", "9"], env).exit_code == 1
    zero = run(["unbond", "0"], env)
    assert zero.exit_code == 2 and "unbond more than 0" in zero.output
    negative = run(["withdraw-stake", "-1"], env)
    assert negative.exit_code == 2
    bonded_elsewhere = run(["rebond", "0", "--to", "0x" + "22" * 20], env)
    assert bonded_elsewhere.exit_code == 1 and "a rebond goes back there" in bonded_elsewhere.output
    for result in (too_much, unknown, zero, negative, bonded_elsewhere):
        assert "sent 0x" not in result.output and "Traceback" not in result.output
    assert unchanging(status(stake_chain, 2)) == unchanging(before)
    listed = json.loads(ok(["status", "--json"], env).stdout)["unbonding_locks"]
    assert [(lock["id"], lock["amount"]) for lock in listed] == [(0, ETH // 4)]
