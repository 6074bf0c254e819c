"""The orchestrator signs its QUIC certificate's fingerprint with its ticket key; the gateway's
check says whether a connection's certificate belongs to the address it pays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import attrs
import msgspec
import pytest
import trio
from eth_account import Account
from eth_account.messages import encode_defunct

from lpstream.chainwatch import ChainWatch
from lpstream.errors import RemoteProtocolError
from lpstream.metrics import Metrics
from lpstream.orchestrator.certificate_claim import (
    CLAIM_PREFIX,
    certificate_belongs_to,
    certificate_claim,
    sign_certificate,
)
from lpstream.orchestrator.identity import OrchestratorIdentity
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.orchestrator.payments import PaymentReceiver
from lpstream.quic import Fingerprint, QuicConnectionHandle, open_quic_connection
from lpstream.wire import FrameType, GetInfo, MessageStream, OrchInfo, decode_message
from lpstream.wire.framing import Frame
from payments.chain import DevChain
from payments.chain.contracts import ProtocolParameters
from payments.chain.devchain import dev_key
from payments.keys import NodeKey
from payments.store import TicketStore

ORCHESTRATOR, ATTACKER = dev_key(1), dev_key(2)
SEEN = Fingerprint(b"\x11" * 32)
OTHER = Fingerprint(b"\x22" * 32)


def info(signature: bytes) -> OrchInfo:
    return OrchInfo(version="1", address=ORCHESTRATOR.address, certificate_signature=signature)


def test_the_claim_is_documented_text_that_any_wallet_signs_the_same_way() -> None:
    assert certificate_claim(SEEN) == CLAIM_PREFIX + b"sha256=" + b"11" * 32
    assert certificate_claim(SEEN).decode() == (
        "lpstream orchestrator QUIC certificate sha256=" + "11" * 32
    )
    wallet = Account.sign_message(encode_defunct(certificate_claim(SEEN)), ORCHESTRATOR.private_key)
    assert sign_certificate(ORCHESTRATOR.private_key, SEEN) == bytes(wallet.signature)


def test_the_right_signer_passes_another_key_or_fingerprint_fails() -> None:
    signed = info(sign_certificate(ORCHESTRATOR.private_key, SEEN))
    assert certificate_belongs_to(signed, SEEN, ORCHESTRATOR.address)
    assert certificate_belongs_to(signed, SEEN, ORCHESTRATOR.address.lower())
    assert not certificate_belongs_to(signed, OTHER, ORCHESTRATOR.address)  # another certificate
    assert not certificate_belongs_to(signed, SEEN, ATTACKER.address)  # paying someone else
    forged = info(sign_certificate(ATTACKER.private_key, SEEN))  # another key, same claim
    assert not certificate_belongs_to(forged, SEEN, ORCHESTRATOR.address)


@pytest.mark.parametrize("signature", [b"", b"\x00" * 65, b"\xff" * 64 + b"\x1b"])
def test_no_signature_or_one_that_recovers_nothing_fails(signature: bytes) -> None:
    assert not certificate_belongs_to(info(signature), SEEN, ORCHESTRATOR.address)


def test_without_an_observed_certificate_or_a_real_address_nothing_belongs() -> None:
    signed = info(sign_certificate(ORCHESTRATOR.private_key, SEEN))
    assert not certificate_belongs_to(signed, None, ORCHESTRATOR.address)
    assert not certificate_belongs_to(signed, SEEN, "not an address")


def test_the_signature_field_is_optional_and_bounded_on_the_wire() -> None:
    old_peer = msgspec.msgpack.encode({"version": "0.1.0", "capacity": 2})
    decoded = decode_message(Frame(type=FrameType.ORCH_INFO, body=old_peer))
    assert isinstance(decoded, OrchInfo) and decoded.certificate_signature == b""
    for size in (64, 66, 1000):
        body = msgspec.msgpack.encode({"version": "1", "certificate_signature": b"\x01" * size})
        with pytest.raises(RemoteProtocolError) as refused:
            decode_message(Frame(type=FrameType.ORCH_INFO, body=body))
        assert refused.value.code == 400


# --- over real QUIC, with a paid orchestrator on the embedded chain ----------------------------


@attrs.frozen
class Chain:
    watch: ChainWatch


@pytest.fixture
async def chain() -> AsyncIterator[Chain]:
    dev = await trio.to_thread.run_sync(
        lambda: DevChain.start(parameters=ProtocolParameters(round_length=100), accounts=0)
    )
    yield Chain(watch=ChainWatch(dev.client(), trio.CapacityLimiter(1)))


def paid_orchestrator(chain: Chain, folder: Path, address: str, key: NodeKey) -> Orchestrator:
    receiver = PaymentReceiver(
        address=address,
        signing_key=key.private_key,
        watch=chain.watch,
        store=TicketStore(folder / "tickets.sqlite"),
        store_limiter=trio.CapacityLimiter(1),
        price=Fraction(1),
    )
    return Orchestrator(
        secret="s",
        metrics=Metrics(),
        payments=receiver,
        identity=OrchestratorIdentity.generate(),
    )


async def ask_info(connection: QuicConnectionHandle) -> OrchInfo:
    stream = await connection.open_stream()
    channel = MessageStream()
    await stream.send_all(channel.send(GetInfo()))
    with trio.fail_after(5):
        while (answer := channel.next_message()) is None:
            channel.receive_data(await stream.receive_some())
    await stream.aclose()
    assert isinstance(answer, OrchInfo)
    return answer


async def test_a_gateway_sees_that_the_certificate_belongs_to_the_address_it_pays(
    nursery: trio.Nursery, chain: Chain, tmp_path: Path
) -> None:
    honest = paid_orchestrator(chain, tmp_path, ORCHESTRATOR.address, ORCHESTRATOR)
    address = await nursery.start(honest.serve, "127.0.0.1", 0)
    async with open_quic_connection("127.0.0.1", address.port, pin=address.pin) as connection:
        answer = await ask_info(connection)
        observed = connection.peer_fingerprint
    assert observed == address.pin and answer.address == ORCHESTRATOR.address
    assert certificate_belongs_to(answer, observed, ORCHESTRATOR.address)


async def test_an_impostor_claiming_the_address_fails_the_check(
    nursery: trio.Nursery, chain: Chain, tmp_path: Path
) -> None:
    """It says it is the orchestrator the chain lists, but signs with a key of its own."""
    impostor = paid_orchestrator(chain, tmp_path, ORCHESTRATOR.address, ATTACKER)
    address = await nursery.start(impostor.serve, "127.0.0.1", 0)
    async with open_quic_connection("127.0.0.1", address.port) as connection:
        answer = await ask_info(connection)
        observed = connection.peer_fingerprint
    assert answer.address == ORCHESTRATOR.address and len(answer.certificate_signature) == 65
    assert not certificate_belongs_to(answer, observed, ORCHESTRATOR.address)
