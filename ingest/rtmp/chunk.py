"""The RTMP chunk stream: messages cut into chunks, interleaved, headers compressed.

How this works
--------------
Every chunk starts with a basic header (2-bit ``fmt`` and a chunk stream id of 1 to 3 bytes)
and a message header whose size depends on ``fmt``:

=====  =====  =============================================================================
fmt    bytes  carries
=====  =====  =============================================================================
0      11     absolute timestamp, length, type, message stream id (little-endian)
1      7      timestamp delta, length, type (stream id as before)
2      3      timestamp delta (length, type and stream id as before)
3      0      nothing: a continuation chunk, or a new message repeating the last delta
=====  =====  =============================================================================

A timestamp field of ``0xFFFFFF`` means a 4-byte extended timestamp follows. After such a
header, fmt 3 chunks of the same chunk stream carry it too; the specification requires it on
every one, but some writers leave it off continuation chunks, so there the reader takes the
four bytes only when they repeat the stored value (the rule SRS and others settled on).

A fmt 3 chunk that starts a message adds the last timestamp field again; after a fmt 0 header
that field is the absolute timestamp itself (how ffmpeg writes and reads it). Timestamps are
32 bits on the wire and wrap; the reader keeps them as unbounded ints, unwrapping an absolute
value to the one nearest the previous timestamp and reading deltas of 2**31 and up as negative
(serial-number arithmetic).

The reader owns only what changes how bytes are cut: Set Chunk Size (type 1) and Abort
(type 2) are applied as soon as their message completes, before the next chunk is read, and
are not handed up. Every other message is returned whole.

Limits (each breach is a :class:`~lpstream.errors.RemoteProtocolError`): the chunk size a
peer may set, the length of one message, the bytes of unfinished messages held at once and
the number of chunk streams in use. A chunk is consumed only when all of it has arrived, so
a partly received chunk costs at most ``max_chunk_size`` bytes of buffer.
"""

from __future__ import annotations

import enum
import struct

import attrs

from lpstream.errors import RemoteProtocolError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_MESSAGE_SIZE",
    "ChunkReader",
    "Message",
    "MessageType",
    "encode_message",
]

DEFAULT_CHUNK_SIZE = 128
"""Chunk size of both directions until a Set Chunk Size says otherwise."""
MAX_CHUNK_SIZE = 1 << 20
"""Largest chunk size a peer may set (the protocol allows 2**31 - 1)."""
MAX_MESSAGE_SIZE = 8 << 20
"""Largest message accepted (the protocol allows 2**24 - 1)."""
MAX_CHUNK_STREAMS = 64
"""Most chunk stream ids one connection may use (publishers use about five)."""

_EXTENDED = 0xFFFFFF
_HEADER_SIZES = (11, 7, 3, 0)
_U32 = struct.Struct(">I")


class MessageType(enum.IntEnum):
    """RTMP message type ids."""

    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


@attrs.frozen(kw_only=True)
class Message:
    """One reassembled RTMP message."""

    chunk_stream_id: int
    """The chunk stream it arrived on."""
    type_id: int
    """Message type (see :class:`MessageType`); unknown types are passed on as they are."""
    stream_id: int
    """Message stream id: 0 for the connection, the created stream's id for media."""
    timestamp: int
    """Absolute timestamp in milliseconds, unwrapped past 32 bits."""
    payload: bytes
    """The message body."""


@attrs.define
class _ChunkStream:
    """What the headers of one chunk stream have said so far."""

    timestamp: int = 0
    ts_field: int = 0
    extended: bool = False
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    partial: bytearray | None = None


def _unwrap(previous: int, field: int) -> int:
    """The timestamp congruent to ``field`` modulo 2**32 nearest ``previous``."""
    candidate = (previous & ~0xFFFFFFFF) | field
    if candidate + 0x80000000 < previous:
        candidate += 1 << 32
    elif candidate - 0x80000000 > previous and candidate >= 1 << 32:
        candidate -= 1 << 32
    return candidate


def _signed_delta(field: int) -> int:
    return field - (1 << 32) if field >= 0x80000000 else field


@attrs.define
class ChunkReader:
    """Turns received bytes (after the handshake) into whole messages."""

    max_chunk_size: int = MAX_CHUNK_SIZE
    """Largest chunk size the peer may set."""
    max_message_size: int = MAX_MESSAGE_SIZE
    """Largest message length the peer may announce."""
    max_pending: int = 2 * MAX_MESSAGE_SIZE
    """Most bytes of unfinished messages held over all chunk streams."""
    _chunk_size: int = attrs.field(default=DEFAULT_CHUNK_SIZE, init=False)
    _streams: dict[int, _ChunkStream] = attrs.field(factory=dict, init=False)
    _buffer: bytearray = attrs.field(factory=bytearray, init=False)
    _pending: int = attrs.field(default=0, init=False)

    def set_limits(self, *, max_message_size: int, max_pending: int) -> None:
        """Changes the message limits (messages already begun keep their checked length)."""
        self.max_message_size = max_message_size
        self.max_pending = max_pending

    @property
    def chunk_size(self) -> int:
        """The peer's current chunk size."""
        return self._chunk_size

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole chunk."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Adds received bytes; call :meth:`read_messages` next."""
        self._buffer += data

    def read_messages(self) -> list[Message]:
        """Parses every whole chunk buffered and returns the messages they completed.

        Raises:
            RemoteProtocolError: the peer broke the chunk stream rules or a limit.
        """
        messages: list[Message] = []
        pos = 0
        try:
            while True:
                used, message = self._read_chunk(pos)
                if used == 0:
                    break
                pos += used
                if message is None:
                    continue
                if message.type_id == MessageType.SET_CHUNK_SIZE:
                    self._set_chunk_size(message.payload)
                elif message.type_id == MessageType.ABORT:
                    self._abort(message.payload)
                else:
                    messages.append(message)
        finally:
            del self._buffer[:pos]
        return messages

    def _read_chunk(self, pos: int) -> tuple[int, Message | None]:
        """Reads the chunk at ``pos``: ``(0, None)`` when it has not all arrived yet."""
        buf = self._buffer
        end = len(buf)
        if pos >= end:
            return 0, None
        fmt = buf[pos] >> 6
        csid = buf[pos] & 0x3F
        p = pos + 1
        if csid == 0:
            if p + 1 > end:
                return 0, None
            csid = 64 + buf[p]
            p += 1
        elif csid == 1:
            if p + 2 > end:
                return 0, None
            csid = 64 + buf[p] + (buf[p + 1] << 8)
            p += 2
        if p + _HEADER_SIZES[fmt] > end:
            return 0, None

        state = self._streams.get(csid)
        if state is None:
            if fmt != 0:
                raise RemoteProtocolError(
                    f"chunk stream {csid} starts with a type-{fmt} header (must be type 0)"
                )
            if len(self._streams) >= MAX_CHUNK_STREAMS:
                raise RemoteProtocolError(f"more than {MAX_CHUNK_STREAMS} chunk streams in use")
            state = _ChunkStream()
        new_message = state.partial is None
        if fmt != 3 and not new_message:
            raise RemoteProtocolError(
                f"chunk stream {csid}: type-{fmt} header before the previous message ended "
                f"({len(state.partial or b'')} of {state.length} bytes)"
            )

        length, type_id, stream_id = state.length, state.type_id, state.stream_id
        ts_field = state.ts_field
        extended = state.extended
        if fmt != 3:
            ts_field = int.from_bytes(buf[p : p + 3], "big")
            extended = ts_field == _EXTENDED
            if fmt <= 1:
                length = int.from_bytes(buf[p + 3 : p + 6], "big")
                type_id = buf[p + 6]
            if fmt == 0:
                stream_id = int.from_bytes(buf[p + 7 : p + 11], "little")
            p += _HEADER_SIZES[fmt]
        if extended:
            if p + 4 > end:
                return 0, None
            value = _U32.unpack_from(buf, p)[0]
            if fmt != 3 or new_message:
                ts_field = value
                p += 4
            elif value == state.ts_field:
                p += 4  # the repeated extended timestamp of a continuation chunk

        if new_message:
            if length > self.max_message_size:
                raise RemoteProtocolError(
                    f"message of {length} bytes over limit {self.max_message_size}", code=413
                )
            have = 0
        else:
            have = len(state.partial or b"")
        size = min(self._chunk_size, length - have)
        if p + size > end:
            return 0, None

        # The whole chunk is here: commit the header state, then the payload.
        if new_message:
            if fmt == 0:
                timestamp = _unwrap(state.timestamp, ts_field)
            else:
                timestamp = state.timestamp + _signed_delta(ts_field)
            state.timestamp = timestamp
            state.ts_field, state.extended = ts_field, extended
            state.length, state.type_id, state.stream_id = length, type_id, stream_id
            state.partial = bytearray()
            self._streams[csid] = state
        partial = state.partial
        assert partial is not None
        if self._pending + size > self.max_pending:
            raise RemoteProtocolError(
                f"over {self.max_pending} bytes of unfinished messages buffered", code=413
            )
        partial += buf[p : p + size]
        self._pending += size
        p += size
        if len(partial) < length:
            return p - pos, None
        state.partial = None
        self._pending -= length
        return p - pos, Message(
            chunk_stream_id=csid,
            type_id=type_id,
            stream_id=stream_id,
            timestamp=state.timestamp,
            payload=bytes(partial),
        )

    def _set_chunk_size(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise RemoteProtocolError(f"Set Chunk Size message of {len(payload)} bytes (want 4)")
        size = _U32.unpack_from(payload)[0]
        if size & 0x80000000 or size == 0:
            raise RemoteProtocolError(f"invalid chunk size {size}")
        if size > self.max_chunk_size:
            raise RemoteProtocolError(
                f"chunk size {size} over limit {self.max_chunk_size}", code=413
            )
        self._chunk_size = size

    def _abort(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise RemoteProtocolError(f"Abort message of {len(payload)} bytes (want 4)")
        state = self._streams.get(_U32.unpack_from(payload)[0])
        if state is not None and state.partial is not None:
            self._pending -= len(state.partial)
            state.partial = None


def encode_message(
    *,
    chunk_stream_id: int,
    type_id: int,
    stream_id: int,
    payload: bytes,
    chunk_size: int,
    timestamp: int = 0,
) -> bytes:
    """Cuts one message into chunks: a type-0 header, then type-3 continuations."""
    if not 2 <= chunk_stream_id <= 65599:
        raise ValueError(f"chunk stream id {chunk_stream_id} out of range")
    if len(payload) > 0xFFFFFF:
        raise ValueError("message longer than 2**24 - 1 bytes")
    if chunk_stream_id < 64:
        basic = bytes((chunk_stream_id,))
    elif chunk_stream_id < 320:
        basic = bytes((0, chunk_stream_id - 64))
    else:
        basic = bytes((1, (chunk_stream_id - 64) & 0xFF, (chunk_stream_id - 64) >> 8))
    timestamp &= 0xFFFFFFFF
    extended = timestamp >= _EXTENDED
    ext = _U32.pack(timestamp) if extended else b""
    out = bytearray(basic)
    out += min(timestamp, _EXTENDED).to_bytes(3, "big")
    out += len(payload).to_bytes(3, "big")
    out.append(type_id)
    out += stream_id.to_bytes(4, "little")
    out += ext
    continuation = bytes((basic[0] | 0xC0,)) + basic[1:] + ext
    for offset in range(0, max(len(payload), 1), chunk_size):
        if offset:
            out += continuation
        out += payload[offset : offset + chunk_size]
    return bytes(out)
