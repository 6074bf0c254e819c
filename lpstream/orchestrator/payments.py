"""The orchestrator's side of payments: issue ticket parameters, check and credit tickets,
keep winners durably, bill the work.

How this works:

* ``ChainWatch`` (``lpstream.chainwatch``, shared with the gateway) keeps a ``ChainSnapshot``
  fresh: the latest block, the last initialized round and its block hash, the gas price. Chain
  calls are blocking and go through one ``CapacityLimiter``.
* ``ticket_params(sender)`` issues parameters per sender, as PAYMENTS.md says: face value from
  the redemption's transaction cost (x100), capped by the sender's reserve allocation
  (``max_float``), win probability from the target ticket EV, a fresh seed, and the
  recipientRand commitment derived from the node's secret (32 random bytes per start).
* ``receive(job)`` runs before any compute: it decodes the JOB's payment, validates every
  ticket in PAYMENTS.md's order (a fatal error refuses the whole payment with 402 and its
  reason), writes every winning ticket to the SQLite queue *before* answering, and credits the
  EV to the (sender, session) balance. Work is refused with 402 while that balance is below
  one ticket's EV. After the work, ``bill`` debits price x output pixels.
"""

from __future__ import annotations

import logging
import secrets
from fractions import Fraction

import attrs
import trio

from lpstream.chainwatch import ChainWatch
from lpstream.errors import RemoteProtocolError
from lpstream.jobs import JobOutput
from lpstream.orchestrator.status import ReceiverStatus
from lpstream.verification import sign_renditions
from lpstream.wire import Job
from payments.chain.client import ChainSnapshot
from payments.pm import (
    BalanceLedger,
    InvalidTicketError,
    Payment,
    PixelPrice,
    SenderInfo,
    TicketParams,
    TicketValidator,
    Wei,
    issue_ticket_params,
    max_float,
)
from payments.store import TicketStore

__all__ = ["PaymentReceiver"]

log = logging.getLogger("lpstream.payments")

DEFAULT_TICKET_EV = 1_000_000_000_000
"""Target EV per ticket in wei (go-livepeer's -ticketEV default)."""


@attrs.define
class PaymentReceiver:
    """Checks and credits payments for one orchestrator (see the module comment)."""

    address: str
    """The orchestrator's address: tickets must name it as recipient."""
    watch: ChainWatch
    store: TicketStore
    store_limiter: trio.CapacityLimiter
    price: Fraction
    """Wei per pixel."""
    ticket_ev: int = DEFAULT_TICKET_EV
    max_face_value: int = 0
    """Optional cap on face values (0: none); a lower cap raises the win probability."""
    signing_key: bytes = attrs.field(default=b"", repr=False)
    """The private key of ``address``: signs each job's renditions (empty: results unsigned)."""
    _secret: bytes = attrs.Factory(lambda: secrets.token_bytes(32))
    _validator: TicketValidator = attrs.field(init=False)
    ledger: BalanceLedger = attrs.Factory(BalanceLedger)
    _ev_received: Fraction = Fraction(0)
    _billed: Fraction = Fraction(0)
    _tickets_received: int = 0
    _tickets_won: int = 0
    _face_value_won: int = 0
    _payments_refused: int = 0
    _senders: dict[str, tuple[int, SenderInfo]] = attrs.Factory(dict)
    _active: tuple[int, bool] | None = None

    def __attrs_post_init__(self) -> None:
        self._validator = TicketValidator(recipient=self.address, secret=self._secret)
        self.watch.subscribe(self._on_block)

    def _on_block(self, snapshot: ChainSnapshot) -> None:
        self._validator.forget_expired(snapshot.latest_block)

    def sign_result(self, job: Job, outputs: list[JobOutput]) -> bytes:
        """The orchestrator's signature over a job's renditions, for its SUMMARY (blocking)."""
        if not self.signing_key:
            return b""
        return sign_renditions(self.signing_key, job, outputs)

    def _snapshot(self) -> ChainSnapshot:
        if self.watch.snapshot is None:
            raise RemoteProtocolError("the orchestrator has not read the chain yet", code=503)
        return self.watch.snapshot

    async def _sender_info(self, sender: str) -> SenderInfo:
        """The sender's funds, read from the chain at most once per block."""
        block = self._snapshot().latest_block
        cached = self._senders.get(sender)
        if cached is not None and cached[0] == block:
            return cached[1]
        info: SenderInfo = await self.watch.call(self.watch.chain.sender_info, sender)
        if len(self._senders) > 10_000:
            self._senders.clear()
        self._senders[sender] = (block, info)
        return info

    async def ticket_params(self, sender: str) -> TicketParams:
        """Parameters for ``sender``'s next tickets."""
        snapshot = self._snapshot()
        info = await self._sender_info(sender)
        claimed: int = await self.watch.call(self.watch.chain.claimed_reserve, sender, self.address)
        pending = self.store.statistics().face_value_pending
        allowance = max_float(
            reserve=info.reserve,
            pool_size=snapshot.transcoder_pool_size,
            claimed=claimed,
            reserve_claimed_in_current_round=info.reserve_claimed_in_current_round,
            deposit=info.deposit,
            pending=pending,
        )
        tx_cost: int = await self.watch.call(self.watch.chain.redeem_tx_cost)
        # A winning ticket is paid from the deposit first and the shortfall from our share of
        # the reserve; so a face value up to the larger of the two is covered.
        return issue_ticket_params(
            recipient=self.address,
            secret=self._secret,
            seed=secrets.token_bytes(32),
            sender=sender,
            price=self.price,
            ev=self.ticket_ev,
            tx_cost=tx_cost,
            max_float=max(allowance, info.deposit),
            latest_block=snapshot.latest_block,
            creation_round=snapshot.last_initialized_round,
            creation_round_block_hash=snapshot.round_block_hash,
            max_face_value=self.max_face_value,
        )

    async def is_active(self) -> bool:
        """Whether this orchestrator is in the current round's active set (read once a round)."""
        round_ = self._snapshot().current_round
        if self._active is None or self._active[0] != round_:
            active: bool = await self.watch.call(
                self.watch.chain.is_active_transcoder, self.address
            )
            self._active = (round_, active)
        return self._active[1]

    async def receive(self, payment_bytes: bytes, session: str) -> str:
        """Validates and credits a JOB's payment; returns the sender.

        Raises:
            RemoteProtocolError: 402 with the reason when the payment is missing, invalid or
                leaves the balance short of one ticket's EV.
        """
        if not await self.is_active():
            # Stake gates the work: outside the active set our tickets could not be trusted
            # to redeem against the reserve, and the network has not chosen us this round.
            raise RemoteProtocolError(
                "not in the active set this round: bond more stake or wait for the next round",
                code=503,
            )
        if not payment_bytes:
            self._payments_refused += 1
            raise RemoteProtocolError("payment required: this orchestrator is paid", code=402)
        try:
            payment = Payment.decode(payment_bytes)
        except RemoteProtocolError as exc:
            self._payments_refused += 1
            raise RemoteProtocolError(f"bad payment: {exc}", code=402) from None
        if payment.expected_price < self.price:
            self._payments_refused += 1
            raise RemoteProtocolError(
                f"payment expects price {payment.expected_price} wei/pixel, "
                f"the price is {self.price}",
                code=402,
            )
        snapshot = self._snapshot()
        info = await self._sender_info(payment.sender)
        try:
            received = self._validator.receive_payment(
                payment,
                sender_info=info,
                last_initialized_round=snapshot.last_initialized_round,
                latest_block=snapshot.latest_block,
            )
        except InvalidTicketError as exc:
            self._payments_refused += 1
            log.warning("payment from %s refused: %s", payment.sender, exc)
            raise RemoteProtocolError(f"payment refused ({exc.reason}): {exc}", code=402) from None
        for winner in received.winning:
            # Durable before the job is answered: a crash from here on loses no money.
            await trio.to_thread.run_sync(self.store.add, winner, limiter=self.store_limiter)
        self._tickets_received += received.credited_tickets
        self._tickets_won += len(received.winning)
        self._face_value_won += sum(w.ticket.face_value for w in received.winning)
        self._ev_received += received.credited_ev
        self.ledger.credit_payment(session, received)
        if received.error is not None:
            log.warning("payment from %s partly refused: %s", payment.sender, received.error)
        if not self.ledger.has_sufficient_balance(
            payment.sender, session, Fraction(payment.params.ev)
        ):
            self._payments_refused += 1
            error = received.error
            reason = (
                f"({error.reason}): {error}" if error else "(short): credit below one ticket's EV"
            )
            raise RemoteProtocolError(f"insufficient balance {reason}", code=402)
        return payment.sender

    @property
    def face_value_won(self) -> int:
        """Wei: the face values of the winning tickets received (the metrics' won total)."""
        return self._face_value_won

    def charge(self, sender: str, session: str, amount: Fraction) -> Fraction:
        """Debits ``amount`` wei (a live session's time); returns the balance left."""
        self._billed += amount
        return self.ledger.debit(sender, session, amount)

    def bill(self, sender: str, session: str, pixels: int) -> None:
        """Debits price x pixels for work done."""
        self._billed += self.price * pixels
        self.ledger.debit_pixels(sender, session, pixels, self.price)

    def status(self) -> ReceiverStatus:
        store = self.store.statistics()
        return ReceiverStatus(
            address=self.address,
            price_per_pixel=PixelPrice.from_fraction(self.price),
            ticket_ev=Wei(self.ticket_ev),
            active=None if self._active is None else self._active[1],
            tickets_received=self._tickets_received,
            tickets_won=self._tickets_won,
            payments_refused=self._payments_refused,
            ev_received=Wei(self._ev_received),
            billed=Wei(self._billed),
            balance=Wei(self._ev_received - self._billed),
            tickets_pending=store.pending,
            tickets_redeemed=store.redeemed,
            tickets_dropped=store.dropped,
            face_value_redeemed=Wei(store.face_value_redeemed),
        )
