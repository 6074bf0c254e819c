"""The asyncio side of one WHIP session: an aiortc ``RTCPeerConnection`` that only receives.

How this works:

* Everything here runs on the WHIP asyncio loop (see :mod:`.bridge`); nothing here knows trio.
  What the connection produces is handed to ``on_item``, a thread-safe callback the trio side
  supplies, as :data:`PeerItem` values.
* Non-trickle WHIP: :meth:`RtcPeer.answer` applies the offer, then ``setLocalDescription``,
  which in aiortc gathers every local ICE candidate before it returns, so the answer holds
  them all and the client needs no PATCH.
* H.264 is not decoded. aiortc's receiver reassembles each frame into an Annex B access unit
  and puts ``(codec, frame)`` on a queue read by its decoder thread; before the receiver
  starts, that queue is swapped for :class:`_EncodedFrameTap`, which hands the frames to us
  and passes only the end-of-stream marker on, so the decoder thread idles and then exits as
  usual. This reaches into one private attribute of aiortc's ``RTCRtpReceiver``; it is
  checked when a session starts so an aiortc that changed fails loudly, not silently.
* The answer offers only the one video codec this session takes: before the offer is applied,
  a receiving video transceiver that prefers that codec (H.264 with packetization-mode 1
  when the offer has it, else VP8; with its RTX) and an audio one that prefers Opus are made,
  so aiortc negotiates those alone. Without this aiortc answers every codec the offer and
  aiortc share in the offer's order — VP8 first for most WebRTC stacks — and the publisher
  sends VP8 even when it could send H.264, which passes through to WebRTC viewers and HLS.
* Opus is decoded by aiortc (``track.recv()``, the public API) and the PCM frames are passed on
  to be encoded as AAC.
* Keyframes: the segmenter cuts only at IDRs, so when no IDR has arrived for
  ``keyframe_interval`` seconds an RTCP PLI asks the sender for one (repeated at most every
  half interval until one comes); the trio side may ask for one at once with
  :meth:`RtcPeer.request_keyframe` (after a gap).
* Connection state changes are passed on; ``failed`` and ``closed`` end the session.
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - aiortc is asyncio-only; it is confined to ingest/whip
import logging
import queue
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from aiortc import MediaStreamTrack, RTCRtpCodecCapability, RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError

from lpstream.errors import RemoteProtocolError
from lpstream.media.h264 import NAL_IDR, nal_type, nal_units
from lpstream.media.vp8 import vp8_is_keyframe

from .aiortc_av1 import teach_aiortc_av1
from .rtc import (
    ConnectionStateChanged,
    PeerTasks,
    apply_offer,
    create_answer,
    open_peer_connection,
)

__all__ = ["AudioFrameReceived", "PeerItem", "RtcPeer", "VideoFrameReceived"]

log = logging.getLogger("lpstream.ingest.whip")

_TAPPED_QUEUE = "_RTCRtpReceiver__decoder_queue"
"""The private attribute of aiortc's ``RTCRtpReceiver`` that feeds its decoder thread."""


@attrs.frozen(kw_only=True)
class VideoFrameReceived:
    """One video frame, as received: an H.264 access unit (Annex B) or a VP8 frame."""

    data: bytes
    """NAL units behind start codes (H.264), or the frame (VP8)."""
    timestamp: int
    """RTP time (90 kHz) counted from the track's first frame."""
    codec: str = "h264"
    """``h264`` or ``vp8``."""


@attrs.frozen(kw_only=True, eq=False)
class AudioFrameReceived:
    """One decoded Opus frame."""

    frame: Any
    """A PyAV ``AudioFrame``: 48 kHz, ``pts`` in 1/48000 s from the track's first packet."""


PeerItem = VideoFrameReceived | AudioFrameReceived | ConnectionStateChanged


def _taken(kind: str, wanted: Callable[[RTCRtpCodecCapability], bool]) -> list[Any]:
    """aiortc's receive codecs of ``kind`` that ``wanted`` picks, with their RTX."""
    capabilities = RTCRtpReceiver.getCapabilities(kind)
    assert capabilities is not None
    codecs = capabilities.codecs
    return [c for c in codecs if wanted(c)] + [
        c for c in codecs if c.mimeType.lower() == f"{kind}/rtx"
    ]


class _EncodedFrameTap(queue.Queue[Any]):
    """Stands in for an ``RTCRtpReceiver``'s decoder queue: frames go to us, not the decoder."""

    def __init__(self, on_frame: Callable[[Any, Any], None]) -> None:
        super().__init__()
        self._on_frame = on_frame

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:  # end of stream: let the decoder thread exit
            super().put(item, block, timeout)
            return
        codec, frame = item
        self._on_frame(codec, frame)


_CODECS = {"video/h264": "h264", "video/vp8": "vp8", "video/av1": "av1"}
"""The video codecs a session may take (aiortc's MIME types), by our names."""


def _is_keyframe(codec: str, data: bytes) -> bool:
    if codec == "vp8":
        return vp8_is_keyframe(data)
    if codec == "av1":  # the first payload's aggregation header: N, a new coded sequence
        return len(data) > 2 and bool(data[2] & 0x08)
    return any(nal_type(unit) == NAL_IDR for unit in nal_units(data))


def _takes(codec: str) -> Callable[[RTCRtpCodecCapability], bool]:
    """Which of aiortc's receive codecs a session taking ``codec`` offers."""
    if codec in ("vp8", "av1"):
        return lambda c: c.mimeType.lower() == f"video/{codec}"
    return lambda c: (
        c.mimeType.lower() == "video/h264" and str(c.parameters.get("packetization-mode")) == "1"
    )


class RtcPeer:
    """One receive-only peer connection (see the module comment). Use on the asyncio loop."""

    def __init__(
        self,
        *,
        on_item: Callable[[PeerItem], None],
        ice_servers: Sequence[str] = (),
        keyframe_interval: float = 2.0,
        audio: bool = True,
        video_codec: str = "h264",
    ) -> None:
        self._on_item = on_item
        self._video_codec = video_codec
        if video_codec == "av1":
            teach_aiortc_av1()
        self._audio = audio
        self._keyframe_interval = keyframe_interval
        self._pc = open_peer_connection(ice_servers)
        self._pc.on("connectionstatechange", self._state_changed)
        self._video: RTCRtpReceiver | None = None
        self._tasks = PeerTasks("WHIP peer", log)
        self._last_keyframe = 0.0
        self._last_request = 0.0

    async def answer(self, offer_sdp: str) -> str:
        """Applies the offer and returns the answer, with all ICE candidates in it.

        Raises:
            lpstream.errors.RemoteProtocolError: 415 when no codec in the offer can be
                received, 400 when aiortc cannot apply it.
        """
        self._pc.addTransceiver("video", direction="recvonly").setCodecPreferences(
            _taken("video", _takes(self._video_codec))
        )
        if self._audio:
            self._pc.addTransceiver("audio", direction="recvonly").setCodecPreferences(
                _taken("audio", lambda c: c.mimeType.lower() == "audio/opus")
            )
        await apply_offer(
            self._pc,
            offer_sdp,
            no_codec="no codec in the offer can be received",
            codecs_taken="this node takes H.264 with packetization-mode=1 or VP8, and Opus",
            log=log,
        )
        # setRemoteDescription created the receivers; none has started (that waits for ICE
        # and DTLS), so the decoder queue can still be swapped.
        for transceiver in self._pc.getTransceivers():
            receiver = transceiver.receiver
            if transceiver.kind == "video" and self._video is None:
                if not isinstance(getattr(receiver, _TAPPED_QUEUE, None), queue.Queue):
                    raise RuntimeError(
                        "aiortc's RTCRtpReceiver has no decoder queue to tap; "
                        "WHIP ingest was written against aiortc 1.16"
                    )
                self._video = receiver
                setattr(receiver, _TAPPED_QUEUE, _EncodedFrameTap(self._video_frame))
            elif transceiver.kind == "audio" and receiver.track is not None:
                self._tasks.start(self._read_audio(receiver.track))
        if self._video is None:
            raise RemoteProtocolError("the offer has no video to receive", code=415)
        loop = asyncio.get_running_loop()
        self._last_keyframe = self._last_request = loop.time()
        await self._pc.setLocalDescription(await create_answer(self._pc, log=log))
        self._tasks.start(self._request_keyframes())
        return str(self._pc.localDescription.sdp)

    def request_keyframe(self) -> None:
        """Sends a PLI now (call on the asyncio loop)."""
        self._tasks.start(self._send_pli())

    async def close(self) -> None:
        """Closes the connection and stops every task of this peer."""
        await self._tasks.close()
        await self._pc.close()

    def _state_changed(self) -> None:
        self._on_item(ConnectionStateChanged(state=self._pc.connectionState))

    def _video_frame(self, codec: Any, frame: Any) -> None:
        name = _CODECS.get(str(codec.mimeType).lower())
        if name is None:
            return
        data = bytes(frame.data)
        if _is_keyframe(name, data):
            self._last_keyframe = asyncio.get_running_loop().time()
        self._on_item(VideoFrameReceived(data=data, timestamp=int(frame.timestamp), codec=name))

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._on_item(AudioFrameReceived(frame=frame))

    async def _request_keyframes(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._keyframe_interval
        while True:
            await asyncio.sleep(min(0.25, interval / 4))
            now = loop.time()
            if now - self._last_keyframe >= interval and now - self._last_request >= interval / 2:
                await self._send_pli()

    async def _send_pli(self) -> None:
        receiver = self._video
        if receiver is None or self._pc.connectionState != "connected":
            return
        self._last_request = asyncio.get_running_loop().time()
        for source in receiver.getSynchronizationSources():
            await receiver._send_rtcp_pli(source.source)
