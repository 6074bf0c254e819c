"""The gateway role: takes publishes, runs one ``LiveStream`` per stream, serves playback.

A publish is admitted by ``start_publish`` within the stream limits (``PublisherTable``:
node-wide, per publisher identity, per source address) and joins the fair share of
transcoding capacity under its publisher's identity (``TranscodeShares``); both forget it
when its stream ends.

With ``admission`` set (the node's access control) every publish is authorized first, before
anything is set up or paid for (``lpstream.gateway.admission``): the grant's identity is the
publisher's, its profiles replace the node's ladder for the stream, its pipeline starts as
``--pipeline`` would, its ``record`` flag starts a recording (with a record store) and its spend
limit is an account of ``spending`` that the stream's payments (segments and live AI) are
charged to: once reached, the stream ends with the reason. Live AI sessions started through
the API carry who started them and, with ``api_spend_limit``, are charged to that identity's
hourly account too (``lpstream.gateway.spending``).

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

from ingest.rtmp.server import PublishAttempt
from lpstream.access import Grant
from lpstream.budget import MemoryBudget, process_rss, trim_freed_memory
from lpstream.errors import LpstreamError, ProtocolError, StreamInUseError
from lpstream.gateway.admission import PublishAdmission
from lpstream.gateway.fair_share import TranscodeShares
from lpstream.gateway.ingest_limits import IngestLimits
from lpstream.gateway.live_ai import AI_RENDITION, LiveAiSession, LiveControlPool, ParamValue
from lpstream.gateway.output_hub import OutputHub
from lpstream.gateway.publishers import Publisher, PublisherTable
from lpstream.gateway.segments import SegmentTranscoder
from lpstream.gateway.spending import API_SPEND_WINDOW, SpendAccount, SpendLedger
from lpstream.gateway.status import GatewayStatus, MemoryStatus, StreamStatistics, StreamStatus
from lpstream.gateway.stream import LiveStream, StreamPublisher
from lpstream.media import VideoProfile
from lpstream.metric_families import GATEWAY_FAMILIES
from lpstream.metrics import Metrics, MetricsSource
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
    admission: PublishAdmission | None = None
    """Publish authorization and name ownership; None: anyone may publish a free name."""
    spending: SpendLedger = attrs.Factory(SpendLedger)
    """The spend limits payments are charged to (the payment sender's ledger)."""
    api_spend_limit: int | None = None
    """Wei per hour the live AI sessions one API identity started may spend
    (``--api-spend-limit``); None: no limit."""
    outputs: OutputHub | None = None
    """Recordings, the live origin and restreams (run by the node); None: none."""
    _nursery: trio.Nursery | None = None
    _grants: dict[str, Grant] = attrs.Factory(dict)
    """The publish grant of each live stream."""
    _stream_accounts: dict[str, SpendAccount] = attrs.Factory(dict)
    """The spend limit of each live stream that has one."""
    _api_accounts: dict[str, SpendAccount] = attrs.Factory(dict)
    """The hourly spend limit of each API identity that started a session."""
    _live: dict[str, LiveStream] = attrs.Factory(dict)
    _playback: dict[str, LivePlayback] = attrs.Factory(dict)
    _ended_at: dict[str, float] = attrs.Factory(dict)
    _last_statistics: dict[str, StreamStatistics] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        self.metrics.declare(*GATEWAY_FAMILIES)
        if isinstance(self.transcoder, MetricsSource):  # the orchestrator pool
            self.transcoder.export_metrics(self.metrics)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._expire_ended)
            task_status.started()
            await trio.sleep_forever()

    async def start_publish(
        self,
        stream_name: str,
        *,
        identity: str | None = None,
        remote_addr: str = "",
        attempt: PublishAttempt | None = None,
    ) -> StreamPublisher:
        """Starts a live stream for the publisher at ``remote_addr`` (``host:port``), known as
        ``identity`` where the caller knows it; with ``admission`` set, publish authorization
        decides from what the publisher presented (``attempt``) and names it.

        Raises:
            StreamInUseError: the name is live already.
            BusyError: the gateway holds ``--max-streams`` (or, ``ProtocolError`` 503, it is
                over its memory budget).
            ProtocolError: 401/403 not authorized (403 also: the name is another
                publisher's), 503 no decision in time; 429, the publisher or its address
                holds its most streams.
        """
        if self._nursery is None:
            raise RuntimeError("Gateway.run has not started")
        self._check_free(stream_name)
        grant = Grant(identity=identity or Publisher.of(None, remote_addr).identity)
        if self.admission is not None and identity is None:
            grant = await self.admission.authorize(stream_name, attempt, remote_addr)
            self._check_free(stream_name)  # another publish may have started meanwhile
        publisher = Publisher.of(grant.identity, remote_addr)
        self.publishers.admit(stream_name, publisher)
        try:
            self.memory.check("a new stream")
            if self.admission is not None:
                self.admission.claim(stream_name, publisher.identity)
        except LpstreamError:
            self.publishers.leave(stream_name)
            raise
        profiles = grant.profiles or self.profiles
        playback = self._playback.get(stream_name)
        first_seq = 0
        if playback is None:
            hls = LowLatencyStream(
                name=stream_name,
                rendition_order=("source", *(p.name for p in profiles)),
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
            profiles=profiles,
            playback=playback,
            transcoder=self.transcoder,
            metrics=self.metrics,
            first_seq=first_seq,
            segment_target=self.segment_target,
            part_target=self.part_target,
            limits=self.limits,
            shares=self.shares,
            record=grant.record,
        )
        self._live[stream_name] = stream
        self._grants[stream_name] = grant
        if self.outputs is not None:
            hls = playback.stream
            outputs = self.outputs.open_stream(
                stream_name, lambda: hls.rendition_order, record=grant.record
            )
            hls.listener = outputs.offer
        self.shares.join(stream_name, publisher.identity)
        if grant.spend_limit_wei is not None:
            account = SpendAccount(
                name=f"stream {stream_name!r}",
                limit=grant.spend_limit_wei,
                source="its publish grant",
                on_exhausted=stream.stop,
            )
            self._stream_accounts[stream_name] = account
            self.spending.open(stream.session, [account])
        media_in = stream.publisher  # before it runs: then only handed-out clones keep it open
        if grant.pipeline:
            self.start_ai(stream_name, grant.pipeline, dict(grant.params))
        elif self.pipeline:
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

    def _check_free(self, stream_name: str) -> None:
        if stream_name in self._live:
            raise StreamInUseError(f"stream {stream_name!r} already has a publisher")

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
            stream.playback.stream.listener = None  # every segment is listed by now
            if self.outputs is not None:
                self.outputs.close_stream(stream.name)
            self._last_statistics[stream.name] = stream.statistics()
            self._live.pop(stream.name, None)
            self.publishers.leave(stream.name)
            self.shares.leave(stream.name)
            self.spending.close(stream.session)
            self._stream_accounts.pop(stream.name, None)
            grant = self._grants.pop(stream.name, None)
            if self.admission is not None and grant is not None:
                self.admission.release(stream.name, grant.identity)
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
                    self.metrics.forget(stream=name)  # its series go with its playlists
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
        *,
        started_by: str | None = None,
    ) -> LiveAiSession:
        """Starts a live AI session on a live stream; its output is the ``ai`` rendition.
        ``started_by`` is the API identity that asked for it (None: the node did); its
        payments are charged to the stream's spend limit and that identity's.

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
            started_by=started_by,
        )
        self.spending.open(session.session, self._ai_accounts(stream_name, started_by))
        stream.ai.session = session
        self._nursery.start_soon(self._run_ai, session)
        log.info("stream %r: live AI session %s runs %s", stream_name, session.session, pipeline)
        return session

    def _ai_accounts(self, stream_name: str, started_by: str | None) -> list[SpendAccount]:
        """The spend limits a new live AI session on ``stream_name`` is charged to."""
        accounts = []
        stream_account = self._stream_accounts.get(stream_name)
        if stream_account is not None:
            accounts.append(stream_account)
        if started_by is not None and self.api_spend_limit is not None:
            account = self._api_accounts.get(started_by)
            if account is None:
                account = SpendAccount(
                    name=f"API client {started_by}",
                    limit=self.api_spend_limit,
                    window=API_SPEND_WINDOW,
                    source="--api-spend-limit",
                    on_exhausted=lambda error: self._stop_sessions_of(started_by, error),
                )
                self._api_accounts[started_by] = account
            accounts.append(account)
        return accounts

    def _stop_sessions_of(self, identity: str, reason: LpstreamError) -> None:
        """Stops every running live AI session ``identity`` started."""
        for stream in self._live.values():
            session = stream.ai.session
            if session is not None and session.running and session.started_by == identity:
                session.emit({"type": "error", "message": str(reason)})
                session.stop(str(reason))

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
        finally:
            self.spending.close(session.session)

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
                    publisher=grant.identity if (grant := self._grants.get(name)) else None,
                    record=True if grant is not None and grant.record else None,
                    outputs=None if self.outputs is None else self.outputs.status(name),
                    ai=session.status()
                    if name in self._live and (session := self._live[name].ai.session)
                    else None,
                )
                for name, playback in self._playback.items()
            },
            memory=MemoryStatus(
                rss=process_rss(), budget=self.memory.limit, refused_total=self.memory.refused_total
            ),
        )
