"""The gateway role: takes publishes, runs one ``LiveStream`` per stream, serves playback."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import attrs
import trio

from lpstream.errors import StreamInUseError
from lpstream.gateway.stream import LiveStream, SegmentTranscoder, StreamPublisher
from lpstream.media import VideoProfile
from lpstream.metrics import Metrics
from lpstream.playback.hls import HlsStream

__all__ = ["Gateway"]

log = logging.getLogger("lpstream.gateway")


@attrs.define
class Gateway:
    """Owns the live streams; ``start_publish`` is what the RTMP server calls."""

    transcoder: SegmentTranscoder
    profiles: tuple[VideoProfile, ...]
    metrics: Metrics
    segment_target: float = 2.0
    window: int = 6
    linger: float = 60.0
    """Seconds an ended stream's playlists stay served (a restart within it continues them)."""
    _nursery: trio.Nursery | None = None
    _live: dict[str, LiveStream] = attrs.Factory(dict)
    _hls: dict[str, HlsStream] = attrs.Factory(dict)
    _ended_at: dict[str, float] = attrs.Factory(dict)
    _last_statistics: dict[str, dict[str, object]] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        for name, help_text in [
            ("segments_in_total", "Source segments cut from ingest."),
            ("segments_out_total", "Transcoded rendition segments listed in playlists."),
            ("transcode_seconds_total", "Wall time spent waiting for renditions."),
            ("errors_total", "Errors by kind."),
            ("publishes_total", "Publish sessions started."),
        ]:
            self.metrics.counter(name, help_text)
        self.metrics.gauge("active_streams", "Streams with a live publisher.")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._expire_ended)
            task_status.started()
            await trio.sleep_forever()

    async def start_publish(self, stream_name: str) -> StreamPublisher:
        """Starts a live stream; raises ``StreamInUseError`` if the name is live already."""
        if self._nursery is None:
            raise RuntimeError("Gateway.run has not started")
        if stream_name in self._live:
            raise StreamInUseError(f"stream {stream_name!r} already has a publisher")
        hls = self._hls.get(stream_name)
        first_seq = 0
        if hls is None:
            hls = HlsStream(
                name=stream_name,
                rendition_order=("source", *(p.name for p in self.profiles)),
                window=self.window,
            )
            self._hls[stream_name] = hls
        else:
            first_seq = hls.next_sequence()
            hls.restart(first_seq)
        self._ended_at.pop(stream_name, None)
        stream = LiveStream(
            name=stream_name,
            session=secrets.token_hex(8),
            profiles=self.profiles,
            hls=hls,
            transcoder=self.transcoder,
            metrics=self.metrics,
            first_seq=first_seq,
            segment_target=self.segment_target,
        )
        self._live[stream_name] = stream
        publisher = stream.publisher
        await self._nursery.start(self._run_stream, stream)
        self.metrics.inc("publishes_total")
        log.info("stream %r: publishing (session %s)", stream_name, stream.session)
        return publisher

    async def _run_stream(
        self, stream: LiveStream, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.metrics.set("active_streams", len(self._live))
        try:
            await stream.run(task_status=task_status)
        finally:
            self._last_statistics[stream.name] = stream.statistics()
            self._live.pop(stream.name, None)
            self._ended_at[stream.name] = trio.current_time()
            self.metrics.set("active_streams", len(self._live))

    async def _expire_ended(self) -> None:
        while True:
            await trio.sleep(min(5.0, self.linger))
            now = trio.current_time()
            for name, ended in list(self._ended_at.items()):
                if now - ended >= self.linger and name not in self._live:
                    del self._ended_at[name]
                    self._hls.pop(name, None)
                    self._last_statistics.pop(name, None)

    def hls_stream(self, name: str) -> HlsStream | None:
        return self._hls.get(name)

    def status(self) -> dict[str, Any]:
        return {
            "streams": {
                name: {
                    "live": name in self._live,
                    "renditions": list(hls.renditions_ready()),
                    **(
                        self._live[name].statistics()
                        if name in self._live
                        else self._last_statistics.get(name, {})
                    ),
                }
                for name, hls in self._hls.items()
            }
        }
