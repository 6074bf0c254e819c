"""Paid jobs over real QUIC against an orchestrator on the embedded chain (a real EVM).

Honest payments are credited and billed; each kind of tampered payment is refused with its
own reason, credits nothing, and an honest job on the same connection still goes through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import attrs
import pytest
import trio

from lpstream.chainwatch import ChainWatch
from lpstream.config import HostPort
from lpstream.errors import BusyError
from lpstream.gateway.discovery import ChainSource
from lpstream.gateway.orchestrators import OrchestratorPool
from lpstream.gateway.payments import PaymentSender, PriceTooHighError
from lpstream.gateway.selection import SelectionWeights, Selector
from lpstream.gateway.status import OrchestratorFacts
from lpstream.gateway.stream import SegmentJob
from lpstream.jobs import JobError, request_job
from lpstream.media import DEFAULT_PROFILES
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.orchestrator.payments import PaymentReceiver
from lpstream.quic import QuicConnectionHandle, QuicStream, open_quic_connection
from lpstream.trickle import SegmentBuffer
from lpstream.verification import VerificationError
from lpstream.wire import (
    GetInfo,
    Job,
    LiveEvent,
    LiveOpen,
    LivePayment,
    MessageStream,
    OrchInfo,
    ProfileSpec,
)
from lpstream.worker.local import LocalWorker
from payments.chain.contracts import ProtocolParameters
from payments.chain.devchain import DevChain
from payments.keys import NodeKey
from payments.pm import (
    Payment,
    SenderInfo,
    TicketParams,
    TicketSender,
    TicketSenderParams,
    sign_ticket,
)
from payments.store import TicketStore
from tests.mediatools import make_clip

ETH = 10**18
EV = 10**12


@attrs.define
class Paid:
    chain: DevChain
    watch: ChainWatch
    receiver: PaymentReceiver
    gateway_key: NodeKey
    port: int


@pytest.fixture(scope="module")
def segment(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("seg") / "seg.ts"
    make_clip(path, seconds=2, size="320x240", gop=60, fmt="mpegts")
    return path.read_bytes()


async def start_paid_orchestrator(
    nursery: trio.Nursery,
    watch: ChainWatch,
    key: NodeKey,
    store: Path,
    price: Fraction,
    capacity: int = 4,
    reclaim_after: float = 1.0,
) -> tuple[PaymentReceiver, int]:
    """An orchestrator paid in tickets to ``key``'s address, serving QUIC on loopback with its
    own certificate, which it signs with ``key`` in its info."""
    receiver = PaymentReceiver(
        address=key.address,
        watch=watch,
        store=TicketStore(store),
        store_limiter=trio.CapacityLimiter(1),
        price=price,
        ticket_ev=EV,
        signing_key=key.private_key,
    )
    node = Orchestrator(
        secret="s", metrics=Metrics(), local=LocalWorker(capacity=capacity), payments=receiver
    )
    node.pool.reclaim_after = reclaim_after
    address = await nursery.start(node.serve, "127.0.0.1", 0)
    return receiver, address.port


@pytest.fixture
async def paid(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Paid]:
    chain = await trio.to_thread.run_sync(
        lambda: DevChain.start(parameters=ProtocolParameters(round_length=100))
    )
    gateway_key, orchestrator_key = chain.keys[0], chain.keys[1]
    gateway, orchestrator = chain.client(gateway_key), chain.client(orchestrator_key)

    def setup() -> None:
        gateway.fund_deposit_and_reserve(ETH, ETH)
        orchestrator.bond(ETH, orchestrator_key.address)
        orchestrator.register(0, 100)
        snapshot = orchestrator.snapshot()
        chain.mine(snapshot.round_length - snapshot.latest_block % snapshot.round_length)
        orchestrator.initialize_round()

    limiter = trio.CapacityLimiter(1)
    await trio.to_thread.run_sync(setup, limiter=limiter)
    watch = ChainWatch(orchestrator, limiter, interval=0.05)
    await nursery.start(watch.run)
    receiver, port = await start_paid_orchestrator(
        nursery, watch, orchestrator_key, tmp_path / "tickets.sqlite", Fraction(1)
    )
    yield Paid(chain=chain, watch=watch, receiver=receiver, gateway_key=gateway_key, port=port)


async def ticket_params(
    connection: QuicConnectionHandle, sender: str
) -> tuple[OrchInfo, TicketParams]:
    stream = await connection.open_stream()
    channel = MessageStream()
    await stream.send_all(channel.send(GetInfo(sender=sender)))
    with trio.fail_after(10):
        while (info := channel.next_message()) is None:
            channel.receive_data(await stream.receive_some())
    await stream.aclose()
    assert isinstance(info, OrchInfo)
    return info, Payment.decode(info.ticket_params).params


DEFAULT_LADDER = tuple(ProfileSpec.from_profile(p) for p in DEFAULT_PROFILES)


def job(
    seq: int,
    payment: bytes,
    session: str = "honest",
    profiles: tuple[ProfileSpec, ...] = DEFAULT_LADDER,
) -> Job:
    return Job(
        stream_id="s",
        seq=seq,
        duration_ms=2000,
        profiles=profiles,
        session_id=session,
        payment=payment,
    )


def full(data: bytes) -> SegmentBuffer:
    buffer = SegmentBuffer()
    buffer.append(data)
    buffer.close()
    return buffer


async def send(connection: QuicConnectionHandle, j: Job, segment: bytes) -> int:
    stream = await connection.open_stream()
    try:
        outputs = (await request_job(stream, j, full(segment), response_timeout=30)).outputs
    finally:
        await stream.aclose()
    return sum(o.info.pixels for o in outputs)


async def test_an_honest_payment_is_credited_and_the_work_billed(
    paid: Paid, segment: bytes
) -> None:
    sender = TicketSender(private_key=paid.gateway_key.private_key)
    async with open_quic_connection("127.0.0.1", paid.port) as connection:
        info, params = await ticket_params(connection, sender.address)
        assert info.address == paid.receiver.address and info.price_per_unit == 1
        assert EV <= params.ev < EV + 1  # win probability is rounded up, never down
        payment = sender.create_payment(params, 2)
        pixels = await send(connection, job(0, payment.encode()), segment)
    assert pixels == 2 * 60 * 320 * 240
    balance = paid.receiver.ledger.balance(sender.address, "honest")
    assert balance == 2 * params.ev - pixels  # price is 1 wei per pixel: exact to the wei


async def test_tampered_payments_are_refused_with_their_reason(paid: Paid, segment: bytes) -> None:
    sender = TicketSender(private_key=paid.gateway_key.private_key)
    stranger = NodeKey.from_private_key(b"\x07" * 32)
    async with open_quic_connection("127.0.0.1", paid.port) as connection:
        _, params = await ticket_params(connection, sender.address)
        good = sender.create_payment(params, 1)

        def forged_signature() -> bytes:
            ticket = good.ticket(good.tickets[0].sender_nonce)
            bad = sign_ticket(stranger.private_key, ticket)
            return attrs.evolve(
                good,
                tickets=(
                    TicketSenderParams(sender_nonce=good.tickets[0].sender_nonce, signature=bad),
                ),
            ).encode()

        cases: list[tuple[str, bytes]] = [
            ("payment required", b""),
            ("invalid_signature", forged_signature()),
            (
                "invalid_recipient",
                sender.create_payment(attrs.evolve(params, recipient=stranger.address), 1).encode(),
            ),
            (
                "invalid_recipient_rand",
                sender.create_payment(
                    attrs.evolve(params, recipient_rand_hash=b"\x01" * 32), 1
                ).encode(),
            ),
            ("bad payment", b"\x93garbage"),
        ]
        for i, (reason, payment) in enumerate(cases):
            with pytest.raises(JobError, match=reason) as caught:
                await send(connection, job(i, payment, session=f"bad{i}"), segment)
            assert caught.value.code == 402
            assert paid.receiver.ledger.balance(sender.address, f"bad{i}") == 0

        # A replayed nonce: the same payment twice. The first pays, the replay credits nothing.
        await send(connection, job(10, good.encode(), session="replay"), segment)
        after_first = paid.receiver.ledger.balance(sender.address, "replay")
        with pytest.raises(JobError, match="nonce_replayed"):
            await send(connection, job(11, good.encode(), session="replay"), segment)
        assert paid.receiver.ledger.balance(sender.address, "replay") == after_first

        # Expired parameters: mine past their expiration block.
        await paid.watch.call(
            paid.chain.mine,
            params.expiration_block
            - (paid.watch.snapshot.latest_block if paid.watch.snapshot else 0)
            + 1,
        )
        await paid.watch.refresh()
        with pytest.raises(JobError, match="params_expired"):
            await send(
                connection,
                job(12, sender.create_payment(params, 1).encode(), session="late"),
                segment,
            )

        # The honest gateway goes on with fresh parameters.
        _, fresh = await ticket_params(connection, sender.address)
        await send(
            connection, job(13, sender.create_payment(fresh, 1).encode(), session="honest"), segment
        )
    assert paid.receiver.ledger.balance(sender.address, "honest") > 0


async def test_an_unlocking_sender_is_refused(paid: Paid, segment: bytes) -> None:
    sender = TicketSender(private_key=paid.gateway_key.private_key)
    async with open_quic_connection("127.0.0.1", paid.port) as connection:
        _, params = await ticket_params(connection, sender.address)
        await paid.watch.call(paid.chain.client(paid.gateway_key).unlock)
        # The deposit unlocks two rounds on; one round later it is "about to unlock".
        snapshot = await paid.watch.refresh()
        await paid.watch.call(paid.chain.mine_to_round, snapshot.current_round + 1)
        await paid.watch.call(paid.chain.initialize_round)
        await paid.watch.refresh()
        with pytest.raises(JobError, match="sender_unlocking") as caught:
            await send(connection, job(0, sender.create_payment(params, 1).encode()), segment)
        assert caught.value.code == 402


def test_the_gateway_refuses_a_face_value_over_its_deposit_and_a_price_over_its_max() -> None:
    key = NodeKey.from_private_key(b"\x05" * 32)
    params = TicketParams(
        recipient="0x" + "11" * 20,
        face_value=5 * ETH,
        win_prob=2**200,
        recipient_rand_hash=b"\x02" * 32,
        seed=b"\x03" * 32,
        expiration_block=1000,
        price=Fraction(3),
    )
    encoded = Payment(params=params, sender=key.address).encode()
    sender = PaymentSender(sender=TicketSender(private_key=key.private_key))
    funds = SenderInfo(deposit=ETH, withdraw_round=0, reserve=ETH)
    with pytest.raises(BusyError, match="face_value_above_deposit"):
        sender.accept_params("o", encoded, latest_block=10, sender_info=funds)
    capped = PaymentSender(sender=TicketSender(private_key=key.private_key), max_price=Fraction(2))
    with pytest.raises(PriceTooHighError, match="above the maximum 2"):
        capped.accept_params("o", encoded, latest_block=10, sender_info=funds)


async def test_outside_the_active_set_no_paid_work_until_bonded_into_the_next_round(
    paid: Paid, segment: bytes, nursery: trio.Nursery, tmp_path: Path
) -> None:
    newcomer_key = paid.chain.keys[2]
    newcomer = paid.chain.client(newcomer_key)
    receiver, port = await start_paid_orchestrator(
        nursery, paid.watch, newcomer_key, tmp_path / "newcomer.sqlite", Fraction(1)
    )
    sender = TicketSender(private_key=paid.gateway_key.private_key)

    async def paid_job(seq: int) -> int:
        async with open_quic_connection("127.0.0.1", port) as connection:
            _, params = await ticket_params(connection, sender.address)
            payment = sender.create_payment(params, 1).encode()
            return await send(connection, job(seq, payment, session="new"), segment)

    # Not bonded: refused, and nothing is credited.
    with pytest.raises(JobError, match="not in the active set") as caught:
        await paid_job(0)
    assert caught.value.code == 503
    # Bonded and registered: still outside until the next round fixes the active set.
    await paid.watch.call(newcomer.bond, ETH)
    await paid.watch.call(newcomer.register, 0, 100)
    await paid.watch.refresh()
    with pytest.raises(JobError, match="not in the active set"):
        await paid_job(1)
    snapshot = await paid.watch.refresh()
    await paid.watch.call(paid.chain.mine_to_round, snapshot.current_round + 1)
    await paid.watch.call(paid.chain.initialize_round)
    await paid.watch.refresh()
    assert await paid_job(2) == 2 * 60 * 320 * 240
    assert receiver.ledger.balance(sender.address, "new") > 0


def segment_job(seq: int, session: str) -> SegmentJob:
    return SegmentJob(
        stream="s",
        session=session,
        seq=seq,
        duration_ms=2000,
        profiles=DEFAULT_PROFILES,
        source_width=320,
        source_height=240,
    )


async def test_the_gateway_checks_the_orchestrators_signature_before_paying(
    paid: Paid, segment: bytes, nursery: trio.Nursery
) -> None:
    """Signed by the tickets' recipient: used and settled. Signed by another key: refused,
    the orchestrator suspended, nothing settled."""
    sender = PaymentSender(sender=TicketSender(private_key=paid.gateway_key.private_key))
    pool = OrchestratorPool([HostPort("127.0.0.1", paid.port)], payments=sender, watch=paid.watch)
    await nursery.start(pool.run)
    orchestrator = f"127.0.0.1:{paid.port}"

    renditions = await pool.transcode(segment_job(0, "signed"), full(segment))
    assert [r.name for r in renditions] == [p.name for p in DEFAULT_PROFILES]
    assert sender.recipient(orchestrator) == paid.receiver.address
    ev_signed = sender.status().ev_sent.exact
    pixels = sum(r.pixels for r in renditions)
    credit = sender.status().credit
    assert credit[f"{orchestrator}/signed"].exact == ev_signed - pixels  # 1 wei per pixel

    # The same orchestrator now signs with a key that is not its tickets' recipient.
    paid.receiver.signing_key = paid.chain.keys[2].private_key
    with pytest.raises(VerificationError, match="not the orchestrator"):
        await pool.transcode(segment_job(0, "forged"), full(segment))
    assert pool.status()[0].failures == 1
    # The tickets went out with the JOB and the orchestrator billed the work it answered; the
    # gateway settled nothing against the refused result, so the fee it reserved when paying
    # stays reserved: its credit is the EV less that estimate, not the whole EV.
    ev_forged = sender.status().ev_sent.exact - ev_signed
    assert ev_forged > 0
    left = sender.status().credit[f"{orchestrator}/forged"].exact
    assert 0 < left < ev_forged
    # The estimate covers every rendition asked for: the gateway never counts on more
    # credit than the orchestrator holds.
    assert left <= paid.receiver.ledger.balance(sender.address, "forged")


async def test_a_segment_paid_while_the_last_is_in_flight_is_not_short(
    paid: Paid, segment: bytes
) -> None:
    """Segment 1 is paid before segment 0's result is back, and reaches the orchestrator
    after segment 0 was billed: the fee reserved for segment 0 when it was paid keeps the
    second payment from counting that money twice (it used to be refused 402 "short")."""
    sender = PaymentSender(sender=TicketSender(private_key=paid.gateway_key.private_key))
    orchestrator, session = f"127.0.0.1:{paid.port}", "overlap"
    async with open_quic_connection("127.0.0.1", paid.port) as connection:
        info, _ = await ticket_params(connection, sender.address)
        snapshot = await paid.watch.refresh()
        funds = await paid.watch.call(paid.watch.chain.sender_info, sender.address)
        sender.accept_params(
            orchestrator, info.ticket_params, latest_block=snapshot.latest_block, sender_info=funds
        )

        def pay() -> tuple[bytes, Fraction]:
            return sender.payment_for(
                orchestrator,
                session,
                DEFAULT_PROFILES,
                (320, 240),
                30.0,
                2.0,
                latest_block=snapshot.latest_block,
                sender_info=funds,
            )

        first, reserved_first = pay()
        second, reserved_second = pay()
        assert reserved_first == reserved_second > 0
        pixels_first = await send(connection, job(0, first, session), segment)
        pixels_second = await send(connection, job(1, second, session), segment)
    sender.settle(orchestrator, session, pixels_first, reserved_first)
    sender.settle(orchestrator, session, pixels_second, reserved_second)
    balance = paid.receiver.ledger.balance(sender.address, session)
    assert sender.credit(orchestrator, session) == balance  # to the wei
    assert sender.status().ev_sent.exact - pixels_first - pixels_second == balance
    assert paid.receiver.status().payments_refused == 0


async def test_an_unsigned_result_from_a_paid_orchestrator_is_refused(
    paid: Paid, segment: bytes, nursery: trio.Nursery
) -> None:
    sender = PaymentSender(sender=TicketSender(private_key=paid.gateway_key.private_key))
    pool = OrchestratorPool([HostPort("127.0.0.1", paid.port)], payments=sender, watch=paid.watch)
    await nursery.start(pool.run)
    # Connected, and the connection checked: the info signed the certificate it presented.
    await pool.connections.connect(pool.connections.orchestrators[0])
    paid.receiver.signing_key = b""  # from now on it signs nothing, results included
    with pytest.raises(VerificationError, match="missing signature"):
        await pool.transcode(segment_job(0, "unsigned"), full(segment))


async def test_an_orchestrator_above_the_max_price_is_never_offered_work(
    paid: Paid, segment: bytes, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Two orchestrators on one chain at 1 and 5 wei/pixel; the gateway pays at most 2."""
    pricey_receiver, pricey_port = await start_paid_orchestrator(
        nursery, paid.watch, paid.chain.keys[2], tmp_path / "pricey.sqlite", Fraction(5)
    )
    sender = PaymentSender(
        sender=TicketSender(private_key=paid.gateway_key.private_key), max_price=Fraction(2)
    )
    pool = OrchestratorPool(
        [HostPort("127.0.0.1", pricey_port), HostPort("127.0.0.1", paid.port)],
        payments=sender,
        watch=paid.watch,
        selector=Selector(weights=SelectionWeights(stake=0, price=0, random=1)),
        info_deadline=10,  # the first check must hear both, however loaded the machine
    )
    await nursery.start(pool.run)
    facts = {f.address: f for f in pool.status()}
    assert facts[f"127.0.0.1:{pricey_port}"].refused == ("price 5 wei/pixel above the maximum 2")
    assert facts[f"127.0.0.1:{paid.port}"].refused == ""
    # The cheap one's ticket parameters were taken from the info check already.
    assert sender.recipient(f"127.0.0.1:{paid.port}") == paid.receiver.address
    for session in ("a", "b", "c", "d"):
        await pool.transcode(segment_job(0, session), full(segment))
    facts = {f.address: f for f in pool.status()}
    assert facts[f"127.0.0.1:{paid.port}"].jobs == 4
    assert facts[f"127.0.0.1:{pricey_port}"].jobs == 0
    assert pricey_receiver.status().tickets_received == 0


async def test_after_a_402_the_gateway_pays_again_from_fresh_parameters(
    paid: Paid, segment: bytes, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The orchestrator restarts (new secret, no balances): the gateway's next tickets are
    refused with 402; it forgets its credit and parameters, and the retry is paid in full."""
    key = paid.chain.keys[1]  # bonded and active

    def receiver(name: str) -> PaymentReceiver:
        return PaymentReceiver(
            address=key.address,
            watch=paid.watch,
            store=TicketStore(tmp_path / name),
            store_limiter=trio.CapacityLimiter(1),
            price=Fraction(1),
            ticket_ev=EV,
            signing_key=key.private_key,
        )

    node = Orchestrator(
        secret="s", metrics=Metrics(), local=LocalWorker(capacity=2), payments=receiver("a.db")
    )
    port = (await nursery.start(node.serve, "127.0.0.1", 0)).port
    sender = PaymentSender(sender=TicketSender(private_key=paid.gateway_key.private_key))
    pool = OrchestratorPool([HostPort("127.0.0.1", port)], payments=sender, watch=paid.watch)
    await nursery.start(pool.run)
    await pool.transcode(segment_job(0, "s"), full(segment))

    restarted = node.payments = receiver("b.db")
    with pytest.raises(JobError, match="payment refused") as caught:
        await pool.transcode(segment_job(1, "s"), full(segment))
    assert caught.value.code == 402
    assert f"127.0.0.1:{port}/s" not in sender.status().credit

    renditions = await pool.transcode(segment_job(1, "s"), full(segment))
    assert sum(r.pixels for r in renditions) > 0
    credit = sender.status().credit[f"127.0.0.1:{port}/s"].exact
    assert credit == restarted.ledger.balance(sender.address, "s") > 0


async def test_a_busy_orchestrator_takes_no_payment(
    paid: Paid, segment: bytes, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Capacity 1 is 9.98 Mpx/s: a ladder of four renditions the 320x240 source fills (each
    2.3 Mpx/s) takes it all, so a second such session is busy, and its tickets are not taken.
    The first session keeps its room however slowly the tickets are made (``reclaim_after``)."""
    receiver, port = await start_paid_orchestrator(
        nursery,
        paid.watch,
        paid.chain.keys[1],
        tmp_path / "one.sqlite",
        Fraction(1),
        capacity=1,
        reclaim_after=60,
    )
    full_ladder = tuple(
        ProfileSpec(name=f"r{i}", width=640, height=480, bitrate=300_000) for i in range(4)
    )
    sender = TicketSender(private_key=paid.gateway_key.private_key)
    async with open_quic_connection("127.0.0.1", port) as connection:
        _, params = await ticket_params(connection, sender.address)
        payment = sender.create_payment(params, 2).encode()
        await send(connection, job(0, payment, "a", full_ladder), segment)
        received = receiver.status().tickets_received
        assert received == 2
        with pytest.raises(JobError, match="busy") as caught:
            payment = sender.create_payment(params, 2).encode()
            await send(connection, job(0, payment, "b", full_ladder), segment)
        assert caught.value.code == 503
    assert receiver.status().tickets_received == received
    assert receiver.ledger.balance(sender.address, "b") == 0


async def test_a_paid_live_session_runs_jobs_only_from_the_payers_connection(
    paid: Paid, tmp_path: Path
) -> None:
    """The hijack of issue 11: a stranger who knows a funded live session's ids sends pipeline
    jobs in it from its own connection. It gets 403 and nothing runs; the payer's jobs, on the
    connection that opened and paid the session, run."""
    pytest.importorskip("torch")
    sender = TicketSender(private_key=paid.gateway_key.private_key)
    clip = make_clip(tmp_path / "ai.ts", seconds=1, size="160x90", audio=False, fmt="mpegts")
    ai_job = Job(
        stream_id="s",
        seq=0,
        duration_ms=1000,
        profiles=(ProfileSpec(name="ai", width=160, height=90, bitrate=300_000),),
        session_id="funded-ai",
        pipeline="noop",
    )

    async def next_event(stream: QuicStream, channel: MessageStream) -> LiveEvent | None:
        with trio.fail_after(10):
            while (message := channel.next_message()) is None:
                data = await stream.receive_some()
                if not data:
                    return None
                channel.receive_data(data)
        assert isinstance(message, LiveEvent), message
        return message

    async with (
        open_quic_connection("127.0.0.1", paid.port) as payer,
        open_quic_connection("127.0.0.1", paid.port) as stranger,
    ):
        _, params = await ticket_params(payer, sender.address)
        control = await payer.open_stream()
        channel = MessageStream()
        await control.send_all(
            channel.send(LiveOpen(stream_id="s", session_id="funded-ai", pipeline="noop"))
            + channel.send(LivePayment(payment=sender.create_payment(params, 1).encode()))
        )
        paid_event = await next_event(control, channel)
        assert paid_event is not None and paid_event.kind == "paid"
        balance = paid.receiver.ledger.balance(sender.address, "funded-ai")
        assert balance > 0

        stream = await stranger.open_stream()
        with pytest.raises(JobError, match="connection that opened it") as caught:
            await request_job(stream, ai_job, full(clip.read_bytes()), response_timeout=30)
        assert caught.value.code == 403
        await stream.aclose()
        account = paid.receiver.ledger.balance(sender.address, "funded-ai")
        assert account == balance  # nothing ran, nothing started the session's clock

        stream = await payer.open_stream()
        result = await request_job(stream, ai_job, full(clip.read_bytes()), response_timeout=30)
        await stream.aclose()
        assert result.outputs[0].info.frames + result.outputs[0].info.dropped == 30
        await control.send_eof()
        kinds = []
        while (event := await next_event(control, channel)) is not None:
            kinds.append(event.kind)
        assert kinds[-1] == "settled"


async def test_a_certificate_not_signed_by_the_registered_address_gets_no_ticket(
    paid: Paid, segment: bytes, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The ServiceRegistry sends the gateway to a place where another orchestrator answers:
    a real, paid one, whose info signs its own certificate with its own key, not the
    registered address's. The gateway refuses it before any ticket or segment; once the
    registered orchestrator answers at the registered URI, it is paid and works."""
    registered = paid.chain.keys[1]
    impostor, impostor_port = await start_paid_orchestrator(
        nursery, paid.watch, paid.chain.keys[2], tmp_path / "impostor.sqlite", Fraction(1)
    )
    client = paid.chain.client(registered)
    await paid.watch.call(client.set_service_uri, f"quic://127.0.0.1:{impostor_port}")
    sender = PaymentSender(sender=TicketSender(private_key=paid.gateway_key.private_key))
    pool = OrchestratorPool(
        [],
        payments=sender,
        watch=paid.watch,
        sources=[ChainSource(paid.watch)],
        refresh_interval=0.1,
    )
    await nursery.start(pool.run)

    async def wait_for_status(address: str) -> OrchestratorFacts:
        with trio.fail_after(20):
            while True:
                facts = {f.address: f for f in pool.status()}
                if address in facts and (
                    facts[address].refused or facts[address].pipelines is not None
                ):
                    return facts[address]
                await trio.sleep(0.05)

    refused = await wait_for_status(f"127.0.0.1:{impostor_port}")
    assert refused.refused.startswith("its QUIC certificate sha256=")
    assert refused.refused.endswith(
        f"is not signed by {registered.address}, the address it is paid at"
    )
    with pytest.raises(BusyError, match="is not signed by"):
        await pool.transcode(segment_job(0, "s"), full(segment))
    assert impostor.status().tickets_received == 0
    assert sender.status().tickets_sent == 0

    await paid.watch.call(client.set_service_uri, f"quic://127.0.0.1:{paid.port}")
    honest = await wait_for_status(f"127.0.0.1:{paid.port}")
    assert honest.refused == ""
    renditions = await pool.transcode(segment_job(0, "s"), full(segment))
    assert sum(r.pixels for r in renditions) > 0
    assert paid.receiver.status().tickets_received > 0
    assert impostor.status().tickets_received == 0
