"""The one binding to the system's libsrt: loading, signatures, options, errors, caller sockets.

How this works: no Python binding of libsrt exists and PyAV's FFmpeg is built without SRT, so
lpstream loads libsrt (the library Debian's FFmpeg links) with ``ctypes`` on first use;
:func:`srt_available` says whether it was found. Every call blocks, so callers run them in
worker threads; libsrt keeps its last error per thread, so each call reads its error
(:func:`last_error`) in the thread that made it, and failures become ``TransportError``.

libsrt talks through two process-wide hooks, set here once: its log lines go to the
``lpstream.ingest.srt.libsrt`` logger at debug level, and a listener's handshake refusals (a
wrong passphrase is found by libsrt after the application accepted the stream id, and only
its log says so) are handed to :func:`watch_refusals` subscribers as ``(socket id, reason)``.
Both hooks are cleared at exit, before the interpreter goes away under libsrt's threads.

:class:`SrtSocket` is a caller in live mode with libsrt's own deadlines (``SRTO_CONNTIMEO``,
``SRTO_SNDTIMEO``, ``SRTO_PEERIDLETIMEO``); the restreams push MPEG-TS with it. Listening is
:mod:`.listener`.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import functools
import logging
import re
import socket
import struct
import threading
from collections.abc import Callable

import attrs

from lpstream.errors import TransportError

__all__ = [
    "ACCEPT_HOOK",
    "LIVE_MAX_PAYLOAD",
    "TS_MESSAGE_SIZE",
    "SrtSocket",
    "last_error",
    "library",
    "parse_sockaddr",
    "refusal_text",
    "set_int",
    "set_text",
    "sockaddr",
    "srt_available",
    "watch_refusals",
]

logger = logging.getLogger("lpstream.ingest.srt.libsrt")

_LIBRARIES = ("srt-gnutls", "srt", "srt-openssl")
_TS_PACKET = 188
TS_MESSAGE_SIZE = 7 * _TS_PACKET
"""Bytes of MPEG-TS in one SRT live message (seven packets, libsrt's default payload size)."""
LIVE_MAX_PAYLOAD = 1456
"""The largest payload of one SRT live message (``SRT_LIVE_MAX_PLSIZE``: an Ethernet MTU less
the UDP and SRT headers): no message a peer sends is larger."""
SRT_ERROR = -1
SRTT_LIVE = 0
# SRT_SOCKOPT values (srt.h).
SRTO_SNDSYN = 1
SRTO_RCVSYN = 2
SRTO_SNDTIMEO = 13
SRTO_LATENCY = 23
SRTO_PASSPHRASE = 26
SRTO_PBKEYLEN = 27
SRTO_CONNTIMEO = 36
SRTO_RCVLATENCY = 43
SRTO_STREAMID = 46
SRTO_TRANSTYPE = 50
SRTO_PEERIDLETIMEO = 55
# SRT_ERRNO values.
SRT_EASYNCRCV = 6002
# SRT_SOCKSTATUS values.
SRTS_CONNECTING = 4
SRTS_CONNECTED = 5
# srt_epoll flags.
SRT_EPOLL_IN = 0x1
SRT_EPOLL_ERR = 0x8
_LOG_CRITICAL, _LOG_WARNING = 2, 4  # syslog levels, as srt_setloglevel takes them
_LOG_FLAGS = 1 | 2 | 4 | 8  # no time, thread name, severity or end of line: logging adds its own
# SRT_REJECT_REASON names, in the order of the enum (srt.h), for the text of a code.
_REJECT_NAMES = (
    "UNKNOWN", "SYSTEM", "PEER", "RESOURCE", "ROGUE", "BACKLOG", "IPE", "CLOSE", "VERSION",
    "RDVCOOKIE", "BADSECRET", "UNSECURE", "MESSAGEAPI", "CONGESTION", "FILTER", "GROUP",
    "TIMEOUT", "CRYPTO",
)  # fmt: skip
# How a listener's newConnection reports a handshake it refused (libsrt 1.4 and 1.5).
_REFUSED = re.compile(rb"@(\d+):newConnection: connection rejected due to: .*?ERROR:(\w+)")

_LOG_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
    ctypes.c_char_p,
)  # fmt: skip
ACCEPT_HOOK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
)
"""``srt_listen_callback_fn``: (opaque, new socket, handshake version, peer address, stream id)
to 0 (go on) or -1 (refuse)."""
_startup_lock = threading.Lock()
_watchers: list[Callable[[int, str], None]] = []


def _on_log(
    _opaque: object, level: int, _file: bytes, _line: int, area: bytes, message: bytes
) -> None:
    try:
        logger.debug(
            "libsrt %s: %s", area.decode(errors="replace"), message.decode(errors="replace")
        )
        found = _REFUSED.search(message)
        if found is not None:
            for watcher in list(_watchers):
                watcher(int(found.group(1)), found.group(2).decode())
    except Exception:  # an exception must not cross into libsrt's thread
        logger.exception("libsrt log line not handled")


_LOG_THUNK = _LOG_HANDLER(_on_log)


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types of the functions lpstream calls."""
    c_int, c_void_p, c_char_p = ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
    c_int_p = ctypes.POINTER(ctypes.c_int)
    signatures: dict[str, tuple[list[object], object]] = {
        "srt_startup": ([], c_int),
        "srt_create_socket": ([], c_int),
        "srt_setsockflag": ([c_int, c_int, c_void_p, c_int], c_int),
        "srt_getsockflag": ([c_int, c_int, c_void_p, c_int_p], c_int),
        "srt_connect": ([c_int, c_char_p, c_int], c_int),
        "srt_bind": ([c_int, c_char_p, c_int], c_int),
        "srt_listen": ([c_int, c_int], c_int),
        "srt_accept": ([c_int, c_void_p, c_int_p], c_int),
        "srt_listen_callback": ([c_int, ACCEPT_HOOK, c_void_p], c_int),
        "srt_sendmsg2": ([c_int, c_char_p, c_int, c_void_p], c_int),
        "srt_recvmsg": ([c_int, c_void_p, c_int], c_int),
        "srt_close": ([c_int], c_int),
        "srt_getsockname": ([c_int, c_void_p, c_int_p], c_int),
        "srt_getsockstate": ([c_int], c_int),
        "srt_getlasterror": ([c_int_p], c_int),
        "srt_getlasterror_str": ([], c_char_p),
        "srt_getrejectreason": ([c_int], c_int),
        "srt_setrejectreason": ([c_int, c_int], c_int),
        "srt_rejectreason_str": ([c_int], c_char_p),
        "srt_epoll_create": ([], c_int),
        "srt_epoll_add_usock": ([c_int, c_int, c_int_p], c_int),
        "srt_epoll_uwait": ([c_int, c_void_p, c_int, ctypes.c_int64], c_int),
        "srt_epoll_release": ([c_int], c_int),
        "srt_setloghandler": ([c_void_p, _LOG_HANDLER], None),
        "srt_setloglevel": ([c_int], None),
        "srt_setlogflags": ([c_int], None),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = restype


def _quiet_at_exit(lib: ctypes.CDLL) -> None:
    """Stops libsrt's threads from calling into Python while the interpreter shuts down."""
    lib.srt_setloglevel(_LOG_CRITICAL)
    lib.srt_setloghandler(None, _LOG_HANDLER())
    _watchers.clear()


@functools.cache
def library() -> ctypes.CDLL | None:
    """libsrt, loaded and started once; None where it is not installed."""
    for name in _LIBRARIES:
        path = ctypes.util.find_library(name)
        if path is None:
            continue
        try:
            lib = ctypes.CDLL(path)
            _declare(lib)
        except (OSError, AttributeError):
            continue
        with _startup_lock:
            if lib.srt_startup() < 0:
                continue
        lib.srt_setlogflags(_LOG_FLAGS)
        lib.srt_setloglevel(_LOG_WARNING)
        lib.srt_setloghandler(None, _LOG_THUNK)
        atexit.register(_quiet_at_exit, lib)
        return lib
    return None


def srt_available() -> bool:
    """Whether libsrt was found (SRT ingest and ``srt://`` forwards need it)."""
    return library() is not None


def watch_refusals(watcher: Callable[[int, str], None]) -> Callable[[], None]:
    """Calls ``watcher(socket_id, reason)`` (from a libsrt thread) for each handshake a
    listener's libsrt refuses after its accept callback let it through (``BADSECRET``: a wrong
    passphrase); returns the function that stops it."""
    _watchers.append(watcher)

    def stop() -> None:
        if watcher in _watchers:
            _watchers.remove(watcher)

    return stop


def refusal_text(lib: ctypes.CDLL, name: str) -> str:
    """libsrt's words for the rejection reason ``name`` (``BADSECRET``), with the name."""
    if name not in _REJECT_NAMES:
        return name
    raw = lib.srt_rejectreason_str(_REJECT_NAMES.index(name))
    return f"{raw.decode(errors='replace')} ({name})" if raw else name


def last_error(lib: ctypes.CDLL) -> tuple[int, str]:
    """The calling thread's last libsrt error: its code and its text."""
    code = lib.srt_getlasterror(None)
    raw = lib.srt_getlasterror_str()
    return code, raw.decode(errors="replace") if raw else "unknown error"


def set_int(lib: ctypes.CDLL, fd: int, option: int, value: int) -> None:
    """Sets a 32-bit integer (or boolean) socket option.

    Raises:
        TransportError: libsrt refused it.
    """
    raw = ctypes.c_int32(value)
    _set(lib, fd, option, ctypes.addressof(raw), ctypes.sizeof(raw))


def set_text(lib: ctypes.CDLL, fd: int, option: int, value: str) -> None:
    """Sets a string socket option (stream id, passphrase).

    Raises:
        TransportError: libsrt refused it (a passphrase of the wrong length, say).
    """
    raw = value.encode()
    buffer = ctypes.create_string_buffer(raw, len(raw))
    _set(lib, fd, option, ctypes.addressof(buffer), len(raw))


def _set(lib: ctypes.CDLL, fd: int, option: int, address: int, size: int) -> None:
    if lib.srt_setsockflag(fd, option, address, size) == SRT_ERROR:
        raise TransportError(f"srt option {option}: {last_error(lib)[1]}")


def sockaddr(host: str, port: int) -> bytes:
    """The C ``struct sockaddr_in``/``sockaddr_in6`` of the first address ``host`` has.

    Raises:
        TransportError: ``host`` does not resolve.
    """
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


def parse_sockaddr(raw: bytes) -> tuple[str, int]:
    """(host, port) of a C ``struct sockaddr_in``/``sockaddr_in6``; ("", 0) if neither."""
    if len(raw) < 8:
        return "", 0
    (family,) = struct.unpack("=H", raw[:2])
    (port,) = struct.unpack("!H", raw[2:4])
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    return "", 0


@attrs.define
class SrtSocket:
    """One connected SRT caller socket in live mode (blocking calls: use it from a worker
    thread)."""

    _lib: ctypes.CDLL
    _fd: int
    _pending: bytearray = attrs.Factory(bytearray)

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        write_timeout: float,
        stream_id: str | None = None,
        passphrase: str | None = None,
        pbkeylen: int | None = None,
        latency_ms: int | None = None,
        shown: str | None = None,
    ) -> SrtSocket:
        """Opens a live-mode SRT connection to ``host:port``; ``shown`` names it in errors
        (``srt://host:port`` if not given).

        Raises:
            TransportError: libsrt is missing, or the connection failed or was rejected.
        """
        lib = library()
        if lib is None:
            raise TransportError("srt needs libsrt, which was not found")
        address = sockaddr(host, port)
        fd = lib.srt_create_socket()
        if fd == SRT_ERROR:
            raise TransportError(f"srt socket: {last_error(lib)[1]}")
        sock = cls(lib, fd)
        try:
            set_int(lib, fd, SRTO_TRANSTYPE, SRTT_LIVE)
            set_int(lib, fd, SRTO_SNDSYN, 1)
            set_int(lib, fd, SRTO_CONNTIMEO, max(1, int(connect_timeout * 1000)))
            set_int(lib, fd, SRTO_SNDTIMEO, max(1, int(write_timeout * 1000)))
            set_int(lib, fd, SRTO_PEERIDLETIMEO, max(1000, int(write_timeout * 1000)))
            if latency_ms is not None:
                set_int(lib, fd, SRTO_LATENCY, latency_ms)
            if stream_id is not None:
                set_text(lib, fd, SRTO_STREAMID, stream_id)
            if passphrase is not None:
                set_text(lib, fd, SRTO_PASSPHRASE, passphrase)
            if pbkeylen is not None:
                set_int(lib, fd, SRTO_PBKEYLEN, pbkeylen)
            if lib.srt_connect(fd, address, len(address)) == SRT_ERROR:
                error = last_error(lib)[1]
                reason = lib.srt_rejectreason_str(lib.srt_getrejectreason(fd))
                detail = f" ({reason.decode(errors='replace')})" if reason else ""
                where = shown or f"srt://{host}:{port}"
                raise TransportError(f"connecting to {where}: {error}{detail}")
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
            for start in range(0, whole, TS_MESSAGE_SIZE):
                chunk = bytes(view[start : min(start + TS_MESSAGE_SIZE, whole)])
                if self._lib.srt_sendmsg2(self._fd, chunk, len(chunk), None) == SRT_ERROR:
                    raise TransportError(f"sending over srt: {last_error(self._lib)[1]}")
        finally:
            view.release()
        del self._pending[:whole]

    def close(self) -> None:
        """Closes the socket (once; later calls do nothing)."""
        if self._fd != SRT_ERROR:
            self._lib.srt_close(self._fd)
            self._fd = SRT_ERROR
