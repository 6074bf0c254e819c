"""Click options that also read ``LPSTREAM_*`` environment variables (shared by all commands)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["F", "option"]

F = TypeVar("F", bound=Callable[..., Any])


def option(*names: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that also reads ``LPSTREAM_<NAME>`` from the environment."""
    long_name = next(n for n in names if n.startswith("--"))
    kwargs.setdefault("envvar", "LPSTREAM_" + long_name[2:].upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    return click.option(*names, **kwargs)
