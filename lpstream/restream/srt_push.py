"""Sending MPEG-TS over SRT (caller mode) through the system's libsrt.

How this works: PyAV's FFmpeg is built without SRT, so the forward speaks SRT through
libsrt itself (the library Debian's FFmpeg links), loaded with ``ctypes`` on first use;
:func:`srt_available` says whether it was found. The socket is in live mode and blocking,
with libsrt's own deadlines: ``SRTO_CONNTIMEO`` bounds the connect, ``SRTO_SNDTIMEO`` each
send and ``SRTO_PEERIDLETIMEO`` how long a silent peer is trusted, so no call waits for
longer than the forward's timeouts. The calls run in a worker thread
(``trio.to_thread.run_sync``); libsrt keeps its last error per thread, so each call reads its
error in the thread that made it.

TS bytes go out as messages of at most 1316 bytes (seven 188-byte packets, SRT's live payload
size); a partial TS packet waits for the rest.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import socket
import struct
import threading
from collections.abc import AsyncIterator

import attrs
import trio

from lpstream.errors import TransportError

from .target import ForwardTarget

__all__ = ["SrtConnection", "SrtSocket", "open_srt_push", "srt_available"]

_LIBRARIES = ("srt-gnutls", "srt", "srt-openssl")
_TS_PACKET = 188
_PAYLOAD = 7 * _TS_PACKET
_SRT_ERROR = -1
_SRTT_LIVE = 0
# SRT_SOCKOPT values (srt.h).
_SRTO_SNDSYN = 1
_SRTO_SNDTIMEO = 13
_SRTO_LATENCY = 23
_SRTO_PASSPHRASE = 26
_SRTO_PBKEYLEN = 27
_SRTO_CONNTIMEO = 36
_SRTO_STREAMID = 46
_SRTO_TRANSTYPE = 50
_SRTO_PEERIDLETIMEO = 55
_startup_lock = threading.Lock()


@functools.cache
def _library() -> ctypes.CDLL | None:
    for name in _LIBRARIES:
        path = ctypes.util.find_library(name)
        if path is None:
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.srt_startup.restype = ctypes.c_int
        lib.srt_create_socket.restype = ctypes.c_int
        lib.srt_setsockflag.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        lib.srt_connect.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.srt_sendmsg2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
        lib.srt_close.argtypes = [ctypes.c_int]
        lib.srt_getlasterror_str.restype = ctypes.c_char_p
        lib.srt_getrejectreason.argtypes = [ctypes.c_int]
        lib.srt_rejectreason_str.argtypes = [ctypes.c_int]
        lib.srt_rejectreason_str.restype = ctypes.c_char_p
        with _startup_lock:
            if lib.srt_startup() < 0:
                continue
        return lib
    return None


def srt_available() -> bool:
    """Whether libsrt was found (``srt://`` forwards need it)."""
    return _library() is not None


def _sockaddr(host: str, port: int) -> bytes:
    """The C ``struct sockaddr_in``/``sockaddr_in6`` of the first address ``host`` has."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise TransportError(f"cannot resolve {host}: {exc}") from exc
    family, _, _, _, address = infos[0]
    if family == socket.AF_INET6:
        raw = socket.inet_pton(socket.AF_INET6, str(address[0]))
        scope = address[3] if len(address) == 4 else 0
        return (
            struct.pack("=H", family) + struct.pack("!HI", port, 0) + raw + struct.pack("=I", scope)
        )
    raw = socket.inet_pton(socket.AF_INET, str(address[0]))
    return struct.pack("=H", family) + struct.pack("!H", port) + raw + bytes(8)


@attrs.define
class SrtSocket:
    """One connected SRT caller socket (blocking calls: use it from a worker thread)."""

    _lib: ctypes.CDLL
    _fd: int
    _pending: bytearray = attrs.Factory(bytearray)

    @classmethod
    def connect(
        cls, target: ForwardTarget, *, connect_timeout: float, write_timeout: float
    ) -> SrtSocket:
        """Opens a live-mode SRT connection to ``target``.

        Raises:
            TransportError: libsrt is missing, or the connection failed or was rejected.
        """
        lib = _library()
        if lib is None:
            raise TransportError("srt forwarding needs libsrt, which was not found")
        address = _sockaddr(target.host, target.port)
        fd = lib.srt_create_socket()
        if fd == _SRT_ERROR:
            raise TransportError(f"srt socket: {_last_error(lib)}")
        sock = cls(lib, fd)
        try:
            sock._set_int(_SRTO_TRANSTYPE, _SRTT_LIVE)
            sock._set_int(_SRTO_SNDSYN, 1)
            sock._set_int(_SRTO_CONNTIMEO, max(1, int(connect_timeout * 1000)))
            sock._set_int(_SRTO_SNDTIMEO, max(1, int(write_timeout * 1000)))
            sock._set_int(_SRTO_PEERIDLETIMEO, max(1000, int(write_timeout * 1000)))
            if target.latency_ms is not None:
                sock._set_int(_SRTO_LATENCY, target.latency_ms)
            if target.stream_id is not None:
                sock._set_text(_SRTO_STREAMID, target.stream_id)
            if target.passphrase is not None:
                sock._set_text(_SRTO_PASSPHRASE, target.passphrase)
            if target.pbkeylen is not None:
                sock._set_int(_SRTO_PBKEYLEN, target.pbkeylen)
            if lib.srt_connect(fd, address, len(address)) == _SRT_ERROR:
                error = _last_error(lib)
                reason = lib.srt_rejectreason_str(lib.srt_getrejectreason(fd))
                detail = f" ({reason.decode(errors='replace')})" if reason else ""
                raise TransportError(f"connecting to {target.redacted}: {error}{detail}")
        except BaseException:
            sock.close()
            raise
        return sock

    def send(self, data: bytes) -> None:
        """Sends whole TS packets, at most seven a message; keeps a partial one for later.

        Raises:
            TransportError: the connection broke or a send timed out.
        """
        self._pending += data
        whole = len(self._pending) - len(self._pending) % _TS_PACKET
        view = memoryview(self._pending)
        try:
            for start in range(0, whole, _PAYLOAD):
                chunk = bytes(view[start : min(start + _PAYLOAD, whole)])
                if self._lib.srt_sendmsg2(self._fd, chunk, len(chunk), None) == _SRT_ERROR:
                    raise TransportError(f"sending over srt: {_last_error(self._lib)}")
        finally:
            view.release()
        del self._pending[:whole]

    def close(self) -> None:
        """Closes the socket (once; later calls do nothing)."""
        if self._fd != _SRT_ERROR:
            self._lib.srt_close(self._fd)
            self._fd = _SRT_ERROR

    def _set_int(self, option: int, value: int) -> None:
        raw = ctypes.c_int32(value)
        self._set(option, ctypes.addressof(raw), ctypes.sizeof(raw))

    def _set_text(self, option: int, value: str) -> None:
        raw = value.encode()
        buffer = ctypes.create_string_buffer(raw, len(raw))
        self._set(option, ctypes.addressof(buffer), len(raw))

    def _set(self, option: int, address: int, size: int) -> None:
        if self._lib.srt_setsockflag(self._fd, option, address, size) == _SRT_ERROR:
            raise TransportError(f"srt option {option}: {_last_error(self._lib)}")


def _last_error(lib: ctypes.CDLL) -> str:
    raw = lib.srt_getlasterror_str()
    return raw.decode(errors="replace") if raw else "unknown error"


@attrs.define
class SrtConnection:
    """A connected SRT destination: send TS bytes with :meth:`send_bytes`."""

    _socket: SrtSocket
    _limiter: trio.CapacityLimiter | None = None
    bytes_sent: int = 0
    """TS bytes handed to libsrt."""

    async def send_bytes(self, data: bytes) -> None:
        """Sends TS bytes (in a worker thread; libsrt bounds the wait).

        Raises:
            TransportError: the connection broke or a send timed out.
        """
        await trio.to_thread.run_sync(self._socket.send, data, limiter=self._limiter)
        self.bytes_sent += len(data)


@contextlib.asynccontextmanager
async def open_srt_push(
    target: ForwardTarget,
    *,
    connect_timeout: float,
    write_timeout: float,
    limiter: trio.CapacityLimiter | None = None,
) -> AsyncIterator[SrtConnection]:
    """Connects to an SRT listener; closes the socket when the block ends.

    Raises:
        TransportError: the connection failed, was rejected or broke.
    """
    sock = await trio.to_thread.run_sync(
        functools.partial(
            SrtSocket.connect, target, connect_timeout=connect_timeout, write_timeout=write_timeout
        ),
        limiter=limiter,
    )
    try:
        yield SrtConnection(sock, limiter)
    finally:
        sock.close()
