"""Who publishes on this gateway, and how many live streams each may hold.

Every accepted publish is noted with its publisher: its identity (what publish authorization
says it is; where nothing more is known, its address: ``addr:HOST``, or ``anonymous`` when
the ingest did not tell the address either) and its source (the IPv4 address, or the /64 of
an IPv6 one: ``lpstream.orchestrator.hello_backoff.source_of``). A new publish is refused,
before anything is set up for it, when the gateway holds ``max_streams`` live streams
(``BusyError``, 503), its identity ``max_streams_per_key`` or its source
``max_streams_per_addr`` (``ProtocolError`` 429); each refusal names the flag. 0 is no limit.
The same identity is what the fair share of transcoding is divided by
(``lpstream.gateway.fair_share``).
"""

from __future__ import annotations

import attrs

from lpstream.access.values import host_of, identity_of
from lpstream.errors import BusyError, ProtocolError
from lpstream.orchestrator.hello_backoff import source_of

__all__ = [
    "DEFAULT_MAX_STREAMS",
    "DEFAULT_MAX_STREAMS_PER_ADDR",
    "DEFAULT_MAX_STREAMS_PER_KEY",
    "Publisher",
    "PublisherTable",
    "StreamLimits",
]

DEFAULT_MAX_STREAMS = 128
"""Live streams a gateway takes at once (``--max-streams``)."""
DEFAULT_MAX_STREAMS_PER_KEY = 32
"""Live streams one publisher identity may hold (``--max-streams-per-key``)."""
DEFAULT_MAX_STREAMS_PER_ADDR = 32
"""Live streams one source address may publish (``--max-streams-per-addr``)."""


@attrs.frozen(kw_only=True)
class StreamLimits:
    """How many live streams the gateway, a publisher and an address may hold (0: any)."""

    max_streams: int = DEFAULT_MAX_STREAMS
    """Node-wide."""
    max_streams_per_key: int = DEFAULT_MAX_STREAMS_PER_KEY
    """Per publisher identity."""
    max_streams_per_addr: int = DEFAULT_MAX_STREAMS_PER_ADDR
    """Per source address."""


@attrs.frozen(kw_only=True)
class Publisher:
    """Who publishes a stream."""

    identity: str
    """What publish authorization named it, else ``addr:HOST``, else ``anonymous``."""
    source: str = ""
    """Its address as limits count it (an IPv4 address, an IPv6 /64); "" when unknown."""

    @classmethod
    def of(cls, identity: str | None = None, remote_addr: str = "") -> Publisher:
        """The publisher from ``remote_addr`` (``host:port``) and, if publish authorization
        named one, its ``identity``."""
        host = host_of(remote_addr) if remote_addr else ""
        return cls(
            identity=identity or identity_of(None, remote_addr),
            source=source_of(host) if host else "",
        )


@attrs.define
class PublisherTable:
    """The live streams by publisher, within ``limits`` (see the module comment)."""

    limits: StreamLimits = attrs.Factory(StreamLimits)
    _streams: dict[str, Publisher] = attrs.Factory(dict)

    def __len__(self) -> int:
        return len(self._streams)

    def publisher(self, stream: str) -> Publisher | None:
        """Who publishes ``stream`` now."""
        return self._streams.get(stream)

    def admit(self, stream: str, publisher: Publisher) -> None:
        """Notes ``publisher``'s new live ``stream``.

        Raises:
            BusyError: the gateway holds ``max_streams`` (503).
            ProtocolError: 429, the publisher's identity or source holds its most.
        """
        limits = self.limits
        if limits.max_streams and len(self._streams) >= limits.max_streams:
            raise BusyError(
                f"this gateway takes {limits.max_streams} live streams at once (--max-streams)"
            )
        held = [p for p in self._streams.values() if p.identity == publisher.identity]
        if limits.max_streams_per_key and len(held) >= limits.max_streams_per_key:
            raise ProtocolError(
                f"publisher {publisher.identity} already holds {len(held)} live streams, the "
                f"most one publisher may (--max-streams-per-key)",
                code=429,
            )
        if publisher.source and limits.max_streams_per_addr:
            sent = [p for p in self._streams.values() if p.source == publisher.source]
            if len(sent) >= limits.max_streams_per_addr:
                raise ProtocolError(
                    f"address {publisher.source} already publishes {len(sent)} live streams, "
                    f"the most one address may (--max-streams-per-addr)",
                    code=429,
                )
        self._streams[stream] = publisher

    def leave(self, stream: str) -> None:
        """``stream``'s publish ended."""
        self._streams.pop(stream, None)
