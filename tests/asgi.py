"""Serves an ASGI app with hypercorn on a free loopback port, for tests that speak real HTTP."""

from __future__ import annotations

import logging
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

__all__ = ["serve_on_loopback"]


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
