"""A thin trio driver for aioquic's sans-IO ``QuicConnection``.

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

The client (``open_quic_connection``) owns a connected UDP socket and reads it directly. The
server (``serve_quic``) owns one socket; one task reads it and routes each datagram by its
destination connection ID into the owning connection's bounded channel (a full channel drops
the datagram, which QUIC recovers from like any loss); Initial packets for unknown IDs make a
new connection, other unknown datagrams are dropped. Each server connection runs its loop and
the application's handler in a nursery of its own; the handler returning closes the connection.

Flow control and memory
-----------------------
- Sending: ``send_all`` hands data to aioquic while the stream's unsent bytes are below
  ``SEND_BUFFER_HIGH_WATER`` and otherwise parks until acknowledgements and credit let aioquic
  send enough to fall below half of it. Memory per sending stream is that mark plus what is in
  flight (at most the congestion window).
- Receiving: aioquic by itself doubles a stream's receive window whenever half of it has
  *arrived*, whether or not anyone read it. ``_LpstreamQuicConnection`` replaces that one
  method so credit follows *consumption*: the peer may send at most ``max_stream_data`` bytes
  beyond what the application has read. Data that arrives is therefore bounded per stream by
  the window, and a slow reader slows the peer's ``send_all`` down instead of growing a
  buffer. The connection-wide window stays aioquic's (doubling as data arrives); what it could
  let through is bounded by per-stream windows times the stream limit: aioquic lets a peer
  have 128 unfinished streams per direction (MAX_STREAMS), which also bounds the streams
  waiting for ``accept_stream``.
- Opening: ``open_stream`` parks while the peer's MAX_STREAMS limit is reached. aioquic would
  queue such a stream as "blocked" but still write RESET_STREAM/STOP_SENDING for it if it is
  aborted, which the peer must answer by closing the whole connection (STREAM_LIMIT_ERROR).

Errors: the peer resetting a stream, stopping our sending, or the connection dying raise
``TransportError``; using a stream after closing or resetting it ourselves raises
``trio.ClosedResourceError``, as for any trio stream.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import attrs
import trio
from aioquic._buffer import Buffer  # aioquic.buffer re-exports it implicitly
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection
from aioquic.quic.packet import (
    QuicFrameType,
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream as _AioquicStream

from lpstream.errors import TransportError
from lpstream.quic.tls import (
    LOOPBACK_MAX_DATAGRAM_SIZE,
    client_configuration,
    server_configuration,
)

__all__ = [
    "SEND_BUFFER_HIGH_WATER",
    "STREAM_REFUSED",
    "QuicConnectionHandle",
    "QuicConnectionStatistics",
    "QuicStream",
    "open_quic_connection",
    "serve_quic",
]

logger = logging.getLogger("lpstream.quic")

NetworkAddress = tuple[Any, ...]
Datagrams = list[tuple[bytes, NetworkAddress]]
Receive = Callable[[], Awaitable[Datagrams]]

SEND_BUFFER_HIGH_WATER = 1024 * 1024
"""``send_all`` parks while a stream has this many bytes aioquic has not sent yet."""

STREAM_REFUSED = 503
"""Application error code for refused peer streams (lpstream/1 has no unidirectional ones)."""

RECEIVE_BATCH = 64
"""Datagrams read per wake-up before events are processed and replies written."""

SOCKET_BUFFER_SIZE = 4 * 1024 * 1024
"""SO_RCVBUF/SO_SNDBUF asked for (the kernel caps it at net.core.[rw]mem_max)."""

CLOSE_LINGER = 2.0
"""Seconds a clean exit waits for finished streams' data to be acknowledged before closing."""

SERVER_CHANNEL_SIZE = 256
"""Datagrams queued per server connection before further ones are dropped."""


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


class _LpstreamQuicConnection(QuicConnection):
    """aioquic's connection with stream receive credit tied to what the application read.

    The only aioquic internals lpstream touches live here: the stream table, the sender's
    highest sent offset, and the method that writes MAX_STREAM_DATA frames.
    """

    def __init__(self, *, configuration: QuicConfiguration, **kwargs: Any) -> None:
        super().__init__(configuration=configuration, **kwargs)
        self._lp_window: int = configuration.max_stream_data
        self._lp_consumed: dict[int, int] = {}

    def track(self, stream_id: int) -> None:
        self._lp_consumed.setdefault(stream_id, 0)

    def forget(self, stream_id: int) -> None:
        self._lp_consumed.pop(stream_id, None)

    def consume(self, stream_id: int, size: int) -> bool:
        """Count ``size`` bytes read by the application; say whether new credit is due."""
        consumed = self._lp_consumed.get(stream_id)
        if consumed is None:
            return False
        consumed += size
        self._lp_consumed[stream_id] = consumed
        stream = self._streams.get(stream_id)
        if stream is None or stream.receiver.is_finished:
            return False
        return consumed + self._lp_window - stream.max_stream_data_local >= self._lp_window // 2

    def unsent(self, stream_id: int, written: int) -> int:
        """Bytes of the ``written`` handed to the stream that were not sent yet."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        return max(0, written - stream.sender.highest_offset)

    def can_open_stream(self) -> bool:
        """Whether the peer's MAX_STREAMS lets the next bidirectional stream be used now."""
        return bool(self._local_next_stream_id_bidi // 4 < self._remote_max_streams_bidi)

    def send_finished(self, stream_id: int) -> bool:
        """Whether everything written to the stream was acknowledged (or it was reset)."""
        stream = self._streams.get(stream_id)
        return stream is None or stream.sender.is_finished

    def reset_sending(self, stream_id: int, error_code: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.sender.is_finished:
            self.reset_stream(stream_id, error_code)

    def stop_receiving(self, stream_id: int, error_code: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.receiver.is_finished:
            self.stop_stream(stream_id, error_code)

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: _AioquicStream
    ) -> None:
        # Replaces aioquic's version, which doubles the window as data arrives.
        stream_id = stream.stream_id
        if stream_id is None or not stream.max_stream_data_local or stream.receiver.is_finished:
            return
        consumed = self._lp_consumed.get(stream_id)
        if consumed is not None:
            limit = consumed + self._lp_window
            if limit - stream.max_stream_data_local >= self._lp_window // 2:
                stream.max_stream_data_local = limit
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local
            if self._quic_logger is not None and builder.quic_logger_frames is not None:
                builder.quic_logger_frames.append(
                    self._quic_logger.encode_max_stream_data_frame(
                        maximum=stream.max_stream_data_local, stream_id=stream_id
                    )
                )


class QuicStream(trio.abc.HalfCloseableStream):
    """One bidirectional QUIC stream, as a trio stream.

    Get one from ``QuicConnectionHandle.open_stream`` or ``accept_stream``. The peer sees a
    stream opened with ``open_stream`` when its first byte (or FIN) arrives.
    """

    def __init__(self, connection: QuicConnectionHandle, stream_id: int) -> None:
        self._conn = connection
        self._stream_id = stream_id
        # receive side
        self._rx_chunks: deque[bytes] = deque()
        self._rx_eof = False  # the peer's FIN arrived (after the buffered data)
        self._rx_reset: int | None = None  # the peer reset its sending side (code)
        self._rx_done = False  # nothing more will be delivered (EOF read, reset, stopped)
        self._rx_lot = trio.lowlevel.ParkingLot()
        self._receiving = False
        # send side
        self._tx_written = 0
        self._tx_fin = False  # send_eof() wrote FIN
        self._tx_aborted = False  # we reset our sending side
        self._tx_stopped: int | None = None  # the peer sent STOP_SENDING (code)
        self._tx_lot = trio.lowlevel.ParkingLot()
        self._sending = False
        # both
        self._reset_locally = False
        self._closed = False

    @property
    def stream_id(self) -> int:
        """The QUIC stream ID."""
        return self._stream_id

    def __repr__(self) -> str:
        return f"<QuicStream {self._stream_id} of {self._conn!r}>"

    # -- sending ---------------------------------------------------------------------------

    def _send_error(self) -> BaseException | None:
        if self._closed or self._reset_locally:
            return trio.ClosedResourceError(f"QUIC stream {self._stream_id} was closed")
        if self._tx_aborted:
            return trio.ClosedResourceError(f"QUIC stream {self._stream_id} was reset")
        if self._tx_fin:
            return trio.ClosedResourceError(f"send_eof() was called on stream {self._stream_id}")
        if self._tx_stopped is not None:
            return TransportError(
                f"QUIC stream {self._stream_id}: peer stopped receiving (code {self._tx_stopped})"
            )
        return self._conn._error()

    def _unsent(self) -> int:
        return self._conn._quic.unsent(self._stream_id, self._tx_written)

    def _may_send(self) -> bool:
        return self._unsent() < SEND_BUFFER_HIGH_WATER or self._send_error() is not None

    async def _wait_may_send(self) -> None:
        self._conn._blocked_senders.add(self)
        try:
            await self._tx_lot.park()
        finally:
            self._conn._blocked_senders.discard(self)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``, parking while too much is waiting to be sent (see module comment)."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this QUIC stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            view = memoryview(data).cast("B")
            parked = False
            while True:
                error = self._send_error()
                if error is not None:
                    raise error
                if not view:
                    break
                room = SEND_BUFFER_HIGH_WATER - self._unsent()
                if room <= 0:
                    parked = True
                    await self._wait_may_send()
                    continue
                chunk = view[:room]
                view = view[len(chunk) :]
                self._conn._quic.send_stream_data(self._stream_id, bytes(chunk))
                self._tx_written += len(chunk)
                self._conn._transmit()
            if not parked:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Park until ``send_all`` could take data without parking (or would raise)."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this QUIC stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._may_send():
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            while not self._may_send():
                await self._wait_may_send()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Send FIN: the peer reads ``b""`` after the data sent so far. Idempotent."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this QUIC stream")
        await trio.lowlevel.checkpoint()
        if self._tx_fin and not (self._closed or self._tx_aborted):
            return
        error = self._send_error()
        if error is not None:
            raise error
        self._conn._quic.send_stream_data(self._stream_id, b"", end_stream=True)
        self._tx_fin = True
        self._conn._lingering.add(self._stream_id)
        self._conn._transmit()
        self._maybe_retire()

    # -- receiving -------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return the next bytes from the peer, or ``b""`` once it sent FIN.

        Raises:
            TransportError: the peer reset the stream, or the connection is closed with no
                more data buffered.
            trio.ClosedResourceError: this stream was closed or reset locally.
        """
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this QUIC stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            parked = False
            while True:
                if self._closed or self._reset_locally:
                    raise trio.ClosedResourceError(f"QUIC stream {self._stream_id} was closed")
                if self._rx_reset is not None:
                    raise TransportError(
                        f"QUIC stream {self._stream_id} reset by peer (code {self._rx_reset})"
                    )
                if self._rx_chunks:
                    data = self._take(max_bytes)
                    break
                if self._rx_eof:
                    data = b""
                    if not self._rx_done:
                        self._rx_done = True
                        self._maybe_retire()
                    break
                error = self._conn._error()
                if error is not None:
                    raise error
                parked = True
                await self._rx_lot.park()
            if not parked:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    def _take(self, max_bytes: int | None) -> bytes:
        chunks = self._rx_chunks
        if max_bytes is None:
            if len(chunks) == 1:
                data = chunks.popleft()
            else:
                data = b"".join(chunks)
                chunks.clear()
        else:
            first = chunks[0]
            if len(first) >= max_bytes:
                data = first[:max_bytes]
                if len(first) == max_bytes:
                    chunks.popleft()
                else:
                    chunks[0] = first[max_bytes:]
            else:
                parts = []
                size = 0
                while chunks and size + len(chunks[0]) <= max_bytes:
                    part = chunks.popleft()
                    parts.append(part)
                    size += len(part)
                data = b"".join(parts)
        conn = self._conn
        if conn._quic.consume(self._stream_id, len(data)) and conn._close_reason is None:
            conn._transmit()
        return data

    # -- closing ---------------------------------------------------------------------------

    def reset(self, code: int = 0) -> None:
        """Abort both directions: RESET_STREAM for ours, STOP_SENDING for the peer's."""
        if self._closed or self._reset_locally:
            return
        self._reset_locally = True
        self._abort(code, send=not self._tx_aborted, receive=not self._rx_done)

    async def aclose(self) -> None:
        """Close the stream; a direction that did not finish cleanly is aborted (code 0)."""
        if not self._closed:
            self._abort(0, send=not (self._tx_fin or self._tx_aborted), receive=not self._rx_done)
            self._closed = True
            self._maybe_retire()
        await trio.lowlevel.checkpoint()

    def _abort(self, code: int, *, send: bool, receive: bool) -> None:
        conn = self._conn
        if conn._close_reason is None:
            if send and self._tx_stopped is None:
                conn._quic.reset_sending(self._stream_id, code)
            if receive and self._rx_reset is None:
                conn._quic.stop_receiving(self._stream_id, code)
            conn._transmit()
        if receive:
            self._rx_chunks.clear()
            self._rx_done = True
        if send:
            self._tx_aborted = True
        self._wake()
        self._maybe_retire()

    # -- called by the connection ----------------------------------------------------------

    def _on_data(self, data: bytes, fin: bool) -> None:
        if self._rx_done:
            return
        if data:
            self._rx_chunks.append(data)
        if fin:
            self._rx_eof = True
        self._rx_lot.unpark_all()

    def _on_reset(self, code: int) -> None:
        if self._rx_done:
            return
        self._rx_reset = code
        self._rx_chunks.clear()
        self._rx_done = True
        self._rx_lot.unpark_all()
        self._maybe_retire()

    def _on_stop_sending(self, code: int) -> None:
        if self._tx_stopped is None and not (self._tx_fin or self._tx_aborted):
            self._tx_stopped = code
        self._tx_lot.unpark_all()
        self._maybe_retire()

    def _wake(self) -> None:
        self._rx_lot.unpark_all()
        self._tx_lot.unpark_all()

    def _maybe_retire(self) -> None:
        send_done = self._tx_fin or self._tx_aborted or self._tx_stopped is not None
        if self._closed or (self._rx_done and send_done):
            self._conn._retire(self)


class QuicConnectionHandle:
    """One QUIC connection to a peer: open and accept streams, close, observe.

    Made by ``open_quic_connection`` (client) or handed to ``serve_quic``'s handler (server);
    both sides can open and accept bidirectional streams.
    """

    def __init__(
        self,
        quic: _LpstreamQuicConnection,
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


# -- sockets ---------------------------------------------------------------------------------


def _udp_socket(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with suppress(OSError):  # the platform refuses: keep its default
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)
    return sock


def _close_socket(sock: socket.socket) -> None:
    trio.lowlevel.notify_closing(sock)
    sock.close()


async def _resolve(host: str, port: int, *, passive: bool = False) -> tuple[int, NetworkAddress]:
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


def _is_loopback(address: NetworkAddress) -> bool:
    try:
        return ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
    except ValueError:
        return False


def _for_peer(
    configuration: QuicConfiguration, peer: NetworkAddress, loopback_datagram_size: int | None
) -> QuicConfiguration:
    if (
        loopback_datagram_size is not None
        and configuration.max_datagram_size < loopback_datagram_size
        and _is_loopback(peer)
    ):
        return dataclasses.replace(configuration, max_datagram_size=loopback_datagram_size)
    return configuration


def _socket_receiver(sock: socket.socket, peer: NetworkAddress) -> Receive:
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


def _channel_receiver(channel: trio.MemoryReceiveChannel[tuple[bytes, NetworkAddress]]) -> Receive:
    async def receive() -> Datagrams:
        batch = [await channel.receive()]
        for _ in range(RECEIVE_BATCH - 1):
            try:
                batch.append(channel.receive_nowait())
            except trio.WouldBlock:
                break
        return batch

    return receive


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

    Raises:
        TransportError: the name does not resolve, the peer is unreachable, the handshake
            failed or did not finish within ``connect_timeout``.
    """
    configuration = configuration or client_configuration()
    if not configuration.is_client:
        raise ValueError("open_quic_connection needs a client configuration")
    deadline = trio.current_time() + connect_timeout
    with trio.move_on_at(deadline) as resolving:
        family, peer = await _resolve(host, port)
    if resolving.cancelled_caught:
        raise TransportError(f"resolving {host!r} took longer than {connect_timeout:g} s")
    configuration = _for_peer(configuration, peer, loopback_datagram_size)
    if configuration.server_name is None:
        configuration = dataclasses.replace(configuration, server_name=host)
    sock = _udp_socket(family)
    try:
        try:
            sock.connect(peer)
        except OSError as exc:
            raise TransportError(f"cannot reach {host}:{port}: {exc}") from exc

        def send(data: bytes, addr: NetworkAddress) -> None:
            with suppress(BlockingIOError):  # a full socket buffer: a loss QUIC recovers from
                sock.send(data)

        connection = QuicConnectionHandle(
            _LpstreamQuicConnection(configuration=configuration), send=send, remote_address=peer
        )
        async with _background(lambda: connection._run(_socket_receiver(sock, peer))):
            try:
                connection._quic.connect(peer, now=trio.current_time())
                connection._transmit()
                await connection._wait_connected(deadline, connect_timeout)
                yield connection
                await connection._linger(CLOSE_LINGER)
            finally:
                connection.close()
    finally:
        _close_socket(sock)


# -- server ----------------------------------------------------------------------------------


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
        configuration = _for_peer(self._configuration, addr, self._loopback_datagram_size)
        quic = _LpstreamQuicConnection(
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
                nursery.start_soon(connection._run, _channel_receiver(channel))
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
    family, address = await _resolve(host, port, passive=True)
    sock = _udp_socket(family)
    try:
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
    finally:
        _close_socket(sock)
