"""``lpstream account`` against a real ``lpstream chain`` process, and ``lpstream chain``'s rules.

The chain runs as the user runs it (``python -m lpstream chain``, on a free loopback port, with
its dev keystores written to a temporary folder); the account commands run in this process
through click's runner, with their flags from ``LPSTREAM_*`` variables as a user may set them.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner, Result

import lpstream.cli  # noqa: F401  (registers the account commands; importing them first is circular)
from lpstream.account import (
    account,
    chain,
    format_wei,
    parse_wei,
    write_dev_keystores,
)
from lpstream.config import is_loopback
from payments.chain.devchain import dev_key
from payments.keys import load_key, read_passphrase

ROOT = Path(__file__).resolve().parents[2]
ETH = 10**18


@attrs.frozen
class RunningChain:
    url: str
    controller: str
    keys: Path

    def env(self, account_index: int) -> dict[str, str]:
        """The ``LPSTREAM_*`` variables that point the account commands at dev account i."""
        return {
            "LPSTREAM_ETH_URL": self.url,
            "LPSTREAM_CONTROLLER": self.controller,
            "LPSTREAM_KEYSTORE": str(self.keys / f"dev-{account_index}.json"),
            "LPSTREAM_PASSPHRASE_FILE": str(self.keys / f"dev-{account_index}.passphrase"),
        }


@pytest.fixture(scope="module")
def running_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningChain]:
    keys = tmp_path_factory.mktemp("dev-keys")
    command = [
        sys.executable,
        "-m",
        "lpstream",
        "chain",
        "--rpc-addr",
        "127.0.0.1:0",
        "--block-time",
        "0.1",
        "--round-length",
        "5",
        "--accounts",
        "3",
        "--keystore-dir",
        str(keys),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LPSTREAM_")}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        lines = _read_until(proc, "lpstream chain ready", timeout=30)
        text = "\n".join(lines)
        url = re.search(r"^chain RPC: (\S+)$", text, re.M)
        controller = re.search(r"^controller: (0x[0-9a-fA-F]{40})$", text, re.M)
        assert url and controller, text
        yield RunningChain(url=url.group(1), controller=controller.group(1), keys=keys)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def _read_until(proc: subprocess.Popen[bytes], marker: str, *, timeout: float) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise AssertionError(f"no {marker!r} in time; got {lines}")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"lpstream chain exited ({proc.wait()}); got {lines}")
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            lines += [line.decode() for line in complete]
            if marker in lines:
                return lines


def run(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(account, args, env=env, catch_exceptions=False)


def status(chain_: RunningChain, index: int) -> dict[str, Any]:
    result = run(["status", "--json"], chain_.env(index))
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize(
    ("text", "wei"),
    [
        ("1000", 1000),
        ("0", 0),
        ("1.5eth", 3 * ETH // 2),
        ("1.5 ETH", 3 * ETH // 2),
        ("2gwei", 2 * 10**9),
        ("0.000000001ether", 10**9),
        (".5eth", ETH // 2),
        ("7wei", 7),
    ],
)
def test_amounts_are_wei_or_decimals_with_a_unit(text: str, wei: int) -> None:
    assert parse_wei(text) == wei


@pytest.mark.parametrize("text", ["", "-1", "1.5", "1.5wei", "1e18", "3 sats", "0.1gwei0"])
def test_amounts_that_are_not_whole_wei_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_wei(text)


def test_format_wei_is_exact() -> None:
    assert format_wei(3 * ETH // 2) == "1.5 ETH"
    assert format_wei(0) == "0 ETH"
    assert format_wei(1) == "0.000000000000000001 ETH"
    assert format_wei(2 * ETH) == "2 ETH"


def test_chain_refuses_a_non_loopback_address_without_allow_remote() -> None:
    result = CliRunner().invoke(chain, ["--rpc-addr", "0.0.0.0:8545"])
    assert result.exit_code == 2
    assert "--allow-remote" in result.output and "loopback" in result.output
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")


def test_dev_keystores_are_reused_when_they_hold_the_same_keys(tmp_path: Path) -> None:
    keys = [dev_key(0), dev_key(1)]
    first = write_dev_keystores(keys, tmp_path)
    again = write_dev_keystores(keys, tmp_path)
    assert first == again
    for address, keystore, passphrase_file in first:
        assert passphrase_file.stat().st_mode & 0o777 == 0o600
        assert keystore.stat().st_mode & 0o777 == 0o600
        assert load_key(keystore, read_passphrase(passphrase_file, prompt=False)).address == (
            address
        )
    with pytest.raises(Exception, match="another key"):
        write_dev_keystores([dev_key(1)], tmp_path)


def test_chain_writes_a_funded_keystore_per_dev_account(running_chain: RunningChain) -> None:
    for i in range(3):
        assert (running_chain.keys / f"dev-{i}.json").exists()
        assert status(running_chain, i)["balance"] == 1000 * ETH


def test_deposit_prints_the_transaction_and_status_shows_the_deposit(
    running_chain: RunningChain,
) -> None:
    result = run(["deposit", "1.5eth"], running_chain.env(0))
    assert result.exit_code == 0, result.output
    assert re.search(r"^sent 0x[0-9a-f]{64}, waiting for receipt…$", result.stdout, re.M)
    assert re.search(r"^mined in block \d+$", result.stdout, re.M)
    assert "deposit funded with 1.5 ETH" in result.stdout
    run(["reserve", "2eth"], running_chain.env(0))

    report = status(running_chain, 0)
    assert (report["deposit"], report["reserve"]) == (3 * ETH // 2, 2 * ETH)
    text = run(["status"], running_chain.env(0)).stdout
    assert re.search(r"^deposit: +1\.5 ETH \(1500000000000000000 wei\)$", text, re.M)


def test_unlock_then_withdraw_after_the_unlock_period(running_chain: RunningChain) -> None:
    env = running_chain.env(2)
    assert run(["deposit", "1eth"], env).exit_code == 0
    early = run(["withdraw"], env)
    assert early.exit_code == 1
    assert "withdraw reverted: no unlock request in progress" in early.output
    unlocked = run(["unlock"], env)
    assert unlocked.exit_code == 0 and "unlocking: withdraw from round" in unlocked.stdout
    assert run(["cancel-unlock"], env).exit_code == 0
    assert status(running_chain, 2)["withdraw_round"] == 0
    run(["unlock"], env)
    withdraw_round = status(running_chain, 2)["withdraw_round"]
    deadline = time.monotonic() + 20
    while status(running_chain, 2)["current_round"] < withdraw_round:
        assert time.monotonic() < deadline, "the chain's rounds do not advance"
        time.sleep(0.1)
    done = run(["withdraw"], env)
    assert done.exit_code == 0 and "withdrew 1 ETH" in done.stdout
    assert status(running_chain, 2)["deposit"] == 0


def test_bond_and_register_make_an_orchestrator(running_chain: RunningChain) -> None:
    env = running_chain.env(1)
    unbonded = run(["register"], env)
    assert unbonded.exit_code == 1 and "bond to itself first" in unbonded.output
    assert run(["bond", "2eth"], env).exit_code == 0
    result = run(["register", "--fee-share", "5", "--service-uri", "quic://127.0.0.1:8936"], env)
    assert result.exit_code == 0, result.output
    report = status(running_chain, 1)
    assert report["registered"] is True and report["stake"] == 2 * ETH
    assert report["service_uri"] == "quic://127.0.0.1:8936"


def test_errors_are_messages_not_tracebacks(running_chain: RunningChain) -> None:
    env = running_chain.env(0)
    no_passphrase: dict[str, str | None] = {**env, "LPSTREAM_PASSPHRASE_FILE": None}
    result = CliRunner().invoke(account, ["deposit", "1"], env=no_passphrase)
    assert result.exit_code == 1 and "no passphrase" in result.output
    wrong = run(["status", "--controller", "0x" + "11" * 20], env)
    assert wrong.exit_code == 1 and "no contract at controller address" in wrong.output
    bad = run(["deposit", "1.5"], env)
    assert bad.exit_code == 2 and "whole number of wei" in bad.output
