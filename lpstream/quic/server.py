"""The server side: ``serve_quic`` serves many QUIC connections on one UDP socket.

How this works
--------------
The server owns one socket; one task reads it and routes each datagram by its destination
connection ID into the owning connection's bounded channel (a full channel drops the datagram,
which QUIC recovers from like any loss). Each connection keeps its routes current as aioquic
issues and retires connection IDs, and removes them when it ends. Initial packets (of at least
1200 bytes, while fewer than ``max_connections`` are served) for unknown IDs make a new
connection; a datagram of an unsupported version is answered with Version Negotiation; other
unknown datagrams are dropped.

Each server connection runs its driver loop and the application's handler in a nursery of its
own: a handshake that fails or times out, a handler that raises, or a peer that goes away ends
that connection only; the handler returning closes the connection once its FIN'd streams are
acknowledged (for at most ``CLOSE_LINGER``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from contextlib import suppress

import trio
from aioquic._buffer import Buffer  # aioquic.buffer re-exports it implicitly
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from lpstream.errors import TransportError
from lpstream.quic.connection import CLOSE_LINGER, QuicConnectionHandle
from lpstream.quic.flow_control import LpstreamQuicConnection
from lpstream.quic.tls import LOOPBACK_MAX_DATAGRAM_SIZE, server_configuration
from lpstream.quic.udp import (
    RECEIVE_BATCH,
    NetworkAddress,
    channel_receiver,
    for_peer,
    open_udp_socket,
    resolve,
)

__all__ = ["serve_quic"]

logger = logging.getLogger("lpstream.quic")

SERVER_CHANNEL_SIZE = 256
"""Datagrams queued per server connection before further ones are dropped."""


class _QuicServer:
    """Routes datagrams from one socket to connections by destination connection ID."""

    def __init__(
        self,
        sock: socket.socket,
        configuration: QuicConfiguration,
        handler: Callable[[QuicConnectionHandle], Awaitable[None]],
        nursery: trio.Nursery,
        *,
        max_connections: int,
        handshake_timeout: float,
        loopback_datagram_size: int | None,
    ) -> None:
        self._sock = sock
        self._configuration = configuration
        self._handler = handler
        self._nursery = nursery
        self._max_connections = max_connections
        self._handshake_timeout = handshake_timeout
        self._loopback_datagram_size = loopback_datagram_size
        self._routes: dict[bytes, trio.MemorySendChannel[tuple[bytes, NetworkAddress]]] = {}
        self._connections = 0

    async def run(self) -> None:
        sock = self._sock
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(RECEIVE_BATCH):
                try:
                    data, addr = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                except OSError:
                    continue  # an ICMP error for some earlier datagram; nothing to do
                self._route(data, tuple(addr))

    def _send(self, data: bytes, addr: NetworkAddress) -> None:
        with suppress(OSError):  # a full buffer or an unreachable peer: a loss QUIC recovers from
            self._sock.sendto(data, addr)

    def _route(self, data: bytes, addr: NetworkAddress) -> None:
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self._configuration.connection_id_length
            )
        except ValueError:
            return
        channel = self._routes.get(header.destination_cid)
        if channel is not None:
            # A full channel drops the datagram; a closed one belongs to a connection that ended.
            with suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                channel.send_nowait((data, addr))
            return
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in self._configuration.supported_versions
        ):
            self._send(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=self._configuration.supported_versions,
                ),
                addr,
            )
            return
        if (
            header.packet_type != QuicPacketType.INITIAL
            or len(data) < 1200
            or self._connections >= self._max_connections
        ):
            return
        self._accept(header.destination_cid, data, addr)

    def _accept(self, original_cid: bytes, data: bytes, addr: NetworkAddress) -> None:
        configuration = for_peer(self._configuration, addr, self._loopback_datagram_size)
        quic = LpstreamQuicConnection(
            configuration=configuration, original_destination_connection_id=original_cid
        )
        send_channel, receive_channel = trio.open_memory_channel[tuple[bytes, NetworkAddress]](
            SERVER_CHANNEL_SIZE
        )
        cids = {original_cid, quic.host_cid}

        def issued(cid: bytes) -> None:
            cids.add(cid)
            self._routes[cid] = send_channel

        def retired(cid: bytes) -> None:
            cids.discard(cid)
            self._routes.pop(cid, None)

        connection = QuicConnectionHandle(
            quic,
            send=self._send,
            remote_address=addr,
            on_cid_issued=issued,
            on_cid_retired=retired,
        )
        for cid in cids:
            self._routes[cid] = send_channel
        send_channel.send_nowait((data, addr))
        self._connections += 1
        self._nursery.start_soon(self._serve, connection, receive_channel, cids)

    async def _serve(
        self,
        connection: QuicConnectionHandle,
        channel: trio.MemoryReceiveChannel[tuple[bytes, NetworkAddress]],
        cids: set[bytes],
    ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connection._run, channel_receiver(channel))
                try:
                    await connection._wait_connected(
                        trio.current_time() + self._handshake_timeout, self._handshake_timeout
                    )
                    await self._run_handler(connection)
                except TransportError as exc:
                    logger.debug("%s", exc)
                finally:
                    connection.close()
                    nursery.cancel_scope.cancel()
        finally:
            for cid in cids:
                self._routes.pop(cid, None)
            self._connections -= 1
            channel.close()

    async def _run_handler(self, connection: QuicConnectionHandle) -> None:
        try:
            await self._handler(connection)
        except* TransportError as group:  # the peer went away or reset: not our bug
            logger.info("QUIC connection handler for %r ended: %s", connection, group.exceptions)
        except* Exception:
            logger.exception("QUIC connection handler for %r failed", connection)
            connection.close(reason="internal error")
        else:
            await connection._linger(CLOSE_LINGER)


async def serve_quic(
    host: str,
    port: int,
    handler: Callable[[QuicConnectionHandle], Awaitable[None]],
    *,
    configuration: QuicConfiguration | None = None,
    max_connections: int = 1024,
    handshake_timeout: float = 10.0,
    loopback_datagram_size: int | None = LOOPBACK_MAX_DATAGRAM_SIZE,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve QUIC on one UDP socket until cancelled, running ``handler`` per connection.

    Each connection's handler runs in its own task once the handshake is done; when it
    returns (after its FIN'd streams are acknowledged, for at most ``CLOSE_LINGER``) the
    connection is closed. A handler that raises is logged and its connection closed; the
    server and the other connections go on.

    Args:
        host: address to bind.
        port: UDP port; 0 picks a free one.
        handler: called with each connection.
        configuration: from ``server_configuration``; a self-signed one when ``None``.
        max_connections: connections served at once; new ones beyond it are ignored.
        handshake_timeout: seconds a new connection has to finish its handshake.
        loopback_datagram_size: datagram size used instead of a smaller configured one for
            loopback peers (``None`` keeps the configuration's).
        task_status: started with the bound ``(host, port)``.
    """
    configuration = configuration or server_configuration()
    if configuration.is_client:
        raise ValueError("serve_quic needs a server configuration")
    family, address = await resolve(host, port, passive=True)
    with open_udp_socket(family) as sock:
        try:
            sock.bind(address)
        except OSError as exc:
            raise TransportError(f"cannot bind UDP {host}:{port}: {exc}") from exc
        async with trio.open_nursery() as nursery:
            server = _QuicServer(
                sock,
                configuration,
                handler,
                nursery,
                max_connections=max_connections,
                handshake_timeout=handshake_timeout,
                loopback_datagram_size=loopback_datagram_size,
            )
            bound_host, bound_port = sock.getsockname()[:2]
            task_status.started((bound_host, bound_port))
            await server.run()
