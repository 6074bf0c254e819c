"""Playlists over stored segments: lost segments left out behind a discontinuity, the media
sequence counting stored entries, the live window's discontinuity sequence, recordings'
EVENT/VOD playlists, master and manifest, and the origin's deletions."""

from __future__ import annotations

import msgspec
import pytest

from lpstream.playback.hls import RenditionInfo
from lpstream.playback.listed import ListedSegment
from lpstream.storage.origin import OriginObjects
from lpstream.storage.recordings import (
    Manifest,
    RecordingObjects,
    check_recording_id,
    close_event_playlist,
    new_recording_id,
    playlist_duration,
    recording_prefix,
)
from lpstream.storage.store import InvalidKey
from lpstream.storage.stored_hls import StoredRendition

INFO = RenditionInfo(name="source", width=640, height=360, codecs="avc1.64001e", bandwidth=1000)


def listed(seq: int, rendition: str = "source", *, disc: bool = False) -> ListedSegment:
    info = RenditionInfo(
        name=rendition, width=640, height=360, codecs="avc1.64001e", bandwidth=1000
    )
    return ListedSegment(
        rendition=rendition, seq=seq, duration=2.0, data=b"x" * 100, discontinuity=disc, info=info
    )


def uris(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_a_lost_segment_is_left_out_behind_a_discontinuity() -> None:
    rendition = StoredRendition("source")
    rendition.add(listed(0), 100)
    rendition.lose()
    rendition.add(listed(2), 100)
    text = rendition.render_media(playlist_type="VOD", ended=True)
    assert uris(text) == ["0.ts", "2.ts"]
    lines = text.splitlines()
    assert lines[lines.index("2.ts") - 2] == "#EXT-X-DISCONTINUITY"
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in lines and lines[-1] == "#EXT-X-ENDLIST"
    assert rendition.lost == 1 and rendition.bytes == 200
    assert playlist_duration(text) == (2, 4.0)


def test_the_live_window_counts_stored_entries_and_slid_out_discontinuities() -> None:
    rendition = StoredRendition("source")
    for seq in range(5):
        if seq == 2:
            rendition.lose()
            continue
        rendition.add(listed(seq), 100)
    # Stored: 0, 1, 3 (after a discontinuity), 4; a window of 2 shows 3 and 4.
    text = rendition.render_media(window=2)
    assert uris(text) == ["3.ts", "4.ts"]
    assert "#EXT-X-MEDIA-SEQUENCE:2" in text  # the third stored entry, not live seq 3
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in text  # 3's tag is not shown: it counts
    assert "#EXT-X-DISCONTINUITY\n" not in text
    assert "#EXT-X-PLAYLIST-TYPE" not in text and "#EXT-X-ENDLIST" not in text
    window3 = rendition.render_media(window=3)
    assert uris(window3) == ["1.ts", "3.ts", "4.ts"]
    assert "#EXT-X-DISCONTINUITY-SEQUENCE" not in window3 and "#EXT-X-DISCONTINUITY\n" in window3


def test_the_first_entry_never_carries_a_discontinuity() -> None:
    rendition = StoredRendition("source")
    rendition.lose()
    rendition.add(listed(7, disc=True), 100)
    assert not rendition.entries[0].discontinuity
    assert "DISCONTINUITY" not in rendition.render_media(playlist_type="EVENT")


def test_a_recording_writes_segment_playlists_then_master_then_a_vod_end() -> None:
    objects = RecordingObjects(
        stream="cam", id="20261207T110000Z", started_at=1000.0, rendition_order=("source", "360p")
    )
    assert objects.prefix == "cam/20261207T110000Z/"
    (start,) = objects.start()
    assert start.key == "cam/20261207T110000Z/recording.json"
    assert Manifest.decode(start.data).state == "recording"
    assert objects.segment_key(listed(3)) == "cam/20261207T110000Z/source/3.ts"
    writes, deletes = objects.stored(listed(3), 100)
    assert deletes == []
    assert writes[0].key == "cam/20261207T110000Z/source/index.m3u8"
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in writes[0].data.decode()
    assert not any(w.key.endswith("/index.m3u8") and w.key.count("/") == 2 for w in writes)
    writes, _ = objects.stored(listed(3, "360p"), 50)
    keys = [w.key for w in writes]
    assert keys[:2] == ["cam/20261207T110000Z/360p/index.m3u8", "cam/20261207T110000Z/index.m3u8"]
    master = writes[1].data.decode()
    assert uris(master) == ["source/index.m3u8", "360p/index.m3u8"]
    objects.lost("360p")
    final = {w.key: w for w in objects.finish(1010.0)}
    for name in ("source", "360p"):
        text = final[f"cam/20261207T110000Z/{name}/index.m3u8"].data.decode()
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
    manifest = Manifest.decode(final["cam/20261207T110000Z/recording.json"].data)
    assert manifest.state == "ended" and manifest.ended_at == 1010.0
    assert manifest.lost_segments == 1 and manifest.total_bytes == 150
    assert manifest.public()["url"] == "/vod/cam/20261207T110000Z/index.m3u8"


def test_an_event_playlist_is_closed_as_vod() -> None:
    rendition = StoredRendition("source")
    rendition.add(listed(0), 1)
    rendition.add(listed(1), 1)
    closed = close_event_playlist(rendition.render_media(playlist_type="EVENT"))
    assert closed == rendition.render_media(playlist_type="VOD", ended=True)
    assert close_event_playlist(closed) == closed


def test_the_origin_keeps_a_window_and_deletes_what_fell_far_behind() -> None:
    origin = OriginObjects(stream="cam", rendition_order=("source",), window=2)
    deleted: list[str] = []
    for seq in range(10):
        writes, gone = origin.stored(listed(seq), 100)
        deleted += gone
        assert writes[0].key == "cam/source/index.m3u8"
        assert writes[0].cache_control == "public, max-age=1"
    assert deleted == ["cam/source/0.ts", "cam/source/1.ts", "cam/source/2.ts", "cam/source/3.ts"]
    text = origin.finish(0.0)[0].data.decode()
    assert uris(text) == ["8.ts", "9.ts"] and "#EXT-X-MEDIA-SEQUENCE:8" in text
    assert text.endswith("#EXT-X-ENDLIST\n")


@pytest.mark.parametrize("bad", ["..", "../x", "a/b", "%2f", "x" * 200, "", ".hidden"])
def test_bad_stream_names_make_no_key(bad: str) -> None:
    with pytest.raises(InvalidKey):
        recording_prefix(bad, "20261207T110000Z")


@pytest.mark.parametrize(
    "bad", ["..", "a/b", "%2f", "20261207T110000Z/..", "20261207T110000Z" * 20, "", "2026"]
)
def test_bad_recording_ids_make_no_key(bad: str) -> None:
    with pytest.raises(InvalidKey):
        check_recording_id(bad)
    with pytest.raises(InvalidKey):
        recording_prefix("cam", bad)


def test_recording_ids_are_start_times_made_unique() -> None:
    assert new_recording_id(0.0) == "19700101T000000Z"
    assert new_recording_id(0.0, taken=1) == "19700101T000000Z-2"
    assert check_recording_id(new_recording_id(1796641791.5, taken=3)) == "20261207T110951Z-4"


def test_a_manifest_from_elsewhere_with_more_fields_still_reads() -> None:
    data = msgspec.json.encode(
        {"stream": "a", "id": "20261207T110000Z", "state": "ended", "started_at": 1.0, "x": 2}
    )
    assert Manifest.decode(data).duration == 0.0


def test_the_master_lists_source_first_whatever_arrived_first() -> None:
    objects = RecordingObjects(
        stream="cam", id="20261207T110000Z", started_at=0.0, rendition_order=("source", "360p")
    )
    objects.stored(listed(0, "360p"), 10)
    writes, _ = objects.stored(listed(0), 10)
    master = next(w for w in writes if w.key == "cam/20261207T110000Z/index.m3u8")
    assert uris(master.data.decode()) == ["source/index.m3u8", "360p/index.m3u8"]
    origin = OriginObjects(stream="cam", rendition_order=("source", "360p"))
    origin.stored(listed(0, "360p"), 10)
    writes, _ = origin.stored(listed(0), 10)
    assert uris(writes[-1].data.decode()) == ["source/index.m3u8", "360p/index.m3u8"]
