"""``/metrics`` of a running ``lpstream dev --offchain`` through a short stream with live AI:
every family the node declares is in the scrape and parses with prometheus-client's parser;
the stream's series (segments, renditions, publish latency, AI frame latency) are there while
it is live and gone once its ``--end-linger`` has passed; the Grafana dashboard in examples/
names only metrics the node exports."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from lpstream.metric_families import ALL_FAMILIES
from tests.e2e.nodes import NodeProcess, http_get, push_command, wait_for
from tests.lpstream.test_metrics import (
    dashboard_names,
    exported_names,
    label_values,
    parse,
    sample,
)

pytestmark = [pytest.mark.slow]

LINGER = 1.0


@pytest.fixture(scope="module")
def dev_flags(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """One transcoded rendition, the ``noop`` pipeline on every stream, a short linger."""
    profiles = tmp_path_factory.mktemp("metrics") / "profiles.json"
    profiles.write_text(
        json.dumps([{"name": "240p", "width": 426, "height": 240, "bitrate": 300000}])
    )
    return (f"--profiles={profiles}", "--pipeline=noop", f"--end-linger={LINGER}")


def scrape(node: NodeProcess) -> str:
    status, body = http_get(f"{node.url('http')}/metrics")
    assert status == 200, body
    return body.decode()


def measured_live(node: NodeProcess) -> str | None:
    """The scrape once the stream has a listed segment of each rendition and AI frames."""
    text = scrape(node)
    ready = all(
        (sample(text, name, **labels) or 0) > 0
        for name, labels in [
            ("lpstream_publish_latency_seconds_count", {"stream": "m"}),
            ("lpstream_stream_segments_out_total", {"stream": "m", "rendition": "240p"}),
            ("lpstream_stream_segments_out_total", {"stream": "m", "rendition": "ai"}),
            ("lpstream_ai_frame_latency_seconds_count", {"stream": "m", "pipeline": "noop"}),
            ("lpstream_ai_frames_out_total", {"stream": "m", "pipeline": "noop"}),
        ]
    )
    return text if ready else None


def test_a_short_streams_series_parse_show_and_go_and_the_dashboard_names_real_metrics(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    seconds = 8.0
    rtmp = f"{dev_node.url('rtmp')}/live/m"
    publisher = subprocess.Popen(
        push_command(rtmp, seconds=seconds, size="640x360", gop=30), stderr=subprocess.PIPE
    )
    try:
        live = wait_for(lambda: measured_live(dev_node), seconds + 10, "the stream's series")
    finally:
        _, err = publisher.communicate(timeout=seconds + 30)
    assert publisher.returncode == 0, err.decode()

    families = parse(live)  # prometheus-client's parser reads the whole scrape
    declared = {f.name: f.kind for f in ALL_FAMILIES}
    shown = {
        name.removeprefix("lpstream_"): family.type
        for name, family in families.items()
        if name.startswith("lpstream_")
    }
    counters = {n.removesuffix("_total"): k for n, k in declared.items()}
    assert shown == counters  # every family, its kind as declared, and no other
    assert label_values(live, "stream") == {"m"}
    orchestrators = label_values(live, "orchestrator")
    assert len(orchestrators) == 1
    (orchestrator,) = orchestrators
    assert (
        sample(live, "lpstream_segment_round_trip_seconds_count", orchestrator=orchestrator) or 0
    ) > 0
    assert sample(live, "lpstream_worker_sessions", worker="local") is not None
    buckets = [
        s
        for s in families["lpstream_ai_frame_latency_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert [s.labels["le"] for s in buckets][-1] == "+Inf"
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)

    # The stream ended: its series go with it once the linger has passed (checked every s).
    ended = time.monotonic()
    wait_for(lambda: not label_values(scrape(dev_node), "stream"), 15, "the series to go")
    assert time.monotonic() - ended < LINGER + 10
    after = scrape(dev_node)
    assert (sample(after, "lpstream_segments_in_total") or 0) >= seconds / 2 - 1
    assert dashboard_names() - exported_names(after) == set()
