"""The trio driver of :class:`~.rtmp_client.RtmpPublishClient`: one TCP (or TLS) connection.

Every wait has a deadline: connecting, the handshake and the publish together take at most
``connect_timeout``; each write at most ``write_timeout`` (a destination that stops reading
fills the socket's buffer and the write times out). A task reads what the server sends the
whole time, so pings are answered, acknowledgements sent, and a server that hangs up or
refuses the stream ends the connection at once. Socket, TLS and timeout errors become
:class:`~lpstream.errors.TransportError` here, the one place they are mapped.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence

import attrs
import trio

from lpstream.errors import TransportError
from lpstream.taskgroups import one_error

from .remux import FlvTag
from .rtmp_client import RtmpPublishClient
from .target import ForwardTarget

__all__ = ["RtmpConnection", "open_rtmp_push"]

_RECEIVE_SIZE = 65_536


@contextlib.contextmanager
def _transport_errors(what: str) -> Iterator[None]:
    """Maps the network's exceptions to ``TransportError`` naming what was being done."""
    try:
        yield
    except trio.TooSlowError as exc:
        raise TransportError(f"{what}: timed out") from exc
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
        cause = (
            exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
        )
        raise TransportError(f"{what}: {cause}") from exc


@attrs.define
class RtmpConnection:
    """A publish the server has accepted: send FLV tags with :meth:`send_tags`."""

    _stream: trio.abc.Stream
    _client: RtmpPublishClient
    write_timeout: float
    bytes_sent: int = 0
    """Bytes written to the connection (handshake and commands included)."""
    _send_lock: trio.Lock = attrs.Factory(trio.Lock)

    async def send_tags(self, tags: Sequence[FlvTag]) -> None:
        """Sends tags as messages of the published stream.

        Raises:
            TransportError: the write failed or took longer than ``write_timeout``.
        """
        for tag in tags:
            self._client.send_tag(tag)
        await self._flush()

    async def _flush(self) -> None:
        data = self._client.data_to_send()
        if not data:
            return
        async with self._send_lock:
            with _transport_errors("sending to the destination"):
                with trio.fail_after(self.write_timeout):
                    await self._stream.send_all(data)
        self.bytes_sent += len(data)

    async def _receive(self) -> None:
        with _transport_errors("reading from the destination"):
            data = await self._stream.receive_some(_RECEIVE_SIZE)
        self._client.receive_data(data)
        await self._flush()

    async def _read_until_live(self) -> None:
        await self._flush()
        while not self._client.live:
            await self._receive()

    async def _read_forever(self) -> None:
        while True:
            await self._receive()


@contextlib.asynccontextmanager
async def open_rtmp_push(
    target: ForwardTarget,
    *,
    connect_timeout: float,
    write_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[RtmpConnection]:
    """Connects to ``target`` and publishes its stream key; yields once the server accepts.

    ``rtmps`` checks the server's certificate against ``ssl_context`` (default: the system's
    trusted authorities).

    Raises:
        TransportError: the connection failed, timed out or broke.
        RemoteProtocolError: the server refused the stream or broke the protocol.
    """
    stream: trio.abc.Stream | None = None
    try:
        with _transport_errors(f"connecting to {target.redacted}"):
            with trio.fail_after(connect_timeout):
                stream = await trio.open_tcp_stream(target.host, target.port)
                if target.scheme == "rtmps":
                    context = ssl_context or ssl.create_default_context()
                    stream = trio.SSLStream(stream, context, server_hostname=target.host)
                    await stream.do_handshake()
                client = RtmpPublishClient(
                    app=target.app, stream_key=target.stream_key, tc_url=target.tc_url
                )
                connection = RtmpConnection(stream, client, write_timeout)
                await connection._read_until_live()
        with one_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connection._read_forever)
                yield connection
                nursery.cancel_scope.cancel()
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)
