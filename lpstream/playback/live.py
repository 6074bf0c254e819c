"""Blocking LL-HLS requests on trio: the thin driver over ``llhls.LowLatencyStream``.

How this works:

* ``LivePlayback`` pairs one stream's ``LowLatencyStream`` (the sans-IO state, which decides
  everything) with a ``trio.Event``. The publisher side hands things in to ``stream`` and then
  calls ``notify()``; when the stream's ``version`` moved, the event is set and replaced by a
  fresh one, so every request blocked on the old one wakes.
* ``answer_playlist`` / ``answer_part`` ask the stream. On ``WaitForUpdate`` they wait for the
  event, ask again, and so on, all under the one timeout the first answer gave; past it they
  answer ``Refused(503)``. Any other answer is returned as it is.
* At most ``max_blocked`` requests of a stream wait at once; one more is refused with 503 at
  once, so clients cannot pile up waiting requests (each holds a task and a connection).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import attrs
import trio

from lpstream.playback.llhls import (
    LowLatencyStream,
    PartAnswer,
    PartReady,
    PlaylistAnswer,
    PlaylistReady,
    Refused,
    WaitForUpdate,
)

__all__ = ["DEFAULT_MAX_BLOCKED", "LivePlayback"]

DEFAULT_MAX_BLOCKED = 1000
"""Requests of one stream that may be blocked at once."""

_Ready = TypeVar("_Ready", PlaylistReady, PartReady)


@attrs.define
class LivePlayback:
    """One stream's playback state and the requests waiting on it (see the module comment)."""

    stream: LowLatencyStream
    """The playlists, parts and segments; hand things in here, then call ``notify``."""
    max_blocked: int = DEFAULT_MAX_BLOCKED
    """How many requests may wait for an update at once."""
    _changed: trio.Event = attrs.field(init=False, factory=trio.Event)
    _notified_version: int = attrs.field(init=False, default=0)
    _blocked: int = attrs.field(init=False, default=0)

    @property
    def blocked(self) -> int:
        """Requests waiting for an update now."""
        return self._blocked

    def notify(self) -> None:
        """Wakes the waiting requests if the stream changed since the last call."""
        if self.stream.version != self._notified_version:
            self._notified_version = self.stream.version
            self._changed.set()
            self._changed = trio.Event()

    async def wait_changed(self, version: int) -> None:
        """Returns once the stream's version is no longer ``version``."""
        while self.stream.version == version:
            await self._changed.wait()

    async def answer_playlist(self, rendition: str, query: Mapping[str, str]) -> PlaylistAnswer:
        """``LowLatencyStream.answer_playlist``, waiting while it says to wait."""
        return await self._answer(lambda: self.stream.answer_playlist(rendition, query))

    async def answer_part(self, rendition: str, seq: int, index: int) -> PartAnswer:
        """``LowLatencyStream.answer_part``, waiting while it says to wait."""
        return await self._answer(lambda: self.stream.answer_part(rendition, seq, index))

    async def _answer(
        self, ask: Callable[[], _Ready | WaitForUpdate | Refused]
    ) -> _Ready | WaitForUpdate | Refused:
        answer = ask()
        if not isinstance(answer, WaitForUpdate):
            return answer
        if self._blocked >= self.max_blocked:
            return Refused(code=503, reason="too many requests waiting on this stream")
        self._blocked += 1
        try:
            with trio.move_on_after(answer.timeout):
                while isinstance(answer, WaitForUpdate):
                    await self.wait_changed(answer.version)
                    answer = ask()
        finally:
            self._blocked -= 1
        if isinstance(answer, WaitForUpdate):
            return Refused(code=503, reason="no update in time, retry")
        return answer
