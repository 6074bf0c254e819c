"""Fuzz on the live AI control WebSocket (``/api/ai/{stream}/control``) of a real node with a
running session: generated frames, written byte for byte over real TCP.

Frames of every kind a client can send: text (JSON parameter changes, JSON that is not one,
text that is not JSON, bytes that are not UTF-8), binary, messages past the 64 KiB limit,
messages in fragments with control frames between them, and frames the protocol forbids
(reserved bits and opcodes, unmasked, a continuation with nothing to continue, fragmented or
oversized control frames, bad close codes). After each example a ping goes out: the node
either answers it (the socket lives; refused changes were answered with ``error`` events) or
has closed with a 1xxx close code. It never drops the TCP connection without a close frame
and never dies; afterwards the session still runs and an honest app steering it is answered.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any, cast

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import Frame, FrameProtocol, Opcode

from tests.attacks.fuzzing import (
    UNTRUNCATED_EXAMPLES,
    FuzzNode,
    assert_allowed,
    assert_node_well,
    exchange,
    fuzz_settings,
    json_values,
    live_node,
)
from tests.e2e.nodes import wait_for

pytestmark = pytest.mark.filterwarnings(UNTRUNCATED_EXAMPLES)

MESSAGE_LIMIT = 64 * 1024
"""The README's limit on a control socket message (close 1009 past it)."""
EXAMPLES = int(os.environ.get("LPSTREAM_FUZZ_EXAMPLES", "250")) // 2
"""Frame sequences sent (more with ``LPSTREAM_FUZZ_EXAMPLES``)."""
KEY = base64.b64encode(b"fuzz-socket-key!").decode()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzNode]:
    """A guarded node whose live stream runs the ``noop`` pipeline."""
    with live_node(tmp_path_factory.mktemp("ws"), guarded=True) as node:
        start = node.api_request("POST", f"/api/ai/{node.stream}", b'{"pipeline": "noop"}')
        assert exchange(node.port, start).status == 201
        yield node


def ai_status(target: FuzzNode) -> dict[str, object]:
    answer = exchange(target.port, target.api_request("GET", f"/api/ai/{target.stream}"))
    assert answer.status == 200, answer
    status: dict[str, object] = json.loads(answer.body)
    return status


# --- frames, as bytes ----------------------------------------------------------------------


def frame(
    opcode: int,
    payload: bytes,
    *,
    mask: bytes | None,
    fin: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One frame as a client writes it (``mask`` None: unmasked, which clients must not)."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    masked = 0x80 if mask is not None else 0
    if size < 126:
        head = bytes([first, masked | size])
    elif size < 1 << 16:
        head = bytes([first, masked | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([first, masked | 127]) + size.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@attrs.frozen
class Piece:
    """Part of what the fuzz sends: the bytes, and what they are."""

    what: str
    data: bytes
    forbidden: bool = False
    """RFC 6455 forbids it: the node may fail the connection (drop it, no close frame)."""
    closes: int | None = None
    """The close code of a close frame among them (the node may echo it)."""

    def __repr__(self) -> str:  # what a failure prints: the start of the bytes
        return f"Piece({self.what!r}, {len(self.data)} bytes: {self.data[:200]!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints this
        printer.text(repr(self))


def texts() -> st.SearchStrategy[bytes]:
    params = st.dictionaries(
        st.one_of(st.sampled_from(["strength", "prompt", "seed", "x"]), st.text(max_size=140)),
        st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=50), json_values()),
        max_size=40,
    )
    return st.one_of(
        params.map(lambda p: json.dumps({"params": p}).encode()),
        json_values().map(lambda v: json.dumps(v).encode()),
        st.text(max_size=100).map(str.encode),
        st.binary(max_size=100),  # not UTF-8 at all, often
        st.integers(1, 40).map(lambda n: b"[" * n + b"]" * n),
        st.integers(MESSAGE_LIMIT - 8, MESSAGE_LIMIT + 8).map(
            lambda n: b'{"params": {"p": "' + b"x" * (n - 19) + b'"}}'
        ),
    )


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


BAD_CLOSES = [b"\x00", (0).to_bytes(2, "big"), (1005).to_bytes(2, "big"),
              (1006).to_bytes(2, "big"), (2999).to_bytes(2, "big"), (5000).to_bytes(2, "big"),
              (1000).to_bytes(2, "big") + b"\xff\xfe"]  # fmt: skip
KINDS = ["text", "text", "binary", "fragments", "ping", "pong", "close", "bad-close",
         "reserved-bits", "reserved-opcode", "unmasked", "lone-continuation", "fragmented-ping",
         "big-ping", "huge-length"]  # fmt: skip


@st.composite
def pieces(draw: st.DrawFn) -> Piece:
    mask = draw(st.binary(min_size=4, max_size=4))
    kind = draw(st.sampled_from(KINDS))
    if kind == "text":
        payload = draw(texts())
        return Piece(kind, frame(Opcode.TEXT, payload, mask=mask), forbidden=not _utf8(payload))
    if kind == "binary":
        return Piece(kind, frame(Opcode.BINARY, draw(st.binary(max_size=300)), mask=mask))
    if kind == "fragments":
        payload = draw(texts())
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
        parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        data = b""
        for n, part in enumerate(parts):
            opcode = Opcode.TEXT if n == 0 else Opcode.CONTINUATION
            data += frame(opcode, part, mask=mask, fin=n == len(parts) - 1)
            if draw(st.booleans()):  # control frames may come between fragments
                data += frame(Opcode.PING, b"between", mask=mask)
        return Piece(kind, data, forbidden=not _utf8(payload))
    if kind in ("ping", "pong"):
        opcode = Opcode.PING if kind == "ping" else Opcode.PONG
        return Piece(kind, frame(opcode, draw(st.binary(max_size=125)), mask=mask))
    if kind == "close":
        code = draw(st.sampled_from([1000, 1001, 1008, 3000, 4000, 4999]))
        reason = draw(st.text(max_size=40)).encode()[:120]
        payload = code.to_bytes(2, "big") + reason
        return Piece(kind, frame(Opcode.CLOSE, payload, mask=mask), closes=code)
    if kind == "bad-close":
        payload = draw(st.sampled_from(BAD_CLOSES))
        return Piece(kind, frame(Opcode.CLOSE, payload, mask=mask), forbidden=True)
    if kind == "huge-length":  # a header announcing more than the limit, and that much data
        size = draw(st.sampled_from([MESSAGE_LIMIT + 1, 1 << 32, (1 << 63) - 1]))
        data = frame(Opcode.BINARY, b"x" * (MESSAGE_LIMIT + 1), mask=mask, length=size)
        return Piece(kind, data)
    forbidden = {
        "reserved-bits": frame(Opcode.TEXT, b"{}", mask=mask, rsv=draw(st.integers(1, 7))),
        "reserved-opcode": frame(draw(st.sampled_from([3, 7, 0xB, 0xF])), b"x", mask=mask),
        "unmasked": frame(Opcode.TEXT, b'{"params": {}}', mask=None),
        "lone-continuation": frame(Opcode.CONTINUATION, b"x", mask=mask),
        "fragmented-ping": frame(Opcode.PING, b"x", mask=mask, fin=False),
        "big-ping": frame(Opcode.PING, b"p" * 126, mask=mask),
    }
    return Piece(kind, forbidden[kind], forbidden=True)


# --- one socket ----------------------------------------------------------------------------


def handshake(target: FuzzNode, *, token: bool = True) -> socket.socket:
    """Opens the control socket of the live stream (with the API token in the query)."""
    query = f"?token={target.api_token}" if token and target.api_token else ""
    sock = socket.create_connection(("127.0.0.1", target.port), timeout=10)
    sock.sendall(
        (
            f"GET /api/ai/{target.stream}/control{query} HTTP/1.1\r\nHost: x\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(1)
        assert data, f"closed during the handshake: {head!r}"
        head += data
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


@attrs.frozen
class Outcome:
    """How a socket ended up after the fuzz's frames and the probe ping."""

    pong: bool
    close_code: int | None
    events: list[dict[str, object]]
    dropped: bool
    """The TCP connection ended without a close frame."""


def probe(sock: socket.socket, *, what: object = "", within: float = 10) -> Outcome:
    """Sends a ping and reads until its pong, a close frame, or the end of the connection."""
    with contextlib.suppress(OSError):  # the node may have ended it already
        sock.sendall(frame(Opcode.PING, b"probe", mask=b"\x01\x02\x03\x04"))
    frames = FrameProtocol(client=True, extensions=[])
    events: list[dict[str, object]] = []
    text = b""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            break
        if not data:
            return Outcome(False, None, events, dropped=True)
        frames.receive_bytes(data)
        received: Frame
        for received in frames.received_frames():
            if received.opcode is Opcode.PONG and received.payload == b"probe":
                return Outcome(True, None, events, dropped=False)
            if received.opcode is Opcode.CLOSE:
                code, _ = cast(tuple[int, str], received.payload)
                return Outcome(False, int(code), events, dropped=False)
            if received.opcode in (Opcode.TEXT, Opcode.CONTINUATION):
                text += received.payload.encode() if isinstance(received.payload, str) else b""
                if received.message_finished:
                    events.append(json.loads(text))
                    text = b""
    raise AssertionError(f"no pong and no close within {within:g} s after {what}")


def test_fuzzed_frames_get_an_answer_or_a_1xxx_close_and_the_session_runs_on(
    target: FuzzNode,
) -> None:
    @fuzz_settings(EXAMPLES)
    @given(st.lists(pieces(), min_size=1, max_size=4))
    def fuzz(sent: list[Piece]) -> None:
        with handshake(target) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(b"".join(p.data for p in sent))
            outcome = probe(sock, what=sent)
        if outcome.dropped:
            assert any(p.forbidden for p in sent), f"dropped without a close frame: {sent}"
        assert all("type" in event for event in outcome.events), outcome.events
        if not outcome.pong and not outcome.dropped:
            echoed = {p.closes for p in sent if p.closes}
            code = outcome.close_code
            assert code is not None and (1000 <= code < 2000 or code in echoed), (code, sent)
        assert target.node.proc.poll() is None

    fuzz()
    assert ai_status(target)["running"] is True
    # An honest app on the same session is answered: a bad change gets its error event.
    with handshake(target) as sock:
        sock.sendall(frame(Opcode.TEXT, b"not json", mask=b"abcd"))
        outcome = probe(sock)
        while outcome.pong and not any(e["type"] == "error" for e in outcome.events):
            outcome = probe(sock)  # the error event may come after the pong
        assert outcome.pong, outcome
    assert_node_well(target)


@pytest.mark.slow  # ~35 s of handshakes: it runs with the slow tests, two at a time
def test_control_socket_handshakes_without_the_token_or_with_bad_headers_are_refused(
    target: FuzzNode,
) -> None:
    """The handshake fuzzed: the token missing or wrong, odd versions and keys, a body; each
    is refused (401, 400, 404) or accepted, never answered 5xx, and a refusal is closed."""
    versions = st.sampled_from(["13", "8", "", "13, 8", "x"])
    keys = st.sampled_from([KEY, "", "short", "=" * 24])
    tokens = st.sampled_from(["", "?token=wrong", f"?token={target.api_token}", "?token="])
    streams = st.sampled_from([target.stream, "nosuch", "%00", "a" * 200])

    @fuzz_settings(20)
    @given(versions, keys, tokens, streams, st.binary(max_size=20))
    def fuzz(version: str, key: str, token: str, stream: str, extra: bytes) -> None:
        request = (
            f"GET /api/ai/{stream}/control{token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: {version}\r\n\r\n"
        ).encode() + extra
        answer = exchange(target.port, request, within=15)
        if answer.status is None:
            # Bytes after a refused handshake may meet the server's close before its answer
            # (hypercorn closes on what follows a request it will not upgrade): allowed only then.
            assert extra and answer.closed, request
            return
        what = (request, answer.body)
        assert_allowed(answer, framed=not extra, what=what)
        if answer.status == 101:
            allowed = ("13", KEY, f"?token={target.api_token}", target.stream)
            assert (version, key, token, stream) == allowed, what

    fuzz()
    wait_for(lambda: ai_status(target)["running"] is True, 5, "the session")
    assert_node_well(target)
