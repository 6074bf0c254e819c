"""``GET /api/status/events``: the node's status as server-sent events, for the dashboard.

How this works:

* Every ``interval`` seconds the stream carries one event whose ``data`` is ``/api/status``
  (the same typed status, rendered by :func:`~lpstream.http.status.status_json`) on one line,
  with an ``id`` counting up; the first event says ``retry`` so that a client reconnects
  after two seconds. Nothing else is buffered: each event is made when it is sent.
* It is under ``/api/``, so the API token guards it like ``/api/status``
  (:mod:`~lpstream.http.api_guard`): ``Authorization: Bearer``. Browsers' ``EventSource``
  cannot send that header, so the dashboard reads the stream with ``fetch()`` and a body
  reader, which can; no token ever goes into a URL (where logs and history would keep it).
* The stream is served to clients that ask for one (``Accept: text/event-stream``, as
  ``EventSource`` and the dashboard do); others get 406, so a plain GET never hangs on an
  endless body (``curl -N -H 'Accept: text/event-stream' …`` watches it).
* At most ``max_streams`` are open at once, node-wide; one more is answered 503 with
  ``Retry-After``. A stream ends when its client goes: a task waits for the server's
  ``http.disconnect`` and cancels the sending loop. A client that stops reading is dropped by
  the server's ``send_timeout`` like any other.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import attrs
import trio
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from lpstream.http.status import status_json

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_MAX_STREAMS",
    "EVENT_STREAM",
    "RETRY_MS",
    "StatusEvents",
    "accepts_event_stream",
    "status_event",
]

EVENT_STREAM = "text/event-stream"
DEFAULT_INTERVAL = 1.0
"""Seconds between two status events."""
DEFAULT_MAX_STREAMS = 8
"""Status event streams open at once, node-wide."""
RETRY_MS = 2000
"""How long a client waits before it reconnects, in milliseconds (the ``retry`` field)."""


def status_event(data: object, event_id: int, *, retry_ms: int | None = None) -> bytes:
    """One server-sent event whose data is ``data`` as JSON on one line."""
    lines = [] if retry_ms is None else [f"retry: {retry_ms}"]
    lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), allow_nan=False))
    return ("\n".join(lines) + "\n\n").encode()


def accepts_event_stream(accept: str) -> bool:
    """Whether an ``Accept`` header names ``text/event-stream``."""
    return any(item.split(";")[0].strip().lower() == EVENT_STREAM for item in accept.split(","))


async def _wait_for_disconnect(receive: Receive, done: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    done.cancel()


@attrs.define
class StatusEvents:
    """The ASGI app of ``/api/status/events`` (see the module comment)."""

    status: Callable[[], object]
    """The node's status value, as ``build_app`` gets it."""
    interval: float = DEFAULT_INTERVAL
    """Seconds between two events."""
    max_streams: int = DEFAULT_MAX_STREAMS
    """Streams open at once."""
    _open: int = attrs.field(init=False, default=0)
    _served: int = attrs.field(init=False, default=0)

    @property
    def open_streams(self) -> int:
        """Streams open now."""
        return self._open

    @property
    def served(self) -> int:
        """Streams served since start."""
        return self._served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if not accepts_event_stream(request.headers.get("accept", "")):
            refusal = PlainTextResponse(
                f"this is an event stream: ask with Accept: {EVENT_STREAM}\n", status_code=406
            )
            await refusal(scope, receive, send)
            return
        if self._open >= self.max_streams:
            busy = PlainTextResponse(
                f"{self.max_streams} status event streams are open already (max_streams); "
                "retry shortly\n",
                status_code=503,
                headers={"Retry-After": str(max(1, RETRY_MS // 1000))},
            )
            await busy(scope, receive, send)
            return
        self._open += 1
        self._served += 1
        try:
            await self._stream(scope, receive, send)
        finally:
            self._open -= 1

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", EVENT_STREAM.encode()),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),  # a proxy in front must not hold events back
                ],
            }
        )
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_wait_for_disconnect, receive, nursery.cancel_scope)
            event_id = 0
            while True:
                event_id += 1
                event = status_event(
                    status_json(self.status()),
                    event_id,
                    retry_ms=RETRY_MS if event_id == 1 else None,
                )
                await send({"type": "http.response.body", "body": event, "more_body": True})
                await trio.sleep(self.interval)
