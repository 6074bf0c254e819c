"""Pipelines: parameters, the registry (with a real installed plugin), the runner, built-ins.

Each effect's output is compared with the same maths computed offline, in NumPy float64, on
the same decoded frames (converted to RGB by ``yuv420_to_rgb``, which test_frames checks
against libswscale).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any, ClassVar

import av
import numpy as np
import pytest
import torch
from av.video.frame import VideoFrame

from lpstream.errors import MediaError
from tests.mediatools import make_clip
from workers.frames import YuvBatch, planes_as_arrays, planes_as_tensors, rgb_to_yuv420
from workers.frames import yuv420_to_rgb as to_rgb
from workers.pipelines import (
    ENTRY_POINT_GROUP,
    FloatParam,
    IntParam,
    InvalidParamsError,
    ModelDirectory,
    Params,
    PipelineError,
    PipelineRegistry,
    PipelineSpec,
    UnknownPipelineError,
    YuvPipeline,
)
from workers.pipelines.effects import LOOKS, grade_matrix

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

Array = np.ndarray[Any, np.dtype[np.float64]]


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> list[VideoFrame]:
    path = make_clip(
        tmp_path_factory.mktemp("clip") / "clip.mp4",
        seconds=0.2,
        size="256x192",
        audio=False,
        fmt="mp4",
    )
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def rgb_of(frame: VideoFrame) -> Array:
    """``[3, H, W]`` float64 RGB of a decoded frame."""
    out = torch.empty((1, 3, frame.height, frame.width))
    return to_rgb(planes_as_tensors(frame), out)[0].double().numpy()


def planes_of(rgb: Array) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], ...]:
    """The yuv420p planes an RGB picture converts to."""
    _, h, w = rgb.shape
    frame = VideoFrame(w, h, "yuv420p")
    rgb_to_yuv420(torch.from_numpy(rgb).float().unsqueeze(0), planes_as_tensors(frame))
    return planes_as_arrays(frame)


def assert_planes_close(out: VideoFrame, expected: Array, *, share: float = 1.0) -> None:
    """Every (or ``share`` of every) sample within one level of the offline result."""
    for ours, theirs in zip(planes_as_arrays(out), planes_of(expected), strict=True):
        close = np.abs(ours.astype(int) - theirs.astype(int)) <= 1
        assert close.mean() >= share, close.mean()


def run_all(
    registry: PipelineRegistry, name: str, frames: list[VideoFrame], **params: object
) -> list[VideoFrame]:
    runner = registry.create(name, params)
    outputs = [out for frame in frames for out in runner.push(frame)] + runner.flush()
    runner.stop()
    return outputs


# -- parameters -------------------------------------------------------------------------


def test_parameters_get_defaults_and_every_problem_is_listed() -> None:
    registry = PipelineRegistry(entry_points=False)
    runner = registry.create("color-grade")
    assert dict(runner.params) == {
        "look": "warm",
        "strength": 1.0,
        "saturation": 1.0,
        "contrast": 1.0,
        "brightness": 0.0,
    }
    with pytest.raises(InvalidParamsError) as caught:
        registry.create("color-grade", {"strength": 2, "look": "neon", "colour": 1})
    problems = caught.value.problems
    assert "unknown parameter 'colour'" in problems
    assert any("strength must be <= 1.0" in p for p in problems)
    assert any("look must be one of none, warm" in p for p in problems)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(InvalidParamsError, match="levels must be a whole number, not bool"):
        registry.create("cartoon", {"levels": True})


def test_updates_are_validated_at_once_and_build_on_each_other() -> None:
    runner = PipelineRegistry(entry_points=False).create("cartoon")
    runner.update({"levels": 4})
    assert runner.update({"smoothing": 0}).get_int("levels") == 4
    with pytest.raises(InvalidParamsError):
        runner.update({"levels": 4, "smoothing": 9})
    assert runner.params.get_int("smoothing") == 0  # the bad update changed nothing


# -- registry ---------------------------------------------------------------------------


def test_registry_lists_builtins_with_schemas_without_importing_torch() -> None:
    code = (
        "import json, sys\n"
        "from workers.pipelines import PipelineRegistry\n"
        "infos = [i.to_dict() for i in PipelineRegistry().describe()]\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'infos': infos}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    answer = json.loads(proc.stdout)
    assert answer["torch"] is False
    infos = {i["name"]: i for i in answer["infos"]}
    assert {"noop", "cartoon", "color-grade", "torchscript"} <= set(infos)
    strength = infos["color-grade"]["params"]["properties"]["strength"]
    assert strength == {
        "type": "number",
        "default": 1.0,
        "minimum": 0.0,
        "maximum": 1.0,
        "description": "0 leaves the frame as it is, 1 applies the full grade",
    }
    assert infos["noop"]["layout"] == "yuv420" and infos["cartoon"]["layout"] == "rgb"
    assert infos["noop"]["source"] == "builtin"


PLUGIN = """
from typing import ClassVar
from workers.pipelines import FloatParam, Params, PipelineSpec, YuvPipeline
from workers.frames import YuvBatch

class Darken(YuvPipeline):
    spec: ClassVar[PipelineSpec] = PipelineSpec(
        name="darken", description="Halves luma.",
        params=(FloatParam(name="factor", default=0.5, minimum=0.0, maximum=1.0),),
    )
    def process(self, frames: YuvBatch, params: Params) -> YuvBatch:
        y = (frames.y.float() * params.get_float("factor")).to(frames.y.dtype)
        return YuvBatch(y=y, u=frames.u, v=frames.v)

class Misnamed(Darken):
    spec: ClassVar[PipelineSpec] = PipelineSpec(name="other", description="x")
"""


def install_plugin(root: Path) -> None:
    """Lays out an installed distribution (package + dist-info with entry points) in root."""
    (root / "lpstream_darken").mkdir()
    (root / "lpstream_darken" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "lpstream_darken-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lpstream-darken\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "darken = lpstream_darken:Darken\n"
        "misnamed = lpstream_darken:Misnamed\n"
        "broken = lpstream_darken_missing:Nothing\n"
        "noop = lpstream_darken:Darken\n"
    )


def test_a_third_party_pipeline_is_found_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoded: list[VideoFrame]
) -> None:
    install_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = PipelineRegistry()
    assert "darken" in registry.names()
    info = next(i for i in registry.describe() if i.name == "darken")
    assert info.source == "lpstream-darken 1.2"
    assert info.params["properties"]["factor"]["default"] == 0.5
    problems = registry.problems
    assert set(problems) >= {"broken", "misnamed", "noop"}
    assert "failed to load" in problems["broken"]
    assert registry.get("noop").__module__ == "workers.pipelines.noop"  # built-ins stay
    (out,) = run_all(registry, "darken", decoded[:1], factor=0.25)
    expected = (planes_as_arrays(decoded[0])[0].astype(np.float32) * 0.25).astype(np.uint8)
    assert np.array_equal(planes_as_arrays(out)[0], expected)
    sys.modules.pop("lpstream_darken", None)


def test_unknown_pipelines_are_named_in_the_error() -> None:
    with pytest.raises(UnknownPipelineError, match=r"'sharpen' \(known: .*noop"):
        PipelineRegistry(entry_points=False).get("sharpen")


# -- built-ins --------------------------------------------------------------------------


def test_noop_output_is_the_input_bit_for_bit_in_pooled_frames(decoded: list[VideoFrame]) -> None:
    runner = PipelineRegistry(entry_points=False).create("noop", pool_size=2)
    pointers = set()
    for frame in decoded:
        (out,) = runner.push(frame)
        assert out.pts == frame.pts and out.time_base == frame.time_base
        for a, b in zip(planes_as_arrays(out), planes_as_arrays(frame), strict=True):
            assert np.array_equal(a, b)
        pointers.add(out.planes[0].buffer_ptr)
        del out
    stats = runner.statistics()
    assert stats.frames_in == stats.frames_out == len(decoded)
    # Six frames went through two pooled frames (a and b above kept the last one alive).
    assert stats.pool is not None and stats.pool.allocated == 2 and len(pointers) == 2


def reference_grade(rgb: Array, look: str, strength: float, **kw: float) -> Array:
    m, offset = grade_matrix(
        look, kw.get("saturation", 1.0), kw.get("contrast", 1.0), kw.get("brightness", 0.0)
    )
    graded = np.clip(
        np.einsum("ij,jhw->ihw", np.array(m), rgb) + np.array(offset)[:, None, None], 0, 1
    )
    result: Array = rgb + strength * (graded - rgb)
    return result


def test_color_grade_matches_the_offline_computation(decoded: list[VideoFrame]) -> None:
    registry = PipelineRegistry(entry_points=False)
    settings = {
        "look": "sepia",
        "strength": 0.7,
        "saturation": 1.4,
        "contrast": 1.2,
        "brightness": 0.05,
    }
    outputs = run_all(registry, "color-grade", decoded[:3], **settings)
    for out, frame in zip(outputs, decoded, strict=False):
        expected = reference_grade(
            rgb_of(frame), "sepia", 0.7, saturation=1.4, contrast=1.2, brightness=0.05
        )
        assert_planes_close(out, expected)
    assert set(LOOKS) == {"none", "warm", "cool", "sepia", "mono"}


def test_color_grade_mono_has_no_colour(decoded: list[VideoFrame]) -> None:
    (out,) = run_all(PipelineRegistry(entry_points=False), "color-grade", decoded[:1], look="mono")
    _, u, v = planes_as_arrays(out)
    assert np.abs(u.astype(int) - 128).max() <= 1 and np.abs(v.astype(int) - 128).max() <= 1


def box_blur(rgb: Array, radius: int) -> Array:
    """Mean over the (2r+1)^2 window, counting only pixels inside the picture."""
    if radius == 0:
        return rgb
    padded = np.pad(rgb, ((0, 0), (radius, radius), (radius, radius)))
    ones = np.pad(np.ones(rgb.shape[1:]), radius)
    _, h, w = rgb.shape
    total, count = np.zeros_like(rgb), np.zeros(rgb.shape[1:])
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            total += padded[:, dy : dy + h, dx : dx + w]
            count += ones[dy : dy + h, dx : dx + w]
    return total / count


def reference_cartoon(rgb: Array, levels: int, smoothing: int, threshold: float) -> Array:
    smooth = box_blur(rgb, smoothing)
    poster = np.round(smooth * (levels - 1)) / (levels - 1)
    luma = np.pad(np.einsum("c,chw->hw", np.array([0.299, 0.587, 0.114]), smooth), 1, mode="edge")
    h, w = rgb.shape[1:]
    win = {(dy, dx): luma[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)}
    gx = (win[0, 2] + 2 * win[1, 2] + win[2, 2]) - (win[0, 0] + 2 * win[1, 0] + win[2, 0])
    gy = (win[2, 0] + 2 * win[2, 1] + win[2, 2]) - (win[0, 0] + 2 * win[0, 1] + win[0, 2])
    edge = np.clip((np.hypot(gx, gy) - threshold) / threshold, 0, 1)
    result: Array = poster * (1 - edge)
    return result


def test_cartoon_matches_the_offline_computation(decoded: list[VideoFrame]) -> None:
    outputs = run_all(
        PipelineRegistry(entry_points=False),
        "cartoon",
        decoded[:2],
        levels=5,
        smoothing=2,
        edge_threshold=0.3,
    )
    for out, frame in zip(outputs, decoded, strict=False):
        # Posterizing rounds: float32 and float64 may land on either side of a step.
        assert_planes_close(out, reference_cartoon(rgb_of(frame), 5, 2, 0.3), share=0.995)
    darkest = planes_as_arrays(outputs[0])[0].min()
    assert darkest <= 17  # outlines are black (limited-range luma 16)


def test_parameter_changes_apply_from_the_next_batch(decoded: list[VideoFrame]) -> None:
    runner = PipelineRegistry(entry_points=False).create("color-grade", {"look": "none"})
    first = runner.push(decoded[0])
    changed = threading.Thread(target=runner.update, args=({"look": "cool", "strength": 0.5},))
    changed.start()
    changed.join()
    second = runner.push(decoded[1])
    assert_planes_close(first[0], reference_grade(rgb_of(decoded[0]), "none", 1.0))
    assert_planes_close(second[0], reference_grade(rgb_of(decoded[1]), "cool", 0.5))
    assert runner.statistics().updates == 1
    runner.stop()
    with pytest.raises(PipelineError, match="stopped"):
        runner.push(decoded[2])


def save_script(module: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript in favour of export
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(path))


def invert_module(path: Path) -> torch.nn.Module:
    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mix = torch.nn.Conv2d(3, 3, 1)
            with torch.no_grad():
                self.mix.weight.copy_(
                    torch.tensor([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]]).view(3, 3, 1, 1)
                )
                assert self.mix.bias is not None
                self.mix.bias.zero_()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mixed: torch.Tensor = self.mix(x)  # swap red and blue
            return 1.0 - mixed  # then invert

    model = Model().eval()
    save_script(model, path)
    return model


def test_torchscript_output_equals_the_model_run_offline(
    tmp_path: Path, decoded: list[VideoFrame]
) -> None:
    model = invert_module(tmp_path / "invert.pt")
    outputs = run_all(
        PipelineRegistry(entry_points=False, models=ModelDirectory(tmp_path)),
        "torchscript",
        decoded[:2],
        model="invert.pt",
    )
    for out, frame in zip(outputs, decoded, strict=False):
        with torch.no_grad():
            offline = model(torch.from_numpy(rgb_of(frame)).float().unsqueeze(0))[0]
        assert_planes_close(out, offline.clamp(0, 1).double().numpy())


def test_torchscript_reports_missing_and_misshapen_models(
    tmp_path: Path, decoded: list[VideoFrame]
) -> None:
    registry = PipelineRegistry(entry_points=False, models=ModelDirectory(tmp_path))
    with pytest.raises(PipelineError, match="needs a 'model' path"):
        registry.create("torchscript").prepare()
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(PipelineError, match="is not a file"):
        registry.create("torchscript", {"model": "folder.pt"}).prepare()
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(PipelineError, match="cannot load"):
        registry.create("torchscript", {"model": "junk.pt"}).prepare()
    save_script(torch.nn.Conv2d(3, 1, 1), tmp_path / "grey.pt")
    runner = registry.create("torchscript", {"model": "grey.pt"})
    with pytest.raises(PipelineError, match=r"returned \(1, 1, 192, 256\)"):
        runner.push(decoded[0])


def test_a_model_a_client_names_must_be_in_the_models_directory(tmp_path: Path) -> None:
    """A path, a way up or a name the directory lacks is refused, naming the parameter and the
    reason, before anything is loaded; so is any name on a worker without a directory."""
    models = tmp_path / "models"
    models.mkdir()
    save_script(torch.nn.Identity(), models / "ok.pt")
    secret = tmp_path / "elsewhere.pt"
    save_script(torch.nn.Identity(), secret)
    registry = PipelineRegistry(entry_points=False, models=ModelDirectory(models))
    for name, reason in [
        (str(secret), "is a path"),
        ("../elsewhere.pt", "is a path"),
        ("..\\elsewhere.pt", "is a path"),
        ("..", "is '..'"),
        ("ok.pt\0", "holds a NUL"),
        ("x" * 300, "is longer than 255 characters"),
        ("missing.pt", "is not in the worker's models directory"),
    ]:
        with pytest.raises(InvalidParamsError, match=re.escape(reason)) as refused:
            registry.create("torchscript", {"model": name})
        assert refused.value.problems[0].startswith("model ")
    runner = registry.create("torchscript", {"model": "ok.pt"})
    with pytest.raises(InvalidParamsError, match="is a path"):
        runner.update({"model": str(secret)})  # a live change is checked the same way
    with pytest.raises(InvalidParamsError, match="has no models directory"):
        PipelineRegistry(entry_points=False).create("torchscript", {"model": "ok.pt"})
    # The gateway checks the form, with no directory at hand.
    registry.check_model_names("torchscript", {"model": "ok.pt"})
    registry.check_model_names("no-such-pipeline", {"model": "/etc/passwd"})
    with pytest.raises(InvalidParamsError, match="is a path"):
        registry.check_model_names("torchscript", {"model": "/etc/passwd"})


class PairwiseMean(YuvPipeline):
    """Averages the luma of the frames of each batch: shows batches are real."""

    spec: ClassVar[PipelineSpec] = PipelineSpec(
        name="pair-mean",
        description="test",
        batch_size=2,
        params=(IntParam(name="unused", default=0), FloatParam(name="x", default=0.0)),
    )

    def process(self, frames: YuvBatch, params: Params) -> YuvBatch:
        mean = frames.y.float().mean(dim=0, keepdim=True).expand_as(frames.y).round()
        return YuvBatch(y=mean.to(torch.uint8), u=frames.u, v=frames.v)


def test_batches_gather_frames_and_flush_a_short_one(decoded: list[VideoFrame]) -> None:
    registry = PipelineRegistry(entry_points=False)
    registry.register(PairwiseMean)
    runner = registry.create("pair-mean")
    assert runner.push(decoded[0]) == []
    pair = runner.push(decoded[1])
    assert [f.pts for f in pair] == [decoded[0].pts, decoded[1].pts]
    expected = np.round(
        (planes_as_arrays(decoded[0])[0].astype(np.float32) + planes_as_arrays(decoded[1])[0]) / 2
    )
    assert np.array_equal(planes_as_arrays(pair[0])[0], expected.astype(np.uint8))
    assert runner.push(decoded[2]) == []
    (last,) = runner.flush()
    assert np.array_equal(planes_as_arrays(last)[0], planes_as_arrays(decoded[2])[0])
    with pytest.raises(PipelineError, match="already registered"):
        registry.register(PairwiseMean)


def test_wrong_frames_are_media_errors() -> None:
    runner = PipelineRegistry(entry_points=False).create("noop")
    with pytest.raises(MediaError, match="yuv420p"):
        runner.push(VideoFrame(64, 48, "rgb24"))
