"""Media Initialization Sections of fragmented-MP4 renditions (``EXT-X-MAP``), as plain state.

How this works:

* A rendition is MPEG-TS until it is given an init section (``ftyp`` + ``moov``); from then
  on its segments and parts are fMP4 media (``moof`` + ``mdat``), named ``{seq}.m4s`` and
  ``{seq}.{index}.m4s``, and each refers to the init section in force when it was handed in,
  by number: ``init{n}.mp4``. ``InitSections`` numbers them per rendition: bytes equal to a
  kept section get its number back, other bytes a new one, so a player fetches a section
  again only when it really changed.
* A playlist lists ``EXT-X-MAP`` before its first fMP4 segment (or part), wherever the section
  changes, and after every ``EXT-X-DISCONTINUITY`` (:func:`needs_map`); RFC 8216 asks for
  ``EXT-X-VERSION`` 6 or more then (:data:`MAP_VERSION`).
* Sections are kept while something listed or waiting refers to them (``retain``), and never
  more than :data:`MAX_KEPT_INITS` per rendition, so a caller changing them on every segment
  cannot grow memory.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

__all__ = [
    "MAP_VERSION",
    "MAX_KEPT_INITS",
    "InitSection",
    "InitSections",
    "init_uri",
    "map_tag",
    "needs_map",
]

MAP_VERSION = 6
"""EXT-X-VERSION a media playlist needs once it lists EXT-X-MAP (RFC 8216, section 7)."""
MAX_KEPT_INITS = 16
"""Init sections kept per rendition at most; past it the oldest goes."""


def init_uri(number: int) -> str:
    """URI of init section ``number``, relative to its media playlist."""
    return f"init{number}.mp4"


def map_tag(number: int) -> str:
    """The EXT-X-MAP line naming init section ``number``."""
    return f'#EXT-X-MAP:URI="{init_uri(number)}"'


def needs_map(init: int | None, previous: int | None, *, first: bool, discontinuity: bool) -> bool:
    """Whether EXT-X-MAP goes before a segment (or the first part of one) that refers to init
    section ``init`` (None: MPEG-TS, no map), ``previous`` being the last one listed: before
    the first one listed, after a discontinuity, and where it changes."""
    return init is not None and (first or discontinuity or init != previous)


@attrs.frozen(kw_only=True)
class InitSection:
    """One Media Initialization Section of a rendition."""

    number: int
    """Its ``n`` in ``init{n}.mp4``."""
    data: bytes
    """``ftyp`` + ``moov``."""

    @property
    def uri(self) -> str:
        return init_uri(self.number)


@attrs.define
class InitSections:
    """The init sections of one rendition and the one in force (see the module comment)."""

    _kept: dict[int, bytes] = attrs.field(init=False, factory=dict)
    _current: int | None = attrs.field(init=False, default=None)
    _next: int = attrs.field(init=False, default=0)

    @property
    def current(self) -> int | None:
        """Number of the section what is handed in now refers to; None: MPEG-TS."""
        return self._current

    def set(self, data: bytes) -> int:
        """Makes ``data`` the section in force; answers its number.

        Raises:
            ValueError: ``data`` is empty.
        """
        if not data:
            raise ValueError("an init section has bytes")
        for number, kept in self._kept.items():
            if kept == data:
                self._current = number
                return number
        number = self._next
        self._next += 1
        self._kept[number] = data
        self._current = number
        while len(self._kept) > MAX_KEPT_INITS:
            del self._kept[min(n for n in self._kept if n != number)]
        return number

    def get(self, number: int) -> InitSection | None:
        """Section ``number``, while it is kept."""
        data = self._kept.get(number)
        return None if data is None else InitSection(number=number, data=data)

    def retain(self, referred: Iterable[int | None]) -> None:
        """Forgets every section but the one in force and those in ``referred``."""
        keep = {n for n in referred if n is not None}
        if self._current is not None:
            keep.add(self._current)
        for number in [n for n in self._kept if n not in keep]:
            del self._kept[number]
