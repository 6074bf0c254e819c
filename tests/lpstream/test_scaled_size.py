"""``scaled_size``: every rendition fits inside its profile's box, even-sized, never upscaled."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from lpstream.media import DEFAULT_PROFILES, VideoProfile, scaled_size


def box(width: int, height: int) -> VideoProfile:
    return VideoProfile(name="box", width=width, height=height, bitrate=1_000_000)


def test_rounding_to_even_never_takes_a_side_past_the_box() -> None:
    assert scaled_size(1280, 720, box(643, 1000)) == (642, 362)
    assert scaled_size(1280, 720, DEFAULT_PROFILES[0]) == (640, 360)
    assert scaled_size(1280, 720, DEFAULT_PROFILES[1]) == (426, 240)


def test_a_small_source_is_not_upscaled_and_an_odd_one_is_rounded_down() -> None:
    assert scaled_size(320, 180, DEFAULT_PROFILES[0]) == (320, 180)
    assert scaled_size(643, 361, box(1280, 720)) == (642, 360)
    assert scaled_size(321, 181, DEFAULT_PROFILES[0]) == (320, 180)


def test_an_unknown_source_size_gets_the_box_rounded_down_to_even() -> None:
    assert scaled_size(0, 0, box(643, 361)) == (642, 360)


@given(
    src_width=st.integers(1, 8192),
    src_height=st.integers(1, 8192),
    box_width=st.integers(16, 7680),
    box_height=st.integers(16, 4320),
)
@example(src_width=1280, src_height=720, box_width=643, box_height=1000)
@example(src_width=1, src_height=8192, box_width=16, box_height=16)
def test_a_rendition_always_fits_inside_its_box(
    src_width: int, src_height: int, box_width: int, box_height: int
) -> None:
    width, height = scaled_size(src_width, src_height, box(box_width, box_height))
    assert width % 2 == 0 and height % 2 == 0
    assert 2 <= width <= box_width and 2 <= height <= box_height
    assert width <= max(2, src_width) and height <= max(2, src_height)
    # The shape is kept: each side is the fitted size, give or take the rounding to even.
    scale = min(1.0, box_width / src_width, box_height / src_height)
    assert abs(width - src_width * scale) < 1.001 or width == 2
    assert abs(height - src_height * scale) < 1.001 or height == 2
