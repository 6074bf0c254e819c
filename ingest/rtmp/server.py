"""The trio side of RTMP ingest: accept connections, move bytes, hand media to the node.

Each connection is one task running a short loop: drain the protocol's events (media goes to
the :class:`Publisher`, which may block: that is backpressure, and TCP carries it back to the
client), write what the protocol queued, then wait for bytes under one deadline: the handshake
deadline until the handshake is done, then ``idle_timeout`` per read. Every way a connection
can fail ends in the same place: the reason is logged as a warning with the peer and the
stream name, the publisher (if one was started) is closed, the socket is closed, and the server
goes on.

Connections that have not started publishing are anonymous and cost memory (the protocol holds
at most ``MAX_UNPUBLISHED_PENDING`` bytes for each): at most ``max_unpublished`` of them are
served at once, ``max_unpublished_per_address`` from one address; one more is closed at once.
When the node stops a publish (a limit broken, the stream failed) the publisher's ``send``
raises an ``LpstreamError``; its reason goes to the client as ``NetStream.Failed`` before the
connection closes.

A ``publish`` is handed to the node with who asks (the client's address) and what it
presented (:class:`PublishAttempt`: the ``tcUrl`` and app of its ``connect``, the name with its
query string); the node decides (publish authorization may ask a webhook: this connection's
task waits for it, the others go on) and a refusal goes to the client as
``NetStream.Publish.BadName`` with the reason, then the connection closes.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

import attrs
import trio

from lpstream.errors import LpstreamError, RemoteProtocolError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, StreamMetadata

from .protocol import (
    Connected,
    ConnectionClosed,
    ConnectionState,
    PublishEnded,
    PublishRequested,
    RtmpServerConnection,
)

__all__ = ["PublishAttempt", "PublishHandler", "Publisher", "RtmpServer", "RtmpServerStatistics"]

logger = logging.getLogger("lpstream.ingest.rtmp")

RECEIVE_SIZE = 65_536
CLOSE_TIMEOUT = 5.0
"""How long a closing connection waits for ``Publisher.aclose()`` (shielded from cancellation)."""
FAREWELL_TIMEOUT = 5.0
"""How long a failing connection tries to deliver its last answer (``_error``, ``onStatus``):
it reads (and drops) what the client still sends meanwhile, since a client such as ffmpeg
looks for the server's answer only when it writes its next frame."""


class Publisher(Protocol):
    """Where the media of one accepted publish goes."""

    async def send(self, event: MediaEvent) -> None:
        """Takes the next media event; may block to push back on the client."""

    async def aclose(self) -> None:
        """End of stream: the client stopped publishing or the connection ended."""


@attrs.frozen(kw_only=True)
class PublishAttempt:
    """What a publisher asked for and presented, for the node's publish authorization (RTMP,
    WHIP; SRT will hand its ``streamid`` the same way)."""

    protocol: str
    """``rtmp``, ``whip`` or ``srt``."""
    url: str = ""
    """RTMP: the ``tcUrl`` of ``connect`` (its query included); WHIP: the URL posted to."""
    app: str = ""
    """RTMP: the application connected to."""
    name: str = ""
    """RTMP: the stream name as ``publish`` sent it, query string included."""
    query: str = ""
    """WHIP: the query string of the URL, without ``?``."""
    bearer: str | None = None
    """WHIP: the ``Authorization: Bearer`` token, if any."""


class PublishHandler(Protocol):
    """The node's side of ingest: decides who may publish and gives each publish a sink."""

    async def start_publish(
        self,
        stream_name: str,
        *,
        identity: str | None = None,
        remote_addr: str = "",
        attempt: PublishAttempt | None = None,
    ) -> Publisher:
        """Starts a publish of ``stream_name`` by the client at ``remote_addr``
        (``host:port``), known as ``identity`` where the caller already knows who it is, that
        presented ``attempt``.

        Raises:
            lpstream.errors.StreamInUseError: the name already has a publisher (any
                :class:`~lpstream.errors.LpstreamError` refuses the publish the same way;
                a ``ProtocolError`` carries its status: 401/403 not authorized, 429 a
                publisher's limit).
        """
        ...


@attrs.frozen(kw_only=True)
class RtmpServerStatistics:
    """A snapshot of an :class:`RtmpServer`'s counters."""

    open_connections: int
    """TCP connections being served now."""
    active_publishers: int
    """Publishes started and not yet ended."""
    connections_total: int
    """Connections accepted since the server started."""
    errors_total: int
    """Connections closed for a reason other than the client leaving cleanly."""
    unpublished_connections: int
    """Connections that have not started publishing (yet)."""
    refused_total: int
    """Connections closed at once: too many not publishing, in all or from their address."""


class _AcceptErrorFilter(logging.Filter):
    """Turns trio's accept-loop complaints (EMFILE and friends, logged with a traceback every
    100 ms while they last; trio backs off by itself) into one line per ``interval``."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self._last is not None and record.created - self._last < self.interval:
            return False
        self._last = record.created
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_ACCEPT_LOG = logging.getLogger("trio.serve_listeners")
if not any(isinstance(f, _AcceptErrorFilter) for f in _ACCEPT_LOG.filters):
    _ACCEPT_LOG.addFilter(_AcceptErrorFilter())


class _SinkError(Exception):
    """The handler's publisher failed; the cause is chained."""


@attrs.define
class RtmpServer:
    """An RTMP server that accepts publishers for one application name.

    Start it with ``await nursery.start(server.serve, host, port)``, which returns the address
    it bound (port 0 picks a free port).
    """

    handler: PublishHandler
    """Decides on each publish and receives its media."""
    app: str = "live"
    """The application clients connect to: ``rtmp://host:port/APP/stream``."""
    handshake_timeout: float = 10.0
    """Seconds a client has from accept to a finished handshake."""
    idle_timeout: float = 15.0
    """Seconds without a byte from the client (or without it reading) before it is dropped."""
    max_unpublished: int = 64
    """Connections served at once that have not started publishing; more are closed."""
    max_unpublished_per_address: int = 8
    """The same, from one IP address."""
    _open_connections: int = attrs.field(default=0, init=False)
    _unpublished: dict[str, int] = attrs.field(factory=dict, init=False)
    _refused_total: int = attrs.field(default=0, init=False)
    _active_publishers: int = attrs.field(default=0, init=False)
    _connections_total: int = attrs.field(default=0, init=False)
    _errors_total: int = attrs.field(default=0, init=False)

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listens on ``host:port`` and serves until cancelled.

        Reports ``(host, port)`` as bound through ``task_status``.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        if port == 0:
            # Each address family would get its own free port; keep one address.
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        bound_host, bound_port = listeners[0].socket.getsockname()[:2]
        logger.info("RTMP ingest listening on rtmp://%s:%d/%s/", bound_host, bound_port, self.app)
        task_status.started((bound_host, bound_port))
        await trio.serve_listeners(self._serve_connection, listeners)

    def statistics(self) -> RtmpServerStatistics:
        """The server's counters now."""
        return RtmpServerStatistics(
            open_connections=self._open_connections,
            active_publishers=self._active_publishers,
            connections_total=self._connections_total,
            errors_total=self._errors_total,
            unpublished_connections=sum(self._unpublished.values()),
            refused_total=self._refused_total,
        )

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        self._open_connections += 1
        self._connections_total += 1
        try:
            host, peer = _peer_name(stream)
            if (
                sum(self._unpublished.values()) >= self.max_unpublished
                or self._unpublished.get(host, 0) >= self.max_unpublished_per_address
            ):
                self._refused_total += 1
                logger.info(
                    "RTMP %s: refused: too many connections not publishing (%d in all, %d from "
                    "this address; limits %d and %d)",
                    peer,
                    sum(self._unpublished.values()),
                    self._unpublished.get(host, 0),
                    self.max_unpublished,
                    self.max_unpublished_per_address,
                )
                await trio.aclose_forcefully(stream)
                return
            self._unpublished[host] = self._unpublished.get(host, 0) + 1
            task = _ConnectionTask(server=self, stream=stream, peer=peer, host=host)
            try:
                await task.run()
            finally:
                task.leave_unpublished()
        finally:
            self._open_connections -= 1

    def _published(self, host: str) -> None:
        """A connection of ``host`` started publishing: it no longer counts as anonymous."""
        left = self._unpublished.get(host, 0) - 1
        if left > 0:
            self._unpublished[host] = left
        else:
            self._unpublished.pop(host, None)


def _peer_name(stream: trio.SocketStream) -> tuple[str, str]:
    """(host, "host:port") of the peer."""
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "unknown", "unknown peer"
    if isinstance(address, tuple):
        host = str(address[0])
        return host, (f"[{host}]" if ":" in host else host) + f":{address[1]}"
    return str(address), str(address)


@attrs.define
class _ConnectionTask:
    """Serves one client connection."""

    server: RtmpServer
    stream: trio.SocketStream
    peer: str
    host: str
    conn: RtmpServerConnection = attrs.field(init=False)
    publisher: Publisher | None = attrs.field(default=None, init=False)
    _anonymous: bool = attrs.field(default=True, init=False)
    _connected: Connected | None = attrs.field(default=None, init=False)

    def leave_unpublished(self) -> None:
        """Stops counting this connection among those not publishing (once)."""
        if self._anonymous:
            self._anonymous = False
            self.server._published(self.host)

    def __attrs_post_init__(self) -> None:
        self.conn = RtmpServerConnection(app=self.server.app)

    def _where(self) -> str:
        name = self.conn.stream_name
        return f"RTMP {self.peer}" + (f" stream {name!r}" if name else "")

    def _fail(self, reason: str, *args: object) -> None:
        self.server._errors_total += 1
        logger.warning("%s: closing: " + reason, self._where(), *args)

    async def run(self) -> None:
        try:
            await self._pump()
            if self.conn.state is ConnectionState.CLOSED and self.conn.stream_name:
                await self._flush_farewell()  # a refused publish: let the client read why
        except RemoteProtocolError as exc:
            self._fail("%s (code %d)", exc.reason, exc.code)
            await self._flush_farewell()
        except _SinkError as exc:
            cause = exc.__cause__
            if isinstance(cause, LpstreamError):
                # The node stopped this publish (a limit, a failed stream): tell the client.
                self._fail("publish stopped: %s", cause)
                if self.conn.state is ConnectionState.PUBLISHING:
                    self.conn.stop_publish(str(cause))
                await self._flush_farewell()
            else:
                self._fail("publisher failed: %r", cause)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if self.publisher is not None:
                self._fail("connection lost: %s", exc.__cause__ or exc)
            else:
                logger.info("%s: connection lost: %s", self._where(), exc.__cause__ or exc)
        except Exception:
            self.server._errors_total += 1
            logger.exception("%s: closing after an internal error", self._where())
        finally:
            await self._end_publish("connection closed")
            await trio.aclose_forcefully(self.stream)

    async def _pump(self) -> None:
        conn = self.conn
        handshake_deadline = trio.current_time() + self.server.handshake_timeout
        while True:
            await self._handle_events()
            await self._flush()
            if conn.closed:
                return
            if conn.handshake_complete:
                deadline = trio.current_time() + self.server.idle_timeout
            else:
                deadline = handshake_deadline
            data: bytes | bytearray | None = None
            with trio.move_on_at(deadline):
                data = await self.stream.receive_some(RECEIVE_SIZE)
            if data is None:
                if conn.handshake_complete:
                    raise RemoteProtocolError(
                        f"stalled client: no data for {self.server.idle_timeout:g} s", code=408
                    )
                raise RemoteProtocolError(
                    f"handshake not finished within {self.server.handshake_timeout:g} s", code=408
                )
            conn.receive_data(data)

    async def _handle_events(self) -> None:
        conn = self.conn
        while (event := conn.next_event()) is not None:
            if isinstance(event, CodecConfig | MediaPacket | StreamMetadata):
                if self.publisher is not None:
                    try:
                        await self.publisher.send(event)
                    except Exception as exc:
                        raise _SinkError() from exc
            elif isinstance(event, PublishRequested):
                await self._start_publish(event)
            elif isinstance(event, PublishEnded):
                logger.info("%s: publish ended (%s)", self._where(), event.reason)
                await self._end_publish(event.reason)
            elif isinstance(event, Connected):
                self._connected = event
                logger.debug(
                    "%s: connected to %r (%s, %s handshake)",
                    self._where(),
                    event.app,
                    event.flash_ver,
                    conn.handshake_kind.value if conn.handshake_kind else "no",
                )
            elif isinstance(event, ConnectionClosed):
                logger.debug("%s: %s", self._where(), event.reason)

    async def _start_publish(self, event: PublishRequested) -> None:
        connected = self._connected
        name = event.stream_name + (f"?{event.query}" if event.query else "")
        attempt = PublishAttempt(
            protocol="rtmp",
            url=connected.tc_url if connected else "",
            app=connected.app if connected else self.server.app,
            name=name,
        )
        try:
            publisher = await self.server.handler.start_publish(
                event.stream_name,
                remote_addr="" if self.host == "unknown" else self.peer,
                attempt=attempt,
            )
        except LpstreamError as exc:
            reason = str(exc) or type(exc).__name__
            self._fail("publish refused: %s", reason)
            self.conn.reject_publish(reason)
            return
        self.publisher = publisher
        self.server._active_publishers += 1
        self.leave_unpublished()
        self.conn.accept_publish()
        logger.info("%s: publishing", self._where())

    async def _end_publish(self, reason: str) -> None:
        publisher, self.publisher = self.publisher, None
        if publisher is None:
            return
        self.server._active_publishers -= 1
        with trio.move_on_after(CLOSE_TIMEOUT, shield=True) as scope:
            try:
                await publisher.aclose()
            except Exception:
                logger.exception("%s: publisher.aclose() failed (%s)", self._where(), reason)
        if scope.cancelled_caught:
            logger.warning("%s: publisher.aclose() took over %g s", self._where(), CLOSE_TIMEOUT)

    async def _flush(self) -> None:
        out = self.conn.data_to_send()
        if not out:
            return
        with trio.move_on_after(self.server.idle_timeout):
            await self.stream.send_all(out)
            return
        raise RemoteProtocolError(
            f"stalled client: not reading for {self.server.idle_timeout:g} s", code=408
        )

    async def _flush_farewell(self) -> None:
        """Sends our last words (an error status), then half-closes and reads what the client
        still sends for a moment: closing with its bytes unread would reset the connection and
        could destroy the answer before the client reads it."""
        out = self.conn.data_to_send()
        with trio.move_on_after(FAREWELL_TIMEOUT):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                if out:
                    await self.stream.send_all(out)
                await self.stream.send_eof()
                while await self.stream.receive_some(RECEIVE_SIZE):
                    pass
