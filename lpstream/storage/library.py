"""The recordings already in a store: listing them, closing those a dead gateway left open,
deleting old ones, reading their objects back for ``/vod/``.

How this works: every recording has a manifest, ``{stream}/{id}/recording.json``
(``lpstream.storage.recordings``), so a listing lists manifests. The recovery pass at start
finds manifests still saying ``recording`` that no running stream owns (at start: none),
rewrites each rendition's ``EVENT`` playlist as ``VOD`` with ``EXT-X-ENDLIST`` (it names only
stored segments, so the recording plays to its last one) and marks the manifest
``interrupted``. Retention deletes every object of a recording that ended longer ago than
the retention.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection, Sequence

import attrs
import msgspec
import trio

from lpstream.media import check_stream_name
from lpstream.storage.recordings import (
    MANIFEST,
    Manifest,
    RenditionSummary,
    check_recording_id,
    close_event_playlist,
    manifest_key,
    playlist_duration,
    recording_prefix,
)
from lpstream.storage.store import InvalidKey, ObjectInfo, ObjectStore, StoreError
from lpstream.storage.stored_hls import CACHE_VOD_PLAYLIST, PLAYLIST_TYPE

__all__ = ["RecordingLibrary", "vod_key"]

log = logging.getLogger("lpstream.storage")

_MEDIA_PLAYLIST = re.compile(r"([A-Za-z0-9_-][A-Za-z0-9._-]*)/index\.m3u8")
_VOD_PATH = re.compile(
    r"(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}/)?"
    r"(?:index\.m3u8|[0-9]{1,15}\.(?:ts|m4s)|init[0-9]{1,15}\.mp4)"
)


def vod_key(stream: str, recording: str, path: str) -> str:
    """The key of a recording's object at ``path`` under ``/vod/{stream}/{recording}/``: the
    master ``index.m3u8``, ``{rendition}/index.m3u8``, ``{rendition}/{seq}.ts``, or of a
    fragmented-MP4 rendition ``{rendition}/{seq}.m4s`` and ``{rendition}/init{n}.mp4``.

    Raises:
        InvalidKey: the stream name, id or path is not one a recording has.
    """
    if not _VOD_PATH.fullmatch(path):
        raise InvalidKey(f"no such recording object {path[:80]!r}")
    return recording_prefix(stream, recording) + path


@attrs.define
class RecordingLibrary:
    """The recordings of one store (see the module comment)."""

    store: ObjectStore
    _closing: trio.Lock = attrs.Factory(trio.Lock)

    async def manifests(self, stream: str | None = None) -> list[Manifest]:
        """Every readable recording manifest (of ``stream``, if given), oldest first."""
        prefix = ""
        if stream is not None:
            try:
                prefix = f"{check_stream_name(stream)}/"
            except ValueError as exc:
                raise InvalidKey(str(exc)) from None
        found = [o for o in await self.store.list(prefix) if o.key.endswith("/" + MANIFEST)]
        manifests = []
        for info in found:
            data = await self.store.get(info.key)
            if data is None:
                continue
            try:
                manifests.append(Manifest.decode(data))
            except StoreError as exc:
                log.warning("recording manifest %s: %s", info.key, exc)
        return sorted(manifests, key=lambda m: (m.started_at, m.stream, m.id))

    async def manifest(self, stream: str, recording: str) -> Manifest | None:
        data = await self.store.get(manifest_key(stream, recording))
        return None if data is None else Manifest.decode(data)

    async def read(self, stream: str, recording: str, path: str) -> bytes | None:
        """A recording's object (see :func:`vod_key`); None if there is none."""
        check_recording_id(recording)
        return await self.store.get(vod_key(stream, recording, path))

    async def recover(self, live: Collection[tuple[str, str]] = ()) -> list[Manifest]:
        """Closes every recording left ``recording`` by a gateway that died, except those in
        ``live`` (``(stream, id)`` pairs being written now); answers the closed ones."""
        closed = []
        async with self._closing:
            for manifest in await self.manifests():
                if manifest.state != "recording" or (manifest.stream, manifest.id) in live:
                    continue
                try:
                    closed.append(await self._close(manifest))
                except StoreError as exc:
                    log.warning(
                        "recording %s/%s could not be closed: %s", manifest.stream, manifest.id, exc
                    )
        for manifest in closed:
            log.info(
                "recording %s/%s was interrupted; closed at %.1f s",
                manifest.stream,
                manifest.id,
                manifest.duration,
            )
        return closed

    async def _close(self, manifest: Manifest) -> Manifest:
        prefix = recording_prefix(manifest.stream, manifest.id)
        objects = await self.store.list(prefix)
        renditions: dict[str, RenditionSummary] = {}
        last_modified = manifest.started_at
        for info in objects:
            match = _MEDIA_PLAYLIST.fullmatch(info.key[len(prefix) :])
            if match is None:
                continue
            name = match.group(1)
            text = await self.store.get(info.key)
            if text is None:
                continue
            closed = close_event_playlist(text.decode("utf-8", "replace"))
            await self.store.put(
                info.key,
                closed.encode(),
                content_type=PLAYLIST_TYPE,
                cache_control=CACHE_VOD_PLAYLIST,
            )
            segments, duration = playlist_duration(closed)
            renditions[name] = RenditionSummary(
                segments=segments,
                duration=round(duration, 3),
                bytes=_segment_bytes(objects, prefix + name + "/", closed),
            )
            last_modified = max(last_modified, info.modified)
        done = msgspec.structs.replace(
            manifest,
            state="interrupted",
            ended_at=last_modified,
            renditions=renditions or dict(manifest.renditions),
        )
        await self.store.put(
            manifest_key(manifest.stream, manifest.id),
            done.encode(),
            content_type="application/json",
            cache_control="no-cache",
        )
        return done

    async def expire(self, retention: float, now: float | None = None) -> list[Manifest]:
        """Deletes every recording that ended (or, never closed, started) more than
        ``retention`` seconds ago; answers them."""
        now = time.time() if now is None else now
        expired = []
        for manifest in await self.manifests():
            ended = manifest.ended_at if manifest.ended_at is not None else manifest.started_at
            if manifest.state == "recording" or now - ended < retention:
                continue
            prefix = recording_prefix(manifest.stream, manifest.id)
            # The manifest goes last: a deletion cut short is found and finished next time.
            objects = [o.key for o in await self.store.list(prefix)]
            for key in sorted(objects, key=lambda k: k.endswith(MANIFEST)):
                await self.store.delete(key)
            expired.append(manifest)
            log.info(
                "recording %s/%s deleted (older than the retention)", manifest.stream, manifest.id
            )
        return expired


def _segment_bytes(objects: Sequence[ObjectInfo], prefix: str, playlist: str) -> int:
    named = {line for line in playlist.splitlines() if line and not line.startswith("#")}
    return sum(
        o.size for o in objects if o.key.startswith(prefix) and o.key[len(prefix) :] in named
    )
