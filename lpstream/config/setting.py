"""How a configuration setting is declared: a section field with its one default.

How this works: every setting is a field of a frozen section, declared with :func:`setting` —
its default, its help (which the flag shows), how text becomes its value, whether it is a
secret. Its name is its key everywhere: the field ``max_ingest_bitrate`` is the flag
``--max-ingest-bitrate``, the variable ``LPSTREAM_MAX_INGEST_BITRATE`` and the key
``max-ingest-bitrate`` of a configuration file (:func:`key_of`). The command line
(``lpstream.cli``) makes its flags from these fields and ``Config.from_values``
(:mod:`lpstream.config.sections`) builds the sections from what the flags, the environment and
the file gave, so a default is written in its section's module and nowhere else.

The section modules import nothing heavy: ``lpstream --help`` reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from lpstream.config.values import HostPort, Parse, address

__all__ = ["Setting", "address_setting", "key_of", "setting", "setting_of"]

_SETTING = "lpstream.setting"


@attrs.frozen(kw_only=True)
class Setting:
    """How one field is set from text and shown."""

    help: str
    """What it does, as ``--help`` says it."""
    kind: type = str
    """``str``, ``int``, ``float`` or ``bool`` (a flag without a value); what ``parse`` gives
    otherwise."""
    low: float | None = None
    """Smallest number allowed (``int`` and ``float``)."""
    high: float | None = None
    """Largest number allowed."""
    choices: tuple[str, ...] = ()
    """The values allowed, if only some are."""
    parse: Parse | None = None
    """Text to value, where it is more than a number or a string."""
    show: Callable[[Any], Any] | None = None
    """Value to what a configuration file writes (a string, number, boolean or list)."""
    multiple: bool = False
    """The flag may be repeated; the value is a tuple (a list in a file)."""
    secret: bool = False
    """Masked by ``lpstream config show``."""


def setting(default: Any, help: str, **spec: Any) -> Any:
    """A section field: its default and how it is set (see :class:`Setting`)."""
    return attrs.field(default=default, metadata={_SETTING: Setting(help=help, **spec)})


def address_setting(default: HostPort, help: str) -> Any:
    """A section field holding a ``host:port``; a bare host given for it takes the port of
    ``default``."""
    return setting(default, help, kind=HostPort, parse=address(default.port))


def setting_of(field: attrs.Attribute[Any]) -> Setting:
    """The :class:`Setting` of a section field."""
    return field.metadata[_SETTING]  # type: ignore[no-any-return]


def key_of(name: str) -> str:
    """The key of a field: ``max_ingest_bitrate`` -> ``max-ingest-bitrate``."""
    return name.replace("_", "-")
