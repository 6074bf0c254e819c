"""A tiny HTTP/1.1 server on loopback, for hooks and key servers in tests: each request is
recorded and answered by a function of it, then the connection is closed."""

from __future__ import annotations

import contextlib
import http
import json
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
import trio

__all__ = ["Answer", "HookRequest", "HookServer", "serve_hook"]


@attrs.frozen
class HookRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.frozen
class Answer:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0
    content_length: int | None = None
    """The Content-Length sent; None: the body's; -1: none (the body ends at the close)."""

    @classmethod
    def of_json(cls, document: Any, status: int = 200) -> Answer:
        return cls(status=status, body=json.dumps(document).encode())


@attrs.define
class HookServer:
    url: str
    requests: list[HookRequest] = attrs.Factory(list)


async def _read_request(stream: trio.abc.Stream) -> HookRequest | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        body += chunk
    return HookRequest(method, path, headers, body)


async def serve_hook(nursery: trio.Nursery, answer: Callable[[HookRequest], Answer]) -> HookServer:
    """Serves until ``nursery`` ends; returns the server (its URL, the requests so far)."""
    server = HookServer(url="")

    async def handle(stream: trio.abc.Stream) -> None:
        # The client may give up first (too big, too slow).
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            request = await _read_request(stream)
            if request is None:
                return
            server.requests.append(request)
            reply = answer(request)
            await trio.sleep(reply.delay)
            length = len(reply.body) if reply.content_length is None else reply.content_length
            head = (
                f"HTTP/1.1 {reply.status} {http.HTTPStatus(reply.status).phrase}\r\n"
                "Content-Type: application/json\r\nConnection: close\r\n"
                + (f"Content-Length: {length}\r\n" if length >= 0 else "")
                + "\r\n"
            )
            await stream.send_all(head.encode() + reply.body)
            await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    server.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    return server
