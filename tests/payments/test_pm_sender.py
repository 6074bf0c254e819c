"""The sender's side: which parameters it pays with, how many tickets, and their nonces."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import attrs
import pytest

from payments.pm import (
    DEFAULT_MAX_EV,
    MAX_WIN_PROB,
    NonceAllocator,
    NonceExhaustedError,
    SenderInfo,
    TicketParams,
    TicketParamsRejectedError,
    TicketSender,
    address_of,
    check_ticket_params,
    keccak256,
    output_pixels,
    recover_signer,
    segment_fee,
    tickets_needed,
    win_prob_for,
)

FUNDED = SenderInfo(deposit=10**18, withdraw_round=0, reserve=10**18)
# EV 10^9 wei with a face value of 10^15 wei.
PARAMS = TicketParams(
    recipient=address_of(keccak256(b"orchestrator")),
    face_value=10**15,
    win_prob=win_prob_for(10**9, 10**15),
    recipient_rand_hash=keccak256(b"rrh"),
    seed=keccak256(b"seed"),
    expiration_block=1040,
    price=Fraction(1200, 7),
    creation_round=7,
    creation_round_block_hash=keccak256(b"round 7"),
)


def check(
    params: TicketParams = PARAMS,
    *,
    count: int = 1,
    latest_block: int = 1000,
    sender_info: SenderInfo = FUNDED,
    **limits: Any,
) -> None:
    check_ticket_params(
        params, count=count, latest_block=latest_block, sender_info=sender_info, **limits
    )


def rejection(**kwargs: Any) -> str:
    with pytest.raises(TicketParamsRejectedError) as info:
        check(**kwargs)
    return info.value.reason


def test_acceptable_params_pass() -> None:
    check()
    check(count=19_999)  # EV is a hair above 10^9 (winProb rounds up): 20,000 would pass 2e13


def test_expired_or_expiring_within_one_block_is_refused() -> None:
    assert rejection(latest_block=1040) == "expired"
    assert rejection(latest_block=1039) == "expired"
    check(latest_block=1038)


def test_ev_not_below_face_value_is_refused() -> None:
    assert rejection(params=attrs.evolve(PARAMS, win_prob=MAX_WIN_PROB)) == (
        "ev_not_below_face_value"
    )
    assert rejection(params=attrs.evolve(PARAMS, face_value=0, win_prob=0)) == (
        "ev_not_below_face_value"
    )


def test_ev_above_max_is_refused() -> None:
    below = attrs.evolve(PARAMS, face_value=10**18, win_prob=MAX_WIN_PROB // 400_000)  # ~2.5e12
    above = attrs.evolve(PARAMS, face_value=10**18, win_prob=MAX_WIN_PROB // 300_000)  # ~3.3e12
    assert below.ev < DEFAULT_MAX_EV < above.ev
    check(params=below, sender_info=SenderInfo(deposit=10**18, withdraw_round=0, reserve=1))
    assert rejection(params=above) == "ev_above_max"
    check(max_ev=PARAMS.ev)
    assert rejection(max_ev=PARAMS.ev - Fraction(1, 10**9)) == "ev_above_max"


def test_total_ev_above_max_is_refused() -> None:
    assert rejection(count=20_001) == "total_ev_above_max"
    assert rejection(count=3, max_total_ev=3 * 10**9 - 1) == "total_ev_above_max"


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        (SenderInfo(deposit=10**18, withdraw_round=12, reserve=10**18), "unlock_in_progress"),
        (SenderInfo(deposit=0, withdraw_round=0, reserve=10**18), "no_deposit"),
        (SenderInfo(deposit=10**18, withdraw_round=0, reserve=0), "no_reserve"),
        (SenderInfo(deposit=10**15 - 1, withdraw_round=0, reserve=1), "face_value_above_deposit"),
    ],
)
def test_a_sender_that_cannot_pay_is_refused(info: SenderInfo, reason: str) -> None:
    assert rejection(sender_info=info) == reason


def test_output_pixels_round_fps_and_duration_up() -> None:
    ladder: list[tuple[int, int, Fraction | float, Fraction | float]] = [
        (1280, 720, Fraction(30000, 1001), 2.0),
        (640, 360, 30, 2.002),
    ]
    assert output_pixels(ladder) == 1280 * 720 * 30 * 2 + 640 * 360 * 30 * 3
    assert output_pixels([]) == 0


def test_segment_fee_is_exact() -> None:
    assert segment_fee(1000, Fraction(1200, 7)) == Fraction(1000 * 102 * 1200, 100 * 7)
    assert segment_fee(3, Fraction(1, 3)) == Fraction(102, 100)


def test_tickets_needed_formula() -> None:
    ev = Fraction(10)
    # fee below one ticket's EV: one ticket
    assert tickets_needed(fee=Fraction(3), ticket_ev=ev, credit=Fraction(0)) == 1
    # ceil((95 - 0) / 10) = 10
    assert tickets_needed(fee=Fraction(95), ticket_ev=ev, credit=Fraction(0)) == 10
    # ceil((95 - 25) / 10) = 7; exact multiples do not round up
    assert tickets_needed(fee=Fraction(95), ticket_ev=ev, credit=Fraction(25)) == 7
    assert tickets_needed(fee=Fraction(100), ticket_ev=ev, credit=Fraction(30)) == 7
    # credit that covers the fee (or one EV): none
    assert tickets_needed(fee=Fraction(95), ticket_ev=ev, credit=Fraction(95)) == 0
    assert tickets_needed(fee=Fraction(3), ticket_ev=ev, credit=Fraction(10)) == 0
    # debt is made good
    assert tickets_needed(fee=Fraction(10), ticket_ev=ev, credit=Fraction(-15)) == 3
    with pytest.raises(ValueError, match="positive"):
        tickets_needed(fee=Fraction(1), ticket_ev=Fraction(0), credit=Fraction(0))


def test_nonces_start_at_one_and_never_repeat() -> None:
    nonces = NonceAllocator()
    a, b = keccak256(b"a"), keccak256(b"b")
    assert list(nonces.allocate(a, 3)) == [1, 2, 3]
    assert list(nonces.allocate(a)) == [4]
    assert list(nonces.allocate(b, 2)) == [1, 2]
    assert list(nonces.allocate(a, 0)) == []
    assert list(nonces.allocate(a, 1)) == [5]
    nonces.forget(b)
    assert list(nonces.allocate(b)) == [1]
    assert len(nonces) == 2


def test_nonces_stop_at_uint32() -> None:
    nonces = NonceAllocator()
    rrh = keccak256(b"a")
    nonces.allocate(rrh, 2**32 - 2)
    assert list(nonces.allocate(rrh)) == [2**32 - 1]
    with pytest.raises(NonceExhaustedError):
        nonces.allocate(rrh)


def test_ticket_sender_signs_each_ticket_with_fresh_nonces() -> None:
    key = keccak256(b"gateway")
    sender = TicketSender(private_key=key)
    assert sender.address == address_of(key)
    first = sender.create_payment(PARAMS, 3)
    second = sender.create_payment(PARAMS, 2)
    assert [t.sender_nonce for t in first.tickets] == [1, 2, 3]
    assert [t.sender_nonce for t in second.tickets] == [4, 5]
    assert first.sender == sender.address
    assert first.params == PARAMS
    for ticket, sig in [*first.signed_tickets(), *second.signed_tickets()]:
        assert ticket.sender == sender.address
        assert ticket.recipient_rand_hash == PARAMS.recipient_rand_hash
        assert ticket.aux_data == PARAMS.aux_data
        assert recover_signer(ticket, sig) == sender.address
    assert "gateway" not in repr(sender) and key.hex() not in repr(sender)


def test_ticket_sender_bounds_the_batch() -> None:
    sender = TicketSender(private_key=keccak256(b"gateway"))
    assert sender.create_payment(PARAMS, 0).tickets == ()
    with pytest.raises(ValueError, match="0 to 100"):
        sender.create_payment(PARAMS, 101)
