"""The dashboard's status events and page over real HTTP (hypercorn on loopback, an h11 client
that reads the event stream as it comes): JSON events of the live status, the token, the limit
on open streams, a stream that ends when its client goes; and the page, which shows nothing
without the token and degrades to a text summary."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h11
import pytest
import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware

from lpstream.access import SecretSet
from lpstream.http.api_guard import ApiGuard
from lpstream.http.app import build_app
from lpstream.http.dashboard import dashboard_routes, status_summary
from lpstream.http.limits import BodyReader
from lpstream.http.status_events import StatusEvents, accepts_event_stream, status_event
from lpstream.metrics import Metrics
from tests.access.client import asgi_call, call
from tests.asgi import serve_on_loopback

TOKEN = "dashboard-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
EVENTS = {"Accept": "text/event-stream", **BEARER}
STREAM = "secretcam"


@attrs.define
class CountingStatus:
    """A node status whose figure moves on every read."""

    reads: int = 0

    def __call__(self) -> dict[str, Any]:
        self.reads += 1
        return {
            "role": "dev",
            "version": "0",
            "streams": {
                STREAM: {"live": True, "renditions": ["source"], "segments_in": self.reads}
            },
        }


def guarded_app(
    status: Callable[[], object], events: StatusEvents, tokens: SecretSet | None
) -> Starlette:
    routes = dashboard_routes(
        status=status, playback=None, api_tokens=tokens, bodies=BodyReader(), events=events
    )
    return Starlette(routes=routes, middleware=[Middleware(ApiGuard, tokens=tokens)])


@attrs.define
class EventStream:
    """An open ``/api/status/events`` response, read with h11 as it arrives."""

    status: int
    _stream: trio.SocketStream
    _client: h11.Connection
    _buffer: str = ""

    async def next_event(self) -> dict[str, str]:
        """The next event's fields (``id``, ``data``, ``retry``)."""
        while "\n\n" not in self._buffer:
            event = self._client.next_event()
            if event is h11.NEED_DATA:
                self._client.receive_data(await self._stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                self._buffer += bytes(event.data).decode()
            else:
                raise AssertionError(f"the event stream ended: {event!r}")
        block, self._buffer = self._buffer.split("\n\n", 1)
        return dict(line.split(": ", 1) for line in block.split("\n"))


@asynccontextmanager
async def open_events(port: int, headers: dict[str, str]) -> AsyncIterator[EventStream]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        client = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target="/api/status/events",
            headers=[("Host", f"127.0.0.1:{port}"), *headers.items()],
        )
        await stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(await stream.receive_some(65536))
            else:
                break
        assert isinstance(event, h11.Response), event
        yield EventStream(event.status_code, stream, client)


async def wait_until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    with trio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 (a counter, no event to wait on)
            await trio.sleep(0.02)


def test_an_event_is_one_json_line_with_an_id() -> None:
    assert status_event({"a": [1, "x\ny"]}, 7) == b'id: 7\ndata: {"a":[1,"x\\ny"]}\n\n'
    assert status_event({}, 1, retry_ms=2000) == b"retry: 2000\nid: 1\ndata: {}\n\n"
    with pytest.raises(ValueError):
        status_event({"x": float("nan")}, 1)
    assert accepts_event_stream("text/html, text/event-stream;q=0.9")
    assert not accepts_event_stream("*/*") and not accepts_event_stream("")


async def test_the_events_carry_the_live_status_as_json(nursery: trio.Nursery) -> None:
    status = CountingStatus()
    events = StatusEvents(status, interval=0.05)
    tokens = SecretSet.of("api", [TOKEN], flag="--api-token")
    port = await nursery.start(serve_on_loopback, guarded_app(status, events, tokens))
    async with open_events(port, EVENTS) as stream:
        assert stream.status == 200
        first = await stream.next_event()
        second = await stream.next_event()
        third = await stream.next_event()
    assert first["retry"] == "2000" and "retry" not in second
    assert [first["id"], second["id"], third["id"]] == ["1", "2", "3"]
    figures = [json.loads(e["data"])["streams"][STREAM]["segments_in"] for e in (first, third)]
    assert figures[1] > figures[0]  # each event reads the status anew
    assert json.loads(second["data"])["role"] == "dev"
    await wait_until(lambda: events.open_streams == 0)


async def test_the_events_need_the_token_and_an_event_stream_client(
    nursery: trio.Nursery,
) -> None:
    status = CountingStatus()
    events = StatusEvents(status, interval=0.05)
    tokens = SecretSet.of("api", [TOKEN], flag="--api-token")
    port = await nursery.start(serve_on_loopback, guarded_app(status, events, tokens))
    for headers in (
        {"Accept": "text/event-stream"},
        {"Accept": "text/event-stream", "Authorization": "Bearer not-the-token"},
    ):
        async with open_events(port, headers) as stream:
            assert stream.status == 401
    plain = await call(port, "GET", "/api/status/events", headers=BEARER)
    assert plain.status == 406 and "text/event-stream" in plain.text
    assert status.reads == 0 and events.served == 0  # nothing was read for them


async def test_open_streams_are_limited_and_end_when_their_client_goes(
    nursery: trio.Nursery,
) -> None:
    events = StatusEvents(CountingStatus(), interval=0.05, max_streams=2)
    port = await nursery.start(serve_on_loopback, guarded_app(CountingStatus(), events, None))
    headers = {"Accept": "text/event-stream"}  # loopback, a node without tokens
    async with open_events(port, headers) as one, open_events(port, headers) as two:
        await one.next_event()
        await two.next_event()
        assert events.open_streams == 2
        busy = await call(port, "GET", "/api/status/events", headers=headers)
        assert busy.status == 503 and "max_streams" in busy.text
        assert busy.headers["retry-after"] == "2"
    # Both clients closed their connections: the streams end and make room again.
    await wait_until(lambda: events.open_streams == 0)
    async with open_events(port, headers) as three:
        assert three.status == 200
        assert (await three.next_event())["id"] == "1"
    assert events.served == 3


async def test_build_app_serves_the_events_and_thumbnails_under_the_api_guard(
    nursery: trio.Nursery,
) -> None:
    tokens = SecretSet.of("api", [TOKEN], flag="--api-token")
    app = build_app(playback=None, status=CountingStatus(), metrics=Metrics(), api_tokens=tokens)
    port = await nursery.start(serve_on_loopback, app)
    async with open_events(port, {"Accept": "text/event-stream"}) as refused:
        assert refused.status == 401
    async with open_events(port, EVENTS) as stream:
        event = await stream.next_event()
        assert json.loads(event["data"])["streams"][STREAM]["live"] is True
    thumb = "/api/streams/cam/thumbnail.jpg"
    assert (await call(port, "GET", thumb)).status == 401
    assert (await call(port, "GET", thumb, headers=BEARER)).status == 404  # no stream here


async def test_the_page_shows_nothing_without_the_token(nursery: trio.Nursery) -> None:
    status = CountingStatus()
    tokens = SecretSet.of("api", [TOKEN], flag="--api-token")
    app = build_app(playback=None, status=status, metrics=Metrics(), api_tokens=tokens)
    port = await nursery.start(serve_on_loopback, app)
    page = await call(port, "GET", "/dashboard")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert STREAM not in page.text and "segments" not in page.text
    assert '<script src="/static/dashboard.js">' in page.text
    assert 'type="password"' in page.text and "--api-token" in page.text
    assert status.reads == 0
    script = await call(port, "GET", "/static/dashboard.js")
    assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
    assert b"/api/status/events" in script.body and b"sessionStorage" in script.body

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for token in ("", "wrong-token"):
        body = urllib.parse.urlencode({"token": token}).encode()
        refused = await call(port, "POST", "/dashboard", headers=form, body=body)
        assert refused.status == 403 and STREAM not in refused.text, refused
    assert status.reads == 0
    body = urllib.parse.urlencode({"token": TOKEN}).encode()
    summary = await call(port, "POST", "/dashboard", headers=form, body=body)
    assert summary.status == 200 and summary.headers["cache-control"] == "no-store"
    assert f"{STREAM}: live" in summary.text and TOKEN not in summary.text
    too_big = await call(port, "POST", "/dashboard", headers=form, body=b"token=" + b"x" * 5000)
    assert too_big.status == 413


async def test_without_tokens_loopback_readers_get_the_summary_in_the_page() -> None:
    status = CountingStatus()
    app = build_app(playback=None, status=status, metrics=Metrics())
    local = await asgi_call(app, "GET", "/dashboard", client=("127.0.0.1", 1))
    assert f"{STREAM}: live" in local.text and '<pre id="summary">' in local.text
    remote = await asgi_call(app, "GET", "/dashboard", client=("203.0.113.5", 1))
    assert remote.status == 200 and STREAM not in remote.text


def test_the_text_summary_names_the_figures() -> None:
    money = {"wei": "1500000000000000", "eth": 0.0015}
    status = {
        "role": "dev",
        "version": "1.2",
        "streams": {
            "cam": {
                "live": True,
                "source": "1280x720",
                "renditions": ["source", "360p"],
                "publish_latency_ms": {"count": 3, "median": 812.0, "p95": 990.5},
                "part_latency_ms": {"count": 0, "median": None, "p95": None},
                "segments_in": 12,
                "webrtc": {  # as StreamPackets.statistics() has it
                    "renditions": {"source": {"subscribers": 2}, "360p": {"subscribers": 1}},
                    "segments_dropped": 0,
                    "segments_failed": 0,
                    "audio": {"listeners": 3},
                },
                "ai": {
                    "pipeline": "noop",
                    "running": True,
                    "stats": {"fps_out": 29.5},
                    "frame_latency_ms": {"count": 9, "median": 41.0, "p95": 60.0},
                    "frames_out": 300,
                },
            }
        },
        "orchestrators": [
            {
                "address": "127.0.0.1:8936",
                "connected": True,
                "suspended": False,
                "failures": 1,
                "jobs": 12,
                "price_per_pixel": {"wei": "50000", "pixels": 1, "wei_per_pixel": 50000.0},
                "latency_score": 0.4213,
            }
        ],
        "orchestrator": {
            "sessions": 1,
            "capacity": 4,
            "pipelines": ["noop"],
            "workers": {"local": {"sessions": 1, "capacity": 4}},
        },
        "payments": {
            "gateway": {"tickets_sent": 5, "ev_sent": money},
            "orchestrator": {
                "tickets_received": 5,
                "tickets_won": 2,
                "tickets_redeemed": 1,
                "ev_received": money,
            },
            "chain": {
                "gateway_deposit": money,
                "gateway_reserve": money,
                "orchestrator_fees": money,
            },
        },
    }
    text = status_summary(status)
    for expected in [
        "cam: live 1280x720 renditions source,360p",
        "publish p50/p95 812/990 ms · part - · segments 12 · WHEP viewers 3",
        "AI noop running · fps 29.5 · frame latency 41/60 ms · frames 300",
        "127.0.0.1:8936: connected · price 50000.0 wei/pixel · latency score 0.42 · failures 1",
        "local: 1/4 sessions",
        "deposit 0.001500 ETH",
        "sent 5 tickets",
        "received 5 · won 2 · redeemed 1",
    ]:
        assert expected in text, (expected, text)
