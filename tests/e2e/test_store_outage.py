"""The record store goes away mid-stream and comes back: ``lpstream dev --record`` into a real
S3 server that is stopped (its port refuses connections) while a stream is live. The
gateway's own live HLS has no hole; the failures show in ``/metrics``; once the server is
back the recording goes on, and when the stream ends its playlists mark the gap with a
discontinuity and it plays.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness.objects import S3Server, running_s3
from tests.e2e.hls_check import HlsRecorder
from tests.e2e.nodes import http_get, parse_media_playlist, running_dev, wait_for
from tests.e2e.stored_media import (
    S3Reader,
    check_recording_in_store,
    gateway_http,
    live_master,
    metric,
    play_with_ffmpeg,
    pushing,
    wait_pushed,
    wait_recordings,
)

pytestmark = [pytest.mark.slow, pytest.mark.solo]

SECONDS = 24.0
RENDITIONS = ["source", "360p", "240p"]


def _stored_source_segments(s3: S3Server, stream: str) -> list[int]:
    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"rec/{stream}/")
    keys = [item["Key"] for item in listed.get("Contents", ())]
    return sorted(
        int(key.rsplit("/", 1)[1].removesuffix(".ts"))
        for key in keys
        if "/source/" in key and key.endswith(".ts")
    )


def _last_live_segment(base: str, stream: str) -> int:
    text = http_get(f"{base}/hls/{stream}/source/index.m3u8")[1].decode()
    _, entries, _ = parse_media_playlist(text)
    return entries[-1][0]


def _store_failures(base: str) -> float:
    page = http_get(f"{base}/metrics")[1].decode()
    return metric(page, "lpstream_store_upload_failures_total", store="record") + metric(
        page, "lpstream_store_segments_lost_total", store="record"
    )


def test_a_store_outage_leaves_no_hole_live_and_a_marked_gap_in_the_recording(
    tmp_path: Path,
) -> None:
    stream = "outage"
    with (
        running_s3() as s3,
        running_dev(tmp_path / "logs", "--record", "--record-store", s3.store_url("rec")) as node,
    ):
        base = gateway_http(node)
        viewer = HlsRecorder(base=base, stream=stream, out_dir=tmp_path)
        with pushing(f"{node.url('rtmp')}/live/{stream}", seconds=SECONDS, size="640x360") as p:
            live_master(base, stream)
            viewer.start()
            wait_for(lambda: len(_stored_source_segments(s3, stream)) >= 2, 15, "stored segments")
            s3.stop()
            stopped_at = _last_live_segment(base, stream)
            # Down for three segments' time at least, and until a write failed.
            wait_for(
                lambda: (
                    _last_live_segment(base, stream) >= stopped_at + 3 and _store_failures(base) > 0
                ),
                20,
                "store failures in /metrics",
            )
            s3.start()
            restarted_at = _last_live_segment(base, stream)
            wait_pushed(p, SECONDS + 30)
        viewer.wait(timeout=30)
        [recording] = wait_recordings(base, stream, ["ended"], timeout=60)
        reader = S3Reader(s3, "rec")
        lasting = check_recording_in_store(reader, recording, renditions=RENDITIONS)
        source_playlist = reader.get(f"{stream}/{recording['id']}/source/index.m3u8") or b""
        stored = _stored_source_segments(s3, stream)
        played = play_with_ffmpeg(base + recording["url"])
        failures = _store_failures(base)

    # Live HLS from the gateway: every segment of every rendition, none missing or a gap.
    assert viewer.errors == [] and viewer.gaps == [], (viewer.errors, viewer.gaps)
    source = viewer.seqs("source")
    assert source == list(range(source[0], source[-1] + 1)) and len(source) >= SECONDS / 2 - 1
    for name in RENDITIONS[1:]:
        assert viewer.seqs(name) == source, name

    assert failures > 0
    # The store came back: segments made after it did are in the recording.
    assert stopped_at <= restarted_at and any(seq > restarted_at for seq in stored), (
        stopped_at,
        restarted_at,
        stored,
    )
    # The gap is marked and counted, and the recording plays across it.
    assert recording["lost_segments"] > 0, recording
    assert "#EXT-X-DISCONTINUITY\n" in source_playlist.decode(), source_playlist
    missing = sorted(set(source) - set(stored))
    # Lost: what was written while the store was down, nothing after it came back.
    assert missing and all(stopped_at - 1 <= seq <= restarted_at for seq in missing), (
        missing,
        stopped_at,
        restarted_at,
    )
    assert played.frames == pytest.approx(lasting["source"] * 30, abs=30), (played, lasting)
