"""Unbonding locks on a real EVM: unbond, rebond, rebondFromUnbonded and withdrawStake with
Livepeer's selectors and rules, driven through the chain client on the embedded dev chain.

One dev chain per module (10-block rounds, an unbonding period of 2 rounds); each test runs on a
snapshot of it, reverted afterwards, with clients made fresh for it. ORCH bonds to itself and
registers; DELEGATOR bonds to ORCH.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hexbytes import HexBytes
from web3.logs import DISCARD

from payments.chain import ChainClient, ChainError, DevChain, UnbondingLock
from payments.chain.contracts import ProtocolParameters, contract_at, load_artifact
from tests.payments.test_chain_client import addr
from tests.payments.test_contracts_build import canonical_type, selectors

PARAMETERS = ProtocolParameters(
    round_length=10,
    unlock_period=2,
    ticket_validity_period=2,
    num_active_transcoders=2,
    unbonding_period=2,
)
ETH = 10**18
PENDING, BONDED, UNBONDED = 0, 1, 2

# From Livepeer's BondingManager bindings (go-livepeer eth/contracts/bondingManager.go).
LIVEPEER_SELECTORS = {
    "bond(uint256,address)": "b78d27dc",
    "unbond(uint256)": "27de9e32",
    "rebond(uint256)": "eaffb3f9",
    "rebondFromUnbonded(address,uint256)": "3a080e93",
    "withdrawStake(uint256)": "25d5971f",
    "getDelegator(address)": "a64ad595",
    "getDelegatorUnbondingLock(address,uint256)": "412f83b6",
    "isValidUnbondingLock(address,uint256)": "0fd02fc1",
    "delegatorStatus(address)": "1544fc67",
}
# Livepeer's events (protocol contracts/bonding/IBondingManager.sol), by canonical signature.
LIVEPEER_EVENTS = {
    "Unbond(address,address,uint256,uint256,uint256)": ["delegate", "delegator"],
    "Rebond(address,address,uint256,uint256)": ["delegate", "delegator"],
    "WithdrawStake(address,uint256,uint256,uint256)": ["delegator"],
}


@pytest.fixture(scope="module")
def module_chain() -> DevChain:
    return DevChain.start(parameters=PARAMETERS, accounts=2, funds=100 * ETH)


@pytest.fixture
def dev(module_chain: DevChain) -> Iterator[DevChain]:
    snapshot = module_chain.tester.take_snapshot()
    yield module_chain
    module_chain.tester.revert_to_snapshot(snapshot)


@pytest.fixture
def orch(dev: DevChain) -> ChainClient:
    client = dev.client(dev.keys[0])
    client.bond(3 * ETH)
    client.register(0, 0)
    return client


@pytest.fixture
def delegator(dev: DevChain, orch: ChainClient) -> ChainClient:
    client = dev.client(dev.keys[1])
    client.bond(ETH, addr(orch))
    return client


def bonding(dev: DevChain, function: str, *args: Any) -> Any:
    contract = contract_at(dev.w3, "BondingManager", dev.addresses["BondingManager"])
    return getattr(contract.functions, function)(*args).call()


def events(dev: DevChain, tx_hash: str, event: str) -> list[dict[str, Any]]:
    contract = contract_at(dev.w3, "BondingManager", dev.addresses["BondingManager"])
    receipt = dev.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    logs = getattr(contract.events, event)().process_receipt(receipt, errors=DISCARD)
    return [dict(log["args"]) for log in logs]


def gas_cost(dev: DevChain, tx_hash: str) -> int:
    receipt = dev.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


@pytest.mark.parametrize(("signature", "selector"), LIVEPEER_SELECTORS.items())
def test_abi_keeps_livepeers_unbonding_selectors(signature: str, selector: str) -> None:
    assert selectors("BondingManager").get(signature) == selector


def test_events_keep_livepeers_signatures_and_indexed_fields() -> None:
    found = {}
    for entry in load_artifact("BondingManager").abi:
        if entry["type"] == "event":
            types = ",".join(canonical_type(i) for i in entry["inputs"])
            indexed = [i["name"] for i in entry["inputs"] if i["indexed"]]
            found[f"{entry['name']}({types})"] = indexed
    for signature, indexed in LIVEPEER_EVENTS.items():
        assert found.get(signature) == indexed, signature


def test_unbond_makes_a_lock_that_withdraw_stake_pays_out_after_the_period(
    dev: DevChain, orch: ChainClient, delegator: ChainClient
) -> None:
    me = addr(delegator)
    round_ = delegator.current_round()
    first = delegator.unbond(ETH // 4)
    second = delegator.unbond(ETH // 2)
    withdraw_round = round_ + PARAMETERS.unbonding_period
    assert first == UnbondingLock(id=0, amount=ETH // 4, withdraw_round=withdraw_round)
    assert second == UnbondingLock(id=1, amount=ETH // 2, withdraw_round=withdraw_round)
    assert delegator.unbonding_locks(me) == [first, second]
    assert delegator.bonded_amount(me) == ETH // 4
    assert orch.transcoder_stake(addr(orch)) == 3 * ETH + ETH // 4
    assert bonding(dev, "getDelegator", me)[6] == 2  # nextUnbondingLockId
    assert bonding(dev, "isValidUnbondingLock", me, 1)
    assert not bonding(dev, "isValidUnbondingLock", me, 2)

    before = delegator.balance(me)
    with pytest.raises(ChainError) as early:
        delegator.withdraw_stake(0)
    assert early.value.reason == "withdraw round must be before or equal to the current round"
    assert delegator.balance(me) == before, "a refused write is refused before it is sent"

    dev.mine_to_round(withdraw_round)
    assert first.withdrawable(delegator.current_round())
    tx = delegator.withdraw_stake(0)
    assert delegator.balance(me) == before + ETH // 4 - gas_cost(dev, tx)
    assert events(dev, tx, "WithdrawStake") == [
        {"delegator": me, "unbondingLockId": 0, "amount": ETH // 4, "withdrawRound": withdraw_round}
    ]
    assert delegator.unbonding_locks(me) == [second]
    assert delegator.unbonding_lock(me, 0) is None
    with pytest.raises(ChainError) as again:
        delegator.withdraw_stake(0)
    assert again.value.reason == "invalid unbonding lock ID"


def test_rebond_cancels_a_lock_and_bonds_it_back_to_the_delegate(
    dev: DevChain, orch: ChainClient, delegator: ChainClient
) -> None:
    me, delegate = addr(delegator), addr(orch)
    total = bonding(dev, "getTotalBonded")
    minter = delegator.balance(dev.addresses["Minter"])
    lock = delegator.unbond(ETH // 2)
    assert orch.transcoder_stake(delegate) == 3 * ETH + ETH // 2

    tx = delegator.rebond(lock.id)
    assert events(dev, tx, "Rebond") == [
        {"delegate": delegate, "delegator": me, "unbondingLockId": 0, "amount": ETH // 2}
    ]
    assert delegator.unbonding_locks(me) == []
    assert bonding(dev, "getDelegatorUnbondingLock", me, 0) == [0, 0]
    assert delegator.bonded_amount(me) == ETH
    assert orch.transcoder_stake(delegate) == 4 * ETH
    assert bonding(dev, "getTotalBonded") == total
    assert delegator.balance(dev.addresses["Minter"]) == minter, "the stake never left"
    with pytest.raises(ChainError) as gone:
        delegator.rebond(lock.id)
    assert gone.value.reason == "invalid unbonding lock ID"
    dev.mine_to_round(lock.withdraw_round)
    with pytest.raises(ChainError) as withdrawn:
        delegator.withdraw_stake(lock.id)
    assert withdrawn.value.reason == "invalid unbonding lock ID"


def test_after_unbonding_everything_only_rebond_from_unbonded_bonds_again(
    dev: DevChain, orch: ChainClient
) -> None:
    me = addr(orch)
    dev.mine_to_round(orch.current_round() + 1)
    assert bonding(dev, "delegatorStatus", me) == BONDED
    lock = orch.unbond(3 * ETH)
    assert bonding(dev, "delegatorStatus", me) == UNBONDED
    assert not orch.is_registered_transcoder(me), "all of its own bond gone: it resigned"
    assert orch.delegate_of(me) is None
    with pytest.raises(ChainError) as bonded_only:
        orch.rebond(lock.id)
    assert bonded_only.value.reason == "caller must be bonded"
    with pytest.raises(ChainError) as nobody:
        orch.rebond_from_unbonded("0x" + "00" * 20, lock.id)
    assert nobody.value.reason == "delegate is the zero address"

    round_ = orch.current_round()
    orch.rebond_from_unbonded(me, lock.id)
    assert orch.bonded_amount(me) == orch.transcoder_stake(me) == 3 * ETH
    assert orch.delegate_of(me) == me
    assert bonding(dev, "getDelegator", me)[4] == round_ + 1  # startRound
    assert bonding(dev, "delegatorStatus", me) == PENDING
    assert not orch.is_registered_transcoder(me), "registering again is its own step"
    with pytest.raises(ChainError) as unbonded_only:
        orch.rebond_from_unbonded(me, lock.id)
    assert unbonded_only.value.reason == "caller must be unbonded"
    dev.mine_to_round(round_ + 1)
    assert bonding(dev, "delegatorStatus", me) == BONDED


def test_unbonding_more_than_is_bonded_changes_nothing(
    dev: DevChain, delegator: ChainClient
) -> None:
    me = addr(delegator)
    before = (delegator.balance(me), delegator.bonded_amount(me), bonding(dev, "getDelegator", me))
    with pytest.raises(ChainError) as too_much:
        delegator.unbond(ETH + 1)
    assert too_much.value.reason == "amount is greater than bonded amount"
    with pytest.raises(ChainError) as nothing:
        delegator.unbond(0)
    assert nothing.value.reason == "unbond amount must be greater than 0"
    after = (delegator.balance(me), delegator.bonded_amount(me), bonding(dev, "getDelegator", me))
    assert after == before
    assert delegator.unbonding_locks(me) == []


def test_a_delegator_that_never_bonded_has_no_locks(dev: DevChain) -> None:
    stranger = dev.client(dev.keys[1])
    me = addr(stranger)
    assert stranger.unbonding_locks(me) == []
    assert bonding(dev, "delegatorStatus", me) == UNBONDED
    with pytest.raises(ChainError) as unbond:
        stranger.unbond(1)
    assert unbond.value.reason == "caller must be bonded"
