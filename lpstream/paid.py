"""Payments wiring for nodes: the embedded dev chain and its economy, and the redeemer.

``start_dev_economy`` is what makes ``lpstream dev`` a paying network in one process: it starts
the embedded chain (eth-tester with lpstream's contracts), funds the gateway's deposit and
reserve, bonds and registers the orchestrator with its service address, starts a new round so
the orchestrator is in the active set, mines blocks on a timer, and runs the orchestrator's
redeemer. Every chain call goes through one ``CapacityLimiter`` (``ChainWatch.call``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs
import trio

from lpstream.chainwatch import ChainWatch
from lpstream.gateway.payments import PaymentSender
from lpstream.gateway.status import SenderStatus
from lpstream.orchestrator.payments import DEFAULT_TICKET_EV, PaymentReceiver
from lpstream.orchestrator.status import ReceiverStatus
from lpstream.status_fields import OMIT_NONE
from payments.chain.client import ChainClient
from payments.chain.contracts import ProtocolParameters
from payments.chain.devchain import DevChain
from payments.keys import NodeKey, load_key, read_passphrase
from payments.pm import TicketSender, Wei
from payments.redeemer import Redeemer, RedeemerStatistics
from payments.store import TicketStore

__all__ = [
    "ChainFacts",
    "ChainOptions",
    "DevEconomy",
    "PaymentOptions",
    "PaymentsStatus",
    "open_chain",
    "run_round_initializer",
    "start_dev_economy",
    "start_gateway_payments",
    "start_orchestrator_payments",
    "start_redeemer",
]

log = logging.getLogger("lpstream.payments")

ETH = 10**18


@attrs.frozen(kw_only=True)
class PaymentOptions:
    """Prices, ticket economics and (for dev) the chain's pace and the accounts' funding."""

    price_per_unit: int = 1
    """Orchestrator's price: wei per ``pixels_per_unit`` pixels."""
    pixels_per_unit: int = 1
    """Pixels the price is for."""
    ticket_ev: int = DEFAULT_TICKET_EV
    """Target EV per ticket, wei."""
    max_face_value: int = 0
    """Cap on a ticket's face value (0: none); lower means more, smaller winning tickets."""
    max_price: Fraction | None = None
    """Gateway: the most wei per pixel it pays (None: no limit)."""
    block_time: float = 0.5
    """Dev chain: seconds between blocks."""
    round_length: int = 100
    """Dev chain: blocks per round (must exceed the 40-block ticket expiry)."""
    deposit: int = 10 * ETH
    """Dev chain: the gateway's deposit."""
    reserve: int = 10 * ETH
    """Dev chain: the gateway's reserve."""
    stake: int = 1 * ETH
    """Dev chain: the orchestrator's self-bond."""
    data_dir: Path = Path(".lpstream")
    """Where the orchestrator keeps its SQLite ticket queue."""

    @property
    def price(self) -> Fraction:
        return Fraction(self.price_per_unit, self.pixels_per_unit)


@attrs.frozen(kw_only=True)
class ChainFacts:
    """On-chain figures of the dev economy's two accounts."""

    block: int | None
    """The latest block seen."""
    round: int | None
    """The current round."""
    gateway_deposit: Wei
    """The gateway's deposit in the TicketBroker."""
    gateway_reserve: Wei
    """The gateway's reserve in the TicketBroker."""
    orchestrator_fees: Wei
    """Fees the orchestrator has earned from redeemed tickets (BondingManager)."""


@attrs.frozen(kw_only=True)
class PaymentsStatus:
    """A node's payments: the sides it plays, and on ``dev`` the chain and the redeemer."""

    gateway: SenderStatus | None = attrs.field(default=None, metadata=OMIT_NONE)
    """The sender's view (a gateway)."""
    orchestrator: ReceiverStatus | None = attrs.field(default=None, metadata=OMIT_NONE)
    """The recipient's view (an orchestrator)."""
    chain: ChainFacts | None = attrs.field(default=None, metadata=OMIT_NONE)
    """On-chain figures (``dev``)."""
    redeemer: RedeemerStatistics | None = attrs.field(default=None, metadata=OMIT_NONE)
    """The redeemer's counts (``dev``)."""


@attrs.define
class DevEconomy:
    """What ``start_dev_economy`` started."""

    chain: DevChain
    watch: ChainWatch
    sender: PaymentSender
    receiver: PaymentReceiver
    redeemer: Redeemer
    gateway_client: ChainClient
    orchestrator_client: ChainClient
    facts: ChainFacts | None = None
    """The latest on-chain figures (kept fresh by ``_track_facts``)."""

    def status(self) -> PaymentsStatus:
        return PaymentsStatus(
            chain=self.facts,
            gateway=self.sender.status(),
            orchestrator=self.receiver.status(),
            redeemer=self.redeemer.statistics(),
        )


async def start_redeemer(
    nursery: trio.Nursery, store: TicketStore, client: ChainClient, watch: ChainWatch
) -> Redeemer:
    """Runs the redeemer, fed with every new block the watch sees."""
    send, receive = trio.open_memory_channel[int](16)

    def on_block(snapshot: Any) -> None:
        # If the channel is full a pass is running; it sees the newest block next time.
        with contextlib.suppress(trio.WouldBlock):
            send.send_nowait(snapshot.latest_block)

    redeemer = Redeemer(store=store, chain=client, limiter=watch.limiter)
    watch.subscribe(on_block)
    nursery.start_soon(redeemer.run, receive)
    return redeemer


async def start_ticket_receiver(
    nursery: trio.Nursery,
    options: PaymentOptions,
    key: NodeKey,
    client: ChainClient,
    watch: ChainWatch,
) -> tuple[PaymentReceiver, Redeemer]:
    """The orchestrator's side of payments: its ticket store in the data dir, the receiver that
    checks and credits tickets with ``key``, and the redeemer of the winning ones (running)."""
    options.data_dir.mkdir(parents=True, exist_ok=True)
    store = TicketStore(options.data_dir / "tickets.sqlite")
    receiver = PaymentReceiver(
        address=key.address,
        signing_key=key.private_key,
        watch=watch,
        store=store,
        store_limiter=trio.CapacityLimiter(1),
        price=options.price,
        ticket_ev=options.ticket_ev,
        max_face_value=options.max_face_value,
    )
    return receiver, await start_redeemer(nursery, store, client, watch)


async def start_dev_economy(
    nursery: trio.Nursery, options: PaymentOptions, service_uri: str
) -> DevEconomy:
    """Starts the embedded chain and a funded gateway and registered orchestrator on it."""
    parameters = ProtocolParameters(round_length=options.round_length)
    chain = await trio.to_thread.run_sync(lambda: DevChain.start(parameters=parameters))
    limiter = trio.CapacityLimiter(1)
    gateway_key, orchestrator_key = chain.keys[0], chain.keys[1]
    gateway_client = chain.client(gateway_key)
    orchestrator_client = chain.client(orchestrator_key)

    def setup() -> None:
        gateway_client.fund_deposit_and_reserve(options.deposit, options.reserve)
        orchestrator_client.bond(options.stake, orchestrator_key.address)
        orchestrator_client.register(0, 100)
        orchestrator_client.set_service_uri(service_uri)
        # The active set is fixed when a round starts: move to the next round and start it.
        snapshot = orchestrator_client.snapshot()
        chain.mine(max(1, snapshot.round_length - snapshot.latest_block % snapshot.round_length))
        orchestrator_client.initialize_round()

    await trio.to_thread.run_sync(setup, limiter=limiter)
    watch = ChainWatch(orchestrator_client, limiter, interval=max(0.05, options.block_time / 2))
    await nursery.start(chain.run_blocks, options.block_time, limiter)
    await nursery.start(watch.run)

    receiver, redeemer = await start_ticket_receiver(
        nursery, options, orchestrator_key, orchestrator_client, watch
    )
    sender = PaymentSender(
        sender=TicketSender(private_key=gateway_key.private_key), max_price=options.max_price
    )
    economy = DevEconomy(
        chain=chain,
        watch=watch,
        sender=sender,
        receiver=receiver,
        redeemer=redeemer,
        gateway_client=gateway_client,
        orchestrator_client=orchestrator_client,
    )
    await nursery.start(_track_facts, economy)
    return economy


async def _track_facts(
    economy: DevEconomy, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Keeps the on-chain figures /api/status shows fresh (chain reads never run in a request)."""
    gateway = economy.sender.address
    orchestrator = economy.receiver.address
    started = False
    call = economy.watch.call
    while True:
        # A redemption moves money from the deposit to the fees in one transaction: fees that
        # did not change across the deposit's read make a pair from the same state.
        fees = await call(economy.orchestrator_client.pending_fees, orchestrator)
        for _ in range(5):
            info = await call(economy.gateway_client.sender_info, gateway)
            fees_after = await call(economy.orchestrator_client.pending_fees, orchestrator)
            if fees_after == fees:
                break
            fees = fees_after
        snapshot = economy.watch.snapshot
        economy.facts = ChainFacts(
            block=snapshot.latest_block if snapshot else None,
            round=snapshot.current_round if snapshot else None,
            gateway_deposit=Wei(info.deposit),
            gateway_reserve=Wei(info.reserve),
            orchestrator_fees=Wei(fees),
        )
        if not started:
            task_status.started()
            started = True
        await trio.sleep(max(0.2, economy.watch.interval))


@attrs.frozen(kw_only=True)
class ChainOptions:
    """How a standalone node reaches its chain and its key."""

    eth_url: str
    """JSON-RPC URL (``lpstream chain`` serves one on loopback)."""
    controller: str
    """The Controller contract's address; every other address is looked up through it."""
    keystore: Path
    """Encrypted JSON keystore of the node's Ethereum account."""
    passphrase_file: Path | None = None
    """File with the keystore passphrase (mode 0600); prompted for when absent."""


async def open_chain(options: ChainOptions) -> tuple[NodeKey, ChainClient, ChainWatch]:
    """Unlocks the node's key and connects to the chain (blocking parts on a thread)."""
    passphrase = read_passphrase(options.passphrase_file, prompt=sys.stdin.isatty())
    key = await trio.to_thread.run_sync(load_key, options.keystore, passphrase)
    client = await trio.to_thread.run_sync(
        lambda: ChainClient.connect(options.eth_url, controller=options.controller, key=key)
    )
    return key, client, ChainWatch(client, trio.CapacityLimiter(1))


async def run_round_initializer(
    watch: ChainWatch, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Initializes each new round as soon as a block of it is seen (``--initialize-rounds``)."""
    task_status.started()
    last = -1
    while True:
        snapshot = await watch.wait_block_after(last)
        last = snapshot.latest_block
        if not snapshot.current_round_initialized:
            try:
                tx = await watch.call(watch.chain.initialize_round)
            except Exception as exc:  # another node may have won the race; try next block
                log.info("initializing round %d failed: %s", snapshot.current_round, exc)
            else:
                if tx:
                    log.info("initialized round %d (tx %s)", snapshot.current_round, tx)


async def start_orchestrator_payments(
    nursery: trio.Nursery,
    chain: ChainOptions,
    options: PaymentOptions,
    *,
    initialize_rounds: bool,
) -> PaymentReceiver:
    """Connects, starts the chain watch, the ticket queue and the redeemer of an orchestrator."""
    key, client, watch = await open_chain(chain)
    await nursery.start(watch.run)
    receiver, _ = await start_ticket_receiver(nursery, options, key, client, watch)
    if initialize_rounds:
        await nursery.start(run_round_initializer, watch)
    return receiver


async def start_gateway_payments(
    nursery: trio.Nursery, chain: ChainOptions, options: PaymentOptions
) -> tuple[PaymentSender, ChainWatch]:
    """Connects and starts the chain watch of a paying gateway."""
    key, _, watch = await open_chain(chain)
    await nursery.start(watch.run)
    sender = PaymentSender(
        sender=TicketSender(private_key=key.private_key), max_price=options.max_price
    )
    return sender, watch
