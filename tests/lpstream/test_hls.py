"""HLS playlist state: windows, ordering, gaps, discontinuities and the end of a stream."""

from __future__ import annotations

import pytest

from lpstream.playback.hls import HlsStream, MediaPlaylist, PlaylistEntry, RenditionInfo


def entry(seq: int, duration: float = 2.0, **kw: bool) -> PlaylistEntry:
    return PlaylistEntry(seq=seq, duration=duration, uri=f"{seq}.ts", **kw)


def test_media_playlist_slides_a_window_of_six() -> None:
    playlist = MediaPlaylist(window=6)
    for seq in range(8):
        playlist.append(entry(seq))
    assert playlist.render() == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:2\n"
        + "".join(f"#EXTINF:2.000,\n{s}.ts\n" for s in range(2, 8))
    )


def test_target_duration_rounds_up_and_never_shrinks() -> None:
    playlist = MediaPlaylist()
    playlist.append(entry(0, 4.2))
    playlist.append(entry(1, 1.0))
    assert "#EXT-X-TARGETDURATION:5\n" in playlist.render()


def test_discontinuity_sequence_counts_discontinuities_that_left_the_window() -> None:
    playlist = MediaPlaylist(window=2)
    playlist.append(entry(0))
    playlist.append(entry(1, discontinuity=True))
    assert "#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n1.ts" in playlist.render()
    playlist.append(entry(2))
    text = playlist.render()
    # Entry 1 is now first: its discontinuity tag is implied by the sequence number.
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1\n" in text
    assert "#EXT-X-DISCONTINUITY\n" not in text


def test_appending_out_of_order_is_refused() -> None:
    playlist = MediaPlaylist()
    playlist.append(entry(3))
    with pytest.raises(ValueError, match="does not follow"):
        playlist.append(entry(5))


def make_stream() -> HlsStream:
    stream = HlsStream(name="s", rendition_order=("source", "360p"))
    for name in ("source", "360p"):
        stream.set_info(
            RenditionInfo(name=name, width=640, height=360, codecs="avc1.64001e", bandwidth=1)
        )
    return stream


def test_results_arriving_out_of_order_are_listed_in_order() -> None:
    stream = make_stream()
    stream.add_segment("360p", 1, 2.0, b"one")
    assert stream.media_playlist("360p") is None  # 1 waits for 0
    stream.add_segment("360p", 0, 2.0, b"zero")
    text = stream.media_playlist("360p")
    assert text is not None and text.index("0.ts") < text.index("1.ts")
    assert stream.segment("360p", 1) == b"one"


def test_a_failed_segment_becomes_a_gap_and_keeps_numbers_aligned() -> None:
    stream = make_stream()
    stream.add_segment("360p", 0, 2.0, b"a")
    stream.add_gap("360p", 1, 2.0)
    stream.add_segment("360p", 2, 2.0, b"c")
    text = stream.media_playlist("360p")
    assert text is not None
    assert "#EXT-X-GAP\n1.ts" in text and "#EXT-X-VERSION:8" in text
    assert stream.segment("360p", 1) is None


def test_master_waits_for_renditions_then_lists_them_all() -> None:
    stream = make_stream()
    stream.add_segment("source", 0, 2.0, b"x" * 1000)
    assert stream.master_playlist() is None
    stream.add_segment("360p", 0, 2.0, b"y" * 500)
    master = stream.master_playlist()
    assert master is not None
    assert master.splitlines()[3:] == [
        '#EXT-X-STREAM-INF:BANDWIDTH=4000,RESOLUTION=640x360,CODECS="avc1.64001e",NAME="source"',
        "source/index.m3u8",
        '#EXT-X-STREAM-INF:BANDWIDTH=2000,RESOLUTION=640x360,CODECS="avc1.64001e",NAME="360p"',
        "360p/index.m3u8",
    ]


def test_end_waits_for_segments_in_flight() -> None:
    stream = make_stream()
    stream.add_segment("source", 0, 2.0, b"a")
    stream.add_segment("source", 1, 2.0, b"b")
    stream.add_segment("360p", 0, 2.0, b"a")
    stream.end(last_seq=1)
    assert "#EXT-X-ENDLIST" in (stream.media_playlist("source") or "")
    assert "#EXT-X-ENDLIST" not in (stream.media_playlist("360p") or "")
    stream.add_segment("360p", 1, 2.0, b"b")
    assert "#EXT-X-ENDLIST" in (stream.media_playlist("360p") or "")
    assert stream.ended


def test_restart_continues_numbering_after_a_discontinuity() -> None:
    stream = make_stream()
    for seq in range(2):
        stream.add_segment("source", seq, 2.0, b"a")
    stream.end(last_seq=1)
    first = stream.next_sequence()
    assert first == 2
    stream.restart(first)
    stream.add_segment("source", 2, 2.0, b"b")
    text = stream.media_playlist("source")
    assert text is not None
    assert "1.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n2.ts" in text
    assert "#EXT-X-ENDLIST" not in text
