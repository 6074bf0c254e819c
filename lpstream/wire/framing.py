"""Frames of the lpstream wire protocol, and the QUIC variable-length integers they use.

How this works:

    frame = type (1 byte) || length (varint) || body (length bytes)

``type`` is a :class:`FrameType`. ``length`` is a QUIC variable-length integer (RFC 9000
section 16): the two high bits of the first byte give its size (1, 2, 4 or 8 bytes), the rest
is the value, big-endian, so it holds 0 to 2**62 - 1. We always write the shortest form and
accept any form, as RFC 9000 asks.

:class:`FrameDecoder` is sans-IO: feed it bytes in pieces of any size with ``receive_data``,
take whole frames out with ``next_frame``. It checks the type as soon as the first byte is
in, and the length against its limits as soon as the varint is in, so a peer can never make it
buffer a body it would refuse. DATA frames carry media and have their own, larger limit; every
other frame carries a msgpack header (see :mod:`lpstream.wire.messages`).

After it raised a :class:`~lpstream.errors.RemoteProtocolError` a decoder stays broken: every
later ``next_frame`` raises the same error (the stream is to be reset, not resynchronised).
"""

from __future__ import annotations

import enum

import attrs

from lpstream.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_DATA_SIZE",
    "MAX_HEADER_SIZE",
    "MAX_VARINT",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "decode_varint",
    "encode_frame",
    "encode_varint",
    "varint_size",
]

MAX_VARINT = (1 << 62) - 1
"""The largest value a QUIC varint holds."""

MAX_HEADER_SIZE = 64 * 1024
"""Default limit on the body of a header (non-DATA) frame, in bytes."""

MAX_DATA_SIZE = 1024 * 1024
"""Default limit on the body of a DATA frame (track varint included), in bytes."""


class FrameType(enum.IntEnum):
    """The first byte of every frame. Values not listed here are rejected (400)."""

    JOB = 1
    """Requester → responder: the job header; opens a job stream."""
    DATA = 2
    """Media: varint track || payload, on a job stream in either direction."""
    RESULT = 3
    """Responder → requester: opens the response, names the renditions."""
    ERROR = 4
    """Any stream: the request failed, with an HTTP-like code."""
    GET_INFO = 5
    """Control stream: ask for an ORCH_INFO."""
    ORCH_INFO = 6
    """Control stream: price, capabilities and capacity of an orchestrator."""
    PING = 7
    """Control stream: liveness probe."""
    PONG = 8
    """Control stream: answer to PING, echoing its nonce."""
    WORKER_HELLO = 9
    """Control stream, worker → orchestrator: registration."""
    WORKER_WELCOME = 10
    """Control stream, orchestrator → worker: registration accepted."""
    END = 11
    """Reserved end-of-messages marker; job streams end with QUIC FIN instead."""
    SUMMARY = 12
    """Responder → requester: closes the response with the final size of each rendition."""
    LIVE_OPEN = 13
    """Gateway → orchestrator: opens the control stream of a live AI session."""
    LIVE_UPDATE = 14
    """Live control stream (and orchestrator → worker): change a running pipeline's
    parameters."""
    LIVE_UPDATED = 15
    """Answer to LIVE_UPDATE: the version the change got and the frame it applied at."""
    LIVE_PAYMENT = 16
    """Live control stream, gateway → orchestrator: tickets paying for the session's time."""
    LIVE_EVENT = 17
    """Live control stream, orchestrator → gateway: billing, statistics, stop."""


_FRAME_TYPES = frozenset(int(t) for t in FrameType)


@attrs.frozen(kw_only=True)
class Frame:
    """One frame as it travels: a type and an opaque body."""

    type: FrameType
    """What the body holds."""
    body: bytes
    """The body; msgpack for headers, varint track || payload for DATA."""


def varint_size(value: int) -> int:
    """How many bytes :func:`encode_varint` writes for ``value``."""
    if value < 0 or value > MAX_VARINT:
        raise LocalProtocolError(f"varint out of range: {value}")
    if value < 1 << 6:
        return 1
    if value < 1 << 14:
        return 2
    if value < 1 << 30:
        return 4
    return 8


_PREFIX = {1: 0x00, 2: 0x40, 4: 0x80, 8: 0xC0}


def encode_varint(value: int) -> bytes:
    """Encodes ``value`` (0 to 2**62 - 1) as a QUIC varint in its shortest form.

    Raises:
        LocalProtocolError: if the value is out of range.
    """
    size = varint_size(value)
    raw = bytearray(value.to_bytes(size, "big"))
    raw[0] |= _PREFIX[size]
    return bytes(raw)


def decode_varint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Reads the varint at ``data[offset:]``.

    Returns:
        ``(value, offset after the varint)``, or ``None`` if ``data`` ends inside it.
    """
    if offset >= len(data):
        return None
    size = 1 << (data[offset] >> 6)
    end = offset + size
    if end > len(data):
        return None
    value = int.from_bytes(data[offset:end], "big") & ((1 << (8 * size - 2)) - 1)
    return value, end


def encode_frame(frame_type: FrameType, body: bytes) -> bytes:
    """Encodes one frame: type byte, varint length, body."""
    return b"".join((bytes((frame_type,)), encode_varint(len(body)), body))


@attrs.define
class FrameDecoder:
    """Cuts a byte stream into frames, enforcing size limits before buffering bodies.

    Args:
        max_header_size: largest body accepted for a frame other than DATA.
        max_data_size: largest body accepted for a DATA frame.
    """

    max_header_size: int = MAX_HEADER_SIZE
    max_data_size: int = MAX_DATA_SIZE
    _buffer: bytearray = attrs.field(factory=bytearray, init=False)
    _eof: bool = attrs.field(default=False, init=False)
    _error: RemoteProtocolError | None = attrs.field(default=None, init=False)

    @property
    def pending(self) -> int:
        """Bytes received and not yet returned in a frame."""
        return len(self._buffer)

    @property
    def at_eof(self) -> bool:
        """Whether :meth:`receive_eof` was called."""
        return self._eof

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Adds bytes from the peer.

        Raises:
            LocalProtocolError: if called after :meth:`receive_eof`.
        """
        if self._eof:
            raise LocalProtocolError("received data after end of stream")
        self._buffer += data

    def receive_eof(self) -> None:
        """Notes that the peer ended the stream (QUIC FIN); no more data may follow."""
        self._eof = True

    def next_frame(self) -> Frame | None:
        """Returns the next whole frame, or ``None`` if more bytes are needed.

        After :meth:`receive_eof`, ``None`` means the stream ended cleanly on a frame boundary.

        Raises:
            RemoteProtocolError: unknown type (400), body over a limit (413), or the stream
                ended inside a frame (400).
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_frame()
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _next_frame(self) -> Frame | None:
        buf = self._buffer
        if buf:
            frame_type = buf[0]
            if frame_type not in _FRAME_TYPES:
                raise RemoteProtocolError(f"unknown frame type {frame_type}", code=400)
            parsed = decode_varint(buf, 1)
            if parsed is not None:
                length, start = parsed
                if frame_type == FrameType.DATA:
                    limit, what = self.max_data_size, "DATA"
                else:
                    limit, what = self.max_header_size, FrameType(frame_type).name
                if length > limit:
                    raise RemoteProtocolError(
                        f"{what} frame of {length} bytes is over the limit of {limit}", code=413
                    )
                end = start + length
                if end <= len(buf):
                    body = bytes(buf[start:end])
                    del buf[:end]
                    return Frame(type=FrameType(frame_type), body=body)
        if self._eof and buf:
            raise RemoteProtocolError("stream ended inside a frame", code=400)
        return None
