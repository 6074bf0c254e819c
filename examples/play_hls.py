"""Plays a stream's HLS from a gateway with PyAV and prints what arrives, rendition by rendition.

Usage: python examples/play_hls.py [URL] [SECONDS]
(default URL http://127.0.0.1:8935/hls/demo/index.m3u8, 10 seconds)
"""

from __future__ import annotations

import sys
import time

import av


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8935/hls/demo/index.m3u8"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    with av.open(url, options={"live_start_index": "-3"}) as container:
        video = container.streams.video
        sizes = [f"{s.codec_context.width}x{s.codec_context.height}" for s in video]
        print("renditions:", ", ".join(sizes))
        frames = {s.index: 0 for s in video}
        started = time.monotonic()
        for packet in container.demux(*video):
            frames[packet.stream.index] += len(packet.decode())
            if time.monotonic() - started > seconds:
                break
        for index, count in frames.items():
            print(f"stream {index}: {count} frames decoded")


if __name__ == "__main__":
    main()
