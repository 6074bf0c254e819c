"""WHIP ingest end to end: a real aiortc publisher, real HTTP (hypercorn on loopback), the
real ``WhipIngest`` and the real segmenter; the sink is a recording ``PublishHandler``."""

from __future__ import annotations

import fractions
import io
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import av
import numpy as np
import pytest
import trio
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from starlette.applications import Starlette

from ingest.segmenter import SegmentCompleted, SegmentData, Segmenter
from ingest.whip import WhipIngest
from ingest.whip.bridge import AsyncioLoop, open_asyncio_loop
from lpstream.errors import StreamInUseError
from lpstream.http.whip import whip_routes
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from tests.asgi import Reply, loopback_request, serve_on_loopback

WIDTH, HEIGHT = 320, 240
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# --- the sink: a real PublishHandler that records what it is given -------------------------


@attrs.define(eq=False)
class RecordingPublisher:
    events: list[MediaEvent] = attrs.Factory(list)
    closed: trio.Event = attrs.Factory(trio.Event)
    updated: trio.Event = attrs.Factory(trio.Event)

    async def send(self, event: MediaEvent) -> None:
        self.events.append(event)
        self.updated.set()
        self.updated = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool], seconds: float) -> None:
        with trio.fail_after(seconds):
            while not predicate():
                await self.updated.wait()

    async def aclose(self) -> None:
        self.closed.set()

    def packets(self, kind: TrackKind) -> list[MediaPacket]:
        return [e for e in self.events if isinstance(e, MediaPacket) and e.kind is kind]

    def config(self, kind: TrackKind) -> CodecConfig:
        return next(e for e in self.events if isinstance(e, CodecConfig) and e.kind is kind)


@attrs.define
class RecordingHandler:
    publishers: dict[str, RecordingPublisher] = attrs.Factory(dict)

    async def start_publish(self, stream_name: str, **who: object) -> RecordingPublisher:
        live = self.publishers.get(stream_name)
        if live is not None and not live.closed.is_set():
            raise StreamInUseError(f"stream {stream_name!r} already has a publisher")
        publisher = self.publishers[stream_name] = RecordingPublisher()
        return publisher


# --- the publisher: aiortc sending generated H.264 (or VP8) and Opus ----------------------


class MovingGradient(VideoStreamTrack):
    """A moving colour gradient, 30 frames/s."""

    def __init__(self) -> None:
        super().__init__()
        x = np.arange(WIDTH, dtype=np.uint16)
        y = np.arange(HEIGHT, dtype=np.uint16)[:, None]
        self._base = np.stack(
            [(x + y) % 256 + 0 * y, (x * 2 + 0 * y) % 256, (y * 2 + 0 * x) % 256], axis=-1
        ).astype(np.uint8)
        self._n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        self._n += 1
        image = np.roll(self._base, self._n * 4, axis=1)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base
        return frame


class Tone(AudioStreamTrack):
    """A 440 Hz tone in 20 ms frames (48 kHz, stereo)."""

    _count = 0

    async def recv(self) -> av.AudioFrame:
        silent = await super().recv()  # paces the track in real time
        samples = 960
        t = (np.arange(samples) + self._count * samples) / 48_000
        self._count += 1
        wave = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(wave, 2)[None, :], layout="stereo")
        frame.sample_rate = 48_000
        frame.pts = int(silent.pts or 0) * 6  # 8 kHz clock of the base class to 48 kHz
        frame.time_base = fractions.Fraction(1, 48_000)
        return frame


class AiortcPublisher:
    """A non-trickle WHIP client, as OBS is: gather everything, post the offer, apply the
    answer. Its methods run on the client's own asyncio loop."""

    def __init__(self, *, video_codec: str | None = "video/H264", audio: bool = True) -> None:
        self._video_codec = video_codec
        self._audio = audio
        self.pc: RTCPeerConnection | None = None

    async def offer(self) -> str:
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video = pc.addTransceiver(MovingGradient(), direction="sendonly")
        capabilities = RTCRtpSender.getCapabilities("video")
        assert capabilities is not None
        if self._video_codec is not None:  # None: aiortc's own order, VP8 first
            wanted = self._video_codec.lower()
            video.setCodecPreferences(
                [c for c in capabilities.codecs if c.mimeType.lower() == wanted]
            )
        if self._audio:
            pc.addTransceiver(Tone(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        assert self.pc is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def go_silent(self) -> None:
        """Stops sending media but keeps the connection up, as a frozen encoder would."""
        assert self.pc is not None
        for sender in self.pc.getSenders():
            sender.replaceTrack(None)

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()


# --- HTTP plumbing ----------------------------------------------------------------------


@attrs.define
class Node:
    """A running WhipIngest behind hypercorn on loopback."""

    ingest: WhipIngest
    handler: RecordingHandler
    port: int
    client_loop: AsyncioLoop

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        return await loopback_request(self.port, method, path, body, headers)

    async def post_offer(self, stream: str, sdp: str, token: str | None = TOKEN) -> Reply:
        headers = {"Content-Type": "application/sdp"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.request("POST", f"/whip/{stream}", sdp.encode(), headers)

    async def run_client(self, fn: Callable[[], Any]) -> Any:
        return await self.client_loop.run(fn)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    handler = RecordingHandler()
    ingest = WhipIngest(
        handler=handler, token=TOKEN, keyframe_interval=0.5, host_addresses=("127.0.0.1",)
    )
    async with trio.open_nursery() as nursery, open_asyncio_loop("whip-client") as client:
        await nursery.start(ingest.run)
        port = await nursery.start(serve_on_loopback, Starlette(routes=whip_routes(ingest)))
        yield Node(ingest=ingest, handler=handler, port=port, client_loop=client)
        nursery.cancel_scope.cancel()


# --- helpers ------------------------------------------------------------------------------


def decode_video(config: CodecConfig, packets: list[MediaPacket]) -> list[av.VideoFrame]:
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = config.data
    frames: list[av.VideoFrame] = []
    for packet in packets:
        frames.extend(decoder.decode(av.Packet(packet.data)))
    frames.extend(decoder.decode(None))
    return frames


def segments_of(events: list[MediaEvent]) -> list[tuple[SegmentCompleted, bytes]]:
    segmenter = Segmenter(target_duration=1.0, stream_name="whip-test")
    data: dict[int, bytearray] = {}
    done: list[tuple[SegmentCompleted, bytes]] = []
    out = [e for event in events for e in segmenter.feed(event)] + segmenter.finish()
    for item in out:
        if isinstance(item, SegmentData):
            data.setdefault(item.seq, bytearray()).extend(item.data)
        elif isinstance(item, SegmentCompleted):
            done.append((item, bytes(data[item.seq])))
    return done


# --- tests --------------------------------------------------------------------------------


async def test_non_trickle_publish_delivers_h264_unchanged_and_aac(node: Node) -> None:
    client = AiortcPublisher()
    offer = await node.run_client(client.offer)
    assert "a=candidate" in offer  # gathered before posting: no trickle needed

    reply = await node.post_offer("cam", offer)
    assert reply.status == 201, reply.body
    assert reply.headers["content-type"] == "application/sdp"
    location = reply.headers["location"]
    assert location.startswith("/whip/cam/")
    assert reply.headers["etag"]
    answer = reply.body.decode()
    assert "a=candidate" in answer and "H264" in answer and "opus" in answer
    # Loopback only, both ways: the node offers what it was told to (host_addresses).
    for sdp in (offer, answer):
        hosts = {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate")}
        assert hosts == {"127.0.0.1"}, hosts

    await node.run_client(lambda: client.accept(answer))
    publisher = node.handler.publishers["cam"]

    def enough() -> bool:
        video = publisher.packets(TrackKind.VIDEO)
        keyframes = [p for p in video if p.keyframe]
        return (
            len(keyframes) >= 3
            and video[-1].dts - keyframes[0].dts >= 2500
            and len(publisher.packets(TrackKind.AUDIO)) >= 50
        )

    # aiortc's x264 sender makes a keyframe only every 250 frames unless asked, so three
    # keyframes within ~3 s show that the ingest's periodic PLIs (every 0.5 s here) work.
    await publisher.wait_for(enough, 20)

    reply = await node.request("DELETE", location)
    assert reply.status == 401  # the session resource is guarded by the same token
    assert not publisher.closed.is_set()
    reply = await node.request("DELETE", location, headers=AUTH)
    assert reply.status == 200
    assert publisher.closed.is_set()
    assert node.ingest.statistics().active_sessions == 0
    await node.run_client(client.close)

    # The H.264 arrived as AVCC access units behind an avcC record, and decodes at the size
    # the client sent: it was passed through, not re-encoded.
    video_config = publisher.config(TrackKind.VIDEO)
    assert video_config.codec == "h264" and video_config.data[0] == 1
    video = publisher.packets(TrackKind.VIDEO)
    assert video[0].keyframe
    assert all(b.dts > a.dts for a, b in itertools.pairwise(video))
    frames = decode_video(video_config, video)
    assert len(frames) >= len(video) - 2
    assert {(f.width, f.height) for f in frames} == {(WIDTH, HEIGHT)}

    audio_config = publisher.config(TrackKind.AUDIO)
    assert audio_config.codec == "aac" and len(audio_config.data) >= 2
    audio = publisher.packets(TrackKind.AUDIO)
    aac = av.CodecContext.create("aac", "r")
    aac.extradata = audio_config.data
    samples = sum(f.samples for p in audio for f in aac.decode(av.Packet(p.data)))
    assert samples >= 1024 * (len(audio) - 2)

    # The same events through the RTMP path's segmenter make MPEG-TS segments a player reads.
    segments = segments_of(publisher.events)
    assert len(segments) >= 2
    for completed, data in segments:
        assert completed.has_audio and not completed.forced
        with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
            assert container.streams.video[0].codec_context.name == "h264"
            assert container.streams.audio[0].codec_context.name == "aac"
            first = next(container.decode(video=0))
            assert (first.width, first.height) == (WIDTH, HEIGHT)


async def test_an_offer_in_aiortcs_default_codec_order_is_answered_with_h264_only(
    node: Node,
) -> None:
    client = AiortcPublisher(video_codec=None)
    offer = await node.run_client(client.offer)
    assert offer.index("VP8/90000") < offer.index("H264/90000")  # VP8 first, as browsers do
    reply = await node.post_offer("cam", offer)
    assert reply.status == 201, reply.body
    answer = reply.body.decode()
    video = answer[answer.index("m=video") :]
    video = video[: video.index("m=audio")] if "m=audio" in video else video
    codecs = {line.split()[1].split("/")[0] for line in video.splitlines() if "a=rtpmap:" in line}
    assert codecs == {"H264", "rtx"}, video
    audio = answer[answer.index("m=audio") :]
    assert {
        line.split()[1].split("/")[0] for line in audio.splitlines() if "a=rtpmap:" in line
    } == {"opus"}
    await node.run_client(lambda: client.accept(answer))
    publisher = node.handler.publishers["cam"]
    await publisher.wait_for(
        lambda: sum(p.keyframe for p in publisher.packets(TrackKind.VIDEO)) >= 1, 20
    )
    assert publisher.config(TrackKind.VIDEO).codec == "h264"
    await node.request("DELETE", reply.headers["location"], headers=AUTH)
    await node.run_client(client.close)


async def test_a_second_publish_of_a_live_stream_is_refused_with_409(node: Node) -> None:
    first = AiortcPublisher(audio=False)
    reply = await node.post_offer("busy", await node.run_client(first.offer))
    assert reply.status == 201
    second = AiortcPublisher(audio=False)
    reply = await node.post_offer("busy", await node.run_client(second.offer))
    assert reply.status == 409
    assert b"already has a publisher" in reply.body
    await node.run_client(first.close)
    await node.run_client(second.close)


async def test_wrong_or_missing_token_is_401_with_a_bearer_challenge(node: Node) -> None:
    client = AiortcPublisher()
    offer = await node.run_client(client.offer)
    for token in ("wrong", None):
        reply = await node.post_offer("cam", offer, token=token)
        assert reply.status == 401
        assert reply.headers["www-authenticate"].startswith("Bearer")
    assert node.handler.publishers == {}
    await node.run_client(client.close)


async def test_malformed_sdp_is_400(node: Node) -> None:
    reply = await node.post_offer("cam", "this is not SDP\r\n")
    assert reply.status == 400
    assert b"bad SDP offer" in reply.body
    assert node.handler.publishers == {}


async def test_a_vp8_only_offer_is_answered_with_vp8_and_its_frames_pass_through(
    node: Node,
) -> None:
    client = AiortcPublisher(video_codec="video/VP8")
    offer = await node.run_client(client.offer)
    assert "VP8" in offer and "H264" not in offer
    reply = await node.post_offer("cam", offer)
    assert reply.status == 201, reply.body
    answer = reply.body.decode()
    video = answer[answer.index("m=video") : answer.index("m=audio")]
    codecs = {line.split()[1].split("/")[0] for line in video.splitlines() if "a=rtpmap:" in line}
    assert codecs - {"rtx"} == {"VP8"}, video  # VP8 alone (with its RTX, if offered)
    await node.run_client(lambda: client.accept(answer))
    publisher = node.handler.publishers["cam"]
    await publisher.wait_for(
        lambda: sum(p.keyframe for p in publisher.packets(TrackKind.VIDEO)) >= 2, 20
    )
    await node.request("DELETE", reply.headers["location"], headers=AUTH)
    await node.run_client(client.close)

    # VP8 frames as the publisher encoded them (not re-encoded): libvpx decodes them at the
    # size it sent; the segmenter cuts them into Matroska, which carries VP8.
    assert publisher.config(TrackKind.VIDEO).codec == "vp8"
    video_packets = publisher.packets(TrackKind.VIDEO)
    assert video_packets[0].keyframe
    decoder = av.CodecContext.create("vp8", "r")
    frames = [f for p in video_packets for f in decoder.decode(av.Packet(p.data))]
    assert len(frames) >= len(video_packets) - 2
    assert {(f.width, f.height) for f in frames} == {(WIDTH, HEIGHT)}
    segments = segments_of(publisher.events)
    assert segments
    for _, data in segments:
        with av.open(io.BytesIO(data), mode="r", format="matroska") as container:
            assert container.streams.video[0].codec_context.name in {"vp8", "libvpx"}
            first = next(container.decode(video=0))
            assert (first.width, first.height) == (WIDTH, HEIGHT)


async def test_an_offer_of_a_codec_nothing_takes_is_415_and_says_why(node: Node) -> None:
    client = AiortcPublisher(video_codec="video/VP8")
    offer = (await node.run_client(client.offer)).replace("VP8/90000", "VP9/90000")
    reply = await node.post_offer("cam", offer)
    assert reply.status == 415
    assert b"no H.264 video" in reply.body and b"or VP8" in reply.body
    assert b"offered: VP9" in reply.body
    assert node.handler.publishers == {}
    await node.run_client(client.close)


async def test_an_offer_that_is_not_application_sdp_is_415(node: Node) -> None:
    reply = await node.request(
        "POST",
        "/whip/cam",
        b"v=0\r\n",
        headers={**AUTH, "Content-Type": "text/plain"},
    )
    assert reply.status == 415
    assert b"application/sdp" in reply.body


async def test_an_oversized_offer_is_413(node: Node) -> None:
    reply = await node.post_offer("cam", "v=0\r\n" + "a=x\r\n" * 20_000)
    assert reply.status == 413


async def test_delete_of_an_unknown_session_is_404(node: Node) -> None:
    reply = await node.request("DELETE", "/whip/cam/nope", headers=AUTH)
    assert reply.status == 404


async def test_patch_is_405_since_only_non_trickle_ice_is_supported(node: Node) -> None:
    reply = await node.request(
        "PATCH",
        "/whip/cam/any",
        b"a=end-of-candidates\r\n",
        headers={"Content-Type": "application/trickle-ice-sdpfrag"},
    )
    assert reply.status == 405
    assert "DELETE" in reply.headers["allow"]


async def test_cors_preflight_allows_a_browser_to_publish(node: Node) -> None:
    reply = await node.request(
        "OPTIONS",
        "/whip/cam",
        headers={"Origin": "https://studio.example", "Access-Control-Request-Method": "POST"},
    )
    assert reply.status == 204
    assert reply.headers["access-control-allow-origin"] == "*"
    assert "POST" in reply.headers["access-control-allow-methods"]
    assert "Authorization" in reply.headers["access-control-allow-headers"]


async def test_a_client_that_closes_without_delete_is_cleaned_up(node: Node) -> None:
    client = AiortcPublisher()
    reply = await node.post_offer("cam", await node.run_client(client.offer))
    assert reply.status == 201
    await node.run_client(lambda: client.accept(reply.body.decode()))
    publisher = node.handler.publishers["cam"]
    await publisher.wait_for(lambda: bool(publisher.packets(TrackKind.VIDEO)), 15)

    await node.run_client(client.close)  # gone, no DELETE

    with trio.fail_after(12):
        await publisher.closed.wait()
    assert node.ingest.statistics().active_sessions == 0


async def test_a_session_that_never_connects_is_dropped_after_the_connect_timeout(
    node: Node,
) -> None:
    node.ingest.connect_timeout = 1.0
    client = AiortcPublisher()
    reply = await node.post_offer("cam", await node.run_client(client.offer))
    assert reply.status == 201  # the client never applies the answer
    publisher = node.handler.publishers["cam"]
    with trio.fail_after(5):
        await publisher.closed.wait()
    stats = node.ingest.statistics()
    assert stats.active_sessions == 0 and stats.timeouts_total == 1
    reply = await node.request("DELETE", reply.headers["location"], headers=AUTH)
    assert reply.status == 404
    await node.run_client(client.close)


async def test_a_session_whose_media_stops_is_dropped_after_the_media_timeout(
    node: Node,
) -> None:
    node.ingest.media_timeout = 1.0
    client = AiortcPublisher()
    reply = await node.post_offer("cam", await node.run_client(client.offer))
    assert reply.status == 201
    await node.run_client(lambda: client.accept(reply.body.decode()))
    publisher = node.handler.publishers["cam"]
    await publisher.wait_for(lambda: bool(publisher.packets(TrackKind.VIDEO)), 15)

    await node.run_client(client.go_silent)  # connected, but no more media

    with trio.fail_after(5):
        await publisher.closed.wait()
    assert node.ingest.statistics().timeouts_total == 1
    await node.run_client(client.close)
