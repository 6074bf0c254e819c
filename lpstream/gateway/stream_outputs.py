"""What one publish session sends beyond the gateway's memory: its recording, its live
origin, its restreams.

How this works: the stream's playlists tell ``StreamOutputs.offer`` of every listed segment
(``LowLatencyStream.listener``); it hands the segment on to each output without blocking —
each has its own bounded queue and task (``SegmentSink`` for a store), so a slow store or
destination costs only its own output. A recording can start and stop while the stream is
live (``start_recording``/``stop_recording``); each start is a new recording with a new id.
``end`` (the publisher left, every segment listed) lets each output finish: a recording
writes its VOD playlists, the origin its ended playlists, a restream sends what it has
queued (``forward_grace`` seconds at most) and closes its connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import attrs
import trio

from lpstream.errors import ProtocolError
from lpstream.metrics import Metrics
from lpstream.playback.listed import ListedSegment
from lpstream.restream import Forwards, ForwardSettings, ForwardState, ForwardStatus
from lpstream.storage.origin import OriginObjects
from lpstream.storage.recordings import RecordingObjects
from lpstream.storage.sink import SegmentSink, SinkStatus
from lpstream.storage.store import ObjectStore

__all__ = ["OutputsStatus", "RecordingStatus", "StreamOutputs"]

log = logging.getLogger("lpstream.gateway")


@attrs.frozen(kw_only=True)
class RecordingStatus:
    """The recording of a live stream, in ``/api/status``."""

    id: str
    sink: SinkStatus


@attrs.frozen(kw_only=True)
class OutputsStatus:
    """A live stream's outputs, in ``/api/status``."""

    recording: RecordingStatus | None = None
    origin: SinkStatus | None = None
    forwards: tuple[ForwardStatus, ...] = ()


@attrs.define
class StreamOutputs:
    """One publish session's outputs (see the module comment)."""

    stream: str
    rendition_order: Sequence[str]
    metrics: Metrics
    nursery: trio.Nursery
    """Where the outputs' tasks run (the gateway's: they outlive the stream's own tasks)."""
    record_store: ObjectStore | None = None
    origin_store: ObjectStore | None = None
    window: int = 6
    queue_size: int = 16
    new_recording_id: Callable[[str, float], str] = attrs.field(
        default=lambda stream, now: str(int(now))
    )
    """The id a recording of this stream starting at ``now`` gets (the hub keeps them
    unique)."""
    rendition_names: Callable[[], Sequence[str]] = attrs.field(default=lambda: ())
    """The stream's renditions now (a live AI output joins mid-stream); forwards name one."""
    forward_settings: ForwardSettings = attrs.Factory(ForwardSettings)
    forward_grace: float = 10.0
    """Seconds a forward may take to send what it has queued once the stream ended."""
    forwards: Forwards = attrs.field(init=False)
    """The restreams (``POST /api/streams/{name}/forward``)."""
    _recording: tuple[str, SegmentSink] | None = None
    _origin: SegmentSink | None = None
    _ended: bool = False

    def __attrs_post_init__(self) -> None:
        self.forwards = Forwards(
            stream=self.stream, nursery=self.nursery, settings=self.forward_settings
        )
        if self.origin_store is not None:
            self._origin = self._sink(
                "origin",
                self.origin_store,
                OriginObjects(
                    stream=self.stream, rendition_order=self.rendition_order, window=self.window
                ),
            )

    @property
    def recording_id(self) -> str | None:
        return None if self._recording is None else self._recording[0]

    def offer(self, listed: ListedSegment) -> None:
        """A segment was listed: each output queues it (never blocks)."""
        if self._recording is not None:
            self._recording[1].offer(listed)
        if self._origin is not None:
            self._origin.offer(listed)
        self.forwards.offer(listed)

    def add_forward(self, url: str, rendition: str) -> ForwardStatus:
        """Starts restreaming ``rendition`` to ``url`` (see ``Forwards.add``)."""
        if self._ended:
            raise ProtocolError(f"stream {self.stream!r} ended", code=404)
        return self.forwards.add(url, rendition, renditions=self.rendition_names()).status()

    def start_recording(self) -> str:
        """Starts recording from the next segment; answers its id (the running one's, if it
        records already).

        Raises:
            RuntimeError: there is no record store, or the stream ended.
        """
        if self.record_store is None or self._ended:
            raise RuntimeError("no record store, or the stream ended")
        if self._recording is not None:
            return self._recording[0]
        now = time.time()
        recording = self.new_recording_id(self.stream, now)
        objects = RecordingObjects(
            stream=self.stream,
            id=recording,
            started_at=now,
            rendition_order=self.rendition_order,
        )
        self._recording = (recording, self._sink("record", self.record_store, objects))
        log.info("stream %r: recording %s to %s", self.stream, recording, self.record_store.url)
        return recording

    def stop_recording(self) -> str | None:
        """Ends the running recording (it is closed as VOD); answers its id, None if none."""
        if self._recording is None:
            return None
        recording, sink = self._recording
        self._recording = None
        sink.end()
        return recording

    def end(self) -> None:
        """The stream ended: every output finishes."""
        self._ended = True
        self.stop_recording()
        if self._origin is not None:
            self._origin.end()
        self.nursery.start_soon(self._finish_forwards)

    async def _finish_forwards(self) -> None:
        """Lets each forward send what it has queued (for ``forward_grace`` at most)."""
        running = self.forwards.all()
        for forward in running:
            forward.finish()
        with trio.move_on_after(self.forward_grace):
            for forward in running:
                await forward.wait_state(ForwardState.STOPPED)
        self.forwards.close()

    def status(self) -> OutputsStatus:
        return OutputsStatus(
            recording=None
            if self._recording is None
            else RecordingStatus(id=self._recording[0], sink=self._recording[1].status()),
            origin=None if self._origin is None else self._origin.status(),
            forwards=tuple(self.forwards.statuses()),
        )

    def _sink(
        self, kind: str, store: ObjectStore, objects: RecordingObjects | OriginObjects
    ) -> SegmentSink:
        sink = SegmentSink(
            kind=kind,
            stream=self.stream,
            store=store,
            objects=objects,
            metrics=self.metrics,
            queue_size=self.queue_size,
        )
        self.nursery.start_soon(self._run_sink, sink)
        return sink

    async def _run_sink(self, sink: SegmentSink) -> None:
        try:
            await sink.run()
        except Exception:
            # An output's fault ends that output only, never the stream or the gateway.
            self.metrics.inc("errors_total", kind="internal")
            log.exception("stream %r: %s output ended by an internal error", self.stream, sink.kind)
