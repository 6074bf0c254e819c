"""A plain HTTP client for tests of the node's HTTP access rules: one request, the whole
answer; and an ASGI call that makes a request look like it came from another machine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.asgi import Reply, loopback_request

__all__ = ["Reply", "asgi_call", "call"]


async def call(
    port: int,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """``method path`` on ``127.0.0.1:port`` (in a thread: the server runs in this loop)."""
    return await loopback_request(port, method, path, body, dict(headers or {}))


async def asgi_call(
    app: Any,
    method: str,
    path: str,
    *,
    client: tuple[str, int],
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """``method path`` straight into the ASGI ``app``, from ``client`` (an address no loopback
    socket could show)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": client,
        "server": ("192.0.2.1", 8935),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Reply(
        start["status"], {k.decode(): v.decode() for k, v in start.get("headers", [])}, body
    )
