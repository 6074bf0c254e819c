"""The trio side of WHIP ingest: sessions, their media, their end.

How this works:

* :class:`WhipIngest` is run by the node (``await nursery.start(whip.run)``); it owns the
  asyncio loop thread that aiortc needs and one task per session, through the table of
  sessions it shares with WHEP (:mod:`.sessions`). The HTTP layer calls
  :meth:`WhipIngest.offer` and :meth:`WhipIngest.delete`.
* An offer is checked first (token, then the SDP, sans-IO, :mod:`.sdp`), then the publish is
  started with the ``PublishHandler`` exactly as RTMP does (with the client's address and what
  it presented: the URL's query, the bearer token), so a name already live, or a publisher
  the node's publish authorization refuses, is refused before any WebRTC work; a refusal keeps
  the status it carries (401/403 authorization, 429 a publisher's limit; 503 otherwise). Then
  the peer answers (:mod:`.peer`) and the session task starts.
* ``max_sessions`` counts an offer from the moment it passes the checks: its slot is taken
  before the first ``await`` and given back on every way out, so offers that arrive together
  cannot all pass the check before any of them is registered.
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

import logging
from collections.abc import Sequence

import attrs
import trio

from ingest.rtmp.server import PublishAttempt, Publisher, PublishHandler
from lpstream.errors import LpstreamError, ProtocolError, RemoteProtocolError, StreamInUseError

from .audio import OpusToAac
from .av1 import Av1Track
from .bridge import AsyncioLoop
from .h264 import H264Track
from .peer import AudioFrameReceived, PeerItem, RtcPeer, VideoFrameReceived
from .rtc import ConnectionStateChanged
from .sdp import OfferSummary, check_offer
from .sessions import (
    RtcSession,
    RtcSessions,
    check_bearer_token,
    check_resource_names,
    close_within,
)
from .vp8 import Vp8Track

__all__ = ["WhipAnswer", "WhipIngest", "WhipStatistics"]

log = logging.getLogger("lpstream.ingest.whip")

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


@attrs.define(eq=False, kw_only=True)
class _Session(RtcSession[PeerItem, RtcPeer]):
    publisher: Publisher
    has_audio: bool
    video_codec: str = "h264"
    """The video codec the answer takes: ``h264``, ``av1`` or ``vp8``."""
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
    _sessions: RtcSessions[_Session] = attrs.field(
        factory=lambda: RtcSessions("WHIP", "WHIP ingest", log), init=False
    )
    _audio_limiter: trio.CapacityLimiter = attrs.field(
        factory=lambda: trio.CapacityLimiter(2), init=False
    )
    _timeouts_total: int = attrs.field(default=0, init=False)
    _dropped_total: int = attrs.field(default=0, init=False)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs the asyncio thread and the sessions until cancelled."""
        await self._sessions.run(self.host_addresses, task_status=task_status)

    def statistics(self) -> WhipStatistics:
        """The counters now."""
        return WhipStatistics(
            active_sessions=len(self._sessions),
            sessions_total=self._sessions.total,
            timeouts_total=self._timeouts_total,
            dropped_frames_total=self._dropped_total,
            pending_sessions=self._sessions.pending,
        )

    def session_ids(self, stream: str) -> list[str]:
        """The live sessions of ``stream``."""
        return self._sessions.ids(stream)

    async def offer(
        self,
        stream: str,
        sdp: str | bytes,
        *,
        token: str | None = None,
        remote_addr: str = "",
        url: str = "",
        query: str = "",
    ) -> WhipAnswer:
        """Starts a publish of ``stream`` from an SDP offer posted to ``url`` (``query``: its
        query string) by the client at ``remote_addr``; returns the answer.

        Raises:
            lpstream.errors.RemoteProtocolError: with the HTTP status to answer: 400 bad offer
                or stream name, 401 token, 403 not allowed, 409 stream already live, 413 offer
                too large, 415 no H.264 video (or audio without Opus), 429 a publisher's
                limit, 503 no capacity or not running.
        """
        check_bearer_token(self.token, token)
        check_resource_names(stream)
        summary = check_offer(sdp)
        text = sdp.decode() if isinstance(sdp, bytes) else sdp
        loop, nursery = self._sessions.admit(self.max_sessions)
        with self._sessions.reserve():  # the slot is this offer's: no await since admit
            attempt = PublishAttempt(protocol="whip", url=url, query=query, bearer=token)
            try:
                publisher = await self.handler.start_publish(
                    stream, remote_addr=remote_addr, attempt=attempt
                )
            except StreamInUseError as exc:
                raise RemoteProtocolError(str(exc), code=409) from None
            except ProtocolError as exc:
                raise RemoteProtocolError(f"publish refused: {exc}", code=exc.code) from None
            except LpstreamError as exc:
                raise RemoteProtocolError(f"publish refused: {exc}", code=503) from None
            session = self._new_session(stream, publisher, summary)
            try:
                answer_sdp = await self._answer(loop, session, text)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._sessions.close_peer(session)
                    await self._close_publisher(session)
                raise
        self._sessions.start(nursery, session, self._run_session)
        log.info("WHIP stream %r: session %s answered", stream, session.id)
        return WhipAnswer(session_id=session.id, sdp=answer_sdp, etag=session.etag)

    async def delete(self, stream: str, session_id: str, *, token: str | None = None) -> None:
        """Ends a session (the WHIP ``DELETE``) and waits until it has ended.

        Raises:
            lpstream.errors.RemoteProtocolError: 401 token, 404 no such session.
        """
        check_bearer_token(self.token, token)
        await self._sessions.delete(session_id, lambda session: session.stream == stream)

    def _new_session(self, stream: str, publisher: Publisher, summary: OfferSummary) -> _Session:
        send, receive = trio.open_memory_channel[PeerItem](CHANNEL_SIZE)
        return _Session(
            stream=stream,
            publisher=publisher,
            has_audio=summary.audio is not None,
            video_codec=summary.video_codec,
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
            audio=session.has_audio,
            video_codec=session.video_codec,
        )
        return await self._sessions.answer(loop, session.peer, sdp)

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
            self._sessions.remove(session)
            with trio.CancelScope(shield=True):
                await self._sessions.close_peer(session)
                await self._close_publisher(session)
            session.mark_ended()
            log.info(
                "WHIP stream %r: session %s ended: %s", session.stream, session.id, session.reason
            )

    async def _pump(self, session: _Session) -> None:
        video = _track(session.video_codec)
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
        loop = self._sessions.loop
        if loop is not None and session.peer is not None:
            loop.call_soon(session.peer.request_keyframe)

    async def _close_publisher(self, session: _Session) -> None:
        await close_within(
            session.publisher.aclose,
            what=f"WHIP session {session.id}: publisher.aclose()",
            log=log,
        )


def _track(codec: str) -> H264Track | Vp8Track | Av1Track:
    """What turns a session's video frames into media events, by the codec it takes."""
    if codec == "vp8":
        return Vp8Track()
    if codec == "av1":
        return Av1Track()
    return H264Track()
