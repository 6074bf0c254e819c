"""The forwards of one stream: added and removed through the API, fed by its playlists."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Collection

import attrs
import trio

from lpstream.errors import ProtocolError
from lpstream.media import check_stream_name
from lpstream.playback.listed import ListedSegment

from .forward import Forward
from .srt_push import srt_available
from .target import parse_forward_url
from .values import ForwardSegment, ForwardSettings, ForwardStatus

__all__ = ["DEFAULT_FORWARD_LIMIT", "Forwards"]

DEFAULT_FORWARD_LIMIT = 8
"""Forwards one stream may have at once."""


@attrs.define
class Forwards:
    """One stream's forwards; each runs as its own task in ``nursery``."""

    stream: str
    nursery: trio.Nursery
    """Where the forwards' tasks run."""
    settings: ForwardSettings = attrs.Factory(ForwardSettings)
    limit: int = DEFAULT_FORWARD_LIMIT
    """Most forwards at once (a budget: the next ``add`` is refused with 409)."""
    limiter: trio.CapacityLimiter | None = None
    """Bounds the worker threads that remux (None: trio's default limiter)."""
    ssl_context: ssl.SSLContext | None = None
    """What ``rtmps`` forwards trust (None: the system's certificate authorities)."""
    _forwards: dict[str, Forward] = attrs.field(factory=dict, init=False)

    def add(
        self, url: str, rendition: str, *, renditions: Collection[str] | None = None
    ) -> Forward:
        """Starts forwarding ``rendition`` to ``url``.

        Args:
            renditions: the stream's rendition names, when known; another name is refused.

        Raises:
            ProtocolError: 400 for a bad URL or rendition, 409 when the stream has ``limit``
                forwards or already forwards this rendition there, 501 for ``srt://`` where
                libsrt is missing.
        """
        target = parse_forward_url(url)
        try:
            check_stream_name(rendition, what="rendition name")
        except ValueError as exc:
            raise ProtocolError(str(exc), code=400) from exc
        if renditions is not None and rendition not in renditions:
            known = ", ".join(renditions)
            raise ProtocolError(
                f"stream {self.stream!r} has no rendition {rendition!r} (it has: {known})", code=400
            )
        if target.scheme == "srt" and not srt_available():
            raise ProtocolError(
                "srt forwarding needs libsrt, which this node does not have", code=501
            )
        if any(f.target.url == url and f.rendition == rendition for f in self._forwards.values()):
            raise ProtocolError(
                f"rendition {rendition!r} is already forwarded to {target.redacted}", code=409
            )
        if len(self._forwards) >= self.limit:
            raise ProtocolError(
                f"stream {self.stream!r} has {len(self._forwards)} forwards, the most allowed "
                f"(forward limit {self.limit})",
                code=409,
            )
        forward = Forward(
            id=secrets.token_hex(6),
            target=target,
            rendition=rendition,
            settings=self.settings,
            limiter=self.limiter,
            ssl_context=self.ssl_context,
        )
        self._forwards[forward.id] = forward
        self.nursery.start_soon(forward.run, name=f"forward {forward.id}")
        return forward

    def get(self, forward_id: str) -> Forward:
        """The forward with this id.

        Raises:
            ProtocolError: (404) there is none.
        """
        forward = self._forwards.get(forward_id)
        if forward is None:
            raise ProtocolError(f"stream {self.stream!r} has no forward {forward_id!r}", code=404)
        return forward

    def remove(self, forward_id: str) -> ForwardStatus:
        """Stops a forward and forgets it; returns its last status.

        Raises:
            ProtocolError: (404) there is no such forward.
        """
        forward = self.get(forward_id)
        del self._forwards[forward_id]
        forward.close()
        return forward.status()

    def offer(self, listed: ListedSegment) -> None:
        """Hands a listed segment to every forward of its rendition; never blocks."""
        for forward in self._forwards.values():
            if forward.rendition != listed.rendition:
                continue
            if listed.data is None:
                forward.mark_gap()
                continue
            # A fragmented-MP4 segment is remuxed whole: its init section, then its media.
            data = listed.data if listed.init is None else listed.init.data + listed.data
            forward.offer(
                ForwardSegment(seq=listed.seq, data=data, discontinuity=listed.discontinuity)
            )

    def all(self) -> list[Forward]:
        """Every forward, oldest first."""
        return list(self._forwards.values())

    def statuses(self) -> list[ForwardStatus]:
        """Every forward's status, oldest first."""
        return [forward.status() for forward in self._forwards.values()]

    def close(self) -> None:
        """Stops every forward (the stream ended or the node stops)."""
        for forward in self._forwards.values():
            forward.close()
        self._forwards.clear()
