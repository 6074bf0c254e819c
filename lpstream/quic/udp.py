"""UDP sockets for the QUIC driver: opening, resolving, and reading datagrams in batches.

A connection's driver loop reads through a ``Receive``: an awaitable that returns every
datagram already queued (up to ``RECEIVE_BATCH``), so events are processed and replies written
once per batch rather than once per datagram. The client reads its connected socket
(``socket_receiver``); a server connection reads the channel its server routes datagrams into
(``channel_receiver``).
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import trio
from aioquic.quic.configuration import QuicConfiguration

from lpstream.config import is_loopback
from lpstream.errors import TransportError

__all__ = [
    "RECEIVE_BATCH",
    "Datagrams",
    "NetworkAddress",
    "Receive",
    "channel_receiver",
    "for_peer",
    "open_udp_socket",
    "resolve",
    "socket_receiver",
]

NetworkAddress = tuple[Any, ...]
Datagrams = list[tuple[bytes, NetworkAddress]]
Receive = Callable[[], Awaitable[Datagrams]]

RECEIVE_BATCH = 64
"""Datagrams read per wake-up before events are processed and replies written."""

SOCKET_BUFFER_SIZE = 4 * 1024 * 1024
"""SO_RCVBUF/SO_SNDBUF asked for (the kernel caps it at net.core.[rw]mem_max)."""


@contextmanager
def open_udp_socket(family: int) -> Iterator[socket.socket]:
    """A non-blocking UDP socket with large buffers, closed (and its waiters woken) on exit."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with suppress(OSError):  # the platform refuses: keep its default
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)
        yield sock
    finally:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def resolve(host: str, port: int, *, passive: bool = False) -> tuple[int, NetworkAddress]:
    """The address family and address to use for ``host`` (IPv4 first, as servers bind it)."""
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = await trio.socket.getaddrinfo(
            host or None, port, type=socket.SOCK_DGRAM, flags=flags
        )
    except OSError as exc:
        raise TransportError(f"cannot resolve {host!r}: {exc}") from exc
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first, as servers bind it
    family, _, _, _, address = infos[0]
    return family, tuple(address)


def for_peer(
    configuration: QuicConfiguration, peer: NetworkAddress, loopback_datagram_size: int | None
) -> QuicConfiguration:
    """``configuration`` with the larger loopback datagram size when ``peer`` is on loopback."""
    if (
        loopback_datagram_size is not None
        and configuration.max_datagram_size < loopback_datagram_size
        and is_loopback(str(peer[0]))
    ):
        return dataclasses.replace(configuration, max_datagram_size=loopback_datagram_size)
    return configuration


def socket_receiver(sock: socket.socket, peer: NetworkAddress) -> Receive:
    """Batched reads from a socket connected to ``peer``."""

    async def receive() -> Datagrams:
        await trio.lowlevel.wait_readable(sock)
        batch: Datagrams = []
        for _ in range(RECEIVE_BATCH):
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            batch.append((data, peer))
        return batch

    return receive


def channel_receiver(channel: trio.MemoryReceiveChannel[tuple[bytes, NetworkAddress]]) -> Receive:
    """Batched reads from the channel a server routes one connection's datagrams into."""

    async def receive() -> Datagrams:
        batch = [await channel.receive()]
        for _ in range(RECEIVE_BATCH - 1):
            try:
                batch.append(channel.receive_nowait())
            except trio.WouldBlock:
                break
        return batch

    return receive
