"""Click options that also read ``LPSTREAM_*`` environment variables (shared by all commands),
the flags made from the configuration's settings, and ``--config FILE``.

Precedence is click's: a flag on the command line, else its ``LPSTREAM_*`` variable, else the
configuration file (put into the context's ``default_map``), else the setting's default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click

from lpstream.config import (
    ROLE_DEFAULTS,
    SECTIONS,
    read_config_file,
    setting_of,
)
from lpstream.errors import ConfigError, LpstreamError

__all__ = ["F", "config_option", "flag", "option", "run_until_stopped"]

log = logging.getLogger("lpstream")

F = TypeVar("F", bound=Callable[..., Any])

_FIELDS = {field.name: field for section in SECTIONS.values() for field in attrs.fields(section)}


def option(*names: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that also reads ``LPSTREAM_<NAME>`` from the environment."""
    long_name = next(n for n in names if n.startswith("--")).split("/")[0]
    kwargs.setdefault("envvar", "LPSTREAM_" + long_name[2:].upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    return click.option(*names, **kwargs)


def _converter(
    name: str, parse: Callable[[str, str], Any], multiple: bool
) -> Callable[[click.Context, click.Parameter, Any], Any]:
    flag_name = "--" + name.replace("_", "-")

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            if multiple:
                return tuple(item for text in value for item in parse(str(text), flag_name))
            return parse(str(value), flag_name)
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from None

    return convert


def flag(name: str, *, role: str | None = None, **overrides: Any) -> Callable[[F], F]:
    """The flag of the setting ``name`` (a section field), with ``role``'s default where it
    has its own (``ROLE_DEFAULTS``); ``parse`` and ``multiple`` replace the setting's, the
    other ``overrides`` go to ``click.option``."""
    field = _FIELDS[name]
    spec = setting_of(field)
    default = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()
    default = ROLE_DEFAULTS.get(role or "", {}).get(name, default)
    multiple = overrides.pop("multiple", spec.multiple)
    parse = overrides.pop("parse", spec.parse)
    kwargs: dict[str, Any] = {"help": spec.help, "multiple": multiple}
    if parse is not None:
        kwargs["callback"] = _converter(name, parse, multiple)
        kwargs["type"] = click.STRING
        if spec.show is not None:
            default = spec.show(default)
    elif spec.choices:
        kwargs["type"] = click.Choice(spec.choices)
    elif spec.kind is bool:
        kwargs["is_flag"] = True
    elif spec.kind is int:
        bounded = spec.low is not None or spec.high is not None
        kwargs["type"] = click.IntRange(spec.low, spec.high) if bounded else int  # type: ignore[arg-type]
    elif spec.kind is float:
        kwargs["type"] = click.FloatRange(spec.low, spec.high)
    kwargs["default"] = default
    if default in ("", "{}"):
        kwargs["show_default"] = False
    kwargs.update(overrides)
    names = "--" + name.replace("_", "-")
    if spec.kind is bool and default is True:  # on unless turned off
        names += "/--no-" + name.replace("_", "-")
    return option(names, **kwargs)


def _load_config_file(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None:
        return None
    try:
        values = read_config_file(Path(value))
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    # A repeatable flag may be given one value as a string.
    for name, given in values.items():
        if name in _FIELDS and setting_of(_FIELDS[name]).multiple and isinstance(given, str):
            values[name] = [given]
    # Check this command's values now, so that an error names the file and the key.
    for param in ctx.command.params:
        if param.name is not None and param.name in values:
            key, given = param.name.replace("_", "-"), values[param.name]
            if getattr(param, "is_flag", False) and not isinstance(given, bool):
                raise click.BadParameter(f"{value}: {key}: {given!r} is not true or false")
            try:
                converted = param.type_cast_value(ctx, given)
                if param.callback is not None:
                    param.callback(ctx, param, converted)
            except click.BadParameter as exc:
                raise click.BadParameter(f"{value}: {key}: {exc.message}") from None
            except (TypeError, ValueError, AttributeError):
                raise click.BadParameter(f"{value}: {key}: cannot read {given!r}") from None
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


config_option = option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    is_eager=True,
    expose_value=False,
    callback=_load_config_file,
    help="TOML file of settings, keyed by flag name (see `lpstream config show`); flags and "
    "LPSTREAM_* variables win over it.",
)


async def _until_signalled(async_fn: Callable[[], Any]) -> None:
    """Runs ``async_fn`` until it returns or SIGINT/SIGTERM arrives, then stops it cleanly.

    The handlers are installed explicitly: a process started in the background inherits
    SIGINT as ignored (and Python then installs no KeyboardInterrupt), and service managers
    stop with SIGTERM.
    """
    import signal

    import trio

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
    import trio

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
