"""A gateway killed while it records: ``lpstream dev --record`` gets SIGKILL 15 s into a 30 s
push; started again on the same store, its recovery pass closes the recording (state
``interrupted``, VOD playlists with ``EXT-X-ENDLIST``), which plays to within one segment of
the kill; the next publish of the stream is a new recording.

"The kill" is what the gateway had made when it died: the segments its own live playlists
listed. The live path lists a segment once it is cut and transcoded, a segment and the
transcode after ffmpeg pushed its first frame, so against ffmpeg's clock the recording ends
that much earlier still.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.e2e.nodes import http_get, parse_media_playlist, running_dev, start_dev
from tests.e2e.stored_media import (
    DirectoryReader,
    check_recording_in_store,
    gateway_http,
    live_master,
    play_with_ffmpeg,
    pushing,
    wait_pushed,
    wait_recordings,
)

pytestmark = pytest.mark.slow

PUSHED = 30.0
KILLED_AT = 15.0
SEGMENT = 2.0
RENDITIONS = ["source", "360p", "240p"]


def _last_listed(text: str) -> int:
    _, entries, _ = parse_media_playlist(text)
    return int(entries[-1][2].removesuffix(".ts"))


def test_a_killed_gateway_leaves_a_recording_that_plays_to_the_kill(tmp_path: Path) -> None:
    store = tmp_path / "recordings"
    stream = "crash"
    node = start_dev(tmp_path / "logs", "--record", "--record-store", store.as_uri())
    try:
        base = gateway_http(node)
        with pushing(f"{node.url('rtmp')}/live/{stream}", seconds=PUSHED, size="640x360"):
            pushed_from = time.monotonic()
            live_master(base, stream)
            [recording] = wait_recordings(base, stream, ["recording"])
            time.sleep(max(0.0, pushed_from + KILLED_AT - time.monotonic()))
            live = {
                name: _last_listed(http_get(f"{base}/hls/{stream}/{name}/index.m3u8")[1].decode())
                for name in RENDITIONS
            }
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(10)
            killed_at = time.monotonic() - pushed_from
    finally:
        code = node.stop()
    assert code == -signal.SIGKILL

    # Nothing closed it: the store holds a recording still saying so.
    left = DirectoryReader(store)
    prefix = f"{stream}/{recording['id']}/"
    assert b'"state":"recording"' in (left.get(prefix + "recording.json") or b"")

    with running_dev(
        tmp_path / "logs", "--record", "--record-store", store.as_uri(), name="dev-2"
    ) as again:
        base = gateway_http(again)
        [closed] = wait_recordings(base, stream, ["interrupted"])
        assert closed["id"] == recording["id"] and closed["ended_at"] is not None
        assert list(closed["renditions"]) == sorted(RENDITIONS)
        lasting = check_recording_in_store(left, closed, renditions=RENDITIONS)
        for name, seconds in lasting.items():
            playlist = (left.get(f"{prefix}{name}/index.m3u8") or b"").decode()
            # Every segment the gateway had listed, but the last one at most (in flight).
            assert _last_listed(playlist) >= live[name] - 1, (name, live, playlist)
            assert closed["renditions"][name]["duration"] == pytest.approx(seconds, abs=0.01)
            # Against ffmpeg's clock: the live path's own segment and transcode behind, too.
            assert killed_at - 3 * SEGMENT <= seconds <= killed_at, (name, lasting, killed_at)
        played = play_with_ffmpeg(base + closed["url"])
        assert played.seconds == pytest.approx(lasting["source"], abs=0.5), (played, lasting)

        # The next publish makes a recording of its own; the interrupted one stays as it is.
        with pushing(f"{again.url('rtmp')}/live/{stream}", seconds=4, size="640x360") as publisher:
            wait_pushed(publisher, 30)
        old, new = wait_recordings(base, stream, ["interrupted", "ended"])
        assert old == closed and new["id"] != closed["id"]
        assert new["duration"] == pytest.approx(4.0, abs=1.0)
        assert play_with_ffmpeg(base + new["url"]).seconds == pytest.approx(4.0, abs=1.0)
