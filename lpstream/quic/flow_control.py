"""Stream receive credit that follows what the application read: lpstream's aioquic subclass.

How this works
--------------
aioquic by itself doubles a stream's receive window whenever half of it has *arrived*, whether
or not anyone read it. ``LpstreamQuicConnection`` replaces that one method
(``_write_stream_limits``) so credit follows *consumption*: the peer may send at most
``max_stream_data`` bytes beyond what the application has read. ``QuicStream`` reports each
read with ``consume``, which says when half a window of new credit is due; the driver then
transmits, and the next packet carries the MAX_STREAM_DATA frame. Data that arrives is
therefore bounded per stream by the window, and a slow reader slows the peer's ``send_all``
down instead of growing a buffer.

The connection-wide window stays aioquic's (doubling as data arrives); what it could let
through is bounded by per-stream windows times the stream limit: aioquic lets a peer have 128
unfinished streams per direction (MAX_STREAMS), which also bounds the streams waiting for
``accept_stream``.

With ``pinning``, this is the only module that touches aioquic internals: the stream table, the
sender's highest sent offset, the local stream-ID counter and the peer's MAX_STREAMS, the method
that writes MAX_STREAM_DATA frames, and the one that makes the TLS context (where a certificate
check is installed, see ``pinning``). An aioquic upgrade is checked here.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream as _AioquicStream

from lpstream.quic.pinning import CertificateCheck, check_server_certificate

__all__ = ["LpstreamQuicConnection"]


class LpstreamQuicConnection(QuicConnection):
    """aioquic's connection with stream receive credit tied to what the application read.

    The aioquic internals lpstream touches live here (and in ``pinning``): the stream table,
    the sender's highest sent offset, the method that writes MAX_STREAM_DATA frames, and the
    one that makes the TLS context.

    Args:
        configuration: aioquic's configuration.
        certificate_check: a client's check of the server certificate (``pinning``), run in
            the handshake; None checks only what ``configuration`` asks.
    """

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        certificate_check: CertificateCheck | None = None,
        **kwargs: Any,
    ) -> None:
        self._lp_certificate_check = certificate_check  # read by _initialize, from connect()
        super().__init__(configuration=configuration, **kwargs)
        self._lp_window: int = configuration.max_stream_data
        self._lp_consumed: dict[int, int] = {}

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if self._lp_certificate_check is not None:
            check_server_certificate(self.tls, self._lp_certificate_check)

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
