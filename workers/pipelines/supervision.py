"""A child process that runs a model for the worker, watched by a guardian.

How this works
--------------
Live pipelines (``workers.pipelines.isolated``) and batch models (``workers.batch.runner``)
run in child processes started from one ``forkserver`` context: a server process, a fresh
interpreter that never touched a GPU or a thread of the worker, so forking it is safe. It
imports torch once, so a new child starts in milliseconds (:func:`start_child_server` starts
it ahead of the first child).

A :class:`SupervisedChild` is the worker's side of one such child at a time, and of its
failures. :meth:`~SupervisedChild.start` forks a child running ``target(connection, *args)``,
``connection`` being its end of a pipe, once :meth:`~SupervisedChild.check_backoff` found
the guardian's back-off after a failure over. :meth:`~SupervisedChild.send` and
:meth:`~SupervisedChild.receive` exchange messages; while ``receive`` waits it polls the pipe
in steps of the guardian's ``memory_check_interval`` and between them applies its rules
(``workers.pipelines.guardian``): a closed pipe or a dead process, no answer by the deadline
(``load_deadline`` while the model loads, ``frame_deadline`` otherwise) or resident memory
past ``memory_limit`` raise :class:`ChildGone`. The owner then calls
:meth:`~SupervisedChild.fail`: the child is killed (SIGKILL), and the guardian records the
failure, which sets when the next may start.

One call at a time: the owner holds :attr:`~SupervisedChild.lock` across its exchange.
:meth:`~SupervisedChild.close` may come from another thread: it kills the child of a call in
flight (whose ``fail`` then counts no failure: it was stopped on purpose), waits for the lock
and ends the child for good.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from workers.pipelines.guardian import ChildFailure, FailureKind, PipelineGuardian
from workers.pipelines.params import PipelineError

__all__ = ["ChildGone", "SupervisedChild", "resident_memory", "start_child_server"]

_CHILDREN = multiprocessing.get_context("forkserver")
_CHILDREN.set_forkserver_preload(["workers.pipelines.child", "torch"])  # absent: skipped


def start_child_server() -> None:
    """Starts the process pipeline children are forked from, if it is not running: it imports
    torch once, so a new child starts in milliseconds rather than importing it again (seconds).
    Returns at once; the import goes on in that process."""
    multiprocessing.forkserver.ensure_running()


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory(pid: int) -> int | None:
    """Resident memory of process ``pid`` in bytes (Linux ``/proc``); None where unknown."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * _PAGE


class ChildGone(Exception):
    """The child failed while a call waited on it; the owner stops it with ``fail``."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class SupervisedChild:
    """One child process at a time under a guardian, and its failures (see the module
    comment)."""

    def __init__(
        self,
        *,
        label: str,
        process_name: str,
        call: str,
        load: str,
        guardian: PipelineGuardian,
        on_failure: Callable[[ChildFailure], None] | None = None,
    ) -> None:
        """``label`` names the child's model in messages (``pipeline 'noop'``) and
        ``process_name`` its process; ``call`` and ``load`` say what a child past its
        deadline did not do (``return a frame``, ``load the pipeline``); ``on_failure``
        hears of each failure counted."""
        self.guardian = guardian
        self._label = label
        self._process_name = process_name
        self._call = call
        self._load = load
        self._on_failure = on_failure
        self.lock = threading.Lock()
        """Held by the call in flight: one at a time, in order."""
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None
        self._closed = False
        self._last_memory_check = 0.0
        self.failures: list[ChildFailure] = []
        """Every stop of a child, oldest first (the newest 64)."""

    @property
    def running(self) -> bool:
        """Whether a child is started (and not stopped since)."""
        return self._process is not None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: no child starts again."""
        return self._closed

    @property
    def pid(self) -> int | None:
        """The child's process id while one runs."""
        process = self._process
        return None if process is None else process.pid

    def check_backoff(self) -> None:
        """Checks that a child may start now (call :meth:`start` next).

        Raises:
            PipelineError: the guardian's back-off after a failure is not over.
        """
        now = time.monotonic()
        if self.guardian.wait_before_start(now) > 0:
            last = self.guardian.last_failure
            assert last is not None  # a wait follows a failure
            raise PipelineError(f"{self._label} is restarting: {last.describe(now)}")

    def start(self, target: Callable[..., object], *args: object) -> None:
        """Forks a child running ``target(connection, *args)``; call with :attr:`lock` held,
        after :meth:`check_backoff`."""
        mine, theirs = _CHILDREN.Pipe()
        process = _CHILDREN.Process(
            target=target, args=(theirs, *args), name=self._process_name, daemon=True
        )
        process.start()
        theirs.close()
        self._process, self._connection = process, mine

    def request(self, message: tuple[Any, ...], *, loading: bool = False) -> Any:
        """Sends ``message`` and waits for one answer, by the deadline of a call (``loading``:
        of loading the model) from now.

        Raises:
            ChildGone: the child failed.
        """
        self.send(message)
        return self.receive(
            self.guardian.deadline(time.monotonic(), loading=loading), loading=loading
        )

    def send(self, message: tuple[Any, ...]) -> None:
        """Sends ``message`` to the running child.

        Raises:
            ChildGone: the pipe is closed (the child died).
        """
        connection, process = self._connection, self._process
        assert connection is not None and process is not None
        try:
            connection.send(message)
        except OSError:
            raise ChildGone(FailureKind.CRASHED, _death(process)) from None

    def receive(self, deadline: float, *, loading: bool = False) -> Any:
        """The child's next message, which must come by ``deadline`` (monotonic seconds);
        ``loading`` says the model is loading (for the message of a missed deadline).

        Raises:
            ChildGone: the child died, missed the deadline or passed its memory limit.
        """
        connection, process = self._connection, self._process
        assert connection is not None and process is not None
        guardian = self.guardian
        while True:
            now = time.monotonic()
            if now - self._last_memory_check >= guardian.memory_check_interval:
                self._last_memory_check = now
                self._check_memory(process)
            step = min(guardian.memory_check_interval, max(0.0, deadline - now))
            try:
                if connection.poll(step):
                    return connection.recv()
            except (EOFError, OSError):
                raise ChildGone(FailureKind.CRASHED, _death(process)) from None
            if not process.is_alive():
                raise ChildGone(FailureKind.CRASHED, _death(process))
            if time.monotonic() >= deadline:
                if loading:
                    what, seconds = self._load, guardian.load_deadline
                else:
                    what, seconds = self._call, guardian.frame_deadline
                raise ChildGone(FailureKind.HUNG, f"did not {what} within {seconds:g} s")

    def fail(self, gone: ChildGone) -> ChildFailure | None:
        """Stops the child at once after ``gone`` and counts the failure with the guardian
        (kept in :attr:`failures`, told to ``on_failure``); None, and nothing counted, where
        the child was closed on purpose while the call waited."""
        self.kill()
        self.end(grace=0.0)
        if self._closed:
            return None
        failure = self.guardian.failed(gone.kind, gone.detail, time.monotonic())
        self.failures.append(failure)
        del self.failures[:-64]
        if self._on_failure is not None:
            self._on_failure(failure)
        return failure

    def close(self, *, grace: float) -> None:
        """Stops the child for good (once): a call in flight is ended first (its child
        killed), then the child is asked to stop and given ``grace`` seconds before it is
        killed. Thread-safe."""
        if self._closed:
            return
        self._closed = True
        if not self.lock.acquire(blocking=False):
            self.kill()  # a call is in flight: end it, then clean up behind it
            self.lock.acquire()
        try:
            connection = self._connection
            if connection is not None:
                with contextlib.suppress(OSError):
                    connection.send(("stop",))
            self.end(grace=grace)
            self.guardian.stopped()
        finally:
            self.lock.release()

    def kill(self) -> None:
        """Kills the child (SIGKILL), if one runs; a call waiting on it sees it die."""
        process = self._process
        try:
            if process is not None and process.is_alive():
                process.kill()
        except ValueError:
            pass  # closed by the thread that was waiting on it

    def end(self, *, grace: float) -> None:
        """Waits ``grace`` seconds for the child to exit, kills it if it has not, and lets go
        of it and its pipe."""
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if process is not None:
            process.join(grace)
            if process.is_alive():
                process.kill()
                process.join(5.0)
            process.close()
        if connection is not None:
            connection.close()

    def _check_memory(self, process: BaseProcess) -> None:
        if process.pid is None or self.guardian.memory_limit is None:
            return
        rss = resident_memory(process.pid)
        problem = None if rss is None else self.guardian.memory_problem(rss)
        if problem is not None:
            raise ChildGone(FailureKind.MEMORY, problem)


def _death(process: BaseProcess) -> str:
    """How ``process`` died, for people."""
    process.join(1.0)
    code = process.exitcode
    if code is None:
        return "closed its pipe"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
