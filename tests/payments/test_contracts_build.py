"""The compiled contracts: committed artifacts match their sources, and the ABI keeps Livepeer's
selectors (PAYMENTS.md), so one client speaks to lpstream's contracts and to Livepeer's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from payments.chain.contracts import CONTRACT_NAMES, load_artifact
from payments.chain.contracts import build as contracts_build
from payments.pm import keccak256

TICKET = "(address,address,uint256,uint256,uint256,bytes32,bytes)"

# PAYMENTS.md's table, plus the calls the TicketBroker makes to the BondingManager and the ones
# a client makes to the rest, checked against selectors from Livepeer's bindings.
LIVEPEER_SELECTORS = {
    "TicketBroker": {
        f"redeemWinningTicket({TICKET},bytes,uint256)": "ec8b3cb6",
        f"batchRedeemWinningTickets({TICKET}[],bytes[],uint256[])": "d01b808e",
        "fundDeposit()": "6caa736b",
        "fundReserve()": "6f9c3c8f",
        "fundDepositAndReserve(uint256,uint256)": "511f4073",
        "unlock()": "a69df4b5",
        "cancelUnlock()": "c2c4c2c8",
        "withdraw()": "3ccfd60b",
        "getSenderInfo(address)": "e1a589da",
        "usedTickets(bytes32)": "59a515ba",
        "claimableReserve(address,address)": "81779f38",
    },
    "BondingManager": {
        "updateTranscoderWithFees(address,uint256,uint256)": "3aeb512c",
    },
}


def canonical_type(param: dict[str, Any]) -> str:
    kind: str = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def selectors(name: str) -> dict[str, str]:
    """Each function's canonical signature and its selector, computed from the ABI."""
    out = {}
    for entry in load_artifact(name).abi:
        if entry["type"] == "function":
            signature = f"{entry['name']}({','.join(canonical_type(p) for p in entry['inputs'])})"
            out[signature] = keccak256(signature.encode()).hex()[:8]
    return out


@pytest.mark.parametrize(
    ("contract", "signature", "selector"),
    [(c, sig, sel) for c, table in LIVEPEER_SELECTORS.items() for sig, sel in table.items()],
)
def test_abi_keeps_livepeers_selector(contract: str, signature: str, selector: str) -> None:
    assert selectors(contract).get(signature) == selector


def test_ticket_broker_functions_are_payable_where_livepeers_are() -> None:
    mutability = {
        e["name"]: e["stateMutability"]
        for e in load_artifact("TicketBroker").abi
        if e["type"] == "function"
    }
    payable = {"fundDeposit", "fundReserve", "fundDepositAndReserve", "fundDepositAndReserveFor"}
    assert {name for name, m in mutability.items() if m == "payable"} == payable
    assert mutability["unlockPeriod"] == mutability["ticketValidityPeriod"] == "view"


def test_get_sender_info_returns_livepeers_two_structs() -> None:
    (entry,) = [e for e in load_artifact("TicketBroker").abi if e.get("name") == "getSenderInfo"]
    assert [canonical_type(o) for o in entry["outputs"]] == ["(uint256,uint256)"] * 2
    assert [c["name"] for c in entry["outputs"][0]["components"]] == ["deposit", "withdrawRound"]
    assert [c["name"] for c in entry["outputs"][1]["components"]] == [
        "fundsRemaining",
        "claimedInCurrentRound",
    ]


@pytest.fixture(scope="module")
def fresh() -> dict[str, str]:
    """The artifacts compiled now (a few seconds: compiled once for the module)."""
    return contracts_build.fresh_artifacts()


def test_committed_artifacts_match_a_fresh_compile(fresh: dict[str, str]) -> None:
    assert contracts_build.stale_artifacts(fresh) == [], "python -m payments.chain.contracts.build"


def test_check_command_passes_on_the_committed_artifacts(
    fresh: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contracts_build, "fresh_artifacts", lambda: fresh)
    assert contracts_build.main(["--check"]) == 0


def test_check_command_fails_on_a_stale_artifact(
    fresh: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in fresh:
        (tmp_path / name).write_text((contracts_build.BUILD_DIR / name).read_text())
    stale = json.loads((tmp_path / "Minter.json").read_text())
    stale["bytecode"] = stale["bytecode"][:-2] + "00"
    (tmp_path / "Minter.json").write_text(contracts_build.artifact_text(stale))
    (tmp_path / "JobsManager.json").write_text("{}")
    assert contracts_build.stale_artifacts(fresh, tmp_path) == [
        "stale or missing: build/Minter.json",
        "no source for: build/JobsManager.json",
    ]
    monkeypatch.setattr(contracts_build, "fresh_artifacts", lambda: fresh)
    monkeypatch.setattr(contracts_build, "BUILD_DIR", tmp_path)
    assert contracts_build.main(["--check"]) == 1
    assert "build/Minter.json" in capsys.readouterr().err


def test_every_source_has_a_loadable_artifact() -> None:
    assert [p.stem for p in contracts_build.sources()] == sorted(CONTRACT_NAMES)
    for name in CONTRACT_NAMES:
        artifact = load_artifact(name)
        assert artifact.name == name
        assert artifact.bytecode.startswith("0x")
        assert artifact.compiler == "vyper-0.4.3"
    with pytest.raises(KeyError):
        load_artifact("JobsManager")
