"""The picture batch pipelines (text-to-image, image-to-image, upscale) on tiny random models.

Each pipeline is loaded from a tiny model directory built offline, run through ``run`` with a
recording sink, and its PNG bytes compared with the same diffusers pipeline called directly in
the test with the same seed: the pixels must be equal and so must the bytes.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
from PIL import Image

from workers.batch.base import (
    BadRequestError,
    BatchOutput,
    BatchPipeline,
    BatchRequest,
    BatchUsage,
    RequestTooLargeError,
)
from workers.batch.image_to_image import ImageToImagePipeline
from workers.batch.images import (
    MAX_INPUT_BYTES,
    MAX_INPUT_PIXELS,
    encode_png,
    picture_size,
    read_picture,
)
from workers.batch.pictures import MAX_CALL_PICTURES, PictureBatchPipeline
from workers.batch.text_to_image import TextToImagePipeline
from workers.batch.upscale import UpscalePipeline
from workers.pipelines.params import InvalidParamsError, PipelineError

pytest.importorskip("diffusers", reason="needs lpstream[ai] (diffusers, transformers)")

import torch

from benchmarks.harness.tiny_ai_images import (
    build_tiny_sd,
    build_tiny_upscaler,
    diffusers,
)

pytestmark = [
    # diffusers' schedulers call np.array on tensors on every step; numpy 2 flags it.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]


@attrs.define
class RecordingSink:
    """A sink that keeps what a pipeline sends it."""

    outputs: list[BatchOutput] | None = None
    pieces: dict[int, bytes] = attrs.Factory(dict)

    def start(self, outputs: Any) -> None:
        assert self.outputs is None, "start called twice"
        self.outputs = list(outputs)

    def data(self, track: int, payload: bytes) -> None:
        assert self.outputs is not None, "data before start"
        assert 0 <= track < len(self.outputs)
        self.pieces[track] = self.pieces.get(track, b"") + payload

    def pictures(self) -> list[bytes]:
        assert self.outputs is not None
        return [self.pieces[track] for track in range(len(self.outputs))]


# -- pictures -----------------------------------------------------------------------------


def random_picture(width: int, height: int, seed: int) -> Image.Image:
    """A smooth colour picture with some noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    phase = rng.uniform(0, 6.28, size=3)
    base = np.stack([np.sin(xs / 9 + ys / 13 + p) for p in phase], axis=-1)
    pixels = 127 + 90 * base + rng.normal(0, 10, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def encoded(picture: Image.Image, format: str = "PNG", **options: Any) -> bytes:
    out = io.BytesIO()
    picture.save(out, format=format, **options)
    return out.getvalue()


def pixels_of(png: bytes) -> np.ndarray[Any, np.dtype[np.uint8]]:
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG"
        return np.asarray(picture.convert("RGB"))


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few dozen bytes: its one IDAT chunk
    holds no pixels at all, so only a reader that decodes would notice."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_same_pictures(ours: list[bytes], theirs: list[Any]) -> None:
    """Our PNGs hold exactly diffusers' pictures, and are the bytes Pillow writes for them."""
    assert len(ours) == len(theirs)
    for png, picture in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(pixels_of(png), np.asarray(picture))
        assert png == encoded(picture)


def assert_nearly_same_pictures(batched: list[bytes], alone: list[bytes]) -> None:
    """Pictures made in a batch are those made alone, within float rounding: batched kernels
    round differently in the last bits, which can move a pixel by one level once scaled to 8
    bits, and nothing more."""
    assert len(batched) == len(alone)
    for ours, theirs in zip(batched, alone, strict=True):
        difference = np.abs(pixels_of(ours).astype(int) - pixels_of(theirs).astype(int))
        assert difference.max() <= 1
        assert (difference > 0).mean() < 0.01


# -- models -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {
        "sd": str(build_tiny_sd(root / "sd")),
        "upscaler": str(build_tiny_upscaler(root / "upscaler")),
    }


def loaded(cls: type[PictureBatchPipeline], path: str) -> PictureBatchPipeline:
    pipeline = cls()
    pipeline.load(path, "cpu")
    return pipeline


@pytest.fixture(scope="module")
def text_to_image(models: dict[str, str]) -> PictureBatchPipeline:
    return loaded(TextToImagePipeline, models["sd"])


@pytest.fixture(scope="module")
def image_to_image(models: dict[str, str]) -> PictureBatchPipeline:
    return loaded(ImageToImagePipeline, models["sd"])


@pytest.fixture(scope="module")
def upscale(models: dict[str, str]) -> PictureBatchPipeline:
    return loaded(UpscalePipeline, models["upscaler"])


def direct(cls_name: str, path: str) -> Any:
    """The model loaded by diffusers itself, float32 on the CPU."""
    pipe = getattr(diffusers, cls_name).from_pretrained(path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(
    pipeline: PictureBatchPipeline, params: dict[str, object], input: bytes = b""
) -> tuple[BatchUsage, RecordingSink, int]:
    """Checks, quotes and runs one request; returns its usage, its sink and its quote."""
    cls = type(pipeline)
    request = cls.checked(BatchRequest(params=params, input=input))
    sink = RecordingSink()
    usage = pipeline.run(request, sink)
    return usage, sink, cls.quote(request)


# -- each pipeline gives diffusers' own pictures ------------------------------------------------


def test_text_to_image_gives_diffusers_pictures_for_each_seed(
    text_to_image: PictureBatchPipeline, models: dict[str, str]
) -> None:
    params: dict[str, object] = {
        "prompt": "a red fox in the snow",
        "negative_prompt": "blurry",
        "width": 64,
        "height": 72,
        "num_inference_steps": 2,
        "guidance_scale": 6.0,
        "seed": 11,
        "num_images_per_prompt": 2,
    }
    usage, sink, quote = run(text_to_image, params)

    assert sink.outputs == [
        BatchOutput(name="image-0", width=64, height=72, content_type="image/png"),
        BatchOutput(name="image-1", width=64, height=72, content_type="image/png"),
    ]
    assert usage.units == (64 * 72, 64 * 72)
    assert usage.total == quote == 2 * 64 * 72
    pipe = direct("StableDiffusionPipeline", models["sd"])
    expected = pipe(
        prompt="a red fox in the snow",
        negative_prompt="blurry",
        width=64,
        height=72,
        num_inference_steps=2,
        guidance_scale=6.0,
        num_images_per_prompt=2,
        generator=[generator(11), generator(12)],
    ).images
    assert_same_pictures(sink.pictures(), expected)
    assert sink.pictures()[0] != sink.pictures()[1]  # each picture has its own seed


def test_image_to_image_gives_the_diffusers_picture_at_the_rounded_down_size(
    image_to_image: PictureBatchPipeline, models: dict[str, str]
) -> None:
    source = encoded(random_picture(70, 83, seed=1), "JPEG", quality=90)
    params: dict[str, object] = {
        "prompt": "an oil painting",
        "strength": 0.6,
        "num_inference_steps": 4,
        "guidance_scale": 7.5,
        "seed": 5,
    }
    usage, sink, quote = run(image_to_image, params, source)

    assert sink.outputs == [
        BatchOutput(name="image-0", width=64, height=80, content_type="image/png")
    ]
    assert usage.units == (64 * 80,) and quote == usage.total
    pipe = direct("StableDiffusionImg2ImgPipeline", models["sd"])
    expected = pipe(
        prompt="an oil painting",
        image=Image.open(io.BytesIO(source)).convert("RGB"),
        strength=0.6,
        num_inference_steps=4,
        guidance_scale=7.5,
        generator=generator(5),
    ).images
    assert_same_pictures(sink.pictures(), expected)


def test_upscale_gives_the_diffusers_picture_four_times_each_rounded_side(
    upscale: PictureBatchPipeline, models: dict[str, str]
) -> None:
    source = encoded(random_picture(18, 22, seed=2), "WEBP", lossless=True)
    params: dict[str, object] = {"prompt": "sharp", "num_inference_steps": 3, "seed": 9}
    usage, sink, quote = run(upscale, params, source)

    assert sink.outputs == [
        BatchOutput(name="image-0", width=64, height=80, content_type="image/png")
    ]
    assert usage.units == (64 * 80,) and quote == usage.total == 16 * 16 * 20
    pipe = direct("StableDiffusionUpscalePipeline", models["upscaler"])
    expected = pipe(
        prompt="sharp",
        image=Image.open(io.BytesIO(source)).convert("RGB"),
        num_inference_steps=3,
        generator=generator(9),
    ).images
    assert_same_pictures(sink.pictures(), expected)


def test_upscale_takes_an_empty_prompt(upscale: PictureBatchPipeline) -> None:
    usage, sink, _ = run(upscale, {"num_inference_steps": 1}, encoded(random_picture(16, 16, 3)))
    assert usage.units == (64 * 64,)
    assert pixels_of(sink.pictures()[0]).shape == (64, 64, 3)


# -- batches ------------------------------------------------------------------------------------


def two_requests(name: str) -> tuple[str, list[BatchRequest]]:
    """Two requests with one batch key but other prompts, seeds and pictures."""
    if name == "text_to_image":
        common: dict[str, object] = {"width": 64, "height": 64, "num_inference_steps": 2}
        params = [
            {**common, "prompt": "a cat", "seed": 1, "num_images_per_prompt": 2},
            {**common, "prompt": "a dog on a hill", "negative_prompt": "rain", "seed": 40},
        ]
        inputs = [b"", b""]
    elif name == "image_to_image":
        common = {"num_inference_steps": 3, "strength": 0.7}
        params = [{**common, "prompt": "ink", "seed": 3}, {**common, "prompt": "fire", "seed": 8}]
        # 66x71 and 64x64 both round down to 64x64: one batch key.
        inputs = [encoded(random_picture(66, 71, 4)), encoded(random_picture(64, 64, 5))]
    else:
        common = {"num_inference_steps": 2}
        params = [{**common, "prompt": "ink", "seed": 3}, {**common, "prompt": "fire", "seed": 8}]
        inputs = [encoded(random_picture(16, 20, 4)), encoded(random_picture(16, 20, 5))]
    cls = {
        "text_to_image": TextToImagePipeline,
        "image_to_image": ImageToImagePipeline,
        "upscale": UpscalePipeline,
    }[name]
    return name, [
        cls.checked(BatchRequest(params=p, input=i)) for p, i in zip(params, inputs, strict=True)
    ]


@pytest.mark.parametrize("name", ["text_to_image", "image_to_image", "upscale"])
def test_a_batch_of_requests_gives_what_each_gives_alone(
    name: str, request: pytest.FixtureRequest
) -> None:
    pipeline: PictureBatchPipeline = request.getfixturevalue(name)
    _, requests = two_requests(name)
    assert pipeline.batch_key(requests[0]) == pipeline.batch_key(requests[1])

    sinks = [RecordingSink(), RecordingSink()]
    before = pipeline.statistics()
    results = pipeline.run_batch(requests, sinks)

    after = pipeline.statistics()
    count = sum(type(pipeline).picture_count(one) for one in requests)
    assert (after.calls, after.pictures) == (before.calls + 1, before.pictures + count)
    for one, sink, result in zip(requests, sinks, results, strict=True):
        alone = RecordingSink()
        assert result == pipeline.run(one, alone)
        assert sink.outputs == alone.outputs
        assert_nearly_same_pictures(sink.pictures(), alone.pictures())


def test_batch_keys_need_no_model_and_part_calls_that_cannot_share() -> None:
    def key(cls: type[PictureBatchPipeline], params: dict[str, object], data: bytes = b"") -> Any:
        return cls().batch_key(cls.checked(BatchRequest(params=params, input=data)))

    base: dict[str, object] = {"prompt": "a", "width": 64, "height": 64}
    same = key(TextToImagePipeline, {**base, "prompt": "b", "seed": 4, "negative_prompt": "c"})
    assert key(TextToImagePipeline, base) == same
    assert key(TextToImagePipeline, {**base, "num_images_per_prompt": 2}) == same
    for other in ({"width": 72}, {"num_inference_steps": 3}, {"guidance_scale": 1.0}):
        assert key(TextToImagePipeline, {**base, **other}) != same
    small = png_header(64, 64)
    assert key(ImageToImagePipeline, {"prompt": "a"}, small) == key(
        ImageToImagePipeline, {"prompt": "b"}, png_header(71, 70)
    )
    assert key(ImageToImagePipeline, {"prompt": "a"}, small) != key(
        ImageToImagePipeline, {"prompt": "a"}, png_header(72, 64)
    )
    assert key(ImageToImagePipeline, {"prompt": "a"}, small) != key(
        ImageToImagePipeline, {"prompt": "a", "strength": 0.5}, small
    )
    assert key(UpscalePipeline, {}, small) != key(UpscalePipeline, {}, png_header(68, 64))


def test_a_batch_past_a_call_s_pictures_is_split_into_calls(
    text_to_image: PictureBatchPipeline,
) -> None:
    params: dict[str, object] = {
        "prompt": "a cat",
        "width": 64,
        "height": 64,
        "num_inference_steps": 1,
        "num_images_per_prompt": 3,
    }
    requests = [
        TextToImagePipeline.checked(BatchRequest(params={**params, "seed": 10 * i}))
        for i in range(4)
    ]
    sinks = [RecordingSink() for _ in requests]
    before = text_to_image.statistics()

    results = text_to_image.run_batch(requests, sinks)

    after = text_to_image.statistics()
    assert results == [BatchUsage(units=(64 * 64,) * 3)] * 4
    assert after.calls - before.calls == 2  # 12 pictures, 8 at most per call
    assert after.largest_call == MAX_CALL_PICTURES == 8
    assert all(len(sink.pictures()) == 3 for sink in sinks)
    # The third request's pictures came from both calls: still those of its seeds.
    alone = RecordingSink()
    text_to_image.run(requests[2], alone)
    assert_nearly_same_pictures(sinks[2].pictures(), alone.pictures())


def test_a_bad_picture_fails_its_request_only(image_to_image: PictureBatchPipeline) -> None:
    good = encoded(random_picture(64, 64, 6))
    cut = encoded(random_picture(64, 64, 7))[:200]  # the header is whole, the pixels are not
    params: dict[str, object] = {"prompt": "ink", "num_inference_steps": 2, "seed": 1}
    requests = [
        ImageToImagePipeline.checked(BatchRequest(params=params, input=data))
        for data in (cut, good)
    ]
    sinks = [RecordingSink(), RecordingSink()]

    bad, fine = image_to_image.run_batch(requests, sinks)

    assert isinstance(bad, BadRequestError) and bad.code == 400
    assert "not a picture" in str(bad)
    assert sinks[0].outputs is None
    assert fine == BatchUsage(units=(64 * 64,))
    assert pixels_of(sinks[1].pictures()[0]).shape == (64, 64, 3)


# -- refused requests -----------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ImageToImagePipeline, UpscalePipeline])
def test_what_is_not_a_picture_is_refused_with_400(cls: type[BatchPipeline]) -> None:
    tiff = encoded(random_picture(32, 32, 1), "TIFF")
    for data in (b"hello, this is text", tiff, b""):
        with pytest.raises(BadRequestError) as caught:
            cls.checked(BatchRequest(params={"prompt": "x"}, input=data))
        assert caught.value.code == 400
        assert "picture" in str(caught.value)


@pytest.mark.parametrize("cls", [ImageToImagePipeline, UpscalePipeline])
def test_a_picture_claiming_too_many_pixels_is_refused_with_413_before_decoding(
    cls: type[BatchPipeline],
) -> None:
    # Both headers hold no pixels: a reader that decoded first would answer 400, not 413.
    for width, height in ((100_000, 100_000), (5000, 4000)):
        bomb = png_header(width, height)
        assert len(bomb) < 100
        with pytest.raises(RequestTooLargeError) as caught:
            cls.checked(BatchRequest(params={"prompt": "x"}, input=bomb))
        assert caught.value.code == 413
        assert str(MAX_INPUT_PIXELS) in str(caught.value)


@pytest.mark.parametrize("cls", [ImageToImagePipeline, UpscalePipeline])
def test_a_file_past_the_byte_limit_is_refused_with_413(cls: type[BatchPipeline]) -> None:
    with pytest.raises(RequestTooLargeError) as caught:
        cls.checked(BatchRequest(params={"prompt": "x"}, input=bytes(MAX_INPUT_BYTES + 1)))
    assert caught.value.code == 413


def test_outputs_past_each_capability_limit_are_refused_with_413() -> None:
    # 3000x2000 is within the input limit, past image-to-image's 2048x2048 outputs.
    with pytest.raises(RequestTooLargeError, match="4194304"):
        ImageToImagePipeline.checked(
            BatchRequest(params={"prompt": "x"}, input=png_header(3000, 2000))
        )
    # 600x600 upscaled is 2400x2400, past 2048x2048.
    with pytest.raises(RequestTooLargeError, match="262144"):
        UpscalePipeline.checked(BatchRequest(params={}, input=png_header(600, 600)))
    assert UpscalePipeline.quote(
        UpscalePipeline.checked(BatchRequest(params={}, input=png_header(512, 512)))
    ) == (2048 * 2048)


def test_pictures_too_small_are_refused_with_400() -> None:
    with pytest.raises(BadRequestError, match="too small"):
        ImageToImagePipeline.checked(BatchRequest(params={"prompt": "x"}, input=png_header(40, 90)))
    with pytest.raises(BadRequestError, match="too small"):
        UpscalePipeline.checked(BatchRequest(params={}, input=png_header(15, 90)))


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"prompt": "x", "colour": "red"}, "unknown parameter 'colour'"),
        ({"prompt": "x", "width": 4096}, "width must be <= 2048"),
        ({"prompt": "x", "height": 32}, "height must be >= 64"),
        ({"prompt": "x", "num_images_per_prompt": 5}, "num_images_per_prompt must be <= 4"),
        ({"prompt": "x", "seed": -1}, "seed must be >= 0"),
        ({"prompt": "x", "guidance_scale": "high"}, "guidance_scale must be a number"),
    ],
)
def test_parameters_out_of_their_declaration_are_refused(
    params: dict[str, object], problem: str
) -> None:
    with pytest.raises(InvalidParamsError) as caught:
        TextToImagePipeline.checked(BatchRequest(params=params))
    assert problem in str(caught.value)


def test_text_to_image_refusals() -> None:
    with pytest.raises(BadRequestError, match="multiple of 8"):
        TextToImagePipeline.checked(BatchRequest(params={"prompt": "x", "width": 100}))
    for prompt in ("", "   "):
        with pytest.raises(BadRequestError, match="prompt must not be empty"):
            TextToImagePipeline.checked(BatchRequest(params={"prompt": prompt}))
    with pytest.raises(BadRequestError, match="prompt must not be empty"):
        TextToImagePipeline.checked(BatchRequest(params={}))
    with pytest.raises(BadRequestError, match="no input bytes"):
        TextToImagePipeline.checked(BatchRequest(params={"prompt": "x"}, input=b"\x89PNG"))


def test_image_to_image_refusals() -> None:
    picture = encoded(random_picture(64, 64, 1))
    with pytest.raises(BadRequestError, match="prompt must not be empty"):
        ImageToImagePipeline.checked(BatchRequest(params={"prompt": ""}, input=picture))
    with pytest.raises(BadRequestError, match="must reach 1"):
        ImageToImagePipeline.checked(
            BatchRequest(
                params={"prompt": "x", "strength": 0.3, "num_inference_steps": 3}, input=picture
            )
        )


def test_defaults_follow_ai_worker_and_quotes_count_every_picture() -> None:
    request = TextToImagePipeline.checked(
        BatchRequest(params={"prompt": "x", "num_images_per_prompt": 3})
    )
    assert (request.params["width"], request.params["height"]) == (1024, 576)
    assert request.params["num_inference_steps"] == 50
    assert request.params["guidance_scale"] == 7.5
    assert TextToImagePipeline.quote(request) == 3 * 1024 * 576
    picture = png_header(300, 200)
    image = ImageToImagePipeline.checked(BatchRequest(params={"prompt": "x"}, input=picture))
    assert image.params["strength"] == 0.8 and image.params["num_inference_steps"] == 100
    assert ImageToImagePipeline.quote(image) == 296 * 200
    upscaled = UpscalePipeline.checked(BatchRequest(params={}, input=picture))
    assert upscaled.params["num_inference_steps"] == 75
    assert UpscalePipeline.quote(upscaled) == 1200 * 800


def test_checking_and_quoting_import_no_torch() -> None:
    code = (
        "import io, json, sys\n"
        "from PIL import Image\n"
        "from workers.batch.base import BatchRequest\n"
        "from workers.batch.text_to_image import TextToImagePipeline\n"
        "from workers.batch.image_to_image import ImageToImagePipeline\n"
        "from workers.batch.upscale import UpscalePipeline\n"
        "out = io.BytesIO()\n"
        "Image.new('RGB', (100, 70)).save(out, 'PNG')\n"
        "quotes = [cls.quote(cls.checked(BatchRequest(params={'prompt': 'x'}, input=i)))\n"
        "    for cls, i in ((TextToImagePipeline, b''), (ImageToImagePipeline, out.getvalue()),\n"
        "                   (UpscalePipeline, out.getvalue()))]\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'quotes': quotes}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    answer = json.loads(proc.stdout)
    assert answer == {"heavy": [], "quotes": [1024 * 576, 96 * 64, 400 * 272]}


# -- loading ------------------------------------------------------------------------------


def test_models_a_pipeline_cannot_run_are_refused_at_load(
    models: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(PipelineError, match=r"model_index\.json"):
        TextToImagePipeline().load(str(tmp_path), "cpu")
    with pytest.raises(PipelineError, match="upscale"):
        UpscalePipeline().load(models["sd"], "cpu")
    with pytest.raises(PipelineError, match="no model loaded"):
        TextToImagePipeline().run(
            TextToImagePipeline.checked(BatchRequest(params={"prompt": "x"})), RecordingSink()
        )


# -- picture reading and writing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("format", "options"),
    [
        ("PNG", {}),
        ("JPEG", {"quality": 95}),
        ("WEBP", {"lossless": True}),
        ("GIF", {}),
        ("BMP", {}),
    ],
)
def test_pictures_of_each_format_are_sized_from_the_header_and_read_as_rgb(
    format: str, options: dict[str, Any]
) -> None:
    source = random_picture(37, 23, seed=3)
    data = encoded(source.convert("RGBA") if format == "PNG" else source, format, **options)
    assert picture_size(data) == (37, 23)
    picture = read_picture(data)
    assert (picture.mode, picture.size) == ("RGB", (37, 23))
    if format in ("PNG", "WEBP", "BMP"):  # lossless
        np.testing.assert_array_equal(np.asarray(picture), np.asarray(source))


def test_pictures_of_other_modes_are_read_as_rgb() -> None:
    source = random_picture(30, 20, seed=5)
    palette = source.convert("P")
    frames = encoded(source, "GIF", save_all=True, append_images=[source.rotate(180)])
    for data in (encoded(palette, transparency=0), encoded(source.convert("LA")), frames):
        picture = read_picture(data)
        assert (picture.mode, picture.size) == ("RGB", (30, 20))
    np.testing.assert_array_equal(
        np.asarray(read_picture(frames)), np.asarray(read_picture(encoded(source, "GIF")))
    )  # the first frame
    grey = np.arange(600, dtype=np.uint16).reshape(20, 30) * 109
    wide = read_picture(encoded(Image.fromarray(grey)))
    np.testing.assert_array_equal(np.asarray(wide)[..., 0], (grey >> 8).astype(np.uint8))


def test_a_cut_picture_is_sized_but_not_read() -> None:
    cut = encoded(random_picture(64, 64, 8))[:300]
    assert picture_size(cut) == (64, 64)
    with pytest.raises(BadRequestError, match="not a picture PIL can read"):
        read_picture(cut)


def test_the_pixel_limit_is_checked_before_decoding() -> None:
    for read in (picture_size, read_picture):
        with pytest.raises(RequestTooLargeError):
            read(png_header(100_000, 100_000))
    assert picture_size(png_header(4096, 4096)) == (4096, 4096)  # at the limit: taken


def test_the_same_pixels_give_the_same_png_bytes() -> None:
    picture = random_picture(40, 30, seed=4)
    copy = Image.fromarray(np.asarray(picture).copy())
    first = encode_png(picture)
    assert first == encode_png(copy) == encode_png(read_picture(first))
    np.testing.assert_array_equal(pixels_of(first), np.asarray(picture))
