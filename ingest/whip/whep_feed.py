"""What WHEP sessions play from, and the figures they keep.

The gateway is a :class:`PlaybackSource`: it finds a live stream's rendition and subscribes a
viewer to its video (:class:`PlaybackSubscription`) and, when the stream has sound, to its
Opus (:class:`PlaybackAudio`). ``ingest`` may not import the node, so these are protocols;
``lpstream.playback.live_packets`` implements them.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from lpstream.media import MediaEvent, MediaPacket

from .playout import SendDelayStatistics

__all__ = [
    "PlaybackAudio",
    "PlaybackSource",
    "PlaybackSubscription",
    "WhepAnswer",
    "WhepSessionStatistics",
    "WhepStatistics",
]


class PlaybackAudio(Protocol):
    """One viewer's feed of a stream's sound (the gateway's ``AudioSubscription``)."""

    async def receive(self) -> MediaPacket:
        """The next Opus packet (20 ms, times in ms on the stream's timeline); raises
        ``trio.EndOfChannel`` when the stream has ended."""
        ...

    @property
    def dropped(self) -> int:
        """Packets lost because this viewer was too slow."""
        ...

    @property
    def arrived_at(self) -> float | None:
        """When, on trio's clock, the packet last received was made (could be sent)."""
        ...

    def close(self) -> None:
        """Stops listening."""
        ...


class PlaybackSubscription(Protocol):
    """One viewer's feed of one rendition (the gateway's ``PacketSubscription``)."""

    async def receive(self) -> MediaEvent:
        """The next ``CodecConfig`` or video ``MediaPacket`` (AVCC, times in ms), in decode
        order; raises ``trio.EndOfChannel`` when the stream has ended."""
        ...

    def due(self, packet: MediaPacket) -> float:
        """When, on trio's clock, ``packet`` plays live."""
        ...

    @property
    def arrived_at(self) -> float | None:
        """When, on trio's clock, the event last received reached the node."""
        ...

    def restart_at_keyframe(self) -> None:
        """Starts over at the current GOP's keyframe (or at the next keyframe)."""
        ...

    async def wait_source_started(self) -> None:
        """Returns once the stream's source has sent media (its tracks are known)."""
        ...

    def subscribe_audio(self) -> PlaybackAudio | None:
        """The stream's sound as Opus, or None when it has none."""
        ...

    @property
    def dropped(self) -> int:
        """Packets lost because this viewer was too slow."""
        ...

    def close(self) -> None:
        """Leaves the stream."""
        ...


class PlaybackSource(Protocol):
    """Where sessions find live streams (the gateway)."""

    def subscribe(self, stream: str, rendition: str) -> PlaybackSubscription | None:
        """A subscription, or None when the stream is not live or has no such rendition."""
        ...


@attrs.frozen(kw_only=True)
class WhepAnswer:
    """The answer to an accepted offer."""

    session_id: str
    """Names the session's resource (``/whep/{stream}/{rendition}/{session_id}``)."""
    sdp: str
    """The SDP answer, with every ICE candidate in it."""
    etag: str
    """An entity tag for the session's ICE state."""


@attrs.frozen(kw_only=True)
class WhepSessionStatistics:
    """One viewer's figures."""

    session_id: str
    """The session."""
    stream: str
    """The stream watched."""
    rendition: str
    """Its rendition."""
    send_delay: SendDelayStatistics
    """How long frames stayed in this node, from arrival to the viewer's WebRTC sender."""
    audio: bool = False
    """Whether the viewer gets the stream's sound."""
    audio_lag_ms: float | None = None
    """How long past due its sound, and its picture with it, goes out so that both leave
    together (the audio's recent lateness; see ``AudioPlayout.lag``)."""


@attrs.frozen(kw_only=True)
class WhepStatistics:
    """A snapshot of a :class:`WhepPlayback`'s counters."""

    active_sessions: int
    """Viewers now."""
    sessions_total: int
    """Sessions answered since start."""
    frames_sent_total: int
    """Access units handed to the WebRTC senders."""
    bytes_sent_total: int
    """Their bytes (H.264, before RTP)."""
    frames_dropped_total: int
    """Frames viewers lost because they were too slow (queue or sender)."""
    keyframe_requests_total: int
    """PLI/FIR requests that started a viewer over at a keyframe."""
    timeouts_total: int
    """Sessions ended because the viewer never connected or went silent."""
    audio_packets_sent_total: int = 0
    """Opus packets handed to the WebRTC senders."""
    audio_bytes_sent_total: int = 0
    """Their bytes (Opus, before RTP)."""
    audio_packets_dropped_total: int = 0
    """Opus packets viewers lost: too slow (queue or sender) or too late to play."""
    pending_sessions: int = 0
    """Offers accepted and being answered; they count against ``max_sessions``."""
    sessions: tuple[WhepSessionStatistics, ...] = ()
    """Each viewer now."""
