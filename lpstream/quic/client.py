"""The client side: ``open_quic_connection`` dials a peer and yields its connection.

The client owns a connected UDP socket and reads it directly; the connection's driver loop
runs in a background task for as long as the ``async with`` block. A pinned dial checks the
server's certificate in the handshake, before the block runs (``pinning``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import trio
from aioquic.quic.configuration import QuicConfiguration

from lpstream.errors import TransportError
from lpstream.quic.connection import CLOSE_LINGER, QuicConnectionHandle
from lpstream.quic.flow_control import LpstreamQuicConnection
from lpstream.quic.pinning import Fingerprint, PinCheck
from lpstream.quic.tls import LOOPBACK_MAX_DATAGRAM_SIZE, client_configuration
from lpstream.quic.udp import (
    NetworkAddress,
    for_peer,
    open_udp_socket,
    resolve,
    socket_receiver,
)

__all__ = ["open_quic_connection"]


@asynccontextmanager
async def _background(run: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Run ``run`` in a task for the block; the block's own exceptions escape ungrouped."""
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        try:
            yield
        except BaseException as exc:
            error = exc
        finally:
            nursery.cancel_scope.cancel()
    if error is not None:
        try:
            raise error
        finally:
            error = None


# -- client ----------------------------------------------------------------------------------


@asynccontextmanager
async def open_quic_connection(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration | None = None,
    connect_timeout: float = 5.0,
    loopback_datagram_size: int | None = LOOPBACK_MAX_DATAGRAM_SIZE,
    pin: Fingerprint | None = None,
) -> AsyncIterator[QuicConnectionHandle]:
    """Dial a QUIC peer and yield the connection once the handshake is done.

    Leaving the block without an error waits (briefly) for sent data to be acknowledged,
    then closes the connection; any exit closes it and stops its task.

    Args:
        host: name or address to dial.
        port: UDP port.
        configuration: from ``client_configuration``; its defaults when ``None``.
        connect_timeout: seconds allowed for the handshake.
        loopback_datagram_size: datagram size used instead of a smaller configured one when
            the peer is on loopback (``None`` keeps the configuration's).
        pin: the fingerprint the server's certificate must have; checked in the handshake,
            so nothing is sent to a server that fails it. None accepts what ``configuration``
            does.

    Raises:
        CertificatePinError: (a ``TransportError``) the server's certificate is not the pinned
            one.
        TransportError: the name does not resolve, the peer is unreachable, the handshake
            failed or did not finish within ``connect_timeout``.
    """
    configuration = configuration or client_configuration()
    if not configuration.is_client:
        raise ValueError("open_quic_connection needs a client configuration")
    deadline = trio.current_time() + connect_timeout
    with trio.move_on_at(deadline) as resolving:
        family, peer = await resolve(host, port)
    if resolving.cancelled_caught:
        raise TransportError(f"resolving {host!r} took longer than {connect_timeout:g} s")
    configuration = for_peer(configuration, peer, loopback_datagram_size)
    if configuration.server_name is None:
        configuration = dataclasses.replace(configuration, server_name=host)
    with open_udp_socket(family) as sock:
        try:
            sock.connect(peer)
        except OSError as exc:
            raise TransportError(f"cannot reach {host}:{port}: {exc}") from exc

        def send(data: bytes, addr: NetworkAddress) -> None:
            with suppress(BlockingIOError):  # a full socket buffer: a loss QUIC recovers from
                sock.send(data)

        check = None if pin is None else PinCheck(pin)
        connection = QuicConnectionHandle(
            LpstreamQuicConnection(configuration=configuration, certificate_check=check),
            send=send,
            remote_address=peer,
        )
        async with _background(lambda: connection._run(socket_receiver(sock, peer))):
            try:
                connection._quic.connect(peer, now=trio.current_time())
                connection._transmit()
                try:
                    await connection._wait_connected(deadline, connect_timeout)
                except TransportError:
                    if check is not None and check.refused:
                        raise check.error(connection._describe_peer()) from None
                    raise
                yield connection
                await connection._linger(CLOSE_LINGER)
            finally:
                connection.close()
