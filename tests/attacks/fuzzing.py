"""What the fuzz tests share: a real node with a live stream, a client that sends exactly the
bytes it is given, and the rules every answer and the node must keep.

The node is ``lpstream dev --offchain`` (a subprocess, real TCP), either open (loopback
clients may use the API, anyone may watch) or guarded (``--api-token``, ``--play-auth jwt``),
with ffmpeg publishing a small test picture so the stream routes have something behind them.
The client writes the request bytes as the fuzz made them (h11 would refuse to write most of
them) and reads the answer with h11, which also checks that the node's answer is valid HTTP.

The rules (the README's "Limits" and "Security"): every answer is under 500, except a 503
that says why (a budget, a blocking reload that timed out) and the 501 RFC 9112 section 6.1
asks for a transfer coding the server does not know; an answer that says ``Connection:
close`` is followed by the close; a request whose framing is broken may instead be closed
without an answer; nothing is left hanging. After the fuzz the node is running, answers
``/api/status``, and its log has no traceback.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import h11
import jwt
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from lpstream.http.connection import CLOSE_GRACE
from tests.e2e.nodes import NodeProcess, http_get, push_command, start_dev, wait_for

__all__ = [
    "ANSWER_WITHIN",
    "UNTRUNCATED_EXAMPLES",
    "Answer",
    "FuzzNode",
    "assert_allowed",
    "assert_node_well",
    "exchange",
    "fuzz_settings",
    "json_values",
    "live_node",
    "play_token",
]

ANSWER_WITHIN = 30.0
"""Seconds an answer may take: a blocking playlist reload is held three target durations."""
PICTURE = "320x180"
"""The publisher's picture: small, so two cores transcode it while the fuzz runs."""
UNTRUNCATED_EXAMPLES = "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
"""A warnings filter: a failing example is printed whole, however large (a 64 KiB body)."""
JWT_SECRET = "fuzz-play-secret-of-at-least-32-bytes"
API_TOKEN = "fuzz-api-token-1"


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for a fuzz against a live node: a fixed number of examples, the
    same ones every run (derandomized, so a failure reproduces as it is printed), no
    deadline (the node is on a shared machine)."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def json_values() -> st.SearchStrategy[object]:
    """Any JSON value: scalars (floats with NaN and infinities, as Python writes them), and
    lists and objects of them, a few levels deep."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)
        ),
        max_leaves=12,
    )


def play_token(
    stream: str, *, seconds: float = 3600, secret: str = JWT_SECRET, action: str = "read"
) -> str:
    """An HS256 JWT that may watch ``stream`` (expired when ``seconds`` is negative; with
    ``action="publish"``, one that may publish it)."""
    claims = {
        "sub": "fuzz-viewer",
        "exp": int(time.time() + seconds),
        "lpstream_permissions": [{"action": action, "path": stream}],
    }
    return jwt.encode(claims, secret, algorithm="HS256")


@attrs.frozen(kw_only=True)
class FuzzNode:
    """A running node with a live stream, and the credentials it takes."""

    node: NodeProcess
    port: int
    stream: str
    """The live stream's name."""
    renditions: tuple[str, ...]
    """Its renditions, as the master playlist names them."""
    api_token: str | None
    """The API token the node wants (None: loopback clients need none)."""
    play_token: str | None
    """A token that may watch ``stream`` (None: anyone may)."""

    @property
    def guarded(self) -> bool:
        return self.api_token is not None

    def api_headers(self) -> dict[str, str]:
        return {} if self.api_token is None else {"Authorization": f"Bearer {self.api_token}"}

    def api_request(self, method: str, path: str, body: bytes = b"") -> bytes:
        """A well-formed API request, with the API token where the node wants one."""
        lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in self.api_headers().items()]
        if body:
            lines.append("Content-Type: application/json")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def play_query(self) -> str:
        return "" if self.play_token is None else f"?token={self.play_token}"


GUARDED_FLAGS = (f"--api-token={API_TOKEN}", "--play-auth=jwt", f"--jwt-secret={JWT_SECRET}")
"""The guarded node's flags: an API token, and play authorization by HS256 JWT."""


@contextmanager
def live_node(log_dir: Path, *, guarded: bool, stream: str = "fuzzcam") -> Iterator[FuzzNode]:
    """``lpstream dev --offchain`` (guarded or open) with ffmpeg publishing ``stream`` until
    the block ends (with a JWT that may publish it, where the node wants one); the block runs
    once its master playlist is served. On leaving, the node must stop cleanly (exit 0)."""
    node = start_dev(log_dir, *(GUARDED_FLAGS if guarded else ()))
    rtmp = f"{node.url('rtmp')}/live/{stream}"
    if guarded:
        rtmp += f"?jwt={play_token(stream, action='publish')}"
    publisher = subprocess.Popen(
        push_command(rtmp, seconds=1800, size=PICTURE, gop=30),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        token = play_token(stream) if guarded else None
        query = "" if token is None else f"?token={token}"
        master_url = f"{node.url('http')}/hls/{stream}/index.m3u8{query}"
        master = wait_for(
            lambda: (lambda got: got[1] if got[0] == 200 else None)(http_get(master_url)),
            40,
            f"the master playlist of {stream}",
        )
        renditions = tuple(
            line.split("/")[0]
            for line in master.decode().splitlines()
            if line and not line.startswith("#")
        )
        yield FuzzNode(
            node=node,
            port=int(node.hostport("http").rsplit(":", 1)[1]),
            stream=stream,
            renditions=renditions,
            api_token=API_TOKEN if guarded else None,
            play_token=token,
        )
    finally:
        publisher.kill()
        publisher.wait()
        code = node.stop()
        assert code == 0, node.log_path.read_text()[-3000:]


@attrs.frozen
class Answer:
    """What the node did with one request."""

    status: int | None
    """The final answer's status; None when the node closed without one."""
    headers: dict[str, str]
    body: bytes
    closed: bool
    """The node closed the connection (after its answer, or instead of one)."""
    truncated: bool = False
    """The node closed the connection before the end of its answer."""

    @property
    def says_close(self) -> bool:
        return "close" in self.headers.get("connection", "").lower()


def exchange(
    port: int,
    request: bytes,
    *,
    head: bool = False,
    half_close: bool = False,
    within: float = ANSWER_WITHIN,
) -> Answer:
    """Sends ``request`` (exactly these bytes) on a new connection and reads the answer.

    ``head``: the request was a HEAD (its answer has no body). ``half_close``: end the
    sending side after the request, as a client that has nothing more to send. An answer
    saying ``Connection: close`` is read on until the node closes, for at most
    ``CLOSE_GRACE`` and a second.

    Raises:
        AssertionError: no answer and no close within ``within`` seconds, or an answer that
            is not valid HTTP/1.1.
    """
    client = h11.Connection(h11.CLIENT)
    # The request was written by hand: tell h11 one was sent so it parses the answer (one
    # that offered an upgrade, so a 101 is read as the answer it is).
    upgrade = [("Host", "x"), ("Connection", "upgrade"), ("Upgrade", "websocket")]
    client.send(h11.Request(method="HEAD" if head else "GET", target="/", headers=upgrade))
    client.send(h11.EndOfMessage())
    response: h11.Response | h11.InformationalResponse | None = None
    body = bytearray()
    closed = truncated = False
    deadline = time.monotonic() + within
    with socket.create_connection(("127.0.0.1", port), timeout=within) as sock:
        try:
            sock.sendall(request)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused mid-request: its answer may still be there to read
        while True:
            try:
                event = client.next_event()
            except h11.RemoteProtocolError as exc:
                if response is None:
                    raise AssertionError(f"not an HTTP answer ({exc}): {request[:200]!r}") from None
                truncated = True  # the node closed before the end of its answer
                break
            if event is h11.NEED_DATA:
                data = _receive(sock, deadline, what=f"an answer to {request[:200]!r}")
                closed = not data
                client.receive_data(data)
                if closed and response is None:
                    break
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                response = event  # switched: nothing more is HTTP
                break
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if response is not None and not closed:
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in response.headers}
            if "close" in headers.get("connection", "").lower():
                closed = _wait_close(sock, CLOSE_GRACE + 1)
    if response is None:
        return Answer(None, {}, b"", closed=True)
    headers = {k.decode().lower(): v.decode("latin-1") for k, v in response.headers}
    return Answer(response.status_code, headers, bytes(body), closed=closed, truncated=truncated)


def _receive(sock: socket.socket, deadline: float, *, what: str) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise AssertionError(f"no answer and no close within the time: {what}")
    sock.settimeout(left)
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""
    except TimeoutError:
        raise AssertionError(f"no answer and no close within the time: {what}") from None


def _wait_close(sock: socket.socket, seconds: float) -> bool:
    """Reads (and drops) until the peer closes; False if it has not within ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def assert_allowed(
    answer: Answer, *, framed: bool, unknown_coding: bool = False, what: object = ""
) -> None:
    """The rules every answer keeps (see the module comment). ``framed``: the request was
    complete, valid HTTP/1.1 framing (it must be answered); ``unknown_coding``: it named a
    transfer coding other than chunked (501 is the RFC's answer)."""
    status = answer.status
    if status is None or answer.truncated:
        assert not framed, f"closed without an answer, or in the middle of it: {what}"
    if status is None:
        return
    # A 503 says why (a HEAD answer's reason is the body its Content-Length announces).
    reason = answer.body.strip() != b"" or answer.headers.get("content-length", "0") != "0"
    allowed = status < 500 or (status == 503 and reason)
    allowed = allowed or (status == 501 and unknown_coding)
    assert allowed, f"answered {status} {answer.body[:300]!r}: {what}"
    if answer.says_close:
        assert answer.closed, f"answered {status} with Connection: close but kept it open: {what}"


def assert_node_well(target: FuzzNode) -> None:
    """The node is running, answers ``/api/status`` and logged no traceback."""
    node = target.node
    assert node.proc.poll() is None, node.log_path.read_text()[-3000:]
    assert exchange(target.port, target.api_request("GET", "/api/status"), within=10).status == 200
    log = node.log_path.read_text()
    assert "Traceback" not in log, log[-5000:]
