"""The gateway decodes what orchestrators return and refuses renditions that lie."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from lpstream.gateway.verify import RenditionMismatchError, check_renditions, count_pixels
from lpstream.jobs import JobOutput
from lpstream.wire import RenditionInfo
from tests.mediatools import make_clip


@pytest.fixture(scope="module")
def rendition(tmp_path_factory: pytest.TempPathFactory) -> JobOutput:
    path = tmp_path_factory.mktemp("r") / "r.ts"
    make_clip(path, seconds=1, size="320x240", gop=30, fmt="mpegts")
    data = path.read_bytes()
    info = RenditionInfo(
        name="240p", width=320, height=240, pixels=30 * 320 * 240, frames=30, size=len(data),
        duration_ms=1000,
    )  # fmt: skip
    return JobOutput(info=info, data=data)


def test_count_pixels_decodes_every_frame(rendition: JobOutput) -> None:
    assert count_pixels(rendition.data) == (30, 30 * 320 * 240)


def test_an_honest_rendition_passes(rendition: JobOutput) -> None:
    check_renditions([rendition])


def test_inflated_pixel_claims_are_caught(rendition: JobOutput) -> None:
    inflated = attrs.evolve(rendition, info=attrs.evolve(rendition.info, pixels=31 * 320 * 240))
    with pytest.raises(RenditionMismatchError, match="claims 30 frames / 2380800 pixels"):
        check_renditions([inflated])


def test_corrupted_bytes_are_caught(rendition: JobOutput) -> None:
    data = bytearray(rendition.data)
    quarter = len(data) // 4
    data[quarter : 3 * quarter] = bytes(2 * quarter)
    with pytest.raises(RenditionMismatchError, match="decodes to"):
        check_renditions([attrs.evolve(rendition, data=bytes(data))])


def test_noise_is_not_a_rendition(tmp_path: Path) -> None:
    with pytest.raises(RenditionMismatchError, match="undecodable"):
        count_pixels(b"\x47" + bytes(187) * 10)
