"""An asyncio event loop on its own thread, driven from trio.

How this works:

* :func:`open_asyncio_loop` starts a thread that runs a fresh asyncio loop forever and yields an
  :class:`AsyncioLoop`. On exit it cancels whatever still runs on that loop, stops it, joins
  the thread (in a trio worker thread, so trio never blocks) and closes the loop.
* trio to asyncio: :meth:`AsyncioLoop.run` schedules a coroutine on the loop with
  ``run_coroutine_threadsafe`` and waits for it on a ``trio.Event`` that the future's done
  callback sets through the trio token; no trio worker thread is held while it waits.
  Cancelling the trio caller cancels the asyncio task.
* asyncio to trio: :meth:`AsyncioLoop.to_trio` wraps a synchronous trio-side function so the
  asyncio thread can call it: the call is queued with ``TrioToken.run_sync_soon`` and never
  blocks the asyncio loop. After trio has finished such calls are dropped.
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - aiortc is asyncio-only; it is confined to ingest/whip
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar, TypeVarTuple, Unpack

import trio

__all__ = ["AsyncioLoop", "open_asyncio_loop"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class AsyncioLoop:
    """A handle on the asyncio loop thread; made by :func:`open_asyncio_loop`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken) -> None:
        self._loop = loop
        self._token = token

    async def run(self, fn: Callable[[Unpack[Ts]], Coroutine[Any, Any, T]], *args: *Ts) -> T:
        """Runs ``await fn(*args)`` on the asyncio loop and returns its result to trio."""
        done = trio.Event()
        future = asyncio.run_coroutine_threadsafe(fn(*args), self._loop)

        def wake(_: concurrent.futures.Future[T]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()
            raise
        return future.result()

    def call_soon(self, fn: Callable[[Unpack[Ts]], object], *args: *Ts) -> None:
        """Calls ``fn(*args)`` on the asyncio loop, soon; does not wait."""
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(fn, *args)

    def to_trio(self, fn: Callable[[T], object]) -> Callable[[T], None]:
        """Wraps a trio-side ``fn(item)`` so that the asyncio thread can call it."""
        token = self._token

        def call(item: T) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(fn, item)

        return call


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def open_asyncio_loop(name: str = "asyncio") -> AsyncIterator[AsyncioLoop]:
    """Runs an asyncio loop on a new thread for the duration of the block."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_run_loop, args=(loop,), name=name, daemon=True)
    thread.start()
    handle = AsyncioLoop(loop, trio.lowlevel.current_trio_token())
    try:
        yield handle
    finally:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(5):
                await handle.run(_cancel_all)
            loop.call_soon_threadsafe(loop.stop)
            # Bounded: a wedged asyncio thread must not keep the node from stopping (it is a
            # daemon thread and ends with the process).
            with trio.move_on_after(5):
                await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
