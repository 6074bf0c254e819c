"""Recordings in a store: where their objects go, what their manifest says, which objects to
write as a recording grows and ends — plain state, no I/O.

How this works:

* One recording per publish session, under ``{stream}/{id}/``: each rendition's segments and
  playlist under ``{rendition}/`` (``{seq}.ts``, ``index.m3u8``; a fragmented-MP4 rendition
  has ``{seq}.m4s`` and its init sections ``init{n}.mp4`` there), the master playlist
  ``index.m3u8`` and ``recording.json`` (the manifest: state, start, end, renditions, bytes,
  segments lost). The id is the start time in UTC, ``20261207T110000Z`` (``-2``, ``-3`` …
  when a name is recorded twice in one second).
* While it records, each media playlist is an ``EVENT`` playlist rewritten after every stored
  segment, so a gateway killed mid-stream leaves a recording that plays up to its last stored
  segment. The end rewrites them as ``VOD`` with ``EXT-X-ENDLIST`` and the manifest as ended;
  a recovery pass at start does the same for a recording whose gateway died
  (:func:`close_event_playlist`, state ``interrupted``).
* ``RecordingObjects.stored`` answers the writes that follow a stored segment: its media
  playlist, then the master when it changed (a playlist is written after what it names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import msgspec

from lpstream.media import check_stream_name
from lpstream.playback.hls import render_master
from lpstream.playback.listed import ListedSegment
from lpstream.storage.store import InvalidKey, StoreError
from lpstream.storage.stored_hls import (
    CACHE_EVENT_PLAYLIST,
    CACHE_VOD_PLAYLIST,
    PLAYLIST_TYPE,
    ObjectWrite,
    StoredRendition,
    init_key,
    segment_key,
)

__all__ = [
    "MANIFEST",
    "MASTER",
    "Manifest",
    "RecordingObjects",
    "RenditionSummary",
    "check_recording_id",
    "close_event_playlist",
    "manifest_key",
    "new_recording_id",
    "playlist_duration",
    "recording_prefix",
]

MANIFEST = "recording.json"
MASTER = "index.m3u8"
_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z(?:-[0-9]{1,4})?")
_MANIFEST_EVERY = 5
"""The manifest is rewritten every this many stored source segments (and at the start, the
end and when the renditions change), so a listing of a recording in progress is close."""


def check_recording_id(recording: str) -> str:
    """``recording`` if it is a recording id; raises ``InvalidKey`` otherwise."""
    if not isinstance(recording, str) or not _ID.fullmatch(recording):
        raise InvalidKey(f"invalid recording id {str(recording)[:40]!r}")
    return recording


def new_recording_id(now: float, taken: int = 0) -> str:
    """The id of a recording that starts at ``now`` (seconds since the epoch); ``taken``: how
    many recordings of the stream already started in that second."""
    stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    return stamp if taken == 0 else f"{stamp}-{taken + 1}"


def recording_prefix(stream: str, recording: str) -> str:
    """Where a recording's objects are, ending with ``/``; raises ``InvalidKey`` for a bad
    stream name or id."""
    try:
        check_stream_name(stream)
    except ValueError as exc:
        raise InvalidKey(str(exc)) from None
    return f"{stream}/{check_recording_id(recording)}/"


def manifest_key(stream: str, recording: str) -> str:
    return recording_prefix(stream, recording) + MANIFEST


class RenditionSummary(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One rendition of a recording, as its manifest lists it."""

    segments: int
    duration: float
    bytes: int


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """``recording.json``: what ``GET /api/recordings`` lists of a recording."""

    stream: str
    id: str
    state: str
    """``recording``, ``ended`` or ``interrupted`` (closed by a recovery pass)."""
    started_at: float
    """Seconds since the epoch."""
    ended_at: float | None = None
    renditions: dict[str, RenditionSummary] = {}
    lost_segments: int = 0
    """Segments that did not reach the store (the gaps the playlists mark)."""

    @property
    def duration(self) -> float:
        """The longest rendition's duration, in seconds."""
        return max((r.duration for r in self.renditions.values()), default=0.0)

    @property
    def total_bytes(self) -> int:
        """Bytes of every rendition's segments."""
        return sum(r.bytes for r in self.renditions.values())

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Raises ``StoreError`` for bytes that are not a manifest."""
        try:
            return msgspec.json.decode(data, type=cls)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StoreError(f"unreadable recording manifest: {exc}") from None

    def public(self) -> dict[str, Any]:
        """What the API shows of it."""
        return {
            "stream": self.stream,
            "id": self.id,
            "state": self.state,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration": round(self.duration, 3),
            "bytes": self.total_bytes,
            "renditions": {
                name: msgspec.structs.asdict(r) for name, r in sorted(self.renditions.items())
            },
            "lost_segments": self.lost_segments,
            "url": f"/vod/{self.stream}/{self.id}/{MASTER}",
        }


@attrs.define
class RecordingObjects:
    """What a recording writes to its store (see the module comment)."""

    stream: str
    id: str
    started_at: float
    rendition_order: Sequence[str]
    """Rendition names, source first (the master playlist's order)."""
    prefix: str = attrs.field(init=False)
    """Where its objects go (``{stream}/{id}/``)."""
    _renditions: dict[str, StoredRendition] = attrs.Factory(dict)
    _master: str | None = None
    _stored_source: int = 0

    def __attrs_post_init__(self) -> None:
        self.prefix = recording_prefix(self.stream, self.id)

    @property
    def renditions(self) -> Mapping[str, StoredRendition]:
        return self._renditions

    def segment_key(self, listed: ListedSegment) -> str:
        return segment_key(self.prefix, listed)

    def init_key(self, listed: ListedSegment) -> str | None:
        """Where the init section of an fMP4 segment goes (None: MPEG-TS has none)."""
        return init_key(self.prefix, listed)

    def start(self) -> list[ObjectWrite]:
        """The manifest of a recording that starts."""
        return [self._manifest("recording", None)]

    def stored(self, listed: ListedSegment, size: int) -> tuple[list[ObjectWrite], list[str]]:
        """``listed`` is in the store: the writes that list it (and no keys to delete)."""
        rendition = self._rendition(listed.rendition)
        rendition.add(listed, size)
        writes = [self._media(rendition, "EVENT", ended=False)]
        master = self._render_master()
        changed = master is not None and master != self._master
        if changed:
            self._master = master
            writes.append(self._master_write(CACHE_EVENT_PLAYLIST))
        if listed.rendition == self.rendition_order[0]:
            self._stored_source += 1
        if changed or (self._stored_source % _MANIFEST_EVERY == 1):
            writes.append(self._manifest("recording", None))
        return writes, []

    def lost(self, rendition: str) -> None:
        """A segment of ``rendition`` will not be in the store."""
        self._rendition(rendition).lose()

    def finish(self, now: float) -> list[ObjectWrite]:
        """The writes that end the recording: VOD playlists, master, manifest."""
        writes = [self._media(r, "VOD", ended=True) for r in self._renditions.values() if r.listed]
        master = self._render_master(final=True)
        if master is not None:
            self._master = master
            writes.append(self._master_write(CACHE_VOD_PLAYLIST))
        writes.append(self._manifest("ended", now))
        return writes

    def _rendition(self, name: str) -> StoredRendition:
        rendition = self._renditions.get(name)
        if rendition is None:
            rendition = self._renditions[name] = StoredRendition(name)
        return rendition

    def _media(self, rendition: StoredRendition, kind: str, *, ended: bool) -> ObjectWrite:
        return ObjectWrite(
            key=f"{self.prefix}{rendition.name}/{MASTER}",
            data=rendition.render_media(playlist_type=kind, ended=ended).encode(),
            content_type=PLAYLIST_TYPE,
            cache_control=CACHE_VOD_PLAYLIST if ended else CACHE_EVENT_PLAYLIST,
        )

    def _render_master(self, *, final: bool = False) -> str | None:
        """The master playlist: live's rule while recording (the source, and the ladder or
        three source segments); at the end, whatever rendition has its info."""
        order = [
            *self.rendition_order,
            *(n for n in self._renditions if n not in self.rendition_order),
        ]
        if final:
            order = [n for n in order if n in self._renditions and self._renditions[n].info]
        if not order or order[0] not in self._renditions:
            return None
        ordered = {n: self._renditions[n] for n in order if n in self._renditions}
        return render_master(order, ordered)

    def _master_write(self, cache_control: str) -> ObjectWrite:
        assert self._master is not None
        return ObjectWrite(
            key=self.prefix + MASTER,
            data=self._master.encode(),
            content_type=PLAYLIST_TYPE,
            cache_control=cache_control,
        )

    def _manifest(self, state: str, ended_at: float | None) -> ObjectWrite:
        manifest = Manifest(
            stream=self.stream,
            id=self.id,
            state=state,
            started_at=self.started_at,
            ended_at=ended_at,
            renditions={
                name: RenditionSummary(
                    segments=len(r.entries), duration=round(r.duration, 3), bytes=r.bytes
                )
                for name, r in self._renditions.items()
                if r.listed
            },
            lost_segments=sum(r.lost for r in self._renditions.values()),
        )
        return ObjectWrite(
            key=self.prefix + MANIFEST,
            data=manifest.encode(),
            content_type="application/json",
            cache_control="no-cache",
        )


def close_event_playlist(text: str) -> str:
    """An ``EVENT`` media playlist of a recording whose gateway died, as the ``VOD`` playlist
    of what it lists."""
    lines = [line for line in text.splitlines() if line and line != "#EXT-X-ENDLIST"]
    lines = [
        "#EXT-X-PLAYLIST-TYPE:VOD" if line.startswith("#EXT-X-PLAYLIST-TYPE:") else line
        for line in lines
    ]
    return "\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n"


def playlist_duration(text: str) -> tuple[int, float]:
    """Segments and seconds a media playlist lists."""
    durations = [
        float(line[len("#EXTINF:") :].split(",", 1)[0])
        for line in text.splitlines()
        if line.startswith("#EXTINF:")
    ]
    return len(durations), sum(durations)
