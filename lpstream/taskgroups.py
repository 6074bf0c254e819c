"""Exception groups from trio nurseries, turned back into the one error that matters.

trio wraps whatever escapes a nursery in an ``ExceptionGroup``. Where a nursery runs a job's
upload beside its download, the caller wants the job's error (``JobError``, ``TransportError``)
itself, not a group. ``one_error`` re-raises the first ordinary exception of a group; a group
that holds a ``trio.Cancelled`` or a ``KeyboardInterrupt`` goes up untouched, so cancellation
is never swallowed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trio

__all__ = ["one_error"]


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@contextlib.contextmanager
def one_error() -> Iterator[None]:
    """Re-raises the first plain exception from a nursery's exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if any(isinstance(e, trio.Cancelled | KeyboardInterrupt | SystemExit) for e in leaves):
            raise
        if not leaves or not isinstance(leaves[0], Exception):
            raise
        raise leaves[0] from None
