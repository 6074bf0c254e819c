"""A dev keystore used against ``lpstream chain --chain-id <other>`` is refused: by the account
commands and by a paid node, each a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.e2e.nodes import NodeProcess

ROOT = Path(__file__).resolve().parents[2]
LPSTREAM = [sys.executable, "-m", "lpstream"]
OTHER_CHAIN_ID = 42161


@attrs.frozen
class OtherChain:
    url: str
    controller: str
    keys: Path


@pytest.fixture(scope="module")
def other_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtherChain]:
    folder = tmp_path_factory.mktemp("other-chain")
    node = NodeProcess(
        [
            "chain",
            "--rpc-addr=127.0.0.1:0",
            "--accounts=2",
            f"--chain-id={OTHER_CHAIN_ID}",
            f"--keystore-dir={folder / 'keys'}",
        ],
        name="chain",
        log_dir=folder,
    )
    try:
        node.wait_ready()
        text = "\n".join(node.lines)
        controller = re.search(r"^controller: (0x[0-9a-fA-F]{40})$", text, re.M)
        assert controller, text
        assert f"chain id: {OTHER_CHAIN_ID}" in node.lines
        yield OtherChain(node.url("http"), controller.group(1), folder / "keys")
    finally:
        node.stop()


def lpstream(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LPSTREAM_")}
    return subprocess.run(
        [*LPSTREAM, *args], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )


def test_an_account_command_refuses_a_dev_keystore_on_another_chain(
    other_chain: OtherChain,
) -> None:
    result = lpstream(
        "account",
        "status",
        f"--eth-url={other_chain.url}",
        f"--controller={other_chain.controller}",
        f"--keystore={other_chain.keys / 'dev-1.json'}",
        f"--passphrase-file={other_chain.keys / 'dev-1.passphrase'}",
    )
    assert result.returncode == 1, result.stdout
    assert "is lpstream's dev account 1" in result.stderr
    assert f"refused on chain id {OTHER_CHAIN_ID}" in result.stderr
    # Reading the account by address needs no key and still works.
    address = re.search(r"(0x[0-9a-fA-F]{40}) is lpstream's dev account", result.stderr)
    assert address
    read = lpstream(
        "account",
        "status",
        f"--eth-url={other_chain.url}",
        f"--controller={other_chain.controller}",
        f"--address={address.group(1)}",
    )
    assert read.returncode == 0, read.stderr


def test_a_paid_node_refuses_a_dev_keystore_on_another_chain(
    other_chain: OtherChain, tmp_path: Path
) -> None:
    result = lpstream(
        "orchestrator",
        f"--eth-url={other_chain.url}",
        f"--controller={other_chain.controller}",
        f"--keystore={other_chain.keys / 'dev-0.json'}",
        f"--passphrase-file={other_chain.keys / 'dev-0.passphrase'}",
        "--orch-secret=s",
        "--service-addr=127.0.0.1:0",
        f"--data-dir={tmp_path}",
    )
    assert result.returncode != 0
    assert "is lpstream's dev account 0" in result.stderr
    assert f"refused on chain id {OTHER_CHAIN_ID}" in result.stderr
