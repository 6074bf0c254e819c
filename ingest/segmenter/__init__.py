"""Cuts a live stream of H.264/AAC packets into GOP-aligned MPEG-TS segments (and LL-HLS parts).

``Segmenter`` (``segmenter.py``) holds the cutting rules and is what callers use; the packets'
timestamps are made safe in ``timeline.py``, each segment is remuxed by PyAV in ``remux.py``,
and parts are tracked and cut out of the muxer's output in ``parts.py``. The events it hands
out are in ``events.py``.
"""

from .events import (
    PartCompleted,
    SegmentCompleted,
    SegmentData,
    SegmenterEvent,
    SegmenterStatistics,
    SegmentStarted,
)
from .segmenter import (
    AUDIO_ONLY_REFUSAL,
    MAX_REFUSED_IN_A_ROW,
    MIN_JUMP_SEGMENT,
    STARTUP_LIMIT,
    Segmenter,
)
from .timeline import MAX_TIMESTAMP_JUMP

__all__ = [
    "AUDIO_ONLY_REFUSAL",
    "MAX_REFUSED_IN_A_ROW",
    "MAX_TIMESTAMP_JUMP",
    "MIN_JUMP_SEGMENT",
    "STARTUP_LIMIT",
    "PartCompleted",
    "SegmentCompleted",
    "SegmentData",
    "SegmentStarted",
    "Segmenter",
    "SegmenterEvent",
    "SegmenterStatistics",
]
