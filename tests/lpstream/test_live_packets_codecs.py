"""WebRTC viewers of a stream whose source is not H.264: the source fan-out takes none of its
video, and asking for the source says which renditions to watch."""

from __future__ import annotations

import pytest
import trio

from lpstream.errors import RemoteProtocolError
from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.playback.live_packets import StreamPackets

HVCC = bytes.fromhex("01016000000090000000000000f000fcfdf8f800000f")  # an hvcC header, no arrays


async def test_the_source_of_an_hevc_stream_is_refused_with_the_renditions_to_watch() -> None:
    packets = StreamPackets(renditions=["360p", "240p"])
    packets.feed_source(CodecConfig(kind=TrackKind.VIDEO, codec="hevc", data=HVCC))
    packets.feed_source(
        MediaPacket(kind=TrackKind.VIDEO, dts=0, pts=0, keyframe=True, data=b"\0\0\0\2\x26\1")
    )
    refusal = r"source is hevc.*another rendition \(360p, 240p\)"
    with pytest.raises(RemoteProtocolError, match=refusal) as refused:
        packets.subscribe("source")
    assert refused.value.code == 415
    # A rendition (H.264, made by the orchestrators) can be watched, and the stream counts as
    # started for it (its viewers learn whether there is sound).
    subscription = packets.subscribe("360p")
    assert subscription is not None
    with trio.fail_after(1):
        await subscription.wait_source_started()
    renditions = packets.statistics()["renditions"]
    assert isinstance(renditions, dict) and renditions["source"]["packets_in"] == 0


async def test_an_h264_source_is_still_watched() -> None:
    packets = StreamPackets(renditions=["360p"])
    packets.feed_source(CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=b"\1\x64\0\x1f"))
    packets.feed_source(
        MediaPacket(kind=TrackKind.VIDEO, dts=0, pts=0, keyframe=True, data=b"\0\0\0\2\x65\1")
    )
    assert packets.subscribe("source") is not None
    renditions = packets.statistics()["renditions"]
    assert isinstance(renditions, dict) and renditions["source"]["packets_in"] == 1
