"""The gateway role: takes publishes, runs one ``LiveStream`` per stream, serves playback.

A publish is admitted by ``start_publish`` within the stream limits (``PublisherTable``:
node-wide, per publisher identity, per source address) and joins the fair share of
transcoding capacity under its publisher's identity (``TranscodeShares``); both forget it
when its stream ends.

Each stream name has one ``LivePlayback`` (an LL-HLS ``LowLatencyStream`` plus the trio side
that wakes blocked viewer requests). ``LowLatencyStream`` replaced ``HlsStream`` here: it is its
twin (same hand-ins, reorder buffers, gaps, restarts, end and master playlist) plus parts, so
one playlist at the same URL serves plain HLS players (who ignore the LL-HLS tags) and LL-HLS
players alike; ``HlsStream`` stays in ``playback/hls.py`` as the plain-HLS building block.
"""

from __future__ import annotations

import logging
import math
import secrets

import attrs
import trio

from lpstream.budget import MemoryBudget, process_rss, trim_freed_memory
from lpstream.errors import LpstreamError, ProtocolError, StreamInUseError
from lpstream.gateway.fair_share import TranscodeShares
from lpstream.gateway.ingest_limits import IngestLimits
from lpstream.gateway.live_ai import AI_RENDITION, LiveAiSession, LiveControlPool, ParamValue
from lpstream.gateway.publishers import Publisher, PublisherTable
from lpstream.gateway.segments import SegmentTranscoder
from lpstream.gateway.status import GatewayStatus, MemoryStatus, StreamStatistics, StreamStatus
from lpstream.gateway.stream import LiveStream, StreamPublisher
from lpstream.media import VideoProfile
from lpstream.metrics import Metrics
from lpstream.playback.live import DEFAULT_MAX_BLOCKED, LivePlayback
from lpstream.playback.live_packets import PacketSubscription
from lpstream.playback.llhls import DEFAULT_PART_TARGET, LowLatencyStream

__all__ = ["Gateway"]

log = logging.getLogger("lpstream.gateway")


@attrs.define
class Gateway:
    """Owns the live streams; ``start_publish`` is what the RTMP server calls."""

    transcoder: SegmentTranscoder
    profiles: tuple[VideoProfile, ...]
    metrics: Metrics
    segment_target: float = 2.0
    part_target: float = DEFAULT_PART_TARGET
    """LL-HLS part target of the source rendition, in seconds (0.1 to 1.0)."""
    window: int = 6
    max_blocked: int = DEFAULT_MAX_BLOCKED
    """Viewer requests that may wait for an update at once, per stream."""
    linger: float = 60.0
    """Seconds an ended stream's playlists stay served (a restart within it continues them)."""
    live_control: LiveControlPool | None = None
    """Opens and pays live AI sessions' control streams (the orchestrator pool)."""
    paid: bool = False
    """Whether live AI sessions are paid (on chain)."""
    pipeline: str = ""
    """Live AI pipeline every new publish gets (``--pipeline``); empty for none."""
    pipeline_params: dict[str, ParamValue] = attrs.Factory(dict)
    """Its starting parameters."""
    ai_size: tuple[int, int] = (512, 512)
    """Box the AI output is fitted into (never upscaled)."""
    ai_bitrate: int = 1_500_000
    limits: IngestLimits = attrs.Factory(IngestLimits)
    """What each publisher may send (``--max-ingest-pixels``, ``--max-ingest-fps``,
    ``--max-ingest-bitrate``)."""
    publishers: PublisherTable = attrs.Factory(PublisherTable)
    """The live streams by publisher, within ``--max-streams``, ``--max-streams-per-key`` and
    ``--max-streams-per-addr``."""
    shares: TranscodeShares = attrs.Factory(TranscodeShares)
    """The transcoding capacity, shared fairly among publishers."""
    memory: MemoryBudget = attrs.Factory(lambda: MemoryBudget(limit=0))
    """New streams and AI sessions are refused while the process is over it."""
    _nursery: trio.Nursery | None = None
    _live: dict[str, LiveStream] = attrs.Factory(dict)
    _playback: dict[str, LivePlayback] = attrs.Factory(dict)
    _ended_at: dict[str, float] = attrs.Factory(dict)
    _last_statistics: dict[str, StreamStatistics] = attrs.Factory(dict)

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

    async def start_publish(
        self, stream_name: str, *, identity: str | None = None, remote_addr: str = ""
    ) -> StreamPublisher:
        """Starts a live stream for the publisher at ``remote_addr`` (``host:port``), known as
        ``identity`` where publish authorization named it (else by its address).

        Raises:
            StreamInUseError: the name is live already.
            BusyError: the gateway holds ``--max-streams`` (or, ``ProtocolError`` 503, it is
                over its memory budget).
            ProtocolError: 429, the publisher or its address holds its most streams.
        """
        if self._nursery is None:
            raise RuntimeError("Gateway.run has not started")
        if stream_name in self._live:
            raise StreamInUseError(f"stream {stream_name!r} already has a publisher")
        publisher = Publisher.of(identity, remote_addr)
        self.publishers.admit(stream_name, publisher)
        try:
            self.memory.check("a new stream")
        except LpstreamError:
            self.publishers.leave(stream_name)
            raise
        playback = self._playback.get(stream_name)
        first_seq = 0
        if playback is None:
            hls = LowLatencyStream(
                name=stream_name,
                rendition_order=("source", *(p.name for p in self.profiles)),
                window=self.window,
                part_target=self.part_target,
                target_duration=max(1, math.ceil(self.segment_target)),
            )
            playback = LivePlayback(hls, max_blocked=self.max_blocked)
            self._playback[stream_name] = playback
        else:
            first_seq = playback.stream.next_sequence()
            playback.stream.restart(first_seq)
            playback.notify()
        self._ended_at.pop(stream_name, None)
        stream = LiveStream(
            name=stream_name,
            session=secrets.token_hex(8),
            profiles=self.profiles,
            playback=playback,
            transcoder=self.transcoder,
            metrics=self.metrics,
            first_seq=first_seq,
            segment_target=self.segment_target,
            part_target=self.part_target,
            limits=self.limits,
            shares=self.shares,
        )
        self._live[stream_name] = stream
        self.shares.join(stream_name, publisher.identity)
        media_in = stream.publisher  # before it runs: then only handed-out clones keep it open
        if self.pipeline:
            self.start_ai(stream_name, self.pipeline, dict(self.pipeline_params))
        await self._nursery.start(self._run_stream, stream)
        self.metrics.inc("publishes_total")
        log.info(
            "stream %r: publishing (session %s, publisher %s)",
            stream_name,
            stream.session,
            publisher.identity,
        )
        return media_in

    async def _run_stream(
        self, stream: LiveStream, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.metrics.set("active_streams", len(self._live))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.packets.run)
                try:
                    await stream.run(task_status=task_status)
                finally:
                    stream.packets.close()  # run() ends the viewers once it has drained
        except Exception:
            # A fault in one stream's handling ends that stream only, never the gateway.
            self.metrics.inc("errors_total", kind="internal")
            log.exception("stream %r: ended by an internal error", stream.name)
        finally:
            if stream.ai.session is not None:
                stream.ai.session.stop("the stream ended")
            self._last_statistics[stream.name] = stream.statistics()
            self._live.pop(stream.name, None)
            self.publishers.leave(stream.name)
            self.shares.leave(stream.name)
            self._ended_at[stream.name] = trio.current_time()
            self.metrics.set("active_streams", len(self._live))
        # The stream's segments are freed: give the pages back (RSS falls after a burst).
        await trio.to_thread.run_sync(trim_freed_memory)

    async def _expire_ended(self) -> None:
        while True:
            await trio.sleep(max(0.5, min(5.0, self.linger)))
            now = trio.current_time()
            expired = False
            for name, ended in list(self._ended_at.items()):
                if now - ended >= self.linger and name not in self._live:
                    del self._ended_at[name]
                    self._playback.pop(name, None)
                    self._last_statistics.pop(name, None)
                    expired = True
            if expired:
                await trio.to_thread.run_sync(trim_freed_memory)

    def subscribe(self, stream: str, rendition: str) -> PacketSubscription | None:
        """A WebRTC viewer's subscription to a live stream's rendition, or None when the
        stream is not live or has no such rendition."""
        live = self._live.get(stream)
        return None if live is None else live.packets.subscribe(rendition)

    def start_ai(
        self,
        stream_name: str,
        pipeline: str,
        params: dict[str, ParamValue],
        size: tuple[int, int] | None = None,
    ) -> LiveAiSession:
        """Starts a live AI session on a live stream; its output is the ``ai`` rendition.

        Raises:
            ProtocolError: 404 the stream is not live, 409 it has a running session, 503 no
                orchestrators to run it.
        """
        stream = self._live.get(stream_name)
        if stream is None:
            raise ProtocolError(f"stream {stream_name!r} is not live", code=404)
        self.memory.check("a new live AI session")
        running = stream.ai.session
        if running is not None and running.running:
            raise ProtocolError(
                f"stream {stream_name!r} already runs {running.pipeline!r}; stop it first",
                code=409,
            )
        if self.live_control is None or self._nursery is None:
            raise ProtocolError("this gateway has no orchestrators for live AI", code=503)
        width, height = size or self.ai_size
        session = LiveAiSession(
            stream=stream_name,
            session=f"{stream.session}-ai{secrets.token_hex(2)}",
            pipeline=pipeline,
            params=params,
            profile=VideoProfile.checked(
                name=AI_RENDITION, width=width, height=height, bitrate=self.ai_bitrate, gop=0
            ),
            pool=self.live_control,
            paid=self.paid,
        )
        stream.ai.session = session
        self._nursery.start_soon(self._run_ai, session)
        log.info("stream %r: live AI session %s runs %s", stream_name, session.session, pipeline)
        return session

    async def _run_ai(self, session: LiveAiSession) -> None:
        """Runs a live AI session; whatever ends it ends that session only."""
        try:
            await session.run()
        except LpstreamError as exc:
            self.metrics.inc("errors_total", kind="pipeline")
            log.warning(
                "stream %r: live AI session %s ended: %s", session.stream, session.session, exc
            )
            session.stop(str(exc))
        except Exception:
            self.metrics.inc("errors_total", kind="internal")
            log.exception(
                "stream %r: live AI session %s ended by an internal error",
                session.stream,
                session.session,
            )
            session.stop("internal error")

    def ai_session(self, stream_name: str) -> LiveAiSession | None:
        stream = self._live.get(stream_name)
        return None if stream is None else stream.ai.session

    def playback(self, name: str) -> LivePlayback | None:
        """The playback of a live (or lately ended) stream, for the HTTP layer."""
        return self._playback.get(name)

    def status(self) -> GatewayStatus:
        return GatewayStatus(
            streams={
                name: StreamStatus(
                    live=name in self._live,
                    renditions=tuple(playback.stream.renditions_ready()),
                    statistics=self._live[name].statistics()
                    if name in self._live
                    else self._last_statistics.get(name),
                )
                for name, playback in self._playback.items()
            },
            memory=MemoryStatus(
                rss=process_rss(), budget=self.memory.limit, refused_total=self.memory.refused_total
            ),
        )
