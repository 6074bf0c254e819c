"""What the gateway reports about itself: frozen values, rendered to JSON by lpstream.http.status
(``/api/status``, and the live AI API's session status and events).

Nothing here names a session id or a secret. Money is a ``payments.pm.Wei`` (exact inside,
whole wei and ETH when rendered) and a price a ``payments.pm.PixelPrice``.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ingest.segmenter import SegmenterStatistics
from lpstream.gateway.stream_outputs import OutputsStatus
from lpstream.status_fields import INLINE, OMIT_NONE, LatencySummary
from payments.pm import PixelPrice, Wei

__all__ = [
    "GatewayStatus",
    "LatencySummary",
    "LiveAiStatus",
    "MemoryStatus",
    "OrchestratorFacts",
    "SenderStatus",
    "StreamStatistics",
    "StreamStatus",
]


@attrs.frozen(kw_only=True)
class StreamStatistics:
    """One live stream's figures (``LiveStream.statistics``)."""

    publish_latency_ms: LatencySummary
    """From a source segment's end at the gateway to its renditions being listed."""
    part_latency_ms: LatencySummary
    """From a source part's media arriving to the part being listed (LL-HLS)."""
    segments_in: int
    """Source segments cut so far."""
    segments_in_flight: int
    """Segments sent to an orchestrator and not yet settled."""
    webrtc: Mapping[str, object]
    """WebRTC (WHEP) fan-out figures per rendition (``StreamPackets.statistics``)."""
    segmenter: SegmenterStatistics
    """The segmenter's counts (timestamp repairs, forced cuts, refused packets)."""
    source: str | None
    """The source's ``WIDTHxHEIGHT`` once known."""


@attrs.frozen(kw_only=True)
class StreamStatus:
    """A stream the gateway serves: live, or ended and still listed for a while."""

    live: bool
    """Whether a publisher is sending it now."""
    renditions: tuple[str, ...]
    """Renditions with at least one segment listed."""
    statistics: StreamStatistics | None = attrs.field(default=None, metadata=INLINE)
    """Its figures (the last ones once ended); rendered at the stream's level."""
    publisher: str | None = attrs.field(default=None, metadata=OMIT_NONE)
    """Who publishes it (its publish grant's identity); absent once ended."""
    record: bool | None = attrs.field(default=None, metadata=OMIT_NONE)
    """True when its publish grant asked for it to be recorded; absent otherwise."""
    outputs: OutputsStatus | None = attrs.field(default=None, metadata=OMIT_NONE)
    """Its recording, live origin and restreams while live; absent without any."""
    ai: LiveAiStatus | None = attrs.field(default=None, metadata=OMIT_NONE)
    """Its live AI session while live (as ``GET /api/ai/{stream}``); absent without one."""


@attrs.frozen(kw_only=True)
class MemoryStatus:
    """The node-wide memory budget."""

    rss: int
    """Resident memory of the process, bytes (0 where unknown)."""
    budget: int
    """Bytes above which new streams and AI sessions are refused (0: no limit)."""
    refused_total: int
    """Streams and sessions refused for memory."""


@attrs.frozen(kw_only=True)
class GatewayStatus:
    """The gateway's streams and memory (``Gateway.status``)."""

    streams: Mapping[str, StreamStatus]
    """By stream name."""
    memory: MemoryStatus
    """The memory budget."""


@attrs.frozen(kw_only=True)
class OrchestratorFacts:
    """What the gateway knows of one orchestrator of its pool."""

    address: str
    """``host:port`` of its service."""
    connected: bool
    """Whether a QUIC connection is open."""
    suspended: bool
    """Whether it is suspended after failures."""
    failures: int
    """Failures in a row."""
    jobs: int
    """Segments it was given."""
    refused: str
    """Why it is not used (price, pipelines), or empty."""
    answered: bool
    """Whether its last info request was answered."""
    full: bool
    """Whether it last said it was at capacity."""
    pipelines: Mapping[str, Wei] | None
    """Live AI pipelines it offers with their price per second; None before its info."""
    price_per_pixel: PixelPrice | None = None
    """The transcoding price its last info asked; None before its info."""
    latency_score: float | None = None
    """Its last segment's round trip over the segment's duration (the selector's latency
    score: under 1 is faster than real time); None before it finished a segment."""


@attrs.frozen(kw_only=True)
class SenderStatus:
    """The gateway's side of the payments (``PaymentSender.status``)."""

    address: str
    """Its Ethereum account."""
    tickets_sent: int
    """Tickets signed and sent."""
    ev_sent: Wei
    """The expected value of every ticket sent."""
    credit: Mapping[str, Wei]
    """Credit left per ``orchestrator/session``: EV sent minus what was billed."""
    payment_bytes_median: int
    """Median size of a payment on the wire, bytes."""
    max_price_per_pixel: PixelPrice | None
    """The highest price it pays (``--max-price-per-unit``); None for any."""


@attrs.frozen(kw_only=True)
class LiveAiStatus:
    """A stream's live AI session (``LiveAiSession.status``, ``GET /api/ai/{stream}``)."""

    pipeline: str
    """The pipeline it runs."""
    params: Mapping[str, str | int | float | bool]
    """Its current parameters."""
    running: bool
    """Whether it runs."""
    stopped: str | None
    """Why it stopped; None while it runs."""
    orchestrator: str | None
    """``host:port`` of the orchestrator it is pinned to; None before one opened it."""
    price_per_second: Wei
    """The orchestrator's price (0 off-chain, and until the session opens)."""
    seconds_billed: int
    """Seconds the orchestrator billed."""
    billed: Wei
    """What those seconds cost."""
    credit: Wei
    """Paid to the orchestrator for this session and not billed yet."""
    orchestrator_balance: Wei | None
    """The balance the orchestrator last reported; None before it reported one."""
    settled: bool
    """Whether the orchestrator sent its final figures."""
    frames_in: int
    """Source frames sent to the pipeline."""
    frames_out: int
    """Frames it returned."""
    dropped: int
    """Frames it left out (behind real time)."""
    segments: int
    """Segments whose output was listed."""
    failures: int
    """Segments without output."""
    stats: Mapping[str, object]
    """The last ``stats`` event."""
    frame_latency_ms: LatencySummary
    """From a source frame reaching the gateway to its AI output coming back."""
    apps: int
    """Apps watching the session's events."""
    started_by: str | None = None
    """Who started it through the API (``api:<short hash>``, ``loopback``); None when the
    node started it (``--pipeline``, a publish grant)."""
    swaps: int = 0
    """Times the session moved to another orchestrator."""
    last_swap_gap_ms: int | None = None
    """Milliseconds without AI frames at the last swap (last frame of the old orchestrator to
    the first of the new one); None before any."""
