"""How an orchestrator picks ticket parameters, and the recipientRand that binds them."""

from __future__ import annotations

import hmac
from fractions import Fraction

import pytest

from payments.pm import (
    MAX_WIN_PROB,
    PARAMS_EXPIRATION_BLOCKS,
    InsufficientSenderReserveError,
    SenderInfo,
    TicketParams,
    address_bytes,
    face_value_for,
    issue_ticket_params,
    keccak256,
    max_float,
    minbe,
    recipient_rand,
    recipient_rand_hash,
    ticket_ev,
    win_prob_for,
)

RECIPIENT = "0x73AEd7b5dEb30222fa896f399d46cC99c7BEe57F"
SENDER = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
SECRET = keccak256(b"secret")
SEED = keccak256(b"seed")
BLOCK_HASH = keccak256(b"round 7")


def issue(**overrides: object) -> TicketParams:
    args: dict[str, object] = {
        "recipient": RECIPIENT,
        "secret": SECRET,
        "seed": SEED,
        "sender": SENDER,
        "price": Fraction(1200, 7),
        "ev": 10**9,
        "tx_cost": 350_000 * 10**9,
        "max_float": 10**18,
        "latest_block": 1000,
        "creation_round": 7,
        "creation_round_block_hash": BLOCK_HASH,
    }
    args.update(overrides)
    return issue_ticket_params(**args)  # type: ignore[arg-type]


def test_minbe_is_minimal_and_empty_for_zero() -> None:
    assert minbe(0) == b""
    assert minbe(1) == b"\x01"
    assert minbe(256) == b"\x01\x00"
    assert minbe(2**256 - 1) == b"\xff" * 32


def test_recipient_rand_is_the_documented_hmac() -> None:
    aux = (7).to_bytes(32, "big") + BLOCK_HASH
    msg = (
        SEED + address_bytes(SENDER) + minbe(10**17) + minbe(12345) + minbe(1040)
        + minbe(1200) + minbe(7) + aux
    )  # fmt: skip
    expected = int.from_bytes(hmac.digest(SECRET, msg, "sha256"), "big")
    assert recipient_rand(SECRET, SEED, SENDER, 10**17, 12345, 1040, 1200, 7, aux) == expected


def test_recipient_rand_treats_the_seed_as_a_number() -> None:
    # go-livepeer's seed is a big.Int: leading zero bytes do not reach the HMAC.
    short = b"\x01\x02"
    padded = bytes(30) + short
    args = (SENDER, 1, 2, 3, 4, 5, b"")
    assert recipient_rand(SECRET, padded, *args) == recipient_rand(SECRET, short, *args)
    # and a zero value contributes nothing at all
    assert recipient_rand(SECRET, bytes(32), SENDER, 0, 0, 0, 0, 1, b"") == int.from_bytes(
        hmac.digest(SECRET, address_bytes(SENDER) + b"\x01", "sha256"), "big"
    )


def test_win_prob_rules() -> None:
    assert win_prob_for(5, 0) == 0
    assert win_prob_for(5, 5) == MAX_WIN_PROB
    # an exact divisor of 2^256 - 1 (3 divides it) takes no rounding up
    assert win_prob_for(1, 3) == MAX_WIN_PROB // 3
    assert win_prob_for(1, 2) == MAX_WIN_PROB // 2 + 1
    # the EV is never below the one asked for
    for face_value in (7, 10**6 + 3, 10**18):
        assert ticket_ev(face_value, win_prob_for(1000, face_value)) >= 1000


def test_face_value_is_tx_cost_times_100() -> None:
    assert face_value_for(ev=10**9, tx_cost=10**12, max_float=10**18) == 10**14


def test_face_value_rises_to_ev_times_100_when_tx_cost_is_below_ev() -> None:
    assert face_value_for(ev=10**9, tx_cost=10**6, max_float=10**18) == 10**11


def test_face_value_is_capped_by_max_float_and_max_face_value() -> None:
    assert face_value_for(ev=10**9, tx_cost=10**12, max_float=5 * 10**12) == 5 * 10**12
    assert (
        face_value_for(ev=10**9, tx_cost=10**12, max_float=10**18, max_face_value=2 * 10**9)
        == 2 * 10**9
    )
    assert face_value_for(ev=10**9, tx_cost=10**12, max_float=10**18, max_face_value=0) == 10**14


@pytest.mark.parametrize("cap", [{"max_float": 10**9 - 1}, {"max_float": -90}])
def test_face_value_below_ev_is_insufficient_sender_reserve(cap: dict[str, int]) -> None:
    with pytest.raises(InsufficientSenderReserveError, match="insufficient sender reserve"):
        face_value_for(ev=10**9, tx_cost=10**12, **cap)
    with pytest.raises(InsufficientSenderReserveError):
        face_value_for(ev=10**9, tx_cost=10**12, max_float=10**18, max_face_value=10**9 - 1)


def test_max_float_allocation_and_pending_rule() -> None:
    assert max_float(reserve=1000, pool_size=10, claimed=0) == 100
    claimed_this_round = {"reserve_claimed_in_current_round": 100}
    assert max_float(reserve=900, pool_size=10, claimed=30, **claimed_this_round) == 70
    assert max_float(reserve=1005, pool_size=10, claimed=0) == 100  # integer division
    assert max_float(reserve=1000, pool_size=0, claimed=50) == 0
    # pending redemptions count unless the deposit covers them three times over
    assert max_float(reserve=1000, pool_size=10, claimed=0, deposit=29, pending=10) == 90
    assert max_float(reserve=1000, pool_size=10, claimed=0, deposit=30, pending=10) == 100


def test_sender_unlocks_soon_rule() -> None:
    def info(withdraw_round: int) -> SenderInfo:
        return SenderInfo(deposit=1, reserve=1, withdraw_round=withdraw_round)

    assert not info(0).unlocks_soon(10)
    assert info(11).unlocks_soon(10)
    assert info(5).unlocks_soon(10)
    assert not info(12).unlocks_soon(10)
    assert info(12).unlocking


def test_issued_params_follow_the_rules() -> None:
    params = issue()
    assert params.recipient == RECIPIENT
    assert params.face_value == 350_000 * 10**9 * 100
    assert params.win_prob == win_prob_for(10**9, params.face_value)
    assert params.expiration_block == 1000 + PARAMS_EXPIRATION_BLOCKS == 1040
    assert params.seed == SEED
    assert params.price == Fraction(1200, 7)
    assert params.creation_round == 7
    assert params.aux_data == (7).to_bytes(32, "big") + BLOCK_HASH
    assert params.ev >= 10**9
    rand = recipient_rand(
        SECRET, SEED, SENDER, params.face_value, params.win_prob, 1040, 1200, 7, params.aux_data
    )
    assert params.recipient_rand_hash == recipient_rand_hash(rand)
    assert recipient_rand_hash(rand) == keccak256(rand.to_bytes(32, "big"))


def test_issued_params_reduce_the_price() -> None:
    assert issue(price=Fraction(2400, 14)).recipient_rand_hash == issue().recipient_rand_hash


def test_issued_params_differ_per_seed_and_per_sender() -> None:
    hashes = {
        issue().recipient_rand_hash,
        issue(seed=keccak256(b"other seed")).recipient_rand_hash,
        issue(sender=RECIPIENT).recipient_rand_hash,
        issue(secret=keccak256(b"other secret")).recipient_rand_hash,
    }
    assert len(hashes) == 4


def test_zero_price_needs_no_payment() -> None:
    params = issue(price=Fraction(0), max_float=-5)
    assert params.face_value == 0
    assert params.win_prob == 0
    assert params.ev == 0


def test_issue_refuses_a_sender_with_too_little_reserve() -> None:
    with pytest.raises(InsufficientSenderReserveError):
        issue(max_float=-90)


def test_params_reject_malformed_fields() -> None:
    params = issue()
    with pytest.raises(ValueError, match="32 bytes"):
        TicketParams(
            recipient=RECIPIENT,
            face_value=1,
            win_prob=1,
            recipient_rand_hash=b"short",
            seed=SEED,
            expiration_block=1,
            price=Fraction(1),
        )
    with pytest.raises(ValueError, match="uint256"):
        TicketParams(
            recipient=RECIPIENT,
            face_value=2**256,
            win_prob=1,
            recipient_rand_hash=params.recipient_rand_hash,
            seed=SEED,
            expiration_block=1,
            price=Fraction(1),
        )
    with pytest.raises(ValueError, match="Fraction"):
        TicketParams(
            recipient=RECIPIENT,
            face_value=1,
            win_prob=1,
            recipient_rand_hash=params.recipient_rand_hash,
            seed=SEED,
            expiration_block=1,
            price=Fraction(-1),
        )
