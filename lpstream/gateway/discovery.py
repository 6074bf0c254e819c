"""Where the gateway's orchestrators come from, and which of them can take a job now.

A source answers ``discover()`` with a list of orchestrators: a fixed list from the command
line (``StaticSource``), a webhook that returns JSON (``WebhookSource``, the format of
go-livepeer's ``-orchWebhookUrl``), or the chain's current active set (``ChainSource``).
A source that cannot answer raises ``DiscoveryError``; the pool keeps its last list.

Then ``refresh_infos`` asks every discovered orchestrator for its ORCH_INFO at once and keeps
the answers that come within a deadline, and ``filter_candidates`` drops the ones that cannot
take the job (suspended, lacking the capability, too expensive, bad ticket parameters).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from fractions import Fraction
from typing import Any, Protocol

import attrs
import trio

from lpstream.chainwatch import ChainWatch
from lpstream.config import HostPort
from lpstream.errors import ConfigError, LpstreamError
from lpstream.orchestrator.address import parse_service_address
from lpstream.orchestrator.certificate_claim import certificate_belongs_to
from lpstream.quic import Fingerprint
from lpstream.webhook import DEFAULT_MAX_BYTES, WebhookClient, WebhookError
from lpstream.wire.messages import OrchInfo
from payments.chain.client import ChainError

__all__ = [
    "ChainSource",
    "DiscoveredOrchestrator",
    "DiscoveryError",
    "OrchestratorSource",
    "StaticSource",
    "WebhookSource",
    "certificate_refusal",
    "filter_candidates",
    "parse_orchestrator_address",
    "refresh_infos",
    "refusal",
]

log = logging.getLogger("lpstream.gateway.discovery")

MAX_WEBHOOK_BYTES = DEFAULT_MAX_BYTES
"""The largest webhook answer read by default (1 MiB)."""

MAX_WEBHOOK_ORCHESTRATORS = 1000
"""Entries of a webhook answer past this many are ignored (with a warning)."""

MAX_JSON_NESTING = 32
"""Deepest nesting of lists and objects read from a webhook (it needs 2)."""


def _json_kind(document: object) -> str:
    return "empty" if document is None else f"a JSON {type(document).__name__}"


class DiscoveryError(LpstreamError):
    """A source could not say which orchestrators there are (unreachable, or bad answer)."""


@attrs.frozen
class DiscoveredOrchestrator:
    """An orchestrator a source knows of."""

    address: HostPort
    """Where its QUIC service listens."""
    score: float | None = None
    """A webhook's score for it, if one gave one."""
    stake: int = 0
    """Its total stake in wei (from the chain; 0 otherwise)."""
    eth_address: str = ""
    """Its Ethereum address (from the chain; "" otherwise)."""


class OrchestratorSource(Protocol):
    """Anything that can list orchestrators."""

    async def discover(self) -> list[DiscoveredOrchestrator]:
        """The orchestrators as of now.

        Raises:
            DiscoveryError: the source could not be read.
        """
        ...


def parse_orchestrator_address(text: str) -> HostPort:
    """Reads ``host:port`` or ``scheme://host:port[/path]`` (quic, https, http) from a source,
    with a certificate pin if it carries one (``quic://host:port#sha256=…``: a
    ``PinnedAddress``, ``lpstream.orchestrator.address``).

    Raises:
        ConfigError: no host, no port, port 0, a bad pin, or not an address.
    """
    address = parse_service_address(text, flag="orchestrator address")
    if text.strip().split("://", 1)[-1].startswith(":"):
        raise ConfigError(f"orchestrator address: {text!r} has no host")
    return address


def _unique(orchestrators: Iterable[DiscoveredOrchestrator]) -> list[DiscoveredOrchestrator]:
    seen: set[HostPort] = set()
    result = []
    for orchestrator in orchestrators:
        if orchestrator.address not in seen:
            seen.add(orchestrator.address)
            result.append(orchestrator)
    return result


@attrs.define
class StaticSource:
    """The orchestrators named on the command line (``--orch-addr``), in order."""

    addresses: Sequence[HostPort]

    async def discover(self) -> list[DiscoveredOrchestrator]:
        return _unique(DiscoveredOrchestrator(address) for address in self.addresses)


@attrs.define
class WebhookSource:
    """GETs ``url``; the answer is JSON ``[{"address": "host:port", "score": 0.9}, ...]``.

    ``address`` may carry a scheme (``quic://``, ``https://``) as go-livepeer's webhooks do,
    and a certificate pin (``quic://host:port#sha256=…``); ``score`` is optional (a finite
    number). An entry that cannot be read is skipped with a warning as long as one other can;
    an answer whose entries are all unreadable, that is not a JSON list, or that the webhook
    client refuses (larger than ``max_bytes``, not 2xx, later than ``timeout`` seconds, nested
    deeper than ``MAX_JSON_NESTING``: ``lpstream.webhook``) raises ``DiscoveryError``. An empty
    list is a valid answer: no orchestrators.

    Raises:
        ConfigError: ``url`` is not an http:// or https:// URL with a host.
    """

    url: str
    timeout: float = attrs.field(default=2.0, kw_only=True)
    """Seconds for the whole exchange."""
    max_bytes: int = attrs.field(default=MAX_WEBHOOK_BYTES, kw_only=True)
    """The largest answer body read."""
    max_orchestrators: int = attrs.field(default=MAX_WEBHOOK_ORCHESTRATORS, kw_only=True)
    """Entries past this many are ignored."""
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, kw_only=True)
    """For https URLs; None: the system's trusted CAs (``ssl.create_default_context()``)."""

    _client: WebhookClient = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._client = WebhookClient(
            self.url,
            timeout=self.timeout,
            max_bytes=self.max_bytes,
            max_nesting=MAX_JSON_NESTING,
            ssl_context=self.ssl_context,
        )

    async def discover(self) -> list[DiscoveredOrchestrator]:
        try:
            document = await self._client.get_json()
        except WebhookError as exc:
            raise DiscoveryError(str(exc)) from exc
        return self._entries(document)

    def _entries(self, document: Any) -> list[DiscoveredOrchestrator]:
        if not isinstance(document, list):
            raise DiscoveryError(
                f"webhook {self.url}: answer is {_json_kind(document)}, not a list"
            )
        if len(document) > self.max_orchestrators:
            log.warning(
                "webhook %s: %d orchestrators, using the first %d",
                self.url,
                len(document),
                self.max_orchestrators,
            )
            document = document[: self.max_orchestrators]
        found: list[DiscoveredOrchestrator] = []
        problems: list[str] = []
        for index, entry in enumerate(document):
            try:
                found.append(_webhook_entry(entry))
            except ValueError as exc:
                problems.append(f"entry {index}: {exc}")
        if problems and not found:
            raise DiscoveryError(f"webhook {self.url}: no usable entry ({'; '.join(problems)})")
        for problem in problems:
            log.warning("webhook %s: skipping %s", self.url, problem)
        return _unique(found)


def _webhook_entry(entry: object) -> DiscoveredOrchestrator:
    if not isinstance(entry, dict):
        raise ValueError(f"a JSON {type(entry).__name__}, not an object")
    text = entry.get("address")
    if not isinstance(text, str):
        raise ValueError('"address" is missing or not a string')
    try:
        address = parse_orchestrator_address(text)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    score = entry.get("score")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ValueError(f'"score" {score!r} is not a number')
        score = float(score)  # finite: the decoder refuses NaN, Infinity and overflow
    return DiscoveredOrchestrator(address, score=score)


@attrs.define
class ChainSource:
    """The current round's active orchestrators, from the BondingManager, most stake first.

    Each one's URI comes from the ServiceRegistry; one with an empty or unreadable URI is
    skipped with a warning. Two with the same URI: the first (more stake) is kept. A failed
    chain read raises ``DiscoveryError``.
    """

    watch: ChainWatch

    async def discover(self) -> list[DiscoveredOrchestrator]:
        chain = self.watch.chain
        try:
            members: list[str] = await self.watch.call(chain.active_transcoders)
            found = []
            for member in members:
                uri: str = await self.watch.call(chain.service_uri, member)
                try:
                    address = parse_orchestrator_address(uri)
                except ConfigError as exc:
                    log.warning("orchestrator %s: skipped, service URI %r: %s", member, uri, exc)
                    continue
                stake: int = await self.watch.call(chain.transcoder_stake, member)
                found.append(DiscoveredOrchestrator(address, stake=stake, eth_address=member))
        except ChainError as exc:
            raise DiscoveryError(f"reading the active orchestrators: {exc}") from exc
        return _unique(found)


async def refresh_infos(
    orchestrators: Iterable[HostPort],
    ask: Callable[[HostPort], Awaitable[OrchInfo]],
    *,
    deadline: float = 0.5,
) -> dict[HostPort, OrchInfo]:
    """Asks every orchestrator for its ORCH_INFO at once; keeps the answers within ``deadline``.

    An ``ask`` that raises, or has not answered ``deadline`` seconds after the start, is
    cancelled and left out (logged at info). The result is in the order of ``orchestrators``.
    """
    addresses = list(dict.fromkeys(orchestrators))
    answers: dict[HostPort, OrchInfo] = {}

    async def ask_one(address: HostPort) -> None:
        try:
            answers[address] = await ask(address)
        except Exception as exc:  # any failure of one orchestrator only leaves it out
            log.info("orchestrator %s: no info: %s: %s", address, type(exc).__name__, exc)

    async with trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = trio.current_time() + deadline
        for address in addresses:
            nursery.start_soon(ask_one, address)
    late = [str(a) for a in addresses if a not in answers]
    if late:
        log.info("no info (error or later than %s s) from: %s", deadline, ", ".join(late))
    return {a: answers[a] for a in addresses if a in answers}


def refusal(
    address: HostPort,
    info: OrchInfo,
    *,
    capability: str,
    max_price: Fraction | None,
    validate_params: Callable[[HostPort, OrchInfo], None] | None,
    suspended: Callable[[str], bool],
) -> str:
    """Why the orchestrator that sent ``info`` cannot take a job now; "" when it can.

    In order: suspended (``suspended(str(address))``), without ``capability``, above
    ``max_price`` wei per pixel (``price_per_unit / pixels_per_unit``), ticket parameters that
    ``validate_params`` rejects (any exception from it).
    """
    if suspended(str(address)):
        return "suspended"
    if capability not in info.capabilities:
        return f"does not offer {capability}"
    if info.pixels_per_unit < 1:
        return f"pixels_per_unit {info.pixels_per_unit}"
    price = Fraction(info.price_per_unit, info.pixels_per_unit)
    if max_price is not None and price > max_price:
        return f"price {price} wei/pixel above the maximum {max_price}"
    if validate_params is not None:
        try:
            validate_params(address, info)
        except Exception as exc:  # the validator's verdict, whatever it raises
            return f"bad ticket parameters: {exc}"
    return ""


def certificate_refusal(info: OrchInfo, observed: Fingerprint | None, recipient: str) -> str:
    """Why a paying gateway refuses the orchestrator that sent ``info`` on a connection that
    presented the certificate ``observed``; "" when the certificate belongs to ``recipient``,
    the address the gateway pays (``lpstream.orchestrator.certificate_claim``)."""
    if certificate_belongs_to(info, observed, recipient):
        return ""
    paid = recipient or "(none)"
    if not info.certificate_signature:
        return (
            f"its info does not sign its QUIC certificate {observed} with the key of {paid}, "
            "the address it is paid at"
        )
    return f"its QUIC certificate {observed} is not signed by {paid}, the address it is paid at"


def filter_candidates(
    infos: dict[HostPort, OrchInfo],
    *,
    capability: str,
    max_price: Fraction | None,
    validate_params: Callable[[HostPort, OrchInfo], None] | None,
    suspended: Callable[[str], bool],
) -> list[tuple[HostPort, OrchInfo]]:
    """The orchestrators that can take a job, in the order of ``infos`` (see ``refusal``)."""
    kept: list[tuple[HostPort, OrchInfo]] = []
    for address, info in infos.items():
        why = refusal(
            address,
            info,
            capability=capability,
            max_price=max_price,
            validate_params=validate_params,
            suspended=suspended,
        )
        if why:
            log.info("orchestrator %s left out: %s", address, why)
        else:
            kept.append((address, info))
    return kept
