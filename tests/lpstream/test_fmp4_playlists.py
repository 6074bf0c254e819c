"""Fragmented-MP4 renditions in the playlists: EXT-X-MAP where RFC 8216 wants it (the first
segment, a changed init section, after a discontinuity), ``.m4s`` segments and parts, the
version, init sections kept while referred to, lookups by format, and the stored playlists
(recordings and the origin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lpstream.playback import init_sections, llhls_rendition
from lpstream.playback.hls import KEEP_EXTRA, MediaPlaylist, PlaylistEntry, RenditionInfo
from lpstream.playback.init_sections import MAX_KEPT_INITS, InitSection, InitSections
from lpstream.playback.listed import ListedSegment
from lpstream.playback.llhls import LowLatencyStream, PartReady, Refused, WaitForUpdate
from lpstream.storage.origin import OriginObjects
from lpstream.storage.recordings import RecordingObjects
from lpstream.storage.store import content_type_of
from lpstream.storage.stored_hls import StoredRendition
from tests.test_layout import IO_MODULES, imported_modules

INIT_A = b"ftyp-A moov-A"
INIT_B = b"ftyp-B moov-B"


def stream(*, window: int = 6, target_duration: int = 2, listener: Any = None) -> LowLatencyStream:
    return LowLatencyStream(
        name="s",
        rendition_order=("source",),
        part_target=0.5,
        window=window,
        target_duration=target_duration,
        listener=listener,
    )


def media(seq: int, index: int = 0) -> bytes:
    return f"moof+mdat {seq}.{index}".encode()


def publish(s: LowLatencyStream, seq: int, parts: int = 4) -> None:
    for index in range(parts):
        s.add_part("source", seq, 0.5, media(seq, index), independent=index == 0)
    s.complete_segment("source", seq)


def lines_of(s: LowLatencyStream) -> list[str]:
    text = s.media_playlist("source")
    assert text is not None
    return text.splitlines()


def maps_before(lines: list[str]) -> list[tuple[str, str]]:
    """(EXT-X-MAP line, the first URI it applies to: a part's or a segment's)."""
    found = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-MAP:"):
            following = lines[i + 1]
            uri = following.split('URI="')[1].split('"')[0] if "URI=" in following else None
            found.append((line, uri or next(x for x in lines[i:] if not x.startswith("#"))))
    return found


def test_the_first_segment_gets_the_map_and_every_uri_is_m4s() -> None:
    s = stream()
    s.set_init("source", INIT_A)
    publish(s, 0)
    s.add_part("source", 1, 0.5, media(1), independent=True)
    lines = lines_of(s)
    assert "#EXT-X-VERSION:6" in lines
    assert maps_before(lines) == [('#EXT-X-MAP:URI="init0.mp4"', "0.0.m4s")]
    assert lines.index('#EXT-X-MAP:URI="init0.mp4"') < lines.index(
        '#EXT-X-PART:DURATION=0.5,URI="0.0.m4s",INDEPENDENT=YES'
    )
    assert [x for x in lines if not x.startswith("#")] == ["0.m4s"]
    assert '#EXT-X-PART:DURATION=0.5,URI="1.0.m4s",INDEPENDENT=YES' in lines
    assert '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="1.1.m4s"' in lines
    assert not any(".ts" in line for line in lines)
    assert s.init("source", 0) == INIT_A


def test_only_open_parts_get_the_map_before_them() -> None:
    s = stream()
    s.set_init("source", INIT_A)
    s.add_part("source", 0, 0.5, media(0), independent=True)
    lines = lines_of(s)
    assert maps_before(lines) == [('#EXT-X-MAP:URI="init0.mp4"', "0.0.m4s")]
    assert "#EXT-X-VERSION:6" in lines


def test_a_changed_init_makes_a_new_number_and_a_map_and_equal_bytes_keep_theirs() -> None:
    s = stream()
    s.set_init("source", INIT_A)
    publish(s, 0)
    s.set_init("source", INIT_A)  # the same bytes again: nothing changes
    publish(s, 1)
    s.set_init("source", INIT_B)
    publish(s, 2)
    s.set_init("source", INIT_A)  # back to A, which is still kept: its number again
    s.add_segment("source", 3, 2.0, media(3))
    lines = lines_of(s)
    # Segment 0 is too far from the live edge to list its parts; 2 still lists them.
    assert maps_before(lines) == [
        ('#EXT-X-MAP:URI="init0.mp4"', "0.m4s"),
        ('#EXT-X-MAP:URI="init1.mp4"', "2.0.m4s"),
        ('#EXT-X-MAP:URI="init0.mp4"', "3.m4s"),
    ]
    assert s.init("source", 0) == INIT_A and s.init("source", 1) == INIT_B
    assert s.init("source", 2) is None


def test_a_discontinuity_repeats_the_map_even_for_the_same_init() -> None:
    s = stream()
    s.set_init("source", INIT_A)
    publish(s, 0)
    s.mark_discontinuity(1)
    publish(s, 1)
    lines = lines_of(s)
    at = lines.index("#EXT-X-DISCONTINUITY")
    assert lines[at + 1] == '#EXT-X-MAP:URI="init0.mp4"'
    assert [m for m, _ in maps_before(lines)] == ['#EXT-X-MAP:URI="init0.mp4"'] * 2


def test_a_restart_puts_the_map_after_its_discontinuity_before_the_open_parts() -> None:
    s = stream()
    s.set_init("source", INIT_A)
    publish(s, 0)
    s.restart(s.next_sequence())
    s.set_init("source", INIT_B)
    s.add_part("source", 1, 0.5, media(1), independent=True)
    lines = lines_of(s)
    at = lines.index("#EXT-X-DISCONTINUITY")
    assert lines[at + 1 : at + 3] == [
        '#EXT-X-MAP:URI="init1.mp4"',
        '#EXT-X-PART:DURATION=0.5,URI="1.0.m4s",INDEPENDENT=YES',
    ]


def test_results_out_of_order_keep_the_init_they_were_handed_in_with() -> None:
    s = stream()
    s.set_init("source", INIT_A)
    s.add_segment("source", 1, 2.0, media(1))  # waits for 0
    s.set_init("source", INIT_B)
    s.add_segment("source", 0, 2.0, media(0))
    lines = lines_of(s)
    assert maps_before(lines) == [
        ('#EXT-X-MAP:URI="init1.mp4"', "0.m4s"),
        ('#EXT-X-MAP:URI="init0.mp4"', "1.m4s"),
    ]


def test_later_parts_of_a_segment_follow_its_first_part() -> None:
    s = stream()
    s.set_init("source", INIT_A)
    s.add_part("source", 0, 0.5, media(0, 0), independent=True)
    s.set_init("source", INIT_B)  # mid-segment: applies from the next segment
    s.add_part("source", 0, 0.5, media(0, 1), independent=False)
    s.complete_segment("source", 0)
    publish(s, 1)
    assert maps_before(lines_of(s)) == [
        ('#EXT-X-MAP:URI="init0.mp4"', "0.0.m4s"),
        ('#EXT-X-MAP:URI="init1.mp4"', "1.0.m4s"),
    ]


def test_a_delta_update_maps_its_first_segment_after_the_skip() -> None:
    s = stream(target_duration=1, window=12)
    s.set_init("source", INIT_A)
    for seq in range(10):
        publish(s, seq, parts=2)
    answer = s.answer_playlist("source", {"_HLS_skip": "YES"})
    assert not isinstance(answer, (Refused, WaitForUpdate))
    lines = answer.text.splitlines()
    skip = next(x for x in lines if x.startswith("#EXT-X-SKIP:"))
    skipped = int(skip.split("=")[1])
    assert skipped > 0
    assert lines[lines.index(skip) + 1] == '#EXT-X-MAP:URI="init0.mp4"'
    assert "#EXT-X-VERSION:9" in lines


def test_a_gap_in_an_fmp4_rendition_is_version_8_and_keeps_the_map_once() -> None:
    s = stream()
    s.set_init("source", INIT_A)
    publish(s, 0)
    s.add_gap("source", 1, 2.0)
    publish(s, 2)
    lines = lines_of(s)
    assert "#EXT-X-VERSION:8" in lines
    assert [m for m, _ in maps_before(lines)] == ['#EXT-X-MAP:URI="init0.mp4"']
    assert "1.m4s" in lines


def test_an_mpeg_ts_rendition_is_unchanged() -> None:
    s = stream()
    publish(s, 0)
    lines = lines_of(s)
    assert "#EXT-X-VERSION:3" in lines and not maps_before(lines)
    assert [x for x in lines if not x.startswith("#")] == ["0.ts"]


def test_bytes_are_found_only_in_their_format() -> None:
    s = stream()
    s.set_init("source", INIT_A)
    publish(s, 0)
    s.add_part("source", 1, 0.5, media(1), independent=True)
    whole = b"".join(media(0, i) for i in range(4))
    assert s.segment("source", 0, fmp4=True) == whole
    assert s.segment("source", 0) == whole
    assert s.segment("source", 0, fmp4=False) is None
    assert s.part("source", 0, 2, fmp4=True) == media(0, 2)
    assert s.part("source", 0, 2, fmp4=False) is None
    assert s.answer_part("source", 0, 1, fmp4=True) == PartReady(data=media(0, 1), fmp4=True)
    assert isinstance(s.answer_part("source", 0, 1, fmp4=False), Refused)
    # The preload-hinted part: waited for as .m4s, refused at once as .ts.
    assert isinstance(s.answer_part("source", 1, 1, fmp4=True), WaitForUpdate)
    refused = s.answer_part("source", 1, 1, fmp4=False)
    assert isinstance(refused, Refused) and refused.code == 404


def test_init_sections_are_forgotten_once_nothing_refers_to_them() -> None:
    s = stream(window=2)
    s.set_init("source", INIT_A)
    publish(s, 0)
    s.set_init("source", INIT_B)
    for seq in range(1, 9):
        publish(s, seq)
    # Segment 0 left the window and the bytes kept beyond it: its init section went too.
    assert s.segment("source", 0) is None
    assert s.init("source", 0) is None
    assert s.init("source", 1) == INIT_B


def test_init_sections_per_rendition_are_bounded() -> None:
    inits = InitSections()
    for n in range(MAX_KEPT_INITS + 5):
        inits.set(f"init {n}".encode())
    kept = [n for n in range(MAX_KEPT_INITS + 5) if inits.get(n) is not None]
    assert len(kept) == MAX_KEPT_INITS and kept[-1] == MAX_KEPT_INITS + 4
    assert inits.current == MAX_KEPT_INITS + 4


def test_the_listener_gets_the_init_section_with_each_segment() -> None:
    heard: list[ListedSegment] = []
    s = stream(listener=heard.append)
    s.set_init("source", INIT_A)
    publish(s, 0)
    s.add_gap("source", 1, 2.0)
    assert heard[0].init is not None
    assert (heard[0].init.number, heard[0].init.data, heard[0].init.uri) == (0, INIT_A, "init0.mp4")
    assert heard[0].data == b"".join(media(0, i) for i in range(4))
    assert heard[1].data is None


def test_the_plain_media_playlist_lists_maps_too() -> None:
    playlist = MediaPlaylist(window=3)
    for seq, init in enumerate([0, 0, 1, 1]):
        playlist.append(PlaylistEntry(seq=seq, duration=2.0, uri=f"{seq}.m4s", init=init))
    lines = playlist.render().splitlines()
    assert "#EXT-X-VERSION:6" in lines
    # Segment 0 slid out: the window opens on 1, which gets init0's map again.
    assert maps_before(lines) == [
        ('#EXT-X-MAP:URI="init0.mp4"', "1.m4s"),
        ('#EXT-X-MAP:URI="init1.mp4"', "2.m4s"),
    ]


INFO = RenditionInfo(name="source", width=64, height=36, codecs="hvc1.1.6.L93.B0", bandwidth=1)


def listed(seq: int, init: InitSection | None) -> ListedSegment:
    return ListedSegment(
        rendition="source", seq=seq, duration=2.0, data=media(seq), info=INFO, init=init
    )


SECTION_A = InitSection(number=0, data=INIT_A)
SECTION_B = InitSection(number=1, data=INIT_B)


def test_a_stored_fmp4_playlist_maps_its_first_entry_and_after_a_loss() -> None:
    rendition = StoredRendition("source")
    rendition.add(listed(0, SECTION_A), 10)
    rendition.add(listed(1, SECTION_A), 10)
    rendition.lose()
    rendition.add(listed(3, SECTION_A), 10)
    lines = rendition.render_media(playlist_type="VOD", ended=True).splitlines()
    assert "#EXT-X-VERSION:6" in lines
    assert maps_before(lines) == [
        ('#EXT-X-MAP:URI="init0.mp4"', "0.m4s"),
        ('#EXT-X-MAP:URI="init0.mp4"', "3.m4s"),
    ]
    assert lines[lines.index("#EXT-X-DISCONTINUITY") + 1] == '#EXT-X-MAP:URI="init0.mp4"'


def test_recording_and_origin_keys_of_an_fmp4_rendition() -> None:
    recording = RecordingObjects(
        stream="cam", id="20261207T110000Z", started_at=0.0, rendition_order=("source",)
    )
    assert recording.segment_key(listed(4, SECTION_A)) == "cam/20261207T110000Z/source/4.m4s"
    assert recording.init_key(listed(4, SECTION_A)) == "cam/20261207T110000Z/source/init0.mp4"
    assert recording.segment_key(listed(4, None)) == "cam/20261207T110000Z/source/4.ts"
    assert recording.init_key(listed(4, None)) is None
    origin = OriginObjects(stream="cam", rendition_order=("source",))
    assert origin.segment_key(listed(4, SECTION_A)) == "cam/source/4.m4s"
    assert origin.init_key(listed(4, SECTION_A)) == "cam/source/init0.mp4"
    assert (content_type_of("x/4.m4s"), content_type_of("x/init0.mp4")) == (
        "video/iso.segment",
        "video/mp4",
    )


def test_the_origin_deletes_an_init_section_with_its_last_segment() -> None:
    origin = OriginObjects(stream="cam", rendition_order=("source",), window=1)
    _, deleted = origin.stored(listed(0, SECTION_A), 10)
    for seq in range(1, 1 + 1 + KEEP_EXTRA):  # the window and the segments kept beyond it
        _, gone = origin.stored(listed(seq, SECTION_B), 10)
        deleted += gone
    assert deleted == ["cam/source/0.m4s", "cam/source/init0.mp4"]
    text = origin.renditions["source"].render_media(window=1)
    assert '#EXT-X-MAP:URI="init1.mp4"' in text and "init0" not in text


def test_the_new_playback_modules_do_no_io() -> None:
    for module in (init_sections, llhls_rendition):
        used = {name.split(".")[0] for name in imported_modules(Path(module.__file__ or ""))}
        assert not used & IO_MODULES, module.__name__
