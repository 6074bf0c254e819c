"""Liveness of a QUIC peer: ping on a control stream, give the connection up when it is silent.

QUIC runs over UDP, so a peer that was killed or frozen sends nothing at all: without a probe
its streams would hang until the idle timeout (tens of seconds). ``keep_alive`` pings every
``interval`` and closes the connection when a pong is ``answer_within`` late; every stream of
that connection then fails at once with ``TransportError``, and callers retry elsewhere.

A late pong alone does not condemn a peer that is still talking: on a saturated machine a
busy peer (or our own loop) can be seconds late while the peer's QUIC stack keeps sending.
So while a pong is awaited the peer's QUIC stack is probed (PING frames, which any live stack
acknowledges within milliseconds) and the deadline runs from the last datagram heard from the
peer (``QuicConnectionHandle.last_heard``), but never past ``patience`` times
``answer_within`` after the ping. A killed or stopped peer sends nothing at all and is found
``answer_within`` after its last datagram, as before.
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
            stream,
            MessageStream(),
            interval=interval,
            answer_within=answer_within,
            peer=peer,
            connection=connection,
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
    connection: QuicConnectionHandle | None = None,
    patience: float = 4.0,
) -> bool:
    """Pings on ``stream`` until a pong is late (returns False) or the stream ends (True).

    Late means ``answer_within`` after the ping; with the ping stream's ``connection``, it
    means ``answer_within`` with no datagram at all from the peer (whose QUIC stack is probed
    meanwhile), or ``patience`` times ``answer_within`` after the ping in any case.
    """
    nonce = 0
    try:
        while True:
            nonce += 1
            sent_at = trio.current_time()
            await stream.send_all(channel.send(Ping(nonce=nonce)))
            if not await _await_pong(
                stream, channel, nonce, sent_at, answer_within, connection, patience
            ):
                waited = trio.current_time() - sent_at
                log.warning("%s did not answer a ping within %.1f s", peer, waited)
                return False
            await trio.sleep(interval)
    except _StreamEnded:
        return True
    except (TransportError, RemoteProtocolError, trio.BrokenResourceError) as exc:
        log.info("keep-alive with %s ended: %s", peer, exc)
        return True


class _StreamEnded(Exception):
    """The peer ended the ping stream: it left in order."""


async def _await_pong(
    stream: QuicStream,
    channel: MessageStream,
    nonce: int,
    sent_at: float,
    answer_within: float,
    connection: QuicConnectionHandle | None,
    patience: float,
) -> bool:
    """Whether the pong for ``nonce`` came before the peer counted as silent.

    With a ``connection``, the wait is cut into thirds of ``answer_within``; each step sends
    a QUIC PING, which a live peer's stack acknowledges at once, and the deadline becomes
    ``answer_within`` after the last datagram heard (at most ``patience`` times it after the
    ping).
    """
    give_up = sent_at + patience * answer_within
    step = answer_within / 3
    looked_again = False
    while True:
        heard = connection.last_heard if connection is not None else sent_at
        deadline = min(give_up, max(heard, sent_at) + answer_within)
        now = trio.current_time()
        if now >= deadline:
            if connection is None or looked_again:
                return _pong_buffered(channel, nonce)
            # Our own loop may be the late one: let the connection task read what is
            # queued, then judge again.
            looked_again = True
            await trio.sleep(0.02)
            continue
        if connection is not None:
            connection.probe()
        with trio.move_on_at(min(deadline, now + step)):
            while True:
                message = channel.next_message()
                if isinstance(message, Pong) and message.nonce == nonce:
                    return True
                if message is not None:
                    continue
                data = await stream.receive_some(64 * 1024)
                if not data:
                    raise _StreamEnded
                channel.receive_data(data)


def _pong_buffered(channel: MessageStream, nonce: int) -> bool:
    while (message := channel.next_message()) is not None:
        if isinstance(message, Pong) and message.nonce == nonce:
            return True
    return False
