"""A live stream's audio for WebRTC viewers: its AAC encoded to Opus once, shared by them all.

How this works:

* WebRTC carries Opus, RTMP (and WHIP, after its own transcode) brings AAC: each packet goes
  through :class:`~.opus_transcode.AacToOpus` (its times stay on the stream's timeline, 20 ms
  apart), in a worker thread, never on the trio thread.
* :class:`OpusAudio` is the stream's one encoder and its fan-out, on trio. The stream hands
  it every source event (:meth:`OpusAudio.feed`, synchronous, never blocks). While nobody
  listens it keeps only the AAC configuration and drops the packets; the first
  :meth:`OpusAudio.subscribe` starts the encoder, and when the last subscription closes it
  is dropped (its state with it) and packets are dropped again. :meth:`OpusAudio.run` takes
  the AAC packets queued since its last pass (at most :data:`PENDING_PACKETS`; more are
  dropped and counted), encodes them in one worker-thread call and hands each subscription
  the Opus packets. Each subscription has its own bounded queue: a listener that falls
  behind loses its oldest packets, never another's.
* A packet the decoder refuses (bad bytes from the publisher) costs that packet; an encoder
  that cannot be opened ends the audio for the stream (logged once), never the stream.
"""

from __future__ import annotations

import collections
import logging

import attrs
import trio

from lpstream.errors import MediaError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from lpstream.playback.opus_transcode import AacToOpus, AudioUnavailable

__all__ = [
    "PENDING_PACKETS",
    "SUBSCRIBER_PACKETS",
    "AudioStatistics",
    "AudioSubscription",
    "OpusAudio",
]

log = logging.getLogger("lpstream.playback")

PENDING_PACKETS = 100
"""AAC packets waiting for the encoder (about 2 s); more are dropped."""
SUBSCRIBER_PACKETS = 1500
"""Opus packets one subscription may hold (30 s: a rendition plays seconds behind the
source, and its viewers' audio waits for it)."""


@attrs.frozen(kw_only=True)
class AudioStatistics:
    """A snapshot of an :class:`OpusAudio`'s counters."""

    has_audio: bool
    """Whether the stream has audio that can be encoded (its AAC configuration came)."""
    listeners: int
    """Subscriptions now."""
    encoder_running: bool
    """Whether the Opus encoder is open (someone listens and AAC has come)."""
    encoders_started: int
    """How many times the encoder was started (once per stretch with listeners)."""
    aac_packets_in: int
    """AAC packets taken for encoding."""
    opus_packets_out: int
    """Opus packets made (each one goes to every listener)."""
    dropped_packets: int
    """AAC packets dropped because the encoder fell behind, and Opus packets listeners lost
    because they fell behind."""
    failed_packets: int
    """AAC packets the decoder or encoder refused."""


@attrs.define(eq=False)
class AudioSubscription:
    """One listener's Opus packets; made by :meth:`OpusAudio.subscribe`."""

    _owner: OpusAudio
    _queue: collections.deque[tuple[MediaPacket, float]] = attrs.Factory(collections.deque)
    _dropped: int = 0
    _ended: bool = False
    _published_at: float | None = None

    @property
    def dropped(self) -> int:
        """Packets this listener lost because it fell behind."""
        return self._dropped

    @property
    def arrived_at(self) -> float | None:
        """When (``trio.current_time()``) the packet last received was made: from then on it
        could be sent."""
        return self._published_at

    def receive_nowait(self) -> MediaPacket | None:
        """The next Opus packet, or None when none is queued."""
        if not self._queue:
            return None
        packet, self._published_at = self._queue.popleft()
        return packet

    async def receive(self) -> MediaPacket:
        """The next Opus packet (times in ms on the stream's timeline); waits for one.

        Raises:
            trio.EndOfChannel: the stream ended (or the subscription was closed).
        """
        while True:
            packet = self.receive_nowait()
            if packet is not None:
                return packet
            if self._ended:
                raise trio.EndOfChannel
            await self._owner._published.wait()

    def close(self) -> None:
        """Stops listening; ``receive`` then ends. The last to close stops the encoder."""
        self._owner._unsubscribe(self)

    def _push(self, packet: MediaPacket, now: float) -> None:
        if len(self._queue) >= self._owner.subscriber_packets:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append((packet, now))


@attrs.define
class OpusAudio:
    """One stream's audio, Opus-encoded once for every listener (see the module comment)."""

    bit_rate: int = 64_000
    """Opus bit rate in bit/s."""
    subscriber_packets: int = SUBSCRIBER_PACKETS
    """Opus packets one subscription may hold."""
    _config: CodecConfig | None = attrs.field(default=None, init=False)
    _broken: bool = attrs.field(default=False, init=False)
    _pending: collections.deque[tuple[MediaPacket, CodecConfig]] = attrs.field(
        factory=collections.deque, init=False
    )
    _subscribers: list[AudioSubscription] = attrs.field(factory=list, init=False)
    _wake: trio.Event = attrs.field(factory=trio.Event, init=False)
    _published: trio.Event = attrs.field(factory=trio.Event, init=False)
    _ended: bool = attrs.field(default=False, init=False)
    _encoder: AacToOpus | None = attrs.field(default=None, init=False)
    _started: int = attrs.field(default=0, init=False)
    _packets_in: int = attrs.field(default=0, init=False)
    _packets_out: int = attrs.field(default=0, init=False)
    _dropped: int = attrs.field(default=0, init=False)
    _dropped_gone: int = attrs.field(default=0, init=False)
    _failed: int = attrs.field(default=0, init=False)
    _last_failure: str = attrs.field(default="", init=False)

    @property
    def has_audio(self) -> bool:
        """Whether the stream has audio that can be encoded (an AAC configuration came)."""
        return self._config is not None and not self._broken

    def statistics(self) -> AudioStatistics:
        """The counters now."""
        return AudioStatistics(
            has_audio=self.has_audio,
            listeners=len(self._subscribers),
            encoder_running=self._encoder is not None,
            encoders_started=self._started,
            aac_packets_in=self._packets_in,
            opus_packets_out=self._packets_out,
            dropped_packets=self._dropped
            + self._dropped_gone
            + sum(s.dropped for s in self._subscribers),
            failed_packets=self._failed,
        )

    def feed(self, event: MediaEvent) -> None:
        """Takes one of the source's events (video and metadata are ignored)."""
        if self._ended:
            return
        if isinstance(event, CodecConfig) and event.kind is TrackKind.AUDIO:
            if event.codec == "aac" and event != self._config:
                self._config, self._broken = event, False
            return
        if not isinstance(event, MediaPacket) or event.kind is not TrackKind.AUDIO:
            return
        if not self._subscribers or self._config is None or self._broken:
            return
        if len(self._pending) >= PENDING_PACKETS:
            self._pending.popleft()
            self._dropped += 1
        self._pending.append((event, self._config))
        self._wake.set()

    def subscribe(self) -> AudioSubscription | None:
        """A new listener, or None when the stream has no audio (or it has ended)."""
        if self._ended or not self.has_audio:
            return None
        subscription = AudioSubscription(owner=self)
        self._subscribers.append(subscription)
        return subscription

    def end(self) -> None:
        """No more audio: every listener ends once it has taken what is queued."""
        self._ended = True
        self._pending.clear()
        for subscriber in self._subscribers:
            subscriber._ended = True
        self._wake.set()
        self._notify()

    async def run(self) -> None:
        """Encodes what is fed while anyone listens, until :meth:`end`."""
        limiter = trio.CapacityLimiter(1)
        while not self._ended:
            if not self._pending:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            batch = list(self._pending)
            self._pending.clear()
            encoder = self._encoder
            if encoder is None:
                encoder = self._encoder = AacToOpus(bit_rate=self.bit_rate)
                self._started += 1
                log.debug("Opus encoder started (%d listeners)", len(self._subscribers))
            self._packets_in += len(batch)
            try:
                out, failures = await trio.to_thread.run_sync(
                    _encode_batch, encoder, batch, limiter=limiter
                )
            except Exception:
                # A bug here must cost the WebRTC listeners their audio, not the stream.
                log.exception("encoding the stream's audio to Opus failed")
                self._broken, self._encoder = True, None
                continue
            self._note_failures(failures)
            if self._encoder is not encoder or self._ended:
                continue  # the last listener left (or the stream ended) meanwhile
            self._packets_out += len(out)
            made = trio.current_time()
            for packet in out:
                for subscriber in self._subscribers:
                    subscriber._push(packet, made)
            if out:
                self._notify()

    def _note_failures(self, failures: list[MediaError]) -> None:
        self._failed += len(failures)
        for failure in failures:
            if isinstance(failure, AudioUnavailable):
                log.warning("WHEP audio: %s; the stream's viewers get no sound", failure)
                self._broken, self._encoder = True, None
                self._pending.clear()
                return
        if failures and str(failures[-1]) != self._last_failure:
            # One line per kind of failure, not one per packet of a publisher that sends junk.
            self._last_failure = str(failures[-1])
            log.warning("WHEP audio: %s (%d packets so far)", self._last_failure, self._failed)

    def _notify(self) -> None:
        self._published.set()
        self._published = trio.Event()

    def _unsubscribe(self, subscription: AudioSubscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
            self._dropped_gone += subscription.dropped
        subscription._queue.clear()
        subscription._ended = True
        if not self._subscribers:
            self._encoder = None  # stopped: its state goes, and packets are dropped again
            self._pending.clear()
        self._notify()


def _encode_batch(
    encoder: AacToOpus, batch: list[tuple[MediaPacket, CodecConfig]]
) -> tuple[list[MediaPacket], list[MediaError]]:
    """Encodes ``batch`` (in a worker thread): the Opus packets, and the errors of the
    packets refused (it stops at the first :class:`AudioUnavailable`)."""
    out: list[MediaPacket] = []
    failures: list[MediaError] = []
    for packet, config in batch:
        try:
            encoder.configure(config)
            out += encoder.encode(packet)
        except AudioUnavailable as exc:
            failures.append(exc)
            break
        except MediaError as exc:
            failures.append(exc)
    return out, failures
