"""The recipient's checks, in go-livepeer's order, with their fatal / non-fatal split."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import attrs
import pytest

from payments.pm import (
    MAX_SENDER_NONCES,
    MAX_WIN_PROB,
    InvalidRecipientError,
    InvalidRecipientRandError,
    InvalidSenderError,
    InvalidSignatureError,
    InvalidTicketError,
    NonceGuard,
    NonceReplayError,
    Payment,
    ReceivedPayment,
    SenderInfo,
    SenderUnlockingError,
    TicketParams,
    TicketParamsExpiredError,
    TicketSender,
    TicketSenderParams,
    TicketValidator,
    TooManyNoncesError,
    address_of,
    aux_data_for,
    is_winning_ticket,
    keccak256,
    recipient_rand,
    recipient_rand_hash,
    sign_ticket,
    ticket_ev,
)

RECIPIENT = address_of(keccak256(b"orchestrator"))
SECRET = keccak256(b"secret")
SENDER = TicketSender(private_key=keccak256(b"gateway"))
OTHER = TicketSender(private_key=keccak256(b"other gateway"))
BLOCK_HASH = keccak256(b"round 7")
FUNDED = SenderInfo(deposit=10**18, withdraw_round=0, reserve=10**18)
ZERO = "0x" + "00" * 20


def make_params(
    *,
    sender: str = SENDER.address,
    face_value: int = 10**15,
    win_prob: int = 2**200,
    expiration_block: int = 1040,
    seed: bytes = keccak256(b"seed"),
    price: Fraction = Fraction(1200, 7),
    recipient: str = RECIPIENT,
) -> TicketParams:
    """Parameters as ``RECIPIENT`` would issue them to ``sender``, any face value and winProb."""
    rand = recipient_rand(
        SECRET, seed, sender, face_value, win_prob, expiration_block,
        price.numerator, price.denominator, aux_data_for(7, BLOCK_HASH),
    )  # fmt: skip
    return TicketParams(
        recipient=recipient,
        face_value=face_value,
        win_prob=win_prob,
        recipient_rand_hash=recipient_rand_hash(rand),
        seed=seed,
        expiration_block=expiration_block,
        price=price,
        creation_round=7,
        creation_round_block_hash=BLOCK_HASH,
    )


def receive(
    validator: TicketValidator,
    payment: Payment,
    *,
    sender_info: SenderInfo = FUNDED,
    latest_block: int = 1000,
) -> ReceivedPayment:
    return validator.receive_payment(
        payment, sender_info=sender_info, last_initialized_round=7, latest_block=latest_block
    )


def with_ticket(payment: Payment, index: int, *, signature: bytes) -> Payment:
    tickets = list(payment.tickets)
    tickets[index] = attrs.evolve(tickets[index], signature=signature)
    return attrs.evolve(payment, tickets=tuple(tickets))


def fresh() -> TicketValidator:
    return TicketValidator(recipient=RECIPIENT, secret=SECRET)


def test_a_valid_payment_is_credited_in_full() -> None:
    params = make_params()
    validator = fresh()
    result = receive(validator, SENDER.create_payment(params, 4))
    assert result.error is None
    assert result.credited_tickets == 4
    assert result.credited_ev == 4 * ticket_ev(params.face_value, params.win_prob)
    assert result.sender == SENDER.address
    stats = validator.statistics()
    assert (stats.payments, stats.tickets_credited, stats.credited_ev) == (1, 4, result.credited_ev)


def test_sender_unlocking_is_checked_first_and_is_fatal() -> None:
    payment = SENDER.create_payment(make_params(recipient=OTHER.address), 2)
    unlocking = SenderInfo(deposit=10**18, withdraw_round=8, reserve=10**18)
    validator = fresh()
    with pytest.raises(SenderUnlockingError) as info:
        receive(validator, payment, sender_info=unlocking)
    assert info.value.fatal
    assert info.value.code == 402
    assert info.value.reason == "sender_unlocking"
    # an unlock far enough away is fine
    later = SenderInfo(deposit=10**18, withdraw_round=9, reserve=10**18)
    result = receive(validator, SENDER.create_payment(make_params(), 1), sender_info=later)
    assert result.error is None


def test_wrong_recipient_is_reported_before_a_bad_signature() -> None:
    payment = SENDER.create_payment(make_params(recipient=OTHER.address), 2)
    payment = with_ticket(payment, 0, signature=b"\x00" * 65)
    with pytest.raises(InvalidRecipientError) as info:
        receive(fresh(), payment)
    assert info.value.fatal
    assert info.value.reason == "invalid_recipient"


def test_zero_sender_is_fatal_and_comes_before_the_rand_check() -> None:
    params = make_params(sender=ZERO)
    payment = Payment(
        params=params,
        sender=ZERO,
        tickets=(TicketSenderParams(sender_nonce=1, signature=b"\x01" * 65),),
    )
    with pytest.raises(InvalidSenderError):
        receive(fresh(), payment)
    with pytest.raises(InvalidSenderError):
        receive(fresh(), attrs.evolve(payment, params=make_params()))


@pytest.mark.parametrize(
    "tamper",
    [
        {"face_value": 10**15 + 1},
        {"win_prob": 2**201},
        {"expiration_block": 1041},
        {"price": Fraction(1201, 7)},
        {"seed": keccak256(b"other seed")},
        {"creation_round": 8},
        {"recipient_rand_hash": keccak256(b"guess")},
    ],
)
def test_parameters_we_did_not_issue_are_fatal(tamper: dict[str, Any]) -> None:
    params = attrs.evolve(make_params(), **tamper)
    payment = SENDER.create_payment(params, 1)
    validator = fresh()
    with pytest.raises(InvalidRecipientRandError) as info:
        receive(validator, payment)
    assert info.value.fatal
    assert validator.statistics().payments_rejected == 1
    assert validator.nonce_statistics().nonces == 0


def test_params_issued_to_another_sender_are_fatal() -> None:
    payment = OTHER.create_payment(make_params(sender=SENDER.address), 1)
    with pytest.raises(InvalidRecipientRandError):
        receive(fresh(), payment)


def test_remembered_params_still_bind_the_sender() -> None:
    validator = fresh()
    params = make_params()
    assert receive(validator, SENDER.create_payment(params, 1)).error is None
    with pytest.raises(InvalidRecipientRandError):
        receive(validator, OTHER.create_payment(params, 1))
    with pytest.raises(InvalidRecipientRandError):
        receive(validator, SENDER.create_payment(attrs.evolve(params, face_value=1), 1))


def test_bad_signature_stops_crediting_at_that_ticket() -> None:
    payment = SENDER.create_payment(make_params(), 4)
    foreign = OTHER.create_payment(make_params(), 1).tickets[0].signature
    forged = with_ticket(payment, 1, signature=foreign)
    validator = fresh()
    result = receive(validator, forged)
    assert result.credited_tickets == 1
    assert result.credited_ev == make_params().ev
    assert isinstance(result.error, InvalidSignatureError)
    assert not result.error.fatal
    assert result.error.reason == "invalid_signature"
    assert validator.statistics().tickets_refused == 3
    # The uncredited tickets kept their nonces: sent again, they are credited.
    rest = attrs.evolve(payment, tickets=payment.tickets[1:])
    assert receive(validator, rest).credited_tickets == 3


@pytest.mark.parametrize("signature", [b"\x01" * 64, b"", b"\x01" * 66])
def test_malformed_signatures_are_non_fatal(signature: bytes) -> None:
    payment = with_ticket(SENDER.create_payment(make_params(), 2), 0, signature=signature)
    result = receive(fresh(), payment)
    assert result.credited_tickets == 0
    assert isinstance(result.error, InvalidSignatureError)


def test_high_s_signature_is_refused() -> None:
    from payments.pm.crypto import SECP256K1_N

    payment = SENDER.create_payment(make_params(), 1)
    sig = payment.tickets[0].signature
    s = int.from_bytes(sig[32:64], "big")
    mirrored = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - sig[64],))
    result = receive(fresh(), with_ticket(payment, 0, signature=mirrored))
    assert isinstance(result.error, InvalidSignatureError)


def test_a_replayed_payment_is_not_credited_twice() -> None:
    validator = fresh()
    payment = SENDER.create_payment(make_params(), 3)
    assert receive(validator, payment).credited_tickets == 3
    again = receive(validator, payment)
    assert again.credited_tickets == 0
    assert again.credited_ev == 0
    assert isinstance(again.error, NonceReplayError)
    assert not again.error.fatal


def test_a_replayed_nonce_inside_a_batch_stops_crediting() -> None:
    validator = fresh()
    params = make_params()
    first = SENDER.create_payment(params, 2)  # nonces 1, 2
    second = SENDER.create_payment(params, 2)  # nonces 3, 4
    assert receive(validator, first).credited_tickets == 2
    mixed = attrs.evolve(second, tickets=(second.tickets[0], first.tickets[1], second.tickets[1]))
    result = receive(validator, mixed)
    assert result.credited_tickets == 1
    assert isinstance(result.error, NonceReplayError)
    rest = attrs.evolve(second, tickets=second.tickets[1:])
    assert receive(validator, rest).credited_tickets == 1


def test_nonce_cap_per_recipient_rand() -> None:
    validator = TicketValidator(recipient=RECIPIENT, secret=SECRET, max_nonces=3)
    params = make_params()
    result = receive(validator, SENDER.create_payment(params, 5))
    assert result.credited_tickets == 3
    assert isinstance(result.error, TooManyNoncesError)
    # other parameters have their own allowance
    other = SENDER.create_payment(make_params(seed=b"\x01" * 32), 3)
    assert receive(validator, other).error is None


def test_nonce_guard_takes_600_nonces_then_refuses() -> None:
    guard = NonceGuard()
    rrh = keccak256(b"rrh")
    for nonce in range(1, MAX_SENDER_NONCES + 1):
        guard.record(rrh, nonce, 1040)
    with pytest.raises(TooManyNoncesError):
        guard.record(rrh, MAX_SENDER_NONCES + 1, 1040)
    with pytest.raises(NonceReplayError):
        guard.record(rrh, 1, 1040)
    guard.record(keccak256(b"other"), 1, 1040)
    assert guard.statistics().nonces == MAX_SENDER_NONCES + 1


def test_expired_params_are_non_fatal_and_come_after_the_nonce() -> None:
    validator = fresh()
    payment = SENDER.create_payment(make_params(expiration_block=1040), 2)
    result = receive(validator, payment, latest_block=1040)
    assert result.credited_tickets == 0
    assert isinstance(result.error, TicketParamsExpiredError)
    assert not result.error.fatal
    # the nonce was recorded before the expiry check
    assert isinstance(receive(validator, payment, latest_block=1040).error, NonceReplayError)
    assert receive(fresh(), payment, latest_block=1039).error is None


def test_the_chain_head_never_goes_back() -> None:
    validator = fresh()
    validator.forget_expired(2000)
    result = receive(validator, SENDER.create_payment(make_params(), 1), latest_block=1000)
    assert isinstance(result.error, TicketParamsExpiredError)


def test_forgetting_expired_nonces_never_reopens_a_replay() -> None:
    validator = fresh()
    payment = SENDER.create_payment(make_params(expiration_block=1040), 2)
    assert receive(validator, payment, latest_block=1000).credited_tickets == 2
    assert validator.forget_expired(1039) == 0
    assert validator.forget_expired(1040) == 1
    assert validator.nonce_statistics().nonces == 0
    again = receive(validator, payment, latest_block=1000)  # a stale head is not believed
    assert again.credited_tickets == 0
    assert isinstance(again.error, TicketParamsExpiredError)


def test_winning_tickets_are_reported_with_what_redemption_needs() -> None:
    params = make_params(win_prob=MAX_WIN_PROB // 2)
    payment = SENDER.create_payment(params, 16)
    rand = recipient_rand(
        SECRET, params.seed, SENDER.address, params.face_value, params.win_prob,
        params.expiration_block, 1200, 7, params.aux_data,
    )  # fmt: skip
    result = receive(fresh(), payment)
    expected = [
        t.sender_nonce
        for t in payment.tickets
        if is_winning_ticket(t.signature, rand, params.win_prob)
    ]
    assert 0 < len(expected) < 16  # 2^-16 odds of failing by chance, fixed by the keys
    assert [w.ticket.sender_nonce for w in result.winning] == expected
    for w in result.winning:
        assert w.recipient_rand == rand
        assert w.expiration_block == params.expiration_block
        assert w.signature == sign_ticket(keccak256(b"gateway"), w.ticket)
        assert w.ticket == payment.ticket(w.ticket.sender_nonce)


def test_win_prob_extremes() -> None:
    always = receive(fresh(), SENDER.create_payment(make_params(win_prob=MAX_WIN_PROB), 3))
    assert len(always.winning) == 3
    never = receive(fresh(), SENDER.create_payment(make_params(win_prob=0), 3))
    assert never.winning == ()
    assert never.credited_ev == 0


def test_an_expired_winner_is_still_reported_but_a_replayed_one_is_not() -> None:
    validator = fresh()
    payment = SENDER.create_payment(make_params(win_prob=MAX_WIN_PROB), 2)
    expired = receive(validator, payment, latest_block=1040)
    assert [w.ticket.sender_nonce for w in expired.winning] == [payment.tickets[0].sender_nonce]
    assert expired.credited_tickets == 0
    replay = receive(validator, payment, latest_block=1040)
    assert replay.winning == ()


def test_a_bad_signature_never_wins() -> None:
    payment = SENDER.create_payment(make_params(win_prob=MAX_WIN_PROB), 1)
    result = receive(fresh(), with_ticket(payment, 0, signature=b"\x01" * 65))
    assert result.winning == ()


def test_every_error_is_an_invalid_ticket_error_with_a_distinct_reason() -> None:
    classes = [
        SenderUnlockingError, InvalidRecipientError, InvalidSenderError,
        InvalidRecipientRandError, InvalidSignatureError, NonceReplayError,
        TooManyNoncesError, TicketParamsExpiredError,
    ]  # fmt: skip
    assert all(issubclass(c, InvalidTicketError) for c in classes)
    assert len({c.reason_code for c in classes}) == len(classes)
    assert [c.fatal for c in classes] == [True] * 4 + [False] * 4
