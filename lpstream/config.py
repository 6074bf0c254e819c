"""Parsing of addresses and other flag values shared by every role."""

from __future__ import annotations

import ipaddress

import attrs

from lpstream.errors import ConfigError

__all__ = ["HostPort", "parse_bitrate", "parse_byte_size", "parse_host_port", "parse_pixels"]


@attrs.frozen
class HostPort:
    """A host and port, as given on the command line."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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
