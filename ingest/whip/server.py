"""The trio side of WHIP ingest: sessions, their media, their end.

How this works:

* :class:`WhipIngest` is run by the node (``await nursery.start(whip.run)``); it owns the
  asyncio loop thread that aiortc needs (:mod:`.bridge`) and one task per session. The HTTP
  layer calls :meth:`WhipIngest.offer` and :meth:`WhipIngest.delete`.
* An offer is checked first (token, then the SDP, sans-IO, :mod:`.sdp`), then the publish is
  started with the ``PublishHandler`` exactly as RTMP does, so a name already live is refused
  before any WebRTC work. Then the peer answers (:mod:`.peer`) and the session task starts.
* ``max_sessions`` counts an offer from the moment it passes the checks: its slot is taken
  before the first ``await`` (``_pending``) and given back on every way out, so offers that
  arrive together cannot all pass the check before any of them is registered.
* The peer hands its items to the session through a bounded memory channel fed from the
  asyncio thread with ``TrioToken.run_sync_soon``; RTP cannot be pushed back on, so when the
  channel is full items are dropped and the video waits for the next keyframe (a PLI asks for
  one at once). A slow publisher therefore costs frames, never memory.
* The session task turns items into ``MediaEvent``s: H.264 access units through
  :class:`~.h264.H264Track` (no re-encode), Opus PCM through :class:`~.audio.OpusToAac` on a
  worker thread. Track times are RTP times plus the moment the track's first item arrived
  after the session's first media, so audio and video line up to within a frame or two.
* A session ends on ``DELETE``, when the connection fails or closes, when no media arrives
  within ``connect_timeout`` of the answer, or when media stops for ``media_timeout``. Every
  end goes through the same place: the peer is closed on the asyncio loop, the publisher's
  ``aclose()`` is called (shielded, bounded), and the session leaves the registry.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Sequence

import attrs
import trio

from ingest.rtmp.server import Publisher, PublishHandler
from lpstream.errors import LpstreamError, RemoteProtocolError, StreamInUseError
from lpstream.media import check_stream_name

from .audio import OpusToAac
from .bridge import AsyncioLoop, open_asyncio_loop
from .h264 import H264Track
from .peer import (
    AudioFrameReceived,
    ConnectionStateChanged,
    PeerItem,
    RtcPeer,
    VideoFrameReceived,
    offer_host_addresses,
)
from .sdp import OfferSummary, check_offer

__all__ = ["WhipAnswer", "WhipIngest", "WhipStatistics"]

log = logging.getLogger("lpstream.ingest.whip")

CLOSE_TIMEOUT = 5.0
"""How long ending a session waits for the peer to close and for ``Publisher.aclose()``."""
ANSWER_TIMEOUT = 10.0
"""How long making an answer (ICE gathering included) may take."""
CHANNEL_SIZE = 512
"""Items (frames) buffered between the peer and the session task: a few seconds of media."""


@attrs.frozen(kw_only=True)
class WhipAnswer:
    """The answer to an accepted offer."""

    session_id: str
    """Names the session's resource (``/whip/{stream}/{session_id}``)."""
    sdp: str
    """The SDP answer, with every ICE candidate in it."""
    etag: str
    """An entity tag for the session's ICE state (RFC 9725 section 4.3.1)."""


@attrs.frozen(kw_only=True)
class WhipStatistics:
    """A snapshot of a :class:`WhipIngest`'s counters."""

    active_sessions: int
    """Sessions publishing now."""
    sessions_total: int
    """Sessions accepted since start."""
    timeouts_total: int
    """Sessions ended because no media came."""
    dropped_frames_total: int
    """Frames dropped because the session could not keep up."""
    pending_sessions: int = 0
    """Offers accepted and being answered; they count against ``max_sessions``."""


@attrs.define(eq=False)
class _Session:
    id: str
    stream: str
    publisher: Publisher
    has_audio: bool
    send: trio.MemorySendChannel[PeerItem]
    receive: trio.MemoryReceiveChannel[PeerItem]
    peer: RtcPeer | None = None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    ended: trio.Event = attrs.Factory(trio.Event)
    reason: str = "ended"
    video_gap: bool = False
    dropped: int = 0


@attrs.define
class WhipIngest:
    """Accepts WHIP publishes and feeds their media to a ``PublishHandler``.

    Start it with ``await nursery.start(whip.run)``.
    """

    handler: PublishHandler
    """Decides on each publish and receives its media (the gateway)."""
    token: str | None = None
    """Bearer token publishers must present; ``None`` lets anyone publish."""
    ice_servers: Sequence[str] = ()
    """STUN/TURN URLs for ICE gathering; empty for host candidates only (public hosts)."""
    host_addresses: Sequence[str] = ()
    """The addresses offered as ICE host candidates (process-wide, see
    ``offer_host_addresses``); empty: every interface address but loopback."""
    keyframe_interval: float = 2.0
    """Ask for a keyframe (PLI) when none has come for this many seconds."""
    connect_timeout: float = 15.0
    """Seconds from the answer to the first media before a session is dropped."""
    media_timeout: float = 10.0
    """Seconds without media before a session is dropped."""
    max_sessions: int = 32
    """Sessions at once; more are answered 503."""
    audio_bit_rate: int = 128_000
    """AAC bit rate of the transcoded audio."""
    _loop: AsyncioLoop | None = attrs.field(default=None, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _sessions: dict[str, _Session] = attrs.field(factory=dict, init=False)
    _pending: int = attrs.field(default=0, init=False)
    _audio_limiter: trio.CapacityLimiter = attrs.field(
        factory=lambda: trio.CapacityLimiter(2), init=False
    )
    _sessions_total: int = attrs.field(default=0, init=False)
    _timeouts_total: int = attrs.field(default=0, init=False)
    _dropped_total: int = attrs.field(default=0, init=False)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs the asyncio thread and the sessions until cancelled."""
        if self.host_addresses:
            offer_host_addresses(self.host_addresses)
        async with open_asyncio_loop("whip-asyncio") as loop, trio.open_nursery() as nursery:
            self._loop = loop
            self._nursery = nursery
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None
                for session in list(self._sessions.values()):
                    session.reason = "server shutting down"
                    session.scope.cancel()

    def statistics(self) -> WhipStatistics:
        """The counters now."""
        return WhipStatistics(
            active_sessions=len(self._sessions),
            sessions_total=self._sessions_total,
            timeouts_total=self._timeouts_total,
            dropped_frames_total=self._dropped_total,
            pending_sessions=self._pending,
        )

    def session_ids(self, stream: str) -> list[str]:
        """The live sessions of ``stream``."""
        return [s.id for s in self._sessions.values() if s.stream == stream]

    def _check_token(self, token: str | None) -> None:
        if self.token is None:
            return
        if token is None or not hmac.compare_digest(token.encode(), self.token.encode()):
            reason = "a bearer token is required" if token is None else "wrong bearer token"
            raise RemoteProtocolError(reason, code=401)

    async def offer(self, stream: str, sdp: str | bytes, *, token: str | None = None) -> WhipAnswer:
        """Starts a publish of ``stream`` from an SDP offer; returns the answer.

        Raises:
            lpstream.errors.RemoteProtocolError: with the HTTP status to answer: 400 bad offer
                or stream name, 401 token, 409 stream already live, 413 offer too large,
                415 no H.264 video (or audio without Opus), 503 no capacity or not running.
        """
        self._check_token(token)
        try:
            check_stream_name(stream)
        except ValueError as exc:
            raise RemoteProtocolError(str(exc)) from None
        summary = check_offer(sdp)
        text = sdp.decode() if isinstance(sdp, bytes) else sdp
        loop, nursery = self._loop, self._nursery
        if loop is None or nursery is None:
            raise RemoteProtocolError("WHIP ingest is not running", code=503)
        if len(self._sessions) + self._pending >= self.max_sessions:
            raise RemoteProtocolError(
                f"too many WHIP sessions (max_sessions={self.max_sessions})", code=503
            )
        self._pending += 1  # the slot is this offer's from here: no await before this line
        try:
            try:
                publisher = await self.handler.start_publish(stream)
            except StreamInUseError as exc:
                raise RemoteProtocolError(str(exc), code=409) from None
            except LpstreamError as exc:
                raise RemoteProtocolError(f"publish refused: {exc}", code=503) from None
            session = self._new_session(stream, publisher, summary)
            try:
                answer_sdp = await self._answer(loop, session, text)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._close_peer(session)
                    await self._close_publisher(session)
                raise
        finally:
            self._pending -= 1
        self._sessions[session.id] = session
        self._sessions_total += 1
        nursery.start_soon(self._run_session, session)
        log.info("WHIP stream %r: session %s answered", stream, session.id)
        return WhipAnswer(session_id=session.id, sdp=answer_sdp, etag=f'"{session.id}"')

    async def delete(self, stream: str, session_id: str, *, token: str | None = None) -> None:
        """Ends a session (the WHIP ``DELETE``) and waits until it has ended.

        Raises:
            lpstream.errors.RemoteProtocolError: 401 token, 404 no such session.
        """
        self._check_token(token)
        session = self._sessions.get(session_id)
        if session is None or session.stream != stream:
            raise RemoteProtocolError("no such WHIP session", code=404)
        session.reason = "client sent DELETE"
        session.scope.cancel()
        await session.ended.wait()

    def _new_session(self, stream: str, publisher: Publisher, summary: OfferSummary) -> _Session:
        send, receive = trio.open_memory_channel[PeerItem](CHANNEL_SIZE)
        return _Session(
            id=secrets.token_urlsafe(16),
            stream=stream,
            publisher=publisher,
            has_audio=summary.audio is not None,
            send=send,
            receive=receive,
        )

    async def _answer(self, loop: AsyncioLoop, session: _Session, sdp: str) -> str:
        def deliver(item: PeerItem) -> None:
            try:
                session.send.send_nowait(item)
            except trio.WouldBlock:
                session.dropped += 1
                self._dropped_total += 1
                if isinstance(item, VideoFrameReceived):
                    session.video_gap = True
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

        session.peer = RtcPeer(
            on_item=loop.to_trio(deliver),
            ice_servers=self.ice_servers,
            keyframe_interval=self.keyframe_interval,
        )
        with trio.fail_after(ANSWER_TIMEOUT):
            return await loop.run(session.peer.answer, sdp)

    async def _run_session(self, session: _Session) -> None:
        try:
            with session.scope:
                await self._pump(session)
        except LpstreamError as exc:
            session.reason = f"publisher failed: {exc}"
        except Exception:
            session.reason = "internal error"
            log.exception("WHIP stream %r: session %s failed", session.stream, session.id)
        finally:
            self._sessions.pop(session.id, None)
            with trio.CancelScope(shield=True):
                await self._close_peer(session)
                await self._close_publisher(session)
            session.send.close()
            session.receive.close()
            session.ended.set()
            log.info(
                "WHIP stream %r: session %s ended: %s", session.stream, session.id, session.reason
            )

    async def _pump(self, session: _Session) -> None:
        video = H264Track()
        audio: OpusToAac | None = None
        if session.has_audio:
            audio = await trio.to_thread.run_sync(
                lambda: OpusToAac(bit_rate=self.audio_bit_rate), limiter=self._audio_limiter
            )
            await session.publisher.send(audio.config())
        started: float | None = None
        video_offset_ms: int | None = None
        audio_offset_ms: int | None = None
        deadline = trio.current_time() + self.connect_timeout
        while True:
            item: PeerItem | None = None
            with trio.move_on_at(deadline):
                item = await session.receive.receive()
            if item is None:
                self._timeouts_total += 1
                waited = self.connect_timeout if started is None else self.media_timeout
                session.reason = f"no media for {waited:g} s"
                return
            if isinstance(item, ConnectionStateChanged):
                if item.state in ("failed", "closed"):
                    session.reason = f"connection {item.state}"
                    return
                continue
            now = trio.current_time()
            if started is None:
                started = now
            deadline = now + self.media_timeout
            if isinstance(item, VideoFrameReceived):
                if video_offset_ms is None:
                    video_offset_ms = round((now - started) * 1000)
                if session.video_gap:
                    session.video_gap = False
                    video.wait_for_keyframe()
                    self._request_keyframe(session)
                ms = video_offset_ms + item.timestamp // 90
                for event in video.feed(item.data, ms):
                    await session.publisher.send(event)
            elif isinstance(item, AudioFrameReceived) and audio is not None:
                if audio_offset_ms is None:
                    audio_offset_ms = round((now - started) * 1000)
                    audio.offset_ms = audio_offset_ms
                packets = await trio.to_thread.run_sync(
                    audio.encode, item.frame, limiter=self._audio_limiter
                )
                for packet in packets:
                    await session.publisher.send(packet)

    def _request_keyframe(self, session: _Session) -> None:
        if self._loop is not None and session.peer is not None:
            self._loop.call_soon(session.peer.request_keyframe)

    async def _close_peer(self, session: _Session) -> None:
        peer, session.peer = session.peer, None
        if peer is None or self._loop is None:
            return
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            try:
                await self._loop.run(peer.close)
            except Exception:
                log.exception("WHIP session %s: closing the peer failed", session.id)
        if scope.cancelled_caught:
            log.warning(
                "WHIP session %s: closing the peer took over %g s", session.id, CLOSE_TIMEOUT
            )

    async def _close_publisher(self, session: _Session) -> None:
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            try:
                await session.publisher.aclose()
            except Exception:
                log.exception("WHIP session %s: publisher.aclose() failed", session.id)
        if scope.cancelled_caught:
            log.warning(
                "WHIP session %s: publisher.aclose() took over %g s", session.id, CLOSE_TIMEOUT
            )
