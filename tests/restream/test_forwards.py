"""A stream's forwards: adding, refusing, listing, routing segments, removing."""

from __future__ import annotations

import pytest
import trio

from lpstream.errors import ProtocolError
from lpstream.playback.listed import ListedSegment
from lpstream.restream import Forwards, ForwardSettings, ForwardState
from tests.restream.receivers import wait_status

SETTINGS = ForwardSettings(connect_timeout=1, backoff_initial=0.05, backoff_max=0.1)


async def closed_port() -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    return port


def refusal(forwards: Forwards, url: str, rendition: str = "source", **kw: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        forwards.add(url, rendition, **kw)  # type: ignore[arg-type]
    return info.value


async def test_forwards_are_added_refused_routed_and_removed() -> None:
    port = await closed_port()
    url = f"rtmp://127.0.0.1:{port}/live/key-1"
    async with trio.open_nursery() as nursery:
        forwards = Forwards(stream="cam", nursery=nursery, settings=SETTINGS, limit=2)
        source = forwards.add(url, "source", renditions=("source", "360p"))
        small = forwards.add(f"rtmp://127.0.0.1:{port}/live/key-2", "360p")

        bad = refusal(forwards, "http://example.com/x")
        assert bad.code == 400 and "rtmp://" in str(bad)
        assert refusal(forwards, url, "../x").code == 400
        unknown = refusal(forwards, url, "1080p", renditions=("source", "360p"))
        assert unknown.code == 400 and "source, 360p" in str(unknown)
        duplicate = refusal(forwards, url, "source")
        assert duplicate.code == 409 and "key-1" not in str(duplicate)
        full = refusal(forwards, f"rtmp://127.0.0.1:{port}/live/key-3", "source")
        assert full.code == 409 and "forward limit 2" in str(full)

        # Nothing listens: both retry, and the segments wait for them.
        await wait_status(source, lambda s: s.state == "retrying" and s.reconnects >= 1)
        forwards.offer(ListedSegment(rendition="source", seq=7, duration=2.0, data=b"ts"))
        forwards.offer(ListedSegment(rendition="source", seq=8, duration=2.0, data=None))
        by_id = {s.id: s for s in forwards.statuses()}
        assert (by_id[source.id].queued, by_id[small.id].queued) == (1, 0)
        assert all(s.url.endswith("/live/****") for s in by_id.values())

        with pytest.raises(ProtocolError) as missing:
            forwards.remove("nope")
        assert missing.value.code == 404
        removed = forwards.remove(source.id)
        assert removed.id == source.id
        with trio.fail_after(5):
            await source.wait_state(ForwardState.STOPPED)
        assert [s.id for s in forwards.statuses()] == [small.id]

        forwards.close()
        assert forwards.statuses() == []
    assert small.state is ForwardState.STOPPED
