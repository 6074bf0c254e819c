"""A viewer's token carried into every URI of the playlists the node renders (sans-IO)."""

from __future__ import annotations

import re

from lpstream.playback.hls import RenditionInfo
from lpstream.playback.llhls import LowLatencyStream
from lpstream.playback.playlist_query import carry_query, query_of

URI = re.compile(r'URI="([^"]*)"')


def uris(playlist: str) -> list[str]:
    """Every URI a player could follow: URI lines and URI attributes."""
    found = []
    for line in playlist.splitlines():
        if line and not line.startswith("#"):
            found.append(line)
        found += URI.findall(line)
    return found


def live_stream() -> LowLatencyStream:
    """Two renditions: source in parts (one segment open), 360p whole; three segments each."""
    stream = LowLatencyStream(name="cam", rendition_order=("source", "360p"), part_target=0.5)
    for name, width in (("source", 1280), ("360p", 640)):
        stream.set_info(
            RenditionInfo(name=name, width=width, height=360, codecs="avc1.64001e", bandwidth=10**6)
        )
    for seq in range(3):
        for index in range(4):
            stream.add_part("source", seq, 0.5, b"\x47" * 188, independent=index == 0)
        stream.complete_segment("source", seq)
        stream.add_segment("360p", seq, 2.0, b"\x47" * 188)
    stream.add_part("source", 3, 0.5, b"\x47" * 188, independent=True)
    return stream


def test_every_uri_of_the_master_and_media_playlists_carries_the_token() -> None:
    stream = live_stream()
    query = query_of({"token": "a.b-c_d/e+f="})
    assert query == "token=a.b-c_d%2Fe%2Bf%3D"
    master = stream.master_playlist()
    media = stream.media_playlist("source")
    assert master is not None and media is not None
    for playlist, expected in [
        (master, {"source/index.m3u8", "360p/index.m3u8"}),
        (media, {"1.ts", "2.ts", "3.0.ts", "3.1.ts", "../360p/index.m3u8"}),
    ]:
        carried = carry_query(playlist, query)
        found = uris(carried)
        assert expected <= {uri.removesuffix(f"?{query}") for uri in found}
        assert found and all(uri.endswith(f"?{query}") for uri in found), carried
        # Nothing else changed: the tags and their order are the same.
        assert re.sub(r"\?token=[^\"\n]*", "", carried) == playlist
    assert uris(carry_query(media, query)).count(f"3.1.ts?{query}") == 1  # the preload hint


def test_queries_join_and_foreign_uris_are_left_alone() -> None:
    playlist = (
        "#EXTM3U\n"
        '#EXT-X-MAP:URI="init.mp4?v=2"\n'
        "#EXTINF:2.000,\n"
        "https://cdn.example/0.ts\n"
        "#EXTINF:2.000,\n"
        "//cdn.example/1.ts\n"
        "#EXTINF:2.000,\n"
        "2.ts\n"
    )
    carried = carry_query(playlist, "token=t")
    assert uris(carried) == [
        "init.mp4?v=2&token=t",
        "https://cdn.example/0.ts",
        "//cdn.example/1.ts",
        "2.ts?token=t",
    ]
    assert carry_query(playlist, "") == playlist
