"""The node's HTTP server: hypercorn's HTTP/1.1 and WebSocket protocol, our accept loop.

How this works:

* ``hypercorn.trio.serve`` accepts every connection it is offered, so a crowd of slow clients
  takes every file descriptor and then the node cannot accept anything (RTMP publishers and
  viewers included). Here hypercorn still speaks HTTP (its per-connection driver,
  ``TCPServer``, and its config for the timeouts), but the accept loop is ours and holds the
  connection budget: at most ``max_connections`` connections are served at once; past that
  up to ``REFUSALS_AT_ONCE`` more are answered ``503`` and closed, and past *that* the loop
  stops accepting (they wait in the kernel's backlog, holding no descriptor of ours) until one
  ends. ``max_connections`` is lowered to fit under the process's file-descriptor limit, with
  ``FD_RESERVE`` kept for everything else the node opens.
* Time limits, so a slow client cannot keep its place: a request's headers must come within
  ``keep_alive_timeout`` (also the idle time of a kept-alive connection), bodies within
  ``body_timeout`` (:class:`~lpstream.http.limits.BodyReader`), and a write that waits
  ``send_timeout`` for a client to read drops it. A client that is silent but there (a
  WebSocket app that only listens, a player waiting on a blocking playlist reload) is not cut;
  one whose machine vanished is found by TCP keepalive within ``dead_peer_timeout``. (No
  hypercorn ``read_timeout``: it would cut silent listeners, and its WebSocket pings, the way
  around that, are sent the instant a socket opens, which some clients mishandle.)
* WebSocket messages over ``max_websocket_message`` are refused by the protocol layer as they
  arrive (close 1009), before they are buffered whole.
* A connection ends at most ``CLOSE_GRACE`` after its client is gone (end of stream or a
  broken socket) or after the server sent a WebSocket close frame: hypercorn 0.18 otherwise
  keeps the socket until its keep-alive timer ends (``keep_alive_timeout``), and after refusing
  a message it may never read the client's close reply (it stops at the refused message's
  next piece in each chunk).
* Running out of descriptors anyway (other parts of the process use them too) pauses accepting
  with a growing back-off and one warning per episode, never a traceback per try.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
from typing import Any, cast

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app
from starlette.types import ASGIApp

from lpstream.config import HostPort
from lpstream.http.limits import HttpLimits

__all__ = [
    "FD_RESERVE",
    "REFUSALS_AT_ONCE",
    "HttpServer",
    "HttpServerStatistics",
    "connection_cap",
]

log = logging.getLogger("lpstream.http")

FD_RESERVE = 256
"""File descriptors kept for everything but HTTP (RTMP, QUIC, WebRTC sockets, files, pipes)."""
REFUSALS_AT_ONCE = 32
"""Connections over ``max_connections`` being answered 503 at once; past it accepting waits."""
MIN_CONNECTIONS = 8
"""The cap never goes under this, however low the file-descriptor limit."""
REFUSAL_TIMEOUT = 1.0
"""How long a refused connection is given to take its 503 before it is closed."""
CLOSE_GRACE = 2.0
"""How long a connection may take to end once its client is gone or its WebSocket closed."""
BACKLOG = 128
"""Connections the kernel queues while accepting waits."""
_SWITCHED = b"HTTP/1.1 101 "
_CLOSE_FRAME = 0x88  # FIN + opcode 8 (close); each of hypercorn's writes starts a frame
_ACCEPT_BACKOFF = (0.05, 1.0)
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


def connection_cap(max_connections: int) -> int:
    """``max_connections``, lowered to fit under this process's file-descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(MIN_CONNECTIONS, min(max_connections, soft - FD_RESERVE - REFUSALS_AT_ONCE))


def hypercorn_config(limits: HttpLimits) -> HypercornConfig:
    """The hypercorn settings that carry ``limits`` (timeouts, WebSocket message size)."""
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = log
    config.keep_alive_timeout = limits.keep_alive_timeout
    config.read_timeout = None
    config.websocket_ping_interval = None
    config.websocket_max_message_size = limits.max_websocket_message
    return config


def _probe_for_dead_peers(stream: trio.SocketStream, timeout: float) -> None:
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


@attrs.frozen(kw_only=True)
class HttpServerStatistics:
    """A snapshot of an :class:`HttpServer`'s counters."""

    open_connections: int
    """Connections being served now."""
    max_connections: int
    """The cap in force (``HttpLimits.max_connections``, lowered to fit the fd limit)."""
    refused_total: int
    """Connections answered 503 because ``max_connections`` were open."""
    send_timeouts_total: int
    """Connections dropped because the client did not read for ``send_timeout``."""
    accept_errors_total: int
    """Accepts that failed for want of descriptors or memory (each followed by a pause)."""


class _ClientStream(trio.abc.HalfCloseableStream):
    """A client's socket stream whose writes give up after ``send_timeout``, and whose
    connection is given ``CLOSE_GRACE`` to end once the client is gone or its WebSocket closed.

    hypercorn shields its writes from cancellation, so a client that never reads would hold
    its connection forever; the deadline here is inside that shield and still fires. Its
    ``send_eof`` at the end of a connection is not under its write lock, so here writes and
    the end of stream take turns (a response to a client that just left would otherwise
    collide with it: ``BusyResourceError``, logged with a traceback)."""

    def __init__(
        self, stream: trio.SocketStream, server: HttpServer, scope: trio.CancelScope
    ) -> None:
        self._stream = stream
        self._server = server
        self._scope = scope
        self._websocket = False
        self._sending = trio.Lock()

    @property
    def socket(self) -> trio.socket.SocketType:
        """hypercorn reads the peer's address from it."""
        return self._stream.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self._websocket:
            self._websocket = bytes(data[: len(_SWITCHED)]) == _SWITCHED
        elif data and data[0] == _CLOSE_FRAME:
            self._end_soon()
        timeout = self._server.limits.send_timeout
        with trio.move_on_after(timeout) as scope:
            async with self._sending:
                await self._stream.send_all(data)
        if scope.cancelled_caught:
            self._server.note_send_timeout()
            log.debug("HTTP: a client read nothing for %g s (send_timeout); dropped", timeout)
            self._scope.cancel()  # the whole connection, its app task included
            await trio.aclose_forcefully(self._stream)
            raise trio.BrokenResourceError(f"the client read nothing for {timeout:g} s")

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        async with self._sending:
            await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self._stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._end_soon()
            raise
        if not data:
            self._end_soon()
        return data

    def _end_soon(self) -> None:
        self._scope.deadline = min(self._scope.deadline, trio.current_time() + CLOSE_GRACE)

    async def aclose(self) -> None:
        await self._stream.aclose()


@attrs.define
class HttpServer:
    """Serves an ASGI app on one address within :class:`HttpLimits`.

    ``bound = await nursery.start(server.serve, HostPort(host, port))``; serves until
    cancelled.
    """

    app: ASGIApp
    """The ASGI app (``build_app``)."""
    limits: HttpLimits = attrs.Factory(HttpLimits)
    """The connection budget and the time limits."""
    _max: int = attrs.field(default=0, init=False)
    _open: int = attrs.field(default=0, init=False)
    _refusing: int = attrs.field(default=0, init=False)
    _refused: int = attrs.field(default=0, init=False)
    _send_timeouts: int = attrs.field(default=0, init=False)
    _accept_errors: int = attrs.field(default=0, init=False)
    _freed: trio.Event = attrs.field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        self._max = connection_cap(self.limits.max_connections)

    def note_send_timeout(self) -> None:
        """Counts a connection dropped for ``send_timeout`` (its stream calls this)."""
        self._send_timeouts += 1

    def statistics(self) -> HttpServerStatistics:
        """The counters now."""
        return HttpServerStatistics(
            open_connections=self._open,
            max_connections=self._max,
            refused_total=self._refused,
            send_timeouts_total=self._send_timeouts,
            accept_errors_total=self._accept_errors,
        )

    async def serve(self, addr: HostPort, *, task_status: trio.TaskStatus[HostPort]) -> None:
        """Listens on ``addr`` and serves until cancelled; reports the bound address."""
        config = hypercorn_config(self.limits)
        app = wrap_app(cast(Any, self.app), config.wsgi_max_body_size, "asgi")
        context = WorkerContext(None)
        listeners = await trio.open_tcp_listeners(addr.port, host=addr.host, backlog=BACKLOG)
        # Fitted now, not when the server was made: the node raises its descriptor limit
        # just before it serves.
        self._max = connection_cap(self.limits.max_connections)
        if self._max < self.limits.max_connections:
            log.warning(
                "HTTP: at most %d connections at once, not %d: the file-descriptor limit "
                "leaves no room for more",
                self._max,
                self.limits.max_connections,
            )
        async with trio.open_nursery() as nursery:
            try:
                for listener in listeners:
                    nursery.start_soon(self._accept, listener, nursery, app, config, context)
                host, port = listeners[0].socket.getsockname()[:2]
                task_status.started(HostPort(host, port))
                await trio.sleep_forever()
            finally:
                for listener in listeners:
                    await trio.aclose_forcefully(listener)

    async def _accept(
        self,
        listener: trio.SocketListener,
        nursery: trio.Nursery,
        app: Any,
        config: HypercornConfig,
        context: WorkerContext,
    ) -> None:
        backoff = _ACCEPT_BACKOFF[0]
        while True:
            while self._open >= self._max and self._refusing >= REFUSALS_AT_ONCE:
                await self._freed.wait()
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                self._accept_errors += 1
                if backoff == _ACCEPT_BACKOFF[0]:
                    log.warning(
                        "HTTP: accept failed: %s (%s); pausing accepts until it passes "
                        "(%d open connections)",
                        errno.errorcode.get(exc.errno or 0, exc.errno),
                        os.strerror(exc.errno or 0),
                        self._open,
                    )
                await trio.sleep(backoff)
                backoff = min(backoff * 2, _ACCEPT_BACKOFF[1])
                continue
            backoff = _ACCEPT_BACKOFF[0]
            if self._open < self._max:
                self._open += 1
                nursery.start_soon(self._serve_connection, stream, app, config, context)
            else:
                self._refusing += 1
                self._refused += 1
                nursery.start_soon(self._refuse, stream)

    async def _serve_connection(
        self,
        stream: trio.SocketStream,
        app: Any,
        config: HypercornConfig,
        context: WorkerContext,
    ) -> None:
        try:
            _probe_for_dead_peers(stream, self.limits.dead_peer_timeout)
            with trio.CancelScope() as scope:
                client = _ClientStream(stream, self, scope)
                await TCPServer(app, config, context, ConnectionState({}), cast(Any, client)).run()
        except Exception:  # hypercorn's own failure: this connection only
            log.exception("HTTP: a connection failed")
        finally:
            await trio.aclose_forcefully(stream)
            self._open -= 1
            self._wake()

    async def _refuse(self, stream: trio.SocketStream) -> None:
        reason = (
            f"too many HTTP connections (max_connections={self._max}); retry shortly\n"
        ).encode()
        answer = (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\nRetry-After: 1\r\n"
            + f"Content-Length: {len(reason)}\r\n\r\n".encode()
            + reason
        )
        try:
            with trio.move_on_after(REFUSAL_TIMEOUT):
                await stream.send_all(answer)
                await stream.send_eof()
                # Read what the client sent until it closes: closing with unread bytes would
                # reset the connection and could lose the answer.
                while await stream.receive_some(65536):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
            self._refusing -= 1
            self._wake()

    def _wake(self) -> None:
        self._freed.set()
        self._freed = trio.Event()
