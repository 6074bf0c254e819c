"""What an RTMP publishing connection reports to its caller (besides media events)."""

from __future__ import annotations

import attrs

from lpstream.media import MediaEvent

__all__ = [
    "Connected",
    "ConnectionClosed",
    "Event",
    "PublishEnded",
    "PublishRequested",
]


@attrs.frozen(kw_only=True)
class Connected:
    """The client's ``connect`` was accepted."""

    app: str
    """The application name the client asked for (query string removed)."""
    tc_url: str
    """The ``tcUrl`` the client sent, or empty."""
    flash_ver: str
    """The client's ``flashVer`` (e.g. ``FMLE/3.0 (compatible; Lavf59.27.100)``), or empty."""


@attrs.frozen(kw_only=True)
class PublishRequested:
    """The client asked to publish; answer with ``accept_publish()`` or ``reject_publish()``."""

    stream_name: str
    """The stream name, query string removed (see :func:`lpstream.media.check_stream_name`)."""
    publish_type: str
    """``live``, ``record`` or ``append`` as the client sent it (``live`` if absent)."""
    query: str = ""
    """The query string the client sent after the name, without ``?`` (the ``key=…`` of an OBS
    stream key ``{stream}?key=…``), or ""."""


@attrs.frozen(kw_only=True)
class PublishEnded:
    """The publish that was accepted (or pending) is over."""

    stream_name: str
    """The stream that ended."""
    reason: str
    """What ended it: the client's command or ``connection closed``."""


@attrs.frozen(kw_only=True)
class ConnectionClosed:
    """The peer closed its side; no event follows."""

    reason: str
    """Why, in words."""


Event = Connected | PublishRequested | PublishEnded | ConnectionClosed | MediaEvent
"""Everything :meth:`~ingest.rtmp.protocol.RtmpServerConnection.next_event` returns."""
