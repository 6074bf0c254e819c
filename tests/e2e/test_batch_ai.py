"""Batch AI through a paid ``lpstream dev`` (embedded chain): every job type, on tiny random
models built by the test, gives what the same model gives called directly in the test (same
seed, same bytes, tokens and text), and the money adds up to the wei.

Each request goes gateway -> QUIC JOB with tickets -> orchestrator -> worker (the models in
pipeline child processes) -> outputs streamed back. The test keeps the units each answer is
billed for (output pixels, milliseconds of input audio, prompt and completion tokens) and at
the end checks both ledgers: the EV the gateway sent is the EV the orchestrator credited, and
the orchestrator billed exactly the units times each model's price. Bad requests in between
(oversized, wrong content type, unknown model, prompt past the context, malformed JSON) get a
4xx with a message, bill nothing, and the node goes on serving.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers", reason="needs lpstream[ai] (diffusers, transformers)")

from benchmarks.harness.batch_ai import (
    MODELS,
    build_models,
    data_url_bytes,
    direct,
    multipart,
    picture,
    post,
    sse_events,
    tone_wav,
    write_models_file,
)
from tests.e2e.money import wei
from tests.e2e.nodes import NodeProcess, http_json, running_dev

pytestmark = [
    pytest.mark.slow,
    # diffusers' schedulers call np.array on tensors; numpy 2 flags it (in the direct runs).
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]

EV = 10**12
PRICES = {
    # (wei, per units): a 64x64 picture costs a few tickets' EV, so payments are real.
    "text-to-image": (10**9, 1),
    "image-to-image": (2 * 10**9, 3),
    "upscale": (10**8, 1),
    "audio-to-text": (5 * 10**12, 1000),
    "llm": (3 * 10**10, 1),
}
BILLED: dict[str, int] = {capability: 0 for capability in PRICES}
"""Units each capability was billed in this module's requests so far."""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_models(tmp_path_factory.mktemp("batch-models"))


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]
) -> Iterator[NodeProcess]:
    folder = tmp_path_factory.mktemp("batch-ai-paid")
    models_file = write_models_file(folder / "ai-models.json", models, PRICES)
    flags = (
        "--block-time=0.2",
        f"--ticket-ev={EV}",
        f"--ai-models={models_file}",
        f"--data-dir={folder / 'data'}",
    )
    with running_dev(folder, *flags, name="dev-batch", offchain=False, ready_timeout=120) as node:
        yield node


def orchestrator_billed(node: NodeProcess) -> int:
    return wei(http_json(f"{node.url('http')}/api/status")["payments"]["orchestrator"]["billed"])


def post_json(node: NodeProcess, path: str, document: Any) -> tuple[int, Any]:
    status, body, _ = post(
        f"{node.url('http')}{path}", json.dumps(document).encode(), "application/json"
    )
    return status, json.loads(body)


def test_text_to_image_gives_the_models_own_picture(
    node: NodeProcess, models: dict[str, Path]
) -> None:
    params = {
        "prompt": "a red square",
        "width": 64,
        "height": 64,
        "seed": 7,
        "num_inference_steps": 2,
    }
    status, answer = post_json(
        node, "/text-to-image", {"model_id": MODELS["text-to-image"], **params}
    )
    assert status == 200, answer
    (image,) = answer["images"]
    assert image["seed"] == 7 and image["nsfw"] is False
    expected, units = direct("text-to-image", models["text-to-image"], params)
    assert data_url_bytes(image["url"]) == bytes(expected.tracks[0])
    assert units == (64 * 64,)
    BILLED["text-to-image"] += sum(units)


def test_two_pictures_per_prompt_get_seeds_in_turn(
    node: NodeProcess, models: dict[str, Path]
) -> None:
    params = {
        "prompt": "blue",
        "width": 64,
        "height": 72,
        "seed": 11,
        "num_inference_steps": 1,
        "num_images_per_prompt": 2,
    }
    status, answer = post_json(node, "/text-to-image", params)  # the only model: none named
    assert status == 200, answer
    assert [i["seed"] for i in answer["images"]] == [11, 12]
    expected, units = direct("text-to-image", models["text-to-image"], params)
    assert [data_url_bytes(i["url"]) for i in answer["images"]] == [
        bytes(t) for t in expected.tracks
    ]
    BILLED["text-to-image"] += sum(units)


def test_image_to_image_as_multipart(node: NodeProcess, models: dict[str, Path]) -> None:
    source = picture(72, 64)
    fields = {
        "prompt": "make it green",
        "model_id": MODELS["image-to-image"],
        "seed": "3",
        "strength": "0.6",
        "num_inference_steps": "2",
    }
    body, content_type = multipart(fields, {"image": ("in.png", "image/png", source)})
    status, raw, _ = post(f"{node.url('http')}/image-to-image", body, content_type)
    assert status == 200, raw
    (image,) = json.loads(raw)["images"]
    params = {"prompt": "make it green", "seed": 3, "strength": 0.6, "num_inference_steps": 2}
    expected, units = direct("image-to-image", models["image-to-image"], params, source)
    assert data_url_bytes(image["url"]) == bytes(expected.tracks[0])
    assert units == (72 * 64,)
    BILLED["image-to-image"] += sum(units)


def test_upscale_gives_four_times_the_sides(node: NodeProcess, models: dict[str, Path]) -> None:
    source = picture(24, 16, seed=2)
    fields = {
        "prompt": "sharp",
        "model_id": MODELS["upscale"],
        "seed": "5",
        "num_inference_steps": "2",
    }
    body, content_type = multipart(fields, {"image": ("in.png", "image/png", source)})
    status, raw, _ = post(f"{node.url('http')}/upscale", body, content_type)
    assert status == 200, raw
    (image,) = json.loads(raw)["images"]
    expected, units = direct(
        "upscale",
        models["upscale"],
        {"prompt": "sharp", "seed": 5, "num_inference_steps": 2},
        source,
    )
    assert data_url_bytes(image["url"]) == bytes(expected.tracks[0])
    assert expected.outputs[0].width == 96 and expected.outputs[0].height == 64
    assert units == (96 * 64,)
    BILLED["upscale"] += sum(units)


def test_audio_to_text_bills_the_milliseconds_heard(
    node: NodeProcess, models: dict[str, Path]
) -> None:
    audio, milliseconds = tone_wav(1.5)
    body, content_type = multipart(
        {"model_id": MODELS["audio-to-text"]}, {"audio": ("a.wav", "audio/wav", audio)}
    )
    status, raw, _ = post(f"{node.url('http')}/audio-to-text", body, content_type)
    assert status == 200, raw
    answer = json.loads(raw)
    expected, units = direct("audio-to-text", models["audio-to-text"], {}, audio)
    assert answer == json.loads(bytes(expected.tracks[0]))
    assert units == (milliseconds,)
    BILLED["audio-to-text"] += sum(units)


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say something."},
]


def test_llm_answers_as_the_model_does(node: NodeProcess, models: dict[str, Path]) -> None:
    request = {"messages": MESSAGES, "model": MODELS["llm"], "max_tokens": 12, "temperature": 0}
    status, answer = post_json(node, "/llm", request)
    assert status == 200, answer
    params = {"max_tokens": 12, "temperature": 0.0}
    expected, units = direct("llm", models["llm"], params, json.dumps(MESSAGES).encode())
    (choice,) = answer["choices"]
    text = choice.get("message", choice.get("delta"))["content"]
    assert text == bytes(expected.tracks[0]).decode()
    assert choice["finish_reason"] == bytes(expected.tracks[2]).decode()
    usage = answer["tokens_used"]
    assert (usage["completion_tokens"], usage["prompt_tokens"]) == units[:2]
    assert usage["total_tokens"] == sum(units)
    BILLED["llm"] += sum(units)


def test_llm_streams_each_token_as_an_event(node: NodeProcess, models: dict[str, Path]) -> None:
    request = {
        "messages": MESSAGES,
        "max_tokens": 16,
        "temperature": 0.9,
        "seed": 4,
        "stream": True,
    }
    status, raw, content_type = post(
        f"{node.url('http')}/llm", json.dumps(request).encode(), "application/json"
    )
    assert status == 200, raw
    assert content_type.startswith("text/event-stream")
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    expected, units = direct(
        "llm",
        models["llm"],
        {"max_tokens": 16, "temperature": 0.9, "seed": 4},
        json.dumps(MESSAGES).encode(),
    )
    deltas = [
        c["choices"][0]["delta"]["content"]
        for c in chunks
        if c["choices"][0]["delta"].get("content")
    ]
    # One event per token that completed text, as the model made them.
    assert deltas == [p.decode() for t, p in expected.pieces if t == 0]
    assert chunks[-1]["choices"][0]["finish_reason"] == bytes(expected.tracks[2]).decode()
    BILLED["llm"] += sum(units)


def test_the_openai_client_streams_a_chat_completion(
    node: NodeProcess, models: dict[str, Path]
) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{node.url('http')}/v1", api_key="unused-on-loopback")
    stream = client.chat.completions.create(
        model=MODELS["llm"],
        messages=MESSAGES,
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    usage = None
    finish = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    expected, units = direct(
        "llm", models["llm"], {"max_tokens": 10, "temperature": 0.0}, json.dumps(MESSAGES).encode()
    )
    assert pieces == [p.decode() for t, p in expected.pieces if t == 0]
    assert finish == bytes(expected.tracks[2]).decode()
    assert usage is not None
    assert (usage.completion_tokens, usage.prompt_tokens) == units[:2]
    BILLED["llm"] += sum(units)


def test_v1_models_lists_what_the_network_offers(node: NodeProcess) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{node.url('http')}/v1", api_key="unused-on-loopback")
    ids = {model.id for model in client.models.list()}
    assert set(MODELS.values()) <= ids


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status"),
    [
        ("/text-to-image", b"{not json", "application/json", 400),
        ("/text-to-image", b'{"prompt": "x"}', "text/plain", 415),
        (
            "/text-to-image",
            b'{"prompt": "x", "model_id": "no/such-model"}',
            "application/json",
            400,
        ),
        ("/text-to-image", b'{"prompt": "x", "width": 100000}', "application/json", 400),
        ("/llm", b'{"messages": "not a list"}', "application/json", 400),
        ("/llm", b"[1, 2", "application/json", 400),
    ],
)
def test_bad_requests_are_refused_and_bill_nothing(
    node: NodeProcess, path: str, body: bytes, content_type: str, status: int
) -> None:
    before = orchestrator_billed(node)
    got, raw, _ = post(f"{node.url('http')}{path}", body, content_type)
    assert got == status, raw
    message = json.loads(raw)["detail"]["msg"]
    assert isinstance(message, str) and message
    assert orchestrator_billed(node) == before
    assert http_json(f"{node.url('http')}/api/status")["role"] == "dev"


def test_an_oversized_picture_is_refused_with_413(node: NodeProcess) -> None:
    before = orchestrator_billed(node)
    huge = b"\x89PNG\r\n\x1a\n" + bytes(20 * 1024 * 1024 - 7)  # one byte over 20 MiB
    body, content_type = multipart({"prompt": "x"}, {"image": ("big.png", "image/png", huge)})
    status, raw, _ = post(f"{node.url('http')}/image-to-image", body, content_type)
    assert status == 413, raw
    assert "over 20971520 bytes" in json.loads(raw)["detail"]["msg"]
    assert orchestrator_billed(node) == before


def test_audio_past_the_duration_limit_is_refused_before_decoding(node: NodeProcess) -> None:
    from tests.workers.test_batch_text import flac_claiming, noise_pcm

    before = orchestrator_billed(node)
    # A FLAC whose header says 31 minutes, holding one second.
    audio = flac_claiming(31 * 60 * 16000, noise_pcm(1.0, seed=3))
    body, content_type = multipart({}, {"audio": ("long.wav", "audio/wav", audio)})
    status, raw, _ = post(f"{node.url('http')}/audio-to-text", body, content_type)
    assert status == 413, raw
    assert (
        "minutes" in json.loads(raw)["detail"]["msg"] or "long" in json.loads(raw)["detail"]["msg"]
    )
    assert orchestrator_billed(node) == before


def test_requests_that_arrive_together_run_as_one_batch(
    node: NodeProcess, models: dict[str, Path]
) -> None:
    import concurrent.futures

    import numpy as np
    from PIL import Image

    params = {"width": 128, "height": 128, "num_inference_steps": 12}
    prompts = [("a cat", 21), ("a dog", 22), ("a bird", 23), ("a fish", 24)]

    def ask(prompt: str, seed: int) -> tuple[int, Any]:
        return post_json(node, "/text-to-image", {"prompt": prompt, "seed": seed, **params})

    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(lambda p: ask(*p), prompts))
    for (prompt, seed), (status, answer) in zip(prompts, answers, strict=True):
        assert status == 200, answer
        got = np.asarray(Image.open(io.BytesIO(data_url_bytes(answer["images"][0]["url"]))))
        expected, units = direct(
            "text-to-image", models["text-to-image"], {"prompt": prompt, "seed": seed, **params}
        )
        want = np.asarray(Image.open(io.BytesIO(bytes(expected.tracks[0]))))
        # Batched CPU kernels round the last bits of a float differently: one level at most.
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        BILLED["text-to-image"] += sum(units)
    status = http_json(f"{node.url('http')}/api/status")
    stats = status["orchestrator"]["ai"]["batch_models"]["text-to-image"][MODELS["text-to-image"]]
    assert stats["largest_batch"] >= 2, stats


def test_a_prompt_past_the_context_is_refused(node: NodeProcess) -> None:
    before = orchestrator_billed(node)
    long = [{"role": "user", "content": "word " * 400}]
    status, answer = post_json(node, "/llm", {"messages": long, "max_tokens": 64})
    assert status == 400, answer
    assert "context" in answer["detail"]["msg"]
    assert orchestrator_billed(node) == before


def test_the_money_adds_up_to_the_wei(node: NodeProcess) -> None:
    status = http_json(f"{node.url('http')}/api/status")
    payments = status["payments"]
    gateway, orch = payments["gateway"], payments["orchestrator"]
    assert gateway["tickets_sent"] == orch["tickets_received"] > 0
    assert gateway["ev_sent"] == orch["ev_received"]
    billed = sum(Fraction(price, per) * BILLED[c] for c, (price, per) in PRICES.items())
    assert all(BILLED.values()), BILLED
    assert wei(orch["billed"]) == int(billed)  # rounded down, as the status shows money
    # The gateway's credit is what it paid minus what it was billed, as the orchestrator's.
    credits = [wei(c) for c in gateway["credit"].values()]
    assert 0 <= wei(orch["balance"]) - sum(credits) <= max(len(credits) - 1, 0)
