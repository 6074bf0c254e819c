"""What a live stream's renditions are published through and recorded in: one value the
publish session hands each of them (``RenditionLadder``, ``AiRendition``)."""

from __future__ import annotations

import attrs

from lpstream.gateway.latency import LatencyRecorder
from lpstream.gateway.source import SourceFormat
from lpstream.metrics import Metrics
from lpstream.playback.live import LivePlayback
from lpstream.playback.live_packets import StreamPackets
from lpstream.playback.llhls import LowLatencyStream

__all__ = ["RenditionOutlets"]


@attrs.frozen(kw_only=True)
class RenditionOutlets:
    """A stream's playlists and packet fan-out, and the facts and figures its renditions
    share."""

    stream: str
    """Stream name."""
    playback: LivePlayback
    """The stream's playlists, and the viewers' requests waiting on them."""
    packets: StreamPackets
    """The WebRTC (WHEP) viewers' packet fan-out."""
    source: SourceFormat
    """The source's facts (rendition sizes, codecs and bandwidths derive from them)."""
    latency: LatencyRecorder
    """The stream's latency figures."""
    metrics: Metrics
    segment_target: float
    """Seconds a segment lasts by design (a gap's duration where the real one is unknown)."""

    @property
    def hls(self) -> LowLatencyStream:
        """The playlists."""
        return self.playback.stream

    def notify(self) -> None:
        """Wakes the viewers waiting for a playlist change (after a batch of hand-ins)."""
        self.playback.notify()
