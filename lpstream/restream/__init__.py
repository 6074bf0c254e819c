"""Restreaming: a live stream's rendition forwarded, packet for packet, to RTMP or SRT.

``POST /api/streams/{name}/forward`` adds a :class:`Forward` to the stream's
:class:`Forwards`; the stream's playlists hand each finished segment to
:meth:`Forwards.offer`. A forward remuxes (no re-encode) into FLV for ``rtmp://`` and
``rtmps://`` or MPEG-TS for ``srt://``, reconnects with backoff when the destination drops,
and shows its state in :meth:`Forward.status` with the stream key masked.
"""

from __future__ import annotations

from .forward import Forward
from .forwards import DEFAULT_FORWARD_LIMIT, Forwards
from .srt_push import srt_available
from .target import MAX_URL_LENGTH, ForwardTarget, parse_forward_url
from .values import (
    DEFAULT_QUEUE,
    ForwardSegment,
    ForwardSettings,
    ForwardState,
    ForwardStatus,
)

__all__ = [
    "DEFAULT_FORWARD_LIMIT",
    "DEFAULT_QUEUE",
    "MAX_URL_LENGTH",
    "Forward",
    "ForwardSegment",
    "ForwardSettings",
    "ForwardState",
    "ForwardStatus",
    "ForwardTarget",
    "Forwards",
    "parse_forward_url",
    "srt_available",
]
