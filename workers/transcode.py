"""The ladder transcoder: one segment in, one stream per rendition out (MPEG-TS for an H.264
profile, fragmented MP4 for HEVC and AV1).

How this works
--------------
This is blocking code; the node runs :meth:`LadderTranscoder.transcode` in a worker thread.

* The source is read through a small non-seekable wrapper, so a pipe or an upload that is
  still arriving works: the demuxer probes only the first 32 KiB and decoding starts long
  before the last byte is in.
* The video is decoded once, on the calling thread (``workers/ladder/decode.py``, which also
  holds back the first packets until the audio parameters are known). Each rendition is
  planned when the first frame sizes the source (``plan.py``: size, frame rate, encoder
  options from ``encoding.py``) and then scaled, encoded and muxed on a worker thread of its
  own (``rendition.py``); audio is copied unchanged (``audio.py``).
* GOPs are aligned across the ladder and timestamps are the source's, so renditions line up
  with the source segment in HLS and segment boundaries coincide.
* A staged (live AI) rendition runs its frames through a :class:`FrameStage` and drops frames
  when the stage falls more than ``_LIVE_SLACK`` seconds behind real time.
* Each rendition's output is handed to ``on_data`` as its muxer writes it, so output streams
  out while input streams in.
* Every FFmpeg error becomes a :class:`~lpstream.errors.MediaError` in one place
  (:func:`_media_errors`); exceptions raised by the caller's ``read()``/``on_data`` pass
  through unchanged.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

import av
import av.container
import av.error

from lpstream.errors import MediaError
from lpstream.media import VideoProfile
from lpstream.media.segment_format import SNIFF_BYTES, segment_format
from workers.gpu import choose_encoder
from workers.ladder.decode import LadderRun, StartCallback
from workers.ladder.encoding import encoder_options
from workers.ladder.rendition import DataCallback, FrameStage, RenditionOutput

__all__ = [
    "DataCallback",
    "FrameStage",
    "LadderTranscoder",
    "RenditionOutput",
    "StartCallback",
    "encoder_options",
    "transcode_file",
]

_PROBE_OPTIONS = {"probesize": "32768", "analyzeduration": "0"}
"""Demuxer options: start after 32 KiB; stream parameters come from the data itself."""

_LIVE_PROBE_OPTIONS = {**_PROBE_OPTIONS, "probesize": "8192", "fflags": "+noparse+nofillin"}
"""A live job's input has one access unit per PES with its length written, so each PES is
taken as a packet when it ends. FFmpeg's H.264 parser would hold every frame until the next
one starts (one frame interval, 33 ms at 30 fps); audio PES may then carry several ADTS
frames in one packet, which pass through as they are. The probe stops at 8 KiB (FFmpeg
still reads on until it has the picture's size): nothing is decoded before the probe ends,
and 32 KiB is most of a second of a small stream (0.73 s at 320x180, 400 kb/s; 8 KiB:
0.2 s); the audio's parameters come from its first ADTS header either way."""

_LIVE_SLACK = 0.25
"""Seconds a staged rendition's input may fall behind real time before frames are dropped.

Input ahead of real time (a buffered upload, a retry) waits for the stage instead: every
frame is processed. Input in real time that the stage cannot keep up with makes decoding
wait, falls behind, and from then on a frame that finds the queue full is dropped. Read at
each ``transcode`` call (benchmarks set it to infinity to process every frame)."""

_MAX_PROBE_WAIT = 1.0
"""Seconds of waiting for the demuxer's probe bytes at most added to a live job's slack."""

_FILE_SUFFIXES = {"h264": ".ts", "hevc": ".mp4", "av1": ".mp4"}
"""The file name ending of a rendition written by :func:`transcode_file`, per codec."""

_encoder_options = encoder_options
"""The encoder options, under the name ``benchmarks/harness`` reads them by."""


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes | None: ...


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
        """The ladder's encoder, ``libx264`` or ``h264_nvenc``: H.264 renditions run on it, and
        HEVC and AV1 ones on that codec's NVENC encoder where it is ``h264_nvenc`` and the GPU
        has one, else on libx265 and SVT-AV1 (``workers.gpu.encoder_for``)."""
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
        """Transcodes one segment read from ``source`` (MPEG-TS, or fragmented MP4 for AV1 and
        VP9, told apart by its first bytes); blocks until it ends.

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
            opening = time.monotonic()
            reader = _SourceReader(source)
            kind = segment_format(reader.peek(SNIFF_BYTES))
            live = self._stages and kind == "mpegts"
            options = _LIVE_PROBE_OPTIONS if live else _PROBE_OPTIONS
            container = av.open(reader, mode="r", format=kind, options=options)
            # What arrived while the probe waited for its bytes is not late: it could not be
            # decoded sooner. A job whose input was all in (it waited for a model) waits here
            # for nothing, and its lateness still counts.
            probe_wait = min(time.monotonic() - opening, _MAX_PROBE_WAIT)
            return self._run(
                container, on_data, on_start, started=started, slack=_LIVE_SLACK + probe_wait
            )

    def transcode_path(self, path: Path, on_data: DataCallback) -> list[RenditionOutput]:
        """Transcodes a media file of any container FFmpeg reads (MP4, FLV, MPEG-TS, ...).

        Raises:
            MediaError: as :meth:`transcode`.
        """
        with _media_errors():
            return self._run(av.open(str(path), mode="r"), on_data)

    def _run(
        self,
        container: av.container.InputContainer,
        on_data: DataCallback,
        on_start: StartCallback | None = None,
        *,
        started: float | None = None,
        slack: float | None = None,
    ) -> list[RenditionOutput]:
        """Runs the ladder over an open input, which it closes; ``slack`` replaces
        ``_LIVE_SLACK``."""
        try:
            run = LadderRun(
                self._profiles,
                self._encoder,
                self._threads,
                container,
                self._stages,
                started=started,
                live_slack=_LIVE_SLACK if slack is None else slack,
            )
            return run.run(on_data, on_start)
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
    """Transcodes the media file ``src`` into ``out_dir/{profile name}.ts`` per H.264 profile,
    ``.mp4`` (fragmented) per HEVC or AV1 one.

    Raises:
        MediaError: as :meth:`LadderTranscoder.transcode`; OSError for file problems.
    """
    transcoder = LadderTranscoder(profiles, encoder=encoder, threads=threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        outputs = [
            stack.enter_context((out_dir / f"{p.name}{_FILE_SUFFIXES[p.codec]}").open("wb"))
            for p in profiles
        ]

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
    """Hands PyAV only ``read()``: the source is never seeked, so pipes behave like files.
    Its first bytes can be looked at (``peek``) before PyAV reads them."""

    __slots__ = ("_head", "_read")

    def __init__(self, source: _Readable) -> None:
        self._read = source.read
        self._head = b""

    def peek(self, size: int) -> bytes:
        """The first ``size`` bytes (fewer if the source ends first), still to be read."""
        while len(self._head) < size:
            more = self._read(size - len(self._head)) or b""
            if not more:
                break
            self._head += more
        return self._head

    def read(self, size: int = -1) -> bytes:
        if self._head:
            head = self._head if size < 0 else self._head[:size]
            self._head = self._head[len(head) :]
            return head
        return self._read(size) or b""
