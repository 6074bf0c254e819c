"""WHIP's session limit under offers that arrive together: a real ``WhipIngest`` behind real
HTTP (hypercorn on loopback), real aiortc offers, the recording ``PublishHandler`` of
``test_whip``. An offer holds its slot from the moment it passes the checks, so however many
race, exactly ``max_sessions`` are answered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from starlette.applications import Starlette

from ingest.whip import WhipIngest
from ingest.whip.bridge import open_asyncio_loop
from lpstream.http.whip import whip_routes
from tests.asgi import Reply, serve_on_loopback
from tests.ingest.test_whip import AUTH, TOKEN, AiortcPublisher, Node, RecordingHandler

MAX_SESSIONS = 8
OFFERS = 40


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    handler = RecordingHandler()
    ingest = WhipIngest(
        handler=handler,
        token=TOKEN,
        host_addresses=("127.0.0.1",),
        max_sessions=MAX_SESSIONS,
    )
    async with trio.open_nursery() as nursery, open_asyncio_loop("whip-client") as client:
        await nursery.start(ingest.run)
        port = await nursery.start(serve_on_loopback, Starlette(routes=whip_routes(ingest)))
        yield Node(ingest=ingest, handler=handler, port=port, client_loop=client)
        nursery.cancel_scope.cancel()


async def test_offers_that_race_get_exactly_max_sessions_and_the_rest_503(node: Node) -> None:
    client = AiortcPublisher(audio=False)
    offer = await node.run_client(client.offer)  # one offer, posted 40 times at once
    replies: dict[str, Reply] = {}

    async def post(stream: str) -> None:
        replies[stream] = await node.post_offer(stream, offer)

    async with trio.open_nursery() as nursery:
        for n in range(OFFERS):
            nursery.start_soon(post, f"cam{n}")

    accepted = {s: r for s, r in replies.items() if r.status == 201}
    refused = [r for r in replies.values() if r.status != 201]
    assert len(accepted) == MAX_SESSIONS
    assert len(refused) == OFFERS - MAX_SESSIONS
    assert {r.status for r in refused} == {503}
    assert all(b"max_sessions=8" in r.body for r in refused)
    # A refused offer started no publish: only the accepted streams ever reached the handler.
    assert set(node.handler.publishers) == set(accepted)
    stats = node.ingest.statistics()
    assert (stats.active_sessions, stats.pending_sessions) == (MAX_SESSIONS, 0)

    for reply in accepted.values():
        assert (await node.request("DELETE", reply.headers["location"], headers=AUTH)).status == 200
    stats = node.ingest.statistics()
    assert (stats.active_sessions, stats.pending_sessions) == (0, 0)
    assert stats.sessions_total == MAX_SESSIONS
    assert all(p.closed.is_set() for p in node.handler.publishers.values())
    # Every slot came back: a full set can be taken again.
    again = [await node.post_offer(f"again{n}", offer) for n in range(MAX_SESSIONS)]
    assert [r.status for r in again] == [201] * MAX_SESSIONS
    for reply in again:
        await node.request("DELETE", reply.headers["location"], headers=AUTH)
    await node.run_client(client.close)


async def test_an_offer_refused_after_it_took_its_slot_gives_the_slot_back(node: Node) -> None:
    node.ingest.max_sessions = 1
    first, second = AiortcPublisher(audio=False), AiortcPublisher(audio=False)
    reply = await node.post_offer("cam", await node.run_client(first.offer))
    assert reply.status == 201
    # The limit is reached: 503. Then the only session ends and a publish of the live name
    # (refused by the handler with 409 after the slot was taken) leaves the slot free.
    other = await node.run_client(second.offer)
    assert (await node.post_offer("other", other)).status == 503
    node.ingest.max_sessions = 2
    assert (await node.post_offer("cam", other)).status == 409
    assert node.ingest.statistics().pending_sessions == 0
    assert (await node.post_offer("other", other)).status == 201
    stats = node.ingest.statistics()
    assert (stats.active_sessions, stats.pending_sessions) == (2, 0)
    await node.run_client(first.close)
    await node.run_client(second.close)
