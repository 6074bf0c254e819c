"""The exceptions every part of lpstream shares.

A *local* error means our caller misused an API; a *remote* error means the peer broke the
rules, and it carries what to answer (an HTTP-like status code and a reason). Third-party
exceptions are mapped to these at the seams, never leaked to callers.
"""

from __future__ import annotations

__all__ = [
    "BusyError",
    "ConfigError",
    "LocalProtocolError",
    "LpstreamError",
    "MediaError",
    "ProtocolError",
    "RemoteProtocolError",
    "StreamInUseError",
    "TransportError",
]


class LpstreamError(Exception):
    """Base class of every error lpstream raises on purpose."""


class ConfigError(LpstreamError):
    """A flag, file or environment variable holds a value that cannot be used."""


class ProtocolError(LpstreamError):
    """A protocol's rules were broken.

    Attributes:
        code: the status to answer with, following HTTP where one fits (400, 402, 403, 409,
            413, 503).
    """

    def __init__(self, message: str, *, code: int = 400) -> None:
        super().__init__(message)
        self.code = code

    @property
    def reason(self) -> str:
        return str(self)


class LocalProtocolError(ProtocolError):
    """Our own caller tried something the protocol does not allow in this state."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks the protocol; answer it with ``code`` and close."""


class StreamInUseError(LpstreamError):
    """A publisher asked for a stream name that already has a live publisher."""


class BusyError(LpstreamError):
    """No capacity is free for the work asked for (answered as 503)."""


class MediaError(LpstreamError):
    """Media could not be demuxed, decoded, encoded or muxed."""


class TransportError(LpstreamError):
    """A connection or stream to a peer failed or was reset."""
