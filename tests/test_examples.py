"""The examples a newcomer copies still run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_example_pipeline_darkens_the_corners_and_keeps_the_centre() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "my_pipeline.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    match = re.search(
        r"centre \[(\d+), (\d+), (\d+)\], corner \[(\d+), (\d+), (\d+)\]", proc.stdout
    )
    assert match, proc.stdout
    centre, corner = [int(v) for v in match.groups()[:3]], [int(v) for v in match.groups()[3:]]
    # Y 200 in limited range is RGB 214: the centre is untouched.
    assert all(abs(c - 214) < 8 for c in centre), centre
    assert all(v < 0.4 * c for v, c in zip(corner, centre, strict=True)), (corner, centre)
