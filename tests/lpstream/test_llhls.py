"""LL-HLS playlist state: parts, preload hints, blocking reload, delta updates and reports.

Playlists are checked the way a player reads them: the text is parsed back (``parse``) and
the tags and values are compared with what was handed in.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lpstream.config import PlaybackSection
from lpstream.playback import llhls
from lpstream.playback.hls import KEEP_EXTRA, RenditionInfo
from lpstream.playback.llhls import (
    LowLatencyPlaylist,
    LowLatencyStream,
    PartReady,
    PlaylistReady,
    PlaylistRequest,
    Refused,
    SkipRequest,
    WaitForUpdate,
    part_uri,
)
from tests.test_layout import IO_MODULES, imported_modules

PART = 0.25
"""Part duration used by most tests: eight parts make a 2 s segment."""

PART_TARGET = 0.333
"""The part target these playlist tests are written for (parts of a third of a second)."""

# -- a small playlist reader ----------------------------------------------------------------


@attrs.frozen
class Part:
    msn: int
    index: int
    duration: Decimal
    uri: str
    independent: bool


@attrs.frozen
class Segment:
    msn: int
    duration: Decimal
    uri: str
    gap: bool
    discontinuity: bool
    parts: tuple[Part, ...]


@attrs.frozen
class Playlist:
    lines: tuple[str, ...]
    version: int
    target_duration: int
    media_sequence: int
    discontinuity_sequence: int
    server_control: dict[str, str]
    part_target: Decimal
    skip: dict[str, str] | None
    segments: tuple[Segment, ...]
    open_parts: tuple[Part, ...]
    open_discontinuity: bool
    hint: dict[str, str] | None
    reports: tuple[dict[str, str], ...]
    endlist: bool

    @property
    def skipped(self) -> int:
        return 0 if self.skip is None else int(self.skip["SKIPPED-SEGMENTS"])

    def all_parts(self) -> list[Part]:
        return [p for s in self.segments for p in s.parts] + list(self.open_parts)


def attributes(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', text)}


def parse(text: str) -> Playlist:
    """Reads a media playlist as a player would: sequence numbers count from the header."""
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    tags: dict[str, str] = {}
    segments: list[Segment] = []
    parts: list[Part] = []
    skip: dict[str, str] | None = None
    hint: dict[str, str] | None = None
    reports: list[dict[str, str]] = []
    discontinuity = gap = endlist = False
    duration: Decimal | None = None
    msn = -1
    for line in lines[1:]:
        assert not endlist, "nothing may follow EXT-X-ENDLIST here"
        name, _, value = line.partition(":")
        if name in (
            "#EXT-X-VERSION",
            "#EXT-X-TARGETDURATION",
            "#EXT-X-SERVER-CONTROL",
            "#EXT-X-PART-INF",
            "#EXT-X-DISCONTINUITY-SEQUENCE",
        ):
            assert not segments and not parts, f"{name} after the first segment"
            tags[name] = value
        elif name == "#EXT-X-MEDIA-SEQUENCE":
            tags[name] = value
            msn = int(value)
        elif name == "#EXT-X-SKIP":
            skip = attributes(value)
            msn += int(skip["SKIPPED-SEGMENTS"])
        elif name == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif name == "#EXT-X-PART":
            attrs_ = attributes(value)
            parts.append(
                Part(
                    msn=msn,
                    index=len(parts),
                    duration=Decimal(attrs_["DURATION"]),
                    uri=attrs_["URI"],
                    independent=attrs_.get("INDEPENDENT") == "YES",
                )
            )
        elif name == "#EXTINF":
            duration = Decimal(value.rstrip(","))
        elif name == "#EXT-X-GAP":
            gap = True
        elif name == "#EXT-X-PRELOAD-HINT":
            hint = attributes(value)
        elif name == "#EXT-X-RENDITION-REPORT":
            reports.append(attributes(value))
        elif name == "#EXT-X-ENDLIST":
            endlist = True
        else:
            assert not line.startswith("#"), f"unexpected tag {line!r}"
            assert duration is not None, f"URI {line!r} without EXTINF"
            segments.append(Segment(msn, duration, line, gap, discontinuity, tuple(parts)))
            msn += 1
            parts = []
            discontinuity = gap = False
            duration = None
    return Playlist(
        lines=tuple(lines),
        version=int(tags["#EXT-X-VERSION"]),
        target_duration=int(tags["#EXT-X-TARGETDURATION"]),
        media_sequence=int(tags["#EXT-X-MEDIA-SEQUENCE"]),
        discontinuity_sequence=int(tags.get("#EXT-X-DISCONTINUITY-SEQUENCE", "0")),
        server_control=attributes(tags["#EXT-X-SERVER-CONTROL"]),
        part_target=Decimal(attributes(tags["#EXT-X-PART-INF"])["PART-TARGET"]),
        skip=skip,
        segments=tuple(segments),
        open_parts=tuple(parts),
        open_discontinuity=discontinuity,
        hint=hint,
        reports=tuple(reports),
        endlist=endlist,
    )


# -- helpers --------------------------------------------------------------------------------


def make_stream(
    *renditions: str, window: int = 6, part_target: float = PART_TARGET
) -> LowLatencyStream:
    stream = LowLatencyStream(
        name="s",
        rendition_order=renditions or ("source", "360p"),
        window=window,
        part_target=part_target,
    )
    for name in stream.rendition_order:
        stream.set_info(
            RenditionInfo(name=name, width=640, height=360, codecs="avc1.64001e", bandwidth=1)
        )
    return stream


def part_data(seq: int, index: int) -> bytes:
    return f"<{seq}.{index}>".encode()


def publish_parts(
    stream: LowLatencyStream, seq: int, count: int, rendition: str = "source", first: int = 0
) -> None:
    for index in range(first, first + count):
        stream.add_part(rendition, seq, PART, part_data(seq, index), independent=index in (0, 4))


def publish_segment(
    stream: LowLatencyStream, seq: int, parts: int = 8, rendition: str = "source"
) -> None:
    publish_parts(stream, seq, parts, rendition)
    stream.complete_segment(rendition, seq)


def playlist_of(stream: LowLatencyStream, rendition: str = "source") -> Playlist:
    text = stream.media_playlist(rendition)
    assert text is not None
    return parse(text)


def ask(stream: LowLatencyStream, rendition: str = "source", **query: str) -> object:
    return stream.answer_playlist(rendition, {f"_HLS_{k}": v for k, v in query.items()})


def ready_text(answer: object) -> Playlist:
    assert isinstance(answer, PlaylistReady), answer
    return parse(answer.text)


# -- configuration and tags -----------------------------------------------------------------


@pytest.mark.parametrize("target", [0.05, 0.099, 1.01, 2.0])
def test_part_targets_outside_a_tenth_to_one_second_are_refused(target: float) -> None:
    with pytest.raises(ValueError, match="part target"):
        LowLatencyStream(name="s", rendition_order=("source",), part_target=target)


@pytest.mark.parametrize("target", [0.1, 0.2, 0.333, 1.0])
def test_part_targets_in_range_are_advertised_as_given(target: float) -> None:
    stream = make_stream("source", part_target=target)
    stream.add_part("source", 0, 0.05, b"x", independent=True)
    playlist = playlist_of(stream)
    assert playlist.part_target == Decimal(str(target))
    assert Decimal(playlist.server_control["PART-HOLD-BACK"]) == 3 * Decimal(str(target))


def test_default_part_target_is_the_configured_default() -> None:
    stream = LowLatencyStream(name="s", rendition_order=("source",))
    assert stream.part_target == 0.2 == PlaybackSection().part_target


def test_a_first_playlist_reads_exactly_so() -> None:
    stream = make_stream()
    stream.add_part("source", 0, PART, b"a", independent=True)
    stream.add_part("source", 0, PART, b"b", independent=False)
    stream.complete_segment("source", 0)
    stream.add_part("source", 1, PART, b"c", independent=True)
    assert stream.media_playlist("source") == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:2\n"
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=0.999\n"
        "#EXT-X-PART-INF:PART-TARGET=0.333\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        '#EXT-X-PART:DURATION=0.25,URI="0.0.ts",INDEPENDENT=YES\n'
        '#EXT-X-PART:DURATION=0.25,URI="0.1.ts"\n'
        "#EXTINF:0.500,\n"
        "0.ts\n"
        '#EXT-X-PART:DURATION=0.25,URI="1.0.ts",INDEPENDENT=YES\n'
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="1.1.ts"\n'
    )


def test_server_control_allows_blocking_skips_and_holds_back_three_parts() -> None:
    stream = make_stream()
    publish_segment(stream, 0)
    playlist = playlist_of(stream)
    control = playlist.server_control
    assert playlist.version == 3  # old players read the same URL; only EXT-X-SKIP needs 9
    assert control["CAN-BLOCK-RELOAD"] == "YES"
    assert Decimal(control["CAN-SKIP-UNTIL"]) >= 6 * playlist.target_duration
    assert Decimal(control["PART-HOLD-BACK"]) >= 3 * playlist.part_target


def test_a_part_longer_than_the_target_raises_the_advertised_target() -> None:
    stream = make_stream("source")
    stream.add_part("source", 0, 0.5, b"one slow frame", independent=True)
    stream.add_part("source", 0, 0.25, b"x", independent=False)
    playlist = playlist_of(stream)
    assert playlist.part_target == Decimal("0.5")
    assert Decimal(playlist.server_control["PART-HOLD-BACK"]) == Decimal("1.5")
    assert all(p.duration <= playlist.part_target for p in playlist.all_parts())
    assert stream.playlist("source").advance_part_limit == pytest.approx(6.0)


def test_a_part_without_duration_is_refused() -> None:
    stream = make_stream()
    with pytest.raises(ValueError, match="no duration"):
        stream.add_part("source", 0, 0.0, b"x", independent=True)


# -- parts and segments ---------------------------------------------------------------------


def test_parts_come_before_their_segment_whose_extinf_follows_on_completion() -> None:
    stream = make_stream()
    publish_parts(stream, 0, 3)
    open_only = playlist_of(stream)
    assert open_only.segments == ()
    assert [p.uri for p in open_only.open_parts] == ["0.0.ts", "0.1.ts", "0.2.ts"]
    assert not any(line.startswith("#EXTINF") for line in open_only.lines)

    stream.complete_segment("source", 0)
    (segment,) = playlist_of(stream).segments
    assert segment.uri == "0.ts" and segment.msn == 0
    assert [p.uri for p in segment.parts] == ["0.0.ts", "0.1.ts", "0.2.ts"]
    assert segment.duration == sum(p.duration for p in segment.parts) == Decimal("0.75")


def test_independent_parts_are_the_ones_that_open_on_a_keyframe() -> None:
    stream = make_stream()
    publish_segment(stream, 0)
    (segment,) = playlist_of(stream).segments
    assert [p.independent for p in segment.parts] == [i in (0, 4) for i in range(8)]
    assert all("INDEPENDENT=NO" not in line for line in playlist_of(stream).lines)


def test_part_and_segment_uris_follow_the_hls_segment_names() -> None:
    assert llhls.segment_uri(12) == "12.ts"
    assert part_uri(12, 3) == "12.3.ts"
    stream = make_stream()
    publish_segment(stream, 0)
    publish_parts(stream, 1, 2)
    playlist = playlist_of(stream)
    assert [p.uri for p in playlist.all_parts()] == [
        part_uri(p.msn, p.index) for p in playlist.all_parts()
    ]


def test_a_segments_bytes_are_its_parts_end_to_end() -> None:
    stream = make_stream()
    publish_parts(stream, 0, 3)
    assert stream.segment("source", 0) is None  # not complete yet
    assert stream.part("source", 0, 2) == part_data(0, 2)
    stream.complete_segment("source", 0)
    assert stream.segment("source", 0) == b"".join(part_data(0, i) for i in range(3))
    assert stream.part("source", 0, 3) is None
    assert stream.part("nope", 0, 0) is None and stream.segment("nope", 0) is None


def test_parts_further_than_three_target_durations_from_the_edge_are_dropped() -> None:
    stream = make_stream(window=10)
    for seq in range(6):
        publish_segment(stream, seq)
    publish_parts(stream, 6, 1)
    playlist = playlist_of(stream)  # edge at 12.25 s: parts of segments ending after 6.25 s
    assert [s.msn for s in playlist.segments] == list(range(6))
    assert [len(s.parts) for s in playlist.segments] == [0, 0, 0, 8, 8, 8]
    assert len(playlist.open_parts) == 1


def test_the_window_slides_over_complete_segments() -> None:
    stream = make_stream(window=3)
    for seq in range(5):
        publish_segment(stream, seq)
    playlist = playlist_of(stream)
    assert playlist.media_sequence == 2
    assert [s.msn for s in playlist.segments] == [2, 3, 4]
    assert [s.uri for s in playlist.segments] == ["2.ts", "3.ts", "4.ts"]


def test_a_whole_segment_is_listed_without_parts() -> None:
    stream = make_stream()
    stream.add_segment("source", 0, 2.0, b"whole")
    playlist = playlist_of(stream)
    assert playlist.segments[0].parts == ()
    assert playlist.hint == {"TYPE": "PART", "URI": "1.0.ts"}
    assert stream.segment("source", 0) == b"whole"
    assert stream.part("source", 0, 0) is None


def complete_without_parts(stream: LowLatencyStream) -> None:
    stream.complete_segment("source", 0)


def whole_after_parts(stream: LowLatencyStream) -> None:
    publish_parts(stream, 0, 1)
    stream.add_segment("source", 0, 2.0, b"")


def part_after_gap(stream: LowLatencyStream) -> None:
    stream.add_gap("source", 1, 2.0)  # queued: segment 0 is not in yet
    publish_parts(stream, 1, 1)


def queued_completion_without_parts(stream: LowLatencyStream) -> None:
    stream.complete_segment("source", 3)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (complete_without_parts, "no parts"),
        (whole_after_parts, "has parts"),
        (part_after_gap, "already finished"),
        (queued_completion_without_parts, "no parts"),
    ],
)
def test_hand_ins_no_segment_could_be_made_of_are_refused(
    steps: Callable[[LowLatencyStream], object], message: str
) -> None:
    stream = make_stream()
    with pytest.raises(ValueError, match=message):
        steps(stream)


# -- preload hint ---------------------------------------------------------------------------


def test_the_preload_hint_names_the_next_part_then_the_next_segments_first() -> None:
    stream = make_stream()
    publish_parts(stream, 0, 1)
    assert playlist_of(stream).hint == {"TYPE": "PART", "URI": "0.1.ts"}
    publish_parts(stream, 0, 1, first=1)
    assert playlist_of(stream).hint == {"TYPE": "PART", "URI": "0.2.ts"}
    stream.complete_segment("source", 0)
    assert playlist_of(stream).hint == {"TYPE": "PART", "URI": "1.0.ts"}
    stream.add_gap("source", 1, 2.0)
    assert playlist_of(stream).hint == {"TYPE": "PART", "URI": "2.0.ts"}


# -- gaps, order, end, restart --------------------------------------------------------------


def test_a_failed_segment_is_a_gap_and_the_hint_moves_past_it() -> None:
    stream = make_stream()
    publish_segment(stream, 0, rendition="360p")
    stream.add_gap("360p", 1, 2.0)
    playlist = playlist_of(stream, "360p")
    gap = playlist.segments[1]
    assert gap.gap and gap.parts == () and gap.uri == "1.ts"
    assert playlist.version == 8  # EXT-X-GAP, as in hls.py
    assert playlist.hint == {"TYPE": "PART", "URI": "2.0.ts"}
    assert stream.segment("360p", 1) is None


def test_a_segment_that_fails_after_some_parts_keeps_them_listed_and_fetchable() -> None:
    stream = make_stream()
    publish_parts(stream, 0, 3, rendition="360p")
    stream.add_gap("360p", 0, 2.0)
    (segment,) = playlist_of(stream, "360p").segments
    assert segment.gap and len(segment.parts) == 3
    assert stream.part("360p", 0, 1) == part_data(0, 1)
    assert stream.segment("360p", 0) is None


def test_parts_of_the_next_segment_wait_until_the_one_before_is_listed() -> None:
    stream = make_stream()
    publish_parts(stream, 0, 2, rendition="360p")
    version = stream.version
    publish_parts(stream, 1, 3, rendition="360p")  # results of segment 1 arrive first
    assert stream.version == version  # nothing a viewer sees has changed
    assert [p.uri for p in playlist_of(stream, "360p").open_parts] == ["0.0.ts", "0.1.ts"]
    stream.complete_segment("360p", 1)
    publish_parts(stream, 2, 1, rendition="360p")
    assert stream.version == version
    stream.complete_segment("360p", 0)
    playlist = playlist_of(stream, "360p")
    assert [s.msn for s in playlist.segments] == [0, 1]
    assert [p.uri for p in playlist.open_parts] == ["2.0.ts"]
    assert playlist.hint == {"TYPE": "PART", "URI": "2.1.ts"}
    assert stream.segment("360p", 1) == b"".join(part_data(1, i) for i in range(3))


def test_a_late_duplicate_is_ignored() -> None:
    stream = make_stream()
    publish_segment(stream, 0)
    before = stream.media_playlist("source")
    stream.add_gap("source", 0, 2.0)
    stream.add_part("source", 0, PART, b"late", independent=True)
    assert stream.media_playlist("source") == before


def test_the_end_lists_endlist_without_preload_hint_once_segments_in_flight_are_in() -> None:
    stream = make_stream()
    publish_segment(stream, 0)
    publish_segment(stream, 1)
    publish_segment(stream, 0, rendition="360p")
    publish_parts(stream, 1, 2, rendition="360p")
    stream.end(last_seq=1)
    source = playlist_of(stream)
    assert source.endlist and source.hint is None
    assert source.lines[-1] == "#EXT-X-ENDLIST"
    assert not playlist_of(stream, "360p").endlist
    assert not stream.ended
    stream.complete_segment("360p", 1)
    assert playlist_of(stream, "360p").endlist and stream.ended


def test_restart_closes_the_open_segment_and_continues_after_a_discontinuity() -> None:
    stream = make_stream()
    publish_segment(stream, 0)
    publish_parts(stream, 1, 2)
    publish_segment(stream, 0, rendition="360p")
    first = stream.next_sequence()
    assert first == 2  # past the open segment, so numbers are never reused
    stream.restart(first)
    publish_parts(stream, 2, 1)
    source = playlist_of(stream)
    assert [(s.msn, len(s.parts)) for s in source.segments] == [(0, 8), (1, 2)]
    assert source.open_discontinuity and source.open_parts[0].uri == "2.0.ts"
    text = "\n".join(source.lines)
    assert '1.ts\n#EXT-X-DISCONTINUITY\n#EXT-X-PART:DURATION=0.25,URI="2.0.ts"' in text
    # A rendition that never got segment 1 has it as a gap, so numbers stay aligned.
    low = playlist_of(stream, "360p")
    assert [(s.msn, s.gap) for s in low.segments] == [(0, False), (1, True)]
    assert low.hint == {"TYPE": "PART", "URI": "2.0.ts"}


def test_the_master_playlist_waits_for_renditions_then_lists_them() -> None:
    stream = make_stream()
    publish_parts(stream, 0, 1)
    assert stream.master_playlist() is None
    publish_parts(stream, 0, 1, rendition="360p")
    master = stream.master_playlist()
    assert master is not None
    assert master.splitlines()[3:] == [
        '#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=640x360,CODECS="avc1.64001e",NAME="source"',
        "source/index.m3u8",
        '#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=640x360,CODECS="avc1.64001e",NAME="360p"',
        "360p/index.m3u8",
    ]
    stream.add_part("source", 0, PART, b"x" * 1000, independent=False)
    stream.complete_segment("source", 0)
    assert "BANDWIDTH=16080," in (stream.master_playlist() or "")  # (5 + 1000) * 8 / 0.5
    assert stream.renditions_ready() == ("source", "360p")


# -- rendition reports ----------------------------------------------------------------------


def test_rendition_reports_give_the_newest_segment_and_part_of_every_other_rendition() -> None:
    stream = make_stream("source", "720p", "360p", "160p")
    publish_segment(stream, 0)
    publish_parts(stream, 1, 3)
    publish_segment(stream, 0, rendition="720p")
    publish_segment(stream, 1, rendition="720p")
    stream.add_gap("360p", 0, 2.0)
    source = playlist_of(stream)
    assert source.reports == (
        {"URI": "../720p/index.m3u8", "LAST-MSN": "1", "LAST-PART": "7"},
        {"URI": "../360p/index.m3u8", "LAST-MSN": "0"},
    )  # 160p has nothing yet, and a playlist does not report on itself
    assert playlist_of(stream, "720p").reports[0] == {
        "URI": "../source/index.m3u8",
        "LAST-MSN": "1",
        "LAST-PART": "2",
    }
    version = stream.version
    publish_parts(stream, 2, 1, rendition="720p")
    assert stream.version > version  # other playlists' reports changed too
    assert playlist_of(stream).reports[0]["LAST-MSN"] == "2"


# -- blocking playlist reload ---------------------------------------------------------------


def test_a_request_without_directives_is_answered_at_once() -> None:
    stream = make_stream()
    publish_parts(stream, 0, 1)
    answer = stream.answer_playlist("source", {"other": "1"})
    assert isinstance(answer, PlaylistReady)
    assert answer.text == stream.media_playlist("source")


def test_blocking_reload_waits_for_the_next_part_then_answers() -> None:
    stream = make_stream()
    publish_segment(stream, 0)
    publish_parts(stream, 1, 2)
    assert ready_text(ask(stream, msn="1", part="1")).open_parts[-1].uri == "1.1.ts"
    wait = ask(stream, msn="1", part="2")
    assert wait == WaitForUpdate(version=stream.version, timeout=6.0)
    publish_parts(stream, 1, 1, first=2)
    assert stream.version != wait.version
    assert ready_text(ask(stream, msn="1", part="2")).open_parts[-1].uri == "1.2.ts"


def test_blocking_reload_across_a_segment_boundary() -> None:
    stream = make_stream()
    publish_parts(stream, 0, 8)
    assert isinstance(ask(stream, msn="0"), WaitForUpdate)  # segment 0 is not complete
    assert isinstance(ask(stream, msn="1", part="0"), WaitForUpdate)
    stream.complete_segment("source", 0)
    assert [s.msn for s in ready_text(ask(stream, msn="0")).segments] == [0]
    assert isinstance(ask(stream, msn="1", part="0"), WaitForUpdate)
    assert isinstance(ask(stream, msn="1"), WaitForUpdate)
    publish_parts(stream, 1, 1)
    assert ready_text(ask(stream, msn="1", part="0")).open_parts[0].uri == "1.0.ts"
    assert isinstance(ask(stream, msn="1"), WaitForUpdate)


def test_a_part_past_the_end_of_a_complete_segment_means_the_next_segments_first() -> None:
    stream = make_stream()
    publish_segment(stream, 0, parts=3)
    assert isinstance(ask(stream, msn="0", part="2"), PlaylistReady)
    assert isinstance(ask(stream, msn="0", part="3"), WaitForUpdate)
    assert isinstance(ask(stream, msn="0", part="50"), WaitForUpdate)
    publish_parts(stream, 1, 1)
    assert isinstance(ask(stream, msn="0", part="3"), PlaylistReady)
    assert isinstance(ask(stream, msn="0", part="50"), PlaylistReady)


def test_old_positions_are_answered_at_once() -> None:
    stream = make_stream(window=2)
    for seq in range(5):
        publish_segment(stream, seq)
    assert playlist_of(stream).media_sequence == 3
    assert isinstance(ask(stream, msn="0", part="0"), PlaylistReady)
    assert isinstance(ask(stream, msn="1"), PlaylistReady)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"_HLS_part": "1"}, "_HLS_part needs _HLS_msn"),
        ({"_HLS_msn": "-1"}, "non-negative"),
        ({"_HLS_msn": "1", "_HLS_part": "-2"}, "non-negative"),
        ({"_HLS_msn": "x"}, "non-negative"),
        ({"_HLS_msn": "1.5"}, "non-negative"),
        ({"_HLS_msn": ""}, "non-negative"),
        ({"_HLS_msn": "9" * 40}, "non-negative"),
        ({"_HLS_skip": "NO"}, "YES or v2"),
        ({"_HLS_skip": "yes"}, "YES or v2"),
        # Last segment is 1 (open, two parts): more than two segments ahead is too far.
        ({"_HLS_msn": "4"}, "_HLS_msn=4 is too far ahead"),
        ({"_HLS_msn": "4", "_HLS_part": "0"}, "_HLS_msn=4 is too far ahead"),
        # Advance Part Limit: 3 / 0.333 = 9.009 parts past the last one (1.1).
        ({"_HLS_msn": "1", "_HLS_part": "11"}, "_HLS_part=11 is too far ahead"),
        ({"_HLS_msn": "2", "_HLS_part": "9"}, "_HLS_part=9 is too far ahead"),
        ({"_HLS_msn": "3", "_HLS_part": "9"}, "_HLS_part=9 is too far ahead"),
    ],
)
def test_bad_blocking_requests_are_refused_with_400(query: dict[str, str], reason: str) -> None:
    stream = make_stream()
    publish_segment(stream, 0)
    publish_parts(stream, 1, 2)
    answer = stream.answer_playlist("source", query)
    assert isinstance(answer, Refused) and answer.code == 400
    assert reason in answer.reason


@pytest.mark.parametrize(
    "query",
    [
        {"_HLS_msn": "3"},  # exactly two segments ahead
        {"_HLS_msn": "1", "_HLS_part": "10"},  # exactly nine parts ahead
        {"_HLS_msn": "2", "_HLS_part": "8"},
        {"_HLS_msn": "3", "_HLS_part": "8"},
    ],
)
def test_requests_at_the_limits_are_held(query: dict[str, str]) -> None:
    stream = make_stream()
    publish_segment(stream, 0)
    publish_parts(stream, 1, 2)
    assert isinstance(stream.answer_playlist("source", query), WaitForUpdate)


def test_unknown_or_empty_renditions_are_404() -> None:
    stream = make_stream()
    for answer in (
        stream.answer_playlist("nope", {}),
        stream.answer_playlist("source", {}),
        stream.answer_playlist("source", {"_HLS_msn": "0"}),
        stream.answer_part("nope", 0, 0),
        stream.answer_part("source", 0, 0),
    ):
        assert isinstance(answer, Refused) and answer.code == 404
    assert stream.media_playlist("source") is None


def test_an_ended_playlist_answers_blocking_requests_at_once() -> None:
    stream = make_stream("source")
    publish_segment(stream, 0)
    stream.end(last_seq=0)
    for query in ({"_HLS_msn": "1", "_HLS_part": "0"}, {"_HLS_msn": "40"}):
        playlist = ready_text(stream.answer_playlist("source", query))
        assert playlist.endlist and playlist.hint is None


def test_the_wait_timeout_is_three_target_durations() -> None:
    stream = make_stream()
    stream.add_part("source", 0, PART, b"x", independent=True)
    stream.complete_segment("source", 0)
    stream.add_segment("source", 1, 4.5, b"long")
    answer = ask(stream, msn="2")
    assert isinstance(answer, WaitForUpdate) and answer.timeout == 15.0


def test_playlist_requests_parse_from_query_strings() -> None:
    assert PlaylistRequest.from_query({"_HLS_msn": "7", "_HLS_part": "2", "_HLS_skip": "YES"}) == (
        PlaylistRequest(msn=7, part=2, skip=SkipRequest.YES)
    )
    assert PlaylistRequest.from_query({"_HLS_skip": "v2"}).skip is SkipRequest.V2
    with pytest.raises(ValueError, match="needs an msn"):
        PlaylistRequest(part=1)


@settings(deadline=None, derandomize=True, max_examples=200)
@given(
    st.dictionaries(
        st.sampled_from(["_HLS_msn", "_HLS_part", "_HLS_skip", "x"]),
        st.one_of(st.text(max_size=6), st.integers(-3, 40).map(str)),
    )
)
def test_any_query_gets_an_answer_and_never_an_exception(query: dict[str, str]) -> None:
    stream = make_stream()
    publish_segment(stream, 0)
    publish_parts(stream, 1, 2)
    answer = stream.answer_playlist("source", query)
    assert isinstance(answer, PlaylistReady | WaitForUpdate | Refused)
    if isinstance(answer, Refused):
        assert answer.code == 400


# -- parts on request (the preload hint) ----------------------------------------------------


def test_the_hinted_part_is_held_until_published() -> None:
    stream = make_stream()
    publish_parts(stream, 0, 2)
    hinted = playlist_of(stream).hint
    assert hinted == {"TYPE": "PART", "URI": "0.2.ts"}
    assert stream.answer_part("source", 0, 1) == PartReady(data=part_data(0, 1))
    assert isinstance(stream.answer_part("source", 0, 2), WaitForUpdate)
    publish_parts(stream, 0, 1, first=2)
    assert stream.answer_part("source", 0, 2) == PartReady(data=part_data(0, 2))


def test_a_hinted_part_that_will_never_exist_is_404() -> None:
    stream = make_stream()
    publish_parts(stream, 0, 2)
    stream.complete_segment("source", 0)  # the hint said 0.2; the segment ended instead
    answer = stream.answer_part("source", 0, 2)
    assert isinstance(answer, Refused) and answer.code == 404
    assert isinstance(stream.answer_part("source", 1, 0), WaitForUpdate)
    too_far = stream.answer_part("source", 1, 9)
    assert isinstance(too_far, Refused) and too_far.code == 404
    stream.end(last_seq=0)
    assert isinstance(stream.answer_part("source", 1, 0), Refused)


# -- delta updates --------------------------------------------------------------------------


def delta_stream() -> LowLatencyStream:
    stream = make_stream(window=20)
    for seq in range(12):
        publish_segment(stream, seq)
    publish_parts(stream, 12, 1)
    return stream


def test_a_delta_update_skips_old_segments_and_keeps_the_tail_of_the_full_playlist() -> None:
    stream = delta_stream()
    full = playlist_of(stream)
    delta = ready_text(ask(stream, skip="YES"))
    # The edge is at 24.25 s and CAN-SKIP-UNTIL is 12 s: segments ending by 12.25 s go.
    assert delta.skipped == 6 and delta.version == 9
    assert delta.skip == {"SKIPPED-SEGMENTS": "6"}
    assert [s.msn for s in delta.segments] == list(range(6, 12))
    edge = sum(s.duration for s in full.segments) + sum(p.duration for p in full.open_parts)
    boundary = Decimal(full.server_control["CAN-SKIP-UNTIL"])
    ends = [sum(s.duration for s in full.segments[: i + 1]) for i in range(12)]
    assert all(edge - end >= boundary for end in ends[:6])
    assert edge - ends[6] < boundary
    header = full.lines.index("#EXT-X-MEDIA-SEQUENCE:0") + 1
    tail = full.lines[full.lines.index("5.ts") + 1 :]
    assert full.lines[1] == "#EXT-X-VERSION:3"
    assert delta.lines == (
        full.lines[0],
        "#EXT-X-VERSION:9",
        *full.lines[2:header],
        "#EXT-X-SKIP:SKIPPED-SEGMENTS=6",
        *tail,
    )


def test_a_v2_delta_update_says_no_date_ranges_were_removed() -> None:
    stream = delta_stream()
    delta = ready_text(ask(stream, skip="v2"))
    assert delta.skip == {"SKIPPED-SEGMENTS": "6", "RECENTLY-REMOVED-DATERANGES": ""}
    assert delta.version == 10


def test_a_delta_update_with_nothing_old_enough_is_the_full_playlist() -> None:
    stream = make_stream(window=6)  # 12 s of segments never reach past the 12 s boundary
    for seq in range(8):
        publish_segment(stream, seq)
    answer = ask(stream, skip="YES")
    assert isinstance(answer, PlaylistReady)
    assert answer.text == stream.media_playlist("source")


def test_a_blocking_delta_request_waits_then_skips() -> None:
    stream = delta_stream()
    assert isinstance(ask(stream, msn="12", part="1", skip="YES"), WaitForUpdate)
    publish_parts(stream, 12, 1, first=1)
    delta = ready_text(ask(stream, msn="12", part="1", skip="YES"))
    assert delta.skipped == 6 and delta.open_parts[-1].uri == "12.1.ts"


# -- retention and versions -----------------------------------------------------------------


def test_bytes_are_kept_for_the_window_and_a_few_more() -> None:
    stream = make_stream(window=3)
    for seq in range(20):
        publish_segment(stream, seq, parts=2)
    oldest = 19 - 3 - KEEP_EXTRA
    assert stream.segment("source", oldest) is not None
    assert stream.part("source", oldest, 1) == part_data(oldest, 1)
    assert stream.segment("source", oldest - 1) is None
    assert stream.part("source", oldest - 1, 0) is None
    kept = [seq for seq in range(20) if stream.segment("source", seq) is not None]
    assert len(kept) == 3 + KEEP_EXTRA + 1
    gone = stream.answer_part("source", 0, 0)
    assert isinstance(gone, Refused) and gone.code == 404


def test_every_visible_change_moves_the_version() -> None:
    stream = make_stream()
    seen = [stream.version]
    steps: list[Callable[[], object]] = [
        lambda: publish_parts(stream, 0, 1),
        lambda: stream.complete_segment("source", 0),
        lambda: stream.add_gap("source", 1, 2.0),
        lambda: stream.add_segment("source", 2, 2.0, b"x"),
        lambda: stream.end(last_seq=2),
        lambda: stream.restart(stream.next_sequence()),
    ]
    for step in steps:
        step()
        assert stream.version > seen[-1]
        seen.append(stream.version)
    stream.end(last_seq=None)
    version = stream.version
    stream.end(last_seq=None)  # already ended: nothing changes
    assert stream.version == version


# -- properties over random publishing --------------------------------------------------------


class Publishing(RuleBasedStateMachine):
    """Random parts, completions, gaps and whole segments, checked against a simple model."""

    def __init__(self) -> None:
        super().__init__()
        self.stream = make_stream("source", "low", window=4)
        self.seq = 0  # the segment being made
        self.open: list[bytes] = []  # its parts so far
        self.parts_of: dict[int, int] = {}  # parts of each finished segment
        self.bytes_of: dict[int, bytes | None] = {}  # bytes of each finished segment
        self.low = (0, 0, 0)  # the other rendition: segment, its parts, parts of the one before
        self.version = self.stream.version

    def moved(self) -> None:
        assert self.stream.version > self.version
        self.version = self.stream.version

    def finish(self, data: bytes | None) -> None:
        self.parts_of[self.seq] = len(self.open)
        self.bytes_of[self.seq] = data
        self.seq += 1
        self.open = []
        self.moved()

    @rule(duration=st.floats(0.01, 0.333), independent=st.booleans(), size=st.integers(1, 9))
    def add_part(self, duration: float, independent: bool, size: int) -> None:
        data = bytes([len(self.open)]) * size
        self.stream.add_part("source", self.seq, duration, data, independent=independent)
        self.open.append(data)
        self.moved()

    @precondition(lambda self: self.open)
    @rule()
    def complete(self) -> None:
        self.stream.complete_segment("source", self.seq)
        self.finish(b"".join(self.open))

    @rule(duration=st.floats(0.5, 2.5))
    def gap(self, duration: float) -> None:
        self.stream.add_gap("source", self.seq, duration)
        self.finish(None)

    @precondition(lambda self: not self.open)
    @rule(duration=st.floats(0.5, 2.5))
    def whole(self, duration: float) -> None:
        self.stream.add_segment("source", self.seq, duration, b"whole%d" % self.seq)
        self.finish(b"whole%d" % self.seq)

    @rule(complete=st.booleans())
    def low_step(self, complete: bool) -> None:
        seq, parts, before = self.low
        if complete and parts:
            self.stream.complete_segment("low", seq)
            self.low = (seq + 1, 0, parts)
        else:
            self.stream.add_part("low", seq, PART, b"l", independent=parts == 0)
            self.low = (seq, parts + 1, before)
        self.moved()

    def reached(self, msn: int, part: int | None) -> bool:
        if part is None:
            return msn < self.seq
        if msn < self.seq:
            if part < self.parts_of[msn]:
                return True
            msn, part = msn + 1, 0  # past the last part: the next segment's first
            if msn < self.seq:
                return True
        return msn == self.seq and part < len(self.open)

    @invariant()
    def blocking_answers_match_the_model(self) -> None:
        """Every request near the live edge, answered as the spec says."""
        limit = self.stream.playlist("source").advance_part_limit
        for msn in range(max(0, self.seq - 3), self.seq + 4):
            for part in (None, *range(12)):
                query = {"_HLS_msn": str(msn)}
                if part is not None:
                    query["_HLS_part"] = str(part)
                answer = self.stream.answer_playlist("source", query)
                if not self.seq and not self.open:
                    assert isinstance(answer, Refused) and answer.code == 404
                    continue
                last = self.seq if self.open else self.seq - 1
                future = msn > self.seq or (msn == self.seq and len(self.open) <= (part or 0))
                ahead = None
                if part is not None and future:
                    ahead = part - len(self.open) + 1 if msn == self.seq else part + 1
                if msn > last + 2 or (ahead is not None and ahead > limit):
                    assert isinstance(answer, Refused) and answer.code == 400, (msn, part)
                elif self.reached(msn, part):
                    assert isinstance(answer, PlaylistReady), (msn, part)
                else:
                    assert isinstance(answer, WaitForUpdate), (msn, part)
                    assert answer.version == self.stream.version

    @invariant()
    def playlist_matches_the_model(self) -> None:
        text = self.stream.media_playlist("source")
        if not self.seq and not self.open:
            assert text is None
            return
        assert text is not None
        playlist = parse(text)
        # The preload hint is exactly one part past the last part published.
        assert playlist.hint == {"TYPE": "PART", "URI": part_uri(self.seq, len(self.open))}
        assert [p.uri for p in playlist.open_parts] == [
            part_uri(self.seq, i) for i in range(len(self.open))
        ]
        assert Decimal(playlist.server_control["PART-HOLD-BACK"]) >= 3 * playlist.part_target
        assert all(p.duration <= playlist.part_target for p in playlist.all_parts())
        assert all(p.uri == part_uri(p.msn, p.index) for p in playlist.all_parts())
        # Complete segments: the newest ``window``, numbered as the header says.
        finished = list(range(max(0, self.seq - 4), self.seq))
        assert [s.msn for s in playlist.segments] == finished
        for segment in playlist.segments:
            assert segment.uri == f"{segment.msn}.ts"
            assert segment.gap == (self.bytes_of[segment.msn] is None)
            if segment.parts:
                assert len(segment.parts) == self.parts_of[segment.msn]
                total = sum(p.duration for p in segment.parts)
                assert segment.gap or abs(total - segment.duration) <= Decimal("0.0006")
        # Parts of the newest complete segment are listed while it is near the edge.
        open_for = sum(p.duration for p in playlist.open_parts)
        if playlist.segments and open_for < 3 * playlist.target_duration - Decimal("0.01"):
            assert len(playlist.segments[-1].parts) == self.parts_of[self.seq - 1]
        # Bytes: what was handed in, for a bounded number of segments.
        for seq, data in self.bytes_of.items():
            if seq >= self.seq - 4 - KEEP_EXTRA:
                assert self.stream.segment("source", seq) == data
        kept = [s for s in range(self.seq) if self.stream.segment("source", s) is not None]
        assert len(kept) <= 4 + KEEP_EXTRA + 1
        # The other rendition is reported where it is.
        seq, parts, before = self.low
        if (seq, parts) != (0, 0):
            assert playlist.reports == (
                {
                    "URI": "../low/index.m3u8",
                    "LAST-MSN": str(seq if parts else seq - 1),
                    "LAST-PART": str(parts - 1 if parts else before - 1),
                },
            )
        else:
            assert playlist.reports == ()


Publishing.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, derandomize=True
)
test_publishing_keeps_every_invariant = Publishing.TestCase


@settings(deadline=None, derandomize=True, max_examples=60)
@given(
    st.lists(st.one_of(st.none(), st.integers(1, 5)), min_size=1, max_size=6),
    st.data(),
)
def test_results_in_any_order_are_listed_as_if_in_order(
    plan: list[int | None], data: st.DataObject
) -> None:
    """Each segment is a number of parts, or None for a gap; segments interleave at random."""

    def steps(seq: int, parts: int | None) -> list[tuple[int, str, int]]:
        if parts is None:
            return [(seq, "gap", 0)]
        return [(seq, "part", i) for i in range(parts)] + [(seq, "complete", 0)]

    def run(order: list[tuple[int, str, int]]) -> LowLatencyStream:
        stream = make_stream("source")
        for seq, kind, index in order:
            if kind == "gap":
                stream.add_gap("source", seq, 2.0)
            elif kind == "part":
                stream.add_part("source", seq, PART, part_data(seq, index), independent=not index)
            else:
                stream.complete_segment("source", seq)
        return stream

    queues = [steps(seq, parts) for seq, parts in enumerate(plan)]
    in_order = [step for queue in queues for step in queue]
    shuffled: list[tuple[int, str, int]] = []
    while any(queues):
        choice = data.draw(st.sampled_from([q for q in queues if q]))
        shuffled.append(choice.pop(0))
    expected, actual = run(in_order), run(shuffled)
    assert actual.media_playlist("source") == expected.media_playlist("source")
    for seq in range(len(plan)):
        assert actual.segment("source", seq) == expected.segment("source", seq)


# -- layout -------------------------------------------------------------------------------------


def test_the_module_does_no_io() -> None:
    used = {name.split(".")[0] for name in imported_modules(Path(llhls.__file__))}
    assert not used & IO_MODULES


def test_all_lists_every_public_name_and_nothing_else() -> None:
    tree = ast.parse(Path(llhls.__file__).read_text())
    defined = {
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef | ast.FunctionDef) and not node.name.startswith("_")
    }
    assert defined <= set(llhls.__all__)
    assert all(hasattr(llhls, name) for name in llhls.__all__)


def test_a_playlist_can_be_used_on_its_own() -> None:
    playlist = LowLatencyPlaylist(window=2)
    playlist.add_part(llhls.PartialSegment(seq=5, index=0, duration=0.2, independent=True))
    with pytest.raises(ValueError, match="does not follow"):
        playlist.add_part(llhls.PartialSegment(seq=5, index=2, duration=0.2))
    assert playlist.media_sequence == 5 and playlist.next_part == (5, 1)
    assert playlist.contains(5, 0) and not playlist.contains(5, 1)
    assert playlist.parts_ahead(5, 3) == 3
    with pytest.raises(ValueError, match="still open"):
        playlist.end()
    report: Mapping[str, str] = attributes(
        llhls.RenditionReport(uri="../a/index.m3u8", last_msn=5, last_part=0).render()
    )
    assert report == {"URI": "../a/index.m3u8", "LAST-MSN": "5", "LAST-PART": "0"}
