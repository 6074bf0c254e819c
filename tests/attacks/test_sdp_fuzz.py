"""Fuzz on WHIP and WHEP offers: the sans-IO offer checks (:mod:`ingest.whip.sdp`) on many
generated and mutated offers, then mutated offers posted to a real node's ``/whip/{stream}``
and ``/whep/{stream}``.

The offers start from real shapes (OBS's WHIP offer, a browser's WHEP offer, from the
sans-IO tests) and are mutated line by line: lines dropped, repeated, swapped, cut, their
values replaced by generated text, numbers where digits are expected (non-ASCII digits, more
than Python converts), other line endings, bytes that are not UTF-8. The checks either accept
an offer, and then what they say about it is true, or refuse it with 400, 413 or 415 and a
reason; nothing else escapes them. Over HTTP every answer is 201 (the session is deleted at
once) or a refusal under 500 (a 503 when the session limit is reached, saying so), and the
node lives.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.whip import check_offer, check_playback_offer
from ingest.whip.sdp import MAX_OFFER_SIZE
from lpstream.errors import RemoteProtocolError
from tests.attacks.fuzzing import (
    UNTRUNCATED_EXAMPLES,
    FuzzNode,
    assert_allowed,
    assert_node_well,
    exchange,
    fuzz_settings,
    live_node,
)
from tests.ingest.test_whip_sansio import OBS_OFFER

pytestmark = pytest.mark.filterwarnings(UNTRUNCATED_EXAMPLES)

WHEP_OFFER = OBS_OFFER.replace("a=sendonly", "a=recvonly")
"""A player's WHEP offer: OBS's shape, receiving."""

T = TypeVar("T")
EXAMPLES = int(os.environ.get("LPSTREAM_FUZZ_EXAMPLES", "250"))
"""Offers posted per endpoint is a fifth of this; the sans-IO fuzz runs four times as many."""

NUMBERS = ["1", "0", "-1", "01", "\u00b2", "\u0661", "\u0663", "\U0001d7d9", "9" * 4301, "1" * 20,
           "", " 1", "1.0", "0x1"]  # fmt: skip
"""Where the checks read a number: odd and hostile ones."""
READ_LINES = ("m=", "a=rtpmap:", "a=fmtp:")
"""The lines whose numbers the checks read."""
VALUE_LINES = [
    "a=fmtp:96 profile-level-id=42e01f;packetization-mode={n}",
    "a=fmtp:{n} packetization-mode=1",
    "a=rtpmap:{n} H264/90000",
    "a=rtpmap:96 {n}/90000",
    "m=video {n} UDP/TLS/RTP/SAVPF 96",
    "m=video 9 UDP/TLS/RTP/SAVPF {n}",
    "m=audio {n}/2 RTP/AVP 111",
    "a=candidate:1 1 UDP {n} 192.0.2.10 {n} typ host",
    "a=ssrc:{n} cname:x",
    "a=rtcp:{n} IN IP4 0.0.0.0",
    "a=extmap:{n} urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=msid:{n} {n}",
    "a=mid:{n}",
    "a=setup:{n}",
    "a=fingerprint:sha-256 {n}",
    "c=IN IP4 {n}",
    "o=- {n} {n} IN IP4 127.0.0.1",
    "t={n} {n}",
    "a=sendonly",
    "a=recvonly",
    "a=inactive",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "a=group:BUNDLE {n}",
]


def _line() -> st.SearchStrategy[str]:
    """One SDP line a hostile offerer might write."""
    return st.one_of(
        st.tuples(st.sampled_from(VALUE_LINES), st.sampled_from(NUMBERS)).map(
            lambda t: t[0].replace("{n}", t[1])
        ),
        st.tuples(st.sampled_from(VALUE_LINES), st.text(max_size=30)).map(
            lambda t: t[0].replace("{n}", t[1])
        ),
        st.tuples(st.characters(), st.text(max_size=60)).map(lambda t: f"{t[0]}={t[1]}"),
        st.text(max_size=60),
    )


@st.composite
def mutated(draw: st.DrawFn, offer: str, *, most: int = 4) -> str | bytes:
    """``offer`` with up to ``most`` line mutations, and maybe other line endings or bytes."""
    lines = offer.split("\r\n")
    for _ in range(draw(st.integers(1, most))):
        where = draw(st.integers(0, len(lines)))
        op = draw(
            st.sampled_from(["drop", "repeat", "swap", "insert", "replace", "cut", "renumber"])
        )
        if op == "insert" or not lines or where == len(lines):
            lines.insert(where, draw(_line()))
        elif op == "drop":
            del lines[where]
        elif op == "repeat":
            lines.insert(where, lines[where])
        elif op == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[where], lines[other] = lines[other], lines[where]
        elif op == "renumber":  # a number made odd, most often where the checks read one
            read = [n for n, line in enumerate(lines) if line.startswith(READ_LINES)]
            where_read = draw(st.booleans())
            if read and where_read:
                where = draw(st.sampled_from(read))
            runs = list(re.finditer(r"[0-9]+", lines[where]))
            if runs:
                run = draw(st.sampled_from(runs))
                number = draw(st.sampled_from(NUMBERS))
                lines[where] = lines[where][: run.start()] + number + lines[where][run.end() :]
        elif op == "replace":
            kind, _, value = lines[where].partition("=")
            head = value.split(":")[0] if ":" in value else ""
            lines[where] = f"{kind}={head}:{draw(_line())}" if head else draw(_line())
        else:
            lines[where] = lines[where][: draw(st.integers(0, len(lines[where])))]
    text = draw(st.sampled_from(["\r\n", "\r\n", "\r\n", "\n", "\r", "\r\r\n"])).join(lines)
    ending = draw(st.sampled_from(["", "", "", "bom", "latin-1", "nul"]))
    if ending == "bom":
        return "\ufeff" + text
    if ending == "latin-1":
        return text.encode("utf-8") + b"\xe9\xff"
    if ending == "nul":
        return text.replace("\n", "\n\x00", 1)
    return text


ICE = ["a=ice-ufrag:Fz8k", "a=ice-pwd:7dK0bXk9pJ6QmWbq3hTz1e"]
FINGERPRINT = "a=fingerprint:sha-256 3C:7E:B2:8B"


@st.composite
def generated(draw: st.DrawFn) -> str:
    """An offer built from the parts the checks read, each drawn: sections, their formats,
    codecs, packetization modes, directions, ICE credentials and fingerprints."""
    lines = ["v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    lines += ICE if draw(st.booleans()) else []
    lines += [FINGERPRINT] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["video", "audio", "application", "VIDEO", "text"]))
        formats = draw(st.lists(st.sampled_from(["96", "102", "111", *NUMBERS]), max_size=3))
        lines.append(f"m={kind} 9 UDP/TLS/RTP/SAVPF {' '.join(formats)}".rstrip())
        for fmt in formats:
            codec = draw(st.sampled_from(["H264", "h264", "VP8", "opus", "AV1", ""]))
            lines.append(f"a=rtpmap:{fmt} {codec}/90000")
            if draw(st.booleans()):
                mode = draw(st.sampled_from(NUMBERS))
                lines.append(f"a=fmtp:{fmt} profile-level-id=42e01f;packetization-mode={mode}")
        direction = draw(st.sampled_from(["sendonly", "recvonly", "sendrecv", "inactive", ""]))
        lines += [f"a={direction}"] if direction else []
        lines += ICE if draw(st.booleans()) else []
        lines += [FINGERPRINT] if draw(st.booleans()) else []
    return "\r\n".join(lines) + "\r\n"


def offers(offer: str) -> st.SearchStrategy[str | bytes]:
    """Offers for the fuzz: mutations of ``offer``, offers built from drawn parts, generated
    line lists, anything at all."""
    return st.one_of(
        mutated(offer),
        generated(),
        st.lists(_line(), max_size=30).map(lambda lines: "\r\n".join(["v=0", *lines])),
        st.text(max_size=500),
        st.binary(max_size=500),
        st.integers(MAX_OFFER_SIZE - 4, MAX_OFFER_SIZE + 4).map(
            lambda n: (offer + "a=x:" + "y" * n)[: n + 1]
        ),
    )


def outcome(check: Callable[[str | bytes], T], data: str | bytes) -> T | int:
    """What a check says of ``data``: its summary, or the code of its refusal. A refusal
    says why and has the status to answer; any other exception fails the test."""
    try:
        return check(data)
    except RemoteProtocolError as exc:
        assert exc.code in (400, 413, 415), (exc.code, exc.reason)
        assert exc.reason.strip(), exc
        return exc.code


@settings(max_examples=EXAMPLES * 4, deadline=None, derandomize=True, database=None)
@given(offers(OBS_OFFER))
def test_the_whip_check_accepts_only_what_it_can_ingest_and_refuses_with_a_reason(
    offer: str | bytes,
) -> None:
    summary = outcome(check_offer, offer)
    if isinstance(summary, int):
        return
    video = summary.video
    assert "H264" in video.codecs and 1 in video.h264_packetization_modes
    assert video.direction in ("sendonly", "sendrecv")
    audio = summary.audio
    assert audio is None or "OPUS" in audio.codecs
    if isinstance(offer, str):  # the same offer as bytes gets the same answer
        assert outcome(check_offer, offer.encode()) == summary


@settings(max_examples=EXAMPLES * 4, deadline=None, derandomize=True, database=None)
@given(offers(WHEP_OFFER))
def test_the_whep_check_accepts_only_what_it_can_send_and_refuses_with_a_reason(
    offer: str | bytes,
) -> None:
    video = outcome(check_playback_offer, offer)
    if isinstance(video, int):
        return
    assert "H264" in video.codecs and 1 in video.h264_packetization_modes
    assert video.direction in ("recvonly", "sendrecv")


# --- against a node ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzNode]:
    with live_node(tmp_path_factory.mktemp("sdp"), guarded=False) as node:
        yield node


def light(offer: str) -> st.SearchStrategy[str | bytes]:
    """``offer`` as it is, or with one or two mutations: most get past the checks, so the
    WebRTC stack answers them."""
    return st.one_of(st.just(offer), mutated(offer, most=1), mutated(offer, most=2))


def post_offer(target: FuzzNode, path: str, offer: str | bytes) -> None:
    """Posts ``offer``; an accepted one is deleted at once. Both answers keep the rules."""
    body = offer.encode() if isinstance(offer, str) else offer
    request = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    answer = exchange(target.port, request)
    assert_allowed(answer, framed=True, what=(path, offer))
    assert answer.status in (201, 400, 404, 409, 413, 415, 503), (answer, path, offer)
    if answer.status == 201:
        location = answer.headers["location"]
        ended = exchange(target.port, f"DELETE {location} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert ended.status == 200, (location, ended)
    assert target.node.proc.poll() is None, target.node.log_path.read_text()[-3000:]


def test_whip_offers_fuzzed_get_201_or_a_refusal_under_500(target: FuzzNode) -> None:
    @fuzz_settings(EXAMPLES // 5)
    @given(st.one_of(light(OBS_OFFER), light(OBS_OFFER), offers(OBS_OFFER)))
    def fuzz(offer: str | bytes) -> None:
        post_offer(target, f"/whip/fuzz-{secrets.token_hex(4)}", offer)

    fuzz()
    assert_node_well(target)


def test_whep_offers_fuzzed_get_201_or_a_refusal_under_500(target: FuzzNode) -> None:
    renditions = st.sampled_from(["", *(f"/{r}" for r in target.renditions), "/nosuch"])

    @fuzz_settings(EXAMPLES // 5)
    @given(renditions, st.one_of(light(WHEP_OFFER), light(WHEP_OFFER), offers(WHEP_OFFER)))
    def fuzz(rendition: str, offer: str | bytes) -> None:
        post_offer(target, f"/whep/{target.stream}{rendition}", offer)

    fuzz()
    assert_node_well(target)
