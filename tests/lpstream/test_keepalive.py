"""Keep-alive over real QUIC: a busy peer is kept, a frozen one is found within the deadline.

The peer runs its own trio loop on a thread of its own, so freezing it (a blocking sleep on
that loop) stops its QUIC stack entirely, as SIGSTOP would, while the test's loop runs on.
"""

from __future__ import annotations

import queue
import threading
import time

import trio

from lpstream.keepalive import keep_alive
from lpstream.quic import QuicConnectionHandle, QuicStream, open_quic_connection, serve_quic
from lpstream.wire import MessageStream, Ping, Pong


def start_peer(pong_delay: float, freeze_after: float | None, freeze_for: float) -> int:
    """Starts a ping-answering QUIC peer on a thread; returns its UDP port."""
    ports: queue.Queue[int] = queue.Queue()

    async def answer(stream: QuicStream) -> None:
        channel = MessageStream()
        while data := await stream.receive_some():
            channel.receive_data(data)
            while (message := channel.next_message()) is not None:
                if isinstance(message, Ping):
                    await trio.sleep(pong_delay)  # a busy peer: late, but its loop runs
                    await stream.send_all(channel.send(Pong(nonce=message.nonce)))

    async def handle(connection: QuicConnectionHandle) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                nursery.start_soon(answer, await connection.accept_stream())

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(serve_quic, "127.0.0.1", 0, handle)
            ports.put(port)
            if freeze_after is not None:
                await trio.sleep(freeze_after)
                time.sleep(freeze_for)  # noqa: ASYNC251 -- the point: the whole loop stops
            await trio.sleep(max(0.0, 6.0 - (freeze_after or 0.0)))
            nursery.cancel_scope.cancel()

    threading.Thread(target=trio.run, args=(main,), daemon=True).start()
    return ports.get(timeout=10)


async def test_a_peer_late_with_its_pongs_but_talking_is_kept() -> None:
    """Pongs 1 s late against a 0.5 s deadline: the peer's QUIC stack still acknowledges,
    so it is busy, not gone (the old rule dropped it after 0.5 s)."""
    port = start_peer(pong_delay=1.0, freeze_after=None, freeze_for=0)
    async with open_quic_connection("127.0.0.1", port) as connection:
        with trio.move_on_after(4.0) as watching:
            await keep_alive(connection, interval=0.2, answer_within=0.5, peer="busy")
        assert watching.cancelled_caught, "keep_alive gave up on a live peer"


async def test_a_frozen_peer_is_found_within_the_deadline() -> None:
    port = start_peer(pong_delay=0.0, freeze_after=1.0, freeze_for=4.0)
    async with open_quic_connection("127.0.0.1", port) as connection:
        started = trio.current_time()
        with trio.fail_after(4.0):
            await keep_alive(connection, interval=0.2, answer_within=0.5, peer="frozen")
        found_after_freeze = trio.current_time() - started - 1.0
        # Silent from the freeze on: found 0.5 s later, plus at most one ping interval.
        assert 0.3 <= found_after_freeze <= 1.2, found_after_freeze
        with trio.fail_after(2):
            await connection.wait_closed()
