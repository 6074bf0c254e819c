"""One QUIC connection, driven by one trio task: ``QuicConnectionHandle``.

How this works
--------------
Each connection is driven by one task running ``QuicConnectionHandle._run``, a loop that does
exactly this, in this order: wait for datagrams (a batch of everything already queued) or for
the connection's single timer, feed them (or ``handle_timer``) to aioquic, drain aioquic's
events into the stream objects, write every datagram aioquic has to send, re-arm the timer.
The timer is the deadline of the cancel scope around the wait, so "re-arming" it is assigning
``scope.deadline`` and any call can move it. ``_transmit()`` (write datagrams, re-arm, wake
blocked senders) also runs after every application call that changes what aioquic wants to
send: ``send_all``, ``send_eof``, ``reset``, ``aclose``, ``close`` and a read that extends
flow-control credit. Every ``now`` given to aioquic is ``trio.current_time()``, the clock the
timer deadline is on.

Who starts the loop: ``open_quic_connection`` (``client.py``) over its own socket, or
``serve_quic`` (``server.py``) over the channel it routes a connection's datagrams into. A
connection that ends (closed by either side, by the idle timeout, or its peer unreachable)
records why once, wakes every waiter, and from then on every stream operation raises
``TransportError`` with that reason.

Opening: ``open_stream`` parks while the peer's MAX_STREAMS limit is reached. aioquic would
queue such a stream as "blocked" but still write RESET_STREAM/STOP_SENDING for it if it is
aborted, which the peer must answer by closing the whole connection (STREAM_LIMIT_ERROR).
Accepting: a peer's stream is queued for ``accept_stream`` on its first event (unless that
event aborts it); opening one opens every lower-numbered one of its kind (RFC 9000, 2.1);
unidirectional streams are not part of lpstream/1 and are refused (``STREAM_REFUSED``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import attrs
import trio
from aioquic.quic import events

from lpstream.errors import TransportError
from lpstream.quic.flow_control import LpstreamQuicConnection
from lpstream.quic.pinning import Fingerprint, presented_certificate
from lpstream.quic.stream import SEND_BUFFER_HIGH_WATER, QuicStream
from lpstream.quic.udp import Datagrams, NetworkAddress, Receive

__all__ = [
    "CLOSE_LINGER",
    "STREAM_REFUSED",
    "QuicConnectionHandle",
    "QuicConnectionStatistics",
]

STREAM_REFUSED = 503
"""Application error code for refused peer streams (lpstream/1 has no unidirectional ones)."""

CLOSE_LINGER = 2.0
"""Seconds a clean exit waits for finished streams' data to be acknowledged before closing."""


@attrs.frozen(kw_only=True)
class QuicConnectionStatistics:
    """A snapshot of one connection's counters."""

    open_streams: int
    """Streams opened or accepted and not yet finished both ways, reset or closed."""
    streams_total: int
    """Streams ever opened or accepted on this connection."""
    bytes_sent: int
    """UDP payload bytes written (QUIC packets, headers and retransmissions included)."""
    bytes_received: int
    """UDP payload bytes read and fed to the connection."""


class QuicConnectionHandle:
    """One QUIC connection to a peer: open and accept streams, close, observe.

    Made by ``open_quic_connection`` (client) or handed to ``serve_quic``'s handler (server);
    both sides can open and accept bidirectional streams.
    """

    def __init__(
        self,
        quic: LpstreamQuicConnection,
        *,
        send: Callable[[bytes, NetworkAddress], None],
        remote_address: NetworkAddress,
        on_cid_issued: Callable[[bytes], None] | None = None,
        on_cid_retired: Callable[[bytes], None] | None = None,
    ) -> None:
        self._quic = quic
        self._send = send
        self._remote_address = remote_address
        self._on_cid_issued = on_cid_issued
        self._on_cid_retired = on_cid_retired
        self._is_client: bool = quic.configuration.is_client
        self._streams: dict[int, QuicStream] = {}
        # Highest peer-initiated stream ID seen, [bidirectional, unidirectional].
        first_peer = 1 if self._is_client else 0
        self._highest_peer = [first_peer - 4, first_peer + 2 - 4]
        self._accept_queue: deque[QuicStream] = deque()
        self._accept_lot = trio.lowlevel.ParkingLot()
        self._state_lot = trio.lowlevel.ParkingLot()  # handshake, stream credit, acks, end
        self._blocked_senders: set[QuicStream] = set()
        self._lingering: set[int] = set()
        self._handshake_complete = False
        self._close_reason: str | None = None
        self._terminated = False
        self._closed = trio.Event()
        self._timer: trio.CancelScope | None = None
        self._timer_at = math.inf
        self._streams_total = 0
        self._bytes_sent = 0
        self._bytes_received = 0
        self._last_heard = trio.current_time()
        self._probes = 0

    def __repr__(self) -> str:
        side = "client" if self._is_client else "server"
        return f"<QuicConnectionHandle {side} peer={self._remote_address!r}>"

    # -- public API ------------------------------------------------------------------------
    @property
    def last_heard(self) -> float:
        """``trio.current_time()`` when the peer's last datagram was read (or the start).

        A live peer acknowledges what it receives within milliseconds, so a peer that was
        sent anything and stays silent is gone or frozen, however busy it may be.
        """
        return self._last_heard

    def probe(self) -> None:
        """Sends a QUIC PING frame: any live peer acknowledges it, moving ``last_heard``."""
        if self._terminated:
            return
        self._probes += 1
        self._quic.send_ping(self._probes)
        self._transmit()

    @property
    def peer_fingerprint(self) -> Fingerprint | None:
        """The fingerprint of the certificate the server presented (on a client connection,
        once connected); None on a server connection."""
        der = presented_certificate(self._quic)
        return None if der is None else Fingerprint.of_certificate(der)

    @property
    def remote_address(self) -> NetworkAddress:
        """The peer's UDP address, as the socket reports it: ``(host, port, ...)``."""
        return self._remote_address

    async def open_stream(self) -> QuicStream:
        """Open a bidirectional stream, parking while the peer allows no more streams."""
        await trio.lowlevel.checkpoint()
        while True:
            error = self._error()
            if error is not None:
                raise error
            if self._quic.can_open_stream():
                break
            await self._state_lot.park()
        stream_id = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(stream_id, b"")  # creates it; nothing goes on the wire
        return self._add_stream(stream_id)

    async def accept_stream(self) -> QuicStream:
        """Wait for the next bidirectional stream the peer opened."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while not self._accept_queue:
            error = self._error()
            if error is not None:
                raise error
            parked = True
            await self._accept_lot.park()
        stream = self._accept_queue.popleft()
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return stream

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection now; pending and later stream operations raise."""
        if self._close_reason is None:
            self._close_reason = "connection closed locally" + (f": {reason}" if reason else "")
            if not self._terminated:
                self._quic.close(error_code=error_code, reason_phrase=reason)
                self._transmit()
            self._closed.set()
            self._wake_all()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, by either side or by the idle timeout."""
        await self._closed.wait()

    def statistics(self) -> QuicConnectionStatistics:
        """A snapshot of this connection's counters."""
        return QuicConnectionStatistics(
            open_streams=len(self._streams),
            streams_total=self._streams_total,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
        )

    # -- the driver loop -------------------------------------------------------------------

    async def _run(self, receive: Receive) -> None:
        """Read, feed, drain events, write, re-arm the timer; until the connection ends."""
        try:
            while not self._terminated:
                batch: Datagrams = []
                with trio.CancelScope(deadline=self._timer_at) as timer:
                    self._timer = timer
                    try:
                        batch = await receive()
                    except OSError as exc:
                        self._terminate(f"cannot reach {self._describe_peer()}: {exc}")
                self._timer = None
                if self._terminated:
                    break
                now = trio.current_time()
                if timer.cancelled_caught:
                    # ``now``, not the deadline: a call may have moved it after it fired.
                    self._quic.handle_timer(now=now)
                elif batch:
                    self._last_heard = now
                    for data, addr in batch:
                        self._bytes_received += len(data)
                        self._quic.receive_datagram(data, addr, now=now)
                else:
                    continue
                self._process_events()
                self._transmit()
                if self._state_lot:
                    self._state_lot.unpark_all()  # waiters re-check their condition
        finally:
            self._timer = None
            if not self._terminated:
                # Cancelled: the node is stopping. Say so to the peer now (one CONNECTION_CLOSE,
                # best effort) rather than leave it waiting for its idle timeout.
                self.close(reason="shutting down")
            self._terminate("connection driver stopped")

    def _transmit(self) -> None:
        """Write every datagram aioquic has, re-arm the timer, wake senders with room."""
        for data, addr in self._quic.datagrams_to_send(now=trio.current_time()):
            self._bytes_sent += len(data)
            try:
                self._send(data, addr)
            except OSError as exc:
                self._terminate(f"cannot send to {self._describe_peer()}: {exc}")
                return
        timer_at = self._quic.get_timer()
        self._timer_at = math.inf if timer_at is None else timer_at
        if self._timer is not None:
            self._timer.deadline = self._timer_at
        if self._blocked_senders:
            for stream in list(self._blocked_senders):
                if stream._unsent() <= SEND_BUFFER_HIGH_WATER // 2:
                    stream._tx_lot.unpark_all()

    def _process_events(self) -> None:
        quic = self._quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                stream = self._stream_for_event(event.stream_id)
                if stream is not None:
                    stream._on_data(event.data, event.end_stream)
            elif isinstance(event, events.StreamReset):
                stream = self._stream_for_event(event.stream_id, opens=False)
                if stream is not None:
                    stream._on_reset(event.error_code)
            elif isinstance(event, events.StopSendingReceived):
                stream = self._stream_for_event(event.stream_id, opens=False)
                if stream is not None:
                    stream._on_stop_sending(event.error_code)
            elif isinstance(event, events.HandshakeCompleted):
                self._handshake_complete = True
            elif isinstance(event, events.ConnectionIdIssued):
                if self._on_cid_issued is not None:
                    self._on_cid_issued(event.connection_id)
            elif isinstance(event, events.ConnectionIdRetired):
                if self._on_cid_retired is not None:
                    self._on_cid_retired(event.connection_id)
            elif isinstance(event, events.ConnectionTerminated):
                reason = event.reason_phrase or "no reason given"
                self._terminate(f"connection closed ({reason}, code {event.error_code:#x})")

    # -- streams ---------------------------------------------------------------------------

    def _add_stream(self, stream_id: int) -> QuicStream:
        stream = QuicStream(self, stream_id)
        self._streams[stream_id] = stream
        self._streams_total += 1
        self._quic.track(stream_id)
        return stream

    def _retire(self, stream: QuicStream) -> None:
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
            self._quic.forget(stream.stream_id)
        self._blocked_senders.discard(stream)

    def _stream_for_event(self, stream_id: int, *, opens: bool = True) -> QuicStream | None:
        """The stream an event is for; new peer streams are queued for ``accept_stream``.

        A peer stream whose first event aborts it (``opens=False``) was cancelled before its
        first byte: it is finished on our side too and never surfaced.
        """
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        if bool(stream_id & 1) != self._is_client:
            return None  # ours, already retired
        unidirectional = bool(stream_id & 2)
        highest = self._highest_peer[unidirectional]
        if stream_id <= highest:
            return None  # the peer's, already retired or refused
        self._highest_peer[unidirectional] = stream_id
        # Opening a stream opens every lower-numbered one of its kind (RFC 9000, 2.1).
        for new_id in range(highest + 4, stream_id + 4, 4):
            if unidirectional:
                self._quic.stop_receiving(new_id, STREAM_REFUSED)  # not part of lpstream/1
            elif new_id == stream_id and not opens:
                self._quic.stop_receiving(new_id, 0)
                self._quic.reset_sending(new_id, 0)
            else:
                self._accept_queue.append(self._add_stream(new_id))
                self._accept_lot.unpark_all()
        return self._streams.get(stream_id)

    # -- state -----------------------------------------------------------------------------

    def _error(self) -> TransportError | None:
        if self._close_reason is None:
            return None
        return TransportError(f"QUIC connection to {self._describe_peer()}: {self._close_reason}")

    def _describe_peer(self) -> str:
        host, port = self._remote_address[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    def _terminate(self, reason: str) -> None:
        """The connection is over: record why, and wake everything that waits on it."""
        if self._terminated:
            return
        self._terminated = True
        if self._close_reason is None:
            self._close_reason = reason
        self._closed.set()
        self._wake_all()
        self._streams.clear()
        self._blocked_senders.clear()
        if self._timer is not None:
            self._timer.cancel()

    def _wake_all(self) -> None:
        for stream in list(self._streams.values()):
            stream._wake()
        for stream in list(self._blocked_senders):
            stream._wake()
        self._accept_lot.unpark_all()
        self._state_lot.unpark_all()

    async def _wait_connected(self, deadline: float, budget: float) -> None:
        with trio.move_on_at(deadline) as scope:
            while not self._handshake_complete:
                if self._close_reason is not None:
                    raise TransportError(
                        f"QUIC handshake with {self._describe_peer()} failed: {self._close_reason}"
                    )
                await self._state_lot.park()
        if scope.cancelled_caught:
            raise TransportError(
                f"QUIC handshake with {self._describe_peer()} timed out after {budget:g} s"
            )

    async def _linger(self, seconds: float) -> None:
        """Give streams that sent FIN up to ``seconds`` to be acknowledged."""
        with trio.move_on_after(seconds):
            while self._close_reason is None:
                self._lingering = {s for s in self._lingering if not self._quic.send_finished(s)}
                if not self._lingering:
                    break
                await self._state_lot.park()
