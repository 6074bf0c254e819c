"""The remote worker's control stream, against an orchestrator end written out by hand."""

from __future__ import annotations

import trio

from lpstream.config import HostPort
from lpstream.quic import QuicConnectionHandle, serve_quic
from lpstream.wire import MessageStream, Ping, Pong, WorkerHello, WorkerWelcome
from lpstream.worker.local import LocalWorker
from lpstream.worker.remote import run_remote_worker


async def test_a_ping_sent_with_the_welcome_is_answered(nursery: trio.Nursery) -> None:
    """WORKER_WELCOME and the first PING in one write: both are read in one go by the worker."""
    pongs: list[int] = []
    hellos: list[WorkerHello] = []
    done = trio.Event()

    async def orchestrator_end(connection: QuicConnectionHandle) -> None:
        control = await connection.accept_stream()
        channel = MessageStream()
        while (hello := channel.next_message()) is None:
            channel.receive_data(await control.receive_some())
        assert isinstance(hello, WorkerHello)
        hellos.append(hello)
        await control.send_all(
            channel.send(WorkerWelcome(worker_id="remote-1")) + channel.send(Ping(nonce=1))
        )
        with trio.move_on_after(5):
            while (answer := channel.next_message()) is None:
                channel.receive_data(await control.receive_some())
            assert isinstance(answer, Pong)
            pongs.append(answer.nonce)
        done.set()
        await trio.sleep_forever()

    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orchestrator_end)
    worker_id = await nursery.start(
        run_remote_worker, HostPort("127.0.0.1", port), "s", LocalWorker(capacity=1)
    )
    with trio.fail_after(10):
        await done.wait()
    assert worker_id == "remote-1"
    assert hellos[0].secret == "s" and hellos[0].capacity == 1
    assert pongs == [1]
    nursery.cancel_scope.cancel()
