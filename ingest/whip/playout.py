"""One WHEP viewer's media: AVCC packets in, paced Annex B access units out; Opus packets in,
paced Opus packets on an RTP timeline out (sans-IO).

How this works:

* In: one rendition's events in decode order, ``CodecConfig`` (avcC) and AVCC
  ``MediaPacket``s, each packet with ``due`` (when it plays live, on the driver's clock) and
  ``now``. Out: an :class:`OutgoingFrame` per packet, or None for a packet that cannot be
  sent yet (nothing goes out before a keyframe with its SPS and PPS).
* Each access unit becomes Annex B (start codes, what aiortc's H.264 packetizer splits), with
  the config's SPS and PPS put in front of every keyframe that does not carry them in-band:
  a WebRTC decoder starts, or starts over, at any keyframe. The H.264 itself is never
  touched, let alone re-encoded.
* Timing: the viewer has its own timeline, starting at 0. A packet that is on time (or early)
  is sent when it is due and moves the timeline on by its decode-time step, so the viewer's
  clock runs with the source's. A packet that is late by more than ``late`` seconds (the GOP a
  new viewer starts with, the GOP replayed after a keyframe request, a viewer that fell
  behind) is sent ``catch_up_step`` seconds after the one before, and its timestamp moves on
  by the same step: the viewer's decoder fast-forwards to live, evenly, without a burst that
  its jitter buffer would read as delay. The composition offset (``pts - dts``) is kept, so
  B-frames keep their order (WebRTC players may still stutter on them; publish without).
* The timeline never strays more than ``timeline_slack`` from real time (the send times,
  from the first frame on); a step that would take it further is cut or stretched to the
  bound. The browser maps RTP time to its own clock with a slowly adapting estimate and sizes
  its jitter buffer on how far frames arrive from it, so a source whose timestamps run slower
  or faster than the frames really come (an encoder that falls behind and catches up: aiortc's
  stamps each frame on a 30 frames/s schedule however late it is) taught it a wrong rate
  during the first seconds of a viewer and held every later frame by hundreds of
  milliseconds; a stall followed by a burst did the same. Jitter within the slack keeps the
  source's cadence, for the jitter buffer to smooth; beyond it the viewer plays frames as
  they come, which is what live means.
* Keyframe requests (RTCP PLI/FIR): :meth:`Playout.should_restart` says whether to start the
  viewer over at the current GOP's keyframe; at most once per ``restart_interval``, so a
  viewer that keeps asking does not get a GOP burst each time.

Audio (:class:`AudioPlayout`): the stream's Opus packets, with times on the same timeline as
the video and ``due`` from the same clock (when that time plays live on the rendition
watched), so a rendition that plays seconds behind the source holds its audio back as long.

* Lip sync in WebRTC rests on RTCP sender reports: each pairs a track's RTP time with the
  wall-clock time its last packet was sent (aiortc's), and the browser lines the tracks up by
  those pairs. To the browser, a packet was captured when it was sent: audio and video of the
  same instant must leave together. The audio cannot leave when it is due: an Opus packet
  exists once the AAC that ends its 20 ms (and libopus's 6.5 ms look-ahead) has come and been
  encoded, some 5 to 30 ms after its time, more where the publisher sends its sound behind
  its picture (ffmpeg's, by its AAC encoder's delay: 50 ms in all, at the 90th percentile).
  :attr:`AudioPlayout.lag` is how late the audio usually is (a high quantile of the last
  packets' lateness, from when each became available, bounded by ``max_lag``); each audio
  packet goes out ``lag`` after it is due (or at once if later), and the driver holds the
  video by the same ``lag``, so both leave together and paced (the browser's audio jitter
  buffer, sized by arrival jitter, stays small). A transcoded rendition's audio comes
  seconds early: its lag is 0.
* The RTP timeline steps by the source's time between packets (960 ticks for 20 ms). Like
  the video's, it is kept near the send times, but sound cannot be stretched or squeezed:
  when it falls more than ``timeline_slack`` behind them (a stall) it jumps to them, leaving
  a gap the receiver conceals; when it would run more than ``timeline_slack`` ahead (a
  burst, a source whose clock runs fast) packets are skipped until it is back on them. A
  packet is never held past its due time, which would hold all the sound after it. Sound is
  never fast-forwarded: a packet more than ``late`` seconds behind its due time is skipped,
  and a viewer starts with the first packet within the slack of live (what queued while it
  connected is skipped).
"""

from __future__ import annotations

import collections

import attrs

from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.media.h264 import (
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    avcc_units,
    nal_type,
    parameter_sets,
    to_annexb,
)

__all__ = [
    "AudioPlayout",
    "OutgoingAudio",
    "OutgoingFrame",
    "Playout",
    "SendDelayStatistics",
    "SendDelays",
]


@attrs.frozen(kw_only=True)
class OutgoingFrame:
    """One access unit ready for the WebRTC sender."""

    data: bytes
    """Annex B NAL units (SPS and PPS first on a keyframe)."""
    timestamp_ms: int
    """Presentation time on the viewer's timeline, in ms (RTP time is 90 times it)."""
    keyframe: bool
    """True for an IDR access unit."""
    send_at: float
    """When to hand it to the sender (the driver's clock)."""
    catching_up: bool = False
    """True for a frame of the fast-forward to live (it was late when it was fed)."""


@attrs.define
class Playout:
    """One viewer's frames and their timing (see the module comment)."""

    late: float = 0.1
    """Seconds behind its due time at which a packet counts as late (and is fast-forwarded)."""
    catch_up_step: float = 0.004
    """Seconds between late frames (and their timeline step): 250 frames/s."""
    restart_interval: float = 1.0
    """Least time between two restarts at a keyframe."""
    timeline_slack: float = 0.016
    """How far (s) the viewer's timeline may run from real time, the send times: arrival
    jitter within it keeps the source's cadence for the viewer's jitter buffer to smooth;
    beyond it the timeline follows the send times (see the module comment)."""
    _parameter_sets: list[bytes] = attrs.Factory(list)
    _length_size: int = 4
    _started: bool = False
    _last_dts: int | None = None
    _last_out: int = 0
    _last_send_at: float = float("-inf")
    _origin: float = 0.0
    _last_restart: float | None = None
    _frames: int = 0
    _skipped: int = 0

    @property
    def frames(self) -> int:
        """Frames produced."""
        return self._frames

    @property
    def skipped(self) -> int:
        """Packets not sent: before the first keyframe, or unreadable."""
        return self._skipped

    def configure(self, config: CodecConfig) -> None:
        """Takes the rendition's current avcC (its SPS and PPS go before keyframes)."""
        if config.kind is not TrackKind.VIDEO:
            return
        try:
            self._parameter_sets, self._length_size = parameter_sets(config.data)
        except ValueError:
            self._parameter_sets = []

    def should_restart(self, now: float) -> bool:
        """Whether to start over at the current GOP now (a keyframe was asked for, or the
        viewer just connected); records the restart when it says yes."""
        if self._last_restart is not None and now - self._last_restart < self.restart_interval:
            return False
        self._last_restart = now
        return True

    def feed(self, packet: MediaPacket, due: float, now: float) -> OutgoingFrame | None:
        """The frame to send for ``packet`` (due at ``due``), or None to skip it."""
        try:
            units = avcc_units(packet.data, self._length_size)
        except ValueError:
            self._skipped += 1
            return None
        types = {nal_type(unit) for unit in units}
        keyframe = packet.keyframe or NAL_IDR in types
        in_band = NAL_SPS in types and NAL_PPS in types
        if not self._started:
            if not units or not keyframe or not (in_band or self._parameter_sets):
                self._skipped += 1
                return None
            self._started = True
        if keyframe and not in_band:
            units = [*self._parameter_sets, *units]
        data = to_annexb(units)
        catching_up = False
        if self._last_dts is None:
            out = 0
            send_at = self._origin = max(due, now)
            catching_up = due < now - self.late
        else:
            earliest = max(now, self._last_send_at)
            if due < earliest - self.late:
                catching_up = True
                send_at = max(now, self._last_send_at + self.catch_up_step)
                step = max(1, round(self.catch_up_step * 1000))
            else:
                send_at = max(due, earliest)
                step = max(packet.dts - self._last_dts, 1)
            real = round((send_at - self._origin) * 1000)
            slack = round(self.timeline_slack * 1000)
            out = min(max(self._last_out + step, real - slack), real + slack)
            out = max(out, self._last_out + 1)
        self._last_dts = packet.dts
        self._last_out = out
        self._last_send_at = send_at
        self._frames += 1
        return OutgoingFrame(
            data=data,
            timestamp_ms=out + max(0, packet.pts - packet.dts),
            keyframe=keyframe,
            send_at=send_at,
            catching_up=catching_up,
        )


OPUS_TICKS_PER_MS = 48
"""RTP ticks per ms of Opus audio (its clock is 48 kHz whatever the source's rate)."""
OPUS_FRAME_TICKS = 960
"""The least step between two Opus packets on the RTP timeline (one 20 ms frame)."""
MAX_AUDIO_STEP_MS = 1000
"""A gap between two packets' times beyond this is a jump (a reset): the timeline moves on by
one frame and is realigned with the send times."""


@attrs.frozen(kw_only=True)
class OutgoingAudio:
    """One Opus packet ready for the WebRTC sender."""

    data: bytes
    """The Opus packet."""
    timestamp: int
    """RTP time on the viewer's audio timeline, in 48 kHz ticks."""
    send_at: float
    """When to hand it to the sender (the driver's clock)."""


@attrs.define
class AudioPlayout:
    """One viewer's Opus packets and their timing (see the module comment)."""

    late: float = 0.5
    """Seconds behind its due time at which a packet is skipped."""
    timeline_slack: float = 0.1
    """How far (s) the RTP timeline may run from the send times: further behind, it jumps
    to them; further ahead, packets are skipped until it is back (see the module comment)."""
    max_lag: float = 0.1
    """The most (s) the audio, and the video with it, is held past due to let the audio
    catch up."""
    lag_quantile: float = 0.9
    """Which quantile of the recent packets' lateness :attr:`lag` is."""
    window: int = 100
    """Packets (2 s) whose lateness :attr:`lag` is taken over."""
    _lateness: collections.deque[float] = attrs.field(init=False)
    _started: bool = False
    _last_ms: int = 0
    _last_out: int = 0
    _last_send_at: float = float("-inf")
    _origin: float = 0.0
    _realigning: bool = False
    _packets: int = 0
    _skipped: int = 0

    @property
    def packets(self) -> int:
        """Packets produced."""
        return self._packets

    @property
    def skipped(self) -> int:
        """Packets skipped because they were late (see the module comment)."""
        return self._skipped

    @property
    def lag(self) -> float:
        """Seconds past due that audio packets, and the video with them, go out (see the
        module comment); 0 before the first packet."""
        if not self._lateness:
            return 0.0
        ordered = sorted(self._lateness)
        value = ordered[int(self.lag_quantile * (len(ordered) - 1))]
        return min(max(value, 0.0), self.max_lag)

    def __attrs_post_init__(self) -> None:
        self._lateness = collections.deque(maxlen=self.window)

    def feed(
        self, packet: MediaPacket, due: float, now: float, *, available: float | None = None
    ) -> OutgoingAudio | None:
        """The packet to send for ``packet`` (due at ``due``, available to send since
        ``available``, default ``now``), or None to skip it."""
        if due < now - self.late:
            self._skipped += 1
            return None
        self._lateness.append((now if available is None else available) - due)
        due += self.lag
        send_at = max(due, now, self._last_send_at)
        if not self._started:
            if due < now - self.timeline_slack:
                self._skipped += 1  # what queued while the viewer connected: start at live
                return None
            self._started = True
            self._origin = send_at
            self._last_ms = packet.pts
            out = 0
        else:
            gap = packet.pts - self._last_ms
            self._last_ms = packet.pts
            step = gap * OPUS_TICKS_PER_MS if 0 < gap <= MAX_AUDIO_STEP_MS else OPUS_FRAME_TICKS
            out = self._last_out + max(step, OPUS_FRAME_TICKS)
            real = round((send_at - self._origin) * 1000 * OPUS_TICKS_PER_MS)
            slack = round(self.timeline_slack * 1000 * OPUS_TICKS_PER_MS)
            if out > real + slack or (self._realigning and out > real):
                # Ahead of the send times (a burst, a source running fast): drop sound until
                # the timeline is back on them, rather than hold all the sound after it.
                self._realigning = True
                self._skipped += 1
                return None
            self._realigning = False
            if out < real - slack:
                out = real  # behind (a stall): a gap, which the receiver conceals
        self._last_out = out
        self._last_send_at = send_at
        self._packets += 1
        return OutgoingAudio(data=packet.data, timestamp=out, send_at=send_at)


@attrs.frozen(kw_only=True)
class SendDelayStatistics:
    """How long one viewer's frames stayed in this node, from arrival to its sender."""

    frames: int
    """Frames sent."""
    catch_up_frames: int
    """Of them, frames of a fast-forward to live (a join, a restart, a viewer behind)."""
    median_ms: float | None
    """Median delay of the other (live) frames, over the last ``window``."""
    p95_ms: float | None
    """Their 95th percentile."""
    max_ms: float | None
    """Their largest delay, the whole session."""


@attrs.define
class SendDelays:
    """Collects each frame's delay from its arrival at the node to its hand-off."""

    window: int = 300
    """Live frames the median and percentile are taken over (10 s at 30 frames/s)."""
    _recent: collections.deque[float] = attrs.field(init=False)
    _frames: int = 0
    _catch_up: int = 0
    _max: float | None = None

    def __attrs_post_init__(self) -> None:
        self._recent = collections.deque(maxlen=self.window)

    def note(self, frame: OutgoingFrame, arrived_at: float, sent_at: float) -> None:
        """Records ``frame``, which arrived at ``arrived_at`` and went out at ``sent_at``."""
        self._frames += 1
        if frame.catching_up:
            self._catch_up += 1
            return
        delay = max(0.0, sent_at - arrived_at)
        self._recent.append(delay)
        self._max = delay if self._max is None else max(self._max, delay)

    def statistics(self) -> SendDelayStatistics:
        """The figures now."""
        recent = sorted(self._recent)

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 1)

        return SendDelayStatistics(
            frames=self._frames,
            catch_up_frames=self._catch_up,
            median_ms=ms(recent[len(recent) // 2]) if recent else None,
            p95_ms=ms(recent[int(0.95 * (len(recent) - 1))]) if recent else None,
            max_ms=ms(self._max),
        )
