"""Live AI sessions at the orchestrator: their control streams, parameter changes routed to
the session's worker, and payment by time.

How this works:

* A gateway opens one control stream per live session: LIVE_OPEN (stream, session, pipeline),
  then LIVE_PAYMENT and LIVE_UPDATE in any order. Each LIVE_UPDATE is answered with
  LIVE_UPDATED (the frame it applied at) or a LIVE_EVENT ``update-refused``; LIVE_EVENTs also
  report ``paid``, ``billed`` (every second), ``stopped`` and, when the gateway closes its
  side, ``settled``. One writer task owns the stream's send side.
* On chain, a session is paid by time. The clock starts with its first job; each started
  second costs the pipeline's price per second, debited from the (sender, session) balance
  that LIVE_PAYMENTs credit (each answered with a ``paid`` event: the gateway sends jobs from
  then on). A job is refused with 402 while its session has no positive balance (never
  paid, or run out); a pipeline priced at 0 needs no payment. A session not paid within
  ``payment_grace`` seconds of LIVE_OPEN, or whose balance falls below zero, is stopped: a
  ``stopped`` event says why, its jobs are refused from then on, and its stream ends.
* When the gateway ends the stream, the second in progress is billed whole and ``settled``
  carries the seconds and wei billed and the balance left: the gateway's own count must
  equal it to the wei.
* A session belongs to the connection whose LIVE_OPEN opened it (``LiveAccount.owner``): a
  job for it from any other connection is refused with 403, paid or not, so a session's ids
  are not a key to someone else's paid time. The ids are not published either: ``status``
  names sessions by a label that says nothing about them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from fractions import Fraction

import attrs
import trio

from lpstream.errors import LpstreamError, RemoteProtocolError, TransportError
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator_metrics import timed_payment_check
from lpstream.orchestrator.payments import PaymentReceiver
from lpstream.orchestrator.status import LiveSessionStatus, LiveStatus
from lpstream.quic import QuicStream
from lpstream.taskgroups import one_error
from lpstream.wire import (
    LiveEvent,
    LiveOpen,
    LivePayment,
    LiveUpdate,
    LiveUpdated,
    Message,
    MessageStream,
)
from payments.pm import Wei

__all__ = ["LiveAccount", "LiveAccounts", "serve_live_control"]

log = logging.getLogger("lpstream.orchestrator")

SessionKey = tuple[str, str]
UpdateRouter = Callable[[LiveUpdate], Awaitable[LiveUpdated]]
"""Sends a parameter change to the worker running the session (raises RemoteProtocolError)."""

CONTROL_IDLE_TIMEOUT = 60.0
"""A live session with neither a message on its control stream nor a job for this long is
closed (a stream left open by a gateway that forgot it)."""

PAYMENT_GRACE = 5.0
"""Seconds a paid orchestrator waits for a new session's first LIVE_PAYMENT."""


@attrs.define
class LiveAccount:
    """One live session's billing state."""

    stream_id: str
    session_id: str
    pipeline: str
    price_per_second: int
    """Wei per second (0: free)."""
    label: str = ""
    """How ``status`` names the session: it says nothing of the ids (``live-7``)."""
    owner: object = None
    """The connection that opened the session; its jobs must come on it (None: any)."""
    sender: str = ""
    """Who pays, known from the first payment."""
    started_at: float | None = None
    """When the first job of the session arrived (trio clock)."""
    last_job: float | None = None
    """When its latest job arrived."""
    seconds_billed: int = 0
    billed: Fraction = Fraction(0)
    stopped: str = ""
    """Why the session was stopped; empty while it runs."""
    changed: trio.Event = attrs.Factory(trio.Event)
    """Set when ``stopped`` is set."""

    @property
    def free(self) -> bool:
        """Priced at 0: nothing to pay, nothing billed."""
        return self.price_per_second == 0

    def stop(self, reason: str) -> None:
        if not self.stopped:
            self.stopped = reason
            self.changed.set()


@attrs.define
class LiveAccounts:
    """The live sessions with an open control stream, and their billing."""

    payments: PaymentReceiver | None
    """None off-chain: sessions are free and nothing is checked."""
    prices: dict[str, int] = attrs.Factory(dict)
    """Wei per second, by pipeline."""
    default_price: int = 0
    """Wei per second of a pipeline not in ``prices``."""
    metrics: Metrics | None = None
    """Where each payment check's time is observed (``payment_check_seconds``)."""
    _accounts: dict[SessionKey, LiveAccount] = attrs.Factory(dict)
    _stopped_total: int = 0
    _opened_total: int = 0

    def price_of(self, pipeline: str) -> int:
        if self.payments is None:
            return 0
        return self.prices.get(pipeline, self.default_price)

    def get(self, key: SessionKey) -> LiveAccount | None:
        return self._accounts.get(key)

    def balance(self, account: LiveAccount) -> Fraction:
        if self.payments is None or not account.sender:
            return Fraction(0)
        return self.payments.ledger.balance(account.sender, account.session_id)

    def check_job(
        self,
        stream_id: str,
        session_id: str,
        pipeline: str,
        now: float,
        connection: object = None,
    ) -> None:
        """Lets a live job that came on ``connection`` start, or raises; starts the session's
        clock.

        Raises:
            RemoteProtocolError: 403 when the session was opened on another connection, 402
                when it is unpaid or stopped, 409 when its control stream names another
                pipeline.
        """
        account = self._accounts.get((stream_id, session_id))
        if account is not None and account.owner is not None and account.owner is not connection:
            raise RemoteProtocolError(
                "this live session belongs to the connection that opened it: its jobs must "
                "come on that connection",
                code=403,
            )
        if account is not None:
            account.last_job = now
        if self.payments is None:
            return
        if account is None or not (account.sender or account.free):
            raise RemoteProtocolError(
                "payment required: a live session is paid on its control stream "
                "(LIVE_OPEN, then LIVE_PAYMENT)",
                code=402,
            )
        if account.pipeline != pipeline:
            raise RemoteProtocolError(
                f"session {session_id} was opened for {account.pipeline!r}, not {pipeline!r}",
                code=409,
            )
        if account.stopped:
            raise RemoteProtocolError(f"session stopped: {account.stopped}", code=402)
        if not account.free and self.balance(account) <= 0:
            raise RemoteProtocolError("insufficient balance: pay for more time", code=402)
        if account.started_at is None:
            account.started_at = now

    def bill(self, account: LiveAccount, now: float, *, final: bool = False) -> bool:
        """Debits the seconds started since the last bill; False if that left the balance
        below zero (the session must stop)."""
        if self.payments is None or account.started_at is None or not account.sender:
            return True
        elapsed = now - account.started_at
        due = math.ceil(elapsed) if final else math.floor(elapsed)
        seconds = due - account.seconds_billed
        if seconds > 0:
            amount = Fraction(account.price_per_second * seconds)
            self.payments.charge(account.sender, account.session_id, amount)
            account.seconds_billed = due
            account.billed += amount
        return self.balance(account) >= 0

    def figures(self, account: LiveAccount) -> dict[str, int | float | str | bool]:
        return {
            "seconds": account.seconds_billed,
            "billed_wei": str(account.billed),
            "balance_wei": str(self.balance(account)),
            "price_per_second": account.price_per_second,
        }

    def status(self) -> LiveStatus:
        """Sessions by label, with their figures; never their ids (they are not public)."""
        return LiveStatus(
            sessions={
                a.label: LiveSessionStatus(
                    pipeline=a.pipeline,
                    stopped=a.stopped or None,
                    seconds=a.seconds_billed,
                    billed=Wei(a.billed),
                    balance=Wei(self.balance(a)),
                    price_per_second=Wei(a.price_per_second),
                )
                for a in self._accounts.values()
            },
            stopped_total=self._stopped_total,
        )

    def _open(self, message: LiveOpen, owner: object = None) -> LiveAccount:
        key = (message.stream_id, message.session_id)
        if key in self._accounts:
            raise RemoteProtocolError(
                f"session {message.session_id} already has a control stream", code=409
            )
        self._opened_total += 1
        account = LiveAccount(
            stream_id=message.stream_id,
            session_id=message.session_id,
            pipeline=message.pipeline,
            price_per_second=self.price_of(message.pipeline),
            label=f"live-{self._opened_total}",
            owner=owner,
        )
        self._accounts[key] = account
        return account

    def _close(self, account: LiveAccount) -> None:
        self._accounts.pop((account.stream_id, account.session_id), None)
        if account.stopped:
            self._stopped_total += 1


async def serve_live_control(
    accounts: LiveAccounts,
    stream: QuicStream,
    channel: MessageStream,
    opened: LiveOpen,
    route_update: UpdateRouter,
    *,
    peer: str,
    owner: object = None,
    bill_interval: float = 1.0,
    payment_grace: float = PAYMENT_GRACE,
) -> None:
    """Serves one live session's control stream until either side ends it.

    ``owner`` is the connection the stream came on: the session's jobs must come on it too.
    """
    account = accounts._open(opened, owner)
    outbox_send, outbox = trio.open_memory_channel[Message](64)
    log.info(
        "live session %s/%s (%s, %s) opened by %s at %d wei/s",
        opened.stream_id,
        opened.session_id,
        account.label,
        opened.pipeline,
        peer,
        account.price_per_second,
    )

    def event(kind: str, message: str = "") -> LiveEvent:
        return LiveEvent(kind=kind, message=message, values=accounts.figures(account))

    async def write() -> None:
        async with outbox:
            async for message in outbox:
                await stream.send_all(channel.send(message))

    async def update(message: LiveUpdate) -> None:
        try:
            answer: Message = await route_update(message)
        except LpstreamError as exc:
            answer = LiveEvent(kind="update-refused", message=str(exc)[:1000])
        await outbox_send.send(answer)

    async def bill_every_second() -> None:
        if account.free:
            return  # nothing to bill; the session still ends as any other
        await trio.sleep(payment_grace)
        if not account.sender:
            account.stop(f"no payment: a live session is paid within {payment_grace:g} s")
            return
        while True:
            await trio.sleep(bill_interval)
            if account.started_at is None:
                continue
            if not accounts.bill(account, trio.current_time()):
                account.stop("insufficient balance: the session ran out of paid time")
            await outbox_send.send(event("billed"))

    async def handle(message: Message) -> None:
        if isinstance(message, LivePayment):
            if accounts.payments is None:
                return  # off-chain: nothing to credit
            with timed_payment_check(accounts.metrics):
                sender = await accounts.payments.receive(message.payment, opened.session_id)
            if account.sender and sender != account.sender:
                raise RemoteProtocolError("a live session is paid by one sender", code=402)
            account.sender = sender
            await outbox_send.send(event("paid"))
        elif isinstance(message, LiveUpdate):
            if (message.stream_id, message.session_id) != (opened.stream_id, opened.session_id):
                raise RemoteProtocolError("LIVE_UPDATE for another session", code=400)
            nursery.start_soon(update, message)
        else:
            raise RemoteProtocolError(
                f"unexpected {type(message).__name__} on a live control stream"
            )

    async def read() -> None:
        while True:
            # First what is in already: LIVE_OPEN's read may have brought a LIVE_PAYMENT too.
            while (message := channel.next_message()) is not None:
                await handle(message)
            with trio.move_on_after(CONTROL_IDLE_TIMEOUT) as idle:
                data = await stream.receive_some(64 * 1024)
            if idle.cancelled_caught:
                last = account.last_job
                if last is not None and trio.current_time() - last < CONTROL_IDLE_TIMEOUT:
                    continue  # a quiet app while its jobs flow: nothing to say
                raise RemoteProtocolError(
                    f"live session idle for {CONTROL_IDLE_TIMEOUT:g} s: no message, no job",
                    code=408,
                )
            if not data:
                channel.receive_eof()
                channel.next_message()  # a frame cut by the FIN is a 400
                return
            channel.receive_data(data)

    async def until_stopped() -> None:
        await account.changed.wait()
        await outbox_send.send(event("stopped", account.stopped))
        log.warning(
            "live session %s/%s stopped: %s", opened.stream_id, opened.session_id, account.stopped
        )
        nursery.cancel_scope.cancel()

    try:
        with one_error():
            async with trio.open_nursery() as writer:
                writer.start_soon(write)
                async with outbox_send:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(until_stopped)
                        if accounts.payments is not None:
                            nursery.start_soon(bill_every_second)
                        try:
                            await read()
                        except LpstreamError as exc:
                            if isinstance(exc, TransportError):
                                raise
                            # Logged once, by until_stopped, with the reason.
                            account.stop(str(exc))
                            await trio.sleep_forever()  # until_stopped reports it and ends this
                        nursery.cancel_scope.cancel()
                    accounts.bill(account, trio.current_time(), final=True)
                    await outbox_send.send(event("settled", account.stopped))
                # The writer sends what is queued, then ends.
        await stream.send_eof()
    except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.debug("live control stream from %s ended: %s", peer, exc)
    finally:
        accounts._close(account)
        log.info(
            "live session %s/%s closed: %d s billed, %s wei",
            opened.stream_id,
            opened.session_id,
            account.seconds_billed,
            account.billed,
        )
