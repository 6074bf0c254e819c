"""The known answers of PAYMENTS.md, taken from go-livepeer's own tests."""

from __future__ import annotations

import pytest

from payments.pm import (
    ZERO_ADDRESS,
    ZERO_HASH,
    Ticket,
    keccak256,
    max_float,
    recover_personal_signer,
    ticket_hash,
    win_prob_for,
)

FOO = keccak256(b"foo")


def zero_ticket(**fields: object) -> Ticket:
    values: dict[str, object] = {
        "recipient": ZERO_ADDRESS,
        "sender": ZERO_ADDRESS,
        "face_value": 0,
        "win_prob": 0,
        "sender_nonce": 0,
        "recipient_rand_hash": ZERO_HASH,
    }
    values.update(fields)
    return Ticket(**values)  # type: ignore[arg-type]


def test_keccak256_of_foo() -> None:
    assert FOO.hex() == "41b1a0649752af1b28b3dc29a1556eee781e4a4c3a1f7f53f90fa834de098c4d"


def test_keccak256_of_be32_ten() -> None:
    assert (
        keccak256((10).to_bytes(32, "big")).hex()
        == "c65a7bb8d6351c1cf70c95a316cc6a92839c986682d98bc35f958f4883f9d2a8"
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"sender_nonce": 2**32 - 1},
            "e1393fc7f6de093780674022f96cb8e3872235167d037c04d554e58c0e63d280",
        ),
        ({"sender_nonce": 1}, "ce0918ba94518293e9712effbe5fca4f1f431089833a5b8c257cb1e024595f68"),
        (
            {"face_value": 1, "win_prob": 500},
            "87ef13f2d37e4d5352a01d3c77b8179d80e0887f1953bfabfd0bfd7b0f689ddd",
        ),
        (
            {"face_value": 500, "win_prob": 1},
            "aa4b35071043587992ac8b9dd1b2cf1d8311130e6458cf0b2342484e21af5f5b",
        ),
        (
            {"recipient": "0x73AEd7b5dEb30222fa896f399d46cC99c7BEe57F"},
            "81e353ae39046e2b77b9f996abbaeed527fda559b61ef90f299c4499dd508ccc",
        ),
        (
            {"recipient": "0x73aed7b5deb30222fa896f399d46cc99c7bee57f"},
            "81e353ae39046e2b77b9f996abbaeed527fda559b61ef90f299c4499dd508ccc",
        ),
        (
            {"recipient_rand_hash": FOO},
            "be5eaf9a49a39540b9bb02f1a21904f61324a29819e2c032824bfaa10c100b17",
        ),
        (
            {"creation_round": 10, "creation_round_block_hash": FOO},
            "e502907c16036ab3d11b78c5a2e93c20f3d6415c67f91de4ed01348182b3b2e2",
        ),
    ],
)
def test_ticket_hash_known_answers(fields: dict[str, object], expected: str) -> None:
    assert ticket_hash(zero_ticket(**fields)).hex() == expected


def test_aux_data_is_empty_only_for_round_zero_with_zero_hash() -> None:
    assert zero_ticket().aux_data == b""
    assert zero_ticket(creation_round=10, creation_round_block_hash=FOO).aux_data == (
        (10).to_bytes(32, "big") + FOO
    )
    assert zero_ticket(creation_round=0, creation_round_block_hash=FOO).aux_data == bytes(32) + FOO
    assert zero_ticket(creation_round=1).aux_data == (1).to_bytes(32, "big") + ZERO_HASH


def test_signature_recovery_known_answer() -> None:
    # PAYMENTS.md calls this hash "raw", but go-livepeer's VerifySig applies the EIP-191 prefix
    # to it first: the stated address is only recovered that way.
    msg = bytes.fromhex("b7da355477356fc4c47fcabcf232dc77a6db9b07b7e48b76261cc55cc8fbabb3")
    sig = bytes.fromhex(
        "206443228e8f784bc3a122de0d85eb3ebff82d6a79cca26c7eeb907099a6404f"
        "6dff57bc6828f28bd6cd073c89d94cf3364204679ed8365fa45b5ee6af19a9841c"
    )
    assert recover_personal_signer(msg, sig) == "0x3BadDb1eeE2105893136A3F96c8a963E9C6309d6"


@pytest.mark.parametrize(
    ("face_value", "expected"),
    [
        (100000000, 5789604461865809771178549250434395392663499233282028201972879200395660),
        (777000000, 745122839364969082519761808292714979750772102095499125093034646125570),
        (10001, 57890255593098787833002192285115442382396752657554526567072084795477017120),
    ],
)
def test_win_prob_for_ev_five(face_value: int, expected: int) -> None:
    assert win_prob_for(5, face_value) == expected


def test_max_float_can_be_negative() -> None:
    assert max_float(reserve=500, pool_size=50, claimed=100) == -90
