"""Recordings end to end: ffmpeg pushes 20 s into ``lpstream dev --record``; the recording is
read back from the store as a player finds it (an S3 server over plain HTTP, or a directory),
replayed from ``/vod/`` by ffmpeg and, from S3, by hls.js on the watch page. Then a live
stream of a gateway without ``--record`` is recorded, stopped and recorded again through
``/api/streams/{name}/record``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from benchmarks.harness.browser import chromium_path, open_browser
from benchmarks.harness.objects import running_s3
from tests.e2e.nodes import http_get, http_json, running_dev, wait_for
from tests.e2e.stored_media import (
    DirectoryReader,
    S3Reader,
    StoreReader,
    check_recording_in_store,
    gateway_http,
    live_master,
    master_renditions,
    play_with_ffmpeg,
    pushing,
    recordings_of,
    wait_pushed,
    wait_recordings,
)

pytestmark = pytest.mark.slow

SECONDS = 20.0
SIZE = "640x360"
ARTIFACTS = Path(os.environ.get("LPSTREAM_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))


@attrs.frozen
class Recorded:
    """A 20 s stream recorded by a node that still runs."""

    kind: str
    base: str
    stream: str
    live_renditions: list[str]
    """The live master's renditions, in order."""
    recording_while_live: Any
    """``outputs.recording`` of the stream in ``/api/status`` while it was live."""
    recording: dict[str, Any]
    """As ``GET /api/recordings`` lists it once the stream ended."""
    reader: StoreReader


@pytest.fixture(scope="module", params=["s3", "file"])
def recorded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Recorded]:
    kind: str = request.param
    with ExitStack() as stack:
        reader: StoreReader
        if kind == "s3":
            s3 = stack.enter_context(running_s3())  # its AWS variables reach the node
            store, reader = s3.store_url("recordings"), S3Reader(s3, "recordings")
        else:
            root = tmp_path_factory.mktemp("recordings")
            store, reader = root.as_uri(), DirectoryReader(root)
        node = stack.enter_context(
            running_dev(tmp_path_factory.mktemp(f"dev-{kind}"), "--record", "--record-store", store)
        )
        base, stream = gateway_http(node), f"show-{kind}"
        rtmp = f"{node.url('rtmp')}/live/{stream}"
        with pushing(rtmp, seconds=SECONDS, size=SIZE) as publisher:
            renditions = master_renditions(live_master(base, stream))
            outputs = http_json(f"{base}/api/status")["streams"][stream]["outputs"]
            wait_pushed(publisher, SECONDS + 30)
        [recording] = wait_recordings(base, stream, ["ended"])
        yield Recorded(
            kind=kind,
            base=base,
            stream=stream,
            live_renditions=renditions,
            recording_while_live=outputs["recording"],
            recording=recording,
            reader=reader,
        )


def test_the_recording_is_listed_with_every_rendition(recorded: Recorded) -> None:
    recording = recorded.recording
    assert recorded.live_renditions == ["source", "360p", "240p"]
    assert recorded.recording_while_live["id"] == recording["id"]
    assert recording["stream"] == recorded.stream and recording["lost_segments"] == 0
    assert list(recording["renditions"]) == sorted(recorded.live_renditions)
    for name, rendition in recording["renditions"].items():
        assert rendition["duration"] == pytest.approx(SECONDS, abs=1.0), name
        assert rendition["segments"] >= 9 and rendition["bytes"] > 0, name
    assert recording["bytes"] == sum(r["bytes"] for r in recording["renditions"].values())
    assert recording["ended_at"] > recording["started_at"]
    assert recording["url"] == f"/vod/{recorded.stream}/{recording['id']}/index.m3u8"


def test_every_playlist_in_the_store_is_vod_and_every_segment_decodes(
    recorded: Recorded,
) -> None:
    lasting = check_recording_in_store(
        recorded.reader,
        recorded.recording,
        renditions=recorded.live_renditions,
        seconds=SECONDS,
    )
    for name, seconds in lasting.items():
        assert seconds == pytest.approx(
            recorded.recording["renditions"][name]["duration"], abs=0.01
        )


def test_vod_plays_whole_in_ffmpeg(recorded: Recorded) -> None:
    played = play_with_ffmpeg(recorded.base + recorded.recording["url"])
    assert played.seconds == pytest.approx(SECONDS, abs=1.0)
    assert played.frames == pytest.approx(SECONDS * 30, abs=30)
    # Every object of /vod/ is the store's: the master served is the stored one.
    status, master = http_get(recorded.base + recorded.recording["url"])
    prefix = f"{recorded.stream}/{recorded.recording['id']}/"
    assert status == 200 and master == recorded.reader.get(prefix + "index.m3u8")


@pytest.mark.parametrize("recorded", ["s3"], indirect=True)
async def test_the_watch_page_plays_the_recording(recorded: Recorded, tmp_path: Path) -> None:
    if chromium_path() is None:
        pytest.fail("chromium is not installed: run scripts/setup")
    page_url = f"{recorded.base}/watch/{recorded.stream}?recording={recorded.recording['id']}"
    async with open_browser(tmp_path / "chromium.log") as browser:
        page = await browser.new_page(page_url)
        engine = await page.wait_for("window.player && window.player.engine", 15)
        assert str(engine).startswith("hls.js "), engine
        await page.evaluate(
            "window.fatal = []; window.player.hls.on(Hls.Events.ERROR,"
            " (e, d) => { if (d.fatal) window.fatal.push(d.details); })"
        )
        clock = "document.getElementById('video').currentTime"
        await page.wait_for(clock, 40, lambda t: t > 5)
        fatal = await page.evaluate("window.fatal")
        errors = await page.evaluate("window.player.errors")
        assert fatal == [] and not [e for e in errors if "Load" in e or "Parsing" in e], errors
        source = await page.evaluate("window.player.hls.url")
        assert source.endswith(recorded.recording["url"]), source
        duration = await page.evaluate("document.getElementById('video').duration")
        assert duration == pytest.approx(SECONDS, abs=1.0)  # a VOD: its length is known
        await trio.Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(ARTIFACTS / "watch-recording.png")


def _stored_source_segments(base: str, stream: str) -> int:
    listed = recordings_of(base, stream)
    return int(listed[0]["renditions"].get("source", {}).get("segments", 0)) if listed else 0


def _api(method: str, url: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_api_starts_stops_and_restarts_a_recording(tmp_path: Path) -> None:
    store = tmp_path / "recordings"
    with running_dev(tmp_path / "logs", "--record-store", store.as_uri()) as node:
        base, stream = gateway_http(node), "onair"
        assert _api("POST", f"{base}/api/streams/{stream}/record")[0] == 404  # not live
        with pushing(f"{node.url('rtmp')}/live/{stream}", seconds=12, size="320x240") as publisher:
            live_master(base, stream)
            assert _api("GET", f"{base}/api/streams/{stream}/record")[1]["recording"] is None
            assert recordings_of(base, stream) == []  # no --record: nothing recorded yet
            status, started = _api("POST", f"{base}/api/streams/{stream}/record")
            assert status == 201, started
            first = started["recording"]
            assert started["url"] == f"/vod/{stream}/{first}/index.m3u8"
            assert _api("POST", f"{base}/api/streams/{stream}/record") == (200, started)
            assert _api("GET", f"{base}/api/streams/{stream}/record")[1]["recording"] == first
            wait_for(
                lambda: _stored_source_segments(base, stream) >= 1,
                15,
                "a stored segment of the first recording",
            )
            stopped = _api("DELETE", f"{base}/api/streams/{stream}/record")
            assert stopped == (200, {"stream": stream, "recording": first})
            wait_recordings(base, stream, ["ended"])
            assert _api("DELETE", f"{base}/api/streams/{stream}/record")[0] == 404
            status, restarted = _api("POST", f"{base}/api/streams/{stream}/record")
            assert status == 201 and restarted["recording"] != first, restarted
            wait_pushed(publisher, 40)
        one, two = wait_recordings(base, stream, ["ended", "ended"])
        assert [one["id"], two["id"]] == [first, restarted["recording"]]
        assert one["ended_at"] <= two["started_at"] + 1.0
        for recording in (one, two):
            assert recording["renditions"]["source"]["segments"] >= 1, recording
            played = play_with_ffmpeg(base + recording["url"])
            assert played.seconds >= 1.5, (recording, played)
        # Together they hold no more than the stream: the stop came between them.
        assert one["duration"] + two["duration"] <= 12.0 + 1.0
        assert sorted(p.name for p in store.iterdir()) == [stream]
