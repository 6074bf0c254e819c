"""The output timeline: continuing segments keep their timestamps' spacing, others are placed
where the output ended, and nothing ever steps back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lpstream.restream.timeline import TICKS_PER_SECOND, OutputTimeline

SECOND = TICKS_PER_SECOND
FRAME = 3000


def write_segment(
    timeline: OutputTimeline, start: int, *, discontinuity: bool = False
) -> list[int]:
    """A 2 s segment of 30 fps video starting at input ``start``; returns its output dts."""
    offset = timeline.offset_for({"video": start}, discontinuity=discontinuity)
    out = []
    for i in range(60):
        dts = start + i * FRAME + offset
        timeline.advance("video", dts, FRAME)
        out.append(dts)
    return out


def test_first_segment_starts_at_zero_and_the_next_continues() -> None:
    timeline = OutputTimeline()
    first = write_segment(timeline, 126_000)
    second = write_segment(timeline, 126_000 + 2 * SECOND)
    assert first[0] == 0
    assert second[0] == first[-1] + FRAME
    assert timeline.placements == 1


def test_discontinuity_jump_back_and_gap_are_placed_at_the_end() -> None:
    timeline = OutputTimeline()
    write_segment(timeline, 10 * SECOND)
    end = timeline.output_end
    after_flag = write_segment(timeline, 12 * SECOND, discontinuity=True)
    assert after_flag[0] == end
    end = timeline.output_end
    after_jump_back = write_segment(timeline, 0)
    assert after_jump_back[0] == end
    end = timeline.output_end
    after_gap = write_segment(timeline, 30 * SECOND)
    assert after_gap[0] == end
    assert timeline.placements == 4


def test_restart_places_the_next_segment_without_going_back() -> None:
    timeline = OutputTimeline()
    write_segment(timeline, 0)
    end = timeline.output_end
    timeline.restart()
    assert write_segment(timeline, 2 * SECOND)[0] == end


def test_a_stream_that_would_step_back_forces_a_placement() -> None:
    timeline = OutputTimeline()
    offset = timeline.offset_for({"video": 0, "audio": 0}, discontinuity=False)
    timeline.advance("video", 0 + offset, FRAME)
    timeline.advance("audio", 5 * FRAME + offset, 1920)
    # Close to the end (within tolerance) but the audio would go back: placed.
    second = timeline.offset_for({"video": FRAME, "audio": 2 * FRAME}, discontinuity=False)
    assert 2 * FRAME + second > 5 * FRAME


@given(
    st.lists(
        st.tuples(st.integers(0, 2**33), st.booleans(), st.booleans()), min_size=1, max_size=30
    )
)
def test_output_never_steps_back_whatever_the_input(
    segments: list[tuple[int, bool, bool]],
) -> None:
    timeline = OutputTimeline()
    last = -1
    for start, discontinuity, restart in segments:
        if restart:
            timeline.restart()
        for dts in write_segment(timeline, start, discontinuity=discontinuity):
            assert dts > last
            last = dts
