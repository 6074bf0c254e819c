"""What peers may make an orchestrator hold: job uploads, counted in bytes and in jobs.

How this works:

Anyone who can reach an orchestrator can open JOB streams (off-chain, anonymously), and the
orchestrator keeps every byte of an upload until its job ends, so that a job whose worker fails
can start again elsewhere from the first byte. ``UploadBudget`` bounds what that can cost. It
counts the jobs in flight and the upload bytes held per session (stream id, session id), per
QUIC connection and for the whole node, and refuses what would go over a limit with 503
(busy; the room comes back as jobs end): a job beyond ``max_connection_jobs`` on its
connection or ``max_session_jobs`` in its session, and bytes that would take its session past
``max_session_bytes``, its connection past ``max_connection_bytes`` or the node past
``max_total_bytes``. One upload's own limit, ``max_segment_size``, is configured here too; the
job stream's sans-IO responder enforces it (413) on each DATA frame's announced length.

Each refusal is a ``RemoteProtocolError`` naming the limit; the job stream answers it with
ERROR and is closed, and the connection goes on. A JOB stream holds one ``UploadAllowance``:
``start(job)`` when its header is in, ``charge(n)`` for every ``n`` bytes read from the stream
before they are fed to the frame decoder (so a half-sent frame is counted too), and ``close()``
when the stream is done, which gives back everything it held (also after a refusal: a refused
job holds nothing). What a stream can hold unchecked is the one read that brought its JOB.

This module is sans-IO: plain counters, no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import attrs

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.media import MAX_INGEST_BITRATE, MAX_SEGMENT_SECONDS, segment_size_limit
from lpstream.wire import Job

__all__ = [
    "MAX_CONNECTION_JOBS",
    "MAX_CONNECTION_UPLOAD_BYTES",
    "MAX_SEGMENT_BITRATE",
    "MAX_SEGMENT_SIZE",
    "MAX_SESSION_JOBS",
    "MAX_SESSION_UPLOAD_BYTES",
    "MAX_UPLOAD_BYTES",
    "TRIM_AFTER_BYTES",
    "UploadAllowance",
    "UploadBudget",
    "UploadStatistics",
]

MAX_SEGMENT_BITRATE = MAX_INGEST_BITRATE
"""Bits per second of the richest source an orchestrator is sized for: what a gateway lets a
publisher send by default."""
MAX_SEGMENT_SIZE = segment_size_limit(MAX_SEGMENT_BITRATE, MAX_SEGMENT_SECONDS)
"""Default limit on one job's upload, in bytes (413 beyond): the largest segment a gateway with
default limits cuts (82.5 MB; ``lpstream.media.segment_size_limit``)."""
MAX_SESSION_JOBS = 16
"""Default limit on one session's jobs in flight (503 beyond). A gateway waits for a job until
8 s after its upload ended, so with 1 s segments an honest session may have 10 in flight when
the node falls behind (live AI jobs wait their turn); what they hold is bounded in bytes by
``MAX_SESSION_UPLOAD_BYTES``."""
MAX_SESSION_UPLOAD_BYTES = 2 * MAX_SEGMENT_SIZE
"""Default limit on the upload bytes a session's jobs hold together (503 beyond); 132 MB."""
MAX_CONNECTION_JOBS = 96
"""Default limit on jobs in flight on one QUIC connection (503 beyond). A gateway sends all its
streams' segments on one connection per orchestrator; QUIC lets it have 128 streams open, and
this keeps some of them for control streams."""
MAX_CONNECTION_UPLOAD_BYTES = 256 * 1024 * 1024
"""Default limit on the upload bytes one connection's jobs hold together (503 beyond)."""
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
"""Default limit on the upload bytes all jobs of the node hold together (503 beyond)."""
TRIM_AFTER_BYTES = 64 * 1024 * 1024
"""Default: upload bytes given back by ended jobs between two calls of
``lpstream.budget.trim_freed_memory`` (glibc keeps freed heap memory otherwise, and the node
would stay as big as the biggest burst of uploads made it)."""

SessionKey = tuple[str, str]


@attrs.frozen(kw_only=True)
class UploadStatistics:
    """A snapshot of an ``UploadBudget``'s counts."""

    jobs: int
    """Jobs in flight."""
    bytes_held: int
    """Upload bytes they hold."""
    max_total_bytes: int
    """The node's limit on ``bytes_held``."""
    bytes_released: int
    """Upload bytes given back by ended jobs, ever."""
    refused: Mapping[str, int]
    """Refusals so far, by the name of the limit."""


@attrs.define
class UploadBudget:
    """The node's counts of jobs and upload bytes held, and their limits (module comment)."""

    max_segment_size: int = MAX_SEGMENT_SIZE
    """Bytes one job may upload (413 beyond; enforced by the job stream's responder)."""
    max_session_jobs: int = MAX_SESSION_JOBS
    """Jobs one (stream, session) may have in flight."""
    max_session_bytes: int = MAX_SESSION_UPLOAD_BYTES
    """Upload bytes one session's jobs may hold together."""
    max_connection_jobs: int = MAX_CONNECTION_JOBS
    """Jobs one connection may have in flight."""
    max_connection_bytes: int = MAX_CONNECTION_UPLOAD_BYTES
    """Upload bytes one connection's jobs may hold together."""
    max_total_bytes: int = MAX_UPLOAD_BYTES
    """Upload bytes all jobs may hold together."""
    _session_jobs: dict[Hashable, int] = attrs.field(factory=dict, init=False)
    _session_bytes: dict[Hashable, int] = attrs.field(factory=dict, init=False)
    _connection_jobs: dict[Hashable, int] = attrs.field(factory=dict, init=False)
    _connection_bytes: dict[Hashable, int] = attrs.field(factory=dict, init=False)
    _total_bytes: int = attrs.field(default=0, init=False)
    _released_total: int = attrs.field(default=0, init=False)
    _refused: dict[str, int] = attrs.field(factory=dict, init=False)

    def allowance(self, connection: Hashable) -> UploadAllowance:
        """An allowance for one JOB stream arriving on ``connection``."""
        return UploadAllowance(budget=self, connection=connection)

    @property
    def jobs(self) -> int:
        """Jobs in flight (started and not closed)."""
        return sum(self._connection_jobs.values())

    @property
    def bytes_held(self) -> int:
        """Upload bytes held by the jobs in flight."""
        return self._total_bytes

    @property
    def bytes_released(self) -> int:
        """Upload bytes ever given back by jobs that ended (a counter)."""
        return self._released_total

    def held(self, stream_id: str, session_id: str) -> tuple[int, int]:
        """The jobs in flight and upload bytes held by one session."""
        key = (stream_id, session_id)
        return self._session_jobs.get(key, 0), self._session_bytes.get(key, 0)

    def statistics(self) -> UploadStatistics:
        """Counts for the status page: no session or peer names (they are not public)."""
        return UploadStatistics(
            jobs=self.jobs,
            bytes_held=self._total_bytes,
            max_total_bytes=self.max_total_bytes,
            bytes_released=self._released_total,
            refused=dict(self._refused),
        )

    def _refuse(self, limit: str, message: str) -> RemoteProtocolError:
        self._refused[limit] = self._refused.get(limit, 0) + 1
        return RemoteProtocolError(f"{message} ({limit})", code=503)

    def _start(self, connection: Hashable, session: SessionKey) -> None:
        if self._connection_jobs.get(connection, 0) >= self.max_connection_jobs:
            raise self._refuse(
                "max_connection_jobs",
                f"busy: this connection already has {self.max_connection_jobs} jobs in flight",
            )
        if self._session_jobs.get(session, 0) >= self.max_session_jobs:
            raise self._refuse(
                "max_session_jobs",
                f"busy: this session already has {self.max_session_jobs} jobs in flight",
            )
        _add(self._connection_jobs, connection, 1)
        _add(self._session_jobs, session, 1)

    def _charge(self, connection: Hashable, session: SessionKey, size: int) -> None:
        if self._session_bytes.get(session, 0) + size > self.max_session_bytes:
            raise self._refuse(
                "max_session_bytes",
                f"busy: this session's uploads hold {self.max_session_bytes} bytes already",
            )
        if self._connection_bytes.get(connection, 0) + size > self.max_connection_bytes:
            raise self._refuse(
                "max_connection_bytes",
                f"busy: this connection's uploads hold {self.max_connection_bytes} bytes already",
            )
        if self._total_bytes + size > self.max_total_bytes:
            raise self._refuse(
                "max_total_bytes",
                f"busy: the node holds {self.max_total_bytes} bytes of uploads already",
            )
        _add(self._session_bytes, session, size)
        _add(self._connection_bytes, connection, size)
        self._total_bytes += size

    def _release(self, connection: Hashable, session: SessionKey, held: int) -> None:
        _add(self._session_bytes, session, -held)
        _add(self._connection_bytes, connection, -held)
        self._total_bytes -= held
        self._released_total += held
        _add(self._session_jobs, session, -1)
        _add(self._connection_jobs, connection, -1)


def _add(counts: dict[Hashable, int], key: Hashable, delta: int) -> None:
    value = counts.get(key, 0) + delta
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)


@attrs.define
class UploadAllowance:
    """One JOB stream's share of an ``UploadBudget``: what it was let in with and holds."""

    budget: UploadBudget
    connection: Hashable
    """The QUIC connection the job came on (or any key that stands for it)."""
    _session: SessionKey | None = attrs.field(default=None, init=False)
    _held: int = attrs.field(default=0, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    @property
    def held(self) -> int:
        """Upload bytes this job holds."""
        return self._held

    def start(self, job: Job) -> None:
        """Lets the job in, or refuses it (503) when its connection or session is full.

        Raises:
            RemoteProtocolError: the limit the job would break, with its code.
            LocalProtocolError: called twice, or after ``close``.
        """
        if self._session is not None or self._closed:
            raise LocalProtocolError("an upload allowance starts once")
        session = (job.stream_id, job.session_id)
        self.budget._start(self.connection, session)
        self._session = session

    def charge(self, size: int) -> None:
        """Counts ``size`` more bytes as held, or refuses them (503) and counts nothing.

        Raises:
            RemoteProtocolError: the limit the bytes would break, with its code.
            LocalProtocolError: before ``start``, or after ``close``.
        """
        if self._session is None or self._closed:
            raise LocalProtocolError("charge() needs a started, open allowance")
        self.budget._charge(self.connection, self._session, size)
        self._held += size

    def close(self) -> None:
        """Gives back the job's place and every byte it held. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._session is not None:
            self.budget._release(self.connection, self._session, self._held)
            self._held = 0
