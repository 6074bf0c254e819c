"""lpstream's contracts on a real EVM (eth-tester + py-evm), driven with real signed tickets.

One deployment per module; each test runs on a snapshot of it and reverts it afterwards. The
deployment: 50-block rounds, unlock and validity periods of 2 rounds, an active set of 2, and
three orchestrators A, B, C with 300, 200 and 100 wei of stake, so A and B are active and C is
registered but not active. Round 1 is initialized when a test starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD
from web3.types import TxReceipt

from payments.chain import deploy_all
from payments.chain.contracts import CONTRACT_NAMES, ProtocolParameters, contract_at, contract_id
from payments.pm import (
    MAX_WIN_PROB,
    ZERO_ADDRESS,
    ZERO_HASH,
    Ticket,
    address_of,
    is_winning_ticket,
    keccak256,
    recipient_rand,
    recipient_rand_hash,
    sign_ticket,
    ticket_hash,
)
from payments.pm.crypto import SECP256K1_N

# eth-tester's ten funded accounts have the private keys 1..10.
KEYS = [i.to_bytes(32, "big") for i in range(1, 11)]
OWNER, SENDER, ORCH_A, ORCH_B, ORCH_C, DELEGATOR, STRANGER, POOR_SENDER = (
    address_of(k) for k in KEYS[:8]
)
SENDER_KEY, STRANGER_KEY, POOR_SENDER_KEY = KEYS[1], KEYS[6], KEYS[7]
STAKES = {ORCH_A: 300, ORCH_B: 200, ORCH_C: 100}
PARAMETERS = ProtocolParameters(
    round_length=50,
    unlock_period=2,
    ticket_validity_period=2,
    num_active_transcoders=2,
    unbonding_period=1,
)
SECRET = bytes(range(32))

# eth-tester ships no type information: its revert exception, fetched by name.
TransactionFailed: type[Exception] = importlib.import_module(
    "eth_tester.exceptions"
).TransactionFailed
FOO = keccak256(b"foo")


@contextmanager
def reverts(reason: str) -> Iterator[None]:
    """Asserts that the block reverts with exactly ``reason``."""
    with pytest.raises((TransactionFailed, ContractLogicError)) as info:
        yield
    assert str(info.value) == f"execution reverted: {reason}"


@attrs.define
class Chain:
    """The deployed contracts and the few moves the tests make on them."""

    w3: Web3
    tester: Any
    """The provider's EthereumTester: mines blocks, takes and reverts snapshots."""
    addresses: dict[str, str]

    def contract(self, name: str) -> Contract:
        return contract_at(self.w3, name, self.addresses[name])

    def transact(
        self, name: str, function: str, *args: Any, sender: str = OWNER, value: int = 0
    ) -> TxReceipt:
        call = getattr(self.contract(name).functions, function)(*args)
        tx_hash = call.transact({"from": sender, "value": value})
        return self.w3.eth.wait_for_transaction_receipt(tx_hash)

    def call(self, name: str, function: str, *args: Any) -> Any:
        return getattr(self.contract(name).functions, function)(*args).call()

    def events(self, name: str, event: str, receipt: TxReceipt) -> list[dict[str, Any]]:
        logs = getattr(self.contract(name).events, event)().process_receipt(receipt, errors=DISCARD)
        return [dict(log["args"]) for log in logs]

    @property
    def round(self) -> int:
        return int(self.call("RoundsManager", "currentRound"))

    def start_round(self, round_: int) -> None:
        """Mines up to ``round_``'s first block, so calls and the next transactions see it."""
        target = round_ * PARAMETERS.round_length
        latest = self.w3.eth.block_number
        assert latest <= target, "that round has begun"
        self.tester.mine_blocks(target - latest)

    def initialize_next_round(self) -> int:
        round_ = self.round + 1
        self.start_round(round_)
        self.transact("RoundsManager", "initializeRound", sender=STRANGER)
        return round_

    def fund(self, sender: str = SENDER, *, deposit: int = 0, reserve: int = 0) -> None:
        self.transact(
            "TicketBroker",
            "fundDepositAndReserve",
            deposit,
            reserve,
            sender=sender,
            value=deposit + reserve,
        )

    def sender_info(self, sender: str = SENDER) -> tuple[int, int, int, int]:
        (deposit, withdraw_round), (funds, claimed) = self.call(
            "TicketBroker", "getSenderInfo", sender
        )
        return deposit, withdraw_round, funds, claimed

    def fees(self, orchestrator: str) -> int:
        return int(self.call("BondingManager", "pendingFees", orchestrator, 0))

    def balance(self, address: str) -> int:
        return int(self.w3.eth.get_balance(Web3.to_checksum_address(address)))

    def redeem(self, redemption: Redemption, *, sender: str = STRANGER) -> TxReceipt:
        return self.transact("TicketBroker", "redeemWinningTicket", *redemption.args, sender=sender)


@attrs.frozen(kw_only=True)
class Redemption:
    """A winning ticket as redeemWinningTicket takes it; the raw fields can be overridden."""

    ticket: Ticket
    sig: bytes
    rand: int
    aux_data: bytes

    @property
    def args(self) -> tuple[tuple[Any, ...], bytes, int]:
        t = self.ticket
        fields = (
            t.recipient,
            t.sender,
            t.face_value,
            t.win_prob,
            t.sender_nonce,
            t.recipient_rand_hash,
            self.aux_data,
        )
        return fields, self.sig, self.rand

    @property
    def hash(self) -> bytes:
        return ticket_hash(self.ticket)


def make_ticket(
    chain: Chain,
    *,
    recipient: str = ORCH_A,
    sender_key: bytes = SENDER_KEY,
    sender: str | None = None,
    face_value: int = 1000,
    win_prob: int = MAX_WIN_PROB,
    nonce: int = 1,
    creation_round: int | None = None,
    block_hash: bytes | None = None,
) -> Redemption:
    """A ticket made as a node makes one: recipientRand from the orchestrator's secret, signed
    by the sender; by default from the last initialized round and sure to win."""
    if creation_round is None:
        creation_round = int(chain.call("RoundsManager", "lastInitializedRound"))
    if block_hash is None:
        block_hash = bytes(chain.call("RoundsManager", "blockHashForRound", creation_round))
    sender = address_of(sender_key) if sender is None else sender
    aux_data = creation_round.to_bytes(32, "big") + block_hash
    rand = recipient_rand(SECRET, b"seed", sender, face_value, win_prob, 1000, 1, 1, aux_data)
    ticket = Ticket(
        recipient=recipient,
        sender=sender,
        face_value=face_value,
        win_prob=win_prob,
        sender_nonce=nonce,
        recipient_rand_hash=recipient_rand_hash(rand),
        creation_round=creation_round,
        creation_round_block_hash=block_hash,
    )
    return Redemption(
        ticket=ticket, sig=sign_ticket(sender_key, ticket), rand=rand, aux_data=aux_data
    )


@pytest.fixture(scope="module")
def deployed() -> Chain:
    provider = EthereumTesterProvider()
    w3 = Web3(provider)
    addresses: dict[str, str] = dict(deploy_all(w3, OWNER, PARAMETERS))
    chain = Chain(w3=w3, tester=provider.ethereum_tester, addresses=addresses)
    for orchestrator, stake in STAKES.items():
        chain.transact(
            "BondingManager", "bond", stake, orchestrator, sender=orchestrator, value=stake
        )
        chain.transact("BondingManager", "transcoder", 50_000, 250_000, sender=orchestrator)
    chain.initialize_next_round()
    return chain


@pytest.fixture
def chain(deployed: Chain) -> Iterator[Chain]:
    snapshot = deployed.tester.take_snapshot()
    yield deployed
    deployed.tester.revert_to_snapshot(snapshot)


# --- Deployment and Controller -------------------------------------------------------------


def test_deploy_all_registers_every_contract_with_the_controller(chain: Chain) -> None:
    assert set(chain.addresses) == set(CONTRACT_NAMES)
    for name in CONTRACT_NAMES[1:]:
        assert chain.call("Controller", "getContract", contract_id(name)) == chain.addresses[name]
        assert chain.call(name, "controller") == chain.addresses["Controller"]
    assert chain.call("Controller", "owner") == OWNER
    assert chain.call("RoundsManager", "roundLength") == 50
    assert chain.call("TicketBroker", "unlockPeriod") == 2
    assert chain.call("TicketBroker", "ticketValidityPeriod") == 2
    assert chain.call("BondingManager", "numActiveTranscoders") == 2


def test_only_the_owner_names_contracts(chain: Chain) -> None:
    with reverts("caller must be Controller owner"):
        chain.transact(
            "Controller",
            "setContractInfo",
            contract_id("Minter"),
            STRANGER,
            bytes(20),
            sender=STRANGER,
        )
    chain.transact("Controller", "transferOwnership", STRANGER)
    chain.transact(
        "Controller", "setContractInfo", contract_id("Foo"), ORCH_A, b"\x01" * 20, sender=STRANGER
    )
    assert chain.call("Controller", "getContractInfo", contract_id("Foo")) == [ORCH_A, b"\x01" * 20]


def test_parameters_change_only_by_the_controller_owner(chain: Chain) -> None:
    with reverts("caller must be Controller owner"):
        chain.transact("TicketBroker", "setUnlockPeriod", 5, sender=STRANGER)
    with reverts("caller must be Controller owner"):
        chain.transact("BondingManager", "setNumActiveTranscoders", 5, sender=STRANGER)
    chain.transact("TicketBroker", "setUnlockPeriod", 5)
    chain.transact("TicketBroker", "setTicketValidityPeriod", 3)
    chain.transact("BondingManager", "setNumActiveTranscoders", 5)
    assert chain.call("TicketBroker", "unlockPeriod") == 5
    assert chain.call("TicketBroker", "ticketValidityPeriod") == 3
    assert chain.call("BondingManager", "numActiveTranscoders") == 5
    with reverts("numActiveTranscoders above MAX_POOL_SIZE"):
        chain.transact("BondingManager", "setNumActiveTranscoders", 101)


def test_service_registry_keeps_each_callers_uri(chain: Chain) -> None:
    chain.transact("ServiceRegistry", "setServiceURI", "https://127.0.0.1:8935", sender=ORCH_A)
    assert chain.call("ServiceRegistry", "getServiceURI", ORCH_A) == "https://127.0.0.1:8935"
    assert chain.call("ServiceRegistry", "getServiceURI", ORCH_B) == ""


def test_minter_moves_funds_only_for_the_broker_and_bonding_manager(chain: Chain) -> None:
    chain.fund(deposit=1000, reserve=500)
    assert chain.balance(chain.addresses["Minter"]) == sum(STAKES.values()) + 1500
    assert chain.balance(chain.addresses["TicketBroker"]) == 0
    with reverts("caller must be TicketBroker or BondingManager"):
        chain.transact("Minter", "trustedWithdrawETH", STRANGER, 1, sender=STRANGER)
    with reverts("caller must be TicketBroker or BondingManager"):
        chain.transact("Minter", "trustedDepositETH", sender=STRANGER, value=1)


# --- RoundsManager -------------------------------------------------------------------------


def test_rounds_follow_the_block_number(chain: Chain) -> None:
    chain.start_round(3)
    assert chain.round == 3
    assert chain.call("RoundsManager", "currentRoundStartBlock") == 150
    assert not chain.call("RoundsManager", "currentRoundInitialized")
    assert chain.call("RoundsManager", "lastInitializedRound") == 1


def test_initialize_round_stores_the_previous_blocks_hash(chain: Chain) -> None:
    chain.start_round(2)
    receipt = chain.transact("RoundsManager", "initializeRound", sender=STRANGER)
    parent = chain.w3.eth.get_block(receipt["blockNumber"] - 1)
    assert chain.call("RoundsManager", "blockHashForRound", 2) == parent["hash"]
    assert chain.events("RoundsManager", "NewRound", receipt) == [
        {"round": 2, "blockHash": parent["hash"]}
    ]
    assert chain.call("RoundsManager", "lastInitializedRound") == 2
    assert chain.call("RoundsManager", "currentRoundInitialized")
    assert chain.call("RoundsManager", "blockHashForRound", 3) == ZERO_HASH
    with reverts("round already initialized"):
        chain.transact("RoundsManager", "initializeRound", sender=STRANGER)


def test_round_length_change_keeps_the_current_round(chain: Chain) -> None:
    with reverts("caller must be Controller owner"):
        chain.transact("RoundsManager", "setRoundLength", 10, sender=STRANGER)
    chain.transact("RoundsManager", "setRoundLength", 10)
    assert chain.round == 1
    assert chain.call("RoundsManager", "currentRoundStartBlock") == 50
    chain.tester.mine_blocks(60 - chain.w3.eth.block_number)
    assert chain.round == 2
    assert chain.call("RoundsManager", "currentRoundStartBlock") == 60


# --- BondingManager ------------------------------------------------------------------------


def active_set(chain: Chain) -> list[str]:
    members = []
    member = chain.call("BondingManager", "getFirstTranscoderInPool")
    while member != ZERO_ADDRESS:
        members.append(member)
        member = chain.call("BondingManager", "getNextTranscoderInPool", member)
    return members


def test_active_set_is_the_top_stakes_fixed_at_round_start(chain: Chain) -> None:
    assert active_set(chain) == [ORCH_A, ORCH_B]
    assert chain.call("BondingManager", "getTranscoderPoolSize") == 2
    assert chain.call("BondingManager", "currentRoundTotalActiveStake") == 500
    assert [chain.call("BondingManager", "isActiveTranscoder", o) for o in STAKES] == [
        True,
        True,
        False,
    ]
    assert chain.call("BondingManager", "isRegisteredTranscoder", ORCH_C)

    chain.transact("BondingManager", "bond", 400, ORCH_C, sender=DELEGATOR, value=400)
    assert chain.call("BondingManager", "transcoderTotalStake", ORCH_C) == 500
    assert active_set(chain) == [ORCH_A, ORCH_B], "the set is fixed for the round"

    chain.initialize_next_round()
    assert active_set(chain) == [ORCH_C, ORCH_A]
    assert not chain.call("BondingManager", "isActiveTranscoder", ORCH_B)
    assert chain.call("BondingManager", "currentRoundTotalActiveStake") == 800


def test_an_uninitialized_round_has_no_active_set(chain: Chain) -> None:
    chain.start_round(2)
    assert not chain.call("BondingManager", "isActiveTranscoder", ORCH_A)
    assert chain.call("BondingManager", "getTranscoderPoolSize") == 0
    assert active_set(chain) == []


def test_bonding_rules(chain: Chain) -> None:
    with reverts("msg.value does not equal bond amount"):
        chain.transact("BondingManager", "bond", 10, ORCH_A, sender=DELEGATOR, value=9)
    with reverts("delegation amount must be greater than 0"):
        chain.transact("BondingManager", "bond", 0, ORCH_A, sender=DELEGATOR)
    with reverts("transcoder must be bonded to self"):
        chain.transact("BondingManager", "transcoder", 0, 0, sender=DELEGATOR)
    with reverts("invalid feeShare percentage"):
        chain.transact("BondingManager", "transcoder", 0, 1_000_001, sender=ORCH_A)
    with reverts("registered transcoders can't delegate towards other addresses"):
        chain.transact("BondingManager", "bond", 0, ORCH_B, sender=ORCH_A)

    chain.transact("BondingManager", "bond", 50, ORCH_A, sender=DELEGATOR, value=50)
    chain.transact("BondingManager", "bond", 0, ORCH_B, sender=DELEGATOR)
    assert chain.call("BondingManager", "transcoderTotalStake", ORCH_A) == 300
    assert chain.call("BondingManager", "transcoderTotalStake", ORCH_B) == 250
    bonded, fees, delegate, delegated, start_round, _, _ = chain.call(
        "BondingManager", "getDelegator", DELEGATOR
    )
    assert (bonded, fees, delegate, delegated, start_round) == (50, 0, ORCH_B, 0, 2)
    assert chain.call("BondingManager", "getTotalBonded") == 650
    _, reward_cut, fee_share, *_ = chain.call("BondingManager", "getTranscoder", ORCH_A)
    assert (reward_cut, fee_share) == (50_000, 250_000)


def test_unbonding_all_own_stake_resigns_and_pays_out_after_the_period(chain: Chain) -> None:
    chain.transact("BondingManager", "unbond", 100, sender=ORCH_A)
    receipt = chain.transact("BondingManager", "unbond", 200, sender=ORCH_A)
    assert chain.events("BondingManager", "Unbond", receipt)[0]["withdrawRound"] == 2
    assert chain.events("BondingManager", "TranscoderResigned", receipt) == [{"transcoder": ORCH_A}]
    assert not chain.call("BondingManager", "isRegisteredTranscoder", ORCH_A)
    assert chain.call("BondingManager", "getRegisteredTranscoderCount") == 2
    assert active_set(chain) == [ORCH_A, ORCH_B], "the round's set stays as it was fixed"
    with reverts("withdraw round must be before or equal to the current round"):
        chain.transact("BondingManager", "withdrawStake", 0, sender=ORCH_A)
    with reverts("invalid unbonding lock ID"):
        chain.transact("BondingManager", "withdrawStake", 2, sender=ORCH_A)

    chain.initialize_next_round()
    assert active_set(chain) == [ORCH_B, ORCH_C]
    before = chain.balance(ORCH_A)
    receipts = [
        chain.transact("BondingManager", "withdrawStake", lock, sender=ORCH_A) for lock in (0, 1)
    ]
    gas = sum(r["gasUsed"] * r["effectiveGasPrice"] for r in receipts)
    assert chain.balance(ORCH_A) == before + 300 - gas
    with reverts("invalid unbonding lock ID"):
        chain.transact("BondingManager", "withdrawStake", 0, sender=ORCH_A)


def test_only_the_broker_credits_fees_and_only_rounds_manager_fixes_the_set(chain: Chain) -> None:
    with reverts("caller must be TicketBroker"):
        chain.transact("BondingManager", "updateTranscoderWithFees", ORCH_A, 10, 1, sender=ORCH_A)
    with reverts("caller must be RoundsManager"):
        chain.transact("BondingManager", "setCurrentRoundTotalActiveStake", sender=ORCH_A)


# --- TicketBroker: a winning ticket --------------------------------------------------------


def test_contract_hashes_tickets_as_payments_pm_does(chain: Chain) -> None:
    def hash_on_chain(ticket: Ticket) -> bytes:
        redemption = Redemption(ticket=ticket, sig=b"", rand=0, aux_data=ticket.aux_data)
        return bytes(chain.call("TicketBroker", "getTicketHash", redemption.args[0]))

    zero = {
        "recipient": ZERO_ADDRESS,
        "sender": ZERO_ADDRESS,
        "face_value": 0,
        "win_prob": 0,
        "recipient_rand_hash": ZERO_HASH,
    }
    known = Ticket(sender_nonce=2**32 - 1, **zero)  # type: ignore[arg-type]
    assert hash_on_chain(known).hex() == (
        "e1393fc7f6de093780674022f96cb8e3872235167d037c04d554e58c0e63d280"
    )
    known = Ticket(sender_nonce=0, creation_round=10, creation_round_block_hash=FOO, **zero)  # type: ignore[arg-type]
    assert hash_on_chain(known).hex() == (
        "e502907c16036ab3d11b78c5a2e93c20f3d6415c67f91de4ed01348182b3b2e2"
    )
    made = make_ticket(chain).ticket
    assert hash_on_chain(made) == ticket_hash(made)


def test_winning_ticket_pays_face_value_from_the_deposit(chain: Chain) -> None:
    chain.fund(deposit=10_000, reserve=5_000)
    redemption = make_ticket(chain, face_value=1_000)
    assert is_winning_ticket(redemption.sig, redemption.rand, redemption.ticket.win_prob)

    receipt = chain.redeem(redemption)

    assert chain.call("TicketBroker", "usedTickets", redemption.hash)
    assert chain.sender_info() == (9_000, 0, 5_000, 0)
    assert chain.fees(ORCH_A) == 1_000
    _, _, _, _, _, _, _, _, cumulative_fees, _ = chain.call(
        "BondingManager", "getTranscoder", ORCH_A
    )
    assert cumulative_fees == 1_000
    assert chain.events("TicketBroker", "WinningTicketTransfer", receipt) == [
        {"sender": SENDER, "recipient": ORCH_A, "amount": 1_000}
    ]
    (redeemed,) = chain.events("TicketBroker", "WinningTicketRedeemed", receipt)
    assert redeemed["recipientRand"] == redemption.rand
    assert redeemed["auxData"] == redemption.aux_data

    minter = chain.addresses["Minter"]
    held = chain.balance(minter)
    chain.transact("BondingManager", "withdrawFees", STRANGER, 600, sender=ORCH_A)
    assert chain.fees(ORCH_A) == 400
    assert chain.balance(minter) == held - 600
    with reverts("insufficient fees to withdraw"):
        chain.transact("BondingManager", "withdrawFees", STRANGER, 401, sender=ORCH_A)


def test_ticket_redeems_while_an_unlock_is_pending(chain: Chain) -> None:
    chain.fund(deposit=5_000)
    chain.transact("TicketBroker", "unlock", sender=SENDER)
    chain.initialize_next_round()
    chain.redeem(make_ticket(chain, face_value=1_000))
    assert chain.sender_info()[:2] == (4_000, 3)


def test_ticket_to_an_unregistered_recipient_is_refused_by_the_bonding_manager(
    chain: Chain,
) -> None:
    chain.fund(deposit=5_000)
    with reverts("transcoder must be registered"):
        chain.redeem(make_ticket(chain, recipient=STRANGER))


# --- TicketBroker: every check of redeemWinningTicket, in order -----------------------------


def _high_s(sig: bytes) -> bytes:
    s = int.from_bytes(sig[32:64], "big")
    return sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - sig[64],))


Case = Callable[[Chain], Redemption]


def _uninitialized_round(chain: Chain) -> Redemption:
    redemption = make_ticket(chain)
    chain.start_round(2)
    return redemption


def _expired(chain: Chain) -> Redemption:
    redemption = make_ticket(chain)
    chain.initialize_next_round()
    chain.initialize_next_round()
    return redemption


def _used(chain: Chain) -> Redemption:
    redemption = make_ticket(chain)
    chain.redeem(redemption)
    return redemption


def _unlocked(chain: Chain) -> Redemption:
    chain.transact("TicketBroker", "unlock", sender=SENDER)
    chain.initialize_next_round()
    chain.initialize_next_round()
    return make_ticket(chain)


CASES: list[tuple[str, Case]] = [
    ("current round is not initialized", _uninitialized_round),
    ("ticket recipient is null address", lambda c: make_ticket(c, recipient=ZERO_ADDRESS)),
    ("ticket sender is null address", lambda c: make_ticket(c, sender=ZERO_ADDRESS)),
    (
        "invalid length for ticket auxData: must be 64 bytes",
        lambda c: attrs.evolve(make_ticket(c), aux_data=b""),
    ),
    (
        "ticket creationRound does not have a block hash",
        lambda c: make_ticket(c, creation_round=2, block_hash=FOO),
    ),
    (
        "ticket creationRoundBlockHash invalid for creationRound",
        lambda c: make_ticket(c, block_hash=FOO),
    ),
    ("ticket is expired", _expired),
    (
        "recipientRand does not match recipientRandHash",
        lambda c: attrs.evolve(make_ticket(c), rand=make_ticket(c).rand + 1),
    ),
    ("ticket is used", _used),
    (
        "INVALID_SIGNATURE_LENGTH",
        lambda c: attrs.evolve(make_ticket(c), sig=make_ticket(c).sig[:64]),
    ),
    (
        "ECDSA: invalid signature 's' value",
        lambda c: attrs.evolve(make_ticket(c), sig=_high_s(make_ticket(c).sig)),
    ),
    (
        "ECDSA: invalid signature 'v' value",
        lambda c: attrs.evolve(make_ticket(c), sig=make_ticket(c).sig[:64] + b"\x01"),
    ),
    (
        "ECDSA: invalid signature",
        lambda c: attrs.evolve(make_ticket(c), sig=bytes(32) + (1).to_bytes(32, "big") + b"\x1b"),
    ),
    (
        "invalid signature over ticket hash",
        lambda c: make_ticket(c, sender_key=STRANGER_KEY, sender=SENDER),
    ),
    ("ticket did not win", lambda c: make_ticket(c, win_prob=0)),
    ("sender is unlocked", _unlocked),
    (
        "sender deposit and reserve are zero",
        lambda c: make_ticket(c, sender_key=POOR_SENDER_KEY),
    ),
]


@pytest.mark.parametrize(("reason", "case"), CASES, ids=[reason for reason, _ in CASES])
def test_redeem_refuses_with_livepeers_reason(chain: Chain, reason: str, case: Case) -> None:
    chain.fund(deposit=5_000, reserve=1_000)
    redemption = case(chain)
    with reverts(reason):
        chain.redeem(redemption)


def test_the_first_failing_check_gives_the_reason(chain: Chain) -> None:
    # Wrong rand, bad signature, losing ticket and an unfunded sender: the rand check is first.
    bad = make_ticket(chain, sender_key=POOR_SENDER_KEY, win_prob=0)
    bad = attrs.evolve(bad, rand=bad.rand + 1, sig=bad.sig[:64])
    with reverts("recipientRand does not match recipientRandHash"):
        chain.redeem(bad)
    chain.initialize_next_round()
    chain.initialize_next_round()
    with reverts("ticket is expired"):
        chain.redeem(bad)
    with reverts("ticket creationRoundBlockHash invalid for creationRound"):
        chain.redeem(attrs.evolve(bad, aux_data=bad.aux_data[:32] + FOO))


# --- TicketBroker: the reserve -------------------------------------------------------------


def test_shortfall_comes_from_an_active_recipients_share_of_the_reserve(chain: Chain) -> None:
    chain.fund(deposit=100, reserve=1_000)
    assert chain.call("TicketBroker", "claimableReserve", SENDER, ORCH_A) == 500  # 1000 / 2

    receipt = chain.redeem(make_ticket(chain, face_value=1_000))

    assert chain.fees(ORCH_A) == 600  # the deposit's 100 and the allocation's 500
    assert chain.events("TicketBroker", "ReserveClaimed", receipt) == [
        {"reserveHolder": SENDER, "claimant": ORCH_A, "amount": 500}
    ]
    assert chain.sender_info() == (0, 0, 500, 500)
    assert chain.call("TicketBroker", "claimableReserve", SENDER, ORCH_A) == 0
    assert chain.call("TicketBroker", "claimedReserve", SENDER, ORCH_A) == 500
    assert chain.call("TicketBroker", "claimableReserve", SENDER, ORCH_B) == 500

    # A exhausted its allocation: the next ticket is used up and pays nothing.
    second = make_ticket(chain, face_value=1_000, nonce=2)
    receipt = chain.redeem(second)
    assert chain.call("TicketBroker", "usedTickets", second.hash)
    assert chain.events("TicketBroker", "WinningTicketTransfer", receipt) == []
    assert chain.fees(ORCH_A) == 600

    chain.redeem(make_ticket(chain, recipient=ORCH_B, face_value=200))
    assert chain.fees(ORCH_B) == 200
    assert chain.call("TicketBroker", "claimableReserve", SENDER, ORCH_B) == 300

    # A new round, a new allocation from what is left.
    chain.initialize_next_round()
    assert chain.sender_info() == (0, 0, 300, 0)
    assert chain.call("TicketBroker", "claimableReserve", SENDER, ORCH_A) == 150


def test_inactive_recipient_gets_the_deposit_but_no_reserve(chain: Chain) -> None:
    chain.fund(deposit=100, reserve=1_000)
    assert chain.call("TicketBroker", "claimableReserve", SENDER, ORCH_C) == 0
    chain.redeem(make_ticket(chain, recipient=ORCH_C, face_value=1_000))
    assert chain.fees(ORCH_C) == 100
    assert chain.sender_info() == (0, 0, 1_000, 0)


# --- TicketBroker: batches -----------------------------------------------------------------


def test_batch_redeems_the_good_tickets_and_skips_a_bad_one(chain: Chain) -> None:
    chain.fund(deposit=10_000)
    good_1 = make_ticket(chain, nonce=1, face_value=1_000)
    bad = attrs.evolve(make_ticket(chain, nonce=2, face_value=1_000), sig=good_1.sig)
    good_3 = make_ticket(chain, nonce=3, face_value=1_000)
    batch = [good_1, bad, good_3]

    receipt = chain.transact(
        "TicketBroker",
        "batchRedeemWinningTickets",
        [r.args[0] for r in batch],
        [r.sig for r in batch],
        [r.rand for r in batch],
        sender=STRANGER,
    )

    assert receipt["status"] == 1
    used = [chain.call("TicketBroker", "usedTickets", r.hash) for r in batch]
    assert used == [True, False, True]
    assert chain.fees(ORCH_A) == 2_000
    assert chain.sender_info()[0] == 8_000
    assert len(chain.events("TicketBroker", "WinningTicketRedeemed", receipt)) == 2


def test_batch_needs_an_initialized_round_and_matching_lengths(chain: Chain) -> None:
    chain.fund(deposit=10_000)
    one = make_ticket(chain)
    with reverts("tickets, sigs and recipientRands differ in length"):
        chain.transact("TicketBroker", "batchRedeemWinningTickets", [one.args[0]], [], [one.rand])
    chain.start_round(2)
    with reverts("current round is not initialized"):
        chain.transact(
            "TicketBroker", "batchRedeemWinningTickets", [one.args[0]], [one.sig], [one.rand]
        )


# --- TicketBroker: funding, unlock and withdraw --------------------------------------------


def test_funding_rules(chain: Chain) -> None:
    with reverts("msg.value does not equal sum of deposit amount and reserve amount"):
        chain.transact("TicketBroker", "fundDepositAndReserve", 10, 10, sender=SENDER, value=19)
    chain.transact("TicketBroker", "fundDeposit", sender=SENDER, value=7)
    chain.transact("TicketBroker", "fundReserve", sender=SENDER, value=5)
    chain.transact(
        "TicketBroker", "fundDepositAndReserveFor", SENDER, 1, 2, sender=STRANGER, value=3
    )
    assert chain.sender_info() == (8, 0, 7, 0)


def test_unlock_and_cancel(chain: Chain) -> None:
    with reverts("sender deposit and reserve are zero"):
        chain.transact("TicketBroker", "unlock", sender=SENDER)
    with reverts("no unlock request in progress"):
        chain.transact("TicketBroker", "cancelUnlock", sender=SENDER)
    chain.fund(reserve=1_000)
    receipt = chain.transact("TicketBroker", "unlock", sender=SENDER)
    assert chain.events("TicketBroker", "Unlock", receipt) == [
        {"sender": SENDER, "startRound": 1, "endRound": 3}
    ]
    assert chain.call("TicketBroker", "isUnlockInProgress", SENDER)
    with reverts("unlock already initiated"):
        chain.transact("TicketBroker", "unlock", sender=SENDER)
    chain.transact("TicketBroker", "cancelUnlock", sender=SENDER)
    assert chain.sender_info()[1] == 0

    chain.transact("TicketBroker", "unlock", sender=SENDER)
    receipt = chain.transact("TicketBroker", "fundDeposit", sender=SENDER, value=1)
    assert chain.events("TicketBroker", "UnlockCancelled", receipt) == [{"sender": SENDER}]
    assert chain.sender_info()[1] == 0


def test_withdraw_pays_deposit_and_reserve_once_unlocked(chain: Chain) -> None:
    with reverts("sender deposit and reserve are zero"):
        chain.transact("TicketBroker", "withdraw", sender=SENDER)
    chain.fund(deposit=3_000, reserve=2_000)
    with reverts("no unlock request in progress"):
        chain.transact("TicketBroker", "withdraw", sender=SENDER)
    chain.transact("TicketBroker", "unlock", sender=SENDER)
    chain.start_round(2)
    with reverts("account is locked"):
        chain.transact("TicketBroker", "withdraw", sender=SENDER)
    chain.start_round(3)

    before = chain.balance(SENDER)
    receipt = chain.transact("TicketBroker", "withdraw", sender=SENDER)

    gas = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert chain.balance(SENDER) == before + 5_000 - gas
    assert chain.events("TicketBroker", "Withdrawal", receipt) == [
        {"sender": SENDER, "deposit": 3_000, "reserve": 2_000}
    ]
    assert chain.sender_info() == (0, 3, 0, 0)
    assert chain.balance(chain.addresses["Minter"]) == sum(STAKES.values())
