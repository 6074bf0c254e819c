"""How many live streams the gateway, one publisher and one address may hold."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from lpstream.errors import BusyError, LpstreamError, ProtocolError, StreamInUseError
from lpstream.gateway.gateway import Gateway
from lpstream.gateway.publishers import Publisher, PublisherTable, StreamLimits
from lpstream.gateway.segments import RenditionSegment, SegmentJob
from lpstream.jobs import Relay
from lpstream.media import DEFAULT_PROFILES
from lpstream.metrics import Metrics
from lpstream.trickle import SegmentBuffer


class NoTranscoder:
    """These publishes send no media: nothing is ever transcoded."""

    async def transcode(
        self, job: SegmentJob, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[RenditionSegment]:
        raise LpstreamError("no orchestrators here")


def test_a_publisher_is_its_given_identity_else_its_address() -> None:
    assert Publisher.of("key:1f2e", "192.0.2.7:50000") == Publisher(
        identity="key:1f2e", source="192.0.2.7"
    )
    assert Publisher.of(None, "192.0.2.7:50000") == Publisher(
        identity="addr:192.0.2.7", source="192.0.2.7"
    )
    # An IPv6 publisher's address counts as its /64 (one host commonly holds a whole one).
    assert Publisher.of(None, "[2001:db8::1]:50000").source == "2001:db8::/64"
    assert Publisher.of() == Publisher(identity="anonymous", source="")


def test_each_limit_refuses_with_its_reason_and_flag() -> None:
    table = PublisherTable(
        StreamLimits(max_streams=4, max_streams_per_key=2, max_streams_per_addr=3)
    )
    table.admit("a1", Publisher.of("key:a", "192.0.2.1:1"))
    table.admit("a2", Publisher.of("key:a", "192.0.2.1:2"))
    with pytest.raises(
        ProtocolError, match=r"publisher key:a already holds 2 .*--max-streams-per-key"
    ) as refused:
        table.admit("a3", Publisher.of("key:a", "192.0.2.9:3"))
    assert refused.value.code == 429
    table.admit("b1", Publisher.of("key:b", "192.0.2.1:3"))
    with pytest.raises(
        ProtocolError, match=r"address 192.0.2.1 already publishes 3 .*--max-streams-per-addr"
    ) as refused:
        table.admit("c1", Publisher.of("key:c", "192.0.2.1:4"))
    assert refused.value.code == 429
    table.admit("c1", Publisher.of("key:c", "198.51.100.1:4"))
    with pytest.raises(BusyError, match=r"takes 4 live streams at once \(--max-streams\)"):
        table.admit("d1", Publisher.of("key:d", "198.51.100.2:4"))
    table.leave("a1")
    table.admit("a3", Publisher.of("key:a", "192.0.2.9:3"))
    assert len(table) == 4 and table.publisher("a3") == Publisher.of("key:a", "192.0.2.9:0")


def test_zero_is_no_limit() -> None:
    table = PublisherTable(
        StreamLimits(max_streams=0, max_streams_per_key=0, max_streams_per_addr=0)
    )
    for i in range(200):
        table.admit(f"s{i}", Publisher.of(None, "192.0.2.1:1"))
    assert len(table) == 200


async def test_the_gateway_refuses_a_publish_past_a_limit_and_frees_it_when_a_stream_ends(
    nursery: trio.Nursery,
) -> None:
    gateway = Gateway(
        transcoder=NoTranscoder(),
        profiles=DEFAULT_PROFILES,
        metrics=Metrics(),
        publishers=PublisherTable(StreamLimits(max_streams=3, max_streams_per_addr=2)),
    )
    await nursery.start(gateway.run)
    first = await gateway.start_publish("one", remote_addr="192.0.2.1:1000")
    await gateway.start_publish("two", remote_addr="192.0.2.1:1001")
    with pytest.raises(StreamInUseError):
        await gateway.start_publish("two", remote_addr="198.51.100.1:1")
    with pytest.raises(ProtocolError, match="--max-streams-per-addr") as refused:
        await gateway.start_publish("three", remote_addr="192.0.2.1:1002")
    assert refused.value.code == 429
    assert gateway.status().streams.keys() == {"one", "two"}  # the refused one left no trace
    await gateway.start_publish("three", identity="key:x", remote_addr="198.51.100.1:1")
    with pytest.raises(BusyError, match="--max-streams"):
        await gateway.start_publish("four", remote_addr="198.51.100.2:1")
    await first.aclose()
    await trio.testing.wait_all_tasks_blocked()  # the stream has ended
    assert gateway.publishers.publisher("one") is None
    await gateway.start_publish("four", remote_addr="192.0.2.1:1003")
