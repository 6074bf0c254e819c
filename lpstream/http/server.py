"""The node's HTTP server: hypercorn's HTTP/1.1, HTTP/2 and WebSocket protocols, our accept
loop.

How this works:

* ``hypercorn.trio.serve`` accepts every connection it is offered, so a crowd of slow clients
  takes every file descriptor and then the node cannot accept anything (RTMP publishers and
  viewers included). Here hypercorn still speaks HTTP (its per-connection driver,
  ``TCPServer``, as :class:`~lpstream.http.connection.ServedConnection`, and its config for
  the timeouts), but the accept loop is ours and holds the connection budget: at most
  ``max_connections`` connections are served at once; past that up to ``REFUSALS_AT_ONCE``
  more are answered ``503`` and closed, and past *that* the loop stops accepting (they wait
  in the kernel's backlog, holding no descriptor of ours) until one ends.
  ``max_connections`` is lowered to fit under the process's file-descriptor limit, with
  ``FD_RESERVE`` kept for everything else the node opens.
* Time limits, so a slow client cannot keep its place: a request's headers must come within
  ``keep_alive_timeout`` (also the idle time of a kept-alive connection), bodies within
  ``body_timeout`` (:class:`~lpstream.http.limits.BodyReader`), and a write that waits
  ``send_timeout`` for a client to read drops it (:mod:`lpstream.http.connection`). A client
  that is silent but there (a WebSocket app that only listens, a player waiting on a blocking
  playlist reload) is not cut; one whose machine vanished is found by TCP keepalive within
  ``dead_peer_timeout``. (No hypercorn ``read_timeout``: it would cut silent listeners, and its
  WebSocket pings, the way around that, are sent the instant a socket opens, which some
  clients mishandle.) A connection ends soon after its client is gone.
* WebSocket messages over ``max_websocket_message`` are refused by the protocol layer as they
  arrive (close 1009), before they are buffered whole.
* Running out of descriptors anyway (other parts of the process use them too) pauses accepting
  with a growing back-off and one warning per episode, never a traceback per try.
* With TLS (:class:`~lpstream.http.tls.ServerTls`) every limit above holds over it: the
  handshake is ours, within ``keep_alive_timeout`` like a request's headers (a client that
  never completes it is dropped), and ALPN picks HTTP/2 or HTTP/1.1. A connection over the cap
  gets its ``503`` over TLS too, offered HTTP/1.1 only.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from typing import Any, cast

import attrs
import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app
from starlette.types import ASGIApp

from lpstream.config import HostPort
from lpstream.http.connection import (
    ClientStream,
    PlainClientStream,
    ServedConnection,
    TimedSends,
    TlsClientStream,
    WebSocketSends,
    probe_for_dead_peers,
)
from lpstream.http.limits import HttpLimits
from lpstream.http.tls import ServerTls

__all__ = [
    "FD_RESERVE",
    "REFUSALS_AT_ONCE",
    "HttpServer",
    "HttpServerStatistics",
    "connection_cap",
    "raise_open_file_limit",
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
BACKLOG = 128
"""Connections the kernel queues while accepting waits."""
_ACCEPT_BACKOFF = (0.05, 1.0)
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


def connection_cap(max_connections: int) -> int:
    """``max_connections``, lowered to fit under this process's file-descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(MIN_CONNECTIONS, min(max_connections, soft - FD_RESERVE - REFUSALS_AT_ONCE))


def raise_open_file_limit() -> int:
    """Raises this process's soft limit on open files to its hard limit, once, and logs it;
    returns the soft limit in force (the HTTP connection cap is fitted under it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("open files: cannot raise the limit from %d to %d: %s", soft, hard, exc)
            return soft
        log.info("open files: limit raised from %d to %d (the hard limit)", soft, hard)
    return hard


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
    tls: ServerTls | None = None
    """HTTPS with this certificate (HTTP/2 or HTTP/1.1 by ALPN); None: plain HTTP/1.1."""
    _max: int = attrs.field(default=0, init=False)
    _open: int = attrs.field(default=0, init=False)
    _refusing: int = attrs.field(default=0, init=False)
    _refused: int = attrs.field(default=0, init=False)
    _send_timeouts: int = attrs.field(default=0, init=False)
    _accept_errors: int = attrs.field(default=0, init=False)
    _freed: trio.Event = attrs.field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        self._max = connection_cap(self.limits.max_connections)

    @property
    def scheme(self) -> str:
        """``https`` or ``http``, for the URLs the node prints."""
        return "http" if self.tls is None else "https"

    def _timed_out(self) -> None:
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
        app = WebSocketSends(wrap_app(cast(Any, self.app), config.wsgi_max_body_size, "asgi"))
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
        send_timeout = self.limits.send_timeout
        try:
            probe_for_dead_peers(stream, self.limits.dead_peer_timeout)
            with trio.CancelScope() as scope:
                client: ClientStream[Any]
                if self.tls is None:
                    client = PlainClientStream(
                        stream, scope, send_timeout=send_timeout, on_send_timeout=self._timed_out
                    )
                else:
                    tls = await self._handshake(stream)
                    if tls is None:
                        return
                    client = TlsClientStream(
                        tls, scope, send_timeout=send_timeout, on_send_timeout=self._timed_out
                    )
                    if tls.selected_alpn_protocol() == "h2":
                        app = TimedSends(app, client, send_timeout)
                await ServedConnection(app, config, context, client).run()
        except* h11.ProtocolError as failed:  # h11 tripped over what the client sent
            log.debug("HTTP: a connection failed: %s", failed.exceptions[0])
        except* Exception:  # hypercorn's own failure: this connection only
            log.exception("HTTP: a connection failed")
        finally:
            await trio.aclose_forcefully(stream)
            self._open -= 1
            self._wake()

    async def _handshake(
        self, stream: trio.SocketStream
    ) -> trio.SSLStream[trio.SocketStream] | None:
        """The TLS stream once its handshake is done within ``keep_alive_timeout`` (the time a
        request's headers get); None if it failed or took longer (the connection is dropped)."""
        assert self.tls is not None
        tls = trio.SSLStream(stream, self.tls.context, server_side=True, https_compatible=True)
        timeout = self.limits.keep_alive_timeout
        try:
            with trio.move_on_after(timeout):
                await tls.do_handshake()
                return tls
            log.debug("HTTP: a client did not finish its TLS handshake in %g s; dropped", timeout)
        except trio.BrokenResourceError as exc:
            log.debug("HTTP: a TLS handshake failed: %s", exc.__cause__ or exc)
        return None

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
        client: trio.abc.Stream = stream
        if self.tls is not None:  # the handshake comes with the first write
            client = trio.SSLStream(
                stream, self.tls.refusal_context, server_side=True, https_compatible=True
            )
        try:
            with trio.move_on_after(REFUSAL_TIMEOUT):
                await client.send_all(answer)
                if isinstance(client, trio.abc.HalfCloseableStream):
                    await client.send_eof()
                # Read what the client sent until it closes: closing with unread bytes would
                # reset the connection and could lose the answer.
                while await client.receive_some(65536):
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
