"""The text batch pipelines on tiny random models built offline (no downloads).

``audio-to-text`` is compared with the same Whisper model and processor called directly on the
same samples; ``llm`` with the same causal LM's ``generate`` after ``torch.manual_seed`` with
the same seed. Audio files are made with PyAV in the tests.
"""

from __future__ import annotations

import io
import json
import math
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import av
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.batch.audio_to_text import (
    MAX_DURATION_MS,
    MAX_INPUT_BYTES,
    SAMPLE_RATE,
    AudioToTextPipeline,
    audio_duration_ms,
    decode_audio,
)
from workers.batch.base import (
    BadRequestError,
    BatchOutput,
    BatchRequest,
    BatchUnit,
    RequestTooLargeError,
)
from workers.batch.llm import (
    MAX_MESSAGES,
    ChatMessage,
    LlmPipeline,
    TextDeltas,
    parse_messages,
    prompt_bound,
    render_fallback,
)
from workers.pipelines.params import InvalidParamsError, PipelineError

pytest.importorskip("transformers", reason="needs lpstream[ai] (transformers)")

from benchmarks.harness.tiny_ai_text import (
    LM_CONTEXT,
    build_tiny_causal_lm,
    build_tiny_whisper,
    transformers,
)

Samples = np.ndarray[Any, np.dtype[np.float32]]


@attrs.define
class RecordingSink:
    """Keeps what a pipeline sends; ``stamps`` holds ``clock()`` at each ``data`` call."""

    clock: Any = None
    outputs: list[BatchOutput] | None = None
    calls: list[tuple[int, bytes]] = attrs.Factory(list)
    stamps: list[int] = attrs.Factory(list)

    def start(self, outputs: Sequence[BatchOutput]) -> None:
        assert self.outputs is None, "start called twice"
        self.outputs = list(outputs)

    def data(self, track: int, payload: bytes) -> None:
        assert self.outputs is not None, "data before start"
        assert 0 <= track < len(self.outputs)
        self.calls.append((track, payload))
        if self.clock is not None:
            self.stamps.append(self.clock())

    def track(self, track: int) -> bytes:
        return b"".join(payload for t, payload in self.calls if t == track)


# --- audio-to-text ----------------------------------------------------------------------------


def encode_audio(
    samples: np.ndarray[Any, Any], *, rate: int, fmt: str, codec: str, layout: str = "mono"
) -> bytes:
    """``samples`` (channels x n, int16 or float32) encoded into a ``fmt`` file in memory."""
    sample_format = "s16" if samples.dtype == np.int16 else "fltp"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        step = 960
        for at in range(0, samples.shape[1], step):
            piece = np.ascontiguousarray(samples[:, at : at + step])
            if sample_format == "s16":
                piece = piece.reshape(1, -1)  # packed
            frame = av.AudioFrame.from_ndarray(piece, format=sample_format, layout=layout)
            frame.sample_rate = rate
            frame.pts = at
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def noise_pcm(seconds: float, seed: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    """Mono 16 kHz int16 noise, 1 x n."""
    rng = np.random.default_rng(seed)
    count = round(seconds * SAMPLE_RATE)
    return (rng.standard_normal((1, count)) * 4000).astype(np.int16)


def as_float(pcm: np.ndarray[Any, np.dtype[np.int16]]) -> Samples:
    """int16 samples as FFmpeg converts them to float (exactly: a power-of-two scale)."""
    return (pcm.reshape(-1).astype(np.float32) / np.float32(32768)).astype(np.float32)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("models") / "tiny-whisper")


@pytest.fixture(scope="module")
def whisper(whisper_dir: Path) -> Iterator[AudioToTextPipeline]:
    pipeline = AudioToTextPipeline()
    pipeline.load(str(whisper_dir), "cpu")
    yield pipeline
    pipeline.unload()


@pytest.fixture(scope="module")
def direct_whisper(whisper_dir: Path) -> Any:
    """transcribe(samples) -> text, with the model and processor called directly."""
    processor = transformers.AutoProcessor.from_pretrained(whisper_dir, local_files_only=True)
    model = transformers.WhisperForConditionalGeneration.from_pretrained(
        whisper_dir, local_files_only=True
    )

    def transcribe(samples: Samples) -> str:
        features = processor.feature_extractor(
            [samples], sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features
        with torch.inference_mode():
            ids = model.generate(features, task="transcribe")
        return str(processor.batch_decode(ids, skip_special_tokens=True)[0])

    return transcribe


def transcribe_request(
    pipeline: AudioToTextPipeline, data: bytes, **params: object
) -> tuple[dict[str, Any], int, int]:
    """(the JSON answer, units billed, the quote) of one request."""
    request = AudioToTextPipeline.checked(BatchRequest(params=params, input=data))
    sink = RecordingSink()
    usage = pipeline.run(request, sink)
    assert sink.outputs == [BatchOutput(name="text", content_type="application/json")]
    return json.loads(sink.track(0)), usage.total, AudioToTextPipeline.quote(request)


@pytest.mark.parametrize(
    ("fmt", "codec"), [("wav", "pcm_s16le"), ("flac", "flac")], ids=["wav", "flac"]
)
def test_lossless_audio_gives_whisper_s_own_text(
    whisper: AudioToTextPipeline, direct_whisper: Any, fmt: str, codec: str
) -> None:
    pcm = noise_pcm(3.0, seed=1)
    data = encode_audio(pcm, rate=SAMPLE_RATE, fmt=fmt, codec=codec)
    answer, units, quote = transcribe_request(whisper, data)
    text = direct_whisper(as_float(pcm))
    assert text  # the tiny model says something
    assert answer == {"text": text, "chunks": [{"timestamp": [0.0, 3.0], "text": text}]}
    assert units == quote == 3000
    assert AudioToTextPipeline.spec.unit is BatchUnit.MILLISECOND


def test_mp3_gives_whisper_s_text_of_its_decoded_samples(
    whisper: AudioToTextPipeline, direct_whisper: Any
) -> None:
    pcm = noise_pcm(2.0, seed=2)
    data = encode_audio(as_float(pcm)[None, :], rate=SAMPLE_RATE, fmt="mp3", codec="libmp3lame")
    # What the file holds: PyAV's plain decode (16 kHz mono float, as encoded), cut at the
    # duration billed.
    with av.open(io.BytesIO(data), mode="r") as container:
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    duration = audio_duration_ms(data)
    answer, units, quote = transcribe_request(whisper, data)
    samples = decoded[: math.ceil(duration * SAMPLE_RATE / 1000)].astype(np.float32)
    assert answer["text"] == direct_whisper(samples)
    assert units == quote == duration
    assert abs(duration - 2000) < 100  # the header's figure, close to the audio encoded


@pytest.mark.parametrize(
    ("fmt", "codec", "rate"),
    [("ogg", "libopus", 48000), ("ipod", "aac", 44100), ("webm", "libopus", 48000)],
    ids=["ogg-opus", "m4a-aac", "webm-opus"],
)
def test_compressed_stereo_audio_is_resampled_to_16k_mono(
    whisper: AudioToTextPipeline, direct_whisper: Any, fmt: str, codec: str, rate: int
) -> None:
    t = np.arange(rate * 2) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    data = encode_audio(np.stack([tone, tone]), rate=rate, fmt=fmt, codec=codec, layout="stereo")
    duration = audio_duration_ms(data)
    samples = decode_audio(data, duration)
    assert samples.dtype == np.float32
    assert abs(samples.shape[0] - 2 * SAMPLE_RATE) <= SAMPLE_RATE // 50
    # The 440 Hz tone survives: its period is 16000 / 440 samples at 16 kHz.
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / samples.shape[0] - 440) < 5
    answer, units, quote = transcribe_request(whisper, data)
    assert answer["text"] == direct_whisper(samples)
    assert units == quote == duration


def test_a_file_stating_no_duration_is_billed_its_packets_span(
    whisper: AudioToTextPipeline,
) -> None:
    # A live WebM (as browsers' MediaRecorder writes it) states no duration anywhere.
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm", options={"live": "1"}) as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        assert isinstance(stream, av.AudioStream)
        for at in range(0, 48000 * 2, 960):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 960), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = 48000
            frame.pts = at
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = buffer.getvalue()
    with av.open(io.BytesIO(data), mode="r") as probe:
        assert probe.duration is None and probe.streams.audio[0].duration is None
    _, units, quote = transcribe_request(whisper, data)
    assert units == quote
    assert 2000 <= units <= 2040  # 2 s of 20 ms packets, and the codec's lead-in


def test_long_audio_is_transcribed_by_30_second_windows(
    whisper: AudioToTextPipeline, direct_whisper: Any
) -> None:
    pcm = noise_pcm(31.5, seed=3)
    data = encode_audio(pcm, rate=SAMPLE_RATE, fmt="wav", codec="pcm_s16le")
    answer, units, quote = transcribe_request(whisper, data)
    samples = as_float(pcm)
    first = direct_whisper(samples[: 30 * SAMPLE_RATE])
    second = direct_whisper(samples[30 * SAMPLE_RATE :])
    assert answer == {
        "text": first + second,
        "chunks": [
            {"timestamp": [0.0, 30.0], "text": first},
            {"timestamp": [30.0, 31.5], "text": second},
        ],
    }
    assert units == quote == 31500


def test_timestamps_can_be_turned_off(whisper: AudioToTextPipeline) -> None:
    data = encode_audio(noise_pcm(1.0, seed=4), rate=SAMPLE_RATE, fmt="wav", codec="pcm_s16le")
    on, _, _ = transcribe_request(whisper, data, return_timestamps="TRUE")
    off, _, _ = transcribe_request(whisper, data, return_timestamps="false")
    assert off == {"text": on["text"], "chunks": []}
    assert len(on["chunks"]) == 1


@pytest.mark.parametrize("value", ["word", "sentence", "yes"])
def test_timestamps_not_implemented_are_refused(value: str) -> None:
    data = encode_audio(noise_pcm(0.5, seed=5), rate=SAMPLE_RATE, fmt="wav", codec="pcm_s16le")
    with pytest.raises(BadRequestError, match="return_timestamps") as caught:
        AudioToTextPipeline.checked(BatchRequest(params={"return_timestamps": value}, input=data))
    assert caught.value.code == 400


def test_batched_requests_equal_each_alone(whisper: AudioToTextPipeline) -> None:
    files = [
        encode_audio(noise_pcm(2.0, seed=6), rate=SAMPLE_RATE, fmt="wav", codec="pcm_s16le"),
        encode_audio(noise_pcm(31.0, seed=7), rate=SAMPLE_RATE, fmt="flac", codec="flac"),
    ]
    good = [AudioToTextPipeline.checked(BatchRequest(input=data)) for data in files]
    # A request whose file turns out unreadable when run fails alone.
    broken = attrs.evolve(good[0], input=b"not audio at all")
    requests = [good[0], broken, good[1]]
    assert whisper.batch_key(good[0]) == whisper.batch_key(good[1]) is not None
    sinks = [RecordingSink() for _ in requests]
    results = whisper.run_batch(requests, sinks)
    assert isinstance(results[1], BadRequestError)
    assert sinks[1].outputs is None
    for data, sink, result in zip(files, sinks[::2], results[::2], strict=True):
        alone, units, _ = transcribe_request(whisper, data)
        assert json.loads(sink.track(0)) == alone
        assert not isinstance(result, PipelineError)
        assert result.total == units


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no audio file"),
        (b"hello, this is text" * 10, "not an audio file PyAV can read"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "not an audio file"),
    ],
    ids=["empty", "text", "png"],
)
def test_what_is_not_audio_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(BadRequestError, match=message) as caught:
        AudioToTextPipeline.checked(BatchRequest(input=data))
    assert caught.value.code == 400


def test_a_picture_is_not_audio() -> None:
    frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="image2pipe") as container:
        stream = container.add_stream("png", rate=1)
        stream.width = stream.height = 16
        stream.pix_fmt = "rgb24"
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(BadRequestError, match="no audio stream") as caught:
        AudioToTextPipeline.checked(BatchRequest(input=buffer.getvalue()))
    assert caught.value.code == 400


def flac_claiming(samples: int, pcm: np.ndarray[Any, np.dtype[np.int16]]) -> bytes:
    """A FLAC file of ``pcm`` whose STREAMINFO says it holds ``samples`` samples."""
    data = bytearray(encode_audio(pcm, rate=SAMPLE_RATE, fmt="flac", codec="flac"))
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    # STREAMINFO from byte 8: 10 bytes of sizes, then 64 bits: rate (20), channels (3),
    # bits per sample (5), total samples (36).
    (packed,) = struct.unpack(">Q", data[18:26])
    packed = (packed & ~((1 << 36) - 1)) | samples
    data[18:26] = struct.pack(">Q", packed)
    return bytes(data)


def test_audio_longer_than_the_limit_is_refused_before_decoding() -> None:
    over = (MAX_DURATION_MS // 1000 + 60) * SAMPLE_RATE
    data = flac_claiming(over, noise_pcm(1.0, seed=8))
    assert len(data) < 100_000  # a header's claim, not 31 minutes of audio
    with pytest.raises(RequestTooLargeError, match="limit is 1800 s") as caught:
        AudioToTextPipeline.checked(BatchRequest(input=data))
    assert caught.value.code == 413


def test_a_file_past_the_byte_limit_is_refused() -> None:
    with pytest.raises(RequestTooLargeError) as caught:
        AudioToTextPipeline.checked(BatchRequest(input=bytes(MAX_INPUT_BYTES + 1)))
    assert caught.value.code == 413


def test_a_header_understating_the_length_buys_only_what_it_pays(
    whisper: AudioToTextPipeline,
) -> None:
    data = flac_claiming(SAMPLE_RATE, noise_pcm(3.0, seed=9))  # says 1 s, holds 3 s
    assert audio_duration_ms(data) == 1000
    assert decode_audio(data, 1000).shape == (SAMPLE_RATE,)
    answer, units, quote = transcribe_request(whisper, data)
    assert units == quote == 1000
    assert answer["chunks"][0]["timestamp"] == [0.0, 1.0]


def test_a_file_with_no_decodable_audio_fails_unbilled(whisper: AudioToTextPipeline) -> None:
    data = encode_audio(noise_pcm(1.0, seed=10), rate=SAMPLE_RATE, fmt="flac", codec="flac")
    header = data[: data.index(b"\xff\xf8", 42)]  # the metadata, up to the first frame
    request = AudioToTextPipeline.checked(BatchRequest(input=header))
    assert AudioToTextPipeline.quote(request) == 1000  # the header's claim
    sink = RecordingSink()
    with pytest.raises(BadRequestError, match="no audio could be decoded") as caught:
        whisper.run(request, sink)
    assert caught.value.code == 400
    assert sink.outputs is None


def test_the_modules_import_without_torch() -> None:
    code = (
        "import sys, workers.batch.audio_to_text, workers.batch.llm; "
        "sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- llm ----------------------------------------------------------------------------------------

CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Héllo, what is 2 + 2? 😀"},
]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")


@pytest.fixture(scope="module")
def llm(lm_dir: Path) -> Iterator[LlmPipeline]:
    pipeline = LlmPipeline()
    pipeline.load(str(lm_dir), "cpu")
    yield pipeline
    pipeline.unload()


@attrs.frozen
class DirectLm:
    """The tiny LM and its tokenizer, called directly."""

    model: Any
    tokenizer: Any

    def prompt(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompt: list[int], seed: int, **settings: Any) -> list[int]:
        ids = torch.tensor([prompt])
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), **settings)
        return [int(i) for i in out[0, len(prompt) :]]

    def text(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))


@pytest.fixture(scope="module")
def direct_lm(lm_dir: Path) -> DirectLm:
    return DirectLm(
        transformers.AutoModelForCausalLM.from_pretrained(lm_dir, local_files_only=True),
        transformers.AutoTokenizer.from_pretrained(lm_dir, local_files_only=True),
    )


def pieces_of(direct: DirectLm, ids: list[int]) -> list[bytes]:
    """The text each token completes: the decoded text grows and ends in a whole character;
    anything held back at the end comes last."""
    pieces: list[bytes] = []
    sent = ""
    for k in range(1, len(ids) + 1):
        text = direct.text(ids[:k])
        if not text.endswith("\ufffd") and len(text) > len(sent):
            pieces.append(text[len(sent) :].encode())
            sent = text
    final = direct.text(ids)
    if final != sent:
        pieces.append(final[len(sent) :].encode())
    return pieces


def chat(
    pipeline: LlmPipeline,
    messages: object,
    clock: Any = None,
    **params: object,
) -> tuple[RecordingSink, tuple[int, ...], int]:
    """(the sink, units per track, the quote) of one request."""
    data = messages if isinstance(messages, bytes) else json.dumps(messages).encode()
    request = LlmPipeline.checked(BatchRequest(params=params, input=data))
    sink = RecordingSink(clock=clock)
    usage = pipeline.run(request, sink)
    assert sink.outputs is not None
    assert [o.name for o in sink.outputs] == ["completion", "prompt", "finish"]
    return sink, usage.units, LlmPipeline.quote(request)


@pytest.mark.parametrize(
    ("params", "settings"),
    [
        ({"temperature": 0.0}, {"do_sample": False}),
        ({}, {"do_sample": True, "temperature": 0.7, "top_k": 0, "top_p": 1.0}),
        (
            {"temperature": 1.3, "top_k": 40, "top_p": 0.9},
            {"do_sample": True, "temperature": 1.3, "top_k": 40, "top_p": 0.9},
        ),
    ],
    ids=["greedy", "sampled", "top-k-top-p"],
)
def test_tokens_stream_as_generate_makes_them(
    llm: LlmPipeline, direct_lm: DirectLm, params: dict[str, object], settings: dict[str, Any]
) -> None:
    forwards = 0

    def count(module: torch.nn.Module, args: object, output: object) -> None:
        nonlocal forwards
        if isinstance(module, transformers.GPT2LMHeadModel):
            forwards += 1

    prompt = direct_lm.prompt(CONVERSATION)
    expected = direct_lm.generate(prompt, seed=11, max_new_tokens=48, **settings)
    assert len(expected) == 48
    hook = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        sink, units, quote = chat(
            llm, CONVERSATION, clock=lambda: forwards, seed=11, max_tokens=48, **params
        )
    finally:
        hook.remove()
    assert sink.track(0).decode() == direct_lm.text(expected)
    # One data call per token that completes text, each as soon as its token is made.
    assert [p for t, p in sink.calls if t == 0] == pieces_of(direct_lm, expected)
    assert sink.stamps[0] < forwards
    assert sink.stamps == sorted(sink.stamps)
    assert sink.track(1) == b""
    assert sink.track(2) == b"length"
    assert units == (48, len(prompt), 0)
    assert quote >= sum(units)


def test_generation_stops_at_the_end_of_sequence_token(
    llm: LlmPipeline, direct_lm: DirectLm
) -> None:
    prompt = direct_lm.prompt(CONVERSATION)
    end = direct_lm.tokenizer.eos_token_id
    settings = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    # A seed whose sample draws the end token within 40 tokens (the tiny model's odds are
    # about 1 in 262 a token; seed 12 is the first that does, searched from there).
    seed, expected = next(
        (seed, ids)
        for seed in range(12, 200)
        if (ids := direct_lm.generate(prompt, seed, max_new_tokens=40, **settings))[-1] == end
    )
    sink, units, quote = chat(llm, CONVERSATION, seed=seed, max_tokens=40, temperature=1.0)
    assert sink.track(0).decode() == direct_lm.text(expected)
    assert sink.track(2) == b"stop"
    assert units == (len(expected), len(prompt), 0)  # the end token is billed: it was made
    assert len(expected) < 40
    assert quote >= sum(units)


def test_a_character_is_sent_when_its_last_byte_comes(direct_lm: DirectLm) -> None:
    ids = direct_lm.tokenizer("hé 😀!", add_special_tokens=False)["input_ids"]
    deltas = TextDeltas(direct_lm.text)
    assert [deltas.push(i) for i in ids] == ["h", "", "é", " ", "", "", "", "😀", "!"]
    assert deltas.finish() == ""
    cut = TextDeltas(direct_lm.text)
    assert [cut.push(i) for i in ids[:3]] == ["h", "", "é"]
    assert cut.push(ids[4]) == ""  # the emoji's first byte: held
    assert cut.finish() == "\ufffd"  # the end: sent as decode gives it


def test_a_prompt_past_the_context_is_refused_naming_the_numbers(
    llm: LlmPipeline, direct_lm: DirectLm
) -> None:
    messages = [{"role": "user", "content": "x" * 200}]
    prompt = len(direct_lm.prompt(messages))
    with pytest.raises(BadRequestError) as caught:
        chat(llm, messages, max_tokens=100)
    assert caught.value.code == 400
    assert f"prompt is {prompt} tokens" in str(caught.value)
    assert "max_tokens is 100" in str(caught.value)
    assert f"context of {LM_CONTEXT}" in str(caught.value)
    sink, units, _ = chat(llm, messages, max_tokens=LM_CONTEXT - prompt)  # just fits
    assert units[0] == LM_CONTEXT - prompt
    assert sink.track(2) == b"length"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe[]", "not UTF-8"),
        (b'{"role": "user", "content": "hi"}', "must be a JSON list"),
        (b"[]", "no messages"),
        (b'["hi"]', "message 0 must be an object"),
        (b'[{"role": "bot", "content": "hi"}]', "role 'bot'"),
        (b'[{"role": "user"}]', "has no content"),
        (b'[{"content": "hi"}]', "has no role"),
        (b'[{"role": "user", "content": 5}]', "content must be a string"),
        (b'[{"role": "user", "content": [{"type": "text"}]}]', "content must be a string"),
        (b'[{"role": "user", "content": "hi", "name": "x"}]', "unknown keys: name"),
        (json.dumps([{"role": "user", "content": ""}] * (MAX_MESSAGES + 1)).encode(), "limit"),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "not-a-list",
        "empty",
        "not-an-object",
        "bad-role",
        "no-content",
        "no-role",
        "content-number",
        "content-parts",
        "unknown-key",
        "too-many",
    ],
)
def test_malformed_messages_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(BadRequestError, match=message) as caught:
        LlmPipeline.checked(BatchRequest(input=data))
    assert caught.value.code == 400


def test_a_conversation_past_the_byte_limit_is_refused() -> None:
    data = json.dumps([{"role": "user", "content": "x" * (1024 * 1024)}]).encode()
    with pytest.raises(RequestTooLargeError) as caught:
        LlmPipeline.checked(BatchRequest(input=data))
    assert caught.value.code == 413


@pytest.mark.parametrize(
    "params",
    [{"max_tokens": 0}, {"max_tokens": 4097}, {"temperature": 2.5}, {"top_p": 1.5}, {"top_k": -2}],
)
def test_parameters_out_of_bounds_are_refused(params: dict[str, object]) -> None:
    with pytest.raises(InvalidParamsError):
        LlmPipeline.checked(BatchRequest(params=params, input=json.dumps(CONVERSATION).encode()))


def test_a_model_without_a_chat_template_gets_the_plain_format(
    tmp_path: Path,
) -> None:
    path = build_tiny_causal_lm(tmp_path / "plain", chat_template=None)
    pipeline = LlmPipeline()
    pipeline.load(str(path), "cpu")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    direct = DirectLm(model, tokenizer)
    messages = parse_messages(json.dumps(CONVERSATION).encode())
    text = render_fallback(messages)
    assert text == ("system: You answer briefly.\nuser: Héllo, what is 2 + 2? 😀\nassistant:")
    prompt = list(tokenizer(text)["input_ids"])
    expected = direct.generate(prompt, seed=5, do_sample=False, max_new_tokens=8)
    sink, units, quote = chat(pipeline, CONVERSATION, seed=5, temperature=0.0, max_tokens=8)
    assert sink.track(0).decode() == direct.text(expected)
    assert units == (8, len(prompt), 0)
    assert quote >= sum(units)


def test_a_template_longer_than_the_quote_allows_is_refused(tmp_path: Path) -> None:
    long_template = "{{ 'x' * 150 }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    path = build_tiny_causal_lm(tmp_path / "wordy", chat_template=long_template)
    pipeline = LlmPipeline()
    pipeline.load(str(path), "cpu")
    with pytest.raises(BadRequestError, match="the quote allows") as caught:
        chat(pipeline, [{"role": "user", "content": "hi"}], max_tokens=1)
    assert caught.value.code == 400


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.builds(
            ChatMessage,
            role=st.sampled_from(["system", "user", "assistant"]),
            content=st.text(max_size=40),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_the_prompt_bound_holds_for_any_text(llm: LlmPipeline, messages: list[ChatMessage]) -> None:
    assert len(llm.prompt_ids(messages)) <= prompt_bound(messages)
