"""The segmenter's warnings about what a publisher sent: the first of each kind is logged at
warning level, later ones at debug level (they are counted in ``statistics()`` instead)."""

from __future__ import annotations

import logging

import attrs

__all__ = ["Notices", "log"]

log = logging.getLogger("lpstream.ingest.segmenter")

_TEXTS = {
    "late": "packet at %d ms is not after its track's last one (late, duplicate or out of "
    "order): dropped",
    "jump": "timestamps jumped by %d ms: rebased, so the stream runs on from where it was",
    "pts": "presentation timestamp %d ms away from the decode timestamp: set to it",
    "refused": "the muxer refused a packet at %d ms (%s): dropped",
    "config": "new %s configuration ignored, the previous one stays: %s",
}


@attrs.define
class Notices:
    """Logs one stream's repairs: each kind at warning level once, then at debug level."""

    stream_name: str
    """Named in every message."""
    _noticed: set[str] = attrs.field(init=False, factory=set)

    def __call__(self, kind: str, *args: object) -> None:
        """Logs an event of ``kind`` (a key of the message table) with its arguments."""
        if kind in self._noticed:
            log.debug("stream %r: " + _TEXTS[kind], self.stream_name, *args)
            return
        self._noticed.add(kind)
        log.warning(
            "stream %r: " + _TEXTS[kind] + " (further ones are counted, not logged)",
            self.stream_name,
            *args,
        )
