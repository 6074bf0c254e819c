"""A worker process: dials its orchestrator, registers with the secret, serves jobs.

The worker keeps one QUIC connection to the orchestrator. On a control stream it sends
WORKER_HELLO (secret, capacity) and waits for WORKER_WELCOME; the orchestrator then opens one
stream per job towards the worker, which answers each with ``serve_job``. If the connection
drops the worker dials again with a growing delay; a refused secret (403) ends the process,
since retrying cannot help.

A pinned orchestrator address (``quic://host:port#sha256=…``) is checked in the QUIC
handshake, before the secret is sent: a server with another certificate gets nothing, and the
worker says so and keeps dialling (the real orchestrator may come back at that address). An
unpinned address is logged (a warning, off loopback) once at start.
"""

from __future__ import annotations

import logging

import trio

import lpstream
from lpstream.config import HostPort
from lpstream.errors import ConfigError, RemoteProtocolError, TransportError
from lpstream.jobs import Prepended, serve_job, serve_update
from lpstream.orchestrator.address import certificate_pin, note_unpinned
from lpstream.quic import (
    CertificatePinError,
    QuicConnectionHandle,
    QuicStream,
    open_quic_connection,
)
from lpstream.wire import (
    MAX_CAPABILITIES,
    AiModelOffer,
    Error,
    FrameType,
    LiveUpdate,
    LiveUpdated,
    MessageStream,
    Ping,
    Pong,
    WorkerHello,
    WorkerWelcome,
)
from lpstream.worker.local import LocalWorker

__all__ = ["run_remote_worker"]

log = logging.getLogger("lpstream.worker")


async def _register(
    connection: QuicConnectionHandle,
    secret: str,
    capacity: int,
    capabilities: tuple[str, ...],
    ai_models: tuple[AiModelOffer, ...] = (),
) -> tuple[str, QuicStream, MessageStream]:
    control = await connection.open_stream()
    channel = MessageStream()
    await control.send_all(
        channel.send(
            WorkerHello(
                secret=secret,
                capacity=capacity,
                capabilities=capabilities,
                version=lpstream.__version__,
                ai_models=ai_models,
            )
        )
    )
    with trio.fail_after(10):
        while True:
            data = await control.receive_some(64 * 1024)
            if not data:
                channel.receive_eof()
            else:
                channel.receive_data(data)
            message = channel.next_message()
            if isinstance(message, WorkerWelcome):
                return message.worker_id, control, channel
            if isinstance(message, Error):
                if message.code == 403:
                    raise ConfigError(f"orchestrator refused this worker: {message.message}")
                raise RemoteProtocolError(
                    f"orchestrator answered {message.code}: {message.message}"
                )
            if message is not None:
                raise RemoteProtocolError(f"unexpected {type(message).__name__} from orchestrator")
            if not data:
                raise TransportError("orchestrator closed the control stream")


async def run_remote_worker(
    orchestrator: HostPort,
    secret: str,
    local: LocalWorker,
    *,
    retry_delay: float = 1.0,
    max_retry_delay: float = 15.0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serves jobs for ``orchestrator`` until cancelled; reconnects when the link drops.

    ``task_status.started(worker_id)`` once the first registration succeeded.

    Raises:
        ConfigError: the orchestrator refused the secret.
    """
    note_unpinned(orchestrator, log, sends="this worker's secret")
    pin = certificate_pin(orchestrator)
    delay = retry_delay
    started = False
    while True:
        try:
            async with open_quic_connection(
                orchestrator.host, orchestrator.port, pin=pin
            ) as connection:
                worker_id, control, channel = await _register(
                    connection,
                    secret,
                    local.capacity,
                    local.capabilities()[:MAX_CAPABILITIES],
                    local.ai_models()[:MAX_CAPABILITIES],
                )
                log.info("registered with %s as %s", orchestrator, worker_id)
                if not started:
                    task_status.started(worker_id)
                    started = True
                delay = retry_delay
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_answer_pings, control, channel)
                    while True:
                        try:
                            stream = await connection.accept_stream()
                        except TransportError:
                            break
                        nursery.start_soon(_serve_one, local, stream, str(orchestrator))
                    nursery.cancel_scope.cancel()
        except CertificatePinError as exc:
            log.error("%s; retrying in %.0f s", exc, delay)
        except (TransportError, RemoteProtocolError, trio.TooSlowError) as exc:
            log.warning("orchestrator %s: %s; retrying in %.0f s", orchestrator, exc, delay)
        await trio.sleep(delay)
        delay = min(max_retry_delay, delay * 2)


async def _answer_pings(control: QuicStream, channel: MessageStream) -> None:
    """Answers the orchestrator's liveness pings on the control stream."""
    try:
        while True:
            # Answer what is already parsed first: the first ping often arrives in the same
            # read as WORKER_WELCOME, and registration leaves it in the channel.
            while (message := channel.next_message()) is not None:
                if isinstance(message, Ping):
                    await control.send_all(channel.send(Pong(nonce=message.nonce)))
            data = await control.receive_some(64 * 1024)
            if not data:
                return
            channel.receive_data(data)
    except (TransportError, RemoteProtocolError) as exc:
        log.info("control stream ended: %s", exc)


async def _serve_one(local: LocalWorker, stream: trio.abc.HalfCloseableStream, peer: str) -> None:
    """Answers one stream the orchestrator opened: a JOB, or a LIVE_UPDATE."""

    async def update(message: LiveUpdate) -> LiveUpdated:
        return await local.update_live(message.stream_id, message.session_id, message.params)

    try:
        first = b""
        with trio.move_on_after(10):  # the first frame; the job itself has its own deadlines
            first = bytes(await stream.receive_some(64 * 1024))
        if first and first[0] == FrameType.LIVE_UPDATE:
            await serve_update(Prepended(stream, first), update)
        elif first:
            await serve_job(Prepended(stream, first), local.run_job, peer=peer)
    except TransportError as exc:
        log.info("stream from %s failed: %s", peer, exc)
    except Exception:
        # A bug: it ends this stream only, never the connection's other jobs.
        log.exception("stream from %s failed", peer)
    finally:
        await stream.aclose()
