"""The trio side of SRT ingest: a listener, a task per caller, media to the node.

How this works:

* :meth:`SrtServer.serve` binds an :class:`~.listener.SrtListener` and accepts in a loop.
  libsrt's calls block, so each runs in a worker thread (``trio.to_thread.run_sync``) under
  the server's own ``CapacityLimiter`` (one thread per connection, one for accepting) and
  with a short wait, so a stop is never more than a fraction of a second away.
* Handshakes are screened on libsrt's thread before a connection exists (:meth:`_screen`):
  a stream id that does not parse (:func:`~.streamid.parse_stream_id`), or one connection
  too many (``max_unpublished`` not yet publishing, ``max_connections`` in all), is refused
  with SRT's access-control code, which the caller sees. libsrt refuses a wrong or missing
  passphrase itself, after that. Each refusal is logged once, with the caller and the
  reason, by the accept loop.
* Each accepted caller is one task: it asks the ``PublishHandler`` (publish authorization may
  ask a webhook; the stream id's ``s`` key is presented as the publisher's token), then
  receives MPEG-TS, demuxes it (:class:`~.tsdemux.TsDemuxer`) and hands the events to its
  :class:`~ingest.rtmp.server.Publisher`, which may block: that is backpressure, and libsrt's
  receive buffer (bounded) takes it, then drops what is too late, as live SRT does.
* Every way a connection can end goes through one place: the reason is logged once (a
  caller that leaves is info, anything else a warning), the publisher (if one was started)
  is closed, the socket is closed, and the server goes on. A caller that sends nothing for
  ``idle_timeout`` seconds is closed as stalled.
"""

from __future__ import annotations

import functools
import logging

import attrs
import trio

from ingest.rtmp.server import PublishAttempt, Publisher, PublishHandler
from lpstream.errors import LpstreamError, RemoteProtocolError, TransportError
from lpstream.media import MediaEvent

from .listener import HandshakeRefusal, HandshakeRequest, SrtConnectionEnded, SrtListener, SrtPeer
from .streamid import StreamIdError, parse_stream_id
from .tsdemux import TsDemuxer

__all__ = ["SrtServer", "SrtServerStatistics"]

logger = logging.getLogger("lpstream.ingest.srt")

SRT_REJX_OVERLOAD = 1402
"""SRT's access-control code for "too many connections now"."""
ACCEPT_WAIT = 0.25
"""Seconds one accept call waits (and how late a refusal may be logged)."""
RECEIVE_WAIT = 0.5
"""Seconds one receive call waits before the task looks at its deadline again."""
CLOSE_TIMEOUT = 5.0
"""How long a closing connection waits for ``Publisher.aclose()`` (shielded)."""


@attrs.frozen(kw_only=True)
class SrtServerStatistics:
    """A snapshot of an :class:`SrtServer`'s counters."""

    open_connections: int
    """SRT connections being served now."""
    active_publishers: int
    """Publishes started and not yet ended."""
    connections_total: int
    """Connections accepted since the server started."""
    errors_total: int
    """Connections closed for a reason other than the caller leaving."""
    unpublished_connections: int
    """Connections accepted that have not started publishing (yet)."""
    refused_total: int
    """Handshakes refused: a bad stream id, too many connections, a wrong passphrase."""


class _SinkError(Exception):
    """The handler's publisher failed; the cause is chained."""


@attrs.define
class SrtServer:
    """An SRT listener that takes MPEG-TS publishes (see the module comment).

    Start it with ``await nursery.start(server.serve, host, port)``, which returns the address
    it bound (port 0 picks a free port).
    """

    handler: PublishHandler
    """Decides on each publish and receives its media."""
    passphrase: str | None = attrs.field(default=None, repr=False)
    """Callers must encrypt with this passphrase (10 to 79 characters); None: no encryption."""
    pbkeylen: int = 0
    """AES key length in bytes (16, 24 or 32) with a passphrase; 0: the caller's choice."""
    latency_ms: int = 120
    """Receiver latency: how long libsrt waits for lost packets to be sent again."""
    idle_timeout: float = 10.0
    """Seconds without a byte from a caller before it is closed as stalled."""
    max_unpublished: int = 16
    """Connections (in the handshake, or waiting for publish authorization) at once that are
    not publishing yet; more are refused in the handshake."""
    max_connections: int = 256
    """SRT connections at once, publishing or not; more are refused in the handshake."""
    receive_size: int = 64 * 1024
    """Most bytes one receive call gathers (a thread hop carries many messages)."""
    _limiter: trio.CapacityLimiter = attrs.field(init=False)
    _address: str = attrs.field(default="", init=False)
    _open_connections: int = attrs.field(default=0, init=False)
    _unpublished: int = attrs.field(default=0, init=False)
    _active_publishers: int = attrs.field(default=0, init=False)
    _connections_total: int = attrs.field(default=0, init=False)
    _errors_total: int = attrs.field(default=0, init=False)
    _refused_total: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._limiter = trio.CapacityLimiter(self.max_connections + 1)

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listens on ``host:port`` (UDP) and serves until cancelled.

        Reports ``(host, port)`` as bound through ``task_status``.

        Raises:
            TransportError: libsrt is missing, or the address cannot be bound.
        """
        listener = await trio.to_thread.run_sync(
            functools.partial(
                SrtListener.open,
                host,
                port,
                screen=self._screen,
                passphrase=self.passphrase,
                pbkeylen=self.pbkeylen,
                latency_ms=self.latency_ms,
                backlog=self.max_unpublished,
            )
        )
        try:
            bound_host, bound_port = listener.address
            self._address = (f"[{bound_host}]" if ":" in bound_host else bound_host) + (
                f":{bound_port}"
            )
            logger.info(
                "SRT ingest listening on srt://%s (stream id #!::r=live/{stream},m=publish)%s",
                self._address,
                ", passphrase required" if self.passphrase else "",
            )
            task_status.started((bound_host, bound_port))
            async with trio.open_nursery() as nursery:
                while True:
                    self._log_refusals(listener.refusals())
                    peer = await trio.to_thread.run_sync(
                        listener.accept, ACCEPT_WAIT, limiter=self._limiter
                    )
                    if peer is not None:
                        # Counted before the task starts: the screen reads these numbers.
                        self._open_connections += 1
                        self._unpublished += 1
                        self._connections_total += 1
                        nursery.start_soon(self._serve_peer, peer)
        finally:
            listener.close()

    def statistics(self) -> SrtServerStatistics:
        """The server's counters now."""
        return SrtServerStatistics(
            open_connections=self._open_connections,
            active_publishers=self._active_publishers,
            connections_total=self._connections_total,
            errors_total=self._errors_total,
            unpublished_connections=self._unpublished,
            refused_total=self._refused_total,
        )

    def _screen(self, request: HandshakeRequest) -> tuple[int, str] | None:
        """The handshake rule, on libsrt's thread (it only reads the counters)."""
        try:
            parse_stream_id(request.stream_id)
        except StreamIdError as exc:
            return 1000 + exc.code, f"bad stream id: {exc}"
        waiting = request.in_handshake + self._unpublished
        if waiting >= self.max_unpublished:
            return SRT_REJX_OVERLOAD, (
                f"too many connections not publishing ({waiting}; the limit is "
                f"{self.max_unpublished})"
            )
        if request.in_handshake + self._open_connections >= self.max_connections:
            return SRT_REJX_OVERLOAD, f"too many SRT connections (limit {self.max_connections})"
        return None

    def _log_refusals(self, refusals: list[HandshakeRefusal]) -> None:
        for refusal in refusals:
            self._refused_total += 1
            logger.warning(
                "SRT %s%s: refused in the handshake: %s",
                refusal.peer,
                _stream_part(refusal.stream_id),
                refusal.reason,
            )

    async def _serve_peer(self, peer: SrtPeer) -> None:
        task = _ConnectionTask(server=self, peer=peer)
        try:
            await task.run()
        finally:
            task.leave_unpublished()
            self._open_connections -= 1
            peer.close()


def _stream_part(stream_id: bytes) -> str:
    """`` stream 'name'`` for a stream id that names one (never the id itself: it may hold a
    secret), else ""."""
    try:
        return f" stream {parse_stream_id(stream_id).name!r}"
    except StreamIdError:
        return ""


@attrs.define
class _ConnectionTask:
    """Serves one accepted caller."""

    server: SrtServer
    peer: SrtPeer
    publisher: Publisher | None = attrs.field(default=None, init=False)
    _name: str = attrs.field(default="", init=False)
    _anonymous: bool = attrs.field(default=True, init=False)

    def leave_unpublished(self) -> None:
        """Stops counting this connection among those not publishing (once)."""
        if self._anonymous:
            self._anonymous = False
            self.server._unpublished -= 1

    def _where(self) -> str:
        return f"SRT {self.peer.peer}" + (f" stream {self._name!r}" if self._name else "")

    def _fail(self, reason: str, *args: object) -> None:
        self.server._errors_total += 1
        logger.warning("%s: closing: " + reason, self._where(), *args)

    async def run(self) -> None:
        ending = "connection closed"
        try:
            ending = await self._publish()
        except RemoteProtocolError as exc:
            self._fail("%s (code %d)", exc, exc.code)
        except _SinkError as exc:
            cause = exc.__cause__
            if isinstance(cause, LpstreamError):
                self._fail("publish stopped: %s", cause)
            else:
                self._fail("publisher failed: %r", cause)
        except TransportError as exc:
            self._fail("connection failed: %s", exc)
        except Exception:
            self.server._errors_total += 1
            logger.exception("%s: closing after an internal error", self._where())
        finally:
            await self._end_publish(ending)

    async def _publish(self) -> str:
        """Publishes until the caller leaves; returns why it ended."""
        stream = parse_stream_id(self.peer.stream_id)
        self._name = stream.name
        attempt = PublishAttempt(
            protocol="srt",
            url=f"srt://{self.server._address}?streamid="
            + self.peer.stream_id.decode(errors="replace"),
            app=stream.app,
            name=stream.name,
            bearer=stream.secret,
        )
        try:
            self.publisher = await self.server.handler.start_publish(
                stream.name, remote_addr=self.peer.peer, attempt=attempt
            )
        except LpstreamError as exc:
            self._fail("publish refused: %s", str(exc) or type(exc).__name__)
            return "refused"
        self.server._active_publishers += 1
        self.leave_unpublished()
        logger.info("%s: publishing", self._where())
        demuxer = TsDemuxer()
        last_data = trio.current_time()
        while True:
            try:
                data = await trio.to_thread.run_sync(
                    self.peer.receive,
                    self.server.receive_size,
                    RECEIVE_WAIT,
                    limiter=self.server._limiter,
                )
            except SrtConnectionEnded as exc:
                await self._send_all(demuxer.flush())
                logger.info("%s: publish ended: the caller left (%s)", self._where(), exc)
                return str(exc)
            now = trio.current_time()
            if data is None:
                if now - last_data >= self.server.idle_timeout:
                    raise RemoteProtocolError(
                        f"stalled sender: no data for {self.server.idle_timeout:g} s", code=408
                    )
                continue
            last_data = now
            await self._send_all(demuxer.feed(data))

    async def _send_all(self, events: list[MediaEvent]) -> None:
        publisher = self.publisher
        assert publisher is not None
        for event in events:
            try:
                await publisher.send(event)
            except Exception as exc:
                raise _SinkError() from exc

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
