"""Addresses, sizes, rates and prices as flags and configuration files write them: parsed into
values, and written back."""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Callable
from typing import Any

import attrs

from lpstream.errors import ConfigError, ProtocolError

__all__ = [
    "HostPort",
    "Parse",
    "address",
    "bitrate_text",
    "is_loopback",
    "memory_budget_text",
    "parse_bitrate",
    "parse_byte_size",
    "parse_host_port",
    "parse_memory_budget",
    "parse_pipeline_params",
    "parse_pipeline_price",
    "parse_pixels",
    "pixels_text",
    "sized",
]

Parse = Callable[[str, str], Any]
"""Text (a flag, a variable, a string in a file) to a value; the second argument is the flag,
named in the ``ConfigError`` it raises."""


@attrs.frozen
class HostPort:
    """A host and port, as given on the command line."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine only: ``localhost``, 127.0.0.0/8, ``::1`` or an
    IPv4-mapped loopback; brackets and an IPv6 scope (``%eth0``) are ignored."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def parse_host_port(
    text: str, *, default_port: int | None = None, flag: str = "address"
) -> HostPort:
    """Parses ``host:port``, ``[v6]:port``, ``:port`` (loopback) or a bare host.

    Raises:
        ConfigError: naming the flag and what is wrong.
    """
    value = text.strip()
    for scheme in ("rtmp://", "https://", "http://", "quic://"):
        if value.startswith(scheme):
            value = value[len(scheme) :].split("/", 1)[0]
    host, port_text = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ConfigError(f"{flag}: unclosed '[' in {text!r}")
        host, rest = value[1:end], value[end + 1 :]
        if rest.startswith(":"):
            port_text = rest[1:]
        elif rest:
            raise ConfigError(f"{flag}: unexpected {rest!r} in {text!r}")
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    elif value.count(":") > 1:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise ConfigError(f"{flag}: cannot read {text!r} as host:port") from None
    host = host or "127.0.0.1"
    if not port_text:
        if default_port is None:
            raise ConfigError(f"{flag}: {text!r} needs a port")
        return HostPort(host, default_port)
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{flag}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{flag}: port {port} out of range")
    return HostPort(host, port)


_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_BINARY = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def _scaled(text: str, scale: dict[str, int], flag: str, unit: str) -> int:
    value = text.strip().lower().removesuffix(unit)
    suffix = value[-1:] if value[-1:] in scale and value[-1:].isalpha() else ""
    number = value[: len(value) - len(suffix)]
    try:
        amount = float(number)
    except ValueError:
        raise ConfigError(f"{flag}: cannot read {text!r} as a number") from None
    if amount < 0:
        raise ConfigError(f"{flag}: {text!r} is negative")
    return int(amount * scale[suffix])


def parse_pixels(text: str, *, flag: str = "pixels") -> int:
    """Parses a picture area: ``WxH`` (``4096x2304``) or a pixel count; 0 means no limit."""
    width, sep, height = text.strip().lower().partition("x")
    if sep:
        if not (width.isdigit() and height.isdigit()):
            raise ConfigError(f"{flag}: cannot read {text!r} as WIDTHxHEIGHT")
        return int(width) * int(height)
    return _scaled(text, _SCALE, flag, "")


def parse_bitrate(text: str, *, flag: str = "bitrate") -> int:
    """Parses bits per second: ``60M``, ``8000k``, ``60000000``; 0 means no limit."""
    return _scaled(text, _SCALE, flag, "bps")


def parse_byte_size(text: str, *, flag: str = "size") -> int:
    """Parses a byte count with binary suffixes: ``2G``, ``512M``, ``1024``."""
    return _scaled(text, _BINARY, flag, "b")


def address(default_port: int) -> Parse:
    """Parses ``host:port`` (see :func:`parse_host_port`), a bare host taking ``default_port``."""

    def parse(text: str, flag: str) -> HostPort:
        return parse_host_port(text, default_port=default_port, flag=flag)

    return parse


def parse_pipeline_price(text: str, flag: str) -> tuple[tuple[str, int], ...]:
    """``NAME=WEI``: one pipeline's price per second (a one-item tuple, as a repeated flag's
    values are joined)."""
    name, _, wei = text.partition("=")
    if not name or not wei.isdigit():
        raise ConfigError(f"{flag}: {text!r}: expected NAME=WEI")
    return ((name, int(wei)),)


def parse_pipeline_params(text: str, flag: str) -> dict[str, str | int | float | bool]:
    """A live AI pipeline's parameters as a JSON object."""
    if not text.strip() or text.strip() == "{}":
        return {}
    from lpstream.http.ai import parse_params

    try:
        return parse_params(json.loads(text))
    except (ValueError, ProtocolError) as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def parse_memory_budget(text: str, flag: str) -> int | None:
    """A byte count, or ``auto`` (None: a share of the machine's memory, found at start)."""
    return None if text.strip() == "auto" else parse_byte_size(text, flag=flag)


def sized(parse: Callable[..., int]) -> Parse:
    """``parse_bitrate``, ``parse_pixels`` or ``parse_byte_size`` as a :data:`Parse`."""
    return lambda text, flag: parse(text, flag=flag)


def _scaled_text(value: int, base: int, suffixes: str) -> str | int:
    """``60M`` for 60_000_000 (``base`` 1000), ``4G`` for 2**32 (1024): what the parsers read;
    the number itself where no suffix divides it."""
    for power in range(len(suffixes), 0, -1):
        if value and value % base**power == 0:
            return f"{value // base**power}{suffixes[power - 1]}"
    return value


def bitrate_text(value: int) -> str | int:
    """``60M`` for 60_000_000."""
    return _scaled_text(value, 1000, "kMG")


def memory_budget_text(value: int | None) -> str | int:
    """``auto`` for None, ``4G`` for 2**32."""
    return "auto" if value is None else _scaled_text(value, 1024, "KMGT")


def pixels_text(value: int) -> str | int:
    """``4096x2304`` for a 16:9 picture's pixel count, else the count."""
    width = math.isqrt(value * 16 // 9)
    height = width * 9 // 16
    return f"{width}x{height}" if value and width * height == value else value
