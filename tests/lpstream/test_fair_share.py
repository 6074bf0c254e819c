"""The fair share of a gateway's transcoding capacity: who is admitted, who is shed, and why."""

from __future__ import annotations

import pytest
import trio

from lpstream.config import HostPort
from lpstream.gateway.fair_share import TranscodeShares
from lpstream.gateway.gateway import Gateway
from lpstream.gateway.orchestrators import OrchestratorPool
from lpstream.media import DEFAULT_PROFILES, MediaEvent, MediaPacket
from lpstream.metrics import Metrics
from lpstream.orchestrator.capacity import SESSION_WORK, ladder_work
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.quic import serve_quic
from lpstream.worker.local import LocalWorker
from tests.mediatools import flv_events, make_clip

TINY = ladder_work(DEFAULT_PROFILES, (160, 90))
"""A 160x90 stream's default ladder: 0.86 Mpx/s."""
HD = SESSION_WORK
"""A 720p stream's default ladder: 9.98 Mpx/s."""


def shares(capacity: int) -> TranscodeShares:
    return TranscodeShares(capacity=lambda: capacity)


def test_while_there_is_room_anyone_may_use_it() -> None:
    pool = shares(4 * HD)
    for i in range(4):
        pool.join(f"a{i}", "key:a")
        assert pool.admit(f"a{i}", HD) == ""
    assert pool.held("key:a") == 4 * HD


def test_four_tiny_streams_leave_room_for_a_second_publishers_720p() -> None:
    pool = shares(4 * HD)
    for i in range(4):
        pool.join(f"tiny{i}", "key:a")
        assert pool.admit(f"tiny{i}", TINY) == ""
    pool.join("hd", "key:b")
    assert pool.admit("hd", HD) == ""
    assert all(pool.admit(f"tiny{i}", TINY) == "" for i in range(4))


def test_a_publisher_over_its_share_is_shed_for_a_newcomer_newest_stream_first() -> None:
    pool = shares(4 * HD)
    for i in range(4):
        pool.join(f"a{i}", "key:a")
        pool.admit(f"a{i}", HD)
    pool.join("b", "key:b")
    assert pool.admit("b", HD) == ""  # within its share (half): admitted
    assert pool.held("key:b") == HD
    # The room came from a's newest stream; its older ones keep theirs.
    assert pool.held("key:a") == 3 * HD
    assert [pool.admit(f"a{i}", HD) for i in range(3)] == ["", "", ""]
    refusal = pool.admit("a3", HD)
    assert "publisher key:a would hold 39.9 Mpx/s, over its fair share" in refusal
    assert "(20 Mpx/s of 39.9 Mpx/s, 2 publishers)" in refusal


def test_a_publisher_over_its_share_is_the_one_refused() -> None:
    pool = shares(4 * HD)
    pool.join("a0", "key:a")
    pool.admit("a0", 3 * HD)
    pool.join("b0", "key:b")
    pool.admit("b0", HD)
    pool.join("a1", "key:a")  # a holds 3 of its 2 shares' worth already: no more for it
    assert "over its fair share" in pool.admit("a1", HD)
    assert pool.held("key:b") == HD and pool.held("key:a") == 3 * HD


def test_a_newcomer_waits_for_the_room_shed_for_it_until_a_segment_is_served() -> None:
    """The orchestrator frees a shed stream's room a moment after its last job: meanwhile the
    newcomer's segment is answered busy, and tries again."""
    pool = shares(2 * HD)
    for i in range(2):
        pool.join(f"a{i}", "key:a")
        pool.admit(f"a{i}", HD)
    pool.join("b", "key:b")
    assert pool.admit("b", HD) == ""  # a1 shed for it
    assert pool.refused("b") is True  # busy: a1's session still holds its room
    assert pool.refused("b") is True
    pool.served("b")
    assert pool.refused("b") is False  # busy later on: nothing is on its way any more


def test_a_shed_stream_comes_back_when_there_is_room() -> None:
    pool = shares(2 * HD)
    pool.join("a0", "key:a")
    pool.admit("a0", HD)
    pool.join("a1", "key:a")
    pool.admit("a1", HD)
    pool.join("b", "key:b")
    assert pool.admit("b", HD) == ""
    assert pool.admit("a1", HD) != ""  # shed for b
    pool.leave("b")
    assert pool.admit("a1", HD) == ""


def test_without_a_known_capacity_everyone_is_admitted() -> None:
    pool = shares(0)
    for i in range(10):
        pool.join(f"s{i}", "key:a")
        assert pool.admit(f"s{i}", 10 * HD) == ""
    assert pool.admit("never-joined", HD) == ""
    assert pool.refused("s0") is False


def test_a_busy_orchestrator_lets_a_publisher_within_its_share_shed_an_over_share_one() -> None:
    """Other gateways fill the orchestrator: the gateway's own view says there is room, the
    orchestrator says busy."""
    pool = shares(4 * HD)
    for i in range(3):
        pool.join(f"a{i}", "key:a")
        pool.admit(f"a{i}", HD)
    pool.join("b", "key:b")
    assert pool.admit("b", HD) == ""  # fits as the gateway sees it: nobody shed
    assert pool.held("key:a") == 3 * HD
    assert pool.refused("b") is True  # the orchestrator said busy: a is over its half
    assert pool.held("key:a") == 2 * HD and pool.held("key:b") == HD
    # By the gateway's count a2 fits again and is tried; the orchestrator, still full, says
    # busy, and a (over its share with it) sheds nobody: a2's segment gets its gap.
    assert pool.admit("a2", HD) == ""
    assert pool.refused("a2") is False
    assert pool.held("key:a") == 2 * HD and pool.held("key:b") == HD
    # Once b has been served, busy again and nobody over its share: its segment gets a gap.
    pool.served("b")
    assert pool.refused("b") is False


def test_a_busy_answer_to_an_over_share_publisher_sheds_nobody_else() -> None:
    pool = shares(4 * HD)
    pool.join("a0", "key:a")
    pool.admit("a0", 3 * HD)
    pool.join("b", "key:b")
    pool.admit("b", HD)
    assert pool.refused("a0") is False
    assert pool.held("key:b") == HD


@pytest.mark.parametrize("publishers", [2, 3, 5])
def test_every_publisher_within_its_share_is_admitted(publishers: int) -> None:
    """Max-min: with a greedy publisher holding everything, each newcomer asking no more than
    its share gets it."""
    capacity = 12 * HD
    pool = shares(capacity)
    for i in range(12):
        pool.join(f"greedy{i}", "key:greedy")
        pool.admit(f"greedy{i}", HD)
    for p in range(1, publishers):
        for i in range(12 // (publishers * 2)):  # well within a share
            pool.join(f"p{p}-{i}", f"key:{p}")
            assert pool.admit(f"p{p}-{i}", HD) == ""
    total = sum(pool.held(f"key:{p}") for p in range(1, publishers)) + pool.held("key:greedy")
    assert total <= capacity


# -- the whole path: a gateway's streams against a real orchestrator over loopback QUIC ------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> list[MediaEvent]:
    """10 s of 320x240 at 30 fps: its default ladder costs 4.6 Mpx/s."""
    path = make_clip(tmp_path_factory.mktemp("clip") / "clip.flv", seconds=10, size="320x240")
    return list(flv_events(path))


async def publish(gateway: Gateway, name: str, identity: str, events: list[MediaEvent]) -> None:
    """Publishes ``events`` as ``identity`` at the pace of their timestamps."""
    publisher = await gateway.start_publish(name, identity=identity)
    started = trio.current_time()
    for event in events:
        if isinstance(event, MediaPacket):
            await trio.sleep_until(started + event.dts / 1000)
        await publisher.send(event)
    await publisher.aclose()


def ended(gateway: Gateway, stream: str) -> bool:
    playback = gateway.playback(stream)
    return playback is not None and playback.stream.ended


def gaps(gateway: Gateway, stream: str) -> dict[str, int]:
    playback = gateway.playback(stream)
    assert playback is not None
    out = {}
    for rendition in ("360p", "240p"):
        text = playback.stream.media_playlist(rendition)
        assert text is not None and "#EXTINF" in text, (stream, rendition, text)
        out[rendition] = text.count("#EXT-X-GAP")
    return out


@pytest.mark.slow
@pytest.mark.solo
async def test_a_newcomer_gets_every_segment_from_a_publisher_over_its_share(
    nursery: trio.Nursery, clip: list[MediaEvent]
) -> None:
    """Capacity 1 (9.98 Mpx/s) holds two 4.6 Mpx/s streams. Publisher a has both when b
    comes: a is over its share (half), so its newest stream is left out, its session's room
    comes back at the orchestrator a moment after its last job, and b's segments, answered
    busy meanwhile, wait for it instead of failing."""
    orchestrator = Orchestrator(secret="", metrics=Metrics(), local=LocalWorker(capacity=1))
    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orchestrator.handle_connection)
    pool = OrchestratorPool([HostPort("127.0.0.1", port)])
    await nursery.start(pool.run)
    gateway = Gateway(
        transcoder=pool,
        profiles=DEFAULT_PROFILES,
        metrics=Metrics(),
        shares=TranscodeShares(capacity=pool.work_capacity),
    )
    await nursery.start(gateway.run)
    assert pool.work_capacity() == SESSION_WORK
    async with trio.open_nursery() as publishers:
        publishers.start_soon(publish, gateway, "a0", "key:a", clip)
        await trio.sleep(0.5)
        publishers.start_soon(publish, gateway, "a1", "key:a", clip)
        await trio.sleep(3)
        publishers.start_soon(publish, gateway, "b", "key:b", clip)
    with trio.fail_after(30):
        while not all(ended(gateway, s) for s in ("a0", "a1", "b")):  # noqa: ASYNC110 (no event)
            await trio.sleep(0.2)
    assert gaps(gateway, "b") == {"360p": 0, "240p": 0}
    assert gaps(gateway, "a0") == {"360p": 0, "240p": 0}
    assert min(gaps(gateway, "a1").values()) >= 2  # left out from b's arrival on
