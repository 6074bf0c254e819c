"""Exception groups from trio nurseries, turned back into the one error that matters.

trio wraps whatever escapes a nursery in an ``ExceptionGroup``. Where a nursery runs a job's
upload beside its download, the caller wants the job's error (``JobError``, ``TransportError``)
itself, not a group. ``one_error`` re-raises the first ordinary exception of a group. A group
that holds a ``KeyboardInterrupt`` or ``SystemExit`` goes up untouched. One that holds a
``trio.Cancelled`` means a scope outside is cancelling this code (a nursery strips the
``Cancelled`` it caused itself): that ``Cancelled`` goes up alone, so the cancelling scope
absorbs it, and the errors raised meanwhile (a reader finding its stream reset by the same
peer that made the scope cancel) are logged — at debug level for the expected kinds, with
their traceback for anything else — instead of escaping that scope as an exception group
nobody expects.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import trio

from lpstream.errors import LpstreamError

__all__ = ["one_error"]

log = logging.getLogger("lpstream")


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
        if any(isinstance(e, KeyboardInterrupt | SystemExit) for e in leaves):
            raise
        cancelled = next((e for e in leaves if isinstance(e, trio.Cancelled)), None)
        if cancelled is not None:
            for other in leaves:
                if isinstance(other, trio.Cancelled):
                    continue
                if isinstance(other, LpstreamError | OSError | trio.BrokenResourceError):
                    log.debug("while cancelled: %s: %s", type(other).__name__, other)
                else:  # a bug, cancelled or not: it stays in sight
                    log.warning("an error while cancelled", exc_info=other)
            raise cancelled from None
        if not leaves or not isinstance(leaves[0], Exception):
            raise
        raise leaves[0] from None
