"""The trio side of WHEP playback: sessions that send a live stream's H.264, and its sound as
Opus, to WebRTC viewers.

How this works:

* :class:`WhepPlayback` is run by the node (``await nursery.start(whep.run)``); it owns an
  asyncio loop thread for aiortc and one task per session, through the table of sessions it
  shares with WHIP (:mod:`.sessions`). The HTTP layer calls :meth:`WhepPlayback.offer` and
  :meth:`WhepPlayback.delete`.
* An offer is checked first (token, names, the SDP, sans-IO, :mod:`.sdp`); then the stream's
  rendition is subscribed to through the :class:`PlaybackSource` (the gateway), so an unknown
  stream or rendition is refused (404) before any WebRTC work; then the peer answers
  (:mod:`.whep_peer`) and the session task starts.
* Sound: when the offer receives Opus, the session waits (at most ``source_wait``) for the
  stream's source to have started, so that its audio is known, and subscribes to the stream's
  Opus (:class:`PlaybackAudio`: encoded once per stream, shared by every viewer, whichever
  rendition they watch). The peer then answers the audio section ``sendonly``; a stream
  without audio, or an offer without Opus to receive, gets it answered ``inactive``.
* The session task waits for the connection, starts the subscription over at the current GOP
  (so the viewer starts at a keyframe at once and not at what queued while ICE ran), then
  loops: take an event, let :class:`~.playout.Playout` (sans-IO) make the Annex B frame and
  say when it is due, sleep until then, hand it to the peer with ``call_soon``. Pacing, the
  fast-forward to live and the keyframe rules are the playout's; the subscription's queue is
  bounded and drops a slow viewer to the next keyframe.
* Items from the peer: ``connected`` lets the frames flow; ``failed`` or ``closed`` end the
  session; a keyframe request (PLI/FIR) starts the viewer over at the current GOP (at most
  once a second); :class:`~.whep_peer.ViewerSilent` ends it. A session that is not connected
  within ``connect_timeout`` ends too, and so does every session of a stream that ends (its
  subscription ends).
* Figures per viewer (:class:`WhepSessionStatistics`, in :meth:`WhepPlayback.statistics` and
  in the log line of a session that ends): how long each frame stayed in the node, from its
  arrival (when the fan-out took it) to its hand-off to the peer, fast-forwarded frames
  counted apart; and how long frames then waited for aiortc's sender. A frame of the source
  that is not fast-forwarded should go out within milliseconds of its arrival.
* The audio task of a session starts once its first video frame went out, then loops like
  the video's: take an Opus packet, let :class:`~.playout.AudioPlayout` (sans-IO) stamp it
  and say when it is due (by the rendition's clock, the one the video follows: the audio of a
  transcoded rendition waits for its video), sleep until then, hand it to the peer. Audio and
  video of the same instant leave together, which is what the browser's lip sync goes by
  (RTCP sender reports; see :mod:`.playout`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import attrs
import trio

from lpstream.errors import RemoteProtocolError
from lpstream.media import CodecConfig, MediaPacket

from .bridge import AsyncioLoop
from .playout import AudioPlayout, Playout, SendDelays
from .rtc import ConnectionStateChanged
from .sdp import read_playback_offer
from .sessions import RtcSession, RtcSessions, check_bearer_token, check_resource_names
from .whep_feed import (
    PlaybackAudio,
    PlaybackSource,
    PlaybackSubscription,
    WhepAnswer,
    WhepSessionStatistics,
    WhepStatistics,
)
from .whep_peer import KeyframeRequested, ViewerSilent, WhepPeer, WhepPeerItem

__all__ = [
    "PlaybackAudio",
    "PlaybackSource",
    "PlaybackSubscription",
    "WhepAnswer",
    "WhepPlayback",
    "WhepSessionStatistics",
    "WhepStatistics",
]

log = logging.getLogger("lpstream.ingest.whep")

ITEM_QUEUE = 64
"""Items from the peer (state changes, keyframe requests) waiting for the session task."""


@attrs.define(eq=False, kw_only=True)
class _Session(RtcSession[WhepPeerItem, WhepPeer]):
    rendition: str
    subscription: PlaybackSubscription
    audio: PlaybackAudio | None = None
    playout: Playout = attrs.Factory(Playout)
    audio_playout: AudioPlayout = attrs.Factory(AudioPlayout)
    delays: SendDelays = attrs.Factory(SendDelays)
    connected: trio.Event = attrs.Factory(trio.Event)
    video_started: trio.Event = attrs.Factory(trio.Event)


@attrs.define
class WhepPlayback:
    """Answers WHEP offers with live streams from a :class:`PlaybackSource`.

    Start it with ``await nursery.start(whep.run)``.
    """

    source: PlaybackSource
    """Finds streams and subscribes to them (the gateway)."""
    token: str | None = None
    """Bearer token viewers must present; ``None`` lets anyone watch."""
    ice_servers: Sequence[str] = ()
    """STUN/TURN URLs for ICE gathering; empty for host candidates only."""
    host_addresses: Sequence[str] = ()
    """The addresses offered as ICE host candidates (process-wide, see
    ``offer_host_addresses``); empty: leave aioice's choice (or WHIP's) alone."""
    connect_timeout: float = 15.0
    """Seconds from the answer to a connected peer before a session is dropped."""
    viewer_timeout: float = 10.0
    """Seconds of frames sent without an RTCP report back before a session is dropped."""
    max_sessions: int = 100
    """Sessions at once, on this node; more are answered 503."""
    source_wait: float = 3.0
    """Seconds an offer that receives audio waits for a stream that has just gone live to
    send media, so its answer knows whether the stream has sound."""
    _sessions: RtcSessions[_Session] = attrs.field(
        factory=lambda: RtcSessions("WHEP", "WHEP playback", log), init=False
    )
    _frames_total: int = attrs.field(default=0, init=False)
    _bytes_total: int = attrs.field(default=0, init=False)
    _dropped_ended: int = attrs.field(default=0, init=False)
    _keyframe_requests: int = attrs.field(default=0, init=False)
    _timeouts_total: int = attrs.field(default=0, init=False)
    _audio_packets_total: int = attrs.field(default=0, init=False)
    _audio_bytes_total: int = attrs.field(default=0, init=False)
    _audio_dropped_ended: int = attrs.field(default=0, init=False)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs the asyncio thread and the sessions until cancelled."""
        await self._sessions.run(self.host_addresses, task_status=task_status)

    def statistics(self) -> WhepStatistics:
        """The counters now."""
        dropped = self._dropped_ended + sum(self._dropped(s) for s in self._sessions)
        audio_dropped = self._audio_dropped_ended + sum(
            self._audio_dropped(s) for s in self._sessions
        )
        return WhepStatistics(
            active_sessions=len(self._sessions),
            sessions_total=self._sessions.total,
            frames_sent_total=self._frames_total,
            bytes_sent_total=self._bytes_total,
            frames_dropped_total=dropped,
            keyframe_requests_total=self._keyframe_requests,
            timeouts_total=self._timeouts_total,
            audio_packets_sent_total=self._audio_packets_total,
            audio_bytes_sent_total=self._audio_bytes_total,
            audio_packets_dropped_total=audio_dropped,
            pending_sessions=self._sessions.pending,
            sessions=tuple(
                WhepSessionStatistics(
                    session_id=s.id,
                    stream=s.stream,
                    rendition=s.rendition,
                    send_delay=s.delays.statistics(),
                    audio=s.audio is not None,
                    audio_lag_ms=None if s.audio is None else round(s.audio_playout.lag * 1000, 1),
                )
                for s in self._sessions
            ),
        )

    def session_ids(self, stream: str) -> list[str]:
        """The live sessions watching ``stream``."""
        return self._sessions.ids(stream)

    @staticmethod
    def _dropped(session: _Session) -> int:
        peer = session.peer
        return session.subscription.dropped + (0 if peer is None else peer.frames_dropped)

    @staticmethod
    def _audio_dropped(session: _Session) -> int:
        if session.audio is None:
            return 0
        peer, playout = session.peer, session.audio_playout
        return session.audio.dropped + playout.skipped + (0 if peer is None else peer.audio_dropped)

    async def offer(
        self, stream: str, rendition: str, sdp: str | bytes, *, token: str | None = None
    ) -> WhepAnswer:
        """Starts sending ``rendition`` of ``stream`` to the viewer that sent the SDP offer,
        with the stream's sound when it has some and the offer receives Opus.

        Raises:
            lpstream.errors.RemoteProtocolError: with the HTTP status to answer: 400 bad offer
                or names, 401 token, 404 no such live stream or rendition, 413 offer too
                large, 415 no H.264 video to receive, 503 no capacity or not running.
        """
        check_bearer_token(self.token, token)
        check_resource_names(stream, rendition)
        wants_audio = read_playback_offer(sdp).audio is not None
        text = sdp.decode() if isinstance(sdp, bytes) else sdp
        loop, nursery = self._sessions.admit(self.max_sessions)
        subscription = self.source.subscribe(stream, rendition)
        if subscription is None:
            raise RemoteProtocolError(
                f"no live stream {stream!r} with a rendition {rendition!r}", code=404
            )
        send, receive = trio.open_memory_channel[WhepPeerItem](ITEM_QUEUE)
        session = _Session(
            stream=stream,
            rendition=rendition,
            subscription=subscription,
            send=send,
            receive=receive,
        )
        with self._sessions.reserve():  # the slot is this offer's: no await since admit
            try:
                if wants_audio:
                    with trio.move_on_after(self.source_wait):
                        await subscription.wait_source_started()
                    session.audio = subscription.subscribe_audio()
                answer_sdp = await self._answer(loop, session, text)
                assert session.peer is not None
                if session.audio is not None and not session.peer.audio_active:
                    session.audio.close()
                    session.audio = None
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._sessions.close_peer(session)
                subscription.close()
                if session.audio is not None:
                    session.audio.close()
                raise
        self._sessions.start(nursery, session, self._run_session)
        log.info(
            "WHEP %s/%s: session %s answered (%s)",
            stream,
            rendition,
            session.id,
            "with sound" if session.audio is not None else "video only",
        )
        return WhepAnswer(session_id=session.id, sdp=answer_sdp, etag=session.etag)

    async def delete(
        self, stream: str, rendition: str, session_id: str, *, token: str | None = None
    ) -> None:
        """Ends a session (the WHEP ``DELETE``) and waits until it has ended.

        Raises:
            lpstream.errors.RemoteProtocolError: 401 token, 404 no such session.
        """
        check_bearer_token(self.token, token)
        await self._sessions.delete(
            session_id, lambda session: (session.stream, session.rendition) == (stream, rendition)
        )

    async def _answer(self, loop: AsyncioLoop, session: _Session, sdp: str) -> str:
        def deliver(item: WhepPeerItem) -> None:
            # Full only under a flood of keyframe requests; state changes are few.
            with contextlib.suppress(
                trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
            ):
                session.send.send_nowait(item)

        session.peer = WhepPeer(
            on_item=loop.to_trio(deliver),
            ice_servers=self.ice_servers,
            viewer_timeout=self.viewer_timeout,
            audio=session.audio is not None,
        )
        return await self._sessions.answer(loop, session.peer, sdp)

    async def _run_session(self, session: _Session) -> None:
        try:
            with session.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_peer, session, nursery.cancel_scope)
                    if session.audio is not None:
                        nursery.start_soon(self._pump_audio, session, session.audio)
                    await self._pump(session)
                    nursery.cancel_scope.cancel()
        except Exception:
            session.reason = "internal error"
            log.exception("WHEP %s: session %s failed", session.stream, session.id)
        finally:
            self._sessions.remove(session)
            self._dropped_ended += self._dropped(session)
            self._audio_dropped_ended += self._audio_dropped(session)
            session.subscription.close()
            if session.audio is not None:
                session.audio.close()
            with trio.CancelScope(shield=True):
                await self._sessions.close_peer(session)
            session.mark_ended()
            delay = session.delays.statistics()
            waits = None if session.peer is None else session.peer.sender_wait_ms
            log.info(
                "WHEP %s/%s: session %s ended: %s; %d frames (%d fast-forwarded), the others "
                "sent %s ms after arrival (median; p95 %s, max %s), then %s ms in the "
                "sender's queue (median; max %s)",
                session.stream,
                session.rendition,
                session.id,
                session.reason,
                delay.frames,
                delay.catch_up_frames,
                delay.median_ms,
                delay.p95_ms,
                delay.max_ms,
                None if waits is None else waits[0],
                None if waits is None else waits[1],
            )

    async def _watch_peer(self, session: _Session, scope: trio.CancelScope) -> None:
        deadline = trio.current_time() + self.connect_timeout
        while True:
            item: WhepPeerItem | None = None
            with trio.move_on_at(deadline if not session.connected.is_set() else float("inf")):
                item = await session.receive.receive()
            if item is None:
                self._timeouts_total += 1
                session.reason = f"not connected within {self.connect_timeout:g} s"
                break
            if isinstance(item, ConnectionStateChanged):
                if item.state == "connected":
                    session.connected.set()
                elif item.state in ("failed", "closed"):
                    session.reason = f"connection {item.state}"
                    break
            elif isinstance(item, KeyframeRequested):
                if session.connected.is_set() and session.playout.should_restart(
                    trio.current_time()
                ):
                    self._keyframe_requests += 1
                    session.subscription.restart_at_keyframe()
            elif isinstance(item, ViewerSilent):
                self._timeouts_total += 1
                session.reason = f"no RTCP report from the viewer for {item.seconds:g} s"
                break
        scope.cancel()

    async def _pump(self, session: _Session) -> None:
        await session.connected.wait()
        session.playout.should_restart(trio.current_time())
        session.subscription.restart_at_keyframe()
        loop, peer = self._sessions.loop, session.peer
        assert loop is not None and peer is not None
        while True:
            try:
                event = await session.subscription.receive()
            except trio.EndOfChannel:
                session.reason = "the stream ended"
                return
            if isinstance(event, CodecConfig):
                session.playout.configure(event)
                continue
            if not isinstance(event, MediaPacket):
                continue
            arrived_at = session.subscription.arrived_at
            now = trio.current_time()
            due = session.subscription.due(event)
            if session.audio is not None:
                due += session.audio_playout.lag  # leave with the audio of the same instant
            frame = session.playout.feed(event, due, now)
            if frame is None:
                continue
            if frame.send_at > now:
                await trio.sleep_until(frame.send_at)
            loop.call_soon(peer.send, frame.data, frame.timestamp_ms, frame.keyframe)
            sent_at = trio.current_time()
            session.delays.note(frame, sent_at if arrived_at is None else arrived_at, sent_at)
            session.video_started.set()
            self._frames_total += 1
            self._bytes_total += len(frame.data)

    async def _pump_audio(self, session: _Session, audio: PlaybackAudio) -> None:
        await session.video_started.wait()  # the video sets where live is for this viewer
        loop, peer = self._sessions.loop, session.peer
        assert loop is not None and peer is not None
        while True:
            try:
                packet = await audio.receive()
            except trio.EndOfChannel:
                return  # the video's pump ends the session
            now = trio.current_time()
            due = session.subscription.due(packet)
            out = session.audio_playout.feed(packet, due, now, available=audio.arrived_at)
            if out is None:
                continue
            if out.send_at > now:
                await trio.sleep_until(out.send_at)
            loop.call_soon(peer.send_audio, out.data, out.timestamp)
            self._audio_packets_total += 1
            self._audio_bytes_total += len(out.data)
