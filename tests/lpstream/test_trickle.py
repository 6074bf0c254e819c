"""``SegmentBuffer.read_from`` and the worker's blocking reader over it: a reader on another
thread gets all that piled up in one trip to the trio thread, however many chunks it came in."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from lpstream.errors import MediaError
from lpstream.trickle import SegmentBuffer
from lpstream.worker.local import _TrickleReader


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
    reader = _TrickleReader(buffer, trio.lowlevel.current_trio_token())

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
    reader = _TrickleReader(buffer, trio.lowlevel.current_trio_token())
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
