"""The batch AI examples run against a paid ``lpstream dev`` and give what the model gives.

Each script in ``examples/ai_*.py`` runs as a user runs it (a subprocess of this interpreter)
against one node serving the five tiny random models, with an API token the examples send as
their ``--token``. What they write and print is checked against the same pipeline run in this
process (same parameters and seed): the same PNG bytes at the asked size, the same transcript,
the same text piece by piece, the same token counts.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="needs lpstream[ai] (diffusers, transformers)")

from PIL import Image

from benchmarks.harness.batch_ai import (
    MODELS,
    build_models,
    direct,
    picture,
    tone_wav,
    write_models_file,
)
from tests.e2e.nodes import NodeProcess, running_dev
from workers.batch import load_ai_models

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TOKEN = "examples-ai-token"
EV = 10**12
PRICES = {
    "text-to-image": (10**9, 1),
    "image-to-image": (10**9, 1),
    "upscale": (10**8, 1),
    "audio-to-text": (5 * 10**12, 1000),
    "llm": (3 * 10**10, 1),
}
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say something."},
]
FINISH = re.compile(
    r"finish: (\w+); tokens: (\d+) prompt, (\d+) completion; (\d+) pieces, the first after"
)

pytestmark = [
    # diffusers' schedulers call np.array on tensors; numpy 2 flags it (in the direct runs).
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]


def test_the_example_models_file_offers_all_five_capabilities() -> None:
    models = load_ai_models(EXAMPLES / "ai-models.json")
    assert {m.pipeline for m in models} == set(MODELS)
    assert all(m.price_per_unit > 0 and m.path for m in models)
    assert all(Path(m.path or "").is_relative_to(EXAMPLES / "models") for m in models)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_models(tmp_path_factory.mktemp("example-models"))


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]
) -> Iterator[NodeProcess]:
    folder = tmp_path_factory.mktemp("examples-ai")
    models_file = write_models_file(folder / "ai-models.json", models, PRICES)
    flags = (
        "--block-time=0.2",
        f"--ticket-ev={EV}",
        f"--ai-models={models_file}",
        f"--api-token={TOKEN}",
        f"--data-dir={folder / 'data'}",
    )
    with running_dev(
        folder, *flags, name="dev-examples-ai", offchain=False, ready_timeout=120
    ) as n:
        yield n


def run_example(
    node: NodeProcess, script: str, *args: str, token: str | None = TOKEN
) -> subprocess.CompletedProcess[bytes]:
    """Runs ``examples/{script}`` against ``node``; its output as bytes."""
    command = [sys.executable, str(EXAMPLES / script), "--gateway", node.url("http"), *args]
    if token is not None:
        command += ["--token", token]
    return subprocess.run(
        command,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
        check=False,
        env=dict(os.environ, PYTHONIOENCODING="utf-8"),
    )


def succeeded(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


def decoded_size(path: Path) -> tuple[int, int]:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        image.load()
        return image.size


@pytest.mark.slow
def test_text_to_image_writes_each_picture_with_its_seed(
    node: NodeProcess, models: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "pic.png"
    proc = run_example(
        node,
        "ai_text_to_image.py",
        "a red square",
        "--width=64",
        "--height=72",
        "--steps=2",
        "--seed=7",
        "--count=2",
        f"--out={out}",
    )
    printed = succeeded(proc)
    second = tmp_path / "pic-1.png"
    assert printed.splitlines() == [
        f"wrote {out} (64x72, seed 7)",
        f"wrote {second} (64x72, seed 8)",
    ]
    params = {
        "prompt": "a red square",
        "negative_prompt": "",
        "width": 64,
        "height": 72,
        "num_inference_steps": 2,
        "guidance_scale": 7.5,
        "seed": 7,
        "num_images_per_prompt": 2,
    }
    expected, _ = direct("text-to-image", models["text-to-image"], params)
    assert [out.read_bytes(), second.read_bytes()] == [bytes(t) for t in expected.tracks]
    assert decoded_size(out) == decoded_size(second) == (64, 72)


@pytest.mark.slow
def test_image_to_image_sends_the_picture_file(
    node: NodeProcess, models: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(picture(72, 64))
    out = tmp_path / "changed.png"
    proc = run_example(
        node,
        "ai_image_to_image.py",
        "make it green",
        f"--image={source}",
        f"--model={MODELS['image-to-image']}",
        "--strength=0.6",
        "--steps=2",
        "--seed=3",
        f"--out={out}",
    )
    assert succeeded(proc).splitlines() == [f"wrote {out} (72x64, seed 3)"]
    params = {
        "prompt": "make it green",
        "strength": 0.6,
        "num_inference_steps": 2,
        "guidance_scale": 7.5,
        "seed": 3,
    }
    expected, _ = direct("image-to-image", models["image-to-image"], params, source.read_bytes())
    assert out.read_bytes() == bytes(expected.tracks[0])
    assert decoded_size(out) == (72, 64)


@pytest.mark.slow
def test_upscale_writes_a_picture_four_times_the_sides(
    node: NodeProcess, models: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "small.png"
    source.write_bytes(picture(24, 16, seed=2))
    out = tmp_path / "big.png"
    proc = run_example(
        node,
        "ai_upscale.py",
        f"--image={source}",
        "--prompt=sharp",
        "--steps=2",
        "--seed=5",
        f"--out={out}",
    )
    assert succeeded(proc).splitlines() == [f"wrote {out} (96x64, seed 5)"]
    params = {"prompt": "sharp", "num_inference_steps": 2, "seed": 5}
    expected, _ = direct("upscale", models["upscale"], params, source.read_bytes())
    assert out.read_bytes() == bytes(expected.tracks[0])
    assert decoded_size(out) == (96, 64)


@pytest.mark.slow
def test_audio_to_text_prints_the_transcript_and_keeps_the_answer(
    node: NodeProcess, models: dict[str, Path], tmp_path: Path
) -> None:
    audio, _ = tone_wav(1.5)
    source = tmp_path / "tone.wav"
    source.write_bytes(audio)
    out = tmp_path / "answer.json"
    printed = succeeded(
        run_example(node, "ai_audio_to_text.py", f"--audio={source}", f"--out={out}")
    )
    expected, _ = direct("audio-to-text", models["audio-to-text"], {}, audio)
    transcript = json.loads(bytes(expected.tracks[0]))
    assert json.loads(out.read_text()) == transcript
    (chunk,) = transcript["chunks"]
    start, end = chunk["timestamp"]
    assert printed == f"{transcript['text']}\n[{start:.2f} - {end:.2f}] {chunk['text']}\n"


def llm_pieces(
    models: dict[str, Path], params: dict[str, object]
) -> tuple[list[str], str, tuple[int, ...]]:
    """The text pieces, finish reason and units of the tiny LLM answering :data:`MESSAGES`."""
    expected, units = direct("llm", models["llm"], params, json.dumps(MESSAGES).encode())
    pieces = [p.decode() for t, p in expected.pieces if t == 0]
    return pieces, bytes(expected.tracks[2]).decode(), units


@pytest.mark.slow
def test_llm_prints_the_streamed_answer_piece_by_piece(
    node: NodeProcess, models: dict[str, Path]
) -> None:
    proc = run_example(
        node,
        "ai_llm.py",
        MESSAGES[1]["content"],
        f"--system={MESSAGES[0]['content']}",
        "--max-tokens=16",
        "--temperature=0.9",
        "--seed=4",
    )
    printed = succeeded(proc)
    pieces, finish, units = llm_pieces(models, {"max_tokens": 16, "temperature": 0.9, "seed": 4})
    assert len(pieces) > 1
    assert printed == "".join(pieces) + "\n"
    match = FINISH.search(proc.stderr.decode())
    assert match, proc.stderr
    # One server-sent event per piece of text, as the model made them: streamed, not whole.
    assert match.groups() == (finish, str(units[1]), str(units[0]), str(len(pieces)))


@pytest.mark.slow
def test_the_openai_example_streams_tokens_as_they_come(
    node: NodeProcess, models: dict[str, Path]
) -> None:
    pytest.importorskip("openai")
    proc = run_example(
        node,
        "ai_openai_chat.py",
        MESSAGES[1]["content"],
        f"--system={MESSAGES[0]['content']}",
        f"--model={MODELS['llm']}",
        "--max-tokens=20",
        "--temperature=0.8",
        "--seed=9",
    )
    printed = succeeded(proc)
    pieces, finish, units = llm_pieces(models, {"max_tokens": 20, "temperature": 0.8, "seed": 9})
    assert len(pieces) > 1
    assert printed == "".join(pieces) + "\n"
    match = FINISH.search(proc.stderr.decode())
    assert match, proc.stderr
    assert match.groups() == (finish, str(units[1]), str(units[0]), str(len(pieces)))


@pytest.mark.slow
def test_the_openai_example_lists_the_models(node: NodeProcess) -> None:
    pytest.importorskip("openai")
    printed = succeeded(run_example(node, "ai_openai_chat.py", "unused", "--list-models"))
    assert set(printed.split()) == set(MODELS.values())


@pytest.mark.slow
@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_an_example_without_the_api_token_is_refused(
    node: NodeProcess, tmp_path: Path, token: str | None
) -> None:
    out = tmp_path / "pic.png"
    proc = run_example(
        node, "ai_text_to_image.py", "x", "--width=64", "--height=64", f"--out={out}", token=token
    )
    assert proc.returncode == 1
    assert "/text-to-image: 401" in proc.stderr.decode()
    assert not out.exists()
