"""LL-HLS from ``lpstream dev --offchain``: real ffmpeg pushes RTMP, a client reads the source
rendition like an LL-HLS player (blocking reloads, the preload hint) and decodes the parts."""

from __future__ import annotations

import io
import re
import subprocess
import time

import av
import pytest

from tests.e2e.nodes import NodeProcess, http_get, http_json, push_command, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.solo]

PART_LINE = re.compile(
    r'^#EXT-X-PART:DURATION=([0-9.]+),URI="(\d+)\.(\d+)\.ts"(,INDEPENDENT=YES)?$'
)
HINT_LINE = re.compile(r'^#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.ts"$')


def parts_of(playlist: str) -> list[tuple[int, int, float, bool]]:
    """(msn, part, duration, independent) of every EXT-X-PART line."""
    parts = []
    for line in playlist.splitlines():
        match = PART_LINE.match(line)
        if match:
            duration, msn, index, independent = match.groups()
            parts.append((int(msn), int(index), float(duration), independent is not None))
    return parts


def hint_of(playlist: str) -> tuple[int, int]:
    for line in playlist.splitlines():
        match = HINT_LINE.match(line)
        if match:
            return int(match.group(1)), int(match.group(2))
    raise AssertionError(f"no preload hint in:\n{playlist}")


def decoded_frames(ts: bytes) -> int:
    with av.open(io.BytesIO(ts), mode="r", format="mpegts") as container:
        return sum(len(list(packet.decode())) for packet in container.demux(video=0))


def test_the_source_playlist_is_low_latency_and_its_parts_decode(dev_node: NodeProcess) -> None:
    base = dev_node.url("http")
    media = f"{base}/hls/ll/source/index.m3u8"
    publisher = subprocess.Popen(
        push_command(f"{dev_node.url('rtmp')}/live/ll", seconds=10, size="640x360"),
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: http_get(media)[0] == 200, 20, "the source media playlist")
        text = http_get(media)[1].decode()
        assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES" in text
        assert "#EXT-X-PART-INF:PART-TARGET=" in text

        # Follow the live edge like a player: ask for the hinted part (held until it exists)
        # and for the playlist that lists it (a blocking reload), a few times over.
        waits = []
        fetched: dict[tuple[int, int], bytes] = {}
        for _ in range(8):
            msn, index = hint_of(text)
            started = time.monotonic()
            status, data = http_get(f"{base}/hls/ll/source/{msn}.{index}.ts", timeout=10)
            waits.append(time.monotonic() - started)
            assert status == 200 and data[0] == 0x47 and len(data) % 188 == 0
            fetched[(msn, index)] = data
            status, body = http_get(f"{media}?_HLS_msn={msn}&_HLS_part={index}", timeout=10)
            assert status == 200
            text = body.decode()
            assert (msn, index) in {(m, i) for m, i, *_ in parts_of(text)}
        assert max(waits) > 0.05  # at least one of them was held for the part to be cut
    finally:
        _, err = publisher.communicate(timeout=40)
    assert publisher.returncode == 0, err.decode()

    text = http_get(media)[1].decode()
    parts = parts_of(text)
    assert parts, text
    # Every part listed downloads; from its independent first part on, a segment's parts
    # decode, alone and end to end, and end to end they are the segment.
    by_segment: dict[int, list[tuple[int, float, bool]]] = {}
    for msn, index, duration, independent in parts:
        by_segment.setdefault(msn, []).append((index, duration, independent))
        assert duration <= 0.34
    complete = [msn for msn in by_segment if f"\n{msn}.ts\n" in text]
    assert complete
    for msn in complete:
        listed = by_segment[msn]
        assert listed[0][0] == 0 and listed[0][2], f"part {msn}.0 is not independent"
        chunks = []
        for index, _, _ in listed:
            status, data = http_get(f"{base}/hls/ll/source/{msn}.{index}.ts")
            assert status == 200
            chunks.append(data)
        assert decoded_frames(chunks[0]) >= 1
        whole = b"".join(chunks)
        assert whole == http_get(f"{base}/hls/ll/source/{msn}.ts")[1]
        frames = decoded_frames(whole)
        assert frames == pytest.approx(30 * sum(d for _, d, _ in listed), abs=1)
    for (msn, index), data in fetched.items():
        assert data == http_get(f"{base}/hls/ll/source/{msn}.{index}.ts")[1]

    latency = http_json(f"{base}/api/status")["streams"]["ll"]["part_latency_ms"]
    print(f"part latency (last input byte -> fetchable), ms: {latency}")
    assert latency["count"] > 0
