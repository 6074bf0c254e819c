"""The gateway's side of payments: ticket parameters per orchestrator, credit per session,
and the ticket batch that rides in each segment's JOB header.

For each orchestrator the gateway holds the ticket parameters the orchestrator issued to it
(fetched with GET_INFO, refreshed before they expire) and, per (orchestrator, session), the
credit it has paid for and not yet been billed. For a segment it computes the fee as
PAYMENTS.md says (output pixels x 1.02 x price), sends ``ceil((max(fee, EV) - credit) / EV)``
tickets when the credit is short, and after the answer lowers the credit by price x the pixels
the orchestrator reports.

A segment's payment is one context manager, ``segment_payment``: entering it makes the tickets
and reserves the expected fee from the credit; leaving it settles the reservation against the
pixels billed (``SegmentPayment.settle``), returns it when the orchestrator answered with an
error (nothing was done or billed), or, on a 402, forgets the credit and the parameters. A lost
connection or a bad result may have been billed: the reservation then stands.

A batch AI job (text-to-image, llm...) is paid the same way with ``job_payment``: the fee is
the most units the request can be billed times the model's price, and it settles against the
wei the orchestrator billed for the units produced.

Every payment, per segment or for live AI, is first charged to the spend limits of its session
(``spending``, :mod:`lpstream.gateway.spending`): past one, no ticket is made.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

import attrs

from lpstream.errors import BusyError
from lpstream.gateway.spending import SpendLedger
from lpstream.gateway.status import SenderStatus
from lpstream.jobs import JobError
from lpstream.media import VideoProfile, scaled_size
from payments.pm import (
    DEFAULT_MAX_TOTAL_EV,
    Payment,
    PixelPrice,
    SenderInfo,
    TicketParams,
    TicketParamsRejectedError,
    TicketSender,
    Wei,
    check_ticket_params,
    output_pixels,
    segment_fee,
    tickets_needed,
)

if TYPE_CHECKING:  # the fee reads a job's fields; paying needs no more of the gateway
    from lpstream.gateway.segments import SegmentJob

__all__ = ["JobPayment", "PaymentSender", "PriceTooHighError", "SegmentPayment"]

log = logging.getLogger("lpstream.payments")

PARAMS_MARGIN_BLOCKS = 8
"""Parameters this close to expiry are refreshed before use."""


class PriceTooHighError(BusyError):
    """The orchestrator asks more than ``--max-price-per-unit``."""


@attrs.define
class SegmentPayment:
    """One segment's payment, while its job runs (see ``PaymentSender.segment_payment``)."""

    header: bytes = b""
    """The tickets for the JOB header (empty when nothing is paid per segment)."""
    billed_pixels: int | None = None
    """The pixels the orchestrator reported, once the job succeeded."""

    def settle(self, pixels: int) -> None:
        """The job succeeded and the orchestrator reports ``pixels``: bill them on exit."""
        self.billed_pixels = pixels


@attrs.define
class JobPayment:
    """One batch AI job's payment, while it runs (see ``PaymentSender.job_payment``)."""

    header: bytes = b""
    """The tickets for the JOB header (empty when nothing is paid)."""
    billed: Fraction | None = None
    """The wei the orchestrator billed, once the job succeeded."""

    def settle(self, amount: Fraction) -> None:
        """The job succeeded and the orchestrator billed ``amount`` wei: settled on exit."""
        self.billed = amount


@attrs.define
class PaymentSender:
    """Pays orchestrators for segments (see the module comment)."""

    sender: TicketSender
    max_price: Fraction | None = None
    """Wei per pixel the gateway pays at most; None for no limit."""
    spending: SpendLedger = attrs.Factory(SpendLedger)
    """The spend limits each payment session is charged to."""
    _params: dict[str, TicketParams] = attrs.Factory(dict)
    _credit: dict[tuple[str, str], Fraction] = attrs.Factory(dict)
    _tickets_sent: int = 0
    _ev_sent: Fraction = Fraction(0)
    _payment_bytes: list[int] = attrs.Factory(list)

    @property
    def address(self) -> str:
        return self.sender.address

    def recipient(self, orchestrator: str) -> str | None:
        """The address ``orchestrator``'s tickets are made out to: its results must be signed
        by it. None before its ticket parameters were accepted."""
        params = self._params.get(orchestrator)
        return params.recipient if params is not None else None

    def needs_params(self, orchestrator: str, latest_block: int) -> bool:
        params = self._params.get(orchestrator)
        return params is None or params.expiration_block <= latest_block + PARAMS_MARGIN_BLOCKS

    def accept_params(
        self, orchestrator: str, encoded: bytes, *, latest_block: int, sender_info: SenderInfo
    ) -> TicketParams:
        """Takes the parameters from an ORCH_INFO, or refuses the orchestrator.

        Raises:
            PriceTooHighError: the price is above ``max_price``.
            BusyError: the parameters are unusable (expired, EV too high, sender unfunded ...).
        """
        if not encoded:
            raise BusyError(f"orchestrator {orchestrator} sent no ticket parameters")
        params = Payment.decode(encoded).params
        if self.max_price is not None and params.price > self.max_price:
            raise PriceTooHighError(
                f"orchestrator {orchestrator} asks {params.price} wei/pixel, "
                f"above the maximum {self.max_price}"
            )
        try:
            check_ticket_params(params, count=1, latest_block=latest_block, sender_info=sender_info)
        except TicketParamsRejectedError as exc:
            raise BusyError(f"orchestrator {orchestrator}: {exc.reason}: {exc}") from None
        old = self._params.get(orchestrator)
        if old is not None and old.recipient_rand_hash != params.recipient_rand_hash:
            self.sender.forget(old.recipient_rand_hash)
        self._params[orchestrator] = params
        return params

    def payment_for(
        self,
        orchestrator: str,
        session: str,
        profiles: Sequence[VideoProfile],
        source_size: tuple[int, int],
        fps: float,
        duration: float,
        *,
        latest_block: int,
        sender_info: SenderInfo,
    ) -> tuple[bytes, Fraction]:
        """The payment to put in a segment's JOB header, and the fee it reserved.

        The expected fee leaves the session's credit at once, as go-livepeer's sender
        reserves its balance: a segment paid while the previous one is still being worked
        on must not count that one's fee as credit (the orchestrator bills it first and then
        finds the balance short). :meth:`settle` replaces the reservation with what was
        billed; :meth:`release` returns it when the job was not done.
        """
        params = self._params[orchestrator]
        sizes = [scaled_size(source_size[0], source_size[1], p) for p in profiles]
        pixels = output_pixels(
            (w, h, Fraction(p.fps) if p.fps else Fraction(fps), Fraction(duration))
            for (w, h), p in zip(sizes, profiles, strict=True)
        )
        fee = segment_fee(pixels, params.price)
        return self.reserve(
            orchestrator, session, fee, latest_block=latest_block, sender_info=sender_info
        ), fee

    def reserve(
        self,
        orchestrator: str,
        session: str,
        fee: Fraction,
        *,
        latest_block: int,
        sender_info: SenderInfo,
        limit: int | None = None,
    ) -> bytes:
        """The payment for a job of ``fee`` wei (tickets for what the credit lacks, at most
        ``limit``), with the fee reserved from the session's credit at once
        (:meth:`payment_for` says why)."""
        payment = self._pay(
            orchestrator,
            session,
            fee,
            latest_block=latest_block,
            sender_info=sender_info,
            limit=limit,
        )
        key = (orchestrator, session)
        self._credit[key] = self._credit.get(key, Fraction(0)) - fee
        return payment

    @contextlib.contextmanager
    def _while_reserved(
        self, orchestrator: str, session: str, reserved: Fraction
    ) -> Iterator[None]:
        """Undoes a reservation when the job's answer is an error: a 402 forgets the credit
        and the parameters, another error bills nothing and returns it."""
        try:
            yield
        except JobError as exc:
            if exc.code == 402:
                log.warning("orchestrator %s refused a payment: %s", orchestrator, exc)
                self.payment_refused(orchestrator, session)
            else:
                self.release(orchestrator, session, reserved)  # an error answer bills nothing
            raise

    @contextlib.contextmanager
    def segment_payment(
        self, orchestrator: str, job: SegmentJob, *, latest_block: int, sender_info: SenderInfo
    ) -> Iterator[SegmentPayment]:
        """Pays ``orchestrator`` for ``job``'s segment for as long as the job runs (see the
        module comment)."""
        session = job.session
        header, reserved = self.payment_for(
            orchestrator,
            session,
            job.profiles,
            (job.source_width, job.source_height),
            job.fps,
            job.duration_ms / 1000,
            latest_block=latest_block,
            sender_info=sender_info,
        )
        payment = SegmentPayment(header=header)
        with self._while_reserved(orchestrator, session, reserved):
            yield payment
        if payment.billed_pixels is None:
            self.release(orchestrator, session, reserved)
        else:
            self.settle(orchestrator, session, payment.billed_pixels, reserved)

    @contextlib.contextmanager
    def job_payment(
        self,
        orchestrator: str,
        session: str,
        fee: Fraction,
        *,
        latest_block: int,
        sender_info: SenderInfo,
    ) -> Iterator[JobPayment]:
        """Pays ``orchestrator`` up to ``fee`` wei for a batch AI job while it runs: the fee is
        reserved, then settled against what was billed (``JobPayment.settle``), or returned
        when the answer was an error (module comment).

        One payment carries at most the sender's per-payment EV limit (as a live session's
        does): a request quoted above it is paid that much ahead, and the rest of what it is
        billed is paid with the next request's tickets (the credit goes below zero meanwhile,
        as the orchestrator's ledger does)."""
        header = self.reserve(
            orchestrator,
            session,
            fee,
            latest_block=latest_block,
            sender_info=sender_info,
            limit=int(DEFAULT_MAX_TOTAL_EV // self._params[orchestrator].ev),
        )
        payment = JobPayment(header=header)
        with self._while_reserved(orchestrator, session, fee):
            yield payment
        if payment.billed is None:
            self.release(orchestrator, session, fee)
        elif orchestrator in self._params:  # else forgotten after a refusal, with the credit
            self.charge(orchestrator, session, payment.billed - fee)

    def live_payment(
        self,
        orchestrator: str,
        session: str,
        ahead: Fraction,
        *,
        latest_block: int,
        sender_info: SenderInfo,
    ) -> bytes:
        """Tickets raising a live session's credit towards ``ahead`` wei (and one ticket's
        EV), at most the sender's per-payment EV limit at a time (the next payment tops up
        the rest); empty when the credit is there already."""
        if not tickets_needed(
            fee=ahead,
            ticket_ev=self._params[orchestrator].ev,
            credit=self.credit(orchestrator, session),
        ):
            return b""
        return self._pay(
            orchestrator,
            session,
            ahead,
            latest_block=latest_block,
            sender_info=sender_info,
            limit=int(DEFAULT_MAX_TOTAL_EV // self._params[orchestrator].ev),
        )

    def _pay(
        self,
        orchestrator: str,
        session: str,
        fee: Fraction,
        *,
        latest_block: int,
        sender_info: SenderInfo,
        limit: int | None = None,
    ) -> bytes:
        """A payment of as many tickets as ``fee`` needs beyond the session's credit (maybe
        none: it still carries the ticket parameters and the expected price), at most
        ``limit``."""
        params = self._params[orchestrator]
        key = (orchestrator, session)
        credit = self._credit.get(key, Fraction(0))
        count = tickets_needed(fee=fee, ticket_ev=params.ev, credit=credit)
        if limit is not None:
            count = min(count, max(1, limit))
        if count:
            try:
                check_ticket_params(
                    params, count=count, latest_block=latest_block, sender_info=sender_info
                )
            except TicketParamsRejectedError as exc:
                raise BusyError(
                    f"cannot pay orchestrator {orchestrator}: {exc.reason}: {exc}"
                ) from None
            self.spending.charge(session, params.ev * count)
        payment = self.sender.create_payment(params, count)
        self._credit[key] = credit + payment.ev
        self._tickets_sent += count
        self._ev_sent += payment.ev
        encoded = payment.encode()
        self._payment_bytes.append(len(encoded))
        return encoded

    def credit(self, orchestrator: str, session: str) -> Fraction:
        """What we paid ``orchestrator`` for ``session`` and it has not billed yet."""
        return self._credit.get((orchestrator, session), Fraction(0))

    def charge(self, orchestrator: str, session: str, amount: Fraction) -> None:
        """Lowers a session's credit by ``amount`` wei the orchestrator billed."""
        key = (orchestrator, session)
        self._credit[key] = self._credit.get(key, Fraction(0)) - amount

    def payment_refused(self, orchestrator: str, session: str) -> None:
        """Forgets our credit with ``orchestrator`` for ``session`` and its ticket parameters.

        After a 402 the orchestrator credited less than we sent (refused tickets credit
        nothing), so our figure is too high and would make every later payment short; and
        the parameters may be what it refused (it restarted with a new secret, they expired).
        The next payment starts from fresh parameters and zero credit: we may overpay a
        little, never stall.
        """
        self._credit.pop((orchestrator, session), None)
        params = self._params.pop(orchestrator, None)
        if params is not None:
            self.sender.forget(params.recipient_rand_hash)

    def settle(
        self, orchestrator: str, session: str, pixels: int, reserved: Fraction = Fraction(0)
    ) -> None:
        """Replaces the ``reserved`` fee with what the orchestrator billed for ``pixels``."""
        params = self._params.get(orchestrator)
        if params is None:  # forgotten after a refusal, with the credit: nothing to settle
            return
        key = (orchestrator, session)
        self._credit[key] = self._credit.get(key, Fraction(0)) + reserved - params.price * pixels

    def release(self, orchestrator: str, session: str, reserved: Fraction) -> None:
        """Returns a fee reserved for a job the orchestrator did not do (nor bill)."""
        key = (orchestrator, session)
        if key in self._credit:
            self._credit[key] += reserved

    def status(self) -> SenderStatus:
        sizes = sorted(self._payment_bytes)
        return SenderStatus(
            address=self.address,
            tickets_sent=self._tickets_sent,
            ev_sent=Wei(self._ev_sent),
            credit={f"{o}/{s}": Wei(c) for (o, s), c in self._credit.items()},
            payment_bytes_median=sizes[len(sizes) // 2] if sizes else 0,
            max_price_per_pixel=None
            if self.max_price is None
            else PixelPrice.from_fraction(self.max_price),
        )
