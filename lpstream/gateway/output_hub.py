"""The gateway's outputs beyond its memory, node-wide: the stores, every live stream's
``StreamOutputs``, the recordings already stored (recovery at start, retention, replay).

How this works: ``open_stream`` gives each publish session its ``StreamOutputs`` (recorded
from the start with ``--record`` or when its publish grant says so; written to the live
origin with ``--hls-origin``); ``close_stream`` lets them finish. ``run`` first closes the
recordings a killed gateway left open (``RecordingLibrary.recover``), then, with a
retention, deletes old recordings every so often. The API's calls (start or stop a
recording, list recordings, read a recording's objects) come here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from lpstream.config.outputs import OutputsSection
from lpstream.errors import ConfigError, ProtocolError
from lpstream.gateway.stream_outputs import OutputsStatus, StreamOutputs
from lpstream.metric_families import FORWARD_FAMILIES
from lpstream.metrics import Metrics
from lpstream.restream import ForwardStatus, parse_forward_url
from lpstream.storage.library import RecordingLibrary
from lpstream.storage.recordings import new_recording_id
from lpstream.storage.sink import register_metrics
from lpstream.storage.store import InvalidKey, ObjectStore, StoreError
from lpstream.storage.urls import open_store

__all__ = ["OutputHub"]

log = logging.getLogger("lpstream.gateway")

_RETENTION_CHECK = 300.0
"""Seconds between retention passes at most."""


@attrs.define
class OutputHub:
    """Every live stream's outputs and the stored recordings (see the module comment)."""

    metrics: Metrics
    record_store: ObjectStore | None = None
    origin_store: ObjectStore | None = None
    record_all: bool = False
    """``--record``: every stream is recorded from its start."""
    retention: float | None = None
    """Seconds an ended recording is kept (None: always)."""
    window: int = 6
    queue_size: int = 16
    forward_all: tuple[str, ...] = ()
    """``--forward``: URLs every stream's source is restreamed to (``{stream}``: its name)."""
    library: RecordingLibrary | None = attrs.field(init=False, default=None)
    _nursery: trio.Nursery | None = None
    _streams: dict[str, StreamOutputs] = attrs.Factory(dict)
    _ids: dict[str, tuple[str, int]] = attrs.Factory(dict)
    """The newest recording id stamp of each stream and how many share it."""

    def __attrs_post_init__(self) -> None:
        register_metrics(self.metrics)
        self.metrics.declare(*FORWARD_FAMILIES)
        if self.record_store is not None:
            self.library = RecordingLibrary(self.record_store)

    @classmethod
    async def from_section(
        cls, section: OutputsSection, metrics: Metrics, *, window: int = 6
    ) -> OutputHub:
        """The hub for ``--record-store``/``--hls-origin``/``--forward``, each store checked.

        Raises:
            ConfigError: a URL that names no store, ``--record`` or ``--record-retention``
                without ``--record-store``, or a store that cannot be used (missing bucket,
                refused credentials, unreachable, not writable), with the reason.
        """
        if section.record_store is None and (section.record or section.record_retention):
            raise ConfigError("--record and --record-retention need --record-store")
        stores: dict[str, ObjectStore] = {}
        for flag, url in (
            ("--record-store", section.record_store),
            ("--hls-origin", section.hls_origin),
        ):
            if url is None:
                continue
            store = open_store(url)
            try:
                await store.check()
            except StoreError as exc:
                raise ConfigError(f"{flag} {store.url}: {exc}") from None
            stores[flag] = store
        for url in section.forward:
            try:
                parse_forward_url(url.replace("{stream}", "stream"))
            except ProtocolError as exc:
                raise ConfigError(f"--forward: {exc}") from None
        return cls(
            metrics=metrics,
            forward_all=section.forward,
            record_store=stores.get("--record-store"),
            origin_store=stores.get("--hls-origin"),
            record_all=section.record,
            retention=section.record_retention,
            window=window,
            queue_size=section.store_queue,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs the outputs' tasks; recovery first, then retention passes."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._count_forwards)
            task_status.started()
            if self.library is None:
                await trio.sleep_forever()
            await self._recover()
            if self.retention is None:
                await trio.sleep_forever()
            while True:
                await self._expire()
                await trio.sleep(min(_RETENTION_CHECK, max(1.0, self.retention / 10)))

    async def _count_forwards(self) -> None:
        """Keeps the restream metrics: forwards by state, bytes sent (every second)."""
        sent: dict[str, int] = {}
        while True:
            states = dict.fromkeys(("connecting", "live", "retrying"), 0)
            for outputs in self._streams.values():
                for forward in outputs.forwards.statuses():
                    states[forward.state] = states.get(forward.state, 0) + 1
                    grown = forward.bytes_sent - sent.get(forward.id, 0)
                    if grown > 0:
                        self.metrics.inc("forward_bytes_total", grown)
                    sent[forward.id] = forward.bytes_sent
            for state, count in states.items():
                if state != "stopped":
                    self.metrics.set("forwards", count, state=state)
            live_ids = {f.id for o in self._streams.values() for f in o.forwards.statuses()}
            sent = {k: v for k, v in sent.items() if k in live_ids}
            await trio.sleep(1.0)

    async def _recover(self) -> None:
        assert self.library is not None
        try:
            await self.library.recover(live=self._recording_now())
        except StoreError as exc:
            log.warning("recording recovery pass: %s", exc)

    async def _expire(self) -> None:
        assert self.library is not None and self.retention is not None
        try:
            await self.library.expire(self.retention)
        except StoreError as exc:
            log.warning("recording retention pass: %s", exc)

    def _recording_now(self) -> set[tuple[str, str]]:
        return {
            (name, outputs.recording_id)
            for name, outputs in self._streams.items()
            if outputs.recording_id is not None
        }

    # -- live streams ----------------------------------------------------------------------

    def open_stream(
        self, name: str, renditions: Callable[[], Sequence[str]], *, record: bool = False
    ) -> StreamOutputs:
        """The outputs of a publish session that starts; ``renditions`` gives its rendition
        names now (source first)."""
        if self._nursery is None:
            raise RuntimeError("OutputHub.run has not started")
        outputs = StreamOutputs(
            stream=name,
            rendition_order=tuple(renditions()),
            rendition_names=renditions,
            metrics=self.metrics,
            nursery=self._nursery,
            record_store=self.record_store,
            origin_store=self.origin_store,
            window=self.window,
            queue_size=self.queue_size,
            new_recording_id=self._new_id,
        )
        self._streams[name] = outputs
        if self.record_store is not None and (record or self.record_all):
            outputs.start_recording()
        for url in self.forward_all:
            try:
                outputs.add_forward(url.replace("{stream}", name), "source")
            except ProtocolError as exc:
                log.warning("stream %r: --forward: %s", name, exc)
        return outputs

    def close_stream(self, name: str) -> None:
        """The stream ended (every segment listed): its outputs finish."""
        outputs = self._streams.pop(name, None)
        if outputs is not None:
            outputs.end()

    def recording_of(self, name: str) -> str | None:
        """The id of a live stream's running recording; None if it records none."""
        outputs = self._streams.get(name)
        return None if outputs is None else outputs.recording_id

    def status(self, name: str) -> OutputsStatus | None:
        outputs = self._streams.get(name)
        return None if outputs is None else outputs.status()

    def _new_id(self, stream: str, now: float) -> str:
        stamp = new_recording_id(now)
        last, taken = self._ids.get(stream, ("", 0))
        taken = taken + 1 if last == stamp else 0
        self._ids[stream] = (stamp, taken)
        return new_recording_id(now, taken)

    # -- the API ---------------------------------------------------------------------------

    def start_recording(self, name: str) -> str:
        """Records a live stream from its next segment; answers the recording's id.

        Raises:
            ProtocolError: 503 no ``--record-store``; 404 the stream is not live.
        """
        outputs = self._live(name)
        return outputs.start_recording()

    def stop_recording(self, name: str) -> str | None:
        """Ends a live stream's recording; answers its id (None: it was not recording).

        Raises:
            ProtocolError: 503 no ``--record-store``; 404 the stream is not live.
        """
        return self._live(name).stop_recording()

    def add_forward(self, name: str, url: str, rendition: str) -> ForwardStatus:
        """Restreams a live stream's rendition to ``url``.

        Raises:
            ProtocolError: 404 the stream is not live; 400 a bad URL or rendition; 409 it
                forwards that already, or as many as it may; 501 ``srt://`` without libsrt.
        """
        return self._outputs_of(name).add_forward(url, rendition)

    def forwards(self, name: str) -> list[ForwardStatus]:
        """A live stream's restreams.

        Raises:
            ProtocolError: 404 the stream is not live.
        """
        return self._outputs_of(name).forwards.statuses()

    def remove_forward(self, name: str, forward_id: str) -> ForwardStatus:
        """Stops a restream; answers its last status.

        Raises:
            ProtocolError: 404 the stream is not live or has no such forward.
        """
        return self._outputs_of(name).forwards.remove(forward_id)

    def _outputs_of(self, name: str) -> StreamOutputs:
        outputs = self._streams.get(name)
        if outputs is None:
            raise ProtocolError(f"stream {name!r} is not live", code=404)
        return outputs

    def _live(self, name: str) -> StreamOutputs:
        if self.record_store is None:
            raise ProtocolError("this gateway has no --record-store", code=503)
        return self._outputs_of(name)

    async def recordings(self, stream: str | None = None) -> list[dict[str, Any]]:
        """The stored recordings (of ``stream``), oldest first, as the API lists them.

        Raises:
            ProtocolError: 503 no ``--record-store``, or the store failed.
        """
        library = self._library()
        try:
            manifests = await library.manifests(stream)
        except InvalidKey as exc:
            raise ProtocolError(str(exc), code=400) from None
        except StoreError as exc:
            raise ProtocolError(f"the record store failed: {exc}", code=503) from None
        return [m.public() for m in manifests]

    async def read_recording(self, stream: str, recording: str, path: str) -> bytes | None:
        """A recording's object for ``/vod/{stream}/{recording}/{path}``; None: no such (and
        none at all without ``--record-store``).

        Raises:
            ProtocolError: 503 the store failed.
        """
        if self.library is None:
            return None  # a gateway that keeps no recordings has none of them
        try:
            return await self.library.read(stream, recording, path)
        except InvalidKey:
            return None
        except StoreError as exc:
            raise ProtocolError(f"the record store failed: {exc}", code=503) from None

    def _library(self) -> RecordingLibrary:
        if self.library is None:
            raise ProtocolError("this gateway has no --record-store", code=503)
        return self.library

    async def expire_now(self, now: float | None = None) -> int:
        """One retention pass now; answers how many recordings were deleted."""
        if self.library is None or self.retention is None:
            return 0
        return len(await self.library.expire(self.retention, time.time() if now is None else now))
