"""Deploys lpstream's protocol contracts and wires them through the Controller.

Blocking web3 calls: the node runs this on a thread (or against eth-tester in tests). Every
transaction is sent from ``owner``, which must be an account the node can sign for (an
eth-tester account, or a local node's unlocked one); ``owner`` also becomes the Controller's
owner, the protocol's governor.
"""

from __future__ import annotations

from typing import Any

import attrs
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract

from .artifacts import CONTRACT_NAMES, load_artifact

__all__ = ["DEFAULT_PARAMETERS", "ProtocolParameters", "contract_at", "contract_id", "deploy_all"]


@attrs.frozen(kw_only=True)
class ProtocolParameters:
    """The protocol's tunables, set at deployment (the owner can change them later)."""

    round_length: int = 20
    """Blocks per round (RoundsManager)."""
    unlock_period: int = 2
    """Rounds between a sender's unlock() and its withdraw() (TicketBroker)."""
    ticket_validity_period: int = 2
    """Rounds a ticket stays redeemable after its creation round (TicketBroker)."""
    num_active_transcoders: int = 10
    """Orchestrators in each round's active set, at most 100 (BondingManager)."""
    unbonding_period: int = 2
    """Rounds between unbond() and withdrawStake() (BondingManager)."""


DEFAULT_PARAMETERS = ProtocolParameters()
"""Dev-chain defaults: 20-block rounds, Livepeer's validity period of 2 rounds."""


def contract_id(name: str) -> bytes:
    """The Controller key of a contract: keccak256 of its name."""
    return bytes(Web3.keccak(text=name))


def contract_at(w3: Web3, name: str, address: str) -> Contract:
    """A web3 handle on the deployed contract ``name`` at ``address``."""
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name).abi)


def _transact(w3: Web3, call: Any, owner: ChecksumAddress) -> Any:
    receipt = w3.eth.wait_for_transaction_receipt(call.transact({"from": owner}))
    if receipt["status"] != 1:  # pragma: no cover - a revert raises before it is mined
        raise RuntimeError(f"transaction {receipt['transactionHash'].hex()} failed")
    return receipt


def deploy_all(
    w3: Web3, owner: str, parameters: ProtocolParameters = DEFAULT_PARAMETERS
) -> dict[str, ChecksumAddress]:
    """Deploys every contract from ``owner`` and registers each with the Controller.

    Returns:
        The address of each contract by name: ``Controller``, ``Minter``, ``RoundsManager``,
        ``BondingManager``, ``TicketBroker``, ``ServiceRegistry`` (``CONTRACT_NAMES``).
    """
    sender = Web3.to_checksum_address(owner)
    p = parameters
    constructor_args: dict[str, tuple[Any, ...]] = {
        "Controller": (),
        "Minter": (),
        "RoundsManager": (p.round_length,),
        "BondingManager": (p.num_active_transcoders, p.unbonding_period),
        "TicketBroker": (p.unlock_period, p.ticket_validity_period),
        "ServiceRegistry": (),
    }
    addresses: dict[str, ChecksumAddress] = {}
    for name in CONTRACT_NAMES:
        artifact = load_artifact(name)
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        args = constructor_args[name]
        if name != "Controller":
            args = (addresses["Controller"], *args)
        receipt = _transact(w3, factory.constructor(*args), sender)
        addresses[name] = Web3.to_checksum_address(receipt["contractAddress"])
    controller = contract_at(w3, "Controller", addresses["Controller"])
    for name in CONTRACT_NAMES[1:]:
        call = controller.functions.setContractInfo(contract_id(name), addresses[name], bytes(20))
        _transact(w3, call, sender)
    return addresses
