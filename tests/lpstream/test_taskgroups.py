"""``one_error``: a nursery's group becomes the one error that matters; under a cancelling
scope the cancellation goes up alone and what was raised meanwhile is logged, so it cannot
escape that scope as an exception group (a peer that resets its upload cancels the job while
the decoder finds the upload failed)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from lpstream.errors import MediaError, TransportError
from lpstream.taskgroups import one_error


async def test_the_first_error_of_a_group_comes_out_alone() -> None:
    async def fail(exc: Exception) -> None:
        raise exc

    with pytest.raises(TransportError, match="reset"), one_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail, TransportError("reset"))
            await trio.sleep_forever()


async def raise_when_cancelled(exc: Exception) -> None:
    try:
        await trio.sleep_forever()
    finally:
        raise exc  # as a reader does that finds its stream reset when the job is cancelled


async def job(exc: Exception) -> None:
    with one_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(raise_when_cancelled, exc)
            await trio.sleep_forever()


async def test_under_a_cancelling_scope_only_the_cancellation_goes_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="lpstream")
    with trio.move_on_after(0.05) as scope:
        await job(MediaError("segment upload failed: reset by peer"))
    assert scope.cancelled_caught  # the scope absorbed it: no group escaped
    [record] = [r for r in caplog.records if "while cancelled" in r.getMessage()]
    assert record.levelno == logging.DEBUG and "upload failed" in record.getMessage()


async def test_a_bug_raised_while_cancelled_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.move_on_after(0.05) as scope:
        await job(KeyError("no such rendition"))
    assert scope.cancelled_caught
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)
