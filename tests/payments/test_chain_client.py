"""The chain client against a real EVM: the embedded dev chain (eth-tester + py-evm).

One dev chain per module (10-block rounds); each test runs on a snapshot of it, reverted
afterwards, with clients made fresh for it (a client counts its nonces itself). Keys: SENDER
funds tickets, ORCH bonds and registers, OTHER is a bystander.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account import Account
from hexbytes import HexBytes
from web3 import Web3

from payments.chain.client import REDEEM_GAS, ChainClient, ChainError
from payments.chain.contracts import ProtocolParameters
from payments.chain.devchain import DevChain
from payments.keys import NodeKey
from payments.pm import (
    MAX_WIN_PROB,
    Ticket,
    WinningTicket,
    recipient_rand_hash,
    sign_ticket,
    ticket_hash,
)
from payments.redeemer import NoBlockHashError, RedemptionChain, RedemptionError, TicketUsedError
from payments.store import StoredTicket, TicketStatus

PARAMETERS = ProtocolParameters(
    round_length=10,
    unlock_period=2,
    ticket_validity_period=2,
    num_active_transcoders=2,
    unbonding_period=1,
)
ETH = 10**18
RAND = 0xC0FFEE


@pytest.fixture(scope="module")
def module_chain() -> DevChain:
    return DevChain.start(parameters=PARAMETERS, accounts=3, funds=100 * ETH)


@pytest.fixture
def dev(module_chain: DevChain) -> Iterator[DevChain]:
    snapshot = module_chain.tester.take_snapshot()
    yield module_chain
    module_chain.tester.revert_to_snapshot(snapshot)


@pytest.fixture
def sender(dev: DevChain) -> ChainClient:
    return dev.client(dev.keys[0])


@pytest.fixture
def orch(dev: DevChain) -> ChainClient:
    return dev.client(dev.keys[1])


def addr(client: ChainClient) -> str:
    assert client.address is not None
    return client.address


def next_round(dev: DevChain, client: ChainClient) -> int:
    """Mines to the next round's first block and initializes it."""
    round_ = client.current_round() + 1
    dev.mine_to_round(round_)
    return round_


def become_active(dev: DevChain, orch: ChainClient, stake: int = ETH) -> None:
    orch.bond(stake)
    orch.register(0, 0)
    next_round(dev, orch)
    assert orch.is_active_transcoder(addr(orch))


def winning_ticket(
    client: ChainClient,
    sender_key: NodeKey,
    recipient: str,
    *,
    face_value: int,
    nonce: int = 1,
    creation_round: int | None = None,
) -> StoredTicket:
    """A ticket that wins (winProb = 2^256 - 1), made as a gateway makes one."""
    snapshot = client.snapshot()
    round_ = snapshot.last_initialized_round if creation_round is None else creation_round
    block_hash = snapshot.round_block_hash if creation_round is None else bytes(32)
    ticket = Ticket(
        recipient=recipient,
        sender=sender_key.address,
        face_value=face_value,
        win_prob=MAX_WIN_PROB,
        sender_nonce=nonce,
        recipient_rand_hash=recipient_rand_hash(RAND),
        creation_round=round_,
        creation_round_block_hash=block_hash,
    )
    return StoredTicket(
        ticket_hash=ticket_hash(ticket),
        winning=WinningTicket(
            ticket=ticket,
            signature=sign_ticket(sender_key.private_key, ticket),
            recipient_rand=RAND,
            expiration_block=snapshot.latest_block,
        ),
        status=TicketStatus.PENDING,
    )


def test_the_client_is_a_redemption_chain(sender: ChainClient) -> None:
    chain: RedemptionChain = sender  # checked by mypy: the redeemer takes a client as is
    assert chain.latest_block() == sender.latest_block() > 0
    assert chain.current_round() == sender.snapshot().current_round


def test_rounds_advance_after_round_length_blocks_and_initialize_round(
    dev: DevChain, sender: ChainClient
) -> None:
    first = sender.snapshot()
    r = first.current_round
    assert first.current_round_initialized  # DevChain.start initialized it
    assert first.last_initialized_round == r and first.round_block_hash != bytes(32)
    assert first.round_length == 10 and first.transcoder_pool_size == 0
    assert first.gas_price > 0

    dev.mine(10 - first.latest_block % 10)  # to the next round's first block
    begun = sender.snapshot()
    assert begun.current_round == r + 1 and not begun.current_round_initialized
    assert begun.last_initialized_round == r
    assert begun.round_block_hash == first.round_block_hash

    tx = sender.initialize_round()
    assert tx is not None
    receipt = sender.w3.eth.get_transaction_receipt(HexBytes(tx))
    parent = sender.w3.eth.get_block(receipt["blockNumber"] - 1)
    after = sender.snapshot()
    assert after.current_round_initialized and after.last_initialized_round == r + 1
    assert after.round_block_hash == bytes(parent["hash"])  # blockhash(block.number - 1)
    assert sender.initialize_round() is None  # already initialized: no transaction


def test_funding_shows_in_sender_info_and_costs_the_balance(sender: ChainClient) -> None:
    me = addr(sender)
    before = sender.balance(me)
    lines: list[str] = []
    tx = sender.fund_deposit_and_reserve(2 * ETH, 3 * ETH, progress=lines.append)
    assert lines == [f"sent {tx}, waiting for receipt…", lines[1]]
    assert lines[1].startswith("mined in block ")
    sender.fund_deposit(ETH)
    sender.fund_reserve(ETH)
    info = sender.sender_info(me)
    assert (info.deposit, info.reserve, info.withdraw_round) == (3 * ETH, 4 * ETH, 0)
    spent = before - sender.balance(me)
    assert 7 * ETH < spent < 7 * ETH + 10**16  # the funds and some gas


def test_unlock_cancel_and_withdraw_with_revert_reasons(dev: DevChain, sender: ChainClient) -> None:
    me = addr(sender)
    with pytest.raises(ChainError, match="sender deposit and reserve are zero") as info:
        sender.unlock()
    assert info.value.reason == "sender deposit and reserve are zero"
    sender.fund_deposit_and_reserve(ETH, ETH)
    with pytest.raises(ChainError, match="withdraw reverted: no unlock request in progress"):
        sender.withdraw()

    sender.unlock()
    withdraw_round = sender.current_round() + PARAMETERS.unlock_period
    assert sender.sender_info(me).withdraw_round == withdraw_round
    with pytest.raises(ChainError) as again:
        sender.unlock()
    assert again.value.reason == "unlock already initiated"
    sender.cancel_unlock()
    assert sender.sender_info(me).withdraw_round == 0
    with pytest.raises(ChainError, match="no unlock request in progress"):
        sender.cancel_unlock()

    sender.unlock()
    with pytest.raises(ChainError, match="account is locked"):
        sender.withdraw()
    dev.mine_to_round(withdraw_round)
    before = sender.balance(me)
    sender.withdraw()
    info_after = sender.sender_info(me)
    assert (info_after.deposit, info_after.reserve) == (0, 0)
    assert sender.balance(me) > before + 2 * ETH - 10**16


def test_bond_and_register_make_an_orchestrator_active_from_the_next_round(
    dev: DevChain, orch: ChainClient
) -> None:
    me = addr(orch)
    with pytest.raises(ChainError, match="transcoder must be bonded to self"):
        orch.register(0, 0)
    orch.bond(2 * ETH)
    orch.register(100_000, 50_000)
    orch.set_service_uri("quic://127.0.0.1:8936")
    assert orch.is_registered_transcoder(me) and not orch.is_active_transcoder(me)
    assert orch.transcoder_stake(me) == orch.bonded_amount(me) == 2 * ETH
    assert orch.service_uri(me) == "quic://127.0.0.1:8936"
    assert orch.active_transcoders() == []

    next_round(dev, orch)
    assert orch.is_active_transcoder(me)
    assert orch.active_transcoders() == [me]
    assert orch.snapshot().transcoder_pool_size == 1


def test_active_transcoders_are_listed_most_stake_first(dev: DevChain, orch: ChainClient) -> None:
    other = dev.client(dev.keys[2])
    orch.bond(ETH)
    orch.register(0, 0)
    other.bond(3 * ETH)
    other.register(0, 0)
    next_round(dev, orch)
    assert orch.active_transcoders() == [addr(other), addr(orch)]


def test_a_winning_ticket_redeems_once_and_pays_the_orchestrator(
    dev: DevChain, sender: ChainClient, orch: ChainClient
) -> None:
    sender.fund_deposit_and_reserve(ETH, ETH)
    become_active(dev, orch)
    face_value = ETH // 10
    stored = winning_ticket(orch, dev.keys[0], addr(orch), face_value=face_value)
    assert not orch.used_ticket(stored.ticket_hash)

    tx = orch.redeem(stored)
    assert tx.startswith("0x") and len(tx) == 66
    assert orch.used_ticket(stored.ticket_hash)
    assert orch.pending_fees(addr(orch)) == face_value
    assert sender.sender_info(addr(sender)).deposit == ETH - face_value

    with pytest.raises(TicketUsedError, match="ticket is used"):
        orch.redeem(stored)

    before = orch.balance(addr(orch))
    orch.withdraw_fees()
    assert orch.pending_fees(addr(orch)) == 0
    assert orch.balance(addr(orch)) > before + face_value - 10**16


def test_a_ticket_beyond_the_deposit_claims_from_the_reserve(
    dev: DevChain, sender: ChainClient, orch: ChainClient
) -> None:
    sender.fund_deposit_and_reserve(ETH, 2 * ETH)
    become_active(dev, orch)  # alone in the active set: it may claim the whole reserve
    stored = winning_ticket(orch, dev.keys[0], addr(orch), face_value=ETH + ETH // 2)
    orch.redeem(stored)
    info = sender.sender_info(addr(sender))
    assert (info.deposit, info.reserve) == (0, 2 * ETH - ETH // 2)
    assert info.reserve_claimed_in_current_round == ETH // 2
    assert orch.claimed_reserve(addr(sender), addr(orch)) == ETH // 2
    assert orch.pending_fees(addr(orch)) == ETH + ETH // 2


def test_a_round_without_a_block_hash_is_no_block_hash_error(
    dev: DevChain, sender: ChainClient, orch: ChainClient
) -> None:
    sender.fund_deposit(ETH)
    become_active(dev, orch)
    stored = winning_ticket(orch, dev.keys[0], addr(orch), face_value=1000, creation_round=50)
    with pytest.raises(NoBlockHashError):
        orch.redeem(stored)


def test_other_redemption_failures_are_chain_errors_to_retry(
    dev: DevChain, sender: ChainClient, orch: ChainClient
) -> None:
    become_active(dev, orch)  # but the sender never funded anything
    stored = winning_ticket(orch, dev.keys[0], addr(orch), face_value=1000)
    with pytest.raises(ChainError) as info:
        orch.redeem(stored)
    assert not isinstance(info.value, RedemptionError)
    assert info.value.reason == "sender deposit and reserve are zero"


def test_redeem_tx_cost_is_redeem_gas_times_the_gas_price(orch: ChainClient) -> None:
    assert orch.redeem_gas == REDEEM_GAS == 350_000
    assert orch.redeem_tx_cost() == REDEEM_GAS * orch.snapshot().gas_price


def test_a_client_without_a_key_reads_but_cannot_send(dev: DevChain, sender: ChainClient) -> None:
    reader = dev.client(None)
    assert reader.address is None
    sender.fund_deposit(5)
    assert reader.sender_info(addr(sender)).deposit == 5
    with pytest.raises(ChainError, match="no key"):
        reader.fund_deposit(1)


def test_a_wrong_controller_is_a_chain_error(dev: DevChain) -> None:
    with pytest.raises(ChainError, match="no contract at controller address"):
        ChainClient(dev.w3, controller=dev.keys[0].address, key=None)
    with pytest.raises(ChainError, match="not an address"):
        ChainClient(dev.w3, controller="0x1234", key=None)


def test_bad_addresses_are_chain_errors(sender: ChainClient) -> None:
    with pytest.raises(ChainError, match="not an address"):
        sender.sender_info("0xnothex")


def test_an_unreachable_node_is_a_chain_error() -> None:
    with pytest.raises(ChainError, match="cannot reach"):
        ChainClient.connect(
            "http://127.0.0.1:1", controller=Web3.to_checksum_address("0x" + "11" * 20)
        )
    with pytest.raises(ChainError, match="http"):
        ChainClient.connect("ws://127.0.0.1:1", controller="0x" + "11" * 20)


def test_nonces_recover_after_a_transaction_sent_behind_the_clients_back(
    dev: DevChain, sender: ChainClient
) -> None:
    sender.fund_deposit(1)
    twin = dev.client(dev.keys[0])  # same key, its own nonce count
    twin.fund_deposit(1)
    with pytest.raises(ChainError):
        sender.fund_deposit(1)  # the nonce it counted is taken
    sender.fund_deposit(1)  # re-read from the chain
    assert sender.sender_info(addr(sender)).deposit == 3


def test_a_transaction_that_fails_once_mined_raises_with_its_reason(
    dev: DevChain, sender: ChainClient
) -> None:
    # Sent without an estimate (as another tool might), so the revert happens on chain.
    key = dev.keys[0]
    tx = {
        "to": dev.addresses["TicketBroker"],
        "data": "0x3ccfd60b",  # withdraw()
        "value": 0,
        "gas": 100_000,
        "gasPrice": sender.gas_price(),
        "nonce": sender.w3.eth.get_transaction_count(Web3.to_checksum_address(key.address)),
        "chainId": sender.chain_id,
    }
    raw = Account.sign_transaction(tx, key.private_key).raw_transaction
    tx_hash = "0x" + bytes(sender.w3.eth.send_raw_transaction(raw)).hex()
    with pytest.raises(ChainError, match=f"transaction {tx_hash} reverted in block") as info:
        sender.wait_for_receipt(tx_hash)
    assert info.value.reason == "sender deposit and reserve are zero"
