"""The gateway's orchestrators as it knows them: one QUIC connection each, what their last
info said, and the list itself, kept fresh.

How this works:

* Each orchestrator gets one QUIC connection, dialled on first use (those who need it
  meanwhile wait for that dial) and again after it fails, held open by a task in ``run``'s
  nursery. Keep-alive pings find a killed or frozen orchestrator; closing its connection
  fails the jobs on it at once.
* ``run`` checks every orchestrator's info before it reports ready, then refreshes every
  ``refresh_interval``: the ``RefreshListener`` hears of it (the selector counts suspensions
  in refreshes), the discovery sources are read again (new orchestrators join, those no
  longer listed are closed and dropped; sources that all fail keep the last list), and the
  info check runs again.
* The info check (``check_infos``) asks every orchestrator for its ORCH_INFO at once. One
  that does not answer within ``info_deadline`` is marked unanswered and keeps its last
  verdict; one lacking the capability, above the maximum price or with unusable ticket
  parameters is not offered work (``refused`` says why) until a later check says otherwise.
  The capacity and the live AI pipelines (with their prices) of each answer are kept for
  the placement of sessions.
* Whoever answers at an orchestrator's address must be that orchestrator before it gets a
  segment or a ticket. A pinned address (``quic://host:port#sha256=…``) is checked in the
  QUIC handshake: another certificate fails the dial (``CertificatePinError``, naming both
  fingerprints), and the orchestrator is not offered work (``refused`` says why) until a
  check finds the pinned one again. An unpinned address is noted in the log once. A paying
  gateway also asks each new connection for the orchestrator's info before anyone may use
  it: the info must sign the certificate the connection presented with the key of the
  address the gateway pays (the chain's, or the info's own), or the connection is closed
  and the orchestrator refused the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from lpstream.config import HostPort
from lpstream.errors import BusyError, LpstreamError, TransportError
from lpstream.gateway.discovery import (
    DiscoveredOrchestrator,
    OrchestratorSource,
    certificate_refusal,
    refresh_infos,
    refusal,
)
from lpstream.gateway.status import OrchestratorFacts
from lpstream.jobs import JobError
from lpstream.keepalive import keep_alive
from lpstream.orchestrator.address import certificate_pin, note_unpinned
from lpstream.quic import CertificatePinError, QuicConnectionHandle, open_quic_connection
from lpstream.taskgroups import one_error
from lpstream.wire import AiModelOffer, Error, GetInfo, MessageStream, OrchInfo
from payments.pm import PixelPrice, Wei

if TYPE_CHECKING:
    from lpstream.gateway.ticket_terms import TicketTerms

__all__ = [
    "CertificateClaimError",
    "KnownOrchestrator",
    "OrchestratorConnections",
    "RefreshListener",
    "get_info",
]

log = logging.getLogger("lpstream.gateway")

INFO_TIMEOUT = 5.0
"""Seconds an orchestrator has to answer a GET_INFO on an open connection."""

DIAL_INFO_REUSE = 2.0
"""Seconds the info a paying gateway read on a new connection answers the next info request
in its place (that request is often what dialled)."""


class CertificateClaimError(TransportError):
    """A paid orchestrator's info does not sign the certificate its connection presented with
    the key of the address the gateway pays: the connection was closed before any use."""


@attrs.define(eq=False)
class KnownOrchestrator:
    """One orchestrator of the pool: its connection, its last info's verdict, its record."""

    address: HostPort
    stake: int = 0
    """Its stake in wei, from discovery (0 off-chain)."""
    score: float | None = None
    """A webhook's score for it, if one gave one."""
    eth_address: str = ""
    """Its Ethereum address as the chain lists it ("" when it was not discovered on chain:
    then its info's ``address`` is the one paid)."""
    connection: QuicConnectionHandle | None = None
    connecting: trio.Event | None = None
    """Set while a dial is under way; those who need the connection wait for it."""
    refused: str = ""
    """Why the last info check or dial ruled it out (capability, price, ticket parameters,
    a certificate that is not its own); "" if not."""
    answered: bool = True
    """Whether it answered the last info check within the deadline."""
    full: bool = False
    """Whether its last info said every session was in use."""
    capacity: int = 0
    """Sessions' worth of work its last info said it takes (0: none, or no info yet)."""
    dial_info: tuple[float, OrchInfo] | None = None
    """When the last dial read the info on its new connection, and that info (paying
    gateways only); the next ``get_info`` takes it if fresh."""
    pipelines: dict[str, int] | None = None
    """Live AI pipelines its last info offered, with their price per second (None: no info
    yet)."""
    price_per_pixel: PixelPrice | None = None
    """The transcoding price its last info asked (None: no info yet)."""
    warm: frozenset[str] = frozenset()
    """Live AI pipelines its last info said its workers keep loaded (``--warm``)."""
    ai_models: tuple[AiModelOffer, ...] = ()
    """Batch AI models its last info offered, with their prices."""
    suspended_until: float = -math.inf
    """Until when it is passed over after a failure (trio time)."""
    failures: int = 0
    jobs: int = 0

    @property
    def key(self) -> str:
        """``host:port``: how payments, the selector and sessions name it."""
        return str(self.address)

    def note_info(self, info: OrchInfo) -> None:
        """Keeps what ``info`` says of its capacity and its live AI pipelines."""
        self.full = 0 < info.capacity <= info.in_use
        self.capacity = info.capacity
        self.pipelines = {p.name: p.price_per_second for p in info.pipelines}
        self.warm = frozenset(info.warm)
        self.ai_models = info.ai_models
        self.price_per_pixel = PixelPrice.from_fraction(
            Fraction(info.price_per_unit, max(info.pixels_per_unit, 1))
        )

    def facts(self, now: float) -> OrchestratorFacts:
        return OrchestratorFacts(
            address=self.key,
            connected=self.connection is not None,
            suspended=self.suspended_until > now,
            failures=self.failures,
            jobs=self.jobs,
            refused=self.refused,
            answered=self.answered,
            full=self.full,
            pipelines=None
            if self.pipelines is None
            else {name: Wei(price) for name, price in self.pipelines.items()},
            price_per_pixel=self.price_per_pixel,
        )


class RefreshListener(Protocol):
    """Told of each refresh (the ``Selector``)."""

    def refreshed(self) -> None:
        """A refresh began."""

    def retain(self, keys: Iterable[str]) -> None:
        """Discovery now lists these orchestrators (by key) and no others."""


@attrs.define
class OrchestratorConnections:
    """The orchestrators, their connections and their infos (see the module comment)."""

    addresses: Sequence[HostPort]
    """The orchestrators to start with."""
    listener: RefreshListener
    terms: TicketTerms | None = None
    """Ticket parameters and our funds, to check each info's parameters; None off-chain."""
    sources: Sequence[OrchestratorSource] = ()
    """Discovery sources read at each refresh; none keeps ``addresses``."""
    refresh_interval: float = 5.0
    capability: str = "transcode:h264"
    """What an orchestrator's info must list to be offered work."""
    info_deadline: float = 0.5
    """Seconds the parallel info check waits for answers (go-livepeer's discovery timeout)."""
    orchestrators: list[KnownOrchestrator] = attrs.field(init=False)
    _nursery: trio.Nursery | None = None

    def __attrs_post_init__(self) -> None:
        self.orchestrators = []
        for address in self.addresses:
            self._add(KnownOrchestrator(address=address))

    def _add(self, orch: KnownOrchestrator) -> None:
        note_unpinned(orch.address, log, sends="this gateway's tickets")
        self.orchestrators.append(orch)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Holds the connections and refreshes; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.terms is not None:
                # The chain's addresses before the first dial checks a certificate against them.
                await self.discover()
            await self.check_infos()
            task_status.started()
            while True:
                await trio.sleep(self.refresh_interval)
                self.listener.refreshed()
                await self.discover()
                await self.check_infos()

    def status(self) -> list[OrchestratorFacts]:
        now = trio.current_time()
        return [o.facts(now) for o in self.orchestrators]

    def find(self, key: str) -> KnownOrchestrator:
        """The orchestrator named ``key``.

        Raises:
            BusyError: it is no longer in the pool.
        """
        orch = next((o for o in self.orchestrators if o.key == key), None)
        if orch is None:
            raise BusyError(f"orchestrator {key} is gone")
        return orch

    async def connect(self, orch: KnownOrchestrator) -> QuicConnectionHandle:
        """``orch``'s connection, dialled if there is none."""
        with one_error():
            while orch.connection is None:
                if orch.connecting is not None:
                    await orch.connecting.wait()
                    if orch.connection is None:
                        raise TransportError(f"cannot connect to orchestrator {orch.address}")
                    break
                orch.connecting = trio.Event()
                try:
                    assert self._nursery is not None, "OrchestratorConnections.run has not started"
                    orch.connection = await self._nursery.start(self._hold, orch)
                finally:
                    orch.connecting.set()
                    orch.connecting = None
            return orch.connection

    def drop(self, orch: KnownOrchestrator) -> None:
        """Closes ``orch``'s connection (its jobs fail; the next use dials again)."""
        if orch.connection is not None:
            orch.connection.close()

    async def get_info(self, orch: KnownOrchestrator) -> OrchInfo:
        """``orch``'s ORCH_INFO, with ticket parameters made out to this gateway."""
        connection = await self.connect(orch)
        dialled, orch.dial_info = orch.dial_info, None
        if dialled is not None and trio.current_time() - dialled[0] < DIAL_INFO_REUSE:
            return dialled[1]
        return await get_info(connection, self.terms.sender.address if self.terms else "")

    async def refresh_info(self, orch: KnownOrchestrator) -> OrchInfo:
        """Asks ``orch`` for its info now and keeps what it says (pipelines, capacity)."""
        info = await self.get_info(orch)
        orch.note_info(info)
        return info

    async def check_infos(self) -> None:
        """Asks every orchestrator for its info at once; rules out those that cannot work.

        Accepted ticket parameters are kept for the next payments.
        """
        if not self.orchestrators:
            return
        by_address = {o.address: o for o in self.orchestrators}
        infos = await refresh_infos(
            by_address,
            lambda address: self.get_info(by_address[address]),
            deadline=self.info_deadline,
        )
        validate = await self.terms.validator() if self.terms is not None else None
        max_price = self.terms.sender.max_price if self.terms is not None else None
        for address, orch in by_address.items():
            info = infos.get(address)
            orch.answered = info is not None
            refused = orch.refused  # no answer in time: the last verdict stands
            if info is not None:
                refused = refusal(
                    address,
                    info,
                    capability=self.capability,
                    max_price=max_price,
                    validate_params=validate,
                    suspended=lambda _: False,  # suspension is checked at each draw
                )
                orch.note_info(info)
            else:
                orch.full = False
            if refused != orch.refused:
                if refused:
                    log.warning("orchestrator %s is not offered work: %s", address, refused)
                else:
                    log.info("orchestrator %s is offered work again", address)
            orch.refused = refused

    async def discover(self) -> None:
        """With discovery sources, updates the orchestrator list."""
        if not self.sources:
            return
        found: dict[str, DiscoveredOrchestrator] = {}
        for source in self.sources:
            try:
                for d in await source.discover():
                    found.setdefault(str(d.address), d)
            except LpstreamError as exc:
                log.warning("discovery failed: %s", exc)
        if not found:
            return  # keep what we had rather than stopping work
        known = {o.key: o for o in self.orchestrators}
        for key, d in found.items():
            if key in known:
                orch = known[key]
                orch.stake, orch.score = d.stake, d.score
                if orch.eth_address != d.eth_address:
                    orch.eth_address = d.eth_address
                    self.drop(orch)  # checked against another address: the next dial checks again
            else:
                log.info("discovered orchestrator %s", key)
                self._add(
                    KnownOrchestrator(
                        address=d.address, stake=d.stake, score=d.score, eth_address=d.eth_address
                    )
                )
        for gone in [o for o in self.orchestrators if o.key not in found]:
            log.info("orchestrator %s is no longer offered", gone.address)
            self.drop(gone)
            self.orchestrators.remove(gone)
        self.listener.retain(found)

    async def _hold(
        self, orch: KnownOrchestrator, *, task_status: trio.TaskStatus[QuicConnectionHandle]
    ) -> None:
        started = False
        address = orch.address
        try:
            async with open_quic_connection(
                address.host, address.port, pin=certificate_pin(address)
            ) as conn:
                if self.terms is not None:
                    await self._check_certificate_claim(orch, conn)
                task_status.started(conn)
                started = True
                # A killed or frozen orchestrator sends nothing: pings find it within
                # ``answer_within`` and closing the connection fails its jobs at once.
                await keep_alive(conn, peer=f"orchestrator {address}")
                await conn.wait_closed()
        except (CertificatePinError, CertificateClaimError) as exc:
            orch.refused = str(exc)
            log.error("orchestrator %s is not offered work: %s", address, exc)
            raise  # never started: the dialler gets the error
        except TransportError as exc:
            log.warning("orchestrator %s: %s", address, exc)
            if not started:
                raise  # the dialler gets the error; after that, the next job dials again
        finally:
            orch.connection = None

    async def _check_certificate_claim(
        self, orch: KnownOrchestrator, connection: QuicConnectionHandle
    ) -> None:
        """Asks for the info on a new ``connection`` and checks that it signs the certificate
        the connection presented with the key of the address this gateway pays.

        Raises:
            CertificateClaimError: it does not.
        """
        assert self.terms is not None
        info = await get_info(connection, self.terms.sender.address)
        why = certificate_refusal(
            info, connection.peer_fingerprint, orch.eth_address or info.address
        )
        if why:
            raise CertificateClaimError(why)
        orch.dial_info = (trio.current_time(), info)


async def get_info(connection: QuicConnectionHandle, sender: str) -> OrchInfo:
    """Asks an orchestrator for its ORCH_INFO (with ticket parameters for ``sender``)."""
    stream = await connection.open_stream()
    channel = MessageStream()
    try:
        await stream.send_all(channel.send(GetInfo(sender=sender)))
        with trio.fail_after(INFO_TIMEOUT):
            while (message := channel.next_message()) is None:
                data = await stream.receive_some(64 * 1024)
                if not data:
                    raise TransportError("orchestrator closed the info stream")
                channel.receive_data(data)
        await stream.send_eof()  # done asking: the orchestrator ends the stream quietly
    finally:
        await stream.aclose()
    if isinstance(message, Error):
        raise JobError(f"GET_INFO refused: {message.message}", code=message.code)
    if not isinstance(message, OrchInfo):
        raise JobError(f"GET_INFO answered with {type(message).__name__}", code=502)
    return message
