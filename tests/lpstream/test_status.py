"""/api/status rendering: typed values in, JSON out, money as whole wei and ETH, no fractions."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

import lpstream
from ingest.segmenter import SegmenterStatistics
from lpstream.gateway.status import LatencySummary, StreamStatistics, StreamStatus
from lpstream.http.status import OrchestratorNodeStatus, status_json
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.orchestrator.status import LiveSessionStatus, LiveStatus
from lpstream.paid import PaymentsStatus
from lpstream.worker.local import LocalWorker
from payments.pm import PixelPrice, Wei
from tests.e2e.money import fraction_strings


def test_money_is_whole_wei_as_a_string_and_eth_for_people() -> None:
    assert status_json(Wei(Fraction(46316835, 23158417))) == {"wei": "2", "eth": 0.0}
    assert status_json(Wei(10**18)) == {"wei": "1000000000000000000", "eth": 1.0}
    assert status_json(Wei(Fraction(-1, 3))) == {"wei": "-1", "eth": 0.0}


def test_a_price_is_exact_wei_per_pixels() -> None:
    third = status_json(PixelPrice.from_fraction(Fraction(1, 3)))
    assert third == {"wei": "1", "pixels": 3, "wei_per_pixel": 1 / 3}
    assert status_json(PixelPrice.from_fraction(50_000))["pixels"] == 1


def test_an_exact_rational_cannot_reach_the_json() -> None:
    with pytest.raises(TypeError, match="Fraction"):
        status_json({"credit": Fraction(1, 3)})


def test_a_live_session_is_named_by_label_with_its_money() -> None:
    live = LiveStatus(
        sessions={
            "live-1": LiveSessionStatus(
                pipeline="noop",
                stopped=None,
                seconds=3,
                billed=Wei(3000),
                balance=Wei(Fraction(-7, 3)),
                price_per_second=Wei(1000),
            )
        },
        stopped_total=0,
    )
    assert status_json(live)["sessions"]["live-1"] == {
        "pipeline": "noop",
        "stopped": None,
        "seconds": 3,
        "billed": {"wei": "3000", "eth": 0.0},
        "balance": {"wei": "-3", "eth": 0.0},
        "price_per_second": {"wei": "1000", "eth": 0.0},
    }


def test_a_streams_figures_sit_at_its_level_and_are_absent_before_any() -> None:
    figures = StreamStatistics(
        publish_latency_ms=LatencySummary.from_samples([0.2, 0.1, 0.3]),
        part_latency_ms=LatencySummary.from_samples([]),
        segments_in=3,
        segments_in_flight=1,
        webrtc={"renditions": {}, "segments_dropped": 0, "segments_failed": 0},
        segmenter=SegmenterStatistics(
            late_packets=0,
            refused_packets=0,
            jumps=0,
            repaired_pts=0,
            forced_cuts=0,
            ignored_configs=0,
        ),
        source="1280x720",
    )
    live = status_json(StreamStatus(live=True, renditions=("source",), statistics=figures))
    assert live["live"] is True and live["renditions"] == ["source"]
    assert live["publish_latency_ms"] == {"count": 3, "median": 200.0, "p95": 200.0}
    assert live["part_latency_ms"] == {"count": 0, "median": None, "p95": None}
    assert live["segmenter"]["forced_cuts"] == 0 and live["source"] == "1280x720"
    assert "statistics" not in live
    bare = status_json(StreamStatus(live=False, renditions=()))
    assert bare == {"live": False, "renditions": []}


def test_a_sides_section_is_absent_when_the_node_does_not_play_it() -> None:
    assert status_json(PaymentsStatus()) == {}


async def test_an_unpaid_orchestrators_status_has_its_keys_and_no_payments() -> None:
    orch = Orchestrator(secret="", metrics=Metrics(), local=LocalWorker(capacity=2))
    node = OrchestratorNodeStatus(
        role="orchestrator", version=lpstream.__version__, orchestrator=orch.status()
    )
    document = json.loads(json.dumps(status_json(node)))
    assert document["role"] == "orchestrator" and document["capacity"] == 2
    assert document["workers"] == {"local": {"capacity": 2, "sessions": 0}}
    assert document["live"] == {"sessions": {}, "stopped_total": 0}
    assert document["uploads"]["jobs"] == 0 and document["uploads"]["refused"] == {}
    assert isinstance(document["pipelines"], list)
    assert "payments" not in document and "orchestrator" not in document
    assert list(fraction_strings(document)) == []
