"""Writes one stream's segments to a store as they are listed: the trio driver of a
recording (``RecordingObjects``) or a live origin (``OriginObjects``).

How this works:

* The stream's playlists call ``offer`` for every listed segment; it never blocks. Segments
  wait in a bounded queue; when it is full the oldest waiting one is dropped (counted,
  logged once per burst), so a slow or dead store never holds up the live path or grows
  memory.
* One task (``run``) takes what waits as a batch: its segments are stored at once (each with
  retries and backoff), then the playlists that list the stored ones are written, each once
  (media playlists, then the master, then the manifest) — a playlist is only written after
  what it names, so no playlist names an object that is not there. A segment that could not
  be stored (or was dropped, or is a gap of its rendition) is left out of the playlists and
  the next one of its rendition follows a discontinuity: when the store comes back, the
  recording goes on with the gap marked. A playlist that failed is simply written again
  after the next segment.
* A fragmented-MP4 segment needs its init section in the store first: the first segment
  that refers to one writes it (once per key; a segment whose init section could not be
  written is lost like a failed one), and a deleted init section is written again when a
  later segment refers to it.
* ``end`` closes the queue: what waits is still written, then the final objects (the VOD
  playlists, the manifest), retried for up to ``finish_deadline`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import attrs
import trio

from lpstream.metric_families import STORE_FAMILIES
from lpstream.metrics import Metrics
from lpstream.playback.listed import ListedSegment
from lpstream.status_fields import LatencySummary
from lpstream.storage.store import ObjectStore, StoreError, content_type_of
from lpstream.storage.stored_hls import CACHE_SEGMENT, ObjectWrite

__all__ = ["DEFAULT_QUEUE", "SegmentSink", "SinkStatus", "StoredObjects", "register_metrics"]

log = logging.getLogger("lpstream.storage")

DEFAULT_QUEUE = 16
"""Segments (of all renditions) that may wait for the store, per stream and store."""
_LATENCIES_KEPT = 512
_BATCH = 16
"""Segments stored at once at most (the store's client bounds its threads too)."""


def _write_order(write: ObjectWrite) -> tuple[int, bool]:
    """Deeper keys first (media playlists before the master), the manifest last."""
    return -write.key.count("/"), write.key.endswith(".json")


class StoredObjects(Protocol):
    """The plain-state side of a sink: which objects to write (recording or origin)."""

    def start(self) -> list[ObjectWrite]: ...

    def segment_key(self, listed: ListedSegment) -> str: ...

    def init_key(self, listed: ListedSegment) -> str | None: ...

    def stored(self, listed: ListedSegment, size: int) -> tuple[list[ObjectWrite], list[str]]: ...

    def lost(self, rendition: str) -> None: ...

    def finish(self, now: float) -> list[ObjectWrite]: ...


def register_metrics(metrics: Metrics) -> None:
    """Declares the store metrics (labelled ``store``: ``record`` or ``origin``)."""
    metrics.declare(*STORE_FAMILIES)


@attrs.frozen(kw_only=True)
class SinkStatus:
    """What ``/api/status`` shows of a sink."""

    store: str
    """Where it writes (no credentials)."""
    state: str
    """``writing``, ``failing`` (the last write failed), ``finishing`` or ``ended``."""
    queued: int
    stored: int
    """Segments stored."""
    lost: int
    """Segments not stored (dropped or failed)."""
    failures: int
    """Writes that failed after their retries."""
    bytes: int
    """Bytes written: segments, playlists, manifests."""
    segment_bytes: int
    """Bytes of the segments alone."""
    upload_latency_ms: LatencySummary
    """From a segment listed to it being stored, over the latest segments."""


@attrs.define
class SegmentSink:
    """One stream's segments into one store (see the module comment)."""

    kind: str
    """``record`` or ``origin``: the metrics' ``store`` label."""
    stream: str
    store: ObjectStore
    objects: StoredObjects
    metrics: Metrics
    queue_size: int = DEFAULT_QUEUE
    attempts: int = 3
    """Tries per write (the store's client may retry inside each)."""
    backoff: float = 0.25
    """Seconds before the second try; doubles after."""
    finish_deadline: float = 60.0
    """Seconds the final writes are retried for."""
    _queue: deque[tuple[ListedSegment, float]] = attrs.Factory(deque)
    _pending_loss: dict[str, int] = attrs.Factory(dict)
    _wake: trio.Event = attrs.Factory(trio.Event)
    _ending: bool = False
    _state: str = "writing"
    _stored: int = 0
    _lost: int = 0
    _failures: int = 0
    _bytes: int = 0
    _segment_bytes: int = 0
    _dropping: bool = False
    _latencies: deque[float] = attrs.Factory(lambda: deque(maxlen=_LATENCIES_KEPT))
    _done: trio.Event = attrs.Factory(trio.Event)
    _stored_inits: set[str] = attrs.Factory(set)

    @property
    def latencies(self) -> Sequence[float]:
        """Seconds from listed to stored of the latest segments."""
        return tuple(self._latencies)

    def offer(self, listed: ListedSegment) -> None:
        """Queues a listed segment; never blocks (see the module comment)."""
        if self._ending:
            return
        if len(self._queue) >= self.queue_size:
            dropped, _ = self._queue.popleft()
            self._pending_loss[dropped.rendition] = self._pending_loss.get(dropped.rendition, 0) + 1
            self._count_lost()
            if not self._dropping:
                log.warning(
                    "stream %r: %s store too slow, dropping segments (queue of %d full)",
                    self.stream,
                    self.kind,
                    self.queue_size,
                )
            self._dropping = True
        else:
            self._depth(+1)
        self._queue.append((listed, trio.current_time()))
        self._wake.set()

    def end(self) -> None:
        """No more segments come: ``run`` writes what waits and the final objects."""
        self._ending = True
        self._wake.set()

    async def wait_ended(self) -> None:
        await self._done.wait()

    def status(self) -> SinkStatus:
        return SinkStatus(
            store=self.store.url,
            state=self._state,
            queued=len(self._queue),
            stored=self._stored,
            lost=self._lost,
            failures=self._failures,
            bytes=self._bytes,
            segment_bytes=self._segment_bytes,
            upload_latency_ms=LatencySummary.from_samples(self._latencies),
        )

    async def run(self) -> None:
        """Writes until ``end`` and everything after it is written (or given up)."""
        try:
            for write in self.objects.start():
                await self._put(write)
            while True:
                while not self._queue and not self._ending:
                    self._wake = trio.Event()
                    await self._wake.wait()
                if not self._queue:
                    break
                batch: list[tuple[ListedSegment, float]] = []
                while self._queue and len(batch) < _BATCH:
                    batch.append(self._queue.popleft())
                    self._depth(-1)
                if not self._queue:
                    self._dropping = False
                # Drops so far were of segments before this batch's; later ones come after.
                losses, self._pending_loss = self._pending_loss, {}
                await self._write_batch(batch, losses)
            self._state = "finishing"
            for rendition, count in self._pending_loss.items():
                for _ in range(count):
                    self.objects.lost(rendition)
            self._pending_loss.clear()
            with trio.move_on_after(self.finish_deadline):
                for write in self.objects.finish(time.time()):
                    await self._put_until_done(write)
        finally:
            self._depth(-len(self._queue))
            self._queue.clear()
            self._state = "ended"
            self._done.set()

    async def _write_batch(
        self, batch: list[tuple[ListedSegment, float]], losses: dict[str, int]
    ) -> None:
        """Stores the segments of ``batch`` at once, then writes the playlists that list the
        stored ones (each playlist once, media playlists before the master, the manifest
        last), then deletes what fell out of the window."""
        stored = [False] * len(batch)
        async with trio.open_nursery() as nursery:
            for index, (listed, listed_at) in enumerate(batch):
                if listed.data is not None:
                    nursery.start_soon(self._store_segment, listed, listed_at, stored, index)
        writes: dict[str, ObjectWrite] = {}
        deletes: list[str] = []
        for (listed, _), done in zip(batch, stored, strict=True):
            for _ in range(losses.pop(listed.rendition, 0)):
                self.objects.lost(listed.rendition)
            if listed.data is None or not done:
                # A gap of its rendition (nothing to store), or a segment that failed.
                self.objects.lost(listed.rendition)
                continue
            new_writes, new_deletes = self.objects.stored(listed, len(listed.data))
            for write in new_writes:
                writes.pop(write.key, None)
                writes[write.key] = write
            deletes += new_deletes
        for rendition, count in losses.items():
            for _ in range(count):
                self.objects.lost(rendition)
        for write in sorted(writes.values(), key=_write_order):
            await self._put(write)
        for key in deletes:
            self._stored_inits.discard(key)
            try:
                await self.store.delete(key)
            except StoreError as exc:
                log.info("stream %r: could not delete %s: %s", self.stream, key, exc)

    async def _store_segment(
        self, listed: ListedSegment, listed_at: float, stored: list[bool], index: int
    ) -> None:
        assert listed.data is not None
        if not await self._store_init(listed):
            self._count_lost()
            return
        key = self.objects.segment_key(listed)
        segment = ObjectWrite(key, listed.data, content_type_of(key), CACHE_SEGMENT)
        if not await self._put(segment):
            self._count_lost()
            return
        latency = trio.current_time() - listed_at
        self._latencies.append(latency)
        self.metrics.observe("store_upload_seconds", latency, store=self.kind)
        self._stored += 1
        self._segment_bytes += len(listed.data)
        stored[index] = True

    async def _store_init(self, listed: ListedSegment) -> bool:
        """Writes the init section ``listed`` refers to unless it is stored; False if that
        failed. Segments stored at once may both write it: the bytes are the same."""
        key = self.objects.init_key(listed)
        if key is None or key in self._stored_inits:
            return True
        assert listed.init is not None
        write = ObjectWrite(key, listed.init.data, content_type_of(key), CACHE_SEGMENT)
        if not await self._put(write):
            return False
        self._stored_inits.add(key)
        return True

    async def _put(self, write: ObjectWrite) -> bool:
        """Writes with retries; False if it failed (counted and logged)."""
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                await self.store.put(
                    write.key,
                    write.data,
                    content_type=write.content_type,
                    cache_control=write.cache_control,
                )
            except StoreError as exc:
                if attempt == self.attempts:
                    self._failures += 1
                    self.metrics.inc("store_upload_failures_total", store=self.kind)
                    if self._state != "failing":
                        log.warning(
                            "stream %r: %s store write of %s failed: %s",
                            self.stream,
                            self.kind,
                            write.key,
                            exc,
                        )
                    self._state = "failing" if self._state == "writing" else self._state
                    return False
                await trio.sleep(delay)
                delay *= 2
            else:
                if self._state == "failing":
                    log.info("stream %r: %s store writes work again", self.stream, self.kind)
                    self._state = "writing"
                self._bytes += len(write.data)
                self.metrics.inc("store_uploaded_bytes_total", len(write.data), store=self.kind)
                return True
        return False

    async def _put_until_done(self, write: ObjectWrite) -> None:
        """Writes, trying again every second until it works (bound it with a deadline)."""
        stored = await self._put(write)
        while not stored:
            await trio.sleep(1.0)
            stored = await self._put(write)

    def _count_lost(self) -> None:
        self._lost += 1
        self.metrics.inc("store_segments_lost_total", store=self.kind)

    def _depth(self, change: int) -> None:
        total = self.metrics.value("store_queue_depth", store=self.kind) + change
        self.metrics.set("store_queue_depth", max(0.0, total), store=self.kind)
