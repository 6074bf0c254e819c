"""The recipient's side: checking, crediting and remembering the tickets it is paid with.

Checks run in go-livepeer's order (PAYMENTS.md). Four are *fatal* and concern the payment as a
whole, so they run once, before any ticket: the sender's funds do not unlock within a round, the
tickets name us, the sender is not the zero address, and the parameters are ours (re-deriving
recipientRand from our secret reproduces their recipientRandHash). Then each ticket in turn: its
signature, the win check, its nonce, and the parameters' expiry; these failures are *non-fatal*:
the tickets before the failing one stay credited, the failing one and the rest are not, and
processing stops there, so the untouched tickets keep their nonces.

Replay guard: a ticket is identified by (recipientRandHash, senderNonce), since the hash commits to
the sender and every other parameter through the HMAC. ``NonceGuard`` remembers the nonces seen
for each recipientRandHash, at most 600 of them, until the parameters expire; after that the
expiry check refuses the tickets anyway, so forgetting them never re-opens a replay. The guard
never lets the chain head it is told go backwards, for the same reason.

A winning ticket is reported once its signature is good and its nonce is new, even when the
parameters have just expired: the chain still pays it, and it was not credited.
"""

from __future__ import annotations

from fractions import Fraction

import attrs

from .crypto import address_bytes, keccak256, recover_address_bytes
from .errors import (
    InvalidRecipientError,
    InvalidRecipientRandError,
    InvalidSenderError,
    InvalidSignatureError,
    InvalidTicketError,
    NonceReplayError,
    SenderUnlockingError,
    TicketParamsExpiredError,
    TooManyNoncesError,
)
from .params import SenderInfo, TicketParams
from .payment import Payment
from .ticket import MAX_WIN_PROB, Ticket, recipient_rand

__all__ = [
    "MAX_SENDER_NONCES",
    "NonceGuard",
    "NonceGuardStatistics",
    "ReceivedPayment",
    "TicketValidator",
    "ValidatorStatistics",
    "WinningTicket",
]

MAX_SENDER_NONCES = 600
"""The most nonces a recipient accepts under one recipientRandHash."""

_ZERO_ADDRESS = bytes(20)
_PERSONAL_PREFIX = b"\x19Ethereum Signed Message:\n32"
_CHECKED_CACHE_SIZE = 512
_keccak = keccak256

# What the payment-level checks derive from (params, sender): recipientRand, its 32 bytes, the
# sender's 20 bytes, and the packed ticket before and after the nonce.
_Checked = tuple[int, bytes, bytes, bytes, bytes]


@attrs.frozen(kw_only=True)
class NonceGuardStatistics:
    """What a ``NonceGuard`` holds."""

    recipient_rand_hashes: int
    """recipientRandHashes with nonces remembered."""
    nonces: int
    """Nonces remembered in all."""
    latest_block: int
    """The highest chain head the guard has been told."""


@attrs.define
class NonceGuard:
    """Remembers the sender nonces seen per recipientRandHash, until the parameters expire."""

    max_nonces: int = MAX_SENDER_NONCES
    _seen: dict[bytes, tuple[int, set[int]]] = attrs.field(factory=dict, init=False)
    _latest_block: int = attrs.field(default=0, init=False)

    @property
    def latest_block(self) -> int:
        """The highest chain head seen; expiry checks use at least this."""
        return self._latest_block

    def advance(self, latest_block: int) -> int:
        """Notes the chain head (never moving back) and returns the head to use."""
        if latest_block > self._latest_block:
            self._latest_block = latest_block
        return self._latest_block

    def record(self, recipient_rand_hash: bytes, sender_nonce: int, expiration_block: int) -> None:
        """Accepts ``sender_nonce`` once under ``recipient_rand_hash``.

        Raises:
            NonceReplayError: the nonce was seen before.
            TooManyNoncesError: ``max_nonces`` nonces were already seen under this hash.
        """
        entry = self._seen.get(recipient_rand_hash)
        if entry is None:
            self._seen[recipient_rand_hash] = (expiration_block, {sender_nonce})
            return
        nonces = entry[1]
        if sender_nonce in nonces:
            raise NonceReplayError(f"ticket senderNonce {sender_nonce} already seen")
        if len(nonces) >= self.max_nonces:
            raise TooManyNoncesError(
                f"ticket senderNonce {sender_nonce}: {self.max_nonces} nonces already seen"
            )
        nonces.add(sender_nonce)

    def forget_expired(self, latest_block: int) -> int:
        """Drops the nonces of parameters expired at ``latest_block``; returns how many hashes."""
        head = self.advance(latest_block)
        expired = [k for k, (expiration, _) in self._seen.items() if expiration <= head]
        for k in expired:
            del self._seen[k]
        return len(expired)

    def statistics(self) -> NonceGuardStatistics:
        """Counts of what is remembered."""
        return NonceGuardStatistics(
            recipient_rand_hashes=len(self._seen),
            nonces=sum(len(n) for _, n in self._seen.values()),
            latest_block=self._latest_block,
        )


@attrs.frozen(kw_only=True)
class WinningTicket:
    """A ticket that won: persist it before acknowledging the payment, redeem it later."""

    ticket: Ticket
    """The ticket as the TicketBroker takes it."""
    signature: bytes
    """The sender's 65-byte signature."""
    recipient_rand: int
    """The revealed recipientRand redemption needs."""
    expiration_block: int
    """Redeem only after this block (the parameters' expirationBlock)."""


@attrs.frozen(kw_only=True)
class ReceivedPayment:
    """The outcome of a payment that no fatal error rejected."""

    sender: str
    """The paying sender (as in the payment)."""
    credited_tickets: int
    """Tickets accepted, from the first one up to the first non-fatal error."""
    credited_ev: Fraction
    """Their expected value together: add it to the (sender, session) balance."""
    winning: tuple[WinningTicket, ...]
    """Tickets that won, in order."""
    error: InvalidTicketError | None
    """The non-fatal error that stopped crediting, or None when every ticket was credited."""


@attrs.frozen(kw_only=True)
class ValidatorStatistics:
    """Counters of a ``TicketValidator`` since it was made."""

    payments: int
    """Payments received, rejected ones included."""
    payments_rejected: int
    """Payments a fatal error rejected."""
    tickets_credited: int
    """Tickets credited."""
    tickets_refused: int
    """Tickets not credited because of a non-fatal error (the failing one and those after)."""
    winning_tickets: int
    """Winning tickets reported."""
    credited_ev: Fraction
    """The EV of all credited tickets."""


@attrs.define
class TicketValidator:
    """Checks payments addressed to ``recipient`` and remembers their nonces.

    Args:
        recipient: our address.
        secret: our 32-byte recipientRand secret (the one ``issue_ticket_params`` used).
        max_nonces: the most nonces accepted under one recipientRandHash.
    """

    _address: str = attrs.field(alias="recipient")
    _secret: bytes = attrs.field(alias="secret", repr=False)
    _max_nonces: int = attrs.field(alias="max_nonces", default=MAX_SENDER_NONCES)
    _recipient: bytes = attrs.field(init=False, repr=False)
    _nonces: NonceGuard = attrs.field(init=False, repr=False)
    _payments: int = attrs.field(default=0, init=False)
    _payments_rejected: int = attrs.field(default=0, init=False)
    _tickets_credited: int = attrs.field(default=0, init=False)
    _tickets_refused: int = attrs.field(default=0, init=False)
    _winning: int = attrs.field(default=0, init=False)
    _credited_ev_numerator: int = attrs.field(default=0, init=False)
    _checked: dict[tuple[TicketParams, str], _Checked] = attrs.field(
        factory=dict, init=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if len(self._secret) != 32:
            raise ValueError("the recipientRand secret is 32 bytes")
        self._recipient = address_bytes(self._address)
        self._nonces = NonceGuard(self._max_nonces)

    @property
    def recipient(self) -> str:
        """Our address: tickets must pay it."""
        return self._address

    @property
    def max_nonces(self) -> int:
        """The most nonces accepted under one recipientRandHash."""
        return self._max_nonces

    def receive_payment(
        self,
        payment: Payment,
        *,
        sender_info: SenderInfo,
        last_initialized_round: int,
        latest_block: int,
    ) -> ReceivedPayment:
        """Validates every ticket of ``payment`` in order and records their nonces.

        Args:
            payment: the decoded payment.
            sender_info: the sender's funds as the chain reports them.
            last_initialized_round: the chain's last initialized round.
            latest_block: the chain head; parameters expire when it reaches their
                expirationBlock.

        Returns:
            What to credit, what won, and the non-fatal error that stopped crediting, if any.

        Raises:
            InvalidTicketError: a fatal error (``fatal`` is True): nothing is credited.
        """
        self._payments += 1
        try:
            if sender_info.unlocks_soon(last_initialized_round):
                raise SenderUnlockingError(
                    f"sender {payment.sender} unlocks its deposit and reserve at round "
                    f"{sender_info.withdraw_round}"
                )
            checked = self._checked.get((payment.params, payment.sender))
            if checked is None:
                checked = self._check_params(payment)
        except InvalidTicketError:
            self._payments_rejected += 1
            raise
        p = payment.params
        rand, rand_bytes, sender, head, tail = checked
        rrh = p.recipient_rand_hash
        win_prob = p.win_prob
        expiration_block = p.expiration_block
        expired = expiration_block <= self._nonces.advance(latest_block)
        record = self._nonces.record

        credited = 0
        winning: list[WinningTicket] = []
        error: InvalidTicketError | None = None
        for t in payment.tickets:
            sig = t.signature
            nonce = t.sender_nonce
            try:
                signer = recover_address_bytes(
                    _keccak(_PERSONAL_PREFIX + _keccak(head + nonce.to_bytes(32, "big") + tail)),
                    sig,
                )
                if signer != sender:
                    raise InvalidSignatureError("ticket signature is not the sender's")
                won = int.from_bytes(_keccak(sig + rand_bytes), "big") < win_prob
                record(rrh, nonce, expiration_block)
                if won:
                    winning.append(
                        WinningTicket(
                            ticket=payment.ticket(nonce),
                            signature=sig,
                            recipient_rand=rand,
                            expiration_block=expiration_block,
                        )
                    )
                if expired:
                    raise TicketParamsExpiredError(
                        f"ticket parameters expired at block {expiration_block}"
                    )
            except InvalidTicketError as exc:
                error = exc
                break
            credited += 1

        # EV = faceValue * winProb / (2^256 - 1): sums stay exact as integer numerators.
        ev_numerator = p.face_value * win_prob * credited
        self._credited_ev_numerator += ev_numerator
        self._tickets_credited += credited
        self._tickets_refused += len(payment.tickets) - credited
        self._winning += len(winning)
        return ReceivedPayment(
            sender=payment.sender,
            credited_tickets=credited,
            credited_ev=Fraction(ev_numerator, MAX_WIN_PROB),
            winning=tuple(winning),
            error=error,
        )

    def _check_params(self, payment: Payment) -> _Checked:
        """The fatal checks after the sender's: recipient, sender, recipientRandHash, in order.

        They depend only on the parameters, the sender and our secret, so a success is
        remembered (a few hundred entries) and the next payment under the same parameters skips
        the HMAC.
        """
        p = payment.params
        if address_bytes(p.recipient) != self._recipient:
            raise InvalidRecipientError(f"ticket recipient {p.recipient} is not {self.recipient}")
        sender = address_bytes(payment.sender)
        if sender == _ZERO_ADDRESS:
            raise InvalidSenderError("ticket sender is the zero address")
        rand = recipient_rand(
            self._secret,
            p.seed,
            payment.sender,
            p.face_value,
            p.win_prob,
            p.expiration_block,
            p.price.numerator,
            p.price.denominator,
            p.aux_data,
        )
        rand_bytes = rand.to_bytes(32, "big")
        if keccak256(rand_bytes) != p.recipient_rand_hash:
            raise InvalidRecipientRandError("ticket recipientRandHash is not one we issued")
        head = (
            self._recipient
            + sender
            + p.face_value.to_bytes(32, "big")
            + p.win_prob.to_bytes(32, "big")
        )
        checked = (rand, rand_bytes, sender, head, p.recipient_rand_hash + p.aux_data)
        if len(self._checked) >= _CHECKED_CACHE_SIZE:
            del self._checked[next(iter(self._checked))]  # oldest first
        self._checked[(p, payment.sender)] = checked
        return checked

    def forget_expired(self, latest_block: int) -> int:
        """Frees the nonces of expired parameters; returns how many recipientRandHashes went."""
        return self._nonces.forget_expired(latest_block)

    def statistics(self) -> ValidatorStatistics:
        """Counters since the validator was made."""
        return ValidatorStatistics(
            payments=self._payments,
            payments_rejected=self._payments_rejected,
            tickets_credited=self._tickets_credited,
            tickets_refused=self._tickets_refused,
            winning_tickets=self._winning,
            credited_ev=Fraction(self._credited_ev_numerator, MAX_WIN_PROB),
        )

    def nonce_statistics(self) -> NonceGuardStatistics:
        """What the replay guard holds."""
        return self._nonces.statistics()
