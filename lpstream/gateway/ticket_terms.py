"""What paying an orchestrator needs at the moment of paying: the chain's latest block, this
gateway's deposit and reserve as of that block, and the orchestrator's ticket parameters,
fresh.

Ticket parameters come in an orchestrator's ORCH_INFO: the info check hands every answer to
``validator`` (the parameters are kept, or the orchestrator is refused), and a payment asks
again (``fresh``) when they are about to expire. The deposit and reserve are read from the
chain at most once per block.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs

from lpstream.chainwatch import ChainWatch
from lpstream.config import HostPort
from lpstream.errors import BusyError, LpstreamError
from lpstream.gateway.payments import PaymentSender
from lpstream.wire import OrchInfo
from payments.pm import SenderInfo

__all__ = ["TicketTerms"]

log = logging.getLogger("lpstream.gateway")


@attrs.define
class TicketTerms:
    """The chain's side of paying (see the module comment)."""

    sender: PaymentSender
    """Makes and counts the tickets."""
    watch: ChainWatch
    """The chain as last read."""
    _funds_at: tuple[int, SenderInfo] | None = None

    async def funds(self) -> SenderInfo:
        """This gateway's deposit and reserve, as of the latest block read."""
        snapshot = self.watch.snapshot
        block = snapshot.latest_block if snapshot else -1
        if self._funds_at is None or self._funds_at[0] != block:
            info: SenderInfo = await self.watch.call(
                self.watch.chain.sender_info, self.sender.address
            )
            self._funds_at = (block, info)
        return self._funds_at[1]

    async def validator(self) -> Callable[[HostPort, OrchInfo], None] | None:
        """What the info check runs on each answer: keeps its ticket parameters, or raises
        why they are unusable. None while the chain or our funds cannot be read (the
        parameters are checked again at payment)."""
        snapshot = self.watch.snapshot
        if snapshot is None:
            return None
        try:
            funds = await self.funds()
        except LpstreamError as exc:
            log.warning("cannot read this gateway's deposit and reserve: %s", exc)
            return None

        def validate(address: HostPort, info: OrchInfo) -> None:
            self._accept(str(address), info, snapshot.latest_block, funds)

        return validate

    async def fresh(
        self, orchestrator: str, ask_info: Callable[[], Awaitable[OrchInfo]]
    ) -> tuple[int, SenderInfo]:
        """Makes sure ``orchestrator``'s ticket parameters are fresh (asking its info with
        ``ask_info`` if not); returns the latest block and our funds, to pay with.

        Raises:
            BusyError: the chain has not been read yet, or the new parameters are unusable.
        """
        snapshot = self.watch.snapshot
        if snapshot is None:
            raise BusyError("the chain has not been read yet")
        funds = await self.funds()
        if self.sender.needs_params(orchestrator, snapshot.latest_block):
            self._accept(orchestrator, await ask_info(), snapshot.latest_block, funds)
        return snapshot.latest_block, funds

    def _accept(
        self, orchestrator: str, info: OrchInfo, latest_block: int, funds: SenderInfo
    ) -> None:
        self.sender.accept_params(
            orchestrator, info.ticket_params, latest_block=latest_block, sender_info=funds
        )
