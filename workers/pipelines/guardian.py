"""The guardian's rules for a pipeline child process: when it is stopped, when it may restart.

How this works
--------------
A pipeline child (``workers.pipelines.isolated``) is watched by its parent, the worker. The
decisions are here, as plain state with ``now`` passed in (no clock, no process): the driver
asks and does what it is told.

* A child is stopped when it dies (a crash: a signal, an exit), when a request gets no answer
  within its deadline (a hang: ``frame_deadline`` for a frame, ``load_deadline`` for loading
  the model) or when its resident memory passes ``memory_limit`` (checked every
  ``memory_check_interval`` while a request waits, and before each request).
* After a failure the next start waits a back-off: ``first_backoff`` doubled at each failure in
  a row, at most ``max_backoff``. A child that served ``healthy_after`` seconds without failing
  resets the count, so one failure a day never grows the wait, and a child that fails at once
  every time (a model that needs more memory than the limit) never restarts in a tight loop.
* States: ``stopped`` (no child; it may start at ``restart_at``), ``running``.
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["ChildFailure", "FailureKind", "PipelineGuardian"]


class FailureKind(enum.Enum):
    """Why a child was stopped."""

    CRASHED = "crashed"
    """It died: a signal or an exit."""
    HUNG = "hung"
    """A request got no answer within its deadline."""
    MEMORY = "memory"
    """Its resident memory passed the limit."""


@attrs.frozen(kw_only=True)
class ChildFailure:
    """One stop of a child, and when the next may start."""

    kind: FailureKind
    """What happened."""
    detail: str
    """What happened, for people (the signal, the deadline, the memory)."""
    failures_in_row: int
    """Failures without a healthy stretch between them, this one included."""
    restart_at: float
    """When the next child may start."""

    def describe(self, now: float) -> str:
        """One line: what happened and when the child comes back."""
        wait = max(0.0, self.restart_at - now)
        return f"{self.detail}; restarting in {wait:.1f} s (failure {self.failures_in_row})"


@attrs.define
class PipelineGuardian:
    """Watches one pipeline child (see the module comment)."""

    frame_deadline: float = 10.0
    """Seconds a frame (or a short batch at a flush) may take before the child is hung."""
    load_deadline: float = 300.0
    """Seconds starting a child and loading its model may take."""
    memory_limit: int | None = None
    """Bytes of resident memory the child may hold; None: no limit."""
    memory_check_interval: float = 0.05
    """Seconds between memory checks while a request waits."""
    first_backoff: float = 0.5
    """Seconds before the first restart after a healthy run."""
    max_backoff: float = 30.0
    """The longest wait between restarts."""
    healthy_after: float = 60.0
    """Seconds of service after which the failure count starts again."""
    _running_since: float | None = None
    _failures_in_row: int = 0
    _restart_at: float = 0.0
    _last: ChildFailure | None = None
    _restarts: int = 0

    @property
    def running(self) -> bool:
        return self._running_since is not None

    @property
    def last_failure(self) -> ChildFailure | None:
        """The newest failure, if any."""
        return self._last

    @property
    def restarts(self) -> int:
        """Children started after a failure."""
        return self._restarts

    def wait_before_start(self, now: float) -> float:
        """Seconds to wait before a child may start (0: now)."""
        return max(0.0, self._restart_at - now)

    def started(self, now: float) -> None:
        """A child was started (and its model loaded)."""
        if self._last is not None:
            self._restarts += 1
        self._running_since = now

    def deadline(self, started: float, *, loading: bool = False) -> float:
        """When a request sent at ``started`` counts as hung."""
        return started + (self.load_deadline if loading else self.frame_deadline)

    def memory_problem(self, rss: int) -> str | None:
        """Why ``rss`` bytes are too many (None: within the limit)."""
        if self.memory_limit is None or rss <= self.memory_limit:
            return None
        return (
            f"the pipeline used {rss / 2**20:.0f} MiB, past its limit of "
            f"{self.memory_limit / 2**20:.0f} MiB (--pipeline-memory)"
        )

    def failed(self, kind: FailureKind, detail: str, now: float) -> ChildFailure:
        """The child was stopped (or could not start); returns when the next may start."""
        since = self._running_since
        if since is not None and now - since >= self.healthy_after:
            self._failures_in_row = 0
        self._running_since = None
        self._failures_in_row += 1
        wait = min(self.max_backoff, self.first_backoff * 2 ** (self._failures_in_row - 1))
        self._restart_at = now + wait
        self._last = ChildFailure(
            kind=kind,
            detail=detail,
            failures_in_row=self._failures_in_row,
            restart_at=self._restart_at,
        )
        return self._last

    def stopped(self) -> None:
        """The child was stopped on purpose (the session ended)."""
        self._running_since = None
