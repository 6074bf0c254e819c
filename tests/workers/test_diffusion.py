"""``img2img-diffusion`` on a tiny random Stable Diffusion model built offline (no downloads).

Outputs are compared with the diffusers img2img pipeline run directly on the same pictures with
the same seed: given the prompt as text, so the pipeline's cached embeddings are checked too.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from av.video.frame import VideoFrame
from hypothesis import example, given
from hypothesis import strategies as st

from workers.frames import planes_as_arrays, planes_as_tensors, rgb_to_yuv420, yuv420_to_rgb
from workers.pipelines import (
    InvalidParamsError,
    ModelDirectory,
    PipelineContext,
    PipelineError,
    PipelineRegistry,
)
from workers.pipelines.diffusion import (
    Img2ImgDiffusionPipeline,
    denoising_timesteps,
    inference_steps,
)
from workers.pipelines.params import validate
from workers.pipelines.runner import PipelineRunner

pytest.importorskip("diffusers", reason="needs lpstream[ai] (diffusers, transformers)")

from benchmarks.harness.tiny_diffusion import build_tiny_img2img, diffusers

pytestmark = [
    # diffusers' schedulers call np.array on tensors on every frame; numpy 2 flags it.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]

NAME = "img2img-diffusion"
SIZE = 64


TINY = "tiny-sd"
"""The tiny model's name in the models directory."""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelDirectory:
    """The worker's models directory, holding the tiny model as ``tiny-sd``."""
    root = tmp_path_factory.mktemp("models")
    build_tiny_img2img(root / TINY)
    return ModelDirectory(root)


@pytest.fixture(scope="module")
def model(models: ModelDirectory) -> str:
    """Where the tiny model is (for diffusers itself)."""
    return models.path_of(TINY)


@pytest.fixture(scope="module")
def offline(model: str) -> Any:
    """The same model loaded by diffusers itself, float32 on CPU."""
    pipe = diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def registry(models: ModelDirectory) -> PipelineRegistry:
    registry = PipelineRegistry(entry_points=False, models=models)
    if NAME not in registry.names():  # until it is a built-in
        registry.register(Img2ImgDiffusionPipeline)
    return registry


def picture(seed: int, size: int = SIZE) -> VideoFrame:
    """A smooth colour picture (gradients plus a blob) as an untagged yuv420p frame."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    phase = torch.rand(3, 1, 1, generator=g) * 6.28
    rgb = 0.5 + 0.4 * torch.sin(3 * xs + 2 * ys + phase)
    frame = VideoFrame(size, size, "yuv420p")
    rgb_to_yuv420(rgb.unsqueeze(0), planes_as_tensors(frame))
    frame.pts = seed
    frame.time_base = Fraction(1, 30)
    return frame


def rgb_of(frames: list[VideoFrame]) -> torch.Tensor:
    """What the runner hands the pipeline: ``float32 [B, 3, H, W]`` RGB of the frames."""
    out = torch.empty((len(frames), 3, frames[0].height, frames[0].width))
    for i, frame in enumerate(frames):
        yuv420_to_rgb(planes_as_tensors(frame), out[i : i + 1])
    return out


def run(runner: PipelineRunner, frames: list[VideoFrame]) -> list[VideoFrame]:
    return [out for frame in frames for out in runner.push(frame)] + runner.flush()


def planes(frame: VideoFrame) -> list[np.ndarray[Any, np.dtype[np.int64]]]:
    return [p.astype(np.int64) for p in planes_as_arrays(frame)]


def diffuse_offline(
    pipe: Any,
    rgb: torch.Tensor,
    *,
    prompt: str,
    strength: float,
    num_inference_steps: int,
    seed: int,
) -> torch.Tensor:
    with torch.inference_mode():
        out: torch.Tensor = pipe(
            prompt=[prompt] * rgb.shape[0],
            image=rgb,
            strength=strength,
            num_inference_steps=num_inference_steps,
            guidance_scale=0.0,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        ).images
    return out


def assert_planes_match(out: VideoFrame, rgb: torch.Tensor) -> None:
    """The frame's planes are those of ``rgb [1, 3, H, W]``, within one level."""
    expected = VideoFrame(out.width, out.height, "yuv420p")
    rgb_to_yuv420(rgb, planes_as_tensors(expected))
    for ours, theirs in zip(planes(out), planes(expected), strict=True):
        assert np.abs(ours - theirs).max() <= 1


@pytest.fixture
def runner(registry: PipelineRegistry, model: str) -> Iterator[PipelineRunner]:
    runner = registry.create(NAME, {"model": TINY, "prompt": "a red fox", "seed": 7})
    yield runner
    runner.stop()


def test_registered_pipeline_restyles_frames(runner: PipelineRunner) -> None:
    frames = [picture(1), picture(2)]
    outputs = run(runner, frames)
    assert [(o.width, o.height, o.pts) for o in outputs] == [(SIZE, SIZE, 1), (SIZE, SIZE, 2)]
    for out, frame in zip(outputs, frames, strict=True):
        assert np.abs(planes(out)[0] - planes(frame)[0]).mean() > 5


def test_frames_equal_diffusers_run_offline_with_the_same_seed(
    runner: PipelineRunner, offline: Any
) -> None:
    runner.update({"strength": 0.25, "steps": 1})
    frames = [picture(3), picture(4)]
    for out, frame in zip(run(runner, frames), frames, strict=True):
        # One step at strength 0.25 is the last of diffusers' 4-step trailing schedule.
        expected = diffuse_offline(
            offline,
            rgb_of([frame]),
            prompt="a red fox",
            strength=0.25,
            num_inference_steps=4,
            seed=7,
        )
        assert_planes_match(out, expected)


@pytest.mark.parametrize("grid", range(1, 11))
def test_timesteps_are_diffusers_own_where_its_schedule_can_express_the_strength(
    model: str, grid: int
) -> None:
    scheduler = diffusers.EulerDiscreteScheduler.from_pretrained(model, subfolder="scheduler")
    scheduler.set_timesteps(grid)
    trailing = [int(t) for t in scheduler.timesteps]
    for steps in range(1, grid + 1):
        assert denoising_timesteps(steps, steps / grid) == trailing[grid - steps :]


def test_schedulers_without_custom_timesteps_run_diffusers_schedule(
    registry: PipelineRegistry, models: ModelDirectory, model: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert models.root is not None
    ddim = models.root / "ddim"
    shutil.copytree(model, ddim)
    config = json.loads((ddim / "scheduler" / "scheduler_config.json").read_text())
    config["_class_name"] = "DDIMScheduler"
    (ddim / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    (ddim / "model_index.json").write_text(
        (ddim / "model_index.json").read_text().replace("EulerDiscreteScheduler", "DDIMScheduler")
    )
    runner = registry.create(NAME, {"model": "ddim", "strength": 0.6, "prompt": "moss"})
    frame = picture(12)
    out = run(runner, [frame])[0]
    runner.stop()
    # A DDIM config without clip_sample is dated: diffusers warns, the pipeline logs it.
    assert any("clip_sample" in r.getMessage() for r in caplog.records)
    with pytest.warns(FutureWarning, match="clip_sample"):
        pipe = diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(
            str(ddim), local_files_only=True
        )
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    # One step at strength 0.6: a schedule of 2, of which int(2 * 0.6) = 1 step runs.
    expected = diffuse_offline(
        pipe, rgb_of([frame]), prompt="moss", strength=0.6, num_inference_steps=2, seed=0
    )
    assert_planes_match(out, expected)


def test_a_batch_equals_diffusers_on_the_same_batch(models: ModelDirectory, offline: Any) -> None:
    pipeline = Img2ImgDiffusionPipeline()
    params = validate(
        NAME, pipeline.spec.params, {"model": TINY, "prompt": "ink", "steps": 2}, models=models
    )
    pipeline.prepare(PipelineContext(models=models), params)
    pipeline.update(params)
    rgb = rgb_of([picture(5), picture(6)])
    with torch.inference_mode():
        ours = pipeline.process(rgb.clone(), params)
    theirs = diffuse_offline(
        offline, rgb, prompt="ink", strength=0.5, num_inference_steps=4, seed=0
    )
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_live_updates_reuse_the_model_and_embed_a_prompt_once(runner: PipelineRunner) -> None:
    frame = picture(8)
    first = planes(run(runner, [frame])[0])
    assert isinstance(runner.pipeline, Img2ImgDiffusionPipeline)
    model = runner.pipeline.diffusers_pipeline
    again = planes(run(runner, [frame])[0])
    assert all((a == b).all() for a, b in zip(again, first, strict=True))  # deterministic

    for change in ({"strength": 0.7}, {"seed": 8}, {"steps": 3}):
        runner.update(change)
        changed = planes(run(runner, [frame])[0])
        assert any((a != b).any() for a, b in zip(changed, first, strict=True)), change
    assert runner.pipeline.statistics().prompt_encodings == 1

    runner.update({"prompt": "a blue whale"})
    run(runner, [frame])
    run(runner, [frame])
    assert runner.pipeline.statistics().prompt_encodings == 2
    assert runner.pipeline.statistics().loads == 1
    assert runner.pipeline.diffusers_pipeline is model


def test_zero_strength_passes_frames_through(runner: PipelineRunner) -> None:
    runner.update({"strength": 0.0})
    frame = picture(9)
    for ours, theirs in zip(planes(run(runner, [frame])[0]), planes(frame), strict=True):
        assert np.abs(ours - theirs).max() <= 1


def test_sides_that_are_not_multiples_of_8_come_back_the_same_size(
    models: ModelDirectory,
) -> None:
    pipeline = Img2ImgDiffusionPipeline()
    params = validate(NAME, pipeline.spec.params, {"model": TINY}, models=models)
    pipeline.prepare(PipelineContext(models=models), params)
    pipeline.update(params)
    rgb = torch.rand(1, 3, 60, 70)
    with torch.inference_mode():
        out = pipeline.process(rgb, params)
    assert out.shape == rgb.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@given(steps=st.integers(1, 50), strength=st.floats(0.001, 1.0))
@example(steps=21, strength=0.35)  # 21 / 0.35 is a hair over 60: 60 is the shortest
def test_inference_steps_is_the_shortest_schedule_running_the_asked_steps(
    steps: int, strength: float
) -> None:
    count = inference_steps(steps, strength)
    assert min(int(count * strength), count) >= steps
    assert count == steps or int((count - 1) * strength) < steps


def test_bad_parameters_are_refused_when_the_runner_is_created(registry: PipelineRegistry) -> None:
    with pytest.raises(InvalidParamsError) as error:
        registry.create(NAME, {"model": TINY, "strength": 1.5, "steps": 0, "prompt": 3})
    assert len(error.value.problems) == 3


def test_a_model_is_a_name_in_the_models_directory_never_a_path(
    registry: PipelineRegistry, model: str
) -> None:
    """Refused before anything is loaded: a path, even to the model itself, a way up, and a
    name the directory does not hold."""
    for name, reason in [
        (model, "is a path"),
        (f"../{TINY}", "is a path"),
        ("..", "is '..'"),
        ("absent", "is not in the worker's models directory"),
    ]:
        with pytest.raises(InvalidParamsError, match=reason):
            registry.create(NAME, {"model": name})
    runner = registry.create(NAME, {"model": TINY})
    with pytest.raises(InvalidParamsError, match="is a path"):
        runner.update({"model": model})
    with pytest.raises(InvalidParamsError, match="has no models directory"):
        PipelineRegistry(entry_points=False).create(NAME, {"model": TINY})


def test_missing_and_broken_model_directories_are_reported(
    registry: PipelineRegistry, models: ModelDirectory, model: str
) -> None:
    assert models.root is not None
    with pytest.raises(PipelineError, match="needs a 'model' directory"):
        registry.create(NAME).prepare()
    (models.root / "empty").mkdir()
    with pytest.raises(PipelineError, match=r"no model_index\.json"):
        registry.create(NAME, {"model": "empty"}).prepare()

    broken = models.root / "broken"
    shutil.copytree(model, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(PipelineError, match="cannot load diffusion model"):
        registry.create(NAME, {"model": "broken"}).prepare()

    other = models.root / "other"
    shutil.copytree(model, other)
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "NoSuchPipeline"}))
    with pytest.raises(PipelineError, match="cannot load diffusion model"):
        registry.create(NAME, {"model": "other"}).prepare()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_in_float16_on_cuda(models: ModelDirectory) -> None:
    params = validate(
        NAME, Img2ImgDiffusionPipeline.spec.params, {"model": TINY, "seed": 3}, models=models
    )
    results = []
    for device in ("cpu", "cuda:0"):
        pipeline = Img2ImgDiffusionPipeline()
        pipeline.prepare(PipelineContext(device=device, models=models), params)
        pipeline.update(params)
        rgb = rgb_of([picture(10), picture(11)]).to(device)
        with torch.inference_mode():
            out = pipeline.process(rgb, params)
        assert out.device == rgb.device and out.dtype == torch.float32
        results.append(out.cpu())
        if device != "cpu":
            assert pipeline.diffusers_pipeline.dtype == torch.float16
    # CUDA draws other random numbers than the CPU: compare overall statistics only.
    cpu, cuda = results
    assert torch.isfinite(cuda).all()
    assert abs(float(cpu.mean()) - float(cuda.mean())) < 0.1
