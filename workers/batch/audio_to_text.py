"""``audio-to-text``: speech recognition with a transformers Whisper model, by 30 s windows.

How this works
--------------
The input is an audio file's bytes, in any container and codec PyAV (FFmpeg) reads: wav, mp3,
flac, ogg/opus, m4a/aac, webm... Its duration is read from the container before anything is
decoded (:func:`audio_duration_ms`: the container's duration, else the stream's, else the
span of its packets, which demuxing finds without decoding); that figure, in milliseconds
rounded up, is both the quote and what is billed, so the two always agree. Files over
:data:`MAX_INPUT_BYTES` or :data:`MAX_DURATION_MS` are refused (413) before decoding; bytes
with no audio stream PyAV can read are refused (400).

``run_batch`` decodes each request's first audio stream, resampled by PyAV to 16 kHz mono
float32 (Whisper's input) and cut at the billed duration, so a header that understates the
length cannot buy more work than it pays for. The samples are split into consecutive 30 s
windows (Whisper's input length; the last one shorter), and the windows of every request in
the batch go through Whisper's feature extractor and ``generate`` together,
:data:`WINDOWS_PER_CALL` at a time: concurrent requests share the model's batches. Each
window is transcribed on its own (language detected per window, task ``transcribe``, no
timestamp tokens): windows do not overlap, so a word spoken across a boundary may be split.
The text is the windows' texts joined; with ``return_timestamps`` true (the default, as in
ai-worker) each window is a chunk ``{"timestamp": [start, end], "text"}`` in seconds, with
false ``chunks`` is empty. Whisper's own segment (``sentence``) and ``word`` timestamps are
not produced, and asking for them is refused (400).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Hashable, Sequence
from fractions import Fraction
from typing import Any, ClassVar

import attrs
import av
import numpy as np

from workers.batch.base import (
    BadRequestError,
    BatchOutput,
    BatchRequest,
    BatchSink,
    BatchSpec,
    BatchUnit,
    BatchUsage,
    RequestTooLargeError,
    params_of,
)
from workers.batch.batched import BatchedPipeline
from workers.pipelines.offline import TransformersModel, load_transformers
from workers.pipelines.params import PipelineError, StrParam

__all__ = [
    "CAPABILITY",
    "MAX_DURATION_MS",
    "MAX_INPUT_BYTES",
    "OUTPUTS",
    "RETURN_TIMESTAMPS",
    "SAMPLE_RATE",
    "WINDOWS_PER_CALL",
    "WINDOW_SECONDS",
    "AudioToTextPipeline",
    "audio_duration_ms",
    "decode_audio",
    "return_timestamps",
    "windows",
]

CAPABILITY = "audio-to-text"
"""The capability served."""

MAX_INPUT_BYTES = 50 * 1024 * 1024
"""Largest audio file taken (ai-worker's limit), 413 beyond."""

MAX_DURATION_MS = 30 * 60 * 1000
"""Longest audio taken: 30 minutes, 413 beyond (read from the container, before decoding)."""

SAMPLE_RATE = 16_000
"""Whisper's input rate, in samples per second (mono)."""

WINDOW_SECONDS = 30
"""Whisper's input window."""

WINDOWS_PER_CALL = 16
"""Most windows in one ``generate`` call (ai-worker's batch size)."""

RETURN_TIMESTAMPS = StrParam(
    name="return_timestamps",
    default="true",
    max_length=16,
    description="true: the text's 30 s windows as chunks with their start and end; false: no "
    "chunks",
)
"""Whether the answer lists the windows as chunks (:func:`return_timestamps`)."""

_TRUE = ("true", "1")
_FALSE = ("false", "0")


def return_timestamps(value: str) -> bool:
    """``return_timestamps`` as a switch (``true``/``1`` or ``false``/``0``, any case).

    Raises:
        BadRequestError: ``sentence``, ``word`` or anything else.
    """
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise BadRequestError(
        f"{CAPABILITY}: return_timestamps {value[:32]!r} is not supported: chunks are "
        f"Whisper's {WINDOW_SECONDS} s windows; use true or false"
    )


def _open(data: bytes) -> Any:
    if not data:
        raise BadRequestError(f"{CAPABILITY}: the request has no audio file")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError) as exc:
        raise BadRequestError(f"{CAPABILITY}: not an audio file PyAV can read: {exc}") from None
    if not container.streams.audio:
        container.close()
        raise BadRequestError(f"{CAPABILITY}: not an audio file: it has no audio stream")
    return container


def _header_seconds(container: Any) -> Fraction | None:
    """The duration the container or its first audio stream states, if any."""
    if container.duration is not None and container.duration > 0:
        return Fraction(container.duration, av.time_base)
    stream = container.streams.audio[0]
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        return Fraction(stream.duration) * Fraction(stream.time_base)
    return None


def _packet_seconds(container: Any) -> Fraction:
    """The span of the first audio stream's packets (demuxed, not decoded)."""
    stream = container.streams.audio[0]
    first: int | None = None
    last: int | None = None
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        end = packet.pts + (packet.duration or 0)
        first = packet.pts if first is None else min(first, packet.pts)
        last = end if last is None else max(last, end)
    if first is None or last is None or stream.time_base is None:
        return Fraction(0)
    return Fraction(last - first) * Fraction(stream.time_base)


def audio_duration_ms(data: bytes) -> int:
    """The audio's duration in milliseconds, rounded up, without decoding it (see the module
    comment): what a request is quoted and billed.

    Raises:
        BadRequestError: not audio PyAV can read, or no duration.
        RequestTooLargeError: longer than :data:`MAX_DURATION_MS`.
    """
    container = _open(data)
    try:
        seconds = _header_seconds(container)
        if seconds is None:
            seconds = _packet_seconds(container)
    except av.FFmpegError as exc:
        raise BadRequestError(f"{CAPABILITY}: cannot read the audio file: {exc}") from None
    finally:
        container.close()
    ms = math.ceil(seconds * 1000)
    if ms <= 0:
        raise BadRequestError(f"{CAPABILITY}: the audio file holds no audio")
    if ms > MAX_DURATION_MS:
        raise RequestTooLargeError(
            f"{CAPABILITY}: the audio is {ms / 1000:.1f} s long, "
            f"the limit is {MAX_DURATION_MS // 1000} s"
        )
    return ms


def decode_audio(data: bytes, duration_ms: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The first audio stream's samples, 16 kHz mono float32, cut at ``duration_ms``.

    Raises:
        BadRequestError: not audio PyAV can read, it fails to decode, or no samples decode.
    """
    limit = math.ceil(duration_ms * SAMPLE_RATE / 1000)
    pieces: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    container = _open(data)
    try:
        count = 0
        for frame in container.decode(container.streams.audio[0]):
            count += _resample(resampler, frame, pieces)
            if count >= limit:
                break
        _resample(resampler, None, pieces)
    except (av.FFmpegError, ValueError) as exc:
        raise BadRequestError(f"{CAPABILITY}: the audio cannot be decoded: {exc}") from None
    finally:
        container.close()
    if not pieces:
        raise BadRequestError(f"{CAPABILITY}: no audio could be decoded from the file")
    return np.concatenate(pieces)[:limit].astype(np.float32, copy=False)


def _resample(
    resampler: Any, frame: Any, pieces: list[np.ndarray[Any, np.dtype[np.float32]]]
) -> int:
    """Adds ``frame`` resampled (None: what the resampler holds) to ``pieces``; returns the
    number of samples added."""
    added = 0
    for out in resampler.resample(frame):
        samples = out.to_ndarray().reshape(-1)
        pieces.append(samples)
        added += samples.shape[0]
    return added


def windows(
    samples: np.ndarray[Any, np.dtype[np.float32]],
) -> list[tuple[float, float, np.ndarray[Any, np.dtype[np.float32]]]]:
    """``samples`` cut into consecutive windows of :data:`WINDOW_SECONDS`: (start s, end s,
    samples) each."""
    size = WINDOW_SECONDS * SAMPLE_RATE
    return [
        (i / SAMPLE_RATE, min(i + size, samples.shape[0]) / SAMPLE_RATE, samples[i : i + size])
        for i in range(0, samples.shape[0], size)
    ]


@attrs.frozen(kw_only=True)
class _Job:
    """One request of a batch, decoded: where its windows are among the batch's."""

    index: int
    """Its position in the batch."""
    duration_ms: int
    """What it is billed."""
    timestamps: bool
    """Whether its answer lists the windows as chunks."""
    spans: tuple[tuple[float, float], ...]
    """Each of its windows' start and end, in seconds."""
    first: int
    """Position of its first window among the batch's windows."""


OUTPUTS = (BatchOutput(name="text", content_type="application/json"),)
"""The one track: ``{"text", "chunks"}`` as ai-worker's TextResponse."""


class AudioToTextPipeline(BatchedPipeline):
    """Whisper speech recognition; concurrent requests share ``generate`` calls (see the
    module comment)."""

    spec: ClassVar[BatchSpec] = BatchSpec(
        capability=CAPABILITY,
        description="Transcribes speech in an audio file to text with Whisper.",
        unit=BatchUnit.MILLISECOND,
        params=(RETURN_TIMESTAMPS,),
        max_batch=8,
        max_input=MAX_INPUT_BYTES,
    )

    def __init__(self) -> None:
        self._whisper: TransformersModel | None = None

    @classmethod
    def check_request(cls, request: BatchRequest) -> None:
        return_timestamps(params_of(request).get_str("return_timestamps"))
        audio_duration_ms(request.input)

    @classmethod
    def quote(cls, request: BatchRequest) -> int:
        return audio_duration_ms(request.input)

    def batch_key(self, request: BatchRequest) -> Hashable | None:
        return CAPABILITY  # every request's windows can share a generate call

    def load(self, path: str, device: str) -> None:
        whisper = load_transformers(
            path, device, "AutoProcessor", "WhisperForConditionalGeneration", CAPABILITY
        )
        processor = whisper.preprocessor
        if not hasattr(processor, "feature_extractor") or not hasattr(processor, "tokenizer"):
            raise PipelineError(f"{CAPABILITY}: {path!r} has no Whisper processor")
        self._whisper = whisper

    def run_batch(
        self, requests: Sequence[BatchRequest], sinks: Sequence[BatchSink]
    ) -> list[BatchUsage | PipelineError]:
        if self._whisper is None:
            return [PipelineError(f"{CAPABILITY}: no model loaded") for _ in requests]
        results: list[BatchUsage | PipelineError] = [
            PipelineError(f"{CAPABILITY}: not run") for _ in requests
        ]
        jobs: list[_Job] = []
        audio: list[np.ndarray[Any, np.dtype[np.float32]]] = []
        for index, request in enumerate(requests):
            try:
                timestamps = return_timestamps(params_of(request).get_str("return_timestamps"))
                duration_ms = audio_duration_ms(request.input)
                cut = windows(decode_audio(request.input, duration_ms))
            except BadRequestError as exc:
                results[index] = exc
                continue
            spans = tuple((start, end) for start, end, _ in cut)
            jobs.append(
                _Job(
                    index=index,
                    duration_ms=duration_ms,
                    timestamps=timestamps,
                    spans=spans,
                    first=len(audio),
                )
            )
            audio.extend(samples for _, _, samples in cut)
        try:
            texts = self.transcribe(audio)
        except Exception as exc:  # the model failing in any of torch's or transformers' layers
            error = PipelineError(f"{CAPABILITY}: transcription failed: {exc}")
            for job in jobs:
                results[job.index] = error
            return results
        for job in jobs:
            parts = texts[job.first : job.first + len(job.spans)]
            chunks = [
                {"timestamp": [round(start, 3), round(end, 3)], "text": text}
                for (start, end), text in zip(job.spans, parts, strict=True)
            ]
            body = {"text": "".join(parts), "chunks": chunks if job.timestamps else []}
            sink = sinks[job.index]
            sink.start(OUTPUTS)
            sink.data(0, json.dumps(body, ensure_ascii=False).encode("utf-8"))
            results[job.index] = BatchUsage(units=(job.duration_ms,))
        return results

    def transcribe(self, audio: Sequence[np.ndarray[Any, np.dtype[np.float32]]]) -> list[str]:
        """The text of each window (at most :data:`WINDOW_SECONDS` of 16 kHz mono samples),
        :data:`WINDOWS_PER_CALL` windows per ``generate`` call.

        Raises:
            PipelineError: no model is loaded.
        """
        import torch

        whisper = self._whisper
        if whisper is None:
            raise PipelineError(f"{CAPABILITY}: no model loaded")
        texts: list[str] = []
        processor, model = whisper.preprocessor, whisper.model
        for at in range(0, len(audio), WINDOWS_PER_CALL):
            group = list(audio[at : at + WINDOWS_PER_CALL])
            features = processor.feature_extractor(
                group, sampling_rate=SAMPLE_RATE, return_tensors="pt"
            )
            inputs = features.input_features.to(whisper.device, dtype=model.dtype)
            with torch.inference_mode():
                ids = model.generate(inputs, task="transcribe")
            texts.extend(processor.batch_decode(ids, skip_special_tokens=True))
        return texts

    def unload(self) -> None:
        self._whisper = None
