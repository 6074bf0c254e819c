"""Attacks on the HTTP surface (issue 11): huge bodies, slow bodies and headers, clients that
do not read, crowds of connections, oversized WebSocket messages, WHIP offers that race.

Two halves. In one process, the real ``HttpServer`` (hypercorn's protocol, our accept loop)
on loopback with small limits, so each budget is checked exactly and fast. Then the attacks
as they were measured, against ``lpstream dev``: the node lives, the attacker gets its
refusal, memory stays inside a stated budget and comes back, and where the attack could
disturb them, an honest stream's renditions stay whole and viewers and publishers get in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import h11
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from trio_websocket import open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    TextMessage,
)
from wsproto.events import (
    Request as WsRequest,
)

from ingest.whip.bridge import open_asyncio_loop
from lpstream.config import HostPort
from lpstream.errors import RemoteProtocolError
from lpstream.http.limits import BodyReader, HttpLimits
from lpstream.http.server import FD_RESERVE, REFUSALS_AT_ONCE, HttpServer
from tests.attacks.harness import (
    RssSampler,
    assert_whole,
    honest_stream,
    rss_mb,
    start_dev,
    wait_rss_below,
)
from tests.e2e.nodes import NodeProcess, http_get, http_json, wait_for
from tests.ingest.test_whip import AiortcPublisher

KIB = 1024
MIB = 1024 * KIB
LIMIT = 64 * KIB
"""The body and WebSocket message limit of the node's routes."""


# --- a raw HTTP/1.1 client (h11 over trio), so the attacks can be exactly what they are ----


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def _head(method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_reply(stream: trio.abc.Stream) -> Reply | None:
    """The response on ``stream``, or None if the server closed it without one."""
    client = h11.Connection(h11.CLIENT)
    # The request was written by hand: tell h11 one was sent so it parses the response.
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            client.receive_data(bytes(data))
            if not data and response is None:
                return None
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    assert response is not None
    headers = {k.decode().lower(): v.decode() for k, v in response.headers}
    return Reply(response.status_code, headers, bytes(body))


async def fetch(
    port: int,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    within: float = 20,
) -> Reply:
    """One request on a fresh connection, answered ``within`` seconds."""
    with trio.fail_after(within):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            all_headers = {"Content-Length": str(len(body)), **(headers or {})}
            await stream.send_all(_head(method, target, all_headers) + body)
            reply = await read_reply(stream)
    assert reply is not None, f"{method} {target}: closed without an answer"
    return reply


async def websocket_exchange(
    port: int, target: str, messages: list[str], within: float = 20
) -> tuple[list[str], int | None]:
    """Opens a WebSocket (wsproto over trio: every byte is ours), sends ``messages`` one by
    one, each once the previous one's answer came (the last one is not waited for), and
    reads until the server closes; returns the text messages received and the close code
    (None if the connection ended without one)."""
    ws = WSConnection(ConnectionType.CLIENT)
    received: list[str] = []
    partial = ""
    pending = list(messages)
    code: int | None = None
    with trio.fail_after(within):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(ws.send(WsRequest(host="127.0.0.1", target=target)))
            while code is None:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    break
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, RejectConnection):
                        raise AssertionError(f"handshake refused: {event.status_code}")
                    if isinstance(event, TextMessage):
                        partial += str(event.data)
                        if not event.message_finished:
                            continue
                        received.append(partial)
                        partial = ""
                    if isinstance(event, Ping):
                        await stream.send_all(ws.send(event.response()))
                    if isinstance(event, CloseConnection):
                        code = event.code
                        with contextlib.suppress(trio.BrokenResourceError):
                            await stream.send_all(ws.send(event.response()))
                    elif isinstance(event, AcceptConnection | Message) and pending:
                        try:
                            await stream.send_all(ws.send(TextMessage(data=pending.pop(0))))
                        except trio.BrokenResourceError:
                            break
    return received, code


# --- in one process: the server's budgets, exactly ------------------------------------------


def _app(bodies: BodyReader) -> Starlette:
    async def upload(request: Request) -> Response:
        try:
            body = await bodies.read(request, LIMIT)
        except RemoteProtocolError as exc:
            return PlainTextResponse(exc.reason, status_code=exc.code)
        return PlainTextResponse(str(len(body)))

    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def big(request: Request) -> Response:
        return Response(b"x" * (32 * MIB))

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    return Starlette(
        routes=[
            Route("/upload", upload, methods=["POST"]),
            Route("/ok", ok),
            Route("/big", big),
            WebSocketRoute("/echo", echo),
        ]
    )


@attrs.define
class Served:
    server: HttpServer
    bodies: BodyReader
    port: int

    async def wait_for(self, predicate: Callable[[], bool], what: str, seconds: float = 5) -> None:
        with trio.fail_after(seconds):
            while True:
                if predicate():
                    return
                await trio.sleep(0.02)


@asynccontextmanager
async def serving(limits: HttpLimits) -> AsyncIterator[Served]:
    bodies = BodyReader.from_limits(limits)
    server = HttpServer(_app(bodies), limits=limits)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.serve, HostPort("127.0.0.1", 0))
        yield Served(server, bodies, bound.port)
        nursery.cancel_scope.cancel()


async def test_connections_past_max_connections_are_answered_503_and_closed() -> None:
    async with serving(HttpLimits(max_connections=8, keep_alive_timeout=2)) as served:
        holders = [await trio.open_tcp_stream("127.0.0.1", served.port) for _ in range(8)]
        for holder in holders:  # headers begun, never finished: each holds its connection
            await holder.send_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
        await served.wait_for(lambda: served.server.statistics().open_connections == 8, "8")

        replies: list[Reply] = []

        async def one() -> None:
            replies.append(await fetch(served.port, "GET", "/ok", within=5))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
        assert [r.status for r in replies] == [503] * 20
        assert all(b"max_connections=8" in r.body for r in replies)
        stats = served.server.statistics()
        assert (stats.open_connections, stats.refused_total) == (8, 20)

        for holder in holders:
            await holder.aclose()
        await served.wait_for(lambda: served.server.statistics().open_connections == 0, "0")
        assert (await fetch(served.port, "GET", "/ok")).status == 200


async def test_slow_headers_and_idle_connections_are_closed_after_keep_alive_timeout() -> None:
    async with serving(HttpLimits(keep_alive_timeout=0.5)) as served:
        idle = await trio.open_tcp_stream("127.0.0.1", served.port)
        slow = await trio.open_tcp_stream("127.0.0.1", served.port)
        await slow.send_all(b"GET /ok HTTP/1.1\r\n")
        started = trio.current_time()

        async def trickle() -> None:  # a header byte every 0.1 s, as a slowloris client does
            with trio.move_on_after(3):
                try:
                    while True:
                        await slow.send_all(b"X")
                        await trio.sleep(0.1)
                except trio.BrokenResourceError:
                    pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            assert await read_reply(idle) is None  # closed, no answer
            assert await read_reply(slow) is None
            nursery.cancel_scope.cancel()
        assert trio.current_time() - started < 1.5
        await served.wait_for(lambda: served.server.statistics().open_connections == 0, "0")
        await idle.aclose()
        await slow.aclose()


async def test_a_client_that_does_not_read_is_dropped_after_send_timeout() -> None:
    async with serving(HttpLimits(send_timeout=0.5)) as served:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", served.port))
        await sock.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        await served.wait_for(
            lambda: served.server.statistics().send_timeouts_total == 1, "a send timeout"
        )
        await served.wait_for(lambda: served.server.statistics().open_connections == 0, "0")
        sock.close()
        assert (await fetch(served.port, "GET", "/ok")).status == 200


def keepalive_timer(server_port: int, client_port: int) -> float | None:
    """Seconds until the kernel's keepalive probe of the server's side of a loopback TCP
    connection (from /proc/net/tcp), or None when no keepalive timer runs on it."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, timer = fields[1], fields[2], fields[5]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == (
            client_port
        ):
            kind, when = timer.split(":")
            return int(when, 16) / 100 if kind == "02" else None  # 02: keepalive
    raise AssertionError(f"no connection {server_port} <- {client_port} in /proc/net/tcp")


async def test_a_silent_client_is_probed_so_a_vanished_one_is_dropped() -> None:
    async with serving(HttpLimits(dead_peer_timeout=60, keep_alive_timeout=30)) as served:
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        await served.wait_for(lambda: served.server.statistics().open_connections == 1, "1")
        client_port = stream.socket.getsockname()[1]
        # The kernel probes the silent client from 30 s (half of dead_peer_timeout) on.
        when = keepalive_timer(served.port, client_port)
        assert when is not None and 25 < when <= 30, when
        await stream.aclose()


async def test_a_body_over_the_limit_is_refused_413_before_it_is_read_whole() -> None:
    async with serving(HttpLimits()) as served:
        # Content-Length says 512 MiB: the answer comes before a byte of the body is sent.
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        await stream.send_all(_head("POST", "/upload", {"Content-Length": str(512 * MIB)}))
        with trio.fail_after(5):
            reply = await read_reply(stream)
        assert reply is not None and reply.status == 413
        await stream.aclose()

        # Chunked, no length: refused at the first chunk past the limit; the client cannot
        # push more than what the kernel's buffers hold before the connection is gone.
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        await stream.send_all(_head("POST", "/upload", {"Transfer-Encoding": "chunked"}))
        sent = 0
        chunk = b"100000\r\n" + b"x" * MIB + b"\r\n"
        with trio.fail_after(10):
            try:
                while sent < 512 * MIB:
                    await stream.send_all(chunk)
                    sent += MIB
            except trio.BrokenResourceError:
                pass
        assert sent < 64 * MIB
        assert served.bodies.receiving == 0
        await stream.aclose()


async def test_slow_bodies_get_408_and_bodies_past_max_uploads_get_503() -> None:
    async with serving(HttpLimits(body_timeout=0.5, max_uploads=2)) as served:
        slow = [await trio.open_tcp_stream("127.0.0.1", served.port) for _ in range(2)]
        for stream in slow:
            await stream.send_all(_head("POST", "/upload", {"Content-Length": "100"}) + b"x")
        await served.wait_for(lambda: served.bodies.receiving == 2, "2 bodies")
        refused = await fetch(served.port, "POST", "/upload", b"x" * 100)
        assert refused.status == 503 and b"max_uploads" in refused.body
        started = trio.current_time()
        for stream in slow:
            reply = await read_reply(stream)
            assert reply is not None and reply.status == 408
            assert b"body_timeout" in reply.body
            await stream.aclose()
        assert trio.current_time() - started < 1
        assert (await fetch(served.port, "POST", "/upload", b"x" * 100)).body == b"100"


async def test_a_client_that_leaves_mid_body_is_logged_at_debug_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(HttpLimits()) as served:
        streams = [await trio.open_tcp_stream("127.0.0.1", served.port) for _ in range(50)]
        for stream in streams:
            await stream.send_all(_head("POST", "/upload", {"Content-Length": "1000"}) + b"{")
        await served.wait_for(lambda: served.bodies.receiving == 50, "the bodies")
        for stream in streams:  # all leave at once
            await stream.aclose()
        await served.wait_for(lambda: served.bodies.receiving == 0, "the clients to go")
        await served.wait_for(lambda: served.server.statistics().open_connections == 0, "0")
    left = [r for r in caplog.records if "the client left" in r.getMessage()]
    assert len(left) == 50 and {r.levelno for r in left} == {logging.DEBUG}
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []


async def test_a_websocket_message_over_the_limit_is_refused_with_1009() -> None:
    async with serving(HttpLimits(max_websocket_message=LIMIT)) as served:
        started = trio.current_time()
        received, code = await websocket_exchange(
            served.port, "/echo", ["y" * (LIMIT - 1), "x" * (4 * MIB)]
        )
        assert received == ["y" * (LIMIT - 1)]  # under the limit: echoed
        assert code == 1009  # over it: refused, and the socket is closed
        assert trio.current_time() - started < 5
        await served.wait_for(lambda: served.server.statistics().open_connections == 0, "0")
        assert (await fetch(served.port, "GET", "/ok")).status == 200


# --- against `lpstream dev`: the attacks as they were measured ------------------------------

NOISE_MB = 100
"""RSS after an attack must come back within this of before it (the issue's rule)."""


def http_port(node: NodeProcess) -> int:
    return int(node.hostport("http").rsplit(":", 1)[1])


def rtmp_answers(node: NodeProcess) -> bool:
    """True if the RTMP port accepts a connection and answers the handshake (S0 + S1)."""
    host, port = node.hostport("rtmp").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"\x03" + bytes(1536))
        got = b""
        while len(got) < 1537:
            chunk = sock.recv(4096)
            if not chunk:
                return False
            got += chunk
    return got[0] == 3


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def assert_quiet(node: NodeProcess) -> None:
    """The node logged no traceback and never ran out of descriptors."""
    log = node.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert "EMFILE" not in log, log[-3000:]


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[NodeProcess]:
    node = start_dev(tmp_path)
    try:
        yield node
    finally:
        assert node.stop() == 0, node.log_path.read_text()[-3000:]


async def push_body(port: int, target: str, content_type: str, total: int) -> tuple[int, int]:
    """POSTs ``total`` bytes chunked as fast as the node takes them; returns the bytes sent
    before the node stopped taking them and the status it answered (0: reset before one)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    head = {"Content-Type": content_type, "Transfer-Encoding": "chunked"}
    chunk = b"100000\r\n" + b"x" * MIB + b"\r\n"
    sent = 0
    status = 0
    async with stream:
        await stream.send_all(_head("POST", target, head))

        async def answer() -> None:
            nonlocal status
            reply = await read_reply(stream)
            status = 0 if reply is None else reply.status

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer)
                try:
                    while sent < total:
                        await stream.send_all(chunk)
                        sent += MIB
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
    return sent, status


BODY_ROUTES = [
    ("/api/ai/cam", "application/json"),
    ("/whip/cam", "application/sdp"),
    ("/whep/cam", "application/sdp"),
]


def test_512_mib_bodies_are_refused_413_as_they_stream_and_cost_no_memory(
    dev: NodeProcess,
) -> None:
    port, pid = http_port(dev), dev.proc.pid
    before = rss_mb(pid)

    async def attack() -> list[tuple[str, int, int, int]]:
        results = []
        for target, content_type in BODY_ROUTES:
            declared = await fetch(
                port,
                "POST",
                target,
                headers={"Content-Type": content_type, "Content-Length": str(512 * MIB)},
            )  # the head only: the answer comes before any of the body
            sent, status = await push_body(port, target, content_type, 512 * MIB)
            results.append((target, declared.status, sent, status))
        return results

    with RssSampler(pid) as rss:
        results = trio.run(attack)
    for target, declared, sent, status in results:
        assert declared == 413, target
        assert status in (413, 0), (target, status)  # 0: the reset overtook the answer
        assert sent < 64 * MIB, (target, sent)  # what the sockets' buffers hold, no more
    # Budget: 3 x 512 MiB pushed; at most a few chunks of each were ever held.
    assert rss.peak < before + 40, (before, rss.peak)
    assert http_json(f"{dev.url('http')}/api/status")["role"] == "dev"
    assert_quiet(dev)


@attrs.define
class SlowClient:
    """Sends a request head, then its body or headers a byte at a time; records the end."""

    port: int
    head: bytes
    drip: bytes
    every: float
    leave_after: float | None = None
    outcome: str = "running"

    async def run(self, limit: float) -> None:
        try:
            with trio.fail_after(limit):
                stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        except (OSError, trio.TooSlowError):
            self.outcome = "no connection"
            return
        async with stream:
            await stream.send_all(self.head)
            async with trio.open_nursery() as nursery:

                async def drip() -> None:
                    started = trio.current_time()
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        while True:
                            await trio.sleep(self.every)
                            if (
                                self.leave_after
                                and trio.current_time() - started > self.leave_after
                            ):
                                self.outcome = "left"
                                nursery.cancel_scope.cancel()
                                return
                            await stream.send_all(self.drip)

                nursery.start_soon(drip)
                with trio.move_on_after(limit):
                    reply = await read_reply(stream)
                    self.outcome = "closed" if reply is None else str(reply.status)
                nursery.cancel_scope.cancel()


@pytest.mark.slow
def test_slow_bodies_are_cut_and_viewers_and_publishers_still_get_in(
    dev: NodeProcess, tmp_path: Path
) -> None:
    """100 clients POST a live AI start whose body comes a byte a second (some leave half
    way): 64 (``max_uploads``) are read and cut at ``body_timeout`` with 408, the other 36 are
    answered 503 at once; meanwhile HLS, /api/status and RTMP publishers get in, the honest
    stream stays whole, and afterwards a new POST is served."""
    base, port, pid = dev.url("http"), http_port(dev), dev.proc.pid
    with honest_stream(dev, "honest", tmp_path / "honest", seconds=22) as honest:
        before = rss_mb(pid)
        head = _head(
            "POST",
            "/api/ai/honest",
            {"Content-Type": "application/json", "Content-Length": "1000"},
        )
        clients = [
            SlowClient(port, head + b"{", b" ", 1.0, leave_after=3 if n < 10 else None)
            for n in range(100)
        ]
        during: dict[str, object] = {}

        async def attack() -> None:
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(client.run, 20)
                await trio.sleep(2)
                during["status"] = (await fetch(port, "GET", "/api/status")).status
                during["master"] = (await fetch(port, "GET", "/hls/honest/index.m3u8")).status
                during["rtmp"] = await trio.to_thread.run_sync(rtmp_answers, dev)

        with RssSampler(pid) as rss:
            trio.run(attack)
        assert during == {"status": 200, "master": 200, "rtmp": True}
        outcomes = [c.outcome for c in clients]
        assert outcomes.count("503") == 100 - 64, outcomes
        assert outcomes.count("408") + outcomes.count("left") == 64, outcomes
        assert outcomes.count("left") <= 10
        # The cut ones are gone: a new start is read and answered on its merits.
        reply = trio.run(lambda: fetch(port, "POST", "/api/ai/honest", b'{"pipeline": ""}'))
        assert reply.status == 400 and b"pipeline name is required" in reply.body, reply
        assert http_get(f"{base}/api/status")[0] == 200
        assert rss.peak < before + NOISE_MB, (before, rss.peak)
    assert_whole(honest)
    assert wait_rss_below(pid, before + NOISE_MB, 10) < before + NOISE_MB
    assert_quiet(dev)


LOW_FD_LIMIT = 400
"""The node's hard descriptor limit in the crowd test (it starts with a soft limit of half
that and raises it); its HTTP cap is then 400 - 256 - 32."""
CROWD = 450
"""Slow connections in the crowd test: more than the node has descriptors."""


def limited_dev(log_dir: Path, soft: int, hard: int) -> NodeProcess:
    """``lpstream dev`` under descriptor limits (as a small host has)."""
    program = [
        sys.executable,
        "-c",
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
        "sys.argv[0] = 'lpstream'; "
        "runpy.run_module('lpstream', run_name='__main__', alter_sys=True)",
    ]
    node = NodeProcess(
        [
            "dev",
            "--offchain",
            "--rtmp-addr=127.0.0.1:0",
            "--http-addr=127.0.0.1:0",
            "--service-addr=127.0.0.1:0",
        ],
        name="dev-low-fd",
        log_dir=log_dir,
        program=program,
    )
    node.wait_ready()
    return node


@pytest.mark.slow
def test_a_crowd_of_slow_connections_cannot_take_every_descriptor(tmp_path: Path) -> None:
    """450 slowloris connections against a node limited to 400 descriptors: it serves 112,
    answers the rest 503, cuts the slow ones at ``keep_alive_timeout``, never runs out of
    descriptors (RTMP publishers still get in) and serves everyone once they are gone."""
    cap = LOW_FD_LIMIT - FD_RESERVE - REFUSALS_AT_ONCE
    node = limited_dev(tmp_path, LOW_FD_LIMIT // 2, LOW_FD_LIMIT)
    try:
        port, pid = http_port(node), node.proc.pid
        log = node.log_path.read_text()
        assert f"open files: limit raised from {LOW_FD_LIMIT // 2} to {LOW_FD_LIMIT}" in log
        assert f"at most {cap} connections" in log
        before, fds_before = rss_mb(pid), open_fds(pid)
        head = _head("GET", "/api/status", {}).removesuffix(b"\r\n")  # headers never end
        clients = [SlowClient(port, head, b"X-Slow: 1\r\n", 0.5) for _ in range(CROWD)]
        fds: list[int] = []
        during: dict[str, object] = {}

        async def sample_fds() -> None:
            while True:
                fds.append(open_fds(pid))
                await trio.sleep(0.05)

        async def attack() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_fds)
                async with trio.open_nursery() as crowd:
                    for client in clients:
                        crowd.start_soon(client.run, 15)
                    await trio.sleep(1.5)
                    during["rtmp"] = await trio.to_thread.run_sync(rtmp_answers, node)
                    during["status"] = (await fetch(port, "GET", "/api/status", within=5)).status
                nursery.cancel_scope.cancel()

        with RssSampler(pid) as rss:
            trio.run(attack)
        outcomes = [c.outcome for c in clients]
        assert during["rtmp"] is True
        assert during["status"] in (200, 503)  # answered at once either way, never hung
        assert set(outcomes) <= {"503", "closed"}, outcomes
        assert outcomes.count("closed") >= cap  # held, then cut at keep_alive_timeout
        assert outcomes.count("503") >= CROWD - 2 * cap, outcomes
        assert max(fds) <= fds_before + cap + REFUSALS_AT_ONCE + 8, (fds_before, max(fds))
        assert max(fds) < LOW_FD_LIMIT - 100
        assert rss.peak < before + NOISE_MB, (before, rss.peak)
        wait_for(lambda: http_get(f"{node.url('http')}/api/status")[0] == 200, 10, "/api/status")
        wait_for(lambda: open_fds(pid) <= fds_before + 4, 10, "descriptors to be closed")
        assert_quiet(node)
    finally:
        assert node.stop() == 0, node.log_path.read_text()[-3000:]


def test_out_of_descriptors_pauses_accepting_with_one_warning_and_no_traceback(
    dev: NodeProcess,
) -> None:
    """Descriptors can still run out (other parts of the process use them too): accepting
    pauses and backs off, one warning is logged, and accepting resumes once some are free."""
    import resource

    port, pid = http_port(dev), dev.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    room = 10
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds(pid) + room, hard))

    async def attack() -> Reply:
        holders = []
        for _ in range(room + 20):  # the last ones wait in the backlog
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /api/status HTTP/1.1\r\n")
            holders.append(stream)
        await trio.sleep(1.5)
        assert dev.proc.poll() is None
        for stream in holders:
            await stream.aclose()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        return await fetch(port, "GET", "/api/status", within=15)

    try:
        reply = trio.run(attack)
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert reply.status == 200
    log = dev.log_path.read_text()
    assert log.count("accept failed: EMFILE") == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def post_json(port: int, target: str, body: dict[str, object]) -> Reply:
    data = json.dumps(body).encode()
    return trio.run(lambda: fetch(port, "POST", target, data, {"Content-Type": "application/json"}))


@pytest.mark.slow
def test_an_oversized_message_on_the_ai_control_socket_is_refused_with_1009(
    dev: NodeProcess, tmp_path: Path
) -> None:
    """An 8 MiB message on a live AI session's control socket is refused by the protocol as
    it arrives (close 1009, nothing buffered past 64 KiB); the session, its other sockets and
    the stream go on."""
    base, port, pid = dev.url("http"), http_port(dev), dev.proc.pid
    control = "/api/ai/honest/control"
    with honest_stream(dev, "honest", tmp_path / "honest", seconds=12) as honest:
        started = post_json(port, "/api/ai/honest", {"pipeline": "noop"})
        assert started.status == 201, started
        before = rss_mb(pid)

        async def attack() -> tuple[int | None, dict[str, object]]:
            _, code = await websocket_exchange(port, control, ["x" * (8 * MIB)])
            # An honest app on the same session: its socket works, its errors are answered.
            async with open_websocket_url(f"ws://127.0.0.1:{port}{control}") as ws:
                await ws.send_message("not json")
                while True:
                    event = json.loads(await ws.get_message())
                    if event["type"] == "error":
                        return code, event

        with RssSampler(pid) as rss:
            code, event = trio.run(attack)
        assert code == 1009
        assert "not JSON" in str(event["message"])
        assert rss.peak < before + 40, (before, rss.peak)  # 8 MiB sent, 64 KiB held at most
        assert http_json(f"{base}/api/ai/honest")["running"] is True
        stopped = trio.run(lambda: fetch(port, "DELETE", "/api/ai/honest"))
        assert stopped.status == 204
    assert_whole(honest)
    assert_quiet(dev)


WHIP_SESSIONS = 32
"""``WhipIngest.max_sessions``'s default, which ``lpstream dev`` runs with."""


@pytest.mark.slow
def test_150_whip_offers_at_once_get_exactly_max_sessions(dev: NodeProcess) -> None:
    """150 real offers posted together: exactly 32 sessions are answered 201, the other 118
    get 503 (the slot is taken before the first await), and the counters come back to 0."""
    base, port, pid = dev.url("http"), http_port(dev), dev.proc.pid

    async def make_offer() -> str:
        async with open_asyncio_loop("whip-client") as loop:
            client = AiortcPublisher(audio=False)
            sdp: str = await loop.run(client.offer)
            await loop.run(client.close)
        return sdp

    offer = trio.run(make_offer).encode()
    before = rss_mb(pid)
    sdp = {"Content-Type": "application/sdp"}

    async def attack() -> list[Reply]:
        replies: list[Reply] = []

        async def post(n: int) -> None:
            replies.append(await fetch(port, "POST", f"/whip/w{n}", offer, sdp, within=60))

        async with trio.open_nursery() as nursery:
            for n in range(150):
                nursery.start_soon(post, n)
        return replies

    with RssSampler(pid) as rss:
        replies = trio.run(attack)
    statuses = sorted(r.status for r in replies)
    assert statuses == [201] * WHIP_SESSIONS + [503] * (150 - WHIP_SESSIONS), statuses
    whip = http_json(f"{base}/api/status")["whip"]
    assert (whip["active_sessions"], whip["pending_sessions"]) == (WHIP_SESSIONS, 0)

    async def delete_all() -> list[int]:
        return [
            (await fetch(port, "DELETE", r.headers["location"])).status
            for r in replies
            if r.status == 201
        ]

    assert trio.run(delete_all) == [200] * WHIP_SESSIONS
    whip = http_json(f"{base}/api/status")["whip"]
    assert (whip["active_sessions"], whip["pending_sessions"]) == (0, 0)
    # Budget: 32 WebRTC peers with their publishes; 118 refusals cost nothing.
    assert rss.peak < before + 150, (before, rss.peak)
    assert wait_rss_below(pid, before + NOISE_MB, 15) < before + NOISE_MB
    assert_quiet(dev)
