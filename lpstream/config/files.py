"""Configuration files (TOML): read into flag values, and the effective configuration written
back with its secrets masked.

A file uses the flags' names as keys, at the top level or in the table of their section; both
of these set ``--max-ingest-bitrate``::

    max-ingest-bitrate = "60M"

    [limits]
    max-ingest-bitrate = "60M"

A value is what the flag would take: a string, a number, a boolean for a flag without a value,
a list for a flag that may be repeated. A key that is no flag, or a key in another section's
table, is an error that names it.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import Any

import attrs

from lpstream.config.sections import SECTIONS, Config
from lpstream.config.setting import key_of, setting_of
from lpstream.errors import ConfigError

__all__ = ["MASK", "dump_toml", "read_config_file"]

MASK = "********"
"""What ``config show`` writes for a secret that is set."""


def _section_of_key() -> dict[str, str]:
    return {
        key_of(field.name): name
        for name, section in SECTIONS.items()
        for field in attrs.fields(section)
    }


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    near = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def read_config_file(path: Path) -> dict[str, Any]:
    """The values a TOML file sets, by field name (``max_ingest_bitrate``), unparsed.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or has a key that is not a
            setting (naming it and the nearest key).
    """
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from None
    sections = _section_of_key()
    values: dict[str, Any] = {}

    def add(key: str, value: Any, where: str) -> None:
        name = key.replace("-", "_")
        if key_of(name) != key or key not in sections:
            raise _unknown(key, list(sections), where)
        if name in values:
            raise ConfigError(f"{where}: {key!r} is set twice")
        values[name] = value

    for key, value in document.items():
        if key in SECTIONS and isinstance(value, dict):
            own = [k for k, s in sections.items() if s == key]
            for inner, inner_value in value.items():
                if inner in sections and sections[inner] != key:
                    raise ConfigError(f"{path} [{key}]: {inner!r} belongs in [{sections[inner]}]")
                if inner not in sections:
                    raise _unknown(inner, own, f"{path} [{key}]")
                add(inner, inner_value, f"{path} [{key}]")
        else:
            add(key, value, str(path))
    return values


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def dump_toml(config: Config, *, header: str = "") -> str:
    """``config`` as a configuration file: one table per section, every key; a secret that is
    set is written as ``MASK``, a setting without a value as a comment."""
    lines = [f"# {line}" for line in header.splitlines()]
    current = ""
    for section, field, value in config.items():
        if section != current:
            current = section
            lines += ["", f"[{section}]"]
        spec = setting_of(field)
        key = key_of(field.name)
        if spec.secret and value not in (None, ()):
            lines.append(f"{key} = {_toml(MASK)}  # secret, masked")
            continue
        shown = spec.show(value) if spec.show is not None else value
        if shown is None:
            lines.append(f"# {key} =  (not set)")
        else:
            lines.append(f"{key} = {_toml(shown)}")
    return "\n".join(lines).lstrip("\n") + "\n"
