"""Lip sync, measured: a source that flashes and beeps at the same instants, and the onsets of
both found in what a viewer got.

How this works:

* The source (:func:`marked_source`, ffmpeg's lavfi): ``testsrc2`` with its first
  :data:`FLASH_FRAMES` frames of every second painted white, and ``sine`` (440 Hz) with
  ``beep_factor``, which adds a 1760 Hz beep at three times the level for the first 40 ms of
  every second. The flash and the beep start on the same sample of the source's timeline.
* An onset is where a level series (a frame's mean luma; the audio's largest amplitude per
  ms) first crosses its threshold after :data:`QUIET` seconds below it
  (:func:`onsets`). The threshold is the middle of the picture's range (``testsrc2`` against
  white), and :data:`BEEP_LEVEL` times the audio's median level (the carrier's amplitude; the
  beep triples it).
* The offset of one second's marks is the beep's onset minus the flash's, on one clock
  (:func:`pair_offsets`): positive when the sound comes late. Which clock depends on the
  viewer: a browser's presentation times (``requestVideoFrameCallback``'s display time and
  the ``AudioContext``'s output time, :data:`CHROMIUM_VIEWER`), or the sender's clock a
  WebRTC receiver reconstructs from RTCP sender reports (:class:`SenderClock`), which is
  what a browser's lip sync aligns the two tracks by.

A frame is 33 ms at 30 frames/s; the flash onset is the first frame shown white, so a single
pair is no finer than the display's refresh. The median of many pairs is the figure.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import trio

from benchmarks.harness.browser import Browser

__all__ = [
    "BEEP_LEVEL",
    "CHROMIUM_VIEWER",
    "FLASH_FRAMES",
    "QUIET",
    "ChromiumAvSync",
    "SenderClock",
    "beep_onsets",
    "envelope",
    "flash_onsets",
    "marked_publish_command",
    "marked_source",
    "measure_in_chromium",
    "onsets",
    "pair_offsets",
]

FLASH_FRAMES = 2
"""Frames painted white at the start of every second."""
QUIET = 0.5
"""Seconds below the threshold before a crossing counts as an onset."""
BEEP_LEVEL = 1.8
"""An audio level this many times the median (the carrier) is the beep."""
ENVELOPE_MS = 1
"""The audio level is the largest amplitude in each window of this many ms."""


def marked_source(size: str = "320x240", rate: int = 30) -> list[str]:
    """ffmpeg input arguments for the flashing, beeping source (two lavfi inputs)."""
    flash = (
        f"testsrc2=size={size}:rate={rate},drawbox=w=iw:h=ih:color=white:t=fill:"
        f"enable='lt(mod(n\\,{rate})\\,{FLASH_FRAMES})'"
    )
    beep = "sine=frequency=440:beep_factor=4:sample_rate=48000"
    return ["-f", "lavfi", "-i", flash, "-f", "lavfi", "-i", beep]


def marked_publish_command(rtmp_url: str, seconds: float, size: str = "640x360") -> list[str]:
    """ffmpeg publishing the marked source live over RTMP: libx264 (1 s GOPs, no B-frames,
    ``zerolatency``) and AAC, as a broadcaster would."""
    return [
        *("ffmpeg", "-hide_banner", "-loglevel", "error", "-re"),
        *marked_source(size=size),
        *("-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"),
        *("-g", "30", "-bf", "0", "-pix_fmt", "yuv420p"),
        *("-c:a", "aac", "-b:a", "96k", "-f", "flv", rtmp_url),
    ]


def onsets(series: Sequence[tuple[float, float]], threshold: float) -> list[float]:
    """The times at which ``series`` ((time, level), in time order) crosses ``threshold``
    upwards after at least :data:`QUIET` seconds below it."""
    found: list[float] = []
    quiet_since: float | None = None
    for time, level in series:
        if level < threshold:
            if quiet_since is None:
                quiet_since = time
        else:
            if quiet_since is not None and time - quiet_since >= QUIET:
                found.append(time)
            quiet_since = None
    return found


def flash_onsets(frames: Sequence[tuple[float, float]]) -> list[float]:
    """Flash onsets from (display time, mean luma 0-255) of the frames shown."""
    if not frames:
        return []
    levels = [level for _, level in frames]
    return onsets(frames, (statistics.median(levels) + max(levels)) / 2)


def beep_onsets(levels: Sequence[tuple[float, float]]) -> list[float]:
    """Beep onsets from (time, audio level) samples (see :func:`envelope`)."""
    if not levels:
        return []
    carrier = statistics.median(level for _, level in levels)
    return onsets(levels, carrier * BEEP_LEVEL)


def envelope(
    pcm: npt.NDArray[np.floating] | npt.NDArray[np.integer], start: float, rate: int
) -> list[tuple[float, float]]:
    """The level series of mono samples ``pcm`` whose first is at ``start`` seconds: the
    largest amplitude in each :data:`ENVELOPE_MS` window, timed at its start."""
    window = rate * ENVELOPE_MS // 1000
    count = len(pcm) // window
    blocks = np.abs(np.asarray(pcm[: count * window], dtype=np.float64)).reshape(count, window)
    peaks = blocks.max(axis=1)
    return [(start + i * window / rate, float(peak)) for i, peak in enumerate(peaks)]


def pair_offsets(
    beeps: Sequence[float], flashes: Sequence[float], window: float = 0.4
) -> list[float]:
    """For each flash, the nearest beep within ``window`` seconds: beep minus flash."""
    offsets: list[float] = []
    for flash in flashes:
        nearest = min(beeps, key=lambda beep: abs(beep - flash), default=None)
        if nearest is not None and abs(nearest - flash) <= window:
            offsets.append(nearest - flash)
    return offsets


@attrs.frozen
class SenderClock:
    """Maps one RTP stream's times to the sender's wall clock by its RTCP sender reports, as
    a receiver's lip sync does."""

    reports: Sequence[tuple[int, int]]
    """(NTP time, 64-bit fixed point; RTP time) of each sender report."""
    rate: int
    """The stream's RTP clock rate."""

    def seconds(self, rtp: int) -> float:
        """The sender's time (s) of RTP time ``rtp``, by the report nearest to it."""
        if not self.reports:
            raise ValueError("no sender report")

        def distance(report: tuple[int, int]) -> int:
            return abs(_signed(rtp - report[1]))

        ntp, base = min(self.reports, key=distance)
        return ntp / 2**32 + _signed(rtp - base) / self.rate


def _signed(ticks: int) -> int:
    """A difference of 32-bit RTP times, wrapped to the nearest."""
    ticks %= 1 << 32
    return ticks - (1 << 32) if ticks >= 1 << 31 else ticks


CHROMIUM_VIEWER = """
(async (endpoint) => {
  // A WHEP viewer that records, on the page's clock (performance.now), when each video
  // frame is shown and how bright it is, and the level of the sound as it is output.
  const r = window.avsync = {state: "starting", connection: "new", error: null, frames: [],
                             levels: [], stats: [], pc: null};
  try {
    const pc = r.pc = new RTCPeerConnection();
    pc.addTransceiver("video", {direction: "recvonly"});
    pc.addTransceiver("audio", {direction: "recvonly"});
    const stream = new MediaStream();
    const tracks = {};
    pc.ontrack = event => { stream.addTrack(event.track); tracks[event.track.kind] = event.track; };
    pc.onconnectionstatechange = () => { r.connection = pc.connectionState; };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise(resolve => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
    });
    const reply = await fetch(endpoint, {method: "POST", body: pc.localDescription.sdp,
                                         headers: {"Content-Type": "application/sdp"}});
    if (reply.status !== 201) throw new Error("WHEP answered " + reply.status);
    r.answer = await reply.text();
    await pc.setRemoteDescription({type: "answer", sdp: r.answer});
    r.kinds = pc.getReceivers().map(receiver => receiver.track.kind);

    // Picture and sound: one video element with both tracks, as a player has it.
    const video = document.createElement("video");
    video.muted = false; video.autoplay = true; video.playsInline = true;
    video.style.width = "320px";
    document.body.appendChild(video);
    video.srcObject = stream;
    const canvas = document.createElement("canvas");
    canvas.width = 16; canvas.height = 12;
    const context = canvas.getContext("2d", {willReadFrequently: true});
    const shown = (now, meta) => {
      context.drawImage(video, 0, 0, canvas.width, canvas.height);
      const px = context.getImageData(0, 0, canvas.width, canvas.height).data;
      let sum = 0;
      for (let i = 0; i < px.length; i += 4) {
        sum += 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
      }
      r.frames.push([meta.expectedDisplayTime, sum / (px.length / 4)]);
      video.requestVideoFrameCallback(shown);
    };
    video.requestVideoFrameCallback(shown);

    // Sound: the remote track through an AudioWorklet that keeps the largest amplitude of
    // every 1 ms (48 frames), timed by the context's output clock.
    const worklet = `
      class Envelope extends AudioWorkletProcessor {
        constructor() { super(); this.peak = 0; this.count = 0; this.start = 0; this.batch = []; }
        process(inputs) {
          const input = inputs[0];
          if (!input || !input.length) return true;
          const channel = input[0];
          for (let i = 0; i < channel.length; i++) {
            if (this.count === 0) this.start = currentFrame + i;
            const value = Math.abs(channel[i]);
            if (value > this.peak) this.peak = value;
            if (++this.count === 48) {
              this.batch.push([this.start, this.peak]);
              this.peak = 0; this.count = 0;
            }
          }
          if (this.batch.length >= 20) { this.port.postMessage(this.batch); this.batch = []; }
          return true;
        }
      }
      registerProcessor("envelope", Envelope);`;
    const audio = new AudioContext({sampleRate: 48000});
    await audio.audioWorklet.addModule(
      URL.createObjectURL(new Blob([worklet], {type: "application/javascript"})));
    const source = audio.createMediaStreamSource(new MediaStream([tracks.audio]));
    const envelope = new AudioWorkletNode(audio, "envelope", {numberOfOutputs: 1});
    source.connect(envelope);
    envelope.connect(audio.destination);  // it outputs silence; connected, it is pulled
    envelope.port.onmessage = event => {
      const out = audio.getOutputTimestamp();
      for (const [frame, peak] of event.data) {
        const at = out.performanceTime + (frame / audio.sampleRate - out.contextTime) * 1000;
        r.levels.push([at, peak]);
      }
    };
    r.audioContext = audio;

    // What the browser says of both tracks, every 100 ms.
    r.timer = setInterval(async () => {
      const sample = {at: performance.now()};
      (await pc.getStats()).forEach(s => {
        if (s.type === "inbound-rtp") {
          sample[s.kind] = {
            audioLevel: s.audioLevel, totalAudioEnergy: s.totalAudioEnergy,
            estimatedPlayoutTimestamp: s.estimatedPlayoutTimestamp,
            jitterBufferDelay: s.jitterBufferDelay,
            jitterBufferEmittedCount: s.jitterBufferEmittedCount,
            framesDecoded: s.framesDecoded, packetsReceived: s.packetsReceived,
          };
        } else if (s.type === "codec") {
          sample.codecs = (sample.codecs || []).concat([s.mimeType]);
        }
      });
      r.stats.push(sample);
    }, 100);
    r.state = "playing";
  } catch (error) {
    r.error = String(error);
  }
})
"""
"""A function expression: call it with the WHEP endpoint, on a page of the node's origin.
It leaves ``window.avsync``: ``frames`` [display time, luma], ``levels`` [output time,
level] (page clock, ms), ``stats`` (inbound-rtp figures every 100 ms), ``state``
("playing" once set up), ``connection`` (the peer connection's state), ``answer``, ``kinds``
(of the tracks received), ``error``."""


@attrs.frozen(kw_only=True)
class ChromiumAvSync:
    """What one Chromium WHEP viewer measured (times in ms; offsets positive when the sound
    comes after the picture)."""

    answer: str
    """The SDP answer."""
    kinds: tuple[str, ...]
    """Kinds of the tracks received."""
    stats: list[dict[str, Any]]
    """The ``inbound-rtp`` samples of the measured stretch."""
    ept_offsets: list[float]
    """Video minus audio ``estimatedPlayoutTimestamp`` of each sample: how far the sound
    played out lags the picture, on the sender's clock, by the browser's account."""
    content_offsets: list[float]
    """Beep output time minus flash display time, for each second's marks (through Web
    Audio, see :data:`CHROMIUM_VIEWER`)."""

    def summary(self) -> dict[str, float | int | None]:
        """Medians and spreads of both figures."""

        def quantile(values: list[float], q: float) -> float | None:
            ordered = sorted(values)
            return round(ordered[int(q * (len(ordered) - 1))], 1) if ordered else None

        return {
            "ept_median_ms": quantile(self.ept_offsets, 0.5),
            "ept_p10_ms": quantile(self.ept_offsets, 0.1),
            "ept_p90_ms": quantile(self.ept_offsets, 0.9),
            "ept_samples": len(self.ept_offsets),
            "content_median_ms": quantile(self.content_offsets, 0.5),
            "content_min_ms": quantile(self.content_offsets, 0.0),
            "content_max_ms": quantile(self.content_offsets, 1.0),
            "content_pairs": len(self.content_offsets),
        }


async def measure_in_chromium(
    browser: Browser, base: str, endpoint: str, *, settle: float, seconds: float
) -> ChromiumAvSync:
    """Plays ``endpoint`` (a WHEP path of the node at ``base``) in a new window, lets it play
    ``settle`` seconds, then measures for ``seconds``; it goes on playing until the browser
    closes.

    Raises:
        AssertionError: the viewer could not start (the reason in the message).
    """
    # A page of the node's origin hosts the viewer: its WHEP POST is then same-origin.
    page = await browser.new_page(f"{base}/api/status", new_window=True)
    await page.evaluate(f"({CHROMIUM_VIEWER})({endpoint!r})")
    state = await page.wait_for(
        "window.avsync.error || window.avsync.state",
        20,
        lambda s: s == "playing" or "rror" in str(s),
    )
    assert state == "playing", state
    await page.wait_for("window.avsync.connection", 15, lambda s: s == "connected")
    await trio.sleep(settle)
    since = await page.evaluate("performance.now()")
    await trio.sleep(seconds)
    result = await page.evaluate(
        "({answer: window.avsync.answer, kinds: window.avsync.kinds,"
        " frames: window.avsync.frames, levels: window.avsync.levels,"
        " stats: window.avsync.stats})"
    )
    stats = [sample for sample in result["stats"] if sample["at"] >= since]
    ept = []
    for sample in stats:
        video, audio = sample.get("video") or {}, sample.get("audio") or {}
        if video.get("estimatedPlayoutTimestamp") and audio.get("estimatedPlayoutTimestamp"):
            ept.append(
                float(video["estimatedPlayoutTimestamp"] - audio["estimatedPlayoutTimestamp"])
            )
    flashes = flash_onsets([frame for frame in result["frames"] if frame[0] >= since])
    beeps = beep_onsets([level for level in result["levels"] if level[0] >= since])
    content = pair_offsets([b / 1000 for b in beeps], [f / 1000 for f in flashes])
    return ChromiumAvSync(
        answer=result["answer"],
        kinds=tuple(sorted(result["kinds"])),
        stats=stats,
        ept_offsets=ept,
        content_offsets=[offset * 1000 for offset in content],
    )
