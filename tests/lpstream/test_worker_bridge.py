"""The worker thread's bridges to trio (``lpstream.worker.bridge``): ``SegmentBuffer.read_from``
and the blocking reader over it (a reader on another thread gets all that piled up in one trip,
however many chunks it came in); the relay pump (output in order, the thread never waiting for
a send unless the backlog is full, a failed send raised in the thread)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from lpstream.errors import MediaError
from lpstream.trickle import SegmentBuffer
from lpstream.worker.bridge import RelayPump, TrickleReader


async def test_read_from_joins_what_is_in_waits_for_more_and_ends_at_the_close() -> None:
    buffer = SegmentBuffer()
    for chunk in (b"ab", b"cd", b"e"):
        buffer.append(chunk)
    assert await buffer.read_from(0) == (b"abcde", 3)
    assert await buffer.read_from(1) == (b"cde", 3)
    got: list[tuple[bytes, int]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _collect(buffer, 3, got))
        await trio.testing.wait_all_tasks_blocked()
        assert not got  # nothing new: it waits
        buffer.append(b"f")
    assert got == [(b"f", 4)]
    buffer.close()
    assert await buffer.read_from(4) == (b"", 4)


async def _collect(buffer: SegmentBuffer, index: int, got: list[tuple[bytes, int]]) -> None:
    got.append(await buffer.read_from(index))


async def test_read_from_a_failed_upload_raises() -> None:
    buffer = SegmentBuffer()
    buffer.append(b"ab")
    buffer.fail(ConnectionError("reset"))
    assert await buffer.read_from(0) == (b"ab", 1)  # what came is still read
    with pytest.raises(MediaError, match="segment upload failed: reset"):
        await buffer.read_from(1)


class CountingBuffer(SegmentBuffer):
    trips: int = 0

    async def read_from(self, index: int) -> tuple[bytes, int]:
        CountingBuffer.trips += 1
        return await super().read_from(index)


async def test_the_reader_takes_a_thousand_chunks_in_one_trip() -> None:
    buffer = CountingBuffer()
    data = bytes(range(256)) * 40
    for start in range(0, len(data), 10):
        buffer.append(data[start : start + 10])
    buffer.close()
    reader = TrickleReader(buffer, trio.lowlevel.current_trio_token())

    def read_all() -> bytes:
        out = bytearray()
        while block := reader.read(4096):
            out += block
        return bytes(out)

    assert await trio.to_thread.run_sync(read_all) == data
    assert CountingBuffer.trips == 2  # everything, then the end


async def test_a_stopped_reader_sees_the_end() -> None:
    buffer = SegmentBuffer()
    buffer.append(b"abc")
    reader = TrickleReader(buffer, trio.lowlevel.current_trio_token())
    first_read = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def read_twice() -> tuple[bytes, bytes]:
        first = reader.read(10)
        trio.from_thread.run_sync(first_read.set, trio_token=token)
        return first, reader.read(10)  # waits for more: nothing comes

    async with trio.open_nursery() as nursery:

        async def run() -> None:
            assert await trio.to_thread.run_sync(read_twice) == (b"abc", b"")

        nursery.start_soon(run)
        await first_read.wait()
        scope = reader._waiting
        while reader._waiting is scope:  # noqa: ASYNC110 (the thread's second read begins)
            await trio.sleep(0.005)
        reader.stop()  # the job was cancelled while the reader waited for more


class GatedRelay:
    """A requester that takes each chunk only once ``gate`` is set; fails chunk ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.gate = trio.Event()
        self.chunks: list[tuple[int, bytes]] = []
        self.fail_at = fail_at

    async def start(self, renditions: object) -> None:
        pass

    async def data(self, track: int, payload: bytes) -> None:
        await self.gate.wait()
        if len(self.chunks) == self.fail_at:
            raise ConnectionError("the requester went away")
        self.chunks.append((track, payload))


async def test_the_thread_queues_its_output_without_waiting_and_it_goes_out_in_order() -> None:
    relay = GatedRelay()
    pump = RelayPump(relay, trio.lowlevel.current_trio_token(), backlog=32)
    sent = [(i % 2, bytes([i]) * 10) for i in range(20)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)

        # Nothing is taken until the gate opens: a thread waiting on each send would hang here.
        def produce() -> None:
            for index, data in sent:
                pump.data(index, data)

        await trio.to_thread.run_sync(produce)
        assert relay.chunks == []
        relay.gate.set()
        await pump.drain()
    assert relay.chunks == sent


async def test_past_the_backlog_the_thread_waits_for_the_requester() -> None:
    relay = GatedRelay()
    pump = RelayPump(relay, trio.lowlevel.current_trio_token(), backlog=2)
    queued: list[int] = []

    def produce() -> None:
        for i in range(5):
            pump.data(0, bytes([i]))
            queued.append(i)

    async def produce_then_drain() -> None:
        await trio.to_thread.run_sync(produce)
        await pump.drain()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)
        nursery.start_soon(produce_then_drain)
        while len(queued) < 2:  # noqa: ASYNC110 (the thread's progress)
            await trio.sleep(0.01)
        await trio.sleep(0.2)
        assert queued == [0, 1]  # the third waits for room
        relay.gate.set()
    assert [c for _, c in relay.chunks] == [bytes([i]) for i in range(5)]


async def test_a_failed_send_is_raised_in_the_thread_and_by_drain() -> None:
    relay = GatedRelay(fail_at=1)
    relay.gate.set()
    pump = RelayPump(relay, trio.lowlevel.current_trio_token(), backlog=1)

    def produce() -> None:
        for i in range(10):
            pump.data(0, bytes([i]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)
        with pytest.raises(ConnectionError, match="went away"):
            await trio.to_thread.run_sync(produce)
        with pytest.raises(ConnectionError, match="went away"):
            await pump.drain()
    assert relay.chunks == [(0, b"\x00")]
