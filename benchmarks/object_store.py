"""What writing to object storage costs: a segment's way into the store, the live path with
the origin on, and the bytes written per stream-minute.

One S3-compatible server on loopback (moto's server mode, reached over HTTP by boto3 like any
endpoint) and three ``lpstream dev --offchain`` runs one after the other, each publishing the
same ffmpeg test pattern (640x360, 2 s GOP, the default 360p + 240p ladder) for ``--seconds``:

* ``plain``: no outputs;
* ``origin``: ``--hls-origin s3://…`` (the live HLS written to the store);
* ``record``: ``--record --record-store s3://…``.

Printed:

* time from a segment listed at the gateway to it being in the store (median, p95; the
  writers' own figures from ``/api/status``), against the peer: a bare ``put_object`` of a
  segment of the same size by boto3 to the same endpoint (median, p95, ratio lpstream / bare);
* the live HLS's publish latency (a source segment's end to its renditions listed; median and
  p95 from ``/api/status``) with and without ``--hls-origin`` (ratio);
* bytes written per stream-minute against the bytes of the renditions' segments (overhead
  ratio: playlists, manifests, the master, on top of the segments).

    python -m benchmarks.object_store [--seconds 40]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import botocore

import lpstream
from benchmarks.harness.nodes import http_json, push_command, start_dev
from benchmarks.harness.objects import S3Server, running_s3

SEGMENTS_PER_SLOT = ("source", "360p", "240p")
"""The renditions each 2 s of stream is stored as."""
SIDES = {
    "plain": (),
    "origin": ("--hls-origin={origin}",),
    "record": ("--record", "--record-store={record}"),
}


def run_side(s3: S3Server, side: str, seconds: float, folder: Path) -> dict[str, Any]:
    """Publishes for ``seconds`` on a fresh node of ``side``; answers the stream's status taken
    just before the publisher stops."""
    flags = [
        f.format(origin=s3.store_url(f"origin-{side}"), record=s3.store_url(f"rec-{side}"))
        for f in SIDES[side]
    ]
    node = start_dev(folder / side, *flags, name=side)
    stream = f"bench-{side}"
    try:
        publisher = subprocess.Popen(
            push_command(f"{node.url('rtmp')}/live/{stream}", seconds=seconds + 5, size="640x360"),
            stdin=subprocess.DEVNULL,
        )
        time.sleep(seconds)
        status = http_json(f"{node.url('http')}/api/status")["streams"][stream]
        publisher.wait(30)
        time.sleep(3)  # the writers finish
        return dict(status)
    finally:
        node.stop()


def bare_puts(s3: S3Server, size: int, count: int = 60) -> list[float]:
    """Seconds of ``count`` bare ``put_object`` calls of ``size`` bytes (the peer)."""
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    data = os.urandom(size)
    times = []
    for n in range(count):
        started = time.perf_counter()
        client.put_object(
            Bucket=s3.bucket,
            Key=f"bare/{n}.ts",
            Body=data,
            ContentType="video/mp2t",
            CacheControl="public, max-age=31536000, immutable",
        )
        times.append(time.perf_counter() - started)
        time.sleep(0.05)
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))]


def versions() -> str:
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    import moto

    return (
        f"lpstream {lpstream.__version__}, Python {platform.python_version()}, boto3 "
        f"{boto3.__version__}, botocore {botocore.__version__}, moto {moto.__version__} "
        f"(server mode), {ffmpeg.splitlines()[0] if ffmpeg else 'ffmpeg unknown'}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )


def main(seconds: float) -> None:
    folder = Path(tempfile.mkdtemp(prefix="object-store-"))
    with running_s3() as s3:
        results = {side: run_side(s3, side, seconds, folder) for side in SIDES}
        record = results["record"]["outputs"]["recording"]["sink"]
        origin = results["origin"]["outputs"]["origin"]
        segment = record["segment_bytes"] // max(1, record["stored"])
        bare = bare_puts(s3, segment)
    print(versions())
    print(f"{seconds:g} s of 640x360 test pattern per run, 2 s segments, source + 360p + 240p")
    print(f"segment listed -> in the store (ms; peer: a bare boto3 put of {segment} bytes):")
    bare_ms = (statistics.median(bare) * 1000, p95(bare) * 1000)
    for name, sink in (("record", record), ("origin", origin)):
        lat = sink["upload_latency_ms"]
        print(
            f"  {name:<7} median {lat['median']:7.1f}  p95 {lat['p95']:7.1f}  "
            f"({lat['count']} segments)"
        )
    print(f"  bare    median {bare_ms[0]:7.1f}  p95 {bare_ms[1]:7.1f}")
    print(
        "  (a segment listed while the writer writes the playlists of the one before waits "
        "for them; the node transcodes meanwhile, the bare puts run alone)"
    )
    for name, sink in (("record", record), ("origin", origin)):
        lat = sink["upload_latency_ms"]
        print(
            f"  ratio {name} / bare: median {lat['median'] / bare_ms[0]:.2f}, "
            f"p95 {lat['p95'] / bare_ms[1]:.2f}"
        )
    print("publish latency of the live HLS (ms):")
    plain = results["plain"]["publish_latency_ms"]
    with_origin = results["origin"]["publish_latency_ms"]
    for name, lat in (("without --hls-origin", plain), ("with --hls-origin", with_origin)):
        print(f"  {name:<21} median {lat['median']:7.1f}  p95 {lat['p95']:7.1f}")
    print(
        f"  ratio with / without: median {with_origin['median'] / plain['median']:.3f}, "
        f"p95 {with_origin['p95'] / plain['p95']:.3f}"
    )
    print("bytes written per stream-minute:")
    for name, sink in (("record", record), ("origin", origin)):
        minutes = sink["stored"] / len(SEGMENTS_PER_SLOT) * 2 / 60
        print(
            f"  {name:<7} {sink['bytes'] / minutes / 1e6:7.2f} MB/min written, segments "
            f"{sink['segment_bytes'] / minutes / 1e6:7.2f} MB/min, overhead ratio "
            f"{sink['bytes'] / sink['segment_bytes']:.4f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="publish time per run")
    main(parser.parse_args().seconds)
