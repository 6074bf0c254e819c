"""QUIC throughput between two processes on loopback, against raw TCP as the named peer.

The sink runs in a separate process (this script re-run with ``--sink``): it serves QUIC with
``serve_quic`` and TCP with ``trio.serve_tcp``, reads everything sent on each stream or
connection and answers with the byte count. The client process measures, from the first byte
sent to the sink's answer:

1. raw TCP over loopback (trio ``SocketStream``), the named peer;
2. QUIC, one stream;
3. QUIC, many 2 MB "segment" streams, ``--concurrency`` at a time (as the gateway uploads);
4. QUIC, one stream, for several ``max_datagram_size`` values and both congestion
   controllers, to show what the datagram size does.

Usage::

    .venv/bin/python benchmarks/quic_throughput.py            # 512 MB per measurement
    .venv/bin/python benchmarks/quic_throughput.py --mb 128 --profile client.prof

Benchmarks print figures; they never fail on timing.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import trio

from lpstream.errors import TransportError
from lpstream.quic import (
    QuicConnectionHandle,
    QuicStream,
    client_configuration,
    open_quic_connection,
    serve_quic,
    server_configuration,
)
from lpstream.quic.tls import (
    DEFAULT_CONGESTION_CONTROL,
    DEFAULT_MAX_DATAGRAM_SIZE,
    LOOPBACK_MAX_DATAGRAM_SIZE,
)

MB = 1024 * 1024
CHUNK = 256 * 1024


# -- sink process ----------------------------------------------------------------------------


async def _drain_quic_stream(stream: QuicStream) -> None:
    total = 0
    try:
        while data := await stream.receive_some():
            total += len(data)
        await stream.send_all(str(total).encode())
        await stream.send_eof()
    except TransportError:
        pass


async def _quic_sink(connection: QuicConnectionHandle) -> None:
    try:
        async with trio.open_nursery() as nursery:
            while True:
                nursery.start_soon(_drain_quic_stream, await connection.accept_stream())
    except* TransportError:
        pass  # the client closed the connection


async def _tcp_sink(stream: trio.SocketStream) -> None:
    total = 0
    while data := await stream.receive_some(CHUNK):
        total += len(data)
    await stream.send_all(str(total).encode())
    await stream.aclose()


async def run_sink() -> None:
    async with trio.open_nursery() as nursery:
        _, quic_port = await nursery.start(
            functools.partial(
                serve_quic,
                "127.0.0.1",
                0,
                _quic_sink,
                configuration=server_configuration(max_datagram_size=LOOPBACK_MAX_DATAGRAM_SIZE),
                loopback_datagram_size=None,
            )
        )
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, _tcp_sink, 0, host="127.0.0.1")
        )
        tcp_port = listeners[0].socket.getsockname()[1]
        print(json.dumps({"quic": quic_port, "tcp": tcp_port}), flush=True)
        await trio.sleep_forever()


# -- client process --------------------------------------------------------------------------


async def _send_counted(
    send_all: Callable[[bytes], Awaitable[None]], size: int, payload: bytes
) -> None:
    left = size
    while left > 0:
        piece = payload if left >= len(payload) else payload[:left]
        await send_all(piece)
        left -= len(piece)


async def measure_tcp(port: int, size: int, payload: bytes) -> float:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        start = time.perf_counter()
        await _send_counted(stream.send_all, size, payload)
        await stream.send_eof()
        answer = b""
        while data := await stream.receive_some():
            answer += data
        elapsed = time.perf_counter() - start
    assert int(answer) == size, answer
    return elapsed


async def _quic_stream(conn: QuicConnectionHandle, size: int, payload: bytes) -> None:
    async with await conn.open_stream() as stream:
        await _send_counted(stream.send_all, size, payload)
        await stream.send_eof()
        answer = b""
        while data := await stream.receive_some():
            answer += data
    assert int(answer) == size, answer


async def measure_quic(
    port: int,
    size: int,
    payload: bytes,
    *,
    segment: int | None = None,
    concurrency: int = 8,
    datagram_size: int = LOOPBACK_MAX_DATAGRAM_SIZE,
    congestion_control: str = DEFAULT_CONGESTION_CONTROL,
) -> float:
    configuration = client_configuration(
        max_datagram_size=datagram_size, congestion_control=congestion_control
    )
    async with open_quic_connection(
        "127.0.0.1", port, configuration=configuration, loopback_datagram_size=None
    ) as conn:
        start = time.perf_counter()
        if segment is None:
            await _quic_stream(conn, size, payload)
        else:
            slots = trio.Semaphore(concurrency)

            async def one(length: int) -> None:
                try:
                    await _quic_stream(conn, length, payload)
                finally:
                    slots.release()

            async with trio.open_nursery() as nursery:
                for offset in range(0, size, segment):
                    await slots.acquire()  # a new segment stream as soon as one finishes
                    nursery.start_soon(one, min(segment, size - offset))
        elapsed = time.perf_counter() - start
        assert conn.statistics().open_streams == 0
    return elapsed


def _mbps(size: int, elapsed: float) -> float:
    return size * 8 / elapsed / 1e6


async def run_client(args: argparse.Namespace, ports: dict[str, int]) -> None:
    size = args.mb * MB
    payload = bytes(range(256)) * (CHUNK // 256)
    print(f"payload {args.mb} MB per measurement, sink in a separate process, loopback")

    tcp = _mbps(size, await measure_tcp(ports["tcp"], size, payload))
    print(f"  TCP (trio SocketStream, named peer)            {tcp:9.0f} Mbit/s")

    one = _mbps(size, await measure_quic(ports["quic"], size, payload))
    print(
        f"  QUIC one stream, datagram {LOOPBACK_MAX_DATAGRAM_SIZE:5d}            "
        f"{one:9.0f} Mbit/s   ratio to TCP {one / tcp:.3f}"
    )
    segment = args.segment_mb * MB
    segments = _mbps(
        size,
        await measure_quic(
            ports["quic"], size, payload, segment=segment, concurrency=args.concurrency
        ),
    )
    print(
        f"  QUIC {args.segment_mb} MB segments x{args.concurrency} concurrent streams   "
        f"{segments:9.0f} Mbit/s   ratio to TCP {segments / tcp:.3f}"
    )

    small = max(MB, size // args.sweep_divisor)
    print(f"datagram size and congestion control, one stream, {small // MB} MB each:")
    for congestion_control in ("cubic", "reno"):
        for datagram_size in args.sizes:
            rate = _mbps(
                small,
                await measure_quic(
                    ports["quic"],
                    small,
                    payload,
                    datagram_size=datagram_size,
                    congestion_control=congestion_control,
                ),
            )
            default = " (default for real networks)" if datagram_size == 1350 else ""
            print(f"  {congestion_control:5s} {datagram_size:6d} B   {rate:9.0f} Mbit/s{default}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sink", action="store_true", help="run the sink (internal)")
    parser.add_argument("--mb", type=int, default=512, help="MB per measurement")
    parser.add_argument("--segment-mb", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[1200, DEFAULT_MAX_DATAGRAM_SIZE, 4096, 8192, LOOPBACK_MAX_DATAGRAM_SIZE],
        help="max_datagram_size values to sweep (comma-separated)",
    )
    parser.add_argument(
        "--sweep-divisor", type=int, default=16, help="sweep sends MB/this per point"
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile the client into FILE")
    args = parser.parse_args()
    if args.sink:
        trio.run(run_sink)
        return
    sink = subprocess.Popen([sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        ports = json.loads(sink.stdout.readline())
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(trio.run, run_client, args, ports)
            profiler.dump_stats(args.profile)
        else:
            trio.run(run_client, args, ports)
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
