"""Per-stream series at a real gateway: a stream's series go when the gateway forgets the
stream (``--end-linger`` after it ends), and 100 streams coming and going leave the series
count where it was.

The streams are real media: an FLV clip made by ffmpeg, fed as the RTMP ingest delivers it,
cut by the real segmenter and listed in the real playlists. The orchestrator's part is a
copy of each source segment as the ``copy`` rendition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytest
import trio
import trio.testing

from lpstream.gateway.gateway import Gateway
from lpstream.gateway.publishers import PublisherTable, StreamLimits
from lpstream.gateway.segments import RenditionSegment, SegmentJob
from lpstream.jobs import Relay
from lpstream.media import MediaEvent, VideoProfile
from lpstream.metrics import Metrics
from lpstream.trickle import SegmentBuffer
from tests.lpstream.test_metrics import label_values, sample, samples
from tests.mediatools import flv_events, make_clip

LIVE_AT_ONCE = 10


class CopyTranscoder:
    """Answers each segment with its own bytes as the ``copy`` rendition."""

    async def transcode(
        self, job: SegmentJob, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[RenditionSegment]:
        await source.wait_closed()
        return [
            RenditionSegment(name="copy", width=320, height=180, pixels=0, data=source.getvalue())
        ]


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[MediaEvent]:
    """One second of 320x180 video, a keyframe every half second."""
    clip = make_clip(
        tmp_path_factory.mktemp("metrics") / "clip.flv",
        seconds=1,
        size="320x180",
        gop=15,
        audio=False,
    )
    return list(flv_events(clip))


def gateway(linger: float) -> Gateway:
    return Gateway(
        transcoder=CopyTranscoder(),
        profiles=(VideoProfile(name="copy", width=320, height=180, bitrate=300_000),),
        metrics=Metrics(),
        segment_target=0.5,
        linger=linger,
        publishers=PublisherTable(
            StreamLimits(max_streams=LIVE_AT_ONCE, max_streams_per_key=0, max_streams_per_addr=0)
        ),
    )


async def poll(condition: Callable[[], bool], seconds: float) -> None:
    """Polls ``condition`` until it holds, for up to ``seconds`` of real time (the streams have
    no event to wait on). Real time, not trio's clock: on an autojumping clock every poll
    jumps while a worker thread muxes, and a clock deadline passes in an instant."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise trio.TooSlowError
        await trio.sleep(0.02)


async def publish(node: Gateway, name: str, events: list[MediaEvent]) -> None:
    """Publishes ``events`` as stream ``name`` and returns once the stream has ended."""
    publisher = await node.start_publish(name, identity=f"key:{name}")
    for event in events:
        await publisher.send(event)
    await publisher.aclose()
    await poll(lambda: not node.status().streams[name].live, seconds=30)


async def wait_forgotten(node: Gateway, names: set[str], seconds: float) -> None:
    await poll(lambda: not names & node.status().streams.keys(), seconds)


async def test_an_ended_streams_series_stay_for_its_linger_then_go(
    nursery: trio.Nursery, events: list[MediaEvent]
) -> None:
    node = gateway(linger=1.0)
    await nursery.start(node.run)
    await publish(node, "cam", events)
    ended = trio.current_time()

    text = node.metrics.render()
    assert sample(text, "lpstream_stream_segments_in_total", stream="cam") == 2
    assert sample(text, "lpstream_stream_segments_out_total", stream="cam", rendition="copy") == 2
    assert sample(text, "lpstream_publish_latency_seconds_count", stream="cam") == 2
    assert sample(text, "lpstream_publish_latency_seconds_bucket", stream="cam", le="+Inf") == 2
    assert sample(text, "lpstream_segments_in_total") == 2  # the node-wide count

    # Still served (and still measured) while it lingers; gone when the gateway forgets it.
    await trio.sleep(0.5)
    assert "cam" in label_values(node.metrics.render(), "stream")
    await wait_forgotten(node, {"cam"}, seconds=5)
    assert trio.current_time() - ended >= 1.0
    text = node.metrics.render()
    assert label_values(text, "stream") == set()
    assert sample(text, "lpstream_segments_in_total") == 2  # node-wide totals stay
    assert sample(text, "lpstream_segments_out_total", rendition="copy") == 2


@pytest.mark.slow
async def test_label_cardinality_stays_bounded_when_100_streams_come_and_go(
    nursery: trio.Nursery, events: list[MediaEvent], autojump_clock: trio.testing.MockClock
) -> None:
    """On trio's autojumping clock: the lingers pass as soon as everything waits."""
    node = gateway(linger=0.2)
    await nursery.start(node.run)
    series_after_each_wave: list[int] = []
    most_streams_labelled = 0
    for wave in range(100 // LIVE_AT_ONCE):
        names = {f"s{wave}-{i}" for i in range(LIVE_AT_ONCE)}
        async with trio.open_nursery() as streams:
            for name in sorted(names):
                streams.start_soon(publish, node, name, events)
        text = node.metrics.render()
        labelled = label_values(text, "stream")
        # Every stream label is a stream the gateway holds (live or lingering): none of the
        # earlier waves' is left.
        assert labelled <= node.status().streams.keys()
        assert labelled <= names
        most_streams_labelled = max(most_streams_labelled, len(labelled))
        await wait_forgotten(node, names, seconds=30)
        series_after_each_wave.append(len(samples(node.metrics.render())))
    assert 0 < most_streams_labelled <= LIVE_AT_ONCE
    text = node.metrics.render()
    assert label_values(text, "stream") == set()
    assert sample(text, "lpstream_publishes_total") == 100
    assert sample(text, "lpstream_segments_in_total") == 200
    # The node-wide series are all there after the first wave; later streams add none.
    assert len(set(series_after_each_wave)) == 1, series_after_each_wave
