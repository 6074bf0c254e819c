"""The values a restream takes and shows: segments in, settings, status out."""

from __future__ import annotations

import enum
from typing import Any

import attrs

__all__ = [
    "DEFAULT_QUEUE",
    "ForwardSegment",
    "ForwardSettings",
    "ForwardState",
    "ForwardStatus",
]

DEFAULT_QUEUE = 8
"""Segments that may wait for one destination before the oldest is dropped."""


@attrs.frozen(kw_only=True)
class ForwardSegment:
    """One finished MPEG-TS segment of the forwarded rendition, in playlist order."""

    seq: int
    """Media sequence number."""
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")
    """The whole segment (MPEG-TS, starting with a keyframe)."""
    discontinuity: bool = False
    """Its timestamps do not continue the previous segment's (a new publisher, a jump, a gap)."""


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive (got {value})")


class ForwardState(enum.Enum):
    """Where a forward is in its life."""

    CONNECTING = "connecting"
    """Opening the first connection."""
    LIVE = "live"
    """Connected: the destination accepted the stream and segments go out as they come."""
    RETRYING = "retrying"
    """The connection failed or dropped; waiting out the backoff or connecting again."""
    STOPPED = "stopped"
    """Closed (or its task ended); it sends nothing more."""


@attrs.frozen(kw_only=True)
class ForwardSettings:
    """How a forward connects, waits and retries (seconds unless said otherwise)."""

    queue_segments: int = attrs.field(default=DEFAULT_QUEUE, validator=_positive)
    """Segments that may wait; when full the oldest is dropped."""
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    """Longest wait to connect and have the stream accepted."""
    write_timeout: float = attrs.field(default=10.0, validator=_positive)
    """Longest wait for the destination to take one segment."""
    backoff_initial: float = attrs.field(default=0.5, validator=_positive)
    """Wait before the first reconnect; doubles after each failure."""
    backoff_max: float = attrs.field(default=10.0, validator=_positive)
    """Longest wait between reconnects (at least ``backoff_initial``)."""

    @backoff_max.validator
    def _at_least_initial(self, attribute: attrs.Attribute[float], value: float) -> None:
        if value < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")


@attrs.frozen(kw_only=True)
class ForwardStatus:
    """What ``/api/status`` and ``GET /api/streams/{name}/forward`` show of one forward."""

    id: str
    url: str
    """The destination with its secrets masked."""
    rendition: str
    state: str
    """``connecting``, ``live``, ``retrying`` or ``stopped``."""
    bytes_sent: int
    """Bytes handed to the destination's connection (RTMP chunks, SRT payloads)."""
    segments_sent: int
    queued: int
    """Segments waiting to be sent."""
    segments_dropped: int
    """Segments dropped from a full queue or lost with a failed connection."""
    reconnects: int
    """Connections opened after a failure."""
    last_error: str | None
    """Why the latest connection failed, if one did."""
    since: float
    """When the forward entered its state (Unix time, seconds)."""
