"""The asyncio side of one WHEP session: an aiortc ``RTCPeerConnection`` that only sends, video
and (when the stream has it) audio.

How this works:

* Everything here runs on the WHEP asyncio loop (see :mod:`.bridge`); nothing here knows trio.
  The trio side hands frames in with :meth:`WhepPeer.send` (through ``call_soon``) and gets
  :data:`WhepPeerItem` values back through ``on_item``, a thread-safe callback.
* Answer (non-trickle, as for WHIP): a send-only video transceiver carrying our track is added
  *before* the offer is applied, with H.264 as its only codec (and RTX), so aiortc's answer
  picks H.264 whatever the viewer listed first; ``setLocalDescription`` gathers every ICE
  candidate before it returns. When the trio side says the stream has audio for this viewer,
  a send-only audio transceiver with Opus as its only codec is added the same way, and the
  offer's audio section is answered ``sendonly`` (:attr:`WhepPeer.audio_active`); otherwise
  aiortc answers it ``inactive``. aiortc gives every sender of a connection the same stream
  id (``a=msid``), so the browser puts both tracks in one stream and keeps them in sync.
* No encoding: the track's ``recv()`` returns ``av.Packet``s, which aiortc's
  ``RTCRtpSender`` does not encode but packetizes (``H264Encoder.pack``: Annex B split into
  single NAL, STAP-A and FU-A packets), with the packet's time as RTP time. The track's queue
  is bounded: if the sender falls behind, the queue is emptied and the track waits for the
  next keyframe (counted in ``frames_dropped``). How long frames wait in it is kept, and
  summed up in ``sender_wait_ms`` when the peer is closed. Audio is the same: the audio
  track's ``recv()`` returns Opus ``av.Packet``s, which aiortc's ``OpusEncoder.pack`` sends
  as they are, with the packet's time (48 kHz ticks) as RTP time; its queue drops the oldest
  packet when full.
* Keyframe requests: aiortc's sender turns an RTCP PLI or FIR into a flag that only its encoder
  reads. The sender's ``_send_keyframe`` is replaced, on this instance, by one that passes a
  :class:`KeyframeRequested` to the trio side, which starts the viewer over at the current
  GOP. This reaches into one private method of aiortc 1.16; it is checked when a session is
  answered, so an aiortc that changed fails loudly, not silently.
* A viewer that goes away: one that closes sends a DTLS close (connection state ``closed``);
  ICE consent checks fail after about 30 s (``failed``); and when frames keep going out but
  no RTCP receiver report has come back for ``viewer_timeout`` seconds (watched through the
  sender's ``getStats``), :class:`ViewerSilent` is passed on. The trio side ends the session
  on each of them.
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - aiortc is asyncio-only; it is confined to ingest/whip
import collections
import fractions
import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import attrs
import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError

from lpstream.errors import RemoteProtocolError

from .rtc import (
    ConnectionStateChanged,
    PeerTasks,
    apply_offer,
    create_answer,
    open_peer_connection,
)

__all__ = ["KeyframeRequested", "ViewerSilent", "WhepPeer", "WhepPeerItem"]

log = logging.getLogger("lpstream.ingest.whep")

MILLISECONDS = fractions.Fraction(1, 1000)
OPUS_TICKS = fractions.Fraction(1, 48_000)
TRACK_QUEUE = 120
"""Frames the track holds for aiortc's sender (they are due already): 4 s at 30 frames/s."""
AUDIO_QUEUE = 100
"""Opus packets the audio track holds for aiortc's sender: 2 s."""


@attrs.frozen(kw_only=True)
class KeyframeRequested:
    """The viewer sent an RTCP PLI or FIR: it cannot decode until the next keyframe."""


@attrs.frozen(kw_only=True)
class ViewerSilent:
    """Frames went out, but no RTCP receiver report came back for ``seconds``."""

    seconds: float
    """How long the viewer has been silent."""


WhepPeerItem = ConnectionStateChanged | KeyframeRequested | ViewerSilent

Item = TypeVar("Item")


class _QueuedTrack(MediaStreamTrack, Generic[Item]):
    """A track fed encoded packets through a queue: ``recv()`` waits for the next one (aiortc's
    sender calls it), ``stop()`` wakes a waiting ``recv()`` to end it."""

    def __init__(self, max_queued: int) -> None:
        super().__init__()
        self._queue: collections.deque[Item] = collections.deque()
        self._ready = asyncio.Event()
        self._max_queued = max_queued

    async def _next(self) -> Item:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class _PacketTrack(_QueuedTrack[tuple[bytes, int, bool, float]]):
    """A video track whose ``recv()`` returns encoded H.264 (``av.Packet``), never frames."""

    kind = "video"

    def __init__(self, max_queued: int) -> None:
        super().__init__(max_queued)
        self._waiting_for_keyframe = False
        self.dropped = 0
        self.first_sent: float | None = None
        self.last_sent: float | None = None
        self.waits: collections.deque[float] = collections.deque(maxlen=300)
        """How long the last frames waited here for aiortc's sender (s, asyncio loop only)."""

    def put(self, data: bytes, timestamp_ms: int, keyframe: bool) -> None:
        if self._waiting_for_keyframe and not keyframe:
            self.dropped += 1
            return
        if len(self._queue) >= self._max_queued:
            self.dropped += len(self._queue)
            self._queue.clear()
            if not keyframe:
                self.dropped += 1
                self._waiting_for_keyframe = True
                return
        self._waiting_for_keyframe = False
        self._queue.append((data, timestamp_ms, keyframe, asyncio.get_running_loop().time()))
        self._ready.set()

    async def recv(self) -> av.Packet[Any]:
        data, timestamp_ms, _, put_at = await self._next()
        now = asyncio.get_running_loop().time()
        self.waits.append(now - put_at)
        if self.first_sent is None:
            self.first_sent = now
        self.last_sent = now
        packet = av.Packet(data)
        packet.pts = timestamp_ms
        packet.time_base = MILLISECONDS
        return packet


class _OpusTrack(_QueuedTrack[tuple[bytes, int]]):
    """An audio track whose ``recv()`` returns encoded Opus (``av.Packet``), never frames."""

    kind = "audio"

    def __init__(self, max_queued: int) -> None:
        super().__init__(max_queued)
        self.dropped = 0

    def put(self, data: bytes, timestamp: int) -> None:
        if len(self._queue) >= self._max_queued:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((data, timestamp))
        self._ready.set()

    async def recv(self) -> av.Packet[Any]:
        data, timestamp = await self._next()
        packet = av.Packet(data)
        packet.pts = timestamp
        packet.time_base = OPUS_TICKS
        return packet


def _preferences(kind: str, mime_types: tuple[str, ...]) -> list[Any]:
    capabilities = RTCRtpSender.getCapabilities(kind)
    codecs = [] if capabilities is None else capabilities.codecs
    return [c for c in codecs if c.mimeType.lower() in mime_types]


class WhepPeer:
    """One send-only peer connection (see the module comment). Use on the asyncio loop."""

    def __init__(
        self,
        *,
        on_item: Callable[[WhepPeerItem], None],
        ice_servers: Sequence[str] = (),
        viewer_timeout: float = 10.0,
        audio: bool = False,
    ) -> None:
        self._on_item = on_item
        self._audio = audio
        self._ice_servers = list(ice_servers)
        self._viewer_timeout = viewer_timeout
        self._pc: RTCPeerConnection | None = None
        self._track: _PacketTrack | None = None
        self._audio_track: _OpusTrack | None = None
        self._audio_transceiver: RTCRtpTransceiver | None = None
        self._sender: RTCRtpSender | None = None
        self._tasks = PeerTasks("WHEP peer", log)
        self.sender_wait_ms: tuple[float, float] | None = None
        """Median and largest wait of the last frames in the track's queue for aiortc's
        sender, in ms; set by :meth:`close`."""

    @property
    def frames_dropped(self) -> int:
        """Frames dropped because aiortc's sender fell behind (read from any thread)."""
        return 0 if self._track is None else self._track.dropped

    @property
    def audio_active(self) -> bool:
        """Whether the answer sends audio (the stream has it and the offer receives Opus)."""
        transceiver = self._audio_transceiver
        return transceiver is not None and transceiver.currentDirection == "sendonly"

    @property
    def audio_dropped(self) -> int:
        """Opus packets dropped because aiortc's sender fell behind (read from any thread)."""
        return 0 if self._audio_track is None else self._audio_track.dropped

    async def answer(self, offer_sdp: str) -> str:
        """Applies the offer and returns the answer, with all ICE candidates in it.

        Raises:
            lpstream.errors.RemoteProtocolError: 415 when the offer has no H.264 this node
                can send, 400 when aiortc cannot apply it.
        """
        pc = self._pc = open_peer_connection(self._ice_servers)
        pc.on("connectionstatechange", self._state_changed)
        track = self._track = _PacketTrack(TRACK_QUEUE)
        transceiver: RTCRtpTransceiver = pc.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(_preferences("video", ("video/h264", "video/rtx")))
        if self._audio:
            audio = self._audio_track = _OpusTrack(AUDIO_QUEUE)
            self._audio_transceiver = pc.addTransceiver(audio, direction="sendonly")
            self._audio_transceiver.setCodecPreferences(_preferences("audio", ("audio/opus",)))
        sender = self._sender = transceiver.sender
        if not callable(getattr(sender, "_send_keyframe", None)):
            raise RuntimeError(
                "aiortc's RTCRtpSender has no _send_keyframe to hook keyframe requests on; "
                "WHEP playback was written against aiortc 1.16"
            )
        setattr(sender, "_send_keyframe", self._keyframe_requested)  # noqa: B010 - see above
        await apply_offer(
            pc,
            offer_sdp,
            no_codec="no H.264 in the offer that this node can send",
            codecs_taken="it sends (constrained) baseline profile-level-ids with "
            "packetization-mode=1",
            log=log,
        )
        if transceiver.mid is None:
            raise RemoteProtocolError("the offer has no video section to send on", code=415)
        await pc.setLocalDescription(await create_answer(pc, log=log))
        self._tasks.start(self._watch_reports())
        return str(pc.localDescription.sdp)

    def send(self, data: bytes, timestamp_ms: int, keyframe: bool) -> None:
        """Queues one Annex B access unit for the sender (call on the asyncio loop)."""
        if self._track is not None and not self._tasks.closed:
            self._track.put(data, timestamp_ms, keyframe)

    def send_audio(self, data: bytes, timestamp: int) -> None:
        """Queues one Opus packet (RTP time ``timestamp``, 48 kHz) for the audio sender (call
        on the asyncio loop); dropped when the answer sends no audio."""
        if self._audio_track is not None and self.audio_active and not self._tasks.closed:
            self._audio_track.put(data, timestamp)

    async def close(self) -> None:
        """Closes the connection and stops every task of this peer."""
        await self._tasks.close()
        if self._audio_track is not None:
            self._audio_track.stop()
        if self._track is not None:
            self._track.stop()
            waits = sorted(self._track.waits)
            if waits:
                self.sender_wait_ms = (
                    round(waits[len(waits) // 2] * 1000, 1),
                    round(waits[-1] * 1000, 1),
                )
        if self._pc is not None:
            await self._pc.close()

    def _state_changed(self) -> None:
        if self._pc is not None:
            self._on_item(ConnectionStateChanged(state=self._pc.connectionState))

    def _keyframe_requested(self) -> None:
        self._on_item(KeyframeRequested())

    async def _watch_reports(self) -> None:
        loop = asyncio.get_running_loop()
        last_report: object = None
        heard_at = loop.time()
        while True:
            await asyncio.sleep(min(0.5, self._viewer_timeout / 4))
            track, sender = self._track, self._sender
            if track is None or sender is None or track.first_sent is None:
                continue
            stats = await sender.getStats()
            stamps = [s.timestamp for s in stats.values() if s.type == "remote-inbound-rtp"]
            newest = max(stamps, default=None)
            now = loop.time()
            if newest is not None and newest != last_report:
                last_report, heard_at = newest, now
            heard_at = max(heard_at, track.first_sent)
            last_sent = track.last_sent or 0.0
            if last_sent > heard_at and now - heard_at > self._viewer_timeout:
                self._on_item(ViewerSilent(seconds=round(now - heard_at, 1)))
                return
