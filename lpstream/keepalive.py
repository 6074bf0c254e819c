"""Liveness of a QUIC peer: ping on a control stream, give the connection up when it is silent.

QUIC runs over UDP, so a peer that was killed or frozen sends nothing at all: without a probe
its streams would hang until the idle timeout (tens of seconds). ``keep_alive`` pings every
``interval`` and closes the connection when a pong is ``timeout`` late; every stream of that
connection then fails at once with ``TransportError``, and callers retry elsewhere.
"""

from __future__ import annotations

import logging

import trio

from lpstream.errors import RemoteProtocolError, TransportError
from lpstream.quic import QuicConnectionHandle, QuicStream
from lpstream.wire import MessageStream, Ping, Pong

__all__ = ["keep_alive", "ping_until_silent"]

log = logging.getLogger("lpstream.quic")


async def keep_alive(
    connection: QuicConnectionHandle,
    *,
    interval: float = 0.5,
    answer_within: float = 1.5,
    peer: str = "",
) -> None:
    """Pings on a stream of its own; returns when the peer went silent or left.

    A silent peer's connection is closed before returning.
    """
    try:
        stream = await connection.open_stream()
    except TransportError:
        return
    try:
        if not await ping_until_silent(
            stream, MessageStream(), interval=interval, answer_within=answer_within, peer=peer
        ):
            connection.close(error_code=0, reason="ping timeout")
    finally:
        await stream.aclose()


async def ping_until_silent(
    stream: QuicStream,
    channel: MessageStream,
    *,
    interval: float,
    answer_within: float,
    peer: str,
) -> bool:
    """Pings on ``stream`` until a pong is late (returns False) or the stream ends (True)."""
    nonce = 0
    try:
        while True:
            nonce += 1
            await stream.send_all(channel.send(Ping(nonce=nonce)))
            with trio.move_on_after(answer_within) as answer:
                while True:
                    message = channel.next_message()
                    if isinstance(message, Pong) and message.nonce == nonce:
                        break
                    if message is not None:
                        continue
                    data = await stream.receive_some(64 * 1024)
                    if not data:
                        return True
                    channel.receive_data(data)
            if answer.cancelled_caught:
                log.warning("%s did not answer a ping within %g s", peer, answer_within)
                return False
            await trio.sleep(interval)
    except (TransportError, RemoteProtocolError, trio.BrokenResourceError) as exc:
        log.info("keep-alive with %s ended: %s", peer, exc)
        return True
