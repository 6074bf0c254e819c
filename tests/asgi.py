"""Serves an ASGI app with hypercorn on a free loopback port, for tests that speak real HTTP,
and asks it as a real client would (``loopback_request``)."""

from __future__ import annotations

import http.client
import logging
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

__all__ = ["Reply", "loopback_request", "serve_on_loopback"]


async def serve_on_loopback(app: Any, *, task_status: trio.TaskStatus[int]) -> None:
    """``port = await nursery.start(serve_on_loopback, app)``; serves until cancelled."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger("test.http")
    config.graceful_timeout = 0.5

    class _Status:
        def started(self, binds: list[str] | None = None) -> None:
            assert binds
            task_status.started(int(binds[0].rsplit(":", 1)[1]))

    await hypercorn_serve(app, config, shutdown_trigger=trio.sleep_forever, task_status=_Status())


@attrs.frozen
class Reply:
    """An HTTP answer: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


async def loopback_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One HTTP/1.1 request to ``127.0.0.1:port`` from a worker thread (a real client)."""

    def call() -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()

    return await trio.to_thread.run_sync(call)
