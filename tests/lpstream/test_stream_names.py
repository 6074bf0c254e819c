"""One stream-name rule: the same names through every way in, one answer each.

The table's names go through :func:`lpstream.media.check_stream_name`, an RTMP publish, a JOB
on the wire, and the HTTP routes that take a stream name (HLS playback, the watch and publish
pages, WHIP and WHEP offers) served by hypercorn on loopback. Each entry point accepts exactly
the names the function accepts.
"""

from __future__ import annotations

import http.client
import urllib.parse

import attrs
import msgspec
import pytest
import trio

from ingest.rtmp import Publisher, PublishRequested
from ingest.whip import PlaybackSubscription, WhepPlayback, WhipIngest
from lpstream.errors import RemoteProtocolError, StreamInUseError
from lpstream.http.app import build_app
from lpstream.media import MAX_STREAM_NAME, VideoProfile, check_stream_name
from lpstream.metrics import Metrics
from lpstream.playback.live import LivePlayback
from lpstream.wire import Frame, FrameType, Job, decode_message
from tests.asgi import serve_on_loopback
from tests.ingest.test_rtmp_protocol import connected, drain, publish_cmds
from tests.ingest.test_whep_sansio import OFFER as WHEP_OFFER
from tests.ingest.test_whip_sansio import OBS_OFFER

VALID = [
    "live",
    "a",
    "Stream_1.backup-2",
    "-lead",
    "_lead",
    "a..b",
    "trailing.",
    "x" * MAX_STREAM_NAME,
]
INVALID = [
    "",
    ".",
    "..",
    ".hidden",
    "../x",
    "x" * (MAX_STREAM_NAME + 1),
    "café",
    "名前",
    "a b",
    "a/b",
    "a\\b",
    "line\n",
    "tab\t",
    "per%cent",
]
TABLE = [(name, True) for name in VALID] + [(name, False) for name in INVALID]
HTTP_TABLE = [(name, valid) for name, valid in TABLE if "/" not in name]
"""In a URL path a '/' (even as %2F) makes other path segments: ``/whep/a%2Fb`` is stream
``a``, rendition ``b``."""


def accepted_by_the_function(name: str) -> bool:
    try:
        assert check_stream_name(name) == name
    except ValueError as exc:
        assert "characters from [A-Za-z0-9_.-], not starting with '.'" in str(exc)
        return False
    return True


def accepted_by_rtmp(name: str) -> bool:
    conn, client = connected()
    conn.receive_data(publish_cmds(client, name))
    try:
        events = drain(conn)
    except RemoteProtocolError as exc:
        assert "stream name" in str(exc)
        return False
    assert events == [PublishRequested(stream_name=name, publish_type="live")]
    return True


def accepted_by_the_wire(name: str) -> bool:
    body = msgspec.msgpack.encode({"stream_id": name, "seq": 0, "duration_ms": 2000})
    try:
        job = decode_message(Frame(type=FrameType.JOB, body=body))
    except RemoteProtocolError as exc:
        assert exc.code == 400 and "stream_id" in str(exc)
        return False
    assert isinstance(job, Job) and job.stream_id == name
    return True


@pytest.mark.parametrize(("name", "valid"), TABLE, ids=repr)
def test_the_function_rtmp_and_the_wire_give_one_answer(name: str, valid: bool) -> None:
    answers = {
        "function": accepted_by_the_function(name),
        "rtmp": accepted_by_rtmp(name),
        "wire": accepted_by_the_wire(name),
    }
    assert answers == dict.fromkeys(answers, valid)


@attrs.define
class Directory:
    """Has no live stream, but notes every name that got through to the lookup."""

    asked: list[str] = attrs.Factory(list)

    def playback(self, name: str) -> LivePlayback | None:
        self.asked.append(name)
        return None


class NoPublishes:
    """The publish side of a node that takes none (WHIP checks the name before asking)."""

    async def start_publish(self, stream_name: str, **who: object) -> Publisher:
        raise StreamInUseError(stream_name)


class NoStreams:
    """The playback side of a node with no live stream."""

    def subscribe(self, stream: str, rendition: str) -> PlaybackSubscription | None:
        return None


def request(port: int, method: str, path: str, body: str = "") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        headers = {"Content-Type": "application/sdp"} if body else {}
        conn.request(method, path, body=body.encode() or None, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


async def http_answers(port: int, directory: Directory, name: str) -> dict[str, bool]:
    quoted = urllib.parse.quote(name, safe="")

    def call(method: str, path: str, body: str = "") -> int:
        return request(port, method, path, body)

    async def status(method: str, path: str, body: str = "") -> int:
        return await trio.to_thread.run_sync(call, method, path, body)

    directory.asked.clear()
    hls = await status("GET", f"/hls/{quoted}/index.m3u8")
    assert hls == 404  # no stream is live either way; the question is whether it was looked up
    refused = {400, 404}  # 404: '' leaves no path segment for the name
    answers = {"hls": directory.asked == [name]}
    for entry, method, route, body, ok in [
        ("watch", "GET", f"/watch/{quoted}", "", 200),
        ("watch webrtc", "GET", f"/watch/{quoted}?whep=1", "", 200),
        ("publish page", "GET", f"/publish/{quoted}", "", 200),
        ("whip", "POST", f"/whip/{quoted}", OBS_OFFER, 503),  # a good name reaches "not running"
        ("whep", "POST", f"/whep/{quoted}", WHEP_OFFER, 503),
    ]:
        code = await status(method, route, body)
        assert code in {ok, *refused}, (route, code)
        answers[entry] = code == ok
    return answers


async def test_the_http_routes_give_the_same_answers() -> None:
    directory = Directory()
    app = build_app(
        playback=directory,
        status=dict,
        metrics=Metrics(),
        whip=WhipIngest(handler=NoPublishes()),
        whep=WhepPlayback(source=NoStreams()),
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_on_loopback, app)
        got: list[tuple[str, dict[str, bool]]] = [
            (name, await http_answers(port, directory, name)) for name, _ in HTTP_TABLE
        ]
        nursery.cancel_scope.cancel()
    expected = [
        (name, dict.fromkeys(answers, valid))
        for (name, valid), (_, answers) in zip(HTTP_TABLE, got, strict=True)
    ]
    assert got == expected


def test_profile_names_follow_the_same_rule() -> None:
    def profile_ok(name: str) -> bool:
        try:
            VideoProfile.checked(name=name, width=640, height=360, bitrate=400_000)
        except ValueError as exc:
            assert "profile name" in str(exc)
            return False
        return True

    names = VALID + INVALID
    assert [profile_ok(n) for n in names] == [n in VALID for n in names]
