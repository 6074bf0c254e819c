"""Where an orchestrator's QUIC service is, and which certificate it must present.

An orchestrator address is ``[quic://]host:port``, optionally pinned:
``quic://host:port#sha256=<64 hex digits>`` names the certificate by its SHA-256 fingerprint
(``lpstream.quic.pinning``), and whoever dials it refuses any other certificate before sending
anything. The orchestrator prints its pinned address at start and shows it in its status. The
same form is read from ``--orch-addr`` (gateways and workers), from a discovery webhook's
answer and from the ServiceRegistry's service URI.

A plain ``host:port`` is still accepted: on loopback the log says the link is unpinned, since
only this machine can answer there; anywhere else it is accepted with a warning, since
whoever answers at that address gets the worker's secret or the gateway's tickets.

:func:`parse_service_address` gives a plain :class:`~lpstream.config.HostPort` for an unpinned
address, so nodes configured as before see the same values as before, and a
:class:`PinnedAddress` (a ``HostPort`` too) for a pinned one; :func:`certificate_pin` reads the
pin of either.
"""

from __future__ import annotations

import logging

import attrs

from lpstream.config import is_loopback
from lpstream.config.values import HostPort, parse_host_port
from lpstream.errors import ConfigError
from lpstream.quic.pinning import Fingerprint

__all__ = [
    "DEFAULT_SERVICE_PORT",
    "PinnedAddress",
    "certificate_pin",
    "note_unpinned",
    "parse_service_address",
    "parse_service_addresses",
    "service_url",
]

DEFAULT_SERVICE_PORT = 8936
"""The orchestrator's QUIC port where an address names none."""


@attrs.frozen
class PinnedAddress(HostPort):
    """An orchestrator's QUIC address and the fingerprint its certificate must have.

    ``str()`` gives ``host:port#sha256=…``, which :func:`parse_service_address` reads back.
    """

    pin: Fingerprint
    """The fingerprint of the certificate the orchestrator must present."""

    def __str__(self) -> str:
        return f"{super().__str__()}#{self.pin}"


def certificate_pin(address: HostPort) -> Fingerprint | None:
    """The fingerprint ``address`` pins; None for a plain ``host:port``."""
    return address.pin if isinstance(address, PinnedAddress) else None


def service_url(address: HostPort) -> str:
    """``quic://host:port``, with ``#sha256=…`` when ``address`` is pinned."""
    return f"quic://{address}"


def parse_service_address(
    text: str, *, default_port: int | None = None, flag: str = "orchestrator address"
) -> HostPort:
    """Reads ``[quic://]host:port[#sha256=<hex>]`` (``https://`` and ``http://`` and a path
    are accepted, and ignored, as :func:`~lpstream.config.parse_host_port` does).

    Returns:
        A :class:`PinnedAddress` when the text carries a pin, else a plain ``HostPort``.

    Raises:
        ConfigError: naming ``flag``: not an address, no port (and no ``default_port``), port
            0, or a fragment that is not a pin.
    """
    value = text.strip()
    if not value:
        raise ConfigError(f"{flag}: empty")
    location, has_pin, pin_text = value.partition("#")
    address = parse_host_port(location, default_port=default_port, flag=flag)
    if address.port == 0:
        raise ConfigError(f"{flag}: {text!r} has port 0")
    if not has_pin:
        return address
    return PinnedAddress(address.host, address.port, Fingerprint.from_text(pin_text, flag=flag))


def parse_service_addresses(text: str, flag: str) -> tuple[HostPort, ...]:
    """Orchestrator addresses separated by commas (port 8936 where none is given); the parse
    of ``--orch-addr``."""
    return tuple(
        parse_service_address(part, default_port=DEFAULT_SERVICE_PORT, flag=flag)
        for part in text.split(",")
        if part.strip()
    )


def note_unpinned(address: HostPort, log: logging.Logger, *, sends: str) -> None:
    """Logs that ``address`` is unpinned, if it is: at info on loopback, else a warning.

    Args:
        address: the orchestrator about to be dialled.
        log: the logger of the node that dials it.
        sends: what an impostor at that address would receive ("the worker secret").
    """
    if certificate_pin(address) is not None:
        return
    if is_loopback(address.host):
        log.info("orchestrator %s is unpinned (allowed on loopback)", address)
        return
    log.warning(
        "orchestrator %s is unpinned: whoever answers at that address gets %s; pin it as "
        "quic://%s#sha256=... (the orchestrator prints its pinned address at start)",
        address,
        sends,
        address,
    )
