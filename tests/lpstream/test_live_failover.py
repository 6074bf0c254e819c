"""When a live AI session moves to another orchestrator (``SwapDecider``, sans-IO): stalls
found from the segment target, swaps bounded per minute with back-off, and the gap measured
from the last frame of the old orchestrator to the first of the new one."""

from __future__ import annotations

import pytest

from lpstream.gateway.live_failover import Swap, SwapDecider

TARGET = 2.0
"""Segment target, seconds: a stall is three of them without a frame (6 s)."""


def serving(now: float = 0.0, orchestrator: str = "a:1") -> SwapDecider:
    """A session open on ``orchestrator`` whose frames flow, as of ``now``."""
    decider = SwapDecider()
    decider.opened(orchestrator, now)
    decider.input_sent(now, TARGET)
    decider.output_came(now + 0.5)
    return decider


def test_no_frame_for_three_segment_targets_while_input_flows_is_a_stall() -> None:
    decider = serving()
    for t in (2.0, 4.0, 6.0):
        decider.input_sent(t, TARGET)
    assert decider.get_timer() == pytest.approx(6.5)
    assert decider.stalled(6.4) == ""
    assert decider.stalled(6.5).startswith("stalled: no AI output for 6.0 s")


def test_a_frame_pushes_the_stall_deadline_back() -> None:
    decider = serving()
    decider.input_sent(5.0, TARGET)
    decider.output_came(5.5)
    assert decider.stalled(7.0) == ""
    assert decider.get_timer() == pytest.approx(11.5)


def test_no_stall_when_the_input_stopped_too() -> None:
    decider = serving()
    # The publisher left at 0 s: no frames, but nothing to make them from either.
    assert decider.stalled(10.0) == ""


def test_the_first_frame_of_an_orchestrator_gets_the_cold_start_grace() -> None:
    decider = SwapDecider(first_output_grace=20.0)
    decider.opened("a:1", 0.0)
    for t in range(0, 22, 2):
        decider.input_sent(float(t), TARGET)
    assert decider.stalled(19.9) == ""
    assert decider.stalled(20.0).startswith("stalled: no AI output for 20.0 s")


def test_a_closed_session_cannot_stall() -> None:
    decider = serving()
    decider.failed("connection lost", 1.0)
    decider.input_sent(2.0, TARGET)
    assert decider.get_timer() is None
    assert decider.stalled(100.0) == ""


def test_a_swap_reports_old_new_reason_and_the_gap_at_the_first_new_frame() -> None:
    decider = serving()
    decider.output_came(3.0)  # the last frame of a:1
    plan = decider.failed("connection lost: ping timeout", 4.5)
    assert plan.give_up == "" and plan.delay == 0.0
    assert decider.same_again("a:1") and not decider.same_again("b:2")
    decider.opened("b:2", 5.0)
    assert decider.swaps == 0  # not before its first frame
    swap = decider.output_came(6.25)
    assert swap == Swap(old="a:1", new="b:2", reason="connection lost: ping timeout", gap=3.25)
    assert swap.gap_ms == 3250
    assert decider.swaps == 1 and decider.last_swap == swap
    assert decider.output_came(6.3) is None  # reported once


def test_a_frame_before_the_new_orchestrator_opened_completes_nothing() -> None:
    decider = serving()
    decider.failed("refused (503): busy", 1.0)
    assert decider.output_came(1.2) is None
    decider.opened("b:2", 2.0)
    swap = decider.output_came(2.5)
    assert swap is not None and swap.gap == pytest.approx(2.0)  # from 0.5, the last before


def test_when_the_new_one_fails_before_its_first_frame_the_gap_runs_from_the_first_loss() -> None:
    decider = serving()
    decider.failed("connection lost", 1.0)
    decider.opened("b:2", 1.5)
    decider.failed("refused (503): busy", 2.0)
    decider.opened("c:3", 3.0)
    swap = decider.output_came(4.0)
    assert swap is not None
    assert (swap.old, swap.new, swap.reason) == ("b:2", "c:3", "refused (503): busy")
    assert swap.gap == pytest.approx(3.5)


def test_swaps_back_off_and_stop_at_the_limit_within_the_window() -> None:
    decider = SwapDecider(max_swaps=3, window=60.0, backoff=0.5)
    decider.opened("a:1", 0.0)
    delays = []
    for i, now in enumerate((10.0, 11.0, 12.0)):
        plan = decider.failed("connection lost", now)
        assert plan.give_up == ""
        delays.append(plan.delay)
        decider.opened(f"n{i}:1", now + 0.1)
    assert delays == [0.0, 0.5, 1.0]
    plan = decider.failed("connection lost", 13.0)
    assert "3 swaps within 60 s already" in plan.give_up
    assert plan.give_up.startswith("connection lost")


def test_old_swaps_leave_the_window() -> None:
    decider = SwapDecider(max_swaps=1, window=60.0)
    decider.opened("a:1", 0.0)
    assert decider.failed("connection lost", 10.0).give_up == ""
    decider.opened("b:2", 11.0)
    assert decider.failed("connection lost", 30.0).give_up != ""
    decider.opened("a:1", 31.0)
    assert decider.failed("connection lost", 71.0).give_up == ""  # the one at 10 s is past


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        SwapDecider(stall_segments=0)
    with pytest.raises(ValueError, match="must be >= 0"):
        SwapDecider(max_swaps=-1)


def test_a_borne_stall_is_checked_again_after_the_first_frame_grace() -> None:
    decider = SwapDecider(first_output_grace=20.0)
    decider.opened("a:1", 0.0)
    decider.input_sent(0.0, TARGET)
    decider.output_came(0.5)
    decider.input_sent(6.0, TARGET)
    assert decider.stalled(6.5) != ""
    decider.bear_stall(6.5)  # nowhere else to go: stay
    decider.input_sent(8.0, TARGET)
    assert decider.stalled(8.0) == ""
    assert decider.get_timer() == pytest.approx(26.5)
