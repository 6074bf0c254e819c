"""Batch AI through the network against the same model called in one process.

Starts a paid ``lpstream dev`` (embedded chain: every request is paid with tickets) serving a
causal LM and a Stable Diffusion model built from configs into a temporary folder
(``--ai-models``), and measures what the network path costs on top of the compute:

1. LLM, streamed: time to first token (TTFT) and tokens per second of a chat completion
   through ``POST /v1/chat/completions`` with ``stream: true`` (the server-sent events read
   line by line as they arrive), against the ``llm`` pipeline class loaded in this process
   and run on the same conversation (``LlmPipeline.load`` and ``run``: the code the worker
   runs, transformers' ``generate`` with a streamer), greedy, same ``max_tokens``. TTFT runs
   from sending the request (calling ``run``) to the first piece of text; tokens per second
   is the pieces after the first over the time from the first piece to the last (the model
   is shaped so each token is one piece: see below). Ratios are network / direct.
2. text-to-image: the time of one request through ``POST /text-to-image`` (JSON in, the PNG
   as a data URL out) against the diffusers call alone (``StableDiffusionPipeline`` loaded
   from the same directory, same prompt, size, steps, guidance and seed; PNG encoding not
   counted on the direct side). The pictures are compared byte for byte.

Each measurement runs ``--runs`` times after one warm-up, direct and network in turn; the
median and the minimum are printed (for tokens per second the minimum is the slowest run).
Both sides run this interpreter and its packages: the node is a child process of this one
(``python -m lpstream dev``) and its worker runs each model in a child process of its own, on
the device the node chose (read back from ``/api/status``), which the direct side uses too.
The idle node (its embedded chain mines a block a second) keeps running while the direct side
is measured; the share of a core it uses then is printed, with the load average.

The LM (``--lm-size``): ``tiny`` has the tests' configuration (``build_tiny_causal_lm``:
GPT-2, 2 layers, 32 wide); ``small`` has the same byte-level tokenizer and chat template with 8
layers, 512 wide, 8 heads (25 M parameters), for a more realistic share of compute per token.
Both are random: the embedding rows of every token but printable ASCII (end of text, role
markers, control characters, bytes over 0x7f) are zeroed, so their logits are 0 and greedy
decoding, taking the largest of about 95 random logits, never picks them: the answer runs to
``max_tokens`` and each token is one piece of text (the compute per token is unchanged: the
whole vocabulary is still scored). The picture model is the tests' tiny Stable Diffusion.
The benchmark never fails on timing; it exits 0 with its figures.

From the repository root, with lpstream's dev (or ai) extras installed:

    python -m benchmarks.batch_ai [--runs 5] [--lm-size tiny|small] [--max-tokens 128]
        [--size 128] [--steps 10]
"""

from __future__ import annotations

import argparse
import base64
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from benchmarks.harness.nodes import http_json, start_dev
from benchmarks.harness.tiny_ai_images import build_tiny_sd
from benchmarks.harness.tiny_ai_text import LM_CONTEXT, build_tiny_causal_lm
from workers.batch import BatchRegistry, BatchRequest
from workers.batch.images import encode_png

# Imported by name: their annotations are too loose for mypy --strict to follow.
transformers: Any = importlib.import_module("transformers")
diffusers: Any = importlib.import_module("diffusers")

LM_ID = "bench/chat-lm"
SD_ID = "bench/sd"
PRICES = {"llm": (3 * 10**10, 1), "text-to-image": (10**6, 1)}
"""(wei, per units): enough that every request sends tickets."""
SMALL_LM = {"n_embd": 512, "n_layer": 8, "n_head": 8}
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Tell me about rivers."},
]
PROMPT_ALLOWANCE = 64
"""Context tokens kept for the prompt (:data:`MESSAGES` makes 56 after the chat template)."""
PROMPT = "a lighthouse"
SEED = 42
GUIDANCE = 7.5


def build_lm(directory: Path, size: str) -> str:
    """Saves the benchmark's chat LM (see the module comment); returns its description."""
    build_tiny_causal_lm(directory)
    config = transformers.GPT2Config.from_pretrained(directory)
    if size == "small":
        config.update(SMALL_LM)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    model.generation_config = transformers.GenerationConfig.from_pretrained(directory)
    keep = torch.zeros(config.vocab_size, dtype=torch.bool)
    keep[ord(" ") : ord("~") + 1] = True  # byte-level ids: id b is byte b
    with torch.no_grad():
        model.get_input_embeddings().weight[~keep] = 0.0
    model.save_pretrained(directory)
    parameters = sum(p.numel() for p in model.parameters())
    return (
        f"{size}: GPT-2 config, {config.n_layer} layers, {config.n_embd} wide, "
        f"{config.n_head} heads, {parameters / 1e6:.2f} M parameters, "
        f"vocabulary {config.vocab_size}, context {config.n_positions}"
    )


def write_models(path: Path, lm: Path, sd: Path) -> Path:
    entries = [
        {"pipeline": "llm", "model_id": LM_ID, "path": str(lm), "warm": True},
        {"pipeline": "text-to-image", "model_id": SD_ID, "path": str(sd), "warm": True},
    ]
    for entry in entries:
        price, per = PRICES[str(entry["pipeline"])]
        entry.update(price_per_unit=price, pixels_per_unit=per)
    path.write_text(json.dumps(entries))
    return path


@attrs.frozen(kw_only=True)
class Stream:
    """One streamed answer, timed."""

    ttft: float
    """Seconds from the request to the first piece of text."""
    rate: float
    """Pieces after the first per second, from the first piece to the last."""
    total: float
    """Seconds from the request to the end of the answer."""
    pieces: int
    text: str

    @classmethod
    def from_times(cls, start: float, times: Sequence[float], end: float, text: str) -> Stream:
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        return cls(
            ttft=times[0] - start if times else end - start,
            rate=(len(times) - 1) / span if span > 0 else 0.0,
            total=end - start,
            pieces=len(times),
            text=text,
        )


class TimedSink:
    """Keeps when each piece of the ``completion`` output came."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.text = bytearray()

    def start(self, outputs: Any) -> None:
        pass

    def data(self, track: int, payload: bytes) -> None:
        if track == 0 and payload:
            self.times.append(time.perf_counter())
            self.text += payload


class DirectLlm:
    """The ``llm`` pipeline loaded in this process."""

    def __init__(self, directory: Path, device: str, max_tokens: int) -> None:
        self._cls = BatchRegistry().get("llm")
        self._pipeline = self._cls()
        self._pipeline.load(str(directory), device)
        params = {"max_tokens": max_tokens, "temperature": 0.0, "seed": SEED}
        request = BatchRequest(params=params, input=json.dumps(MESSAGES).encode())
        self._request = self._cls.checked(request)
        self.prompt_tokens = 0

    def run(self) -> Stream:
        sink = TimedSink()
        start = time.perf_counter()
        usage = self._pipeline.run(self._request, sink)
        end = time.perf_counter()
        self.prompt_tokens = usage.units[1]
        return Stream.from_times(start, sink.times, end, sink.text.decode())


def network_llm(http: str, max_tokens: int) -> Stream:
    """One streamed chat completion through the gateway."""
    body = {
        "model": LM_ID,
        "messages": MESSAGES,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    request = urllib.request.Request(
        f"{http}/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
        method="POST",
    )
    times: list[float] = []
    text: list[str] = []
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            for choice in json.loads(data)["choices"]:
                piece = choice["delta"].get("content")
                if piece:
                    times.append(time.perf_counter())
                    text.append(piece)
    return Stream.from_times(start, times, time.perf_counter(), "".join(text))


class DirectPictures:
    """``StableDiffusionPipeline`` from the model's directory, called as the pipeline calls
    it (one generator per picture, made on the CPU)."""

    def __init__(self, directory: Path, device: str, size: int, steps: int) -> None:
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            str(directory), local_files_only=True, dtype=dtype, low_cpu_mem_usage=False
        )
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe.to(device)
        self._size = size
        self._steps = steps

    def run(self) -> tuple[float, Any]:
        start = time.perf_counter()
        with torch.inference_mode():
            image = self._pipe(
                prompt=[PROMPT],
                negative_prompt=[""],
                width=self._size,
                height=self._size,
                num_inference_steps=self._steps,
                guidance_scale=GUIDANCE,
                generator=[torch.Generator("cpu").manual_seed(SEED)],
                num_images_per_prompt=1,
                output_type="pil",
            ).images[0]
        return time.perf_counter() - start, image


def network_picture(http: str, size: int, steps: int) -> tuple[float, bytes]:
    """One text-to-image request through the gateway: its seconds and the PNG."""
    body = {
        "model_id": SD_ID,
        "prompt": PROMPT,
        "negative_prompt": "",
        "width": size,
        "height": size,
        "num_inference_steps": steps,
        "guidance_scale": GUIDANCE,
        "seed": SEED,
    }
    request = urllib.request.Request(
        f"{http}/text-to-image",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
        method="POST",
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        answer = json.loads(response.read())
    seconds = time.perf_counter() - start
    url = answer["images"][0]["url"]
    return seconds, base64.b64decode(url.partition(",")[2])


def alternate(
    runs: int, direct: Callable[[], Any], network: Callable[[], Any]
) -> tuple[list[Any], list[Any]]:
    """One warm-up of each, then ``runs`` of each in turn."""
    direct()
    network()
    ours: list[Any] = []
    theirs: list[Any] = []
    for _ in range(runs):
        ours.append(direct())
        theirs.append(network())
    return ours, theirs


def load_average() -> str:
    try:
        with open("/proc/loadavg") as file:
            return file.read().split()[0]
    except OSError:
        return "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions(device: str, node_version: str) -> list[str]:
    return [
        f"lpstream {importlib.metadata.version('lpstream')} (the node reports {node_version}), "
        f"Python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"diffusers {diffusers.__version__}",
        f"CPU {cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
        f"device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else ""),
        "both sides: this interpreter and its packages (the node is a child process of this "
        "one, `python -m lpstream dev`, its worker runs each model in a child process)",
    ]


def row(label: str, unit: str, direct: Sequence[float], network: Sequence[float]) -> str:
    d_med, n_med = statistics.median(direct), statistics.median(network)
    d_min, n_min = min(direct), min(network)
    ratio = n_med / d_med if d_med else float("nan")
    return (
        f"  {label:<14} direct {d_med:9.1f} (min {d_min:9.1f})  network {n_med:9.1f} "
        f"(min {n_min:9.1f}) {unit:<9} network/direct {ratio:.2f}"
    )


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` and its live descendants (Linux ``/proc``)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree = {pid}
    for _ in range(8):  # the node, its worker's helpers, their model children...
        tree |= {child for child, parent in parents.items() if parent in tree}
    return sum(times.get(p, 0.0) for p in tree)


def idle_share(pid: int, seconds: float = 5.0) -> float:
    """Cores' worth of CPU the idle node tree uses."""
    before = tree_cpu_seconds(pid)
    time.sleep(seconds)
    return (tree_cpu_seconds(pid) - before) / seconds


def node_facts(http: str) -> tuple[str, str]:
    """The device the node's LM loaded on, and the version it reports."""
    status = http_json(f"{http}/api/status")
    device = status["orchestrator"]["ai"]["batch_models"]["llm"][LM_ID]["device"]
    return str(device or "cpu"), str(status.get("version"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="measured runs of each (default 5)")
    parser.add_argument("--lm-size", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--size", type=int, default=128, help="picture side in pixels")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not 1 <= args.max_tokens <= LM_CONTEXT - PROMPT_ALLOWANCE:
        parser.error(
            f"--max-tokens must be 1 to {LM_CONTEXT - PROMPT_ALLOWANCE}: the LM's context is "
            f"{LM_CONTEXT} tokens and the prompt takes up to {PROMPT_ALLOWANCE}"
        )
    command = "python -m benchmarks.batch_ai " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"command: {command.strip()}")

    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="lpstream-batch-ai-") as tmp:
        root = Path(tmp)
        lm_described = build_lm(root / "lm", args.lm_size)
        sd = build_tiny_sd(root / "sd")
        models = write_models(root / "ai-models.json", root / "lm", sd)
        node = start_dev(
            root / "node",
            "--block-time=1",
            f"--ai-models={models}",
            f"--data-dir={root / 'data'}",
            "--log-level=warning",
            offchain=False,
            ready_timeout=180,
        )
        try:
            http = node.url("http")
            device, node_version = node_facts(http)
            for line in versions(device, node_version):
                print(line)
            idle = idle_share(node.proc.pid)
            print(
                f"the idle node (gateway, orchestrator, worker, models loaded, embedded chain "
                f"mining a block a second) uses {idle * 100:.0f}% of a core while the direct "
                "side runs"
            )
            lm = DirectLlm(root / "lm", device, args.max_tokens)
            ours, theirs = alternate(args.runs, lm.run, lambda: network_llm(http, args.max_tokens))
            pictures = DirectPictures(sd, device, args.size, args.steps)
            p_ours, p_theirs = alternate(
                args.runs, pictures.run, lambda: network_picture(http, args.size, args.steps)
            )
        finally:
            node.stop()
    load = load_average()

    print()
    print(f"LLM {lm_described}")
    print(
        f"  {lm.prompt_tokens} prompt tokens, greedy, max_tokens {args.max_tokens}; "
        f"{args.runs} runs of each after one warm-up; network: /v1/chat/completions streamed"
    )
    print(row("TTFT", "ms", [s.ttft * 1e3 for s in ours], [s.ttft * 1e3 for s in theirs]))
    rates = [s.rate for s in ours], [s.rate for s in theirs]
    print(row("tokens/s", "tokens/s", *rates).replace("(min", "(slowest"))
    print(row("whole answer", "ms", [s.total * 1e3 for s in ours], [s.total * 1e3 for s in theirs]))
    pieces = {s.pieces for s in [*ours, *theirs]}
    same = all(s.text == ours[0].text for s in [*ours, *theirs])
    print(f"  pieces (= tokens) per answer: {sorted(pieces)}; same text on both sides: {same}")

    print()
    print(
        f"text-to-image: tiny Stable Diffusion, {args.size}x{args.size}, {args.steps} steps, "
        f"guidance {GUIDANCE}, seed {SEED}; network: /text-to-image (PNG as a data URL)"
    )
    print(
        row(
            "request",
            "ms",
            [seconds * 1e3 for seconds, _ in p_ours],
            [seconds * 1e3 for seconds, _ in p_theirs],
        )
    )
    png = encode_png(p_ours[0][1])
    same_picture = all(data == png for _, data in p_theirs)
    print(f"  same picture on both sides (PNG bytes): {same_picture}")
    print()
    print(
        f"load average {load_before} at the start, {load} at the end ({os.cpu_count()} cores; "
        "other work on the machine slows both sides)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
