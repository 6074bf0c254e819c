"""``benchmarks/gpu.py`` in its CPU form: the report it prints where there is no GPU, and the
ladder-streams measurement of its nvenc section run with the encoder this machine has."""

from __future__ import annotations

import importlib.util
import re
import shutil

import pytest

pytest.importorskip("torch")

from benchmarks.gpu import ladder_streams, main
from workers.gpu import X264, discover_gpus

pytestmark = [
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI"),
    # diffusers' schedulers call np.array on tensors on every frame; numpy 2 flags it.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]

AI_ROW = re.compile(
    r"^ai 64x64 (?P<name>[a-z0-9-]+) +(?P<where>in-process|child) +(?P<fps>[\d.]+) fps"
    r"  latency p50 +(?P<p50>[\d.]+) ms p95 +(?P<p95>[\d.]+) ms"
    r"  added p50 +(?P<added>[-+][\d.]+) ms p95 +[-+][\d.]+ ms$",
    re.MULTILINE,
)


@pytest.mark.slow
def test_cpu_run_reports_ai_figures_and_why_the_gpu_sections_were_skipped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--device", "cpu", "--sizes", "64x64", "--frames", "8", "--warmup", "2"]
    assert main([*argv, "--torch-threads", "1"]) == 0
    out = capsys.readouterr().out

    assert re.search(r"^python 3\.\d+\.\d+; torch \S+ .*PyAV \S+ \(FFmpeg ", out, re.MULTILINE)
    if not discover_gpus():
        assert "\ndevice: cpu (no GPU: GPU figures are not measured)\n" in out
    else:
        assert re.search(r"^device: cpu \(.*GPU figures are not measured\)$", out, re.MULTILINE)
    assert re.search(r"^ai 64x64 pass-through: latency p50 [\d.]+ ms", out, re.MULTILINE)

    expected = ["noop", "color-grade"]
    if importlib.util.find_spec("diffusers") is not None:
        expected.append("img2img-diffusion")
    else:
        assert "ai img2img-diffusion: skipped: needs diffusers" in out
    rows = {(m["name"], m["where"]): m for m in AI_ROW.finditer(out)}
    assert set(rows) == {(name, where) for name in expected for where in ("in-process", "child")}
    for row in rows.values():
        assert float(row["fps"]) > 0
        assert 0 < float(row["p50"]) <= float(row["p95"])

    skipped = re.search(r"^nvenc: skipped: (.+)$", out, re.MULTILINE)
    assert skipped is not None
    assert "h264_nvenc is not usable" in skipped[1] or "--device cpu" in skipped[1]
    assert "\nzerocopy: skipped: zero-copy check needs CUDA and CuPy (device cpu)\n" in out
    assert "real-time streams kept" not in out  # no NVENC figure without NVENC


def test_ladder_streams_times_both_sides_on_the_same_clip(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The nvenc section's measurement, with the encoder both sides have on a CPU machine.
    ladder_streams(X264, 1, 1)
    out = capsys.readouterr().out

    assert "encoder libx264" in out
    assert re.search(r"^ffmpeg: +ffmpeg .*-c:v libx264 .*-f mpegts ", out, re.MULTILINE)
    for side in ("lpstream", "ffmpeg"):
        row = re.search(
            rf"^  {side} +1 streams: +([\d.]+) s wall, +([\d.]+) frames/s, speed +([\d.]+)x",
            out,
            re.MULTILINE,
        )
        assert row is not None, out
        assert all(float(figure) > 0 for figure in row.groups())
    assert re.search(r"^real-time streams kept, both sides libx264: lpstream [01], ffmpeg [01]$",
                     out, re.MULTILINE)  # fmt: skip
    assert re.search(r"^ratio lpstream/ffmpeg, throughput at 1 streams: [\d.]+$", out, re.MULTILINE)


def test_a_cuda_device_that_is_not_here_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    if discover_gpus():
        pytest.skip("this machine has a CUDA device")
    assert main(["--device", "cuda:0", "--sections", "ai"]) == 2
    captured = capsys.readouterr()
    assert "--device cuda:0: no such CUDA device here (present: none)" in captured.err
    assert "== ai" not in captured.out
