"""The settings of what outlasts a live stream and travels beyond the gateway: recordings,
the live origin in object storage, restreams."""

from __future__ import annotations

import re

import attrs

from lpstream.config.setting import setting
from lpstream.errors import ConfigError

__all__ = ["OutputsSection", "duration_text", "parse_duration"]

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, flag: str = "duration") -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` as seconds (above 0)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(f"{flag}: {text!r} is not a duration (e.g. 90s, 15m, 12h, 7d, 2w)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def duration_text(seconds: float | None) -> str | None:
    """A duration as ``parse_duration`` reads it back (the largest whole unit)."""
    if seconds is None:
        return None
    for unit in "wdhm":
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


@attrs.frozen(kw_only=True)
class OutputsSection:
    """Recordings, the live origin and restreams (gateway)."""

    record: bool = setting(
        False,
        "Record every stream into --record-store (a stream can also be recorded through "
        "POST /api/streams/{name}/record or its publish grant).",
        kind=bool,
    )
    record_store: str | None = setting(
        None,
        "Where recordings go: file:///path or s3://bucket/prefix?endpoint=URL&region=R "
        "(credentials from the usual AWS variables or profile). Replayed at "
        "/vod/{stream}/{id}/index.m3u8 and listed at /api/recordings.",
    )
    record_retention: float | None = setting(
        None,
        "Delete recordings that ended longer ago than this (90s, 15m, 12h, 7d, 2w); default: "
        "keep them.",
        kind=float,
        parse=parse_duration,
        show=duration_text,
    )
    hls_origin: str | None = setting(
        None,
        "Also write every stream's live HLS here (file:///path or s3://bucket/prefix?…) for a "
        "CDN to serve: {stream}/index.m3u8, {stream}/{rendition}/index.m3u8, segments.",
    )
    forward: tuple[str, ...] = setting(
        (),
        "Restream every stream's source to this rtmp:// or srt:// URL ({stream} in it is "
        "the stream name; repeat for more).",
        multiple=True,
        secret=True,
    )
    store_queue: int = setting(
        16,
        "Segments of one stream that may wait for a store; past it the oldest is dropped "
        "(counted, and the recording marks the gap).",
        kind=int,
        low=1,
        high=1000,
    )
