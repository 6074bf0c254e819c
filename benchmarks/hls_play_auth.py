"""What play authorization costs HLS serving: requests per second with ``--play-auth jwt``
against without, on this machine.

Two ``lpstream dev --offchain`` nodes with the same settings (both ``--jwt-secret``, so both
publish with a JWT; one adds ``--play-auth jwt``), each with one ffmpeg publisher. The same
client measures both: a trio HTTP/1.1 client (h11) with ``--connections`` keep-alive
connections, each asking in turn for the master playlist, each rendition's media playlist and
that rendition's newest segment, as players do, for ``--seconds``. Every request carries the
same valid HS256 token (``?token=…``; the node without play authorization ignores it), so the
requests are the same bytes on both sides and the difference is the authorization (and the
token the guarded node writes into its playlists' URIs). Rounds alternate between the nodes,
which run (and transcode) all along, so both see the same load. Prints each round (with the
client's own CPU use: near a whole core, the client, not the node, sets the pace), the median
requests per second of each side, their ratio (and the median ratio of consecutive rounds, which
a machine whose load drifts leaves fairer) and the versions used.

    python -m benchmarks.hls_play_auth [--connections 16] [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import platform
import statistics
import subprocess
import tempfile
import time
import urllib.parse
from importlib.metadata import version
from pathlib import Path

import attrs
import h11
import jwt
import trio

import lpstream
from benchmarks.harness.nodes import (
    NodeProcess,
    http_get,
    parse_media_playlist,
    push_command,
    start_dev,
    wait_for,
)

SECRET = "benchmark-play-secret-of-32-bytes-or-more"
STREAM = "bench"
FLAGS = (f"--jwt-secret={SECRET}", "--log-level=warning")
"""The settings both nodes share."""


def token(action: str) -> str:
    """An HS256 JWT that may ``action`` (``read``, ``publish``) the benchmark's stream."""
    claims = {
        "sub": "bench",
        "exp": int(time.time() + 3600),
        "lpstream_permissions": [{"action": action, "path": STREAM}],
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


@attrs.define
class Tally:
    """What one round's connections did."""

    requests: int = 0
    failures: int = 0
    bytes: int = 0
    latencies: list[float] = attrs.Factory(list)


@attrs.define
class Player:
    """One keep-alive connection asking for what a player asks for, in turn."""

    port: int
    query: str
    renditions: tuple[str, ...]
    tally: Tally
    newest: dict[str, str] = attrs.Factory(dict)
    """Each rendition's newest segment URI, from its last media playlist."""

    def paths(self) -> itertools.cycle[tuple[str, str | None]]:
        steps: list[tuple[str, str | None]] = [(f"/hls/{STREAM}/index.m3u8{self.query}", None)]
        for rendition in self.renditions:
            steps.append((f"/hls/{STREAM}/{rendition}/index.m3u8{self.query}", rendition))
            steps.append(("", rendition))  # its newest segment
        return itertools.cycle(steps)

    async def run(self, deadline: float) -> None:
        steps = self.paths()
        while trio.current_time() < deadline:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            async with stream:
                await self._requests(stream, steps, deadline)

    async def _requests(
        self,
        stream: trio.SocketStream,
        steps: itertools.cycle[tuple[str, str | None]],
        deadline: float,
    ) -> None:
        connection = h11.Connection(h11.CLIENT)
        while trio.current_time() < deadline:
            path, rendition = next(steps)
            if not path:  # a segment: the newest one the rendition's playlist listed
                uri = self.newest.get(rendition or "")
                if uri is None:
                    continue
                path = f"/hls/{STREAM}/{rendition}/{uri}"
            started = trio.current_time()
            request = h11.Request(method="GET", target=path, headers=[("Host", "bench")])
            await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
            status, body = await _answer(connection, stream)
            self.tally.latencies.append(trio.current_time() - started)
            self.tally.requests += 1
            self.tally.bytes += len(body)
            if status != 200:
                self.tally.failures += 1
            elif rendition is not None and path.endswith(f"index.m3u8{self.query}"):
                entries = parse_media_playlist(body.decode())[1]
                if entries:
                    self.newest[rendition] = entries[-1][2]
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return  # the node closes this one: open another
            connection.start_next_cycle()


async def _answer(connection: h11.Connection, stream: trio.SocketStream) -> tuple[int, bytes]:
    status = 0
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(1 << 16))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, bytes(body)


async def measure(
    port: int, query: str, renditions: tuple[str, ...], connections: int, seconds: float
) -> Tally:
    """One round: ``connections`` players for ``seconds``."""
    tally = Tally()
    deadline = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(Player(port, query, renditions, tally).run, deadline)
    return tally


def live(node: NodeProcess, query: str) -> tuple[str, ...]:
    """Waits until the node's stream has three segments listed; returns its renditions."""
    base = f"{node.url('http')}/hls/{STREAM}"
    master = wait_for(
        lambda: (lambda got: got[1] if got[0] == 200 else None)(
            http_get(f"{base}/index.m3u8{query}")
        ),
        60,
        f"{node.name}'s master playlist",
    )
    renditions = tuple(
        line.split("/")[0] for line in master.decode().splitlines() if line[:1] not in ("", "#")
    )
    for rendition in renditions:
        wait_for(
            lambda r=rendition: (
                len(parse_media_playlist(http_get(f"{base}/{r}/index.m3u8{query}")[1].decode())[1])
                >= 3
            ),
            60,
            f"three {rendition} segments on {node.name}",
        )
    return renditions


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(connections: int, seconds: float, rounds: int, size: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="hls-play-auth-"))
    nodes = {
        "without": start_dev(folder / "open", *FLAGS, name="open"),
        "with play auth": start_dev(folder / "guarded", *FLAGS, "--play-auth=jwt", name="guarded"),
    }
    publish = urllib.parse.quote(token("publish"))
    publishers = [
        subprocess.Popen(
            push_command(
                f"{node.url('rtmp')}/live/{STREAM}?jwt={publish}",
                seconds=rounds * 2 * (seconds + 2) + 120,
                size=size,
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for node in nodes.values()
    ]
    query = f"?token={urllib.parse.quote(token('read'))}"
    tallies: dict[str, list[Tally]] = {side: [] for side in nodes}
    try:
        renditions = {side: live(node, query) for side, node in nodes.items()}
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
        print(f"{connections} connections, {seconds:g} s rounds, renditions {renditions}")
        for n, side in zip(range(2 * rounds), itertools.cycle(nodes), strict=False):
            port = int(nodes[side].hostport("http").rsplit(":", 1)[1])
            cpu = time.process_time()
            tally = trio.run(
                functools.partial(measure, port, query, renditions[side], connections, seconds)
            )
            cpu = (time.process_time() - cpu) / seconds
            tallies[side].append(tally)
            print(
                f"round {n + 1:>2} {side:<15} {tally.requests / seconds:8.0f} req/s, "
                f"{tally.bytes / seconds / 1e6:6.1f} MB/s, p50 "
                f"{percentile(tally.latencies, 0.5) * 1000:6.1f} ms, p99 "
                f"{percentile(tally.latencies, 0.99) * 1000:6.1f} ms, "
                f"{tally.failures} not 200, client CPU {cpu:4.0%}",
                flush=True,
            )
    finally:
        for publisher in publishers:
            publisher.kill()
            publisher.wait()
        for node in nodes.values():
            node.stop()
    rates = {
        side: statistics.median(t.requests / seconds for t in ts) for side, ts in tallies.items()
    }
    print(
        f"lpstream {lpstream.__version__}, Python {platform.python_version()}, "
        f"hypercorn {version('hypercorn')}, h11 {version('h11')}, trio {version('trio')}, "
        f"PyJWT {version('PyJWT')}"
    )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(f"HLS requests per second, median of {rounds} rounds each:")
    print(f"  without play authorization:   {rates['without']:8.0f}")
    print(f"  with --play-auth jwt:         {rates['with play auth']:8.0f}")
    print(f"  ratio (with / without):       {rates['with play auth'] / rates['without']:8.3f}")
    pairs = [
        guarded.requests / plain.requests
        for plain, guarded in zip(tallies["without"], tallies["with play auth"], strict=True)
    ]
    print(f"  ratio, median of round pairs: {statistics.median(pairs):8.3f}")
    failures = sum(t.failures for ts in tallies.values() for t in ts)
    print(f"requests not answered 200:     {failures:8d}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="320x180", help="the publishers' picture")
    arguments = parser.parse_args()
    main(arguments.connections, arguments.seconds, arguments.rounds, arguments.size)
