"""The public dev accounts' keys are refused on any chain but the embedded dev chain."""

from __future__ import annotations

import pytest

from payments.chain import DEV_CHAIN_ID, DevChain, DevKeyError, dev_account_index, dev_key
from payments.chain.contracts import ProtocolParameters
from payments.keys import NodeKey

FAST = ProtocolParameters(round_length=100)
ARBITRUM_ONE = 42161


def test_the_public_dev_accounts_are_recognised_by_address() -> None:
    assert dev_account_index(dev_key(0).address) == 0
    assert dev_account_index(dev_key(99).address) == 99
    assert dev_account_index(dev_key(0, seed="mine").address) is None  # not the public seed
    assert dev_account_index(NodeKey.from_private_key(b"\x07" * 32).address) is None


@pytest.fixture(scope="module")
def other_chain() -> DevChain:
    return DevChain.start(parameters=FAST, accounts=1, chain_id=ARBITRUM_ONE)


def test_a_dev_key_is_refused_on_another_chain_id_saying_why(other_chain: DevChain) -> None:
    assert other_chain.w3.eth.chain_id == ARBITRUM_ONE
    with pytest.raises(DevKeyError) as refused:
        other_chain.client(dev_key(0))
    message = str(refused.value)
    assert dev_key(0).address in message and "dev account 0" in message
    assert f"chain id {ARBITRUM_ONE}" in message and str(DEV_CHAIN_ID) in message
    assert "anyone can spend from it" in message


def test_other_keys_and_read_only_clients_are_not_refused(other_chain: DevChain) -> None:
    own = NodeKey.from_private_key(b"\x07" * 32)
    assert other_chain.client(own).address == own.address
    assert other_chain.client().chain_id == ARBITRUM_ONE


def test_on_the_dev_chain_the_dev_keys_sign() -> None:
    chain = DevChain.start(parameters=FAST, accounts=1)
    assert chain.w3.eth.chain_id == DEV_CHAIN_ID
    assert chain.client(dev_key(0)).address == dev_key(0).address
