"""A stream's writer into a store: everything in order and closed as VOD at the end, a full
queue dropping the oldest (the gap marked), a store that goes away and comes back, the
recovery pass closing what a killed writer left, retention deleting old recordings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from benchmarks.harness.objects import S3Server, running_s3
from lpstream.metrics import Metrics
from lpstream.playback.hls import RenditionInfo
from lpstream.playback.listed import ListedSegment
from lpstream.storage import LocalStore, ObjectStore, open_store
from lpstream.storage.library import RecordingLibrary
from lpstream.storage.recordings import Manifest, RecordingObjects
from lpstream.storage.sink import SegmentSink, register_metrics

RECORDING = "20261207T110000Z"


def listed(seq: int, rendition: str = "source") -> ListedSegment:
    info = RenditionInfo(name=rendition, width=64, height=36, codecs="avc1.64000a", bandwidth=1)
    return ListedSegment(
        rendition=rendition, seq=seq, duration=2.0, data=f"{rendition}{seq}".encode(), info=info
    )


def recording_sink(store: ObjectStore, metrics: Metrics, **kwargs: Any) -> SegmentSink:
    register_metrics(metrics)
    objects = RecordingObjects(
        stream="cam", id=RECORDING, started_at=1000.0, rendition_order=("source", "low")
    )
    return SegmentSink(
        kind="record",
        stream="cam",
        store=store,
        objects=objects,
        metrics=metrics,
        **kwargs,
    )


def media_uris(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


async def test_segments_and_playlists_are_written_in_order_and_closed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    metrics = Metrics()
    sink = recording_sink(store, metrics)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        for seq in range(4):
            sink.offer(listed(seq))
            sink.offer(listed(seq, "low"))
            await trio.sleep(0.05)
        sink.end()
    prefix = f"cam/{RECORDING}/"
    text = (await store.get(prefix + "source/index.m3u8") or b"").decode()
    assert media_uris(text) == ["0.ts", "1.ts", "2.ts", "3.ts"]
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
    assert await store.get(prefix + "low/3.ts") == b"low3"
    manifest = Manifest.decode(await store.get(prefix + "recording.json") or b"")
    assert manifest.state == "ended" and manifest.renditions["low"].segments == 4
    status = sink.status()
    assert (status.state, status.stored, status.lost, status.failures) == ("ended", 8, 0, 0)
    assert status.upload_latency_ms.count == 8 and len(sink.latencies) == 8
    assert metrics.value("store_upload_seconds_count", store="record") == 8
    assert metrics.value("store_queue_depth", store="record") == 0


async def test_a_full_queue_drops_the_oldest_and_the_recording_marks_the_gap(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    metrics = Metrics()
    sink = recording_sink(store, metrics, queue_size=3)
    sink.offer(listed(0))
    await _run_until_idle(sink, stored=1)
    for seq in range(1, 7):  # the writer does not run meanwhile: 1, 2, 3 are dropped
        sink.offer(listed(seq))
    sink.end()
    await sink.run()
    text = (await store.get(f"cam/{RECORDING}/source/index.m3u8") or b"").decode()
    assert media_uris(text) == ["0.ts", "4.ts", "5.ts", "6.ts"]
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    assert await store.get(f"cam/{RECORDING}/source/2.ts") is None
    assert sink.status().lost == 3
    assert metrics.value("store_segments_lost_total", store="record") == 3


async def _run_until_idle(sink: SegmentSink, stored: int) -> None:
    """Runs ``sink`` until it stored ``stored`` segments (an empty queue is not enough: the
    writer may still be writing the last one it took), then stops it without ending it."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        await _wait(lambda: sink.status().stored >= stored, seconds=30)
        nursery.cancel_scope.cancel()


async def test_a_store_that_goes_away_and_comes_back() -> None:
    with running_s3() as s3:
        store = open_store(s3.store_url("rec"))
        await store.check()
        metrics = Metrics()
        sink = recording_sink(store, metrics, backoff=0.01)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink.run)
            sink.offer(listed(0))
            await _wait(lambda: sink.status().stored == 1)
            await trio.to_thread.run_sync(s3.stop)
            sink.offer(listed(1))
            await _wait(lambda: sink.status().lost == 1, seconds=60)
            assert sink.status().state == "failing"
            await trio.to_thread.run_sync(s3.start)
            sink.offer(listed(2))
            await _wait(lambda: sink.status().stored == 2, seconds=30)
            assert sink.status().state == "writing"
            sink.end()
        text = (await store.get(f"cam/{RECORDING}/source/index.m3u8") or b"").decode()
        assert media_uris(text) == ["0.ts", "2.ts"]
        assert "#EXT-X-DISCONTINUITY\n" in text and text.endswith("#EXT-X-ENDLIST\n")
        manifest = Manifest.decode(await store.get(f"cam/{RECORDING}/recording.json") or b"")
        assert manifest.lost_segments == 1
        assert metrics.value("store_upload_failures_total", store="record") >= 1
        keys = [o.key for o in await store.list("")]
        assert all(k.startswith(f"cam/{RECORDING}/") for k in keys)
        assert all(o["Key"].startswith("rec/") for o in _all_objects(s3))


def _all_objects(s3: S3Server) -> list[dict[str, Any]]:
    listing = s3.client().list_objects_v2(Bucket=s3.bucket)
    return list(listing.get("Contents", []))


async def _wait(done: Callable[[], bool], seconds: float = 10.0) -> None:
    """Polls ``done``: the sink has no event to wait on."""
    with trio.fail_after(seconds):
        while not done():  # noqa: ASYNC110
            await trio.sleep(0.02)


async def test_recovery_closes_what_a_killed_writer_left_and_retention_deletes(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    sink = recording_sink(store, Metrics())
    for seq in range(3):
        sink.offer(listed(seq))
    await _run_until_idle(sink, stored=3)  # killed: never ended
    library = RecordingLibrary(store)
    (left,) = await library.manifests("cam")
    assert left.state == "recording"
    assert await library.recover(live={("cam", RECORDING)}) == []
    (closed,) = await library.recover()
    assert closed.state == "interrupted" and closed.renditions["source"].segments == 3
    text = (await library.read("cam", RECORDING, "source/index.m3u8") or b"").decode()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
    assert await library.recover() == []  # closed once
    assert await library.expire(retention=3600, now=closed.ended_at or 0) == []
    (gone,) = await library.expire(retention=3600, now=(closed.ended_at or 0) + 3601)
    assert gone.id == RECORDING
    assert await store.list("cam/") == [] and await library.manifests() == []
