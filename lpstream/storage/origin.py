"""The live origin: a stream's HLS written to a store as it is made, for a CDN to serve —
plain state, no I/O.

How this works: under ``{stream}/`` go each rendition's segments and live playlist
(``{rendition}/{seq}.ts``, ``{rendition}/index.m3u8``: the newest ``window`` stored segments)
and the master ``index.m3u8``. ``OriginObjects.stored`` answers the writes that follow a
stored segment — its media playlist, then the master when it changed — and the segments that
fell far enough behind the window to delete (``KEEP_EXTRA`` more are kept, for players a
little behind, as the gateway's own playback does). A fragmented-MP4 rendition's segments are
``{seq}.m4s`` next to their init sections ``init{n}.mp4``; an init section is deleted with the
last kept segment that refers to it. Segments are immutable for caches,
playlists live a second. The end writes every playlist once more with ``EXT-X-ENDLIST``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from lpstream.media import check_stream_name
from lpstream.playback.hls import KEEP_EXTRA, render_master
from lpstream.playback.init_sections import init_uri
from lpstream.playback.listed import ListedSegment
from lpstream.storage.stored_hls import (
    CACHE_LIVE_PLAYLIST,
    PLAYLIST_TYPE,
    ObjectWrite,
    StoredRendition,
    init_key,
    segment_key,
)

__all__ = ["OriginObjects"]


@attrs.define
class OriginObjects:
    """What a live stream writes to its origin store (see the module comment)."""

    stream: str
    rendition_order: Sequence[str]
    """Rendition names, source first."""
    window: int = 6
    """Segments each live playlist lists."""
    prefix: str = attrs.field(init=False)
    _renditions: dict[str, StoredRendition] = attrs.Factory(dict)
    _master: str | None = None

    def __attrs_post_init__(self) -> None:
        self.prefix = f"{check_stream_name(self.stream)}/"

    @property
    def renditions(self) -> Mapping[str, StoredRendition]:
        return self._renditions

    def master_key(self) -> str:
        return self.prefix + "index.m3u8"

    def segment_key(self, listed: ListedSegment) -> str:
        return segment_key(self.prefix, listed)

    def init_key(self, listed: ListedSegment) -> str | None:
        """Where the init section of an fMP4 segment goes (None: MPEG-TS has none)."""
        return init_key(self.prefix, listed)

    def start(self) -> list[ObjectWrite]:
        """Nothing is written before the first segment."""
        return []

    def stored(self, listed: ListedSegment, size: int) -> tuple[list[ObjectWrite], list[str]]:
        """``listed`` is in the store: the writes that list it, and the keys to delete."""
        rendition = self._renditions.get(listed.rendition)
        if rendition is None:
            rendition = self._renditions[listed.rendition] = StoredRendition(listed.rendition)
        rendition.add(listed, size)
        writes = [self._media(rendition, ended=False)]
        order = [*self.rendition_order]
        order += [n for n in self._renditions if n not in order]
        ordered = {n: self._renditions[n] for n in order if n in self._renditions}
        master = render_master(order, ordered) if order[0] in ordered else None
        if master is not None and master != self._master:
            self._master = master
            writes.append(
                ObjectWrite(self.master_key(), master.encode(), PLAYLIST_TYPE, CACHE_LIVE_PLAYLIST)
            )
        folder = f"{self.prefix}{rendition.name}/"
        dropped = rendition.forget_oldest(self.window + KEEP_EXTRA)
        kept_inits = {e.init for e in rendition.entries}
        unreferred = {e.init for e in dropped if e.init is not None} - kept_inits
        expired = [folder + old.uri for old in dropped]
        expired += [folder + init_uri(number) for number in sorted(unreferred)]
        return writes, expired

    def lost(self, rendition: str) -> None:
        """A segment of ``rendition`` will not be in the store."""
        stored = self._renditions.get(rendition)
        if stored is not None:
            stored.lose()

    def finish(self, now: float) -> list[ObjectWrite]:
        """The live playlists once more, ended."""
        return [self._media(r, ended=True) for r in self._renditions.values() if r.listed]

    def _media(self, rendition: StoredRendition, *, ended: bool) -> ObjectWrite:
        return ObjectWrite(
            key=f"{self.prefix}{rendition.name}/index.m3u8",
            data=rendition.render_media(window=self.window, ended=ended).encode(),
            content_type=PLAYLIST_TYPE,
            cache_control=CACHE_LIVE_PLAYLIST,
        )
