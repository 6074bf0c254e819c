"""What one HTTP client may cost the node, and the one place request bodies are read.

How this works:

* :class:`HttpLimits` holds every HTTP budget, each with its default; the server
  (:mod:`lpstream.http.server`) applies the connection ones, :class:`BodyReader` the body ones.
* A request body is never read whole first. :meth:`BodyReader.read` refuses a
  ``Content-Length`` over the route's limit before reading a byte (413), then reads chunk by
  chunk and stops at the first byte over it (413); the server then closes the connection
  instead of reading the rest. The whole body must arrive within ``body_timeout`` (408), so a
  client sending a byte now and then cannot hold a connection, and at most ``max_uploads``
  bodies are being received at once, node-wide (503): slow senders cannot take every
  connection from viewers.
* A client that leaves mid-body is normal: logged at debug, answered 499 (a reply nobody
  reads); never a traceback.
"""

from __future__ import annotations

import contextlib
import logging

import attrs
import trio
from starlette.requests import ClientDisconnect, Request

from lpstream.errors import RemoteProtocolError

__all__ = [
    "CLIENT_LEFT",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_DEAD_PEER_TIMEOUT",
    "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_UPLOADS",
    "DEFAULT_MAX_WEBSOCKET_MESSAGE",
    "DEFAULT_SEND_TIMEOUT",
    "BodyReader",
    "HttpLimits",
]

log = logging.getLogger("lpstream.http")

DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0
DEFAULT_DEAD_PEER_TIMEOUT = 60.0
DEFAULT_SEND_TIMEOUT = 30.0
DEFAULT_BODY_TIMEOUT = 10.0
DEFAULT_MAX_UPLOADS = 64
DEFAULT_MAX_WEBSOCKET_MESSAGE = 64 * 1024
CLIENT_LEFT = 499
"""The status of a request whose client left before its body was complete (nginx's)."""


@attrs.frozen(kw_only=True)
class HttpLimits:
    """The HTTP budgets of a node."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """HTTP connections (WebSockets included) open at once; more are answered 503 and closed.
    Held below the process's file-descriptor limit (``server.FD_RESERVE`` stay for the rest)."""
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT
    """Seconds an idle connection is kept open, and the most a client may take to send a
    request's headers."""
    dead_peer_timeout: float = DEFAULT_DEAD_PEER_TIMEOUT
    """Seconds after which a connection whose client machine vanished (no FIN, no reset: a
    crash, a dropped NAT entry) is closed; TCP keepalive probes it from half of this on."""
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    """Seconds one write to a client may wait for it to read before the connection is closed."""
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    """Seconds a request body may take to arrive whole; a slower one is answered 408."""
    max_uploads: int = DEFAULT_MAX_UPLOADS
    """Request bodies being received at once, node-wide; more are answered 503."""
    max_websocket_message: int = DEFAULT_MAX_WEBSOCKET_MESSAGE
    """Largest WebSocket message in bytes; a bigger one closes the socket with 1009."""


@attrs.define
class BodyReader:
    """Reads request bodies within a size limit, a deadline and a node-wide count.

    One per app (``build_app`` makes it), shared by every route that takes a body.
    """

    timeout: float = DEFAULT_BODY_TIMEOUT
    """Seconds a body may take to arrive whole (408 past it)."""
    max_uploads: int = DEFAULT_MAX_UPLOADS
    """Bodies being received at once (503 past it)."""
    _receiving: int = attrs.field(default=0, init=False)

    @classmethod
    def from_limits(cls, limits: HttpLimits) -> BodyReader:
        return cls(timeout=limits.body_timeout, max_uploads=limits.max_uploads)

    @property
    def receiving(self) -> int:
        """Bodies being received now."""
        return self._receiving

    async def read(self, request: Request, limit: int, *, what: str = "request body") -> bytes:
        """The body of ``request``, at most ``limit`` bytes.

        Raises:
            lpstream.errors.RemoteProtocolError: 413 over ``limit`` (by ``Content-Length`` or
                while streaming), 408 not whole within ``timeout``, 503 ``max_uploads`` bodies
                are being received already, 499 the client left.
        """
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise RemoteProtocolError(f"{what} over {limit} bytes", code=413)
        if self._receiving >= self.max_uploads:
            raise RemoteProtocolError(
                f"{self.max_uploads} request bodies are being received already (max_uploads); "
                "retry shortly",
                code=503,
            )
        self._receiving += 1
        body = bytearray()
        try:
            with trio.move_on_after(self.timeout) as deadline:
                async with contextlib.aclosing(request.stream()) as chunks:
                    async for chunk in chunks:
                        body += chunk
                        if len(body) > limit:
                            raise RemoteProtocolError(f"{what} over {limit} bytes", code=413)
        except ClientDisconnect:
            log.debug(
                "%s %s: the client left after %d bytes", request.method, request.url.path, len(body)
            )
            raise RemoteProtocolError(
                f"the client left before its {what} was complete", code=CLIENT_LEFT
            ) from None
        finally:
            self._receiving -= 1
        if deadline.cancelled_caught:
            raise RemoteProtocolError(
                f"{what} not received within {self.timeout:g} s (body_timeout)", code=408
            )
        return bytes(body)
