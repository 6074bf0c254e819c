"""Click options that also read ``LPSTREAM_*`` environment variables (shared by all commands)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Any, TypeVar

import click
import trio

from lpstream.errors import LpstreamError

__all__ = ["F", "option", "run_until_stopped"]

log = logging.getLogger("lpstream")

F = TypeVar("F", bound=Callable[..., Any])


def option(*names: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that also reads ``LPSTREAM_<NAME>`` from the environment."""
    long_name = next(n for n in names if n.startswith("--"))
    kwargs.setdefault("envvar", "LPSTREAM_" + long_name[2:].upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    return click.option(*names, **kwargs)


async def _until_signalled(async_fn: Callable[[], Any]) -> None:
    """Runs ``async_fn`` until it returns or SIGINT/SIGTERM arrives, then stops it cleanly.

    The handlers are installed explicitly: a process started in the background inherits
    SIGINT as ignored (and Python then installs no KeyboardInterrupt), and service managers
    stop with SIGTERM.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for number in signals:
                    log.info("%s: stopping", signal.Signals(number).name)
                    raise KeyboardInterrupt

            nursery.start_soon(stop_on_signal)
            await async_fn()
            nursery.cancel_scope.cancel()


def run_until_stopped(async_fn: Callable[[], Any]) -> None:
    """Runs a node's ``async_fn`` under trio; a signal stops it with "stopped", and its
    errors become one-line CLI errors."""
    try:
        trio.run(_until_signalled, async_fn)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except (LpstreamError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        if isinstance(first, KeyboardInterrupt):
            click.echo("stopped", err=True)
            return
        if isinstance(first, LpstreamError | OSError):
            raise click.ClickException(str(first)) from None
        raise
