"""Fuzz on every HTTP route of a real node (issue 13): generated paths, methods, headers, query
strings and bodies, written byte for byte over real TCP to ``lpstream dev --offchain`` with a
live stream, open and guarded (``--api-token``, ``--play-auth jwt``).

The routes are enumerated from the app (``build_app`` with every part on), so a route added
later is fuzzed without a word here; paths under each route's prefix that match no route are
fuzzed too. The rules each answer keeps are :func:`tests.attacks.fuzzing.assert_allowed`'s;
after each fuzz the node is running, answers ``/api/status`` and logged no traceback. The
examples are derandomized: a failure prints the request that reproduces it, and the same run
makes the same requests.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import socket
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.routing import BaseRoute, Route, WebSocketRoute

from lpstream.http.connection import CLOSE_GRACE
from lpstream.http.limits import DEFAULT_KEEP_ALIVE_TIMEOUT
from tests.attacks.fuzzing import (
    UNTRUNCATED_EXAMPLES,
    FuzzNode,
    assert_allowed,
    assert_node_well,
    exchange,
    fuzz_settings,
    json_values,
    live_node,
    play_token,
)
from tests.attacks.harness import rss_mb
from tests.lpstream.test_api_token import the_app

# Each test fuzzes a running node for seconds: with the slow ones.
pytestmark = [pytest.mark.filterwarnings(UNTRUNCATED_EXAMPLES), pytest.mark.slow]

ROUTES: list[BaseRoute] = list(the_app(None).routes)
"""Every route of the node's app, HTTP and WebSocket."""
PREFIXES = sorted(
    {"/" + r.path.split("/")[1] for r in ROUTES if isinstance(r, Route | WebSocketRoute)}
)
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]
TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
BODY_LIMIT = 64 * 1024
"""The README's limit on request bodies (``POST /api/ai``, WHIP and WHEP offers)."""
EXAMPLES = int(os.environ.get("LPSTREAM_FUZZ_EXAMPLES", "250"))
"""Requests per node in the route fuzz (more with ``LPSTREAM_FUZZ_EXAMPLES``)."""


@pytest.fixture(scope="module", params=["open", "guarded"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzNode]:
    with live_node(
        tmp_path_factory.mktemp(request.param), guarded=request.param == "guarded"
    ) as node:
        yield node


# --- one request, as bytes -----------------------------------------------------------------


GOOD_FRAMINGS = frozenset({"length", "chunked", "none"})
"""Framings of a complete request: it must be answered."""
UNKNOWN_CODINGS = ["gzip", "chunked, gzip", "identity", "compress", "br", "x-fuzz"]


@attrs.frozen
class FuzzRequest:
    """One request as the fuzz made it; :meth:`encode` gives its exact bytes."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    framing: str
    """``length``, ``chunked``, ``none`` (no framing header; a body is sent anyway, as the
    next request), or a broken one: ``bad-length``, ``two-lengths``, ``length-and-chunked``,
    ``bad-chunks``, ``short`` (less body than declared), ``unknown-coding``."""
    framing_value: str = ""

    @property
    def complete(self) -> bool:
        """Whether the node owes it an answer: valid framing, and no bytes after a request
        that said it was the last (hypercorn then answers 400 or closes, where RFC 9112
        section 9.6 would answer and ignore the rest)."""
        if self.framing not in GOOD_FRAMINGS or self.version not in ("HTTP/1.1", "HTTP/1.0"):
            return False
        closes = self.version == "HTTP/1.0" or any(
            name.lower() == b"connection" and b"close" in value.lower()
            for name, value in self.headers
        )
        return not (self.framing == "none" and self.body and closes)

    def encode(self) -> bytes:
        head = [f"{self.method} {self.target} {self.version}".encode()]
        head += [name + b": " + value for name, value in self.headers]
        body = self.body
        size = str(len(body)).encode()
        if self.framing == "length":
            head.append(b"Content-Length: " + size)
        elif self.framing == "chunked":
            head.append(b"Transfer-Encoding: chunked")
            body = _chunked(body)
        elif self.framing == "bad-length":
            head.append(b"Content-Length: " + self.framing_value.encode())
        elif self.framing == "two-lengths":
            head += [b"Content-Length: " + size, b"Content-Length: " + size + b"0"]
        elif self.framing == "length-and-chunked":
            head += [b"Content-Length: " + size, b"Transfer-Encoding: chunked"]
        elif self.framing == "bad-chunks":
            head.append(b"Transfer-Encoding: chunked")
            body = self.framing_value.encode() + b"\r\n" + body
        elif self.framing == "short":
            head.append(b"Content-Length: " + str(len(body) + 1 + len(body) // 2).encode())
        elif self.framing == "unknown-coding":
            head.append(b"Transfer-Encoding: " + self.framing_value.encode())
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    def __repr__(self) -> str:  # what a failure prints: the bytes, to send again as they are
        return f"FuzzRequest({self.encode()[:4000]!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints this
        printer.text(repr(self))


def _chunked(body: bytes) -> bytes:
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


# --- strategies ----------------------------------------------------------------------------

ODD_SEGMENTS = ["", ".", "..", "%2e%2e", "%2F", "%00", "%", "%zz", "%ff%fe", "~", "%20", "a%2Fb"]


def _quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _segment() -> st.SearchStrategy[str]:
    """A path segment a hostile client might send."""
    return st.one_of(
        st.sampled_from(ODD_SEGMENTS),
        st.text(max_size=40).map(_quoted),
        st.text(alphabet="abcXYZ019_.-", min_size=1, max_size=130),
        st.integers(1, 9000).map(lambda n: "x" * n),
        st.text(min_size=1, max_size=8),  # unquoted: non-ASCII, spaces, control characters
    )


def _number() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(0, 60).map(str),
        st.integers(0, 2**70).map(str),
        st.sampled_from(["00", "007", "4294967296", "9" * 4301, "1" * 9000]),
    )


def _param(target: FuzzNode, name: str, convertor: object) -> st.SearchStrategy[str]:
    if "0-9" in getattr(convertor, "regex", ""):  # a number in the path
        return _number()
    known = {
        "stream": [target.stream, "nosuch", "ai"],
        "rendition": [*target.renditions, "source", "ai", "nosuch"],
    }.get(name, ["session", "0" * 32])
    return st.one_of(st.sampled_from(known), _segment())


def _fill(route: Route | WebSocketRoute, target: FuzzNode, **fixed: str) -> st.SearchStrategy[str]:
    """The route's path with each parameter drawn (or given in ``fixed``)."""
    names = list(route.param_convertors)
    values = st.tuples(
        *(
            st.just(fixed[n]) if n in fixed else _param(target, n, route.param_convertors[n])
            for n in names
        )
    )

    def fill(drawn: tuple[str, ...]) -> str:
        path = route.path
        for name, value in zip(names, drawn, strict=True):
            path = re.sub(r"\{" + name + r"(:\w+)?\}", value.replace("\\", r"\\"), path)
        return path

    return values.map(fill)


def paths(target: FuzzNode) -> st.SearchStrategy[str]:
    """A route's path, a path under a route's prefix, or one under no prefix at all."""
    routes = [r for r in ROUTES if isinstance(r, Route | WebSocketRoute)]
    a_route = st.sampled_from(routes).flatmap(lambda r: _fill(r, target))
    under_prefix = st.tuples(st.sampled_from(PREFIXES), st.lists(_segment(), max_size=5)).map(
        lambda p: "/".join([p[0], *p[1]])
    )
    return st.one_of(
        a_route,
        a_route,  # twice: half the paths are a route's
        under_prefix,
        st.sampled_from(["*", "/", "//", "/%", "http://x/api/status", "/api", "/api/"]),
    )


QUERY_KEYS = ["_HLS_msn", "_HLS_part", "_HLS_skip", "token", "jwt", "whep", "key"]


def queries(target: FuzzNode) -> st.SearchStrategy[str]:
    tokens = [t for t in (target.play_token, target.api_token) if t]
    value = st.one_of(
        st.integers(-3, 80).map(str),
        _number(),
        st.sampled_from(["YES", "v2", "NO", "", "yes", "%zz", "%ff", *tokens]),
        st.text(max_size=60).map(_quoted),
        st.integers(1, 40000).map(lambda n: "t" * n),
    )
    key = st.one_of(st.sampled_from(QUERY_KEYS), st.text(max_size=12).map(_quoted))
    pair = st.one_of(st.tuples(key, value).map("=".join), key)
    return st.lists(pair, max_size=6).map("&".join)


def _jwt_like() -> st.SearchStrategy[str]:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    none_alg = b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(b'{"sub":"x"}') + "."
    return st.one_of(
        st.just(none_alg),
        st.just(play_token("fuzzcam", seconds=-60)),  # expired
        st.just(play_token("someone-else")),
        st.just(play_token("fuzzcam", secret="another-secret-of-at-least-32-bytes!")),
        st.lists(st.binary(max_size=40).map(b64), min_size=3, max_size=3).map(".".join),
    )


def authorizations(target: FuzzNode) -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    good = [t for t in (target.api_token, target.play_token) if t]
    credential = st.one_of(st.sampled_from(good) if good else st.nothing(), _jwt_like())
    value = st.one_of(
        credential.map(lambda t: f"Bearer {t}"),
        credential.map(lambda t: f"bearer  {t} trailing"),
        st.sampled_from(["Bearer", "Bearer ", "Basic Zm9vOmJhcg==", "Digest x", "Bearer \t"]),
        st.integers(1, 30000).map(lambda n: "Bearer " + "a" * n),
        st.text(max_size=30).map(lambda t: "Bearer " + t),
    )
    header = value.map(lambda v: (b"Authorization", v.encode("utf-8", "replace")))
    return st.lists(header, max_size=2)


HEADER_VALUES = {
    "Content-Type": ["application/json", "application/sdp", "text/plain", "multipart/form-data",
                     "application/x-www-form-urlencoded", "application/sdp; charset=utf-16", ";"],
    "Connection": ["close", "keep-alive", "upgrade", "Upgrade, HTTP2-Settings", "x"],
    "Upgrade": ["websocket", "h2c", "WebSocket, h2c", "tls/1.0", "x"],
    "Sec-WebSocket-Version": ["13", "8", "99", "", "13, 8"],
    "Sec-WebSocket-Key": ["dGhlIHNhbXBsZSBub25jZQ==", "x", ""],
    "Expect": ["100-continue", "x"],
    "Origin": ["https://evil.example", "null", "*"],
    "Access-Control-Request-Method": ["POST", "DELETE", "X"],
    "Range": ["bytes=0-10", "bytes=-1", "bytes=99999999999-", "x"],
    "If-Match": ["*", '"x"'],
    "Accept-Encoding": ["gzip", "br, *;q=0"],
    "X-Forwarded-For": ["1.2.3.4", "::1", "x"],
}  # fmt: skip


def headers(target: FuzzNode) -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    name = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=30)
    value = st.one_of(
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
        st.binary(max_size=40),  # control bytes, obs-text, NUL, CR/LF
        st.text(max_size=20).map(str.encode),  # non-ASCII as UTF-8
        st.integers(1, 70000).map(lambda n: "v" * n),  # up to past what one read takes
    ).map(lambda v: v if isinstance(v, bytes) else v.encode())
    known = st.sampled_from(list(HEADER_VALUES)).flatmap(
        lambda n: st.sampled_from(HEADER_VALUES[n]).map(lambda v: (n.encode(), v.encode()))
    )
    host: st.SearchStrategy[list[tuple[bytes, bytes]]] = st.one_of(
        st.just([(b"Host", b"127.0.0.1")]),
        st.just([]),
        st.just([(b"Host", b"a"), (b"Host", b"b")]),
        st.text(max_size=30).map(lambda h: [(b"Host", h.encode())]),
    )
    extra = st.lists(st.one_of(known, st.tuples(name.map(str.encode), value)), max_size=8)
    many = st.integers(0, 300).map(lambda n: [(b"X-Many", b"1")] * n)
    return st.tuples(host, authorizations(target), extra, many).map(
        lambda parts: [h for part in parts for h in part]
    )


def bodies() -> st.SearchStrategy[bytes]:
    pipeline = st.one_of(
        st.sampled_from(["noop", "", "nosuch", "../../../etc/passwd", "/dev/zero"]),
        st.text(max_size=40),
        json_values(),
    )
    ai_start = st.fixed_dictionaries(
        {"pipeline": pipeline},
        optional={
            "params": st.one_of(
                st.dictionaries(st.text(max_size=140), json_values(), max_size=40), json_values()
            ),
            "width": st.one_of(st.integers(-10, 9000), json_values()),
            "height": st.one_of(st.integers(-10, 9000), json_values()),
        },
    )
    return st.one_of(
        st.just(b""),
        ai_start.map(lambda v: json.dumps(v).encode()),
        json_values().map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=2000),
        st.text(max_size=200).map(str.encode),
        st.integers(1, 20000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(1, 20000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.integers(BODY_LIMIT - 16, BODY_LIMIT + 16).map(lambda n: b" " * n),
        st.just(b'{"pipeline": "noop", "params": {"x": ' + b"9" * 5000 + b"}}"),
    )


@st.composite
def requests(draw: st.DrawFn, target: FuzzNode) -> FuzzRequest:
    route_path = draw(paths(target))
    query = draw(queries(target))
    method = draw(st.one_of(st.sampled_from(METHODS), st.text(alphabet=TOKEN_CHARS, max_size=12)))
    version = draw(
        st.one_of(
            st.just("HTTP/1.1"),
            st.sampled_from(["HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "http/1.1", ""]),
        )
    )
    framing = draw(
        st.sampled_from(
            ["length", "length", "chunked", "none", "bad-length", "two-lengths",
             "length-and-chunked", "bad-chunks", "short", "unknown-coding"]
        )
    )  # fmt: skip
    value = ""
    if framing == "bad-length":
        value = draw(
            st.sampled_from(["-1", "abc", "1e3", "0x10", "+5", "1, 2", "", "١٢", "9" * 30])
        )
    elif framing == "bad-chunks":
        value = draw(st.sampled_from(["zz", "-1", "ffffffffffffffffffff", "1;" + "x" * 9000, ""]))
    elif framing == "unknown-coding":
        value = draw(st.sampled_from(UNKNOWN_CODINGS))
    full = route_path + ("?" + query if query else "")
    return FuzzRequest(
        method=method,
        target=full,
        version=version,
        headers=tuple(draw(headers(target))),
        body=draw(bodies()),
        framing=framing,
        framing_value=value,
    )


# --- the fuzz ------------------------------------------------------------------------------


def send(target: FuzzNode, request: FuzzRequest) -> None:
    """Sends ``request``; the answer and the node keep the rules."""
    answer = exchange(
        target.port,
        request.encode(),
        head=request.method == "HEAD",
        half_close=not request.complete,
    )
    assert_allowed(
        answer,
        framed=request.complete,
        unknown_coding=request.framing == "unknown-coding",
        what=request,
    )
    assert target.node.proc.poll() is None, target.node.log_path.read_text()[-3000:]


def test_every_route_answers_fuzzed_requests_under_500_and_the_node_lives(
    target: FuzzNode,
) -> None:
    @fuzz_settings(EXAMPLES)
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        send(target, data.draw(requests(target), label="request"))

    fuzz()
    stop_ai(target)
    assert_node_well(target)


def stop_ai(target: FuzzNode) -> None:
    """Stops a live AI session the fuzz may have started on the live stream."""
    request = target.api_request("DELETE", f"/api/ai/{target.stream}")
    assert exchange(target.port, request).status in (204, 404)


def test_stream_routes_fuzzed_with_valid_credentials_answer_under_500(target: FuzzNode) -> None:
    """The playback and live AI routes of the live stream, with the credentials that let a
    request past the guards, so the fuzz reaches the routes' own code."""
    stream_routes = [r for r in ROUTES if isinstance(r, Route) and "{stream}" in r.path]

    @fuzz_settings(EXAMPLES // 2)
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        route = data.draw(st.sampled_from(stream_routes), label="route")
        path = data.draw(_fill(route, target, stream=target.stream), label="path")
        query = data.draw(queries(target), label="query")
        if target.play_token is not None:
            query = f"{query}&token={target.play_token}" if query else f"token={target.play_token}"
        method = data.draw(st.sampled_from(sorted(route.methods or {"GET"})), label="method")
        credentials = tuple((k.encode(), v.encode()) for k, v in target.api_headers().items())
        content = b"application/sdp" if "/wh" in path else b"application/json"
        request = FuzzRequest(
            method=method,
            target=f"{path}?{query}",
            version="HTTP/1.1",
            headers=((b"Host", b"x"), (b"Content-Type", content), *credentials),
            body=data.draw(bodies(), label="body") if method == "POST" else b"",
            framing="length",
        )
        send(target, request)

    fuzz()
    stop_ai(target)
    assert_node_well(target)


# --- connections that say nothing more are closed -------------------------------------------

IDLE_OPENINGS = {
    "nothing": b"",
    "half a request line": b"GET /hls/",
    "headers that never end": b"GET /api/status HTTP/1.1\r\nHost: x\r\n",
    "HTTP/2 prior knowledge": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "a refused WebSocket handshake": (
        b"GET /api/ai/fuzzcam/control HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 99\r\n\r\n"
    ),
    "a WebSocket handshake without a key": (
        b"GET /hls/fuzzcam/index.m3u8 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ),
    "a finished request, kept alive": b"GET /watch/fuzzcam HTTP/1.1\r\nHost: x\r\n\r\n",
}


def test_a_connection_that_goes_quiet_is_closed_within_keep_alive_timeout(
    target: FuzzNode,
) -> None:
    """Whatever a client sent, once it says nothing more and waits on nothing the node
    closes its connection within ``keep_alive_timeout`` (and the close grace): no opening
    holds one of the node's connections for ever. The openings are tried all at once."""
    limit = DEFAULT_KEEP_ALIVE_TIMEOUT + CLOSE_GRACE + 1
    opened = {}
    for name, data in IDLE_OPENINGS.items():
        sock = socket.create_connection(("127.0.0.1", target.port))
        sock.sendall(data)
        opened[sock] = name
    deadline = time.monotonic() + limit
    try:
        while opened and (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select(list(opened), [], [], left)
            for sock in readable:
                try:
                    ended = not sock.recv(65536)
                except ConnectionResetError:
                    ended = True
                if ended:
                    sock.close()
                    del opened[sock]
        assert not opened, f"still open after {limit:g} s: {sorted(opened.values())}"
    finally:
        for sock in opened:
            sock.close()


def test_tokens_that_differ_every_request_cost_bounded_memory(target: FuzzNode) -> None:
    """Play decisions are remembered per token (``lpstream.access.cache``): 3000 requests
    with a new 30 KB token each leave the node's memory within 60 MB of where it was."""
    pid = target.node.proc.pid
    before = rss_mb(pid)
    for n in range(3000):
        token = f"{n:08d}" + "t" * 30_000
        request = (
            f"GET /hls/{target.stream}/index.m3u8?token={token} HTTP/1.1\r\nHost: x\r\n\r\n"
        ).encode()
        answer = exchange(target.port, request)
        assert answer.status in (200, 401), answer
    assert rss_mb(pid) < before + 60, (before, rss_mb(pid))
    assert_node_well(target)
