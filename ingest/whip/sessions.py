"""What WHIP ingest and WHEP playback share on the trio side: the asyncio loop, the table of
sessions, the rules an offer passes before any WebRTC work, and how a session ends.

How this works:

* :class:`RtcSessions` is one endpoint's table of sessions (:class:`RtcSession`, one per peer).
  Its :meth:`~RtcSessions.run` owns the asyncio loop thread that aiortc needs (:mod:`.bridge`)
  and the nursery the session tasks run in; when it is cancelled, every session is cancelled
  with the reason "server shutting down".
* An offer is admitted (:meth:`~RtcSessions.admit`: the endpoint runs and has room under
  ``max_sessions``), then holds a slot (:meth:`~RtcSessions.reserve`) until it is answered and
  its session is started (:meth:`~RtcSessions.start`). The slot is taken with no ``await``
  since the admission, so offers that arrive together cannot all pass the check before any of
  them is registered.
* Peers live on the asyncio loop: :meth:`~RtcSessions.answer` waits at most
  :data:`ANSWER_TIMEOUT` for a peer's answer (ICE gathering included), and
  :meth:`~RtcSessions.close_peer` at most :data:`CLOSE_TIMEOUT` for its close
  (:func:`close_within`, which logs what fails or overruns and never raises).
* A ``DELETE`` (:meth:`~RtcSessions.delete`) cancels the session's scope and waits until its
  task has ended, which the task says with :meth:`RtcSession.mark_ended`.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

import attrs
import trio

from lpstream.errors import RemoteProtocolError
from lpstream.media import check_stream_name

from .bridge import AsyncioLoop, open_asyncio_loop
from .rtc import offer_host_addresses

__all__ = [
    "ANSWER_TIMEOUT",
    "CLOSE_TIMEOUT",
    "Peer",
    "RtcSession",
    "RtcSessions",
    "check_bearer_token",
    "check_resource_names",
    "close_within",
]

CLOSE_TIMEOUT = 5.0
"""How long ending a session waits for each thing it closes (the peer, the publisher)."""
ANSWER_TIMEOUT = 10.0
"""How long making an answer (ICE gathering included) may take."""


class Peer(Protocol):
    """What the trio side needs of a peer; both run on the asyncio loop."""

    async def answer(self, offer_sdp: str) -> str:
        """Applies the offer and returns the answer."""
        ...

    async def close(self) -> None:
        """Closes the connection and stops every task of the peer."""
        ...


ItemT = TypeVar("ItemT")
PeerT = TypeVar("PeerT", bound=Peer)
SessionT = TypeVar("SessionT", bound="RtcSession[Any, Any]")


def check_bearer_token(required: str | None, token: str | None) -> None:
    """Checks the bearer token a client presented against the one ``required`` (compared in
    constant time); ``None`` required lets anyone in.

    Raises:
        lpstream.errors.RemoteProtocolError: 401, no token or a wrong one.
    """
    if required is None:
        return
    if token is None or not hmac.compare_digest(token.encode(), required.encode()):
        reason = "a bearer token is required" if token is None else "wrong bearer token"
        raise RemoteProtocolError(reason, code=401)


def check_resource_names(stream: str, rendition: str | None = None) -> None:
    """Checks the names an offer's URL gives: a stream's and, for WHEP, a rendition's.

    Raises:
        lpstream.errors.RemoteProtocolError: 400, naming what is wrong.
    """
    try:
        check_stream_name(stream)
        if rendition is not None:
            check_stream_name(rendition, what="rendition name")
    except ValueError as exc:
        raise RemoteProtocolError(str(exc)) from None


async def close_within(
    close: Callable[[], Awaitable[object]], *, what: str, log: logging.Logger
) -> None:
    """Awaits ``close()`` for at most :data:`CLOSE_TIMEOUT`. A failure or an overrun is logged
    as ``what`` (``"WHIP session abc: closing the peer"``), never raised: ending goes on."""
    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
        try:
            await close()
        except Exception:
            log.exception("%s failed", what)
    if scope.cancelled_caught:
        log.warning("%s took over %g s", what, CLOSE_TIMEOUT)


@attrs.define(eq=False, kw_only=True)
class RtcSession(Generic[ItemT, PeerT]):
    """One viewer's or publisher's session: the peer, what the peer hands the session task,
    the scope that ends it."""

    stream: str
    """The stream published or watched."""
    send: trio.MemorySendChannel[ItemT]
    """Where the peer's items go (from the asyncio thread, through ``AsyncioLoop.to_trio``)."""
    receive: trio.MemoryReceiveChannel[ItemT]
    """Where the session task reads them."""
    id: str = attrs.Factory(lambda: secrets.token_urlsafe(16))
    """Names the session's resource in the URL."""
    peer: PeerT | None = None
    """The peer, once the offer is being answered."""
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    """Cancelled to end the session."""
    ended: trio.Event = attrs.Factory(trio.Event)
    """Set when the session task has closed everything."""
    reason: str = "ended"
    """Why the session ended, for the log."""

    @property
    def etag(self) -> str:
        """The entity tag of the session's ICE state (RFC 9725 section 4.3.1): its id, quoted."""
        return f'"{self.id}"'

    def mark_ended(self) -> None:
        """Closes the item channel and wakes whoever waits for the end (a ``DELETE``)."""
        self.send.close()
        self.receive.close()
        self.ended.set()


@attrs.define
class RtcSessions(Generic[SessionT]):
    """The sessions of one WHIP or WHEP endpoint, and the asyncio loop their peers run on
    (see the module comment)."""

    protocol: str
    """``WHIP`` or ``WHEP``: names the sessions in refusals and in the log."""
    service: str
    """``WHIP ingest`` or ``WHEP playback``: names the endpoint when it is not running."""
    log: logging.Logger
    """Where closing a peer that fails or overruns is logged."""
    _loop: AsyncioLoop | None = attrs.field(default=None, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _sessions: dict[str, SessionT] = attrs.field(factory=dict, init=False)
    _pending: int = attrs.field(default=0, init=False)
    _total: int = attrs.field(default=0, init=False)

    async def run(
        self,
        host_addresses: Sequence[str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Runs the asyncio thread and the sessions until cancelled; ``host_addresses`` (if
        any) are offered as ICE host candidates (see ``offer_host_addresses``)."""
        if host_addresses:
            offer_host_addresses(host_addresses)
        thread = f"{self.protocol.lower()}-asyncio"
        async with open_asyncio_loop(thread) as loop, trio.open_nursery() as nursery:
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

    @property
    def loop(self) -> AsyncioLoop | None:
        """The asyncio loop the peers run on, once :meth:`run` has started."""
        return self._loop

    @property
    def pending(self) -> int:
        """Offers admitted and being answered; they count against ``max_sessions``."""
        return self._pending

    @property
    def total(self) -> int:
        """Sessions started since start."""
        return self._total

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[SessionT]:
        return iter(self._sessions.values())

    def ids(self, stream: str) -> list[str]:
        """The live sessions of ``stream``."""
        return [s.id for s in self._sessions.values() if s.stream == stream]

    def admit(self, max_sessions: int) -> tuple[AsyncioLoop, trio.Nursery]:
        """The loop and nursery a new session will use, when there is room for one.

        Raises:
            lpstream.errors.RemoteProtocolError: 503, not running or ``max_sessions`` reached
                (offers being answered count).
        """
        loop, nursery = self._loop, self._nursery
        if loop is None or nursery is None:
            raise RemoteProtocolError(f"{self.service} is not running", code=503)
        if len(self._sessions) + self._pending >= max_sessions:
            raise RemoteProtocolError(
                f"too many {self.protocol} sessions on this node (max_sessions={max_sessions})",
                code=503,
            )
        return loop, nursery

    @contextlib.contextmanager
    def reserve(self) -> Iterator[None]:
        """Holds an admitted offer's slot for the duration of the block (no ``await`` may
        come between :meth:`admit` and entering it)."""
        self._pending += 1
        try:
            yield
        finally:
            self._pending -= 1

    def start(
        self,
        nursery: trio.Nursery,
        session: SessionT,
        run_session: Callable[[SessionT], Awaitable[None]],
    ) -> None:
        """Registers an answered session and runs ``run_session(session)`` in ``nursery``
        (the one :meth:`admit` gave); ``run_session`` calls :meth:`remove` when it ends."""
        self._sessions[session.id] = session
        self._total += 1
        nursery.start_soon(run_session, session)

    def remove(self, session: SessionT) -> None:
        """Takes an ending session out of the table (it no longer counts or shows)."""
        self._sessions.pop(session.id, None)

    async def delete(self, session_id: str, where: Callable[[SessionT], bool]) -> None:
        """Ends the session ``session_id`` (the client's ``DELETE``) if ``where(session)``
        (the names in the URL are its own), and waits until it has ended.

        Raises:
            lpstream.errors.RemoteProtocolError: 404, no such session.
        """
        session = self._sessions.get(session_id)
        if session is None or not where(session):
            raise RemoteProtocolError(f"no such {self.protocol} session", code=404)
        session.reason = "client sent DELETE"
        session.scope.cancel()
        await session.ended.wait()

    async def answer(self, loop: AsyncioLoop, peer: Peer, sdp: str) -> str:
        """``peer``'s answer to the offer ``sdp``, made on the asyncio loop.

        Raises:
            trio.TooSlowError: it took over :data:`ANSWER_TIMEOUT`.
            lpstream.errors.RemoteProtocolError: the peer refused the offer.
        """
        with trio.fail_after(ANSWER_TIMEOUT):
            return await loop.run(peer.answer, sdp)

    async def close_peer(self, session: SessionT) -> None:
        """Closes the session's peer on the asyncio loop, waiting at most
        :data:`CLOSE_TIMEOUT`; logs, never raises."""
        loop, peer = self._loop, session.peer
        if peer is None or loop is None:
            return
        await close_within(
            lambda: loop.run(peer.close),
            what=f"{self.protocol} session {session.id}: closing the peer",
            log=self.log,
        )
