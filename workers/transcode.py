"""The ladder transcoder: one MPEG-TS segment in, one MPEG-TS stream per rendition out.

How this works
--------------
This is blocking code; the node runs :meth:`LadderTranscoder.transcode` in a worker thread.

* The source is read through a small non-seekable wrapper, so a pipe or an upload that is
  still arriving works: the demuxer probes only the first 32 KiB and decoding starts long
  before the last byte is in.
* A small probe often knows an audio stream exists (the PMT says so) but not its sample rate,
  and the muxer refuses a stream without one. So the first packets are held back ("priming")
  until every audio stream has told us its parameters, read from the ADTS header of its first
  packet where the probe did not. Priming is bounded (about a second of video or a few hundred
  packets); an audio stream still unknown then is left out of the renditions.
* The video is decoded once, on the calling thread. Each rendition has a worker thread that
  scales the shared decoded frame with libswscale (its own reformatter, reused) to
  ``scaled_size(source, profile)`` in yuv420p and encodes it; FFmpeg drops the GIL in both, so
  decoding, scaling and encoding overlap (ffmpeg 5.1's CLI does them one after another). A
  bounded queue per rendition is the backpressure. The workers of a ladder never touch a
  muxer: the calling thread muxes the packets they hand back, so ``on_data`` runs on the
  caller's thread. A staged (live) rendition's worker muxes its own video packets as soon as
  they are encoded, under a lock shared with the caller's audio muxing, so its ``on_data``
  also runs on that worker thread (``trio.from_thread`` needs the trio token there).
* A decode error in one packet skips that packet, as players do; input with no decodable
  frame at all is an error.
  Timestamps are the source's, in the source time base, from decoder to muxer: the MPEG-TS
  muxer is told not to offset them, so renditions line up with the source segment in HLS.
* GOPs are aligned across the ladder: scene-cut keyframes are off, the keyframe interval is
  ``profile.gop`` seconds, and a frame that was a keyframe in the source is forced to be an
  IDR frame in every rendition, so segment boundaries coincide.
* A profile with an ``fps`` different from the source's drops or repeats frames by timestamp:
  output slot ``k`` sits at ``first_pts + k / fps`` and takes the first source frame whose
  timestamp is within half a source frame of it.
* Audio packets are copied unchanged into every rendition.
* Each rendition is muxed into a sink whose ``write()`` hands the bytes to ``on_data`` at
  once, in chunks of the AVIO buffer size, so output streams out while input streams in.
* Every FFmpeg error becomes a :class:`~lpstream.errors.MediaError` in one place
  (:func:`_media_errors`); exceptions raised by the caller's ``read()``/``on_data`` pass
  through unchanged.
"""

from __future__ import annotations

import collections
import contextlib
import io
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Protocol

import attrs
import av
import av.container
import av.error
from av.audio.stream import AudioStream
from av.packet import Packet
from av.stream import Stream
from av.video.frame import PictureType, VideoFrame
from av.video.reformatter import Interpolation, VideoReformatter
from av.video.stream import VideoStream

from lpstream.errors import MediaError
from lpstream.media import VideoProfile, scaled_size

from .gpu import NVENC, choose_encoder

__all__ = [
    "DataCallback",
    "FrameStage",
    "LadderTranscoder",
    "RenditionOutput",
    "StartCallback",
    "transcode_file",
]

DataCallback = Callable[[int, bytes], None]
"""Receives ``(rendition index, MPEG-TS bytes)`` as each rendition's muxer writes them."""

StartCallback = Callable[[list[tuple[str, int, int]]], None]
"""Receives ``[(name, width, height)]`` of every rendition once the first frame sized them,
before any of their bytes."""

_PROBE_OPTIONS = {"probesize": "32768", "analyzeduration": "0"}
"""Demuxer options: start after 32 KiB; stream parameters come from the data itself."""

_LIVE_PROBE_OPTIONS = {**_PROBE_OPTIONS, "fflags": "+noparse+nofillin"}
"""A live job's input has one access unit per PES with its length written, so each PES is
taken as a packet when it ends. FFmpeg's H.264 parser would hold every frame until the next
one starts (one frame interval, 33 ms at 30 fps); audio PES may then carry several ADTS
frames in one packet, which pass through as they are."""

_MUX_OPTIONS = {
    # Keep the source timestamps: no 1.4 s PCR offset, no shifting to zero.
    "mpegts_copyts": "1",
    "avoid_negative_ts": "disabled",
    # A rendition waits at most 1 s for the audio before its video is written out.
    "max_interleave_delta": "1000000",
}

_OUTPUT_CHUNK = 188 * 64
"""AVIO buffer of each rendition: ``on_data`` gets chunks of at most this many bytes."""

_PRIME_MAX_PACKETS = 512
_PRIME_MAX_SECONDS = 1.5
"""How much of the source is held back at most while waiting for audio parameters."""

_QUEUED_FRAMES = 4
"""Decoded frames waiting per rendition before the decoder waits for the encoder."""

_LIVE_QUEUED_FRAMES = 2
"""Decoded frames waiting for a staged (live AI) rendition."""

_LIVE_SLACK = 0.25
"""Seconds a staged rendition's input may fall behind real time before frames are dropped.

Input ahead of real time (a buffered upload, a retry) waits for the stage instead: every
frame is processed. Input in real time that the stage cannot keep up with makes decoding
wait, falls behind, and from then on a frame that finds the queue full is dropped."""

_LIVE_MUX_OPTIONS = {**_MUX_OPTIONS, "flush_packets": "1", "omit_video_pes_length": "0"}
"""A staged rendition's muxer hands each packet on at once instead of filling a buffer, and
writes each video PES's length, so a reader knows a frame is whole as soon as it is in."""

_SCALER = Interpolation.BICUBIC
"""libswscale algorithm (FFmpeg's scale filter default)."""

_FALLBACK_TICK = Fraction(1, 90_000)
"""MPEG-TS time base, if a stream has none."""

_FALLBACK_RATE = Fraction(30)
"""Frame rate assumed when neither the container nor the stream timing says."""

_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
_AAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "7.1"}


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
    """MPEG-TS bytes written (passed to ``on_data``)."""
    duration_ms: int
    """Span of the encoded video, from the first frame's timestamp to the end of the last."""
    dropped: int = 0
    """Decoded frames left out because a staged rendition's stage was still busy."""


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes | None: ...


class FrameStage(Protocol):
    """Work done on a rendition's frames between scaling and encoding (a live AI pipeline).

    ``push`` takes a scaled ``yuv420p`` frame and returns the frames ready for the encoder
    (none while a batch is being gathered), each keeping its input's ``pts``; ``flush``
    returns what is still gathered at the end. Both run on the rendition's worker thread.
    ``workers.pipelines.PipelineRunner`` is one.
    """

    def push(self, frame: VideoFrame, /) -> Sequence[VideoFrame]: ...

    def flush(self) -> Sequence[VideoFrame]: ...


class LadderTranscoder:
    """Decodes an MPEG-TS segment once and encodes it to every profile of a ladder."""

    def __init__(
        self,
        profiles: Sequence[VideoProfile],
        *,
        encoder: str = "auto",
        threads: int = 0,
        stages: Mapping[str, FrameStage] | None = None,
    ) -> None:
        """Sets up a ladder.

        Args:
            profiles: the renditions to produce, in output index order.
            encoder: ``auto``, ``nvenc`` or ``x264`` (see ``workers.gpu.choose_encoder``).
            threads: encoder threads per rendition; 0 lets the encoder choose.
            stages: per profile name, a :class:`FrameStage` its frames go through. Such a
                rendition is live: its encoder runs with zero-latency settings (no B-frames,
                no lookahead), each packet is muxed out at once, and when its stage falls
                behind, new frames are dropped (and counted) instead of waiting.

        Raises:
            MediaError: no profiles, or the encoder cannot run here.
            ValueError: ``threads`` is negative.
        """
        if not profiles:
            raise MediaError("a ladder needs at least one profile")
        if threads < 0:
            raise ValueError("threads must be >= 0")
        self._profiles = tuple(profiles)
        self._encoder = choose_encoder(encoder)
        self._threads = threads
        self._stages = dict(stages or {})
        unknown = set(self._stages) - {p.name for p in self._profiles}
        if unknown:
            raise MediaError(f"stages for unknown renditions: {', '.join(sorted(unknown))}")

    @property
    def encoder(self) -> str:
        """The FFmpeg encoder in use: ``libx264`` or ``h264_nvenc``."""
        return self._encoder

    @property
    def profiles(self) -> tuple[VideoProfile, ...]:
        return self._profiles

    def transcode(
        self,
        source: io.RawIOBase | BinaryIO | _Readable,
        on_data: DataCallback,
        on_start: StartCallback | None = None,
        *,
        started: float | None = None,
    ) -> list[RenditionOutput]:
        """Transcodes one MPEG-TS stream read from ``source``; blocks until it ends.

        Args:
            source: blocking reader of MPEG-TS bytes; ``read()`` returns ``b""`` at the end.
            on_data: called with ``(rendition index, bytes)`` as output is produced.
            on_start: called once with every rendition's name and size, before any data.
            started: ``time.monotonic()`` when the input began to arrive: a staged
                rendition's real time starts there, so frames that waited before decoding
                began (a model loading) count as late. Default: the first frame's decoding.

        Returns:
            One result per profile, in profile order.

        Raises:
            MediaError: the input is empty or not decodable MPEG-TS video, or encoding failed.
        """
        with _media_errors():
            options = _LIVE_PROBE_OPTIONS if self._stages else _PROBE_OPTIONS
            container = av.open(_SourceReader(source), mode="r", format="mpegts", options=options)
            try:
                run = _LadderRun(
                    self._profiles,
                    self._encoder,
                    self._threads,
                    container,
                    self._stages,
                    started=started,
                )
                return run.run(on_data, on_start)
            finally:
                container.close()

    def transcode_path(self, path: Path, on_data: DataCallback) -> list[RenditionOutput]:
        """Transcodes a media file of any container FFmpeg reads (MP4, FLV, MPEG-TS, ...).

        Raises:
            MediaError: as :meth:`transcode`.
        """
        with _media_errors():
            container = av.open(str(path), mode="r")
            try:
                run = _LadderRun(
                    self._profiles, self._encoder, self._threads, container, self._stages
                )
                return run.run(on_data)
            finally:
                container.close()


def transcode_file(
    src: Path,
    out_dir: Path,
    profiles: Sequence[VideoProfile],
    *,
    encoder: str = "auto",
    threads: int = 0,
) -> list[RenditionOutput]:
    """Transcodes the media file ``src`` into ``out_dir/{profile name}.ts`` per profile.

    Raises:
        MediaError: as :meth:`LadderTranscoder.transcode`; OSError for file problems.
    """
    transcoder = LadderTranscoder(profiles, encoder=encoder, threads=threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        outputs = [stack.enter_context((out_dir / f"{p.name}.ts").open("wb")) for p in profiles]

        def write(index: int, data: bytes) -> None:
            outputs[index].write(data)

        return transcoder.transcode_path(src, write)


@contextlib.contextmanager
def _media_errors() -> Iterator[None]:
    """Maps FFmpeg's errors to MediaError: the one place third-party errors are translated."""
    try:
        yield
    except av.error.EOFError as exc:
        raise MediaError("the input ended with no MPEG-TS video in it") from exc
    except av.error.InvalidDataError as exc:
        raise MediaError(f"the input is not valid MPEG-TS video: {exc}") from exc
    except av.FFmpegError as exc:
        raise MediaError(f"transcoding failed: {exc}") from exc


class _SourceReader:
    """Hands PyAV only ``read()``: the source is never seeked, so pipes behave like files."""

    __slots__ = ("_read",)

    def __init__(self, source: _Readable) -> None:
        self._read = source.read

    def read(self, size: int = -1) -> bytes:
        return self._read(size) or b""


class _RenditionSink:
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


@attrs.define(eq=False)
class _Rendition:
    """One rendition while it is produced.

    The calling thread submits decoded frames, muxes audio and drains encoded packets; a
    worker thread owns the scaler and the encoder (FFmpeg drops the GIL in both) and, for a
    staged rendition, muxes each packet it encodes at once (``mux_lock`` orders the two).
    """

    profile: VideoProfile
    width: int
    height: int
    sink: _RenditionSink
    container: av.container.OutputContainer
    video: VideoStream
    audio: dict[int, AudioStream]
    """Output audio stream per source stream index."""
    step: Fraction | None
    """Output frame interval in source ticks when the frame rate is converted, else None."""
    tolerance: int
    """Half a source frame, in ticks: how early a frame may fill an output slot."""
    interval: Fraction
    """Output frame interval in source ticks, for the duration."""
    shared_frames: threading.Lock
    """Held while a frame that is not scaled (so shared by renditions) gets stamped."""
    reformatter: VideoReformatter = attrs.field(factory=VideoReformatter)
    inbox: queue.Queue[_Job | None] = attrs.field(factory=lambda: queue.Queue(_QUEUED_FRAMES))
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
    stage: FrameStage | None = None
    """Live AI work between scaling and encoding; frames are dropped when it lags."""
    dropped: int = 0
    """Frames dropped because the stage's queue was full (calling thread)."""
    carry_key: bool = False
    """A dropped frame was a keyframe: the next frame queued is marked as one."""
    key_pts: set[int] = attrs.Factory(set)
    """Timestamps of staged frames that must come out as keyframes (worker thread)."""
    anchor: tuple[float, int] | None = None
    """(monotonic time, pts) of the first staged frame: where real time starts."""
    started: float | None = None
    """When the input began to arrive; the anchor's time if given."""
    mux_lock: threading.Lock = attrs.Factory(threading.Lock)
    """A staged rendition's worker thread muxes its own packets; audio comes from the
    calling thread."""

    # -- calling thread ------------------------------------------------------------------

    def start(self) -> None:
        """Writes the header (opening the encoder) and starts the worker thread."""
        self.container.start_encoding()
        self.worker = threading.Thread(
            target=self._work, name=f"lpstream-encode-{self.profile.name}", daemon=True
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
                self.inbox.put((frame, pts, key), block=behind <= _LIVE_SLACK)
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
        if stream is not None:
            packet.stream = stream
            with self.mux_lock:
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
            ticks = self.last_pts - self.first_pts + self.interval
            duration_ms = round(ticks * self.video.codec_context.time_base * 1000)
        return RenditionOutput(
            name=self.profile.name,
            width=self.width,
            height=self.height,
            frames=self.frames,
            pixels=self.frames * self.width * self.height,
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
            frame, self.width, self.height, "yuv420p", interpolation=_SCALER
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
            if self.step is None:
                self._encode_one(out, pts, key)
                return
            if self.first_pts is None:
                self.first_pts = pts
            key = key or self.key_pending
            while True:
                slot_pts = self.first_pts + round(self.slot * self.step)
                if slot_pts > pts + self.tolerance:
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


class _LadderRun:
    """One call of ``transcode``: the demux/decode loop and the renditions it feeds."""

    def __init__(
        self,
        profiles: tuple[VideoProfile, ...],
        encoder: str,
        threads: int,
        container: av.container.InputContainer,
        stages: Mapping[str, FrameStage],
        *,
        started: float | None = None,
    ) -> None:
        self._profiles = profiles
        self._stages = stages
        self._encoder = encoder
        self._threads = threads
        self._input = container
        if not container.streams.video:
            raise MediaError("the input has no video stream")
        self._video = container.streams.video[0]
        self._tick = self._video.time_base or Fraction(1, 90_000)
        # Frame threads hold a frame each before the first comes out: a live (staged) job
        # decodes with slice threads only, which add no delay.
        self._video.codec_context.thread_type = "SLICE" if stages else "AUTO"
        self._video.codec_context.thread_count = 0
        self._audio = [s for s in container.streams.audio if s.codec_context is not None]
        self._tracks: dict[int, _AudioTrack] = {}
        self._packet_pts: list[int] = []
        self._renditions: list[_Rendition] = []
        self._pending_audio: list[tuple[int, Packet[Stream]]] = []
        self._shared_frames = threading.Lock()
        self.started = started
        """When the input began to arrive (monotonic), for staged renditions' real time."""

    def run(
        self, on_data: DataCallback, on_start: StartCallback | None = None
    ) -> list[RenditionOutput]:
        video_index = self._video.index
        last_pts: int | None = None
        decoded = 0
        try:
            for packet in self._primed(self._input.demux(self._video, *self._audio)):
                # Flush packets carry no stream_index: ask the stream.
                index = packet.stream.index
                if index != video_index:
                    if packet.size:
                        self._on_audio(index, packet)
                    continue
                try:
                    frames = self._video.decode(packet)
                except av.error.InvalidDataError:
                    continue  # one broken packet; the decoder resyncs at the next one
                for frame in frames:
                    pts = frame.pts
                    if pts is None:
                        pts = 0 if last_pts is None else last_pts + 1
                    elif last_pts is not None and pts <= last_pts:
                        continue  # damaged input went back in time; encoders need order
                    last_pts = pts
                    if not self._renditions:
                        self._start(frame, on_data, on_start)
                    decoded += 1
                    key = frame.key_frame
                    for rendition in self._renditions:
                        rendition.submit(frame, pts, key)
            if not decoded:
                raise MediaError("the input holds no decodable video frames")
            return [rendition.finish() for rendition in self._renditions]
        finally:
            # On error: stop the workers, drop the outputs without writing trailers (on_data
            # may be what failed). After success this finds nothing left to do.
            for rendition in self._renditions:
                rendition.abort()
            self._renditions.clear()

    def _primed(self, packets: Iterator[Packet[Stream]]) -> Iterator[Packet[Stream]]:
        """Yields every packet, holding the first ones back until the audio is known."""
        held: list[Packet[Stream]] = []
        for packet in packets:
            held.append(packet)
            if self._note_priming(packet) or len(held) >= _PRIME_MAX_PACKETS:
                break
        self._audio = [s for s in self._audio if s.index in self._tracks]
        return itertools.chain(held, packets)

    def _note_priming(self, packet: Packet[Stream]) -> bool:
        """Learns from one held packet; True when priming can end."""
        index = packet.stream.index
        if index == self._video.index:
            if packet.pts is not None:
                self._packet_pts.append(packet.pts)
                span = (packet.pts - self._packet_pts[0]) * self._tick
                if abs(span) >= _PRIME_MAX_SECONDS:
                    return True
        elif packet.size and index not in self._tracks:
            track = _AudioTrack.from_packet(packet)
            if track is not None:
                self._tracks[index] = track
        return all(s.index in self._tracks for s in self._audio)

    def _on_audio(self, index: int, packet: Packet[Stream]) -> None:
        track = self._tracks.get(index)
        if track is None or not track.stamp(packet):
            return
        if self._renditions:
            for rendition in self._renditions:
                rendition.mux_audio(index, packet)
        else:
            self._pending_audio.append((index, packet))

    def _start(
        self, frame: VideoFrame, on_data: DataCallback, on_start: StartCallback | None
    ) -> None:
        """Opens every rendition once the first frame gives the source size."""
        source_rate = self._source_rate()
        tick = self._tick
        for index, profile in enumerate(self._profiles):
            self._renditions.append(
                self._open_rendition(index, profile, frame, source_rate, tick, on_data)
            )
        if on_start is not None:
            on_start([(r.profile.name, r.width, r.height) for r in self._renditions])
        for index, packet in self._pending_audio:
            for rendition in self._renditions:
                rendition.mux_audio(index, packet)
        self._pending_audio.clear()
        for rendition in self._renditions:
            rendition.start()

    def _open_rendition(
        self,
        index: int,
        profile: VideoProfile,
        frame: VideoFrame,
        source_rate: Fraction,
        tick: Fraction,
        on_data: DataCallback,
    ) -> _Rendition:
        width, height = scaled_size(frame.width, frame.height, profile)
        stage = self._stages.get(profile.name)
        convert = stage is None and bool(profile.fps) and Fraction(profile.fps) != source_rate
        rate = Fraction(profile.fps) if convert else source_rate
        sink = _RenditionSink(index, on_data)
        container = av.open(
            sink,
            mode="w",
            format="mpegts",
            container_options=_MUX_OPTIONS if stage is None else _LIVE_MUX_OPTIONS,
            buffer_size=_OUTPUT_CHUNK,
        )
        options = _encoder_options(self._encoder, profile, rate, live=stage is not None)
        video = container.add_stream(self._encoder, rate=rate, options=options)
        if not isinstance(video, VideoStream):
            raise MediaError(f"{self._encoder} is not a video encoder")
        ctx = video.codec_context
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = tick
        ctx.framerate = rate
        ctx.bit_rate = profile.bitrate
        ctx.thread_count = self._threads
        video.time_base = tick
        audio: dict[int, AudioStream] = {}
        for source in self._audio:
            out = container.add_stream_from_template(source)
            track = self._tracks[source.index]
            if not out.codec_context.sample_rate:
                out.codec_context.sample_rate = track.sample_rate
                if track.layout is not None:
                    out.codec_context.layout = track.layout
            audio[source.index] = out
        return _Rendition(
            profile=profile,
            width=width,
            height=height,
            sink=sink,
            container=container,
            video=video,
            audio=audio,
            step=1 / (rate * tick) if convert else None,
            tolerance=int(1 / (source_rate * tick) / 2),
            interval=1 / (rate * tick),
            shared_frames=self._shared_frames,
            inbox=queue.Queue(_QUEUED_FRAMES if stage is None else _LIVE_QUEUED_FRAMES),
            stage=stage,
            started=self.started,
        )

    def _source_rate(self) -> Fraction:
        """The source frame rate: container, then codec timing, then packet timestamps."""
        stream = self._video
        # Not guessed_rate: for H.264 it is often twice the frame rate (field ticks).
        for rate in (stream.average_rate, stream.codec_context.framerate):
            if rate and 1 <= rate <= 240:
                return Fraction(rate)
        pts = sorted(set(self._packet_pts))
        deltas = sorted(b - a for a, b in itertools.pairwise(pts))
        if deltas:
            estimate = 1 / (deltas[len(deltas) // 2] * self._tick)
            if 1 <= estimate <= 240:
                return estimate.limit_denominator(1001)
        return _FALLBACK_RATE


@attrs.define
class _AudioTrack:
    """A source audio stream that is copied: its parameters and its running timestamp."""

    sample_rate: int
    layout: str | None
    ticks_per_sample: Fraction
    adts: bool
    """AAC in ADTS frames (as MPEG-TS carries it): each packet must start with a header."""
    next_pts: int | None = None
    last_dts: int | None = None

    @classmethod
    def from_packet(cls, packet: Packet[Stream]) -> _AudioTrack | None:
        """Parameters from the probe, else from the packet's ADTS header; None if unknown."""
        stream = packet.stream
        if not isinstance(stream, AudioStream) or stream.time_base is None:
            return None
        sample_rate, layout = stream.codec_context.sample_rate, None
        if not sample_rate:
            if stream.codec_context.name != "aac":
                return None
            header = _adts_header(packet)
            if header is None:
                return None
            sample_rate, layout = header[0], _AAC_LAYOUTS.get(header[1])
        return cls(
            sample_rate=sample_rate,
            layout=layout,
            ticks_per_sample=1 / (sample_rate * stream.time_base),
            adts=stream.codec_context.name == "aac" and not stream.codec_context.extradata,
        )

    def stamp(self, packet: Packet[Stream]) -> bool:
        """Gives ``packet`` a timestamp if the demuxer could not; False to drop it.

        With a small probe the demuxer does not know the AAC frame duration, so only the
        first frame of each PES packet carries a timestamp; the others follow it.
        """
        if packet.is_corrupt:
            return False
        header = _adts_header(packet) if self.adts else None
        if self.adts and header is None:
            return False  # damaged: the MPEG-TS muxer needs ADTS framing for AAC
        if packet.pts is None:
            if self.next_pts is None or header is None:
                return False
            packet.pts = packet.dts = self.next_pts
            packet.duration = round(header[2] * self.ticks_per_sample)
        elif not packet.duration and header is not None:
            packet.duration = round(header[2] * self.ticks_per_sample)
        dts = packet.pts if packet.dts is None else packet.dts
        if self.last_dts is not None and dts <= self.last_dts:
            return False  # damaged input went back in time; the muxer would refuse it
        self.last_dts = dts
        self.next_pts = packet.pts + (packet.duration or 0)
        return True


def _adts_header(packet: Packet[Stream]) -> tuple[int, int, int] | None:
    """(sample rate, channel configuration, samples) of an ADTS frame, or None."""
    if packet.size < 7:
        return None
    header = bytes(memoryview(packet)[:7])
    if header[0] != 0xFF or header[1] & 0xF0 != 0xF0:
        return None
    rate_index = (header[2] >> 2) & 0x0F
    if rate_index >= len(_ADTS_RATES):
        return None
    channels = ((header[2] & 0x01) << 2) | (header[3] >> 6)
    samples = ((header[6] & 0x03) + 1) * 1024
    return _ADTS_RATES[rate_index], channels, samples


def _encoder_options(
    encoder: str, profile: VideoProfile, rate: Fraction, *, live: bool = False
) -> dict[str, str]:
    """Encoder options for one rendition: rate control, GOP and ladder-wide keyframes;
    ``live`` adds x264's zero-latency tuning (no B-frames, no lookahead, no frame threads)."""
    keyint = max(1, round(profile.gop * rate)) if profile.gop > 0 else 0
    options = {
        "maxrate": str(profile.bitrate * 6 // 5),
        "bufsize": str(profile.bitrate * 2),
        # A frame sent with pict_type I becomes an IDR frame (source keyframes).
        "forced-idr": "1",
    }
    if profile.profile:
        options["profile"] = profile.profile
    if encoder == NVENC:
        options.update(
            {"preset": "p4", "tune": "ll", "rc": "cbr", "no-scenecut": "1", "zerolatency": "1"}
        )
        options["maxrate"] = str(profile.bitrate)
        if keyint:
            options["g"] = str(keyint)
            options["strict_gop"] = "1"
        return options
    options["preset"] = profile.preset or "veryfast"
    options["x264-params"] = _x264_params(keyint)
    if live:
        options["tune"] = "zerolatency"
    return options


def _x264_params(keyint: int) -> str:
    """x264 settings that keep keyframes where the ladder puts them (no scene cuts)."""
    params = "scenecut=0"
    if keyint:
        params += f":keyint={keyint}:min-keyint={keyint}"
    return params
