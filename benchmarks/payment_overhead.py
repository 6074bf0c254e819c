"""What payments add to a segment: bytes in the JOB header and time in the orchestrator.

Runs the orchestrator's real payment path (``PaymentReceiver``: decode, the validation of
every ticket in PAYMENTS.md's order with signature recovery and the win check, crediting the
ledger, billing) against the embedded chain, for payments as a gateway makes them, one per
segment. Prints the median and p95 time per segment with its share of a 2 s segment's
round trip, compared with the target (< 1 ms), and the encoded size of a payment by ticket
count, compared with the JOB header's 64 KiB limit and a 720p segment's ~1 MB.

    python benchmarks/payment_overhead.py [--segments 400]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import trio

from lpstream.chainwatch import ChainWatch
from lpstream.orchestrator.payments import PaymentReceiver
from payments.chain.contracts import ProtocolParameters
from payments.chain.devchain import DevChain
from payments.pm import Payment, TicketSender
from payments.store import TicketStore

ETH = 10**18


async def main(segments: int) -> None:
    chain = DevChain.start(parameters=ProtocolParameters(round_length=1000))
    gateway_key, orchestrator_key = chain.keys[0], chain.keys[1]
    gateway, orchestrator = chain.client(gateway_key), chain.client(orchestrator_key)
    gateway.fund_deposit_and_reserve(ETH, ETH)
    orchestrator.bond(ETH, orchestrator_key.address)
    orchestrator.register(0, 100)
    snapshot = orchestrator.snapshot()
    chain.mine(snapshot.round_length - snapshot.latest_block % snapshot.round_length)
    orchestrator.initialize_round()
    limiter = trio.CapacityLimiter(1)
    watch = ChainWatch(orchestrator, limiter)
    await watch.refresh()
    with tempfile.TemporaryDirectory() as tmp:
        receiver = PaymentReceiver(
            address=orchestrator_key.address,
            watch=watch,
            store=TicketStore(Path(tmp) / "tickets.sqlite"),
            store_limiter=trio.CapacityLimiter(1),
            price=Fraction(1),
        )
        sender = TicketSender(private_key=gateway_key.private_key)
        params = await receiver.ticket_params(sender.address)
        print(f"ticket: face value {params.face_value} wei, EV {float(params.ev):.3g} wei, "
              f"win probability {params.win_prob / (2**256 - 1):.2e}")  # fmt: skip
        for count in (1, 2, 5, 10, 100):
            size = len(sender.create_payment(params, count).encode())
            print(f"payment bytes, {count:>3} tickets: {size:>5} B")
        payments = [sender.create_payment(params, 1).encode() for _ in range(segments)]
        times = []
        for i, payment in enumerate(payments):
            started = time.perf_counter()
            await receiver.receive(payment, "bench")
            receiver.bill(sender.address, "bench", 1000)
            times.append(time.perf_counter() - started)
            if i == 0:
                times.clear()  # the first call reads the sender's funds from the chain
        times.sort()
        median = statistics.median(times) * 1000
        p95 = times[int(0.95 * (len(times) - 1))] * 1000
        won = receiver.status().tickets_won
        print(f"segments: {segments}, tickets won: {won}")
        print(f"payment check per segment: median {median:.3f} ms, p95 {p95:.3f} ms "
              f"(target < 1 ms; ratio {median:.2f})")  # fmt: skip
        print(f"share of a 2 s segment's round trip: {median / 2000:.5%}")
        share = len(Payment.decode(payments[0]).encode()) / 1_000_000
        print(f"a 1-ticket payment vs a 720p 2 s segment (~1 MB): {share:.4%} of the bytes")
        # Winning tickets are written to SQLite (fsync) before the answer: their own cost.
        winners = PaymentReceiver(
            address=orchestrator_key.address,
            watch=watch,
            store=TicketStore(Path(tmp) / "winners.sqlite"),
            store_limiter=trio.CapacityLimiter(1),
            price=Fraction(1),
            max_face_value=2 * receiver.ticket_ev,
        )
        win_params = await winners.ticket_params(sender.address)
        win_times = []
        for _ in range(100):
            payment = sender.create_payment(win_params, 1).encode()
            started = time.perf_counter()
            await winners.receive(payment, "bench")
            win_times.append(time.perf_counter() - started)
        won = winners.status().tickets_won
        print(
            f"with win probability 1/2 ({won} of 100 won, each persisted before the answer): "
            f"median {statistics.median(win_times) * 1000:.3f} ms, "
            f"max {max(win_times) * 1000:.3f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=400)
    trio.run(main, parser.parse_args().segments)
