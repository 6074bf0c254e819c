"""Control streams: messages both ways with no order rules (sans-IO)."""

from __future__ import annotations

import attrs

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.wire.framing import (
    MAX_DATA_SIZE,
    MAX_HEADER_SIZE,
    FrameDecoder,
    FrameType,
)
from lpstream.wire.messages import (
    Message,
    decode_message,
    encode_message,
    frame_type_of,
)

__all__ = ["CONTROL_FRAME_TYPES", "MessageStream"]

CONTROL_FRAME_TYPES: frozenset[FrameType] = frozenset(
    {
        FrameType.ERROR,
        FrameType.GET_INFO,
        FrameType.ORCH_INFO,
        FrameType.PING,
        FrameType.PONG,
        FrameType.WORKER_HELLO,
        FrameType.WORKER_WELCOME,
        FrameType.END,
        FrameType.LIVE_OPEN,
        FrameType.LIVE_UPDATE,
        FrameType.LIVE_UPDATED,
        FrameType.LIVE_PAYMENT,
        FrameType.LIVE_EVENT,
    }
)
"""What a control stream carries by default: no JOB, DATA, RESULT or SUMMARY."""


@attrs.define
class MessageStream:
    """A symmetric stream of messages with no order rules (GET_INFO/ORCH_INFO, PING/PONG,
    WORKER_HELLO/WORKER_WELCOME). Pairing requests with answers is the caller's business.

    Args:
        accept: the frame types this stream may carry, both ways.
        max_header_size: largest frame accepted.
    """

    accept: frozenset[FrameType] = CONTROL_FRAME_TYPES
    max_header_size: int = MAX_HEADER_SIZE
    _decoder: FrameDecoder = attrs.field(init=False)
    _error: RemoteProtocolError | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        limit = self.max_header_size
        data_limit = MAX_DATA_SIZE if FrameType.DATA in self.accept else limit
        self._decoder = FrameDecoder(max_header_size=limit, max_data_size=data_limit)

    def send(self, message: Message) -> bytes:
        """Encodes one message as a frame."""
        frame_type = frame_type_of(message)
        if frame_type not in self.accept:
            raise LocalProtocolError(f"{frame_type.name} is not carried on this stream")
        return encode_message(message)

    def receive_data(self, data: bytes) -> None:
        """Adds bytes from the peer."""
        self._decoder.receive_data(data)

    def receive_eof(self) -> None:
        """Notes the peer's FIN; ``next_message`` raises if it came inside a frame."""
        self._decoder.receive_eof()

    def next_message(self) -> Message | None:
        """The next message, or ``None`` until more bytes come in (or, after the FIN, ever).

        Raises:
            RemoteProtocolError: a malformed frame (400), one over the size limit (413), or
                one this stream does not carry (400). Raised again on every call.
        """
        if self._error is not None:
            raise self._error
        try:
            frame = self._decoder.next_frame()
            if frame is None:
                return None
            if frame.type not in self.accept:
                raise RemoteProtocolError(
                    f"{frame.type.name} is not carried on this stream", code=400
                )
            return decode_message(frame)
        except RemoteProtocolError as exc:
            self._error = exc
            raise
