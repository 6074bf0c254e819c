"""One bidirectional QUIC stream as a trio ``HalfCloseableStream``.

How this works
--------------
A ``QuicStream`` holds no socket and runs no task: its connection's driver loop
(``connection.py``) feeds it what aioquic reports (``_on_data``, ``_on_reset``,
``_on_stop_sending``) and wakes it; its methods hand data to aioquic and ask the connection to
transmit. Each direction parks on a ``ParkingLot`` of its own, and waiters re-check their
condition when woken.

- Sending: ``send_all`` hands data to aioquic while the stream's unsent bytes are below
  ``SEND_BUFFER_HIGH_WATER`` and otherwise parks until acknowledgements and credit let aioquic
  send enough to fall below half of it (the connection wakes it after each transmit). Memory
  per sending stream is that mark plus what is in flight (at most the congestion window).
- Receiving: arriving data is queued as chunks; each read reports its size to
  ``LpstreamQuicConnection.consume`` (``flow_control.py``), so the peer's credit follows what
  was read, and transmits when new credit is due.
- Retiring: once both directions are done (receiving: FIN read, reset by the peer or stopped
  by us; sending: FIN sent, reset by us or stopped by the peer), or the stream is closed, it
  leaves the connection's table.

Errors: the peer resetting a stream, stopping our sending, or the connection dying raise
``TransportError``; using a stream after closing or resetting it ourselves raises
``trio.ClosedResourceError``, as for any trio stream.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio

from lpstream.errors import TransportError

if TYPE_CHECKING:
    from lpstream.quic.connection import QuicConnectionHandle

__all__ = ["SEND_BUFFER_HIGH_WATER", "QuicStream"]

SEND_BUFFER_HIGH_WATER = 1024 * 1024
"""``send_all`` parks while a stream has this many bytes aioquic has not sent yet."""


class _OneTaskAtATime:
    """trio's rule for a stream's direction: one task sends (or receives) at a time; a second
    one gets ``trio.BusyResourceError``. Hold it with ``with``."""

    def __init__(self, doing: str) -> None:
        self._message = f"another task is {doing} on this QUIC stream"
        self._held = False

    def check(self) -> None:
        """Raises ``trio.BusyResourceError`` while another task holds it."""
        if self._held:
            raise trio.BusyResourceError(self._message)

    def __enter__(self) -> None:
        self.check()
        self._held = True

    def __exit__(self, *exc_info: object) -> None:
        self._held = False


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
        self._receiving = _OneTaskAtATime("receiving")
        # send side
        self._tx_written = 0
        self._tx_fin = False  # send_eof() wrote FIN
        self._tx_aborted = False  # we reset our sending side
        self._tx_stopped: int | None = None  # the peer sent STOP_SENDING (code)
        self._tx_lot = trio.lowlevel.ParkingLot()
        self._sending = _OneTaskAtATime("sending")
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
        with self._sending:
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

    async def wait_send_all_might_not_block(self) -> None:
        """Park until ``send_all`` could take data without parking (or would raise)."""
        with self._sending:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._may_send():
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            while not self._may_send():
                await self._wait_may_send()

    async def send_eof(self) -> None:
        """Send FIN: the peer reads ``b""`` after the data sent so far. Idempotent."""
        self._sending.check()
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
        with self._receiving:
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
