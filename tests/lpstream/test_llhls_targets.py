"""Playlist targets stay sane whatever durations a bad stream hands in, and discontinuities are
listed in every rendition with a discontinuity sequence a player can rely on.

Playlists are read back as a player reads them (``playlist_of`` of ``test_llhls``).
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from lpstream.playback.hls import MAX_SEGMENT_DURATION, HlsStream, MediaPlaylist, PlaylistEntry
from lpstream.playback.llhls import LowLatencyStream
from tests.lpstream.test_llhls import (
    PART,
    Playlist,
    make_stream,
    playlist_of,
    publish_parts,
    publish_segment,
)

THREE_HOURS = 3 * 3600.0


def hold_back(playlist: Playlist) -> Decimal:
    return Decimal(playlist.server_control["PART-HOLD-BACK"])


def discontinuity_numbers(playlist: Playlist) -> dict[int, int]:
    """The discontinuity sequence number of every segment listed, as a player counts it."""
    numbers = {}
    number = playlist.discontinuity_sequence
    for index, segment in enumerate(playlist.segments):
        if segment.discontinuity and index > 0:
            number += 1
        numbers[segment.msn] = number
    return numbers


# -- targets ---------------------------------------------------------------------------------


def test_a_bogus_segment_duration_is_listed_at_most_the_cut_bound() -> None:
    stream = make_stream("source")
    publish_segment(stream, 0)
    stream.add_segment("source", 1, THREE_HOURS, b"one segment said to last three hours")
    playlist = playlist_of(stream)
    assert playlist.segments[1].duration == Decimal(f"{MAX_SEGMENT_DURATION:.3f}")
    assert playlist.target_duration == math.ceil(MAX_SEGMENT_DURATION)
    assert Decimal(playlist.server_control["CAN-SKIP-UNTIL"]) == 6 * playlist.target_duration


def test_a_bogus_part_duration_never_makes_a_part_hold_back_of_hours() -> None:
    stream = make_stream("source")
    stream.add_part("source", 0, THREE_HOURS, b"x", independent=True)
    playlist = playlist_of(stream)
    assert playlist.part_target == Decimal(f"{MAX_SEGMENT_DURATION}")
    assert hold_back(playlist) == 3 * playlist.part_target
    assert all(p.duration <= playlist.part_target for p in playlist.all_parts())
    stream.complete_segment("source", 0)
    assert playlist_of(stream).segments[0].duration <= Decimal(MAX_SEGMENT_DURATION)


def test_the_cut_bound_can_be_configured() -> None:
    stream = LowLatencyStream(
        name="s", rendition_order=("source",), target_duration=2, max_segment_duration=6.0
    )
    stream.add_segment("source", 0, 4294962.0, b"x")
    playlist = playlist_of(stream)
    assert playlist.target_duration == 6
    assert playlist.segments[0].duration == Decimal("6.000")


def test_targets_come_back_to_the_configured_ones_once_long_segments_left_the_window() -> None:
    stream = make_stream("source", window=3)
    stream.add_part("source", 0, 2.5, b"slow", independent=True)
    stream.add_part("source", 0, 2.5, b"slow", independent=False)
    stream.complete_segment("source", 0)
    long = playlist_of(stream)
    assert long.target_duration == 5
    assert long.part_target == Decimal("2.5") and hold_back(long) == Decimal("7.5")
    for seq in range(1, 4):
        publish_segment(stream, seq)
    sane = playlist_of(stream)
    assert [s.msn for s in sane.segments] == [1, 2, 3]
    assert sane.target_duration == 2
    assert sane.part_target == Decimal("0.333") and hold_back(sane) == Decimal("0.999")


def test_nothing_of_a_bad_stream_carries_into_its_restart() -> None:
    stream = make_stream("source", "360p", window=3)
    publish_segment(stream, 0)
    stream.add_segment("360p", 0, 2.0, b"low")
    stream.add_part("source", 1, THREE_HOURS, b"bogus", independent=True)
    stream.complete_segment("source", 1)
    stream.add_segment("360p", 1, THREE_HOURS, b"bogus")
    stream.end(last_seq=1)
    bad = playlist_of(stream)
    assert bad.target_duration == math.ceil(MAX_SEGMENT_DURATION)
    first = stream.next_sequence()
    stream.restart(first)
    for seq in range(first, first + 3):
        publish_segment(stream, seq)
        stream.add_segment("360p", seq, 2.0, b"low")
    for rendition in ("source", "360p"):
        playlist = playlist_of(stream, rendition)
        assert [s.msn for s in playlist.segments] == [first, first + 1, first + 2]
        assert playlist.target_duration == 2
        assert playlist.part_target == Decimal("0.333") and hold_back(playlist) == Decimal("0.999")
        assert all(s.duration <= 2 for s in playlist.segments)


def test_every_listed_part_and_segment_stays_within_the_advertised_targets() -> None:
    stream = make_stream("source", window=4)
    durations = [0.2, 0.4, 1.7, 0.1, 40.0, 0.33, 0.25, 9000.0, 0.3]
    for seq, duration in enumerate(durations):
        stream.add_part("source", seq, duration, b"p", independent=True)
        stream.add_part("source", seq, PART, b"q", independent=False)
        stream.complete_segment("source", seq)
        playlist = playlist_of(stream)
        assert all(p.duration <= playlist.part_target for p in playlist.all_parts())
        assert all(round(s.duration) <= playlist.target_duration for s in playlist.segments)
        assert hold_back(playlist) == 3 * playlist.part_target
        assert playlist.target_duration <= math.ceil(MAX_SEGMENT_DURATION)


# -- discontinuities -----------------------------------------------------------------------------


def test_a_marked_discontinuity_is_listed_in_every_rendition_whenever_it_gets_there() -> None:
    stream = make_stream("source", "360p", "240p")
    for seq in range(2):
        publish_segment(stream, seq)
        stream.add_segment("360p", seq, 2.0, b"low")
        stream.add_segment("240p", seq, 2.0, b"lower")
    stream.mark_discontinuity(2)
    publish_parts(stream, 2, 3)
    # The open segment's first part already follows the tag.
    assert playlist_of(stream).open_discontinuity
    stream.complete_segment("source", 2)
    publish_segment(stream, 3)
    stream.add_gap("240p", 2, 2.0)  # a rendition that failed still marks where the jump is
    stream.add_segment("360p", 3, 2.0, b"low")  # results out of order: held until 2 comes
    stream.add_segment("360p", 2, 2.0, b"low")
    for rendition in ("source", "360p", "240p"):
        playlist = playlist_of(stream, rendition)
        flagged = [s.msn for s in playlist.segments if s.discontinuity]
        assert flagged == [2], (rendition, playlist.lines)
        text = "\n".join(playlist.lines)
        assert "1.ts\n#EXT-X-DISCONTINUITY\n" in text


def test_a_rendition_added_after_the_mark_starts_without_a_tag_to_show() -> None:
    stream = make_stream("source")
    publish_segment(stream, 0)
    stream.mark_discontinuity(1)
    stream.add_rendition("ai", 1)
    stream.add_segment("ai", 1, 2.0, b"ai")
    stream.add_segment("ai", 2, 2.0, b"ai")
    playlist = playlist_of(stream, "ai")
    assert [s.msn for s in playlist.segments] == [1, 2]
    assert discontinuity_numbers(playlist) == {1: 0, 2: 0}


@pytest.mark.parametrize("rendition", ["source", "360p"])
def test_the_discontinuity_sequence_numbers_every_segment_the_same_on_every_reload(
    rendition: str,
) -> None:
    # RFC 8216 6.2.2: when a tag leaves the window, EXT-X-DISCONTINUITY-SEQUENCE goes up, so a
    # segment keeps its discontinuity sequence number for as long as it is listed.
    stream = make_stream("source", "360p", window=3)
    marks = {2, 4, 5}
    seen: dict[int, int] = {}
    for seq in range(12):
        if seq in marks:
            stream.mark_discontinuity(seq)
        publish_segment(stream, seq)
        stream.add_segment("360p", seq, 2.0, b"low")
        playlist = playlist_of(stream, rendition)
        for msn, number in discontinuity_numbers(playlist).items():
            assert seen.setdefault(msn, number) == number, (msn, playlist.lines)
    assert seen == {msn: sum(1 for m in marks if m <= msn) for msn in range(12)}
    assert playlist.discontinuity_sequence == 3
    assert not any(s.discontinuity for s in playlist.segments)


def test_hls_lists_marked_discontinuities_in_every_rendition_and_counts_them_out() -> None:
    stream = HlsStream(name="s", rendition_order=("source", "360p"), window=2)
    texts: list[str] = []
    for seq in range(5):
        if seq == 2:
            stream.mark_discontinuity(2)
        stream.add_segment("source", seq, 2.0, b"s")
        stream.add_segment("360p", seq, 2.0, b"l")
        text = stream.media_playlist("360p")
        assert text is not None and text == stream.media_playlist("source")
        texts.append(text)
    assert "1.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n2.ts" in texts[2]
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1\n" in texts[3]
    assert "#EXT-X-DISCONTINUITY\n" not in texts[4]


def test_hls_targets_follow_the_window_and_the_cut_bound() -> None:
    playlist = MediaPlaylist(window=2)
    playlist.append(PlaylistEntry(seq=0, duration=THREE_HOURS, uri="0.ts"))
    text = playlist.render()
    assert f"#EXT-X-TARGETDURATION:{math.ceil(MAX_SEGMENT_DURATION)}\n" in text
    assert f"#EXTINF:{MAX_SEGMENT_DURATION:.3f},\n0.ts" in text
    playlist.append(PlaylistEntry(seq=1, duration=2.0, uri="1.ts"))
    playlist.append(PlaylistEntry(seq=2, duration=2.0, uri="2.ts"))
    assert "#EXT-X-TARGETDURATION:2\n" in playlist.render()
