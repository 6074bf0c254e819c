"""Fair capacity through ``lpstream dev --offchain`` at its defaults (one orchestrator of
capacity 4): four tiny streams of one publisher cannot keep a second publisher's 720p stream
from any rendition.

When capacity was counted in sessions, four 160x90 streams took all four, and a 720p stream
published next got ``EXT-X-GAP`` for every transcoded segment. Counted in work, the four cost
0.86 Mpx/s each and the 720p ladder 9.98 of the 39.9 Mpx/s the orchestrator takes. The
publishers are real ffmpeg processes, the player reads every rendition's playlist and keeps
every segment. (All five publish from loopback, one address; how capacity is shared between
publisher identities when it runs short is ``tests/lpstream/test_fair_share.py``'s.)
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.attacks.harness import assert_whole, honest_stream
from tests.e2e.nodes import NodeProcess, http_json, running_dev, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.solo]

TINY = "160x90"
HD = "1280x720"
FAST = ("-preset", "ultrafast")
"""The publishers' own x264: a 720p publisher must keep real time on two shared cores."""


def orchestrator(node: NodeProcess) -> dict[str, Any]:
    """The in-process orchestrator's part of ``/api/status``."""
    status: dict[str, Any] = http_json(f"{node.url('http')}/api/status")["orchestrator"]
    return status


def test_four_tiny_streams_cannot_starve_a_second_publishers_720p_stream(tmp_path: Path) -> None:
    with running_dev(tmp_path / "node", name="fair-capacity") as node, ExitStack() as streams:
        tiny = [
            streams.enter_context(
                honest_stream(
                    node, f"tiny{i}", tmp_path / f"tiny{i}", seconds=40, size=TINY, extra=FAST
                )
            )
            for i in range(4)
        ]
        with honest_stream(node, "hd", tmp_path / "hd", seconds=12, size=HD, extra=FAST) as hd:
            # Five sessions at once on "capacity 4": it is counted in work now.
            wait_for(
                lambda: orchestrator(node)["sessions"] == 5,
                15,
                "the 720p stream's session beside the four tiny ones",
            )
            assert orchestrator(node)["capacity"] == 4
        # Every rendition of every 720p segment, no gap: the tiny streams left it room.
        assert_whole(hd, min_segments=4)
        assert hd.recorder.renditions == ["source", "360p", "240p"]
    for stream in tiny:
        assert_whole(stream, min_segments=4)
