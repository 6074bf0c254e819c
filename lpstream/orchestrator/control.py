"""The orchestrator's control streams: info, pings, live AI sessions and worker sign-up.

How this works
--------------
A stream whose first frame is not a JOB is a control stream (``MessageStream``): it may ask
GET_INFO (answered with ORCH_INFO, ticket parameters for the asking sender included) and PING
(PONG) any number of times, and is closed after ``CONTROL_TIMEOUT`` of silence. Two messages
turn it into something else for the rest of its life:

* LIVE_OPEN: the stream becomes the live AI session's billing and steering channel
  (``lpstream.orchestrator.live``), refused with 503 while the node is over its memory budget.
* WORKER_HELLO: a remote worker registers. It must carry the orchestrator's secret (compared
  in constant time), otherwise it gets ERROR 403 and its connection is closed. Wrong secrets
  are answered slowly, and slower with each one from the same address; while an address backs
  off, its hellos are not read and their connections are closed with code 429
  (``lpstream.orchestrator.hello_backoff``). A registered worker is pinged on this stream; one
  that stops answering, or whose stream ends, is dropped and its jobs move to other workers.

Whatever a peer gets wrong is answered with ERROR on this stream (a peer that leaves is logged
at debug); every answer is followed by our FIN, never by a reset.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from typing import TYPE_CHECKING

import trio

from lpstream.errors import LpstreamError, ProtocolError, RemoteProtocolError, TransportError
from lpstream.keepalive import ping_until_silent
from lpstream.orchestrator.live import serve_live_control
from lpstream.orchestrator.workers import RemoteWorker
from lpstream.quic import QuicConnectionHandle, QuicStream
from lpstream.wire import (
    Error,
    GetInfo,
    LiveOpen,
    MessageStream,
    Ping,
    Pong,
    WorkerHello,
    WorkerWelcome,
)

if TYPE_CHECKING:
    from lpstream.orchestrator.orchestrator import Orchestrator
    from lpstream.worker.live import LiveSessions

__all__ = ["CONTROL_TIMEOUT", "finish_stream", "serve_control"]

log = logging.getLogger("lpstream.orchestrator")

CONTROL_TIMEOUT = 10.0
"""Seconds a control stream may stay silent before it is closed."""


async def serve_control(
    orchestrator: Orchestrator,
    connection: QuicConnectionHandle,
    stream: QuicStream,
    first: bytes,
    peer: str,
) -> None:
    """Serves one control stream whose first bytes, already read, are ``first``."""
    channel = MessageStream()
    channel.receive_data(first)
    worker: RemoteWorker | None = None
    try:
        while worker is None:
            while (message := channel.next_message()) is not None:
                if isinstance(message, GetInfo):
                    await stream.send_all(channel.send(await orchestrator.info(message.sender)))
                elif isinstance(message, Ping):
                    await stream.send_all(channel.send(Pong(nonce=message.nonce)))
                elif isinstance(message, LiveOpen):
                    orchestrator.memory.check("a live AI session")
                    async with trio.open_nursery() as nursery:
                        if orchestrator.local is not None:
                            # Its first job would wait for the pipelines' runtime to load.
                            nursery.start_soon(_preload, orchestrator.local.live)
                        await serve_live_control(
                            orchestrator.live_accounts(),
                            stream,
                            channel,
                            message,
                            orchestrator.update_live,
                            peer=peer,
                            owner=connection,
                        )
                    return
                elif isinstance(message, WorkerHello):
                    worker = await _register(
                        orchestrator, connection, stream, channel, message, peer
                    )
                    if worker is None:
                        return
                    break
                else:
                    raise RemoteProtocolError(
                        f"unexpected {type(message).__name__} on a control stream"
                    )
            if worker is not None:
                break
            with trio.move_on_after(CONTROL_TIMEOUT):
                data = await stream.receive_some(64 * 1024)
                if not data:
                    # The peer is done asking: check it ended on a whole frame, then
                    # our FIN follows every answer (in ``finally``).
                    channel.receive_eof()
                    channel.next_message()
                    return
                channel.receive_data(data)
                continue
            return  # an idle control stream
        await _watch_worker(orchestrator, worker, stream, channel)
    except LpstreamError as exc:
        if isinstance(exc, TransportError):
            # Routine for an info or ping stream; worth a line only for a worker's.
            log.log(
                logging.INFO if worker is not None else logging.DEBUG,
                "control stream from %s ended: %s",
                peer,
                exc,
            )
            return
        code = exc.code if isinstance(exc, ProtocolError) else 503
        log.warning("control stream from %s: %s", peer, exc)
        with contextlib.suppress(
            TransportError, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            await stream.send_all(channel.send(Error(code=code, message=str(exc)[:1000])))
    except BaseException:
        stream.reset()  # cancelled, or a bug (the stream's task logs it): no clean end
        raise
    finally:
        if worker is not None:
            orchestrator.remove_worker(worker.worker_id)
            log.warning(
                "worker %s (%s) left; its jobs move to other workers", worker.worker_id, peer
            )
            connection.close()
        await finish_stream(stream)


async def _watch_worker(
    orchestrator: Orchestrator, worker: RemoteWorker, stream: QuicStream, channel: MessageStream
) -> None:
    """Pings a registered worker; one that stops answering is dropped at once.

    A killed worker sends nothing (QUIC is UDP), so without this its jobs would hang
    until the QUIC idle timeout. Returns when the worker is gone.
    """
    await ping_until_silent(
        stream,
        channel,
        interval=orchestrator.worker_ping_interval,
        answer_within=orchestrator.worker_ping_timeout,
        peer=f"worker {worker.worker_id}",
        connection=worker.connection,
    )


async def _register(
    orchestrator: Orchestrator,
    connection: QuicConnectionHandle,
    stream: QuicStream,
    channel: MessageStream,
    hello: WorkerHello,
    peer: str,
) -> RemoteWorker | None:
    backoff, host = orchestrator.hello_backoff, str(connection.remote_address[0])
    wait = backoff.wait_time(host, trio.current_time())
    if wait > 0:
        log.info("worker hello from %s turned away unread: backing off for %.1f s", peer, wait)
        connection.close(
            error_code=429,
            reason=f"too many wrong secrets from this address; retry in {wait:.0f} s",
        )
        return None
    secret = orchestrator.secret
    if not secret or not hmac.compare_digest(hello.secret.encode("utf-8"), secret.encode("utf-8")):
        delay = backoff.refuse(host, trio.current_time())
        log.warning(
            "worker at %s refused: wrong orchestrator secret (answered in %.1f s)", peer, delay
        )
        await trio.sleep(delay)
        await stream.send_all(channel.send(Error(code=403, message="wrong orchestrator secret")))
        await stream.send_eof()
        await trio.sleep(0.2)  # let the answer leave before the connection closes
        connection.close(error_code=403, reason="wrong orchestrator secret")
        return None
    backoff.accept(host)
    worker = orchestrator.add_remote_worker(connection, hello)
    await stream.send_all(channel.send(WorkerWelcome(worker_id=worker.worker_id)))
    log.info(
        "worker %s registered from %s with capacity %d", worker.worker_id, peer, worker.capacity
    )
    return worker


async def finish_stream(stream: QuicStream) -> None:
    """Ends a stream we answered on: our FIN after everything sent (a reset could make the
    peer drop an answer it has not read yet), then the receiving side is let go."""
    with contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_eof()
    await stream.aclose()


async def _preload(live: LiveSessions) -> None:
    """Loads what pipelines run on (torch) while a new session is being paid for."""
    await trio.to_thread.run_sync(live.preload, abandon_on_cancel=True)
