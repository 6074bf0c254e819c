"""What the WHIP and WHEP peers share on the asyncio loop: the peer connection, the offer, the
tasks.

How this works:

* Everything here runs on an asyncio loop (see :mod:`.bridge`); nothing here knows trio.
  :class:`~.peer.RtcPeer` (receives) and :class:`~.whep_peer.WhepPeer` (sends) are each made of
  an ``RTCPeerConnection`` from :func:`open_peer_connection`, the remote offer applied with
  :func:`apply_offer` and answered with :func:`create_answer` (which turn aiortc's refusals
  into remote errors with the HTTP status to answer: aiortc applies some offers it then cannot
  answer), and a :class:`PeerTasks` that owns the peer's background tasks.
* ICE: aiortc has one ICE stack per process, so :func:`offer_host_addresses` chooses the host
  candidates of every peer made afterwards, WHIP's and WHEP's alike.
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - aiortc is asyncio-only; it is confined to ingest/whip
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

import aioice.ice
import attrs
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import OperationError

from lpstream.errors import RemoteProtocolError

__all__ = [
    "ConnectionStateChanged",
    "PeerTasks",
    "apply_offer",
    "create_answer",
    "offer_host_addresses",
    "open_peer_connection",
]


@attrs.frozen(kw_only=True)
class ConnectionStateChanged:
    """The peer connection's state changed."""

    state: str
    """``new``, ``connecting``, ``connected``, ``failed`` or ``closed``."""


def offer_host_addresses(addresses: Sequence[str]) -> None:
    """Makes ICE offer exactly ``addresses`` as host candidates, in this whole process.

    aioice offers every interface address except loopback and has no setting for it; an
    operator may need to pin the public address (behind a port forward), and a node used on
    one machine needs 127.0.0.1. aiortc has a single ICE stack per process, so this replaces
    aioice's address lookup for every peer connection made afterwards.
    """
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def open_peer_connection(ice_servers: Sequence[str]) -> RTCPeerConnection:
    """A peer connection that gathers ICE candidates through ``ice_servers`` (STUN/TURN URLs;
    none: host candidates only)."""
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in ice_servers])
    )


async def apply_offer(
    pc: RTCPeerConnection,
    offer_sdp: str,
    *,
    no_codec: str,
    codecs_taken: str,
    log: logging.Logger,
) -> None:
    """Applies a remote offer to ``pc``.

    Args:
        pc: the peer connection.
        offer_sdp: the offer.
        no_codec: what it means that no codec of the offer fits (the 415 reason starts so).
        codecs_taken: which codecs this node takes (the 415 reason ends so).
        log: where an offer aiortc refuses is logged (at debug, with aiortc's traceback).

    Raises:
        lpstream.errors.RemoteProtocolError: 415 when no codec in the offer fits, 400 when
            aiortc cannot apply it.
    """
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    except OperationError as exc:
        raise RemoteProtocolError(f"{no_codec} ({exc}); {codecs_taken}", code=415) from None
    except Exception as exc:
        raise _bad_offer(exc, log) from None


async def create_answer(pc: RTCPeerConnection, *, log: logging.Logger) -> RTCSessionDescription:
    """``pc``'s answer to the offer :func:`apply_offer` applied.

    Raises:
        lpstream.errors.RemoteProtocolError: 400 when aiortc cannot answer it (an offer whose
            media sections it read without a direction, for one).
    """
    try:
        answer: RTCSessionDescription = await pc.createAnswer()
    except Exception as exc:
        raise _bad_offer(exc, log) from None
    return answer


def _bad_offer(exc: Exception, log: logging.Logger) -> RemoteProtocolError:
    log.debug("offer rejected by aiortc", exc_info=exc)
    return RemoteProtocolError(f"bad SDP offer: {exc or type(exc).__name__}")


class PeerTasks:
    """The background tasks of one peer: started while it is open, all cancelled and awaited
    when it closes. A task that fails is logged as ``what`` (``"WHIP peer"``) on ``log``."""

    def __init__(self, what: str, log: logging.Logger) -> None:
        self._what = what
        self._log = log
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        """Runs ``coro`` as a task of this peer; once closed, drops it unstarted."""
        if self._closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    async def close(self) -> None:
        """Cancels every task and waits for them; no task starts afterwards."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("%s task failed", self._what, exc_info=task.exception())
