"""The metrics registry: its text parses with prometheus-client's parser, histograms included;
samples carry exactly their declared labels; series go with what they describe; the README
table and the Grafana dashboard name exactly the families the node declares.

The helpers at the top read a scrape the way Prometheus does (through prometheus-client's
parser); the gateway and end-to-end metrics tests use them too.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from lpstream.metric_families import ALL_FAMILIES
from lpstream.metrics import MetricFamily, Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "examples" / "grafana" / "lpstream-dashboard.json"
PROMQL_NAME = re.compile(r"\blpstream_[a-zA-Z0-9_]+")

Series = tuple[str, frozenset[tuple[str, str]]]
"""A sample's name and labels."""


def parse(text: str) -> dict[str, Metric]:
    """The families of a scrape by name, as prometheus-client reads them (it names a counter
    without its ``_total``)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(text: str) -> dict[Series, float]:
    """Every sample of a scrape."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value; None when the scrape lacks it."""
    return samples(text).get((name, frozenset(labels.items())))


def label_values(text: str, label: str) -> set[str]:
    """The values ``label`` has over every sample of a scrape."""
    return {
        s.labels[label]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if label in s.labels
    }


def exported_names(text: str) -> set[str]:
    """Every name a PromQL query may use against this scrape: each family's own and its
    samples' (``_total``, ``_bucket``, ``_sum``, ``_count``), series or not."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
        names.update(s.name for s in family.samples)
    return names


def dashboard_names() -> set[str]:
    """The metric names the Grafana dashboard's queries use."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", ())]
    assert exprs, "the dashboard has no queries"
    exprs += [v["definition"] for v in board["templating"]["list"]]
    return {name for expr in exprs for name in PROMQL_NAME.findall(expr)}


def latency_registry() -> Metrics:
    metrics = Metrics()
    metrics.declare(
        MetricFamily(name="jobs_total", kind="counter", help="Jobs.", labels=("outcome",)),
        MetricFamily(name="queue", kind="gauge", help="Waiting."),
        MetricFamily(
            name="latency_seconds",
            kind="histogram",
            help="How long.",
            labels=("stream",),
            buckets=(0.1, 0.5, 1.0),
        ),
    )
    return metrics


def test_the_text_parses_with_prometheus_client_histograms_and_escapes_included() -> None:
    metrics = latency_registry()
    odd = 'a "quoted" \\ name\nwith a line'
    metrics.inc("jobs_total", 3, outcome="ok")
    metrics.set("queue", 7)
    for value in (0.05, 0.1, 0.3, 0.5, 0.9, 4.0):
        metrics.observe("latency_seconds", value, stream=odd)
    metrics.observe("latency_seconds", 2.0, stream="b")

    text = metrics.render()
    families = parse(text)
    assert families["lpstream_jobs"].type == "counter"
    assert families["lpstream_latency_seconds"].type == "histogram"
    assert families["lpstream_latency_seconds"].documentation == "How long."
    assert sample(text, "lpstream_jobs_total", outcome="ok") == 3
    assert sample(text, "lpstream_queue") == 7
    # Buckets are cumulative (an observation on a bound is in that bucket), +Inf is the count.
    buckets = {
        s.labels["le"]: s.value
        for s in families["lpstream_latency_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["stream"] == odd
    }
    assert buckets == {"0.1": 2, "0.5": 4, "1.0": 5, "+Inf": 6}
    assert sample(text, "lpstream_latency_seconds_count", stream=odd) == 6
    total = sample(text, "lpstream_latency_seconds_sum", stream=odd)
    assert total is not None and math.isclose(total, 5.85)
    assert sample(text, "lpstream_latency_seconds_bucket", stream="b", le="1.0") == 0
    assert sample(text, "lpstream_latency_seconds_bucket", stream="b", le="+Inf") == 1
    assert metrics.value("latency_seconds_count", stream="b") == 1
    assert metrics.value("latency_seconds_sum", stream="b") == 2.0


def test_an_unlabelled_family_shows_zero_and_a_labelled_one_shows_no_series_until_fed() -> None:
    text = latency_registry().render()
    assert sample(text, "lpstream_queue") == 0
    families = parse(text)
    assert families["lpstream_jobs"].samples == []
    assert families["lpstream_latency_seconds"].samples == []


def test_a_sample_must_carry_exactly_its_declared_labels() -> None:
    metrics = latency_registry()
    with pytest.raises(ValueError, match=r"labelled \('outcome',\)"):
        metrics.inc("jobs_total")
    with pytest.raises(ValueError, match="labelled"):
        metrics.inc("jobs_total", outcome="ok", peer="10.0.0.1")
    with pytest.raises(ValueError, match="is a histogram, not a counter"):
        metrics.inc("latency_seconds", stream="a")
    with pytest.raises(ValueError, match="cannot grow"):
        metrics.inc("jobs_total", -1, outcome="ok")
    with pytest.raises(ValueError, match="declared otherwise"):
        metrics.declare(MetricFamily(name="queue", kind="counter", help="Waiting."))
    with pytest.raises(ValueError, match="buckets"):
        MetricFamily(name="h", kind="histogram", help="No buckets.")
    with pytest.raises(ValueError, match="increasing"):
        MetricFamily(name="h", kind="histogram", help="Unsorted.", buckets=(1.0, 0.5))


def test_forget_drops_a_label_values_series_everywhere_and_retain_keeps_the_live_ones() -> None:
    metrics = latency_registry()
    metrics.declare(
        MetricFamily(name="out_total", kind="counter", help="Out.", labels=("stream", "rendition"))
    )
    for stream in ("a", "b", "c"):
        metrics.observe("latency_seconds", 0.2, stream=stream)
        metrics.inc("out_total", stream=stream, rendition="360p")
    metrics.inc("jobs_total", outcome="ok")

    metrics.forget(stream="a")
    text = metrics.render()
    assert label_values(text, "stream") == {"b", "c"}
    metrics.forget(stream="b", rendition="360p")
    assert label_values(metrics.render(), "stream") == {"b", "c"}  # b's histogram stays
    assert sample(metrics.render(), "lpstream_out_total", stream="b", rendition="360p") is None
    metrics.retain("stream", {"c"})
    text = metrics.render()
    assert label_values(text, "stream") == {"c"}
    assert sample(text, "lpstream_jobs_total", outcome="ok") == 1  # other families untouched


def test_a_collector_replaces_its_families_at_each_render() -> None:
    metrics = latency_registry()
    metrics.declare(
        MetricFamily(name="worker_sessions", kind="gauge", help="Held.", labels=("worker",))
    )
    workers = {"local": 2, "remote-1": 1}
    metrics.add_collector(
        lambda: metrics.replace(
            "worker_sessions", [({"worker": w}, float(n)) for w, n in workers.items()]
        )
    )
    assert label_values(metrics.render(), "worker") == {"local", "remote-1"}
    del workers["remote-1"]
    workers["remote-2"] = 3
    text = metrics.render()
    assert label_values(text, "worker") == {"local", "remote-2"}
    assert sample(text, "lpstream_worker_sessions", worker="remote-2") == 3


def readme_metrics_rows() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The README's "Metrics" table: name -> (type, labels)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`lpstream_"):
            labels = tuple(re.findall(r"`([a-z_]+)`", cells[2]))
            rows[cells[0].strip("`")] = (cells[1], labels)
    return rows


def test_the_readme_lists_every_family_with_its_type_and_labels() -> None:
    expected = {f"lpstream_{f.name}": (f.kind, f.labels) for f in ALL_FAMILIES}
    assert readme_metrics_rows() == expected


def test_every_family_has_a_help_text_and_histograms_state_their_buckets() -> None:
    names = [f.name for f in ALL_FAMILIES]
    assert len(names) == len(set(names))
    for family in ALL_FAMILIES:
        assert family.help.endswith("."), family.name
        assert (family.kind == "histogram") == bool(family.buckets), family.name
        assert family.kind != "counter" or family.name.endswith("_total"), family.name
        assert (
            "_wei" not in family.name
            or family.kind != "counter"
            or family.name.endswith("_wei_total")
        )


def test_the_grafana_dashboard_queries_only_families_the_node_declares() -> None:
    metrics = Metrics()
    metrics.declare(*ALL_FAMILIES)
    declared = exported_names(metrics.render())
    used = dashboard_names()
    assert used - declared == set()
    # It shows every kind of thing the issue asks for.
    for name in (
        "lpstream_publish_latency_seconds_bucket",
        "lpstream_segment_round_trip_seconds_bucket",
        "lpstream_ai_frame_latency_seconds_bucket",
        "lpstream_payment_check_seconds_bucket",
        "lpstream_payment_sent_wei_total",
        "lpstream_payment_received_wei_total",
        "lpstream_stream_segments_out_total",
        "lpstream_gpu_pipeline_sessions",
    ):
        assert name in used, name
