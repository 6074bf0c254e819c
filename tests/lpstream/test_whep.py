"""WHEP playback end to end, in one process: ffmpeg publishes a known clip over RTMP (``-c
copy``) to a real gateway (RTMP server, ``Gateway``, segmenter, ``WhepPlayback`` behind
hypercorn on loopback); aiortc clients play it over WebRTC and what reaches them is compared,
NAL unit by NAL unit, with the clip.

The gateway's transcoder is a passthrough (a real ``SegmentTranscoder`` that hands the source
segment back as the ``copy`` rendition), so the rendition path (MPEG-TS demux, bursty
segments) is exercised without an encoder on the two-core test machines.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.media.h264 import nal_units
from tests.lpstream.whep_harness import (
    AUTH,
    HEIGHT,
    WIDTH,
    AiortcViewer,
    Node,
    Reply,
    decode,
    open_whep_node,
    play,
)
from tests.mediatools import flv_events, make_clip

PARAMETER_SETS = {7, 8}


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with open_whep_node() as running:
        yield running


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("whep") / "clip.flv"
    return make_clip(path, seconds=12, size=f"{WIDTH}x{HEIGHT}", gop=30, audio=True)


@pytest.fixture
async def publishing(node: Node, clip: Path) -> AsyncIterator[Path]:
    """ffmpeg pushes the clip, unchanged (``-c copy``), in real time, as ``cam``."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(clip)]
    command += ["-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{node.rtmp_port}/live/cam"]
    process = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL)
    try:
        await node.wait_for(lambda: node.gateway.subscribe("cam", "source") is not None, 10, "cam")
        yield clip
    finally:
        process.kill()
        await process.wait()


def clip_units(clip: Path) -> tuple[set[bytes], bytes]:
    """The clip's video NAL units (parameter sets left out) and its avcC."""
    events = list(flv_events(clip))
    config = next(e for e in events if isinstance(e, CodecConfig) and e.kind is TrackKind.VIDEO)
    units: set[bytes] = set()
    for event in events:
        if isinstance(event, MediaPacket) and event.kind is TrackKind.VIDEO:
            data, offset = event.data, 0
            while offset < len(data):
                size = int.from_bytes(data[offset : offset + 4], "big")
                units.add(data[offset + 4 : offset + 4 + size])
                offset += 4 + size
    return {u for u in units if u[0] & 0x1F not in PARAMETER_SETS}, config.data


# --- tests --------------------------------------------------------------------------------


async def test_a_viewer_gets_the_published_h264_unchanged_from_a_keyframe_at_once(
    node: Node, publishing: Path
) -> None:
    units, config = clip_units(publishing)
    await trio.sleep(1.5)  # the stream has a GOP under way: the viewer must not wait for more
    viewer, reply = await play(node)
    answer = reply.body.decode()
    assert reply.headers["content-type"] == "application/sdp"
    assert reply.headers["location"].startswith("/whep/cam/source/")
    assert "a=sendonly" in answer and "H264" in answer and "a=candidate" in answer
    # The stream has sound and the offer receives audio: Opus, in the video's stream.
    audio_section = answer[answer.index("m=audio") :]
    assert "a=sendonly" in audio_section and "opus/48000/2" in audio_section
    msids = {line.split()[0] for line in answer.splitlines() if line.startswith("a=msid:")}
    assert len(msids) == 1, msids
    hosts = {line.split()[4] for line in answer.splitlines() if line.startswith("a=candidate")}
    assert hosts == {"127.0.0.1"}

    started = trio.current_time()
    await node.wait_for(lambda: bool(viewer.frames), 10, "the first frame")
    first_frame_after = trio.current_time() - started
    await node.wait_for(lambda: len(viewer.frames) >= 90, 10, "three seconds of frames")

    # Starts at a keyframe that carries the SPS and PPS in-band (the clip has them only in
    # its avcC, as RTMP does): a WebRTC decoder can start there.
    first = [u[0] & 0x1F for u in nal_units(viewer.frames[0])]
    assert first[:2] == [7, 8] and 5 in first, first
    sps = next(u for u in nal_units(viewer.frames[0]) if u[0] & 0x1F == 7)
    assert sps in config  # the publisher's own SPS
    # Every other NAL unit is byte for byte one the publisher sent: no re-encode.
    received = {u for f in viewer.frames for u in nal_units(f)}
    assert received - {u for u in received if u[0] & 0x1F in PARAMETER_SETS} <= units
    frames = decode(viewer.frames)
    assert len(frames) >= len(viewer.frames) - 2
    assert {(f.width, f.height) for f in frames} == {(WIDTH, HEIGHT)}
    # The GOP under way was fast-forwarded at once: no wait for the next keyframe (1 s GOP).
    assert first_frame_after < 1.0, first_frame_after

    stats = node.whep.statistics()
    assert stats.active_sessions == 1 and stats.frames_sent_total >= 90
    assert stats.bytes_sent_total > 0
    # The source goes out as it arrives: no live frame waits for a clock in the node.
    (session,) = stats.sessions
    assert session.stream == "cam" and session.rendition == "source"
    delay = session.send_delay
    assert delay.frames >= 90 and delay.median_ms is not None and delay.median_ms < 100

    # A PLI starts the viewer over at the current GOP's keyframe, at once: right after a
    # keyframe arrived, a PLI brings that same keyframe again (the next is a second away).
    keyframes = viewer.keyframes()
    await node.wait_for(lambda: viewer.keyframes() > keyframes, 2, "the next GOP")
    idr = viewer.idrs()[-1]
    await node.run_client(viewer.request_keyframe)
    await node.wait_for(lambda: viewer.idrs().count(idr) == 2, 0.5, "the GOP again")
    assert node.whep.statistics().keyframe_requests_total == 1

    location = reply.headers["location"]
    assert (await node.request("DELETE", location)).status == 401
    assert (await node.request("DELETE", location, headers=AUTH)).status == 200
    assert node.whep.statistics().active_sessions == 0
    assert (await node.request("DELETE", location, headers=AUTH)).status == 404
    await node.run_client(viewer.close)


async def test_a_transcoded_rendition_plays_from_its_segments(node: Node, publishing: Path) -> None:
    units, _ = clip_units(publishing)
    viewer, reply = await play(node, "/whep/cam/copy")
    assert reply.headers["location"].startswith("/whep/cam/copy/")
    # The first segment (1 s) comes back whole; its frames are then paced, not burst.
    await node.wait_for(lambda: len(viewer.frames) >= 60, 12, "two seconds of the rendition")
    first = [u[0] & 0x1F for u in nal_units(viewer.frames[0])]
    assert 7 in first and 5 in first
    received = {u for f in viewer.frames for u in nal_units(f) if u[0] & 0x1F not in {7, 8, 9}}
    assert received <= units
    frames = decode(viewer.frames)
    assert {(f.width, f.height) for f in frames} == {(WIDTH, HEIGHT)}
    await node.run_client(viewer.close)


async def test_viewers_that_leave_without_delete_are_cleaned_up(
    node: Node, publishing: Path
) -> None:
    closing, _ = await play(node)
    vanishing, _ = await play(node)
    await node.wait_for(
        lambda: bool(closing.frames) and bool(vanishing.frames), 10, "frames to both"
    )
    assert node.whep.statistics().active_sessions == 2

    await node.run_client(closing.close)  # a DTLS close: the connection is closed at once
    await node.wait_for(lambda: node.whep.statistics().active_sessions == 1, 3, "the closed")

    await node.run_client(vanishing.vanish)  # nothing more comes back: viewer_timeout 1.5 s
    await node.wait_for(lambda: node.whep.statistics().active_sessions == 0, 5, "the silent")
    assert node.whep.statistics().timeouts_total == 1
    await node.run_client(vanishing.close)

    node.whep.connect_timeout = 1.0
    never = AiortcViewer()  # takes the answer and never applies it
    assert (await node.post_offer("/whep/cam", await node.run_client(never.offer))).status == 201
    assert node.whep.statistics().active_sessions == 1
    await node.wait_for(lambda: node.whep.statistics().active_sessions == 0, 3, "the timeout")
    assert node.whep.statistics().timeouts_total == 2
    await node.run_client(never.close)


async def test_viewers_are_ended_when_the_stream_ends(node: Node, clip: Path) -> None:
    short = clip.with_name("short.flv")
    if not short.exists():
        make_clip(short, seconds=2, size=f"{WIDTH}x{HEIGHT}", gop=30, audio=False)
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(short)]
    command += ["-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{node.rtmp_port}/live/brief"]
    process = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL)
    try:
        await node.wait_for(
            lambda: node.gateway.subscribe("brief", "source") is not None, 10, "brief"
        )
        viewer, _ = await play(node, "/whep/brief")
        await node.wait_for(lambda: bool(viewer.frames), 10, "frames")
        assert node.whep.statistics().active_sessions == 1
        await node.wait_for(
            lambda: node.whep.statistics().active_sessions == 0, 10, "the end of the stream"
        )
        await node.run_client(viewer.close)
        again = AiortcViewer()
        reply = await node.post_offer("/whep/brief", await node.run_client(again.offer))
        assert reply.status == 404  # an ended stream has no viewers' fan-out any more
        await node.run_client(again.close)
    finally:
        process.kill()
        await process.wait()


async def test_refusals_have_the_whep_status_codes(node: Node, publishing: Path) -> None:
    viewer = AiortcViewer()
    offer = await node.run_client(viewer.offer)
    assert (await node.post_offer("/whep/nobody", offer)).status == 404
    assert (await node.post_offer("/whep/cam/1080p", offer)).status == 404
    for token in ("wrong", None):
        reply = await node.post_offer("/whep/cam", offer, token=token)
        assert reply.status == 401 and reply.headers["www-authenticate"].startswith("Bearer")
    reply = await node.post_offer("/whep/cam", "this is not SDP\r\n")
    assert reply.status == 400 and b"bad SDP offer" in reply.body
    no_h264 = "\r\n".join(
        line
        for line in offer.replace("H264", "VP8").splitlines()
        if "packetization-mode" not in line
    )
    assert (await node.post_offer("/whep/cam", no_h264)).status == 415
    sending = offer.replace("a=recvonly", "a=sendonly")
    assert (await node.post_offer("/whep/cam", sending)).status == 400
    reply = await node.request(
        "POST", "/whep/cam", offer.encode(), {**AUTH, "Content-Type": "text/plain"}
    )
    assert reply.status == 415
    reply = await node.request("PATCH", "/whep/cam/source/any", b"", AUTH)
    assert reply.status == 405 and "DELETE" in reply.headers["allow"]
    reply = await node.request("DELETE", "/whep/cam/source/nope", headers=AUTH)
    assert reply.status == 404
    reply = await node.request(
        "OPTIONS", "/whep/cam", headers={"Access-Control-Request-Method": "POST"}
    )
    assert reply.status == 204 and reply.headers["access-control-allow-origin"] == "*"
    assert "Location" in reply.headers["access-control-expose-headers"]

    # The node's session limit (3 here): one more is 503, with no WebRTC work done.
    viewers = [(await play(node))[0] for _ in range(3)]
    assert (await node.post_offer("/whep/cam", offer)).status == 503
    await node.wait_for(lambda: all(v.frames for v in viewers), 10, "frames to all three")
    for each in [*viewers, viewer]:
        await node.run_client(each.close)
    await node.wait_for(lambda: node.whep.statistics().active_sessions == 0, 5, "closes")
    assert node.whep.statistics().sessions_total == 3


async def test_offers_that_race_get_exactly_max_sessions(node: Node, publishing: Path) -> None:
    viewer = AiortcViewer()
    offer = await node.run_client(viewer.offer)  # one offer, posted 12 times at once
    replies: list[Reply] = []

    async def post() -> None:
        replies.append(await node.post_offer("/whep/cam", offer))

    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(post)
    assert sorted(r.status for r in replies) == [201] * 3 + [503] * 9
    assert all(b"max_sessions=3" in r.body for r in replies if r.status == 503)
    stats = node.whep.statistics()
    assert (stats.active_sessions, stats.pending_sessions) == (3, 0)
    for reply in replies:
        if reply.status == 201:
            deleted = await node.request("DELETE", reply.headers["location"], headers=AUTH)
            assert deleted.status == 200
    stats = node.whep.statistics()
    assert (stats.active_sessions, stats.pending_sessions) == (0, 0)
    await node.run_client(viewer.close)
