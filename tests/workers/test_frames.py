"""Frame memory: zero-copy planes, colour conversion against libswscale, the output pool."""

from __future__ import annotations

import importlib
import importlib.util
import io
import shutil
from typing import Any

import av
import numpy as np
import pytest
import torch
from av.video.frame import VideoFrame

from lpstream.errors import MediaError
from tests.mediatools import make_clip
from workers.frames import (
    FrameConverter,
    FramePool,
    PixelLayout,
    YuvBatch,
    planes_as_arrays,
    planes_as_tensors,
    rgb_to_yuv420,
    yuv420_to_rgb,
)

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> list[VideoFrame]:
    """Frames decoded by PyAV from a testsrc2 clip made by the ffmpeg CLI."""
    path = make_clip(
        tmp_path_factory.mktemp("clip") / "clip.mp4",
        seconds=0.3,
        size="320x240",
        audio=False,
        fmt="mp4",
    )
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def test_planes_are_views_of_the_decoded_frame(decoded: list[VideoFrame]) -> None:
    frame = decoded[3]
    planes = planes_as_tensors(frame)
    for tensor, plane in zip((planes.y, planes.u, planes.v), frame.planes, strict=True):
        assert tensor.data_ptr() == plane.buffer_ptr
        assert tensor.shape == (1, plane.height, plane.width)
        assert tensor.stride()[1] == plane.line_size
    assert np.array_equal(planes.y[0].numpy(), frame.to_ndarray()[: frame.height])


def test_writes_through_plane_views_change_the_frame() -> None:
    # 500 is not a multiple of the line alignment: rows are padded, the views stride over it.
    frame = VideoFrame(500, 200, "yuv420p")
    y, u, v = planes_as_arrays(frame)
    assert y.shape == (200, 500) and y.strides[0] == frame.planes[0].line_size > 500
    planes = planes_as_tensors(frame)
    planes.y.fill_(77)
    planes.u.fill_(100)
    planes.v.fill_(200)
    whole = frame.to_ndarray()  # rows: Y, then U and V packed two chroma rows per row
    assert (whole[:200] == 77).all()
    assert int(y[0, 0]) == 77 and int(u[-1, -1]) == 100 and int(v[0, 0]) == 200


def test_odd_sizes_and_other_formats_are_refused() -> None:
    with pytest.raises(MediaError, match="even"):
        planes_as_tensors(VideoFrame(321, 240, "yuv420p"))
    with pytest.raises(MediaError, match="yuv420p"):
        planes_as_tensors(VideoFrame(320, 240, "rgb24"))
    with pytest.raises(MediaError, match="even"):
        FramePool(320, 239)


def test_yuv_to_rgb_matches_libswscale(decoded: list[VideoFrame]) -> None:
    for frame in decoded[:3]:
        out = torch.empty((1, 3, frame.height, frame.width))
        rgb = yuv420_to_rgb(planes_as_tensors(frame), out)
        assert rgb is out
        ours = (rgb[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy().astype(int)
        reference = frame.to_ndarray(format="rgb24").astype(int)
        assert np.abs(ours - reference).max() <= 3
        assert np.abs(ours - reference).mean() < 1.0


def test_rgb_to_yuv_matches_libswscale_on_smooth_pictures() -> None:
    h, w = 120, 160
    rows, cols = np.mgrid[0:h, 0:w]
    picture = np.stack(
        (cols * 255 // (w - 1), rows * 255 // (h - 1), (rows + cols) * 255 // (h + w - 2)), axis=-1
    ).astype(np.uint8)
    reference = VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
    frame = VideoFrame(w, h, "yuv420p")
    rgb = torch.from_numpy(picture).permute(2, 0, 1).unsqueeze(0).float() / 255
    rgb_to_yuv420(rgb, planes_as_tensors(frame))
    for ours, theirs in zip(planes_as_arrays(frame), planes_as_arrays(reference), strict=True):
        assert np.abs(ours.astype(int) - theirs).max() <= 2


def test_bt709_full_range_round_trip_is_close() -> None:
    rgb = torch.rand((2, 3, 64, 64)).mul_(0.8).add_(0.1)
    rgb = torch.nn.functional.avg_pool2d(rgb, 5, stride=1, padding=2, count_include_pad=False)
    planes = YuvBatch(
        y=torch.empty((2, 64, 64), dtype=torch.uint8),
        u=torch.empty((2, 32, 32), dtype=torch.uint8),
        v=torch.empty((2, 32, 32), dtype=torch.uint8),
    )
    for bt709 in (False, True):
        for full in (False, True):
            rgb_to_yuv420(rgb, planes, bt709=bt709, full_range=full)
            back = yuv420_to_rgb(planes, torch.empty_like(rgb), bt709=bt709, full_range=full)
            # 4:2:0 keeps one chroma value per 2x2 block; the blur keeps blocks near-uniform.
            assert (back - rgb).abs().mean() < 0.02


def test_pool_reuses_memory_once_frames_are_released() -> None:
    pool = FramePool(64, 48, capacity=3)
    pointers = set()
    for _ in range(20):
        frame, planes = pool.acquire()
        assert planes.y.data_ptr() == frame.planes[0].buffer_ptr
        pointers.add(frame.planes[0].buffer_ptr)
        del frame, planes  # the consumer is done with it
    stats = pool.statistics()
    assert len(pointers) == 1  # one frame, handed out again and again
    assert stats.allocated == 1 and stats.reused == 19 and stats.overflow == 0


def test_pool_never_grows_past_its_capacity() -> None:
    pool = FramePool(64, 48, capacity=3)
    held = [pool.acquire()[0] for _ in range(10)]  # a consumer that holds everything
    stats = pool.statistics()
    assert stats.allocated == 3 and stats.overflow == 7
    pooled = {f.planes[0].buffer_ptr for f in held[:3]}
    assert len(pooled) == 3
    del held
    again = {pool.acquire()[0].planes[0].buffer_ptr for _ in range(6)}
    assert again <= pooled
    assert pool.statistics().allocated == 3


def test_pool_frames_stay_correct_through_an_encoder() -> None:
    """Reusing a pooled frame after encoding it never changes what was encoded."""
    pool = FramePool(64, 48, capacity=2)
    sink = io.BytesIO()
    with av.open(sink, mode="w", format="mpegts") as container:
        stream = container.add_stream(
            "libx264", rate=30, options={"qp": "0", "preset": "ultrafast"}
        )
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for value in range(0, 250, 25):
            frame, planes = pool.acquire()
            planes.y.fill_(value)
            planes.u.fill_(128)
            planes.v.fill_(128)
            frame.pts = value // 25
            container.mux(stream.encode(frame))
            del frame, planes
        container.mux(stream.encode(None))
    assert pool.statistics().allocated <= 2
    sink.seek(0)
    with av.open(sink, mode="r") as container:
        lumas = [int(np.median(planes_as_arrays(f)[0])) for f in container.decode(video=0)]
    assert lumas == list(range(0, 250, 25))


def test_converter_batches_and_pools(decoded: list[VideoFrame]) -> None:
    converter = FrameConverter(PixelLayout.RGB, pool_size=4)
    single = [converter.to_rgb([f]).clone() for f in decoded[:2]]
    batch = converter.to_rgb(decoded[:2])
    assert torch.equal(batch, torch.cat(single))
    yuv = FrameConverter(PixelLayout.YUV420)
    gathered = yuv.to_yuv(decoded[:2])
    assert torch.equal(gathered.y[1], planes_as_tensors(decoded[1]).y[0])
    outputs = yuv.from_yuv(gathered, decoded[:2])
    assert [o.pts for o in outputs] == [f.pts for f in decoded[:2]]
    for out, source in zip(outputs, decoded[:2], strict=True):
        for a, b in zip(planes_as_arrays(out), planes_as_arrays(source), strict=True):
            assert np.array_equal(a, b)
    with pytest.raises(MediaError, match="shape"):
        yuv.from_yuv(gathered, decoded[:3])


@pytest.mark.gpu
@pytest.mark.skipif(
    importlib.util.find_spec("cupy") is None or not torch.cuda.is_available(),
    reason="needs CUDA and CuPy (pip install 'lpstream[gpu]')",
)
def test_cuda_planes_are_cupy_buffers_seen_by_torch(decoded: list[VideoFrame]) -> None:
    cupy: Any = importlib.import_module("cupy")

    converter = FrameConverter(PixelLayout.YUV420, device="cuda:0")
    planes = converter.to_yuv(decoded[:1])
    assert planes.y.is_cuda
    assert cupy.from_dlpack(planes.y).data.ptr == planes.y.data_ptr()
    again = converter.to_yuv(decoded[1:2])
    assert again.y.data_ptr() == planes.y.data_ptr()  # pooled: uploaded into the same buffer
    assert np.array_equal(again.y[0].cpu().numpy(), planes_as_arrays(decoded[1])[0])
    rgb_converter = FrameConverter(PixelLayout.RGB, device="cuda:0")
    rgb = rgb_converter.to_rgb(decoded[:1])
    (out,) = rgb_converter.from_rgb(rgb, decoded[:1])
    cpu = FrameConverter(PixelLayout.RGB)
    (expected,) = cpu.from_rgb(cpu.to_rgb(decoded[:1]), decoded[:1])
    for a, b in zip(planes_as_arrays(out), planes_as_arrays(expected), strict=True):
        assert np.abs(a.astype(int) - b).max() <= 1


def test_cuda_device_without_cupy_or_cuda_is_a_media_error() -> None:
    if importlib.util.find_spec("cupy") is not None and torch.cuda.is_available():
        pytest.skip("CUDA and CuPy are present here")
    with pytest.raises(MediaError, match=r"CuPy|CUDA"):
        FrameConverter(PixelLayout.RGB, device="cuda:0")
