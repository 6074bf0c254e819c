"""LL-HLS blocking requests: what a playlist or part request asks for, and what to answer.

How this works:

Blocking playlist reload is a decision, not a wait. :func:`answer_playlist` reads
``_HLS_msn`` / ``_HLS_part`` / ``_HLS_skip`` (a :class:`PlaylistRequest`) and answers
``PlaylistReady`` (send it), ``WaitForUpdate`` (ask again once the stream's ``version``
differs from the one given; answer 503 after ``timeout`` seconds) or ``Refused`` (400:
malformed, an msn more than two segments past the last one, a part more than the Advance Part
Limit ahead; 404: nothing listed yet). As the spec says, a part index past the last part of a
complete segment asks for part 0 of the next. :func:`answer_part` does the same for part
bytes, so the preload-hinted part can be held open. The waiting itself is the driver's
(``live.py``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from lpstream.errors import RemoteProtocolError

if TYPE_CHECKING:
    from lpstream.playback.llhls_playlist import LowLatencyPlaylist, RenditionReport

__all__ = [
    "BLOCKING_SPAN",
    "MSN_AHEAD_LIMIT",
    "PartAnswer",
    "PartReady",
    "PlaylistAnswer",
    "PlaylistReady",
    "PlaylistRequest",
    "Refused",
    "SkipRequest",
    "WaitForUpdate",
    "answer_part",
    "answer_playlist",
    "refusal",
    "wait_for_update",
]

BLOCKING_SPAN = 3
"""How long a blocked request is held, in target durations, before the driver answers 503."""
MSN_AHEAD_LIMIT = 2
"""How many segments past the last one a blocking request may ask for (the spec's rule)."""

_DIRECTIVE = re.compile(r"[0-9]{1,15}")


class SkipRequest(enum.Enum):
    """What ``_HLS_skip`` asked for."""

    NO = "NO"
    """A full playlist."""
    YES = "YES"
    """A delta update: old segments replaced by EXT-X-SKIP."""
    V2 = "v2"
    """A delta update that also skips date ranges (this server lists none)."""


_SKIP_VALUES = {"YES": SkipRequest.YES, "v2": SkipRequest.V2}


def _part_needs_msn(instance: PlaylistRequest, attribute: Any, value: int | None) -> None:
    if value is not None and instance.msn is None:
        raise ValueError("a part directive needs an msn directive")


@attrs.frozen(kw_only=True)
class PlaylistRequest:
    """The delivery directives of one media playlist request."""

    msn: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    """``_HLS_msn``: hold the answer until segment ``msn`` (or part ``part`` of it) is listed."""
    part: int | None = attrs.field(
        default=None,
        validator=[attrs.validators.optional(attrs.validators.ge(0)), _part_needs_msn],
    )
    """``_HLS_part``: the part of segment ``msn`` to wait for."""
    skip: SkipRequest = SkipRequest.NO
    """``_HLS_skip``: full playlist or delta update."""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> PlaylistRequest:
        """Reads the directives of a query string; other parameters are ignored.

        Raises:
            RemoteProtocolError: (400) a directive is malformed or ``_HLS_part`` comes alone.
        """
        msn = _directive(query, "_HLS_msn")
        part = _directive(query, "_HLS_part")
        if part is not None and msn is None:
            raise RemoteProtocolError("_HLS_part needs _HLS_msn", code=400)
        raw_skip = query.get("_HLS_skip")
        skip = SkipRequest.NO if raw_skip is None else _SKIP_VALUES.get(raw_skip)
        if skip is None:
            raise RemoteProtocolError(
                f"_HLS_skip must be YES or v2, not {str(raw_skip)[:20]!r}", code=400
            )
        return cls(msn=msn, part=part, skip=skip)


def _directive(query: Mapping[str, str], key: str) -> int | None:
    raw = query.get(key)
    if raw is None:
        return None
    if not _DIRECTIVE.fullmatch(raw):
        raise RemoteProtocolError(
            f"{key} must be a non-negative integer, not {raw[:20]!r}", code=400
        )
    return int(raw)


@attrs.frozen(kw_only=True)
class PlaylistReady:
    """Answer the playlist request now."""

    text: str
    """The playlist (full, or a delta update if one was asked for)."""


@attrs.frozen(kw_only=True)
class PartReady:
    """Answer the part request now."""

    data: bytes
    """The part's bytes: MPEG-TS, or fMP4 media (``moof`` + ``mdat``) when ``fmp4``."""
    fmp4: bool = False
    """The part is fragmented MP4 (served as ``.m4s``), not MPEG-TS (``.ts``)."""


@attrs.frozen(kw_only=True)
class WaitForUpdate:
    """Hold the request: ask again once the stream's ``version`` is no longer ``version``."""

    version: int
    """The stream version the answer was given at."""
    timeout: float
    """Seconds to hold the request in all; past them, answer 503."""


@attrs.frozen(kw_only=True)
class Refused:
    """Answer the request with an error status."""

    code: int
    """HTTP status: 400 for a bad request, 404 for something that does not (or no longer) exist."""
    reason: str
    """A short explanation for the response body."""


PlaylistAnswer: TypeAlias = PlaylistReady | WaitForUpdate | Refused
"""What ``LowLatencyStream.answer_playlist`` says to do with a playlist request."""
PartAnswer: TypeAlias = PartReady | WaitForUpdate | Refused
"""What ``LowLatencyStream.answer_part`` says to do with a part request."""


def refusal(playlist: LowLatencyPlaylist, request: PlaylistRequest) -> Refused | None:
    """The 400 a blocking request earns by asking too far ahead, if it does."""
    last = playlist.last_position
    if request.msn is None or last is None:
        return None
    if request.msn > last[0] + MSN_AHEAD_LIMIT:
        return Refused(code=400, reason=f"_HLS_msn={request.msn} is too far ahead")
    if request.part is not None:
        ahead = playlist.parts_ahead(request.msn, request.part)
        if ahead is not None and ahead > playlist.advance_part_limit:
            return Refused(code=400, reason=f"_HLS_part={request.part} is too far ahead")
    return None


def answer_playlist(
    playlist: LowLatencyPlaylist,
    query: Mapping[str, str],
    *,
    version: int,
    reports: Sequence[RenditionReport] = (),
) -> PlaylistAnswer:
    """Decides what to do with a request for ``playlist`` and its query string, the stream
    being at ``version``; a playlist sent carries ``reports``."""
    try:
        request = PlaylistRequest.from_query(query)
    except RemoteProtocolError as exc:
        return Refused(code=exc.code, reason=exc.reason)
    if playlist.last_position is None:
        return Refused(code=404, reason="nothing of this rendition yet")
    if request.msn is not None and not playlist.ended:
        refused = refusal(playlist, request)
        if refused is not None:
            return refused
        if not playlist.contains(request.msn, request.part):
            return wait_for_update(playlist, version)
    return PlaylistReady(text=playlist.render(skip=request.skip, reports=reports))


def answer_part(
    playlist: LowLatencyPlaylist, seq: int, index: int, data: bytes | None, *, version: int
) -> PartAnswer:
    """Decides what to do with a request for part ``index`` of segment ``seq`` of
    ``playlist``, whose bytes are ``data`` if it is published, the stream being at
    ``version``. A part not published yet but close ahead (the preload hint) is waited for."""
    if data is not None:
        return PartReady(data=data)
    last = playlist.last_position
    ahead = playlist.parts_ahead(seq, index)
    if (
        playlist.ended
        or last is None
        or ahead is None
        or seq > last[0] + MSN_AHEAD_LIMIT
        or ahead > playlist.advance_part_limit
    ):
        return Refused(code=404, reason="part is not available")
    return wait_for_update(playlist, version)


def wait_for_update(playlist: LowLatencyPlaylist, version: int) -> WaitForUpdate:
    """Hold a request for ``playlist`` until the stream moves past ``version``."""
    return WaitForUpdate(version=version, timeout=float(BLOCKING_SPAN * playlist.target_duration))
