"""Wrong worker secrets: exponential back-off per source address, sans-IO and over real QUIC."""

from __future__ import annotations

import trio

from lpstream.config import OrchestratorSection
from lpstream.errors import TransportError
from lpstream.metrics import Metrics
from lpstream.orchestrator.hello_backoff import HelloBackoff, source_of
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.quic import open_quic_connection
from lpstream.wire import Error, MessageStream, WorkerHello, WorkerWelcome

# --- sans-IO, with an explicit clock -------------------------------------------------------------


def test_each_wrong_secret_in_a_row_doubles_the_delay_up_to_the_cap() -> None:
    backoff = HelloBackoff(first_delay=1, max_delay=10)
    now, delays = 0.0, []
    for _ in range(6):
        assert backoff.wait_time("192.0.2.1", now) == 0
        delays.append(backoff.refuse("192.0.2.1", now))
        now += delays[-1]
    assert delays == [1, 2, 4, 8, 10, 10]


def test_while_an_address_backs_off_its_hellos_are_turned_away_unread() -> None:
    backoff = HelloBackoff(first_delay=1, max_delay=10)
    assert backoff.refuse("192.0.2.1", 100.0) == 1
    assert backoff.wait_time("192.0.2.1", 100.25) == 0.75
    assert backoff.wait_time("192.0.2.1", 100.5) == 0.5
    assert backoff.wait_time("192.0.2.2", 100.5) == 0  # another address is not held back
    assert backoff.wait_time("192.0.2.1", 101.0) == 0
    assert backoff.statistics().turned_away == 2 and backoff.statistics().refused == 1


def test_a_right_secret_or_a_long_quiet_starts_again_from_the_first_delay() -> None:
    backoff = HelloBackoff(first_delay=1, max_delay=10)
    for now in (0.0, 1.0, 3.0):
        backoff.refuse("192.0.2.1", now)
    backoff.accept("192.0.2.1")
    assert backoff.refuse("192.0.2.1", 10.0) == 1
    assert backoff.refuse("192.0.2.1", 11.0) == 2
    assert backoff.refuse("192.0.2.1", 13.0 + 10.0) == 1  # quiet for max_delay after its delay


def test_an_ipv6_slash_64_is_one_address() -> None:
    backoff = HelloBackoff(first_delay=1, max_delay=10)
    backoff.refuse("2001:db8:1:2::1", 0.0)
    assert backoff.wait_time("2001:db8:1:2:ffff::9", 0.5) == 0.5
    assert backoff.wait_time("2001:db8:1:3::1", 0.5) == 0
    assert source_of("::ffff:192.0.2.7") == source_of("192.0.2.7") == "192.0.2.7"


def test_memory_is_bounded_forgetting_the_quietest_addresses_first() -> None:
    backoff = HelloBackoff(first_delay=1, max_delay=10, max_addresses=3)
    for i in range(5):
        backoff.refuse(f"192.0.2.{i}", 0.1 * i)
    assert backoff.statistics().addresses == 3
    assert backoff.wait_time("192.0.2.0", 0.5) == 0  # forgotten
    assert backoff.wait_time("192.0.2.4", 0.5) > 0  # remembered


def test_a_zero_first_delay_turns_the_back_off_off() -> None:
    backoff = HelloBackoff(first_delay=0)
    assert backoff.refuse("192.0.2.1", 0.0) == 0
    assert backoff.wait_time("192.0.2.1", 0.0) == 0


def test_the_setting_states_the_back_offs_default() -> None:
    assert OrchestratorSection().worker_hello_backoff == HelloBackoff().first_delay


# --- over real QUIC on loopback ------------------------------------------------------------------


async def serve(nursery: trio.Nursery, first_delay: float) -> tuple[Orchestrator, int]:
    """An orchestrator whose secret is "right", with that back-off, and its QUIC port."""
    orchestrator = Orchestrator(
        secret="right", metrics=Metrics(), hello_backoff=HelloBackoff(first_delay=first_delay)
    )
    address = await nursery.start(orchestrator.serve, "127.0.0.1", 0)
    return orchestrator, address.port


async def hello(port: int, secret: str) -> tuple[object, float]:
    """One worker hello on a fresh connection: the answer (or the close reason) and when."""
    async with open_quic_connection("127.0.0.1", port) as connection:
        stream = await connection.open_stream()
        channel = MessageStream()
        await stream.send_all(channel.send(WorkerHello(secret=secret, capacity=1)))
        try:
            with trio.fail_after(10):
                while (answer := channel.next_message()) is None:
                    data = await stream.receive_some()
                    if not data:
                        raise TransportError("closed without an answer")
                    channel.receive_data(data)
        except TransportError as exc:
            return str(exc), trio.current_time()
        return answer, trio.current_time()


async def test_wrong_secrets_from_one_address_are_answered_no_faster_than_the_back_off(
    nursery: trio.Nursery,
) -> None:
    orchestrator, port = await serve(nursery, 0.2)
    start = trio.current_time()
    answered: list[float] = []
    turned_away = 0

    async def guess() -> None:
        nonlocal turned_away
        while True:
            answer, at = await hello(port, "guess")
            if answer == Error(code=403, message="wrong orchestrator secret"):
                answered.append(at - start)
            else:
                assert "too many wrong secrets from this address" in str(answer), answer
                turned_away += 1

    with trio.fail_after(20):
        async with trio.open_nursery() as guessers:  # three at once, as fast as they can
            for _ in range(3):
                guessers.start_soon(guess)
            while len(answered) < 4:  # noqa: ASYNC110 (the guessers' tally)
                await trio.sleep(0.01)
            guessers.cancel_scope.cancel()
    # The n-th wrong secret is answered 0.2 * 2**(n-1) s after the one before, at the earliest:
    # 0.2, 0.6, 1.4 and 3.0 s from the start, however many were tried in between.
    for got, least in zip(sorted(answered)[:4], [0.2, 0.6, 1.4, 3.0], strict=True):
        assert got >= least
    assert turned_away > 0
    statistics = orchestrator.status().worker_hellos
    assert statistics.refused >= 4 and statistics.turned_away >= turned_away

    # Once the back-off has run out the right secret is let in (and clears the address).
    with trio.fail_after(10):
        for _ in range(100):
            answer, _ = await hello(port, "right")
            if isinstance(answer, WorkerWelcome):
                break
            await trio.sleep(0.1)
    assert isinstance(answer, WorkerWelcome)


async def test_without_back_off_wrong_secrets_are_answered_at_once(
    nursery: trio.Nursery,
) -> None:
    _, port = await serve(nursery, 0)
    start = trio.current_time()
    for _ in range(3):
        answer, _ = await hello(port, "guess")
        assert answer == Error(code=403, message="wrong orchestrator secret")
    assert trio.current_time() - start < 3
