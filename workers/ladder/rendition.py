"""One rendition of the ladder while it is produced: scaled, encoded and muxed on its own
thread.

How this works:

* The decode loop hands each decoded frame to every rendition (:meth:`RenditionEncoder.submit`).
  Each rendition has a worker thread that scales the shared decoded frame with libswscale (its
  own reformatter, reused) to the planned size in yuv420p and encodes it; FFmpeg drops the GIL
  in both, so decoding, scaling and encoding overlap (ffmpeg 5.1's CLI does them one after
  another). A bounded queue per rendition is the backpressure.
* The worker of a plain rendition never touches the muxer: the calling thread muxes the
  packets it hands back, so ``on_data`` runs on the caller's thread. A staged (live)
  rendition's worker muxes its own video packets as soon as they are encoded, under a lock
  shared with the caller's audio muxing, so its ``on_data`` also runs on that worker thread
  (``trio.from_thread`` needs the trio token there).
* Frame-rate conversion fills output slots by timestamp (see ``plan.py``). A frame that was a
  keyframe in the source is sent with picture type I, which the encoder makes an IDR frame
  (see ``encoding.py``); a dropped keyframe passes that on to the next frame out.
* A staged rendition's frames go through its :class:`FrameStage` between scaling and
  encoding. Real time starts at its first frame (or when the input began to arrive, if
  earlier). Input ahead of real time waits for the stage: every frame is processed. Input
  that falls more than ``live_slack`` seconds behind real time makes a frame that finds the
  queue full be dropped (and counted) instead of waiting.
* The muxer (MPEG-TS for H.264, fragmented MP4 for HEVC and AV1: see ``plan.py``) writes
  into a :class:`RenditionSink` whose ``write()`` hands the bytes to ``on_data`` at once, in
  chunks of the AVIO buffer size, so output streams out while input streams in.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import Protocol

import attrs
import av
import av.container
from av.audio.stream import AudioStream
from av.packet import Packet
from av.stream import Stream
from av.video.frame import PictureType, VideoFrame
from av.video.reformatter import Interpolation, VideoReformatter
from av.video.stream import VideoStream

from lpstream.errors import MediaError
from workers.ladder.audio import AudioTrack
from workers.ladder.plan import RenditionPlan
from workers.ladder.rendition_audio import AdtsUnwrapper, add_audio_streams

__all__ = [
    "DataCallback",
    "FrameStage",
    "RenditionEncoder",
    "RenditionOutput",
    "RenditionSink",
    "open_rendition",
]

DataCallback = Callable[[int, bytes], None]
"""Receives ``(rendition index, bytes)`` as each rendition's muxer writes them: MPEG-TS for an
H.264 rendition, fragmented MP4 (opening with an ``ftyp`` box) for HEVC and AV1."""

_OUTPUT_CHUNK = 188 * 64
"""AVIO buffer of each rendition: ``on_data`` gets chunks of at most this many bytes."""

_SCALER = Interpolation.BICUBIC
"""libswscale algorithm (FFmpeg's scale filter default)."""

_FALLBACK_TICK = Fraction(1, 90_000)
"""MPEG-TS time base, if a stream has none."""
_SVT_AV1_QUIET = ("SVT_LOG", "1")
"""SVT-AV1 prints a banner and notes to stderr for every encoder it opens unless its
``SVT_LOG`` level says errors only; an operator's own setting is kept."""


@attrs.frozen(kw_only=True)
class RenditionOutput:
    """What was produced for one rendition of the ladder."""

    name: str
    """The profile's name."""
    width: int
    """Encoded width: the source fitted into the profile's box (see ``scaled_size``)."""
    height: int
    """Encoded height."""
    frames: int
    """Video frames encoded."""
    pixels: int
    """``frames * width * height``, what the work is paid by."""
    size: int
    """Bytes written (passed to ``on_data``)."""
    duration_ms: int
    """Span of the encoded video, from the first frame's timestamp to the end of the last."""
    dropped: int = 0
    """Decoded frames left out because a staged rendition's stage was still busy."""


class FrameStage(Protocol):
    """Work done on a rendition's frames between scaling and encoding (a live AI pipeline).

    ``push`` takes a scaled ``yuv420p`` frame and returns the frames ready for the encoder
    (none while a batch is being gathered), each keeping its input's ``pts``; ``flush``
    returns what is still gathered at the end. Both run on the rendition's worker thread.
    ``workers.pipelines.PipelineRunner`` is one.
    """

    def push(self, frame: VideoFrame, /) -> Sequence[VideoFrame]: ...

    def flush(self) -> Sequence[VideoFrame]: ...


class RenditionSink:
    """The write end of one rendition's muxer: forwards every chunk to ``on_data``.

    Once ``closed`` is set nothing more is forwarded, and PyAV skips the trailer when it
    collects the container.
    """

    __slots__ = ("_index", "_on_data", "closed", "size")

    def __init__(self, index: int, on_data: DataCallback) -> None:
        self._index = index
        self._on_data = on_data
        self.closed = False
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        if not self.closed:
            self._on_data(self._index, data)
            self.size += len(data)
        return len(data)


_Job = tuple[VideoFrame, int, bool]
"""A decoded frame for an encoder thread: frame, its timestamp, whether it is a keyframe."""


def open_rendition(
    plan: RenditionPlan,
    on_data: DataCallback,
    *,
    encoder: str,
    threads: int,
    tick: Fraction,
    audio: Iterable[tuple[AudioStream, AudioTrack]],
    shared_frames: threading.Lock,
    stage: FrameStage | None,
    started: float | None,
    live_slack: float,
) -> RenditionEncoder:
    """Opens the muxer and the encoder of a planned rendition; ``start()`` it next.

    Args:
        plan: what to make.
        on_data: receives the rendition's bytes.
        encoder: the ladder's encoder (``workers.gpu.choose_encoder``'s pick); the rendition
            runs ``plan.encoder``, the one for its profile's codec.
        threads: encoder threads; 0 lets the encoder choose.
        tick: the source's time base, kept from decoder to muxer.
        audio: the source audio streams to copy, with what is known of each.
        shared_frames: the lock of the ladder's renditions (see ``RenditionEncoder``).
        stage: live work between scaling and encoding, for a staged rendition.
        started: when the input began to arrive (``time.monotonic()``), if known.
        live_slack: seconds a staged rendition may fall behind real time before it drops.

    Raises:
        MediaError: ``encoder`` is not a video encoder.
    """
    if plan.encoder == "libsvtav1":
        os.environ.setdefault(*_SVT_AV1_QUIET)
    sink = RenditionSink(plan.index, on_data)
    container = av.open(
        sink,
        mode="w",
        format=plan.container,
        container_options=dict(plan.mux_options),
        buffer_size=_OUTPUT_CHUNK,
    )
    video = container.add_stream(plan.encoder, rate=plan.rate, options=dict(plan.encoder_options))
    if not isinstance(video, VideoStream):
        raise MediaError(f"{plan.encoder} is not a video encoder")
    if plan.codec_tag:
        video.codec_tag = plan.codec_tag
    ctx = video.codec_context
    ctx.width = plan.width
    ctx.height = plan.height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = tick
    ctx.framerate = plan.rate
    ctx.bit_rate = plan.profile.bitrate
    ctx.thread_count = threads
    video.time_base = tick
    streams, unwrappers = add_audio_streams(container, audio, mp4=plan.container == "mp4")
    return RenditionEncoder(
        plan=plan,
        sink=sink,
        container=container,
        video=video,
        audio=streams,
        adts=unwrappers,
        shared_frames=shared_frames,
        inbox=queue.Queue(plan.queued_frames),
        stage=stage,
        started=started,
        live_slack=live_slack,
    )


@attrs.define(eq=False)
class RenditionEncoder:
    """One rendition while it is produced (see the module comment).

    The calling thread submits decoded frames, muxes audio and drains encoded packets; a
    worker thread owns the scaler and the encoder (FFmpeg drops the GIL in both) and, for a
    staged rendition, muxes each packet it encodes at once (``mux_lock`` orders the two).
    """

    plan: RenditionPlan
    sink: RenditionSink
    container: av.container.OutputContainer
    video: VideoStream
    audio: dict[int, AudioStream]
    """Output audio stream per source stream index."""
    adts: dict[int, AdtsUnwrapper]
    """Per source stream index, what takes ADTS AAC apart for an MP4 rendition."""
    shared_frames: threading.Lock
    """Held while a frame that is not scaled (so shared by renditions) gets stamped."""
    inbox: queue.Queue[_Job | None]
    """Decoded frames for the worker thread; None ends it."""
    stage: FrameStage | None = None
    """Live AI work between scaling and encoding; frames are dropped when it lags."""
    started: float | None = None
    """When the input began to arrive; the anchor's time if given."""
    live_slack: float = 0.0
    """Seconds a staged rendition's input may fall behind real time before frames are dropped."""
    reformatter: VideoReformatter = attrs.field(factory=VideoReformatter)
    outbox: collections.deque[Packet[Stream]] = attrs.field(factory=collections.deque)
    error: BaseException | None = None
    """What stopped the worker thread, re-raised on the calling thread."""
    worker: threading.Thread | None = None
    frames: int = 0
    first_pts: int | None = None
    last_pts: int | None = None
    slot: int = 0
    """Next output slot index (frame-rate conversion only)."""
    key_pending: bool = False
    """A source keyframe was dropped; force the next output frame to be one."""
    dropped: int = 0
    """Frames dropped because the stage's queue was full (calling thread)."""
    carry_key: bool = False
    """A dropped frame was a keyframe: the next frame queued is marked as one."""
    key_pts: set[int] = attrs.Factory(set)
    """Timestamps of staged frames that must come out as keyframes (worker thread)."""
    anchor: tuple[float, int] | None = None
    """(monotonic time, pts) of the first staged frame: where real time starts."""
    mux_lock: threading.Lock = attrs.Factory(threading.Lock)
    """A staged rendition's worker thread muxes its own packets; audio comes from the
    calling thread."""

    # -- calling thread ------------------------------------------------------------------

    def start(self) -> None:
        """Writes the header (opening the encoder) and starts the worker thread."""
        for unwrapper in self.adts.values():
            unwrapper.before_header()
        self.container.start_encoding()
        self.worker = threading.Thread(
            target=self._work, name=f"lpstream-encode-{self.plan.profile.name}", daemon=True
        )
        self.worker.start()

    def submit(self, frame: VideoFrame, pts: int, key: bool) -> None:
        """Queues a frame for the worker (blocks while its queue is full) and muxes output."""
        if self.error is not None:
            raise self.error
        if self.stage is None:
            self.inbox.put((frame, pts, key))
        else:
            key = key or self.carry_key
            now = time.monotonic()
            if self.anchor is None:
                self.anchor = (now if self.started is None else min(now, self.started), pts)
            tick = self.video.time_base or _FALLBACK_TICK
            behind = now - self.anchor[0] - float((pts - self.anchor[1]) * tick)
            try:
                self.inbox.put((frame, pts, key), block=behind <= self.live_slack)
                self.carry_key = False
            except queue.Full:
                # The stage is slower than real time: drop, never queue without bound.
                self.dropped += 1
                self.carry_key = key
        self.drain()

    def drain(self) -> None:
        outbox = self.outbox
        with self.mux_lock:
            while outbox:
                self.container.mux_one(outbox.popleft())

    def mux_audio(self, source_index: int, packet: Packet[Stream]) -> None:
        stream = self.audio.get(source_index)
        if stream is None:
            return
        unwrapper = self.adts.get(source_index)
        with self.mux_lock:
            if unwrapper is not None:
                for frame in unwrapper.frames(packet):
                    self.container.mux_one(frame)
                return
            packet.stream = stream
            self.container.mux_one(packet)

    def stop(self) -> None:
        """Ends the worker thread after the frames already queued."""
        if self.worker is not None:
            self.inbox.put(None)
            self.worker.join()
            self.worker = None

    def abort(self) -> None:
        """Stops without writing anything more (no trailer, no more ``on_data``)."""
        self.stop()
        self.sink.closed = True

    def finish(self) -> RenditionOutput:
        self.stop()
        if self.error is not None:
            raise self.error
        self.drain()
        self.container.close()
        duration_ms = 0
        if self.first_pts is not None and self.last_pts is not None:
            ticks = self.last_pts - self.first_pts + self.plan.interval
            duration_ms = round(ticks * self.video.codec_context.time_base * 1000)
        return RenditionOutput(
            name=self.plan.profile.name,
            width=self.plan.width,
            height=self.plan.height,
            frames=self.frames,
            pixels=self.frames * self.plan.width * self.plan.height,
            size=self.sink.size,
            duration_ms=duration_ms,
            dropped=self.dropped,
        )

    # -- worker thread -------------------------------------------------------------------

    def _work(self) -> None:
        inbox = self.inbox
        while (job := inbox.get()) is not None:
            if self.error is None:  # after an error, keep taking jobs so submit never blocks
                try:
                    self._encode(*job)
                except BaseException as exc:
                    self.error = exc
        if self.error is None:
            try:
                if self.stage is not None:
                    for done in self.stage.flush():
                        self._encode_staged(done)
                self.outbox.extend(self.video.encode(None))
            except BaseException as exc:
                self.error = exc

    def _encode(self, frame: VideoFrame, pts: int, key: bool) -> None:
        out = self.reformatter.reformat(
            frame, self.plan.width, self.plan.height, "yuv420p", interpolation=_SCALER
        )
        if self.stage is not None:
            if key:
                self.key_pts.add(pts)
            out.pts = pts
            for done in self.stage.push(out):
                self._encode_staged(done)
            return
        lock = self.shared_frames if out is frame else contextlib.nullcontext()
        with lock:
            if self.plan.step is None:
                self._encode_one(out, pts, key)
                return
            if self.first_pts is None:
                self.first_pts = pts
            key = key or self.key_pending
            while True:
                slot_pts = self.first_pts + round(self.slot * self.plan.step)
                if slot_pts > pts + self.plan.tolerance:
                    break
                self._encode_one(out, slot_pts, key)
                self.slot += 1
                key = False
            self.key_pending = key

    def _encode_staged(self, frame: VideoFrame) -> None:
        pts = frame.pts
        if pts is None or (self.last_pts is not None and pts <= self.last_pts):
            return  # a stage must keep timestamps; the encoder needs them in order
        key = pts in self.key_pts
        if key:
            self.key_pts = {p for p in self.key_pts if p > pts}
        self._encode_one(frame, pts, key)

    def _encode_one(self, out: VideoFrame, pts: int, key: bool) -> None:
        out.pts = pts
        out.pict_type = PictureType.I if key else PictureType.NONE
        self.outbox.extend(self.video.encode(out))
        self.frames += 1
        if self.first_pts is None:
            self.first_pts = pts
        self.last_pts = pts
        if self.stage is not None:
            self.drain()  # live: the packet leaves now, not when the next frame comes in
