"""Starts a live AI session on a stream and steers it over the WebSocket while it runs.

Usage: python examples/steer_ai.py [STREAM] [GATEWAY]
(default stream ``demo``, gateway ``http://127.0.0.1:8935``). Start a node and a stream first,
e.g. ``scripts/dev``. The colour grade's strength sweeps from 0 to 1 and back; every event the
node sends (the frame each change applied at, fps, drops, latency) is printed.
"""

from __future__ import annotations

import json
import sys
import urllib.request

import trio
from trio_websocket import open_websocket_url


def start(gateway: str, stream: str) -> None:
    body = json.dumps({"pipeline": "color-grade", "params": {"look": "cool", "strength": 0.0}})
    request = urllib.request.Request(
        f"{gateway}/api/ai/{stream}", data=body.encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print("started:", response.read().decode())
    except urllib.error.HTTPError as exc:
        print(f"not started ({exc.code}): {exc.read().decode()}")


async def steer(gateway: str, stream: str) -> None:
    url = gateway.replace("http", "ws", 1) + f"/api/ai/{stream}/control"
    async with open_websocket_url(url) as ws, trio.open_nursery() as nursery:

        async def print_events() -> None:
            while True:
                print(json.loads(await ws.get_message()))

        nursery.start_soon(print_events)
        for step in [*range(11), *range(9, -1, -1)]:
            await ws.send_message(json.dumps({"params": {"strength": step / 10}}))
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()


def main() -> None:
    stream = sys.argv[1] if len(sys.argv) > 1 else "demo"
    gateway = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:8935"
    start(gateway, stream)
    trio.run(steer, gateway, stream)


if __name__ == "__main__":
    main()
