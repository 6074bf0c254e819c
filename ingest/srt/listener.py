"""SRT listening through libsrt: a listener that screens handshakes, and accepted peers.

How this works:

* :meth:`SrtListener.open` binds a live-mode listener (passphrase, key length and receiver
  latency set on it, so every accepted socket inherits them) and registers libsrt's accept
  callback. libsrt calls it from its own receiving thread during each handshake, before the
  connection exists, with the caller's address and stream id: the listener hands them to
  ``screen`` (the server's rule: a stream id that does not parse, too many connections), and a
  refusal goes back to the caller as an SRT rejection code (``srt_setrejectreason``), so the
  caller learns why. The callback must be quick and never block: it only reads counters.
* A handshake the callback let through may still be refused by libsrt itself, after it: a
  wrong or missing passphrase is found only then, and libsrt tells nobody but its log. The
  listener keeps each screened handshake until it is accepted, and learns of the others from
  libsrt's log line (:func:`~.libsrt.watch_refusals`) or, failing that, from the socket's
  state a few seconds later. Refusals of both kinds wait in a queue for
  :meth:`SrtListener.refusals`, so the server logs and counts them on its own thread.
* Every call that can wait takes a deadline: :meth:`SrtListener.accept` and
  :meth:`SrtPeer.receive` wait on a libsrt epoll with a timeout, over non-blocking sockets.
  They block, so the server runs them in worker threads; one call at a time per object.
* :meth:`SrtPeer.receive` takes one message at a time into a buffer of
  :data:`~.libsrt.LIVE_MAX_PAYLOAD` bytes (no message is larger) and gathers what arrives
  within ``linger`` after the first one, up to ``max_bytes``: one thread hop carries many
  messages.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable

import attrs

from lpstream.errors import TransportError

from .libsrt import (
    ACCEPT_HOOK,
    LIVE_MAX_PAYLOAD,
    SRT_EASYNCRCV,
    SRT_EPOLL_ERR,
    SRT_EPOLL_IN,
    SRT_ERROR,
    SRTO_PASSPHRASE,
    SRTO_PBKEYLEN,
    SRTO_RCVLATENCY,
    SRTO_RCVSYN,
    SRTO_STREAMID,
    SRTO_TRANSTYPE,
    SRTS_CONNECTED,
    SRTS_CONNECTING,
    SRTT_LIVE,
    last_error,
    library,
    parse_sockaddr,
    refusal_text,
    set_int,
    set_text,
    sockaddr,
    watch_refusals,
)
from .streamid import MAX_STREAM_ID

__all__ = [
    "HandshakeRefusal",
    "HandshakeRequest",
    "Screen",
    "SrtConnectionEnded",
    "SrtListener",
    "SrtPeer",
]

logger = logging.getLogger("lpstream.ingest.srt")

HANDSHAKE_GRACE = 5.0
"""Seconds after its screening a handshake that is neither accepted nor still connecting
counts as refused by libsrt (when its log did not say so first)."""
_SOCKADDR_SIZE = 128


class _EpollEvent(ctypes.Structure):
    _fields_ = (("fd", ctypes.c_int), ("events", ctypes.c_int))


@attrs.frozen(kw_only=True)
class HandshakeRequest:
    """A caller's handshake, as the accept callback sees it."""

    peer: str
    """The caller's ``host:port``."""
    stream_id: bytes = attrs.field(repr=False)
    """Its ``SRTO_STREAMID``, as sent (libsrt holds it to 512 bytes); it may hold a secret."""
    in_handshake: int
    """Other handshakes let through and not accepted yet."""


@attrs.frozen(kw_only=True)
class HandshakeRefusal:
    """A handshake that did not become a connection, and why."""

    peer: str
    """The caller's ``host:port``."""
    stream_id: bytes = attrs.field(repr=False)
    """Its stream id (it may hold a secret)."""
    reason: str
    """Why, in words."""
    by_libsrt: bool
    """True: libsrt refused it after the screen let it through (a wrong passphrase)."""


Screen = Callable[[HandshakeRequest], tuple[int, str] | None]
"""Decides on a handshake from libsrt's thread: None lets it through, ``(code, reason)``
refuses it with that SRT rejection code (``SRT_REJX_*``, 1000 and up). Quick, never blocking."""


class SrtConnectionEnded(TransportError):
    """The peer closed the connection, or it broke."""


@attrs.define(eq=False)
class _Screened:
    peer: str
    stream_id: bytes
    at: float


_open_listeners: dict[int, SrtListener] = {}


def _on_handshake(
    opaque: int | None, socket_id: int, _version: int, address: int | None, stream_id: bytes | None
) -> int:
    try:
        listener = _open_listeners.get(opaque or 0)
        if listener is None or address is None:
            return SRT_ERROR
        return listener._screen_handshake(socket_id, address, stream_id or b"")
    except Exception:  # an exception must not cross into libsrt's thread
        logger.exception("SRT: handshake screening failed")
        return SRT_ERROR


_HOOK_THUNK = ACCEPT_HOOK(_on_handshake)


def _peer_name(address: bytes) -> str:
    host, port = parse_sockaddr(address)
    if not host:
        return "unknown peer"
    return (f"[{host}]" if ":" in host else host) + f":{port}"


def _raw_sockaddr(address: int) -> bytes:
    """The bytes of the C ``struct sockaddr`` at ``address`` (IPv4 or IPv6)."""
    (family,) = struct.unpack("=H", ctypes.string_at(address, 2))
    return ctypes.string_at(address, 28 if family == socket.AF_INET6 else 16)


def _epoll(lib: ctypes.CDLL, fd: int) -> int:
    eid = int(lib.srt_epoll_create())
    if eid < 0:
        raise TransportError(f"srt epoll: {last_error(lib)[1]}")
    events = ctypes.c_int(SRT_EPOLL_IN | SRT_EPOLL_ERR)
    if lib.srt_epoll_add_usock(eid, fd, ctypes.byref(events)) == SRT_ERROR:
        error = last_error(lib)[1]
        lib.srt_epoll_release(eid)
        raise TransportError(f"srt epoll: {error}")
    return eid


def _wait(lib: ctypes.CDLL, eid: int, seconds: float) -> bool:
    """Whether the socket of ``eid`` became readable (or failed) within ``seconds``."""
    event = _EpollEvent()
    ready = int(lib.srt_epoll_uwait(eid, ctypes.byref(event), 1, max(1, int(seconds * 1000))))
    if ready < 0:
        raise TransportError(f"srt epoll wait: {last_error(lib)[1]}")
    return ready > 0


@attrs.define(eq=False)
class SrtListener:
    """A bound SRT listener (see the module comment); blocking calls, one thread at a time."""

    _lib: ctypes.CDLL
    _fd: int
    _screen: Screen
    address: tuple[str, int] = ("", 0)
    """The host and port it is bound to."""
    _eid: int = -1
    _screened: dict[int, _Screened] = attrs.Factory(dict)
    _refusals: collections.deque[HandshakeRefusal] = attrs.Factory(collections.deque)
    _lock: threading.Lock = attrs.Factory(threading.Lock)
    _unwatch: Callable[[], None] | None = None

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        *,
        screen: Screen,
        passphrase: str | None = None,
        pbkeylen: int = 0,
        latency_ms: int = 120,
        backlog: int = 16,
    ) -> SrtListener:
        """Binds and listens on ``host:port`` (UDP; port 0 picks a free one).

        Raises:
            TransportError: libsrt is missing, an option is refused, or the bind failed.
        """
        lib = library()
        if lib is None:
            raise TransportError("SRT ingest needs libsrt (Debian: libsrt1.5-gnutls)")
        address = sockaddr(host, port)
        fd = lib.srt_create_socket()
        if fd == SRT_ERROR:
            raise TransportError(f"srt socket: {last_error(lib)[1]}")
        listener = cls(lib, fd, screen)
        try:
            set_int(lib, fd, SRTO_TRANSTYPE, SRTT_LIVE)
            set_int(lib, fd, SRTO_RCVSYN, 0)
            set_int(lib, fd, SRTO_RCVLATENCY, latency_ms)
            if passphrase:
                set_text(lib, fd, SRTO_PASSPHRASE, passphrase)
                if pbkeylen:
                    set_int(lib, fd, SRTO_PBKEYLEN, pbkeylen)
            if lib.srt_bind(fd, address, len(address)) == SRT_ERROR:
                raise TransportError(f"srt bind to {host}:{port}: {last_error(lib)[1]}")
            storage = ctypes.create_string_buffer(_SOCKADDR_SIZE)
            size = ctypes.c_int(_SOCKADDR_SIZE)
            if lib.srt_getsockname(fd, storage, ctypes.byref(size)) == SRT_ERROR:
                raise TransportError(f"srt getsockname: {last_error(lib)[1]}")
            listener.address = parse_sockaddr(storage.raw[: size.value])
            _open_listeners[fd] = listener
            listener._unwatch = watch_refusals(listener._refused_by_libsrt)
            if lib.srt_listen_callback(fd, _HOOK_THUNK, fd) == SRT_ERROR:
                raise TransportError(f"srt listen callback: {last_error(lib)[1]}")
            if lib.srt_listen(fd, backlog) == SRT_ERROR:
                raise TransportError(f"srt listen: {last_error(lib)[1]}")
            listener._eid = _epoll(lib, fd)
        except BaseException:
            listener.close()
            raise
        return listener

    def accept(self, wait: float) -> SrtPeer | None:
        """The next connection, waiting up to ``wait`` seconds; None if none came.

        Raises:
            TransportError: the listener failed (closed, say).
        """
        lib = self._lib
        storage = ctypes.create_string_buffer(_SOCKADDR_SIZE)
        size = ctypes.c_int(_SOCKADDR_SIZE)
        fd = lib.srt_accept(self._fd, storage, ctypes.byref(size))
        if fd == SRT_ERROR:
            code, text = last_error(lib)
            if code != SRT_EASYNCRCV:
                raise TransportError(f"srt accept: {text}")
            if _wait(lib, self._eid, wait):
                size.value = _SOCKADDR_SIZE
                fd = lib.srt_accept(self._fd, storage, ctypes.byref(size))
            if fd == SRT_ERROR:
                self._sweep()
                return None
        with self._lock:
            screened = self._screened.pop(fd, None)
        peer = screened.peer if screened else _peer_name(storage.raw[: size.value])
        try:
            return SrtPeer.open(lib, fd, peer)
        except BaseException:
            lib.srt_close(fd)
            raise

    def refusals(self) -> list[HandshakeRefusal]:
        """The handshakes refused since the last call (thread-safe)."""
        out: list[HandshakeRefusal] = []
        while self._refusals:
            out.append(self._refusals.popleft())
        return out

    def close(self) -> None:
        """Stops listening (once); accepted peers go on."""
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        _open_listeners.pop(self._fd, None)
        if self._eid >= 0:
            self._lib.srt_epoll_release(self._eid)
            self._eid = -1
        if self._fd != SRT_ERROR:
            self._lib.srt_close(self._fd)
            self._fd = SRT_ERROR

    def _screen_handshake(self, socket_id: int, address: int, stream_id: bytes) -> int:
        """The accept callback, on libsrt's thread: 0 lets the handshake go on."""
        peer = _peer_name(_raw_sockaddr(address))
        with self._lock:
            in_handshake = len(self._screened)
        verdict = self._screen(
            HandshakeRequest(peer=peer, stream_id=stream_id, in_handshake=in_handshake)
        )
        if verdict is not None:
            code, reason = verdict
            self._lib.srt_setrejectreason(socket_id, code)
            self._refusals.append(
                HandshakeRefusal(peer=peer, stream_id=stream_id, reason=reason, by_libsrt=False)
            )
            return SRT_ERROR
        with self._lock:
            self._screened[socket_id] = _Screened(peer, stream_id, time.monotonic())
        return 0

    def _refused_by_libsrt(self, socket_id: int, name: str) -> None:
        with self._lock:
            screened = self._screened.pop(socket_id, None)
        if screened is not None:
            self._refusals.append(
                HandshakeRefusal(
                    peer=screened.peer,
                    stream_id=screened.stream_id,
                    reason=f"libsrt: {refusal_text(self._lib, name)}",
                    by_libsrt=True,
                )
            )

    def _sweep(self) -> None:
        """Handshakes screened a while ago that libsrt dropped without a log line."""
        now = time.monotonic()
        with self._lock:
            old = [(sid, s) for sid, s in self._screened.items() if now - s.at > HANDSHAKE_GRACE]
        for socket_id, screened in old:
            if self._lib.srt_getsockstate(socket_id) in (SRTS_CONNECTING, SRTS_CONNECTED):
                continue
            with self._lock:
                if self._screened.pop(socket_id, None) is None:
                    continue
            self._refusals.append(
                HandshakeRefusal(
                    peer=screened.peer,
                    stream_id=screened.stream_id,
                    reason="libsrt: the handshake did not finish",
                    by_libsrt=True,
                )
            )


@attrs.define(eq=False)
class SrtPeer:
    """An accepted SRT connection (blocking calls: use it from one worker thread at a time)."""

    _lib: ctypes.CDLL
    _fd: int
    _eid: int
    peer: str
    """The caller's ``host:port``."""
    stream_id: bytes = attrs.field(repr=False)
    """The stream id the caller sent (it may hold a secret)."""
    _buffer: ctypes.Array[ctypes.c_char] = attrs.Factory(
        lambda: ctypes.create_string_buffer(LIVE_MAX_PAYLOAD)
    )
    _ended: str | None = None

    @classmethod
    def open(cls, lib: ctypes.CDLL, fd: int, peer: str) -> SrtPeer:
        """Takes over the accepted socket ``fd``: reads its stream id, makes it non-blocking.

        Raises:
            TransportError: libsrt refused an option (the socket is already gone).
        """
        raw = ctypes.create_string_buffer(MAX_STREAM_ID + 1)
        size = ctypes.c_int(MAX_STREAM_ID + 1)
        if lib.srt_getsockflag(fd, SRTO_STREAMID, raw, ctypes.byref(size)) == SRT_ERROR:
            raise TransportError(f"srt stream id: {last_error(lib)[1]}")
        stream_id = raw.raw[: min(size.value, MAX_STREAM_ID)]
        set_int(lib, fd, SRTO_RCVSYN, 0)
        return cls(lib, fd, _epoll(lib, fd), peer, stream_id)

    def receive(self, max_bytes: int, wait: float, linger: float = 0.02) -> bytes | None:
        """What arrives within ``wait`` seconds, and within ``linger`` seconds after the first
        message, up to ``max_bytes`` (at least one message); None: nothing came.

        Raises:
            SrtConnectionEnded: the peer closed the connection, or it broke.
        """
        if self._ended is not None:
            raise SrtConnectionEnded(self._ended)
        lib = self._lib
        out = bytearray()
        deadline = time.monotonic() + wait
        while not out or len(out) + LIVE_MAX_PAYLOAD <= max_bytes:
            size = lib.srt_recvmsg(self._fd, self._buffer, LIVE_MAX_PAYLOAD)
            if size > 0:
                if not out:
                    deadline = time.monotonic() + linger
                out += self._buffer.raw[:size]
                continue
            code, text = last_error(lib) if size == SRT_ERROR else (0, "connection closed")
            if code != SRT_EASYNCRCV:
                self._ended = text
                break
            left = deadline - time.monotonic()
            if left <= 0 or not _wait(lib, self._eid, left):
                break
        if out:
            return bytes(out)
        if self._ended is not None:
            raise SrtConnectionEnded(self._ended)
        return None

    def close(self) -> None:
        """Closes the connection (once; later calls do nothing)."""
        if self._eid >= 0:
            self._lib.srt_epoll_release(self._eid)
            self._eid = -1
        if self._fd != SRT_ERROR:
            self._lib.srt_close(self._fd)
            self._fd = SRT_ERROR
