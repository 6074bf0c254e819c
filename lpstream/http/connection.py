"""One HTTP connection as hypercorn serves it: its stream, its driver (hypercorn's
``TCPServer``) and the time limits that hold while it is served.

How this works:

* hypercorn shields its writes from cancellation, so a client that never reads would hold
  its connection forever. :class:`ClientStream` gives each write ``send_timeout``; the
  deadline is inside that shield and still fires, and then the whole connection (its app
  tasks included) is cancelled and its socket closed.
* A connection ends at most ``CLOSE_GRACE`` after its client is gone (end of stream or a
  broken socket) or after the server sent a WebSocket close frame: hypercorn 0.18 otherwise
  keeps the socket until its keep-alive timer ends (``keep_alive_timeout``), and after refusing
  a message it may never read the client's close reply (it stops at the refused message's
  next piece in each chunk). The stream sees what hypercorn writes before any encryption, so
  it tells an HTTP/1.1 WebSocket's frames from the rest the same way over TLS.
* Plain HTTP is a :class:`PlainClientStream` over the socket. Over TLS,
  :class:`TlsClientStream` wraps the TLS stream once its handshake is done and answers what
  hypercorn asks of a TLS stream (the protocol ALPN chose, the socket under it).
* Over HTTP/2 a response waits for the client's flow-control window in hypercorn's stream
  buffers, where no socket write times it: a client granting no window would hold its streams,
  and the bodies they buffer, for ever. :class:`TimedSends` gives each of the app's sends
  ``send_timeout`` there, with the same end as a socket write's.
* TCP keepalive (:func:`probe_for_dead_peers`) finds a client whose machine vanished.
* hypercorn's idle timer (``keep_alive_timeout``) stops when a request arrives and restarts
  when it ends; two openings left it stopped for good, so one client could hold a
  connection for ever with a few bytes (hypercorn 0.18). :class:`ServedConnection` closes
  both: a WebSocket handshake hypercorn refuses itself (a bad version or key: ``400``,
  ``Connection: close``) never ended its request, and now ends its connection once the
  refusal is sent, as every answer after which HTTP/1.1 must close does; a connection that
  opens with HTTP/2's preface (prior knowledge, no TLS) has no request in progress until its
  first stream, and now runs the idle timer from the moment HTTP/2 takes over, as HTTP/2 over
  TLS does.
* A WebSocket handshake followed at once by frames (a client must wait for the answer) is
  answered ``400`` by hypercorn while the app answers it too; the two answers trip h11's state
  machine. The connection is done for either way: :class:`WebSocketSends` drops the app's
  sends h11 refuses, and the server logs such a connection's end at debug, not as a traceback
  (a client breaking the protocol is the client's fault).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Event, RawData
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11WSConnection
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import (
    AppWrapper,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    ConnectionState,
    Scope,
)

__all__ = [
    "CLOSE_GRACE",
    "ClientStream",
    "PlainClientStream",
    "ServedConnection",
    "TimedSends",
    "TlsClientStream",
    "WebSocketSends",
    "WrappedSends",
    "probe_for_dead_peers",
]

log = logging.getLogger("lpstream.http")

CLOSE_GRACE = 2.0
"""How long a connection may take to end once its client is gone or its WebSocket closed."""
_SWITCHED = b"HTTP/1.1 101 "
_CLOSE_FRAME = 0x88  # FIN + opcode 8 (close); each of hypercorn's writes starts a frame

StreamT = TypeVar("StreamT", bound=trio.abc.Stream)


def probe_for_dead_peers(stream: trio.SocketStream, timeout: float) -> None:
    """TCP keepalive: probes from ``timeout / 2`` of silence on, three unanswered in the
    other half close the connection (Linux names; elsewhere the system's defaults)."""
    idle = max(1, int(timeout / 2))
    try:
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", idle),
            ("TCP_KEEPINTVL", max(1, idle // 3)),
            ("TCP_KEEPCNT", 3),
        ):
            option = getattr(socket, name, None)
            if option is not None:
                stream.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:  # the client is gone already; the connection will find out
        pass


class ClientStream(trio.abc.Stream, Generic[StreamT]):
    """A client's stream whose writes give up after ``send_timeout``, and whose connection
    (``scope``) is given ``CLOSE_GRACE`` to end once the client is gone or its WebSocket
    closed; ``on_send_timeout`` counts each connection dropped for a write."""

    def __init__(
        self,
        stream: StreamT,
        scope: trio.CancelScope,
        *,
        send_timeout: float,
        on_send_timeout: Callable[[], None],
    ) -> None:
        self._stream = stream
        self._scope = scope
        self._send_timeout = send_timeout
        self._on_send_timeout = on_send_timeout
        self._websocket = False
        self._sending = trio.Lock()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self._websocket:
            self._websocket = bytes(data[: len(_SWITCHED)]) == _SWITCHED
        elif data and data[0] == _CLOSE_FRAME:
            self.end_soon()
        with trio.move_on_after(self._send_timeout) as scope:
            async with self._sending:
                await self._stream.send_all(data)
        if scope.cancelled_caught:
            await self.drop_for_send_timeout()
            raise trio.BrokenResourceError(f"the client read nothing for {self._send_timeout:g} s")

    async def drop_for_send_timeout(self) -> None:
        """Ends the whole connection, its app tasks included: the client read nothing for
        ``send_timeout``."""
        self._on_send_timeout()
        log.debug(
            "HTTP: a client read nothing for %g s (send_timeout); dropped", self._send_timeout
        )
        self._scope.cancel()
        await trio.aclose_forcefully(self._stream)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self._stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.end_soon()
            raise
        if not data:
            self.end_soon()
        return data

    def end_soon(self) -> None:
        """Gives the connection ``CLOSE_GRACE`` to end."""
        self._scope.deadline = min(self._scope.deadline, trio.current_time() + CLOSE_GRACE)

    async def aclose(self) -> None:
        await self._stream.aclose()


class PlainClientStream(ClientStream[trio.SocketStream], trio.abc.HalfCloseableStream):
    """A :class:`ClientStream` of plain HTTP: the socket stream itself.

    hypercorn's ``send_eof`` at the end of a connection is not under its write lock, so here
    writes and the end of stream take turns (a response to a client that just left would
    otherwise collide with it: ``BusyResourceError``, logged with a traceback)."""

    @property
    def socket(self) -> trio.socket.SocketType:
        """hypercorn reads the peer's address from it."""
        return self._stream.socket

    async def send_eof(self) -> None:
        async with self._sending:
            await self._stream.send_eof()


class TlsClientStream(ClientStream[trio.SSLStream[trio.SocketStream]]):
    """A :class:`ClientStream` over TLS, handshake done; it has what hypercorn asks of a TLS
    stream (and, as hypercorn expects of one, no ``send_eof``)."""

    @property
    def transport_stream(self) -> trio.SocketStream:
        """hypercorn reads the peer's address from its socket."""
        return self._stream.transport_stream

    async def do_handshake(self) -> None:
        await self._stream.do_handshake()  # done already: returns at once

    def selected_alpn_protocol(self) -> str | None:
        protocol: str | None = self._stream.selected_alpn_protocol()
        return protocol


class WrappedSends:
    """An app (hypercorn's wrapper of one) whose sends go through :meth:`wrap`."""

    def __init__(self, app: AppWrapper) -> None:
        self._app = app

    async def __call__(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        sync_spawn: Any,
        call_soon: Any,
    ) -> None:
        await self._app(scope, receive, self.wrap(scope, send), sync_spawn, call_soon)

    def wrap(self, scope: Scope, send: ASGISendCallable) -> ASGISendCallable:
        """The send the app is given for ``scope`` (``send`` itself here)."""
        return send


class TimedSends(WrappedSends):
    """An app (hypercorn's wrapper of one) whose every send is given ``send_timeout``, for
    one HTTP/2 connection; past it ``client``'s connection is dropped."""

    def __init__(self, app: AppWrapper, client: ClientStream[Any], send_timeout: float) -> None:
        super().__init__(app)
        self._client = client
        self._send_timeout = send_timeout

    def wrap(self, scope: Scope, send: ASGISendCallable) -> ASGISendCallable:
        async def timed_send(message: ASGISendEvent) -> None:
            with trio.move_on_after(self._send_timeout) as deadline:
                await send(message)
            if deadline.cancelled_caught:
                await self._client.drop_for_send_timeout()
                await trio.lowlevel.checkpoint()  # the connection is cancelled: raises

        return timed_send


class ServedConnection(TCPServer):
    """hypercorn's driver of one connection, with the two gaps in its idle timer closed (see
    the module comment); ``stream`` is the connection's :class:`ClientStream`."""

    def __init__(
        self,
        app: AppWrapper,
        config: HypercornConfig,
        context: WorkerContext,
        stream: ClientStream[Any],
    ) -> None:
        super().__init__(app, config, context, ConnectionState({}), cast(Any, stream))
        self._client = stream
        self._http2_started = False

    async def protocol_send(self, event: Event) -> None:
        await super().protocol_send(event)
        if not isinstance(event, RawData):
            return
        protocol = self.protocol.protocol
        if isinstance(protocol, H2Protocol):
            if not self._http2_started:  # its first write: its settings, as it takes over
                self._http2_started = True
                # No stream at all: prior knowledge (an h2c upgrade's request is stream 1).
                if protocol.idle and not protocol.connection.streams:
                    await self.idle_task.restart(self._task_group, self._idle_timeout)
            return
        connection = protocol.connection
        if isinstance(connection, H11WSConnection):  # a WebSocket handshake's
            connection = connection.h11_connection
        if connection.our_state is h11.MUST_CLOSE:
            self._client.end_soon()  # the answer is whole and HTTP/1.1 says close


class WebSocketSends(WrappedSends):
    """An app (hypercorn's wrapper of one) whose WebSocket sends that h11 refuses, once the
    connection's HTTP/1.1 state machine has failed, are dropped and logged at debug (see the
    module comment), as hypercorn drops an app's sends to a closed connection."""

    def wrap(self, scope: Scope, send: ASGISendCallable) -> ASGISendCallable:
        if scope["type"] != "websocket":
            return send

        async def send_or_drop(message: ASGISendEvent) -> None:
            try:
                await send(message)
            except h11.LocalProtocolError as exc:
                log.debug("HTTP: a WebSocket answer was dropped: the connection failed (%s)", exc)

        return send_or_drop
