"""A real gateway with WHEP in one process, and aiortc viewers that record what reaches them.

The node: ``Gateway`` (RTMP server, segmenter, fan-outs), ``WhepPlayback`` behind hypercorn
on loopback; ffmpeg publishes to it over RTMP. Its transcoder is a passthrough (a real
``SegmentTranscoder`` that hands the source segment back as the ``copy`` rendition), so the
rendition path (MPEG-TS demux, bursty segments) is exercised without an encoder on the
two-core test machines.

The viewer: aiortc receiving H.264 (and Opus), its encoded frames tapped before decoding,
with their RTP times as sent, and every RTCP sender report kept, so a test can put both
tracks on the sender's clock as a browser does for lip sync.
"""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import av
import trio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.rtp import RtcpSrPacket
from starlette.applications import Starlette

from ingest.rtmp import RtmpServer
from ingest.whip import WhepPlayback
from ingest.whip.bridge import AsyncioLoop, open_asyncio_loop
from lpstream.gateway.gateway import Gateway
from lpstream.gateway.stream import RenditionSegment, SegmentJob
from lpstream.http.whep import whep_routes
from lpstream.jobs import Relay
from lpstream.media import VideoProfile
from lpstream.media.h264 import nal_units
from lpstream.metrics import Metrics
from lpstream.trickle import SegmentBuffer
from tests.asgi import Reply, loopback_request, serve_on_loopback

__all__ = [
    "AUTH",
    "HEIGHT",
    "TOKEN",
    "WIDTH",
    "AiortcViewer",
    "Node",
    "PassthroughTranscoder",
    "Reply",
    "decode",
    "open_whep_node",
    "play",
]

TOKEN = "v13w"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WIDTH, HEIGHT = 320, 240
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_TIMESTAMP_MAPPER = "_RTCRtpReceiver__timestamp_mapper"


@attrs.define
class PassthroughTranscoder:
    """Returns the source segment itself as the ``copy`` rendition."""

    async def transcode(
        self, job: SegmentJob, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[RenditionSegment]:
        await source.wait_closed()
        data = source.getvalue()
        return [
            RenditionSegment(name=p.name, width=WIDTH, height=HEIGHT, pixels=0, data=data)
            for p in job.profiles
        ]


@attrs.define
class Node:
    gateway: Gateway
    whep: WhepPlayback
    http_port: int
    rtmp_port: int
    client_loop: AsyncioLoop

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        return await loopback_request(self.http_port, method, path, body, headers)

    async def post_offer(self, path: str, sdp: str, token: str | None = TOKEN) -> Reply:
        headers = {"Content-Type": "application/sdp"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.request("POST", path, sdp.encode(), headers)

    async def run_client(self, fn: Callable[[], Any]) -> Any:
        return await self.client_loop.run(fn)

    async def wait_for(self, predicate: Callable[[], bool], seconds: float, what: str) -> None:
        """Polls ``predicate`` (it reads state that another thread changes)."""
        deadline = trio.current_time() + seconds
        while trio.current_time() < deadline:
            if predicate():
                return
            await trio.sleep(0.05)
        raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@asynccontextmanager
async def open_whep_node(segment_target: float = 1.0) -> AsyncIterator[Node]:
    """The node, running until the block ends (a ``copy`` rendition, 3 viewers at most)."""
    gateway = Gateway(
        transcoder=PassthroughTranscoder(),
        profiles=(VideoProfile(name="copy", width=WIDTH, height=HEIGHT, bitrate=300_000),),
        metrics=Metrics(),
        segment_target=segment_target,
    )
    whep = WhepPlayback(
        source=gateway,
        token=TOKEN,
        host_addresses=("127.0.0.1",),
        viewer_timeout=1.5,
        max_sessions=3,
    )
    async with trio.open_nursery() as nursery, open_asyncio_loop("whep-client") as client:
        await nursery.start(gateway.run)
        _, rtmp_port = await nursery.start(RtmpServer(handler=gateway).serve, "127.0.0.1", 0)
        await nursery.start(whep.run)
        http_port = await nursery.start(serve_on_loopback, Starlette(routes=whep_routes(whep)))
        yield Node(
            gateway=gateway,
            whep=whep,
            http_port=http_port,
            rtmp_port=rtmp_port,
            client_loop=client,
        )
        nursery.cancel_scope.cancel()


class _Tap(queue.Queue[Any]):
    """Stands in for a receiver's decoder queue: keeps the encoded frames (RTP time, bytes),
    decodes none."""

    def __init__(self, frames: list[tuple[int, bytes]]) -> None:
        super().__init__()
        self._frames = frames

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(item, block, timeout)
        else:
            self._frames.append((item[1].timestamp, bytes(item[1].data)))


class _SentTimes:
    """Leaves RTP times as the sender stamped them (aiortc counts them from the first)."""

    def map(self, timestamp: int) -> int:
        return timestamp


def _tap(receiver: RTCRtpReceiver, frames: list[tuple[int, bytes]]) -> None:
    assert isinstance(getattr(receiver, _DECODER_QUEUE), queue.Queue)
    setattr(receiver, _DECODER_QUEUE, _Tap(frames))
    assert callable(getattr(getattr(receiver, _TIMESTAMP_MAPPER), "map", None))
    setattr(receiver, _TIMESTAMP_MAPPER, _SentTimes())


def _keep_sender_reports(receiver: RTCRtpReceiver, reports: list[tuple[int, int]]) -> None:
    handle = receiver._handle_rtcp_packet

    async def handle_rtcp(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            reports.append((info.ntp_timestamp, info.rtp_timestamp))
        await handle(packet)

    setattr(receiver, "_handle_rtcp_packet", handle_rtcp)  # noqa: B010 - an instance tap


class AiortcViewer:
    """A non-trickle WHEP client; its methods run on the client's asyncio loop."""

    def __init__(self, *, audio: bool = True) -> None:
        self.pc: RTCPeerConnection | None = None
        self._audio = audio
        self.video: list[tuple[int, bytes]] = []
        """Access units (RTP time, Annex B) as they came."""
        self.audio: list[tuple[int, bytes]] = []
        """Opus packets (RTP time, bytes) as they came."""
        self.video_reports: list[tuple[int, int]] = []
        """RTCP sender reports of the video: (NTP time, RTP time)."""
        self.audio_reports: list[tuple[int, int]] = []
        """Those of the audio."""

    @property
    def frames(self) -> list[bytes]:
        return [data for _, data in self.video]

    async def offer(self) -> str:
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video = pc.addTransceiver("video", direction="recvonly")
        _tap(video.receiver, self.video)
        _keep_sender_reports(video.receiver, self.video_reports)
        if self._audio:
            audio = pc.addTransceiver("audio", direction="recvonly")
            _tap(audio.receiver, self.audio)
            _keep_sender_reports(audio.receiver, self.audio_reports)
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        assert self.pc is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def request_keyframe(self) -> None:
        assert self.pc is not None
        receiver = self.pc.getTransceivers()[0].receiver
        for source in receiver.getSynchronizationSources():
            await receiver._send_rtcp_pli(source.source)

    async def vanish(self) -> None:
        """Goes away without a word: the ICE transport stops, no DTLS close is sent."""
        assert self.pc is not None
        await self.pc.getTransceivers()[0].receiver.transport.transport.stop()

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()

    def idrs(self) -> list[bytes]:
        return [u for f in self.frames for u in nal_units(f) if u[0] & 0x1F == 5]

    def keyframes(self) -> int:
        return len(self.idrs())


async def play(
    node: Node, path: str = "/whep/cam", *, audio: bool = True
) -> tuple[AiortcViewer, Reply]:
    viewer = AiortcViewer(audio=audio)
    reply = await node.post_offer(path, await node.run_client(viewer.offer))
    assert reply.status == 201, reply.body
    await node.run_client(lambda: viewer.accept(reply.body.decode()))
    return viewer, reply


def decode(frames: list[bytes]) -> list[av.VideoFrame]:
    decoder = av.CodecContext.create("h264", "r")
    out: list[av.VideoFrame] = []
    for data in frames:
        out.extend(decoder.decode(av.Packet(data)))
    out.extend(decoder.decode(None))
    return out
