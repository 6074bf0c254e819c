"""The chain client: lpstream's one way to read and write the protocol contracts.

How this works
--------------
``ChainClient`` is a :class:`~payments.chain.reads.ChainReader` (the Controller's contracts,
found once, and every read) with a :class:`~payments.chain.sending.TransactionSender` for the
node's key (sign, count nonces, estimate, send, wait for the receipt). Each write here names a
contract function and its arguments; a write returns only once its receipt is in.

Every call blocks (web3 is synchronous). The node runs them in ``trio.to_thread.run_sync``
under the one ``trio.CapacityLimiter`` it keeps for the chain; the client itself is safe to call
from several threads (sending is serialised by a lock, so nonces stay in order).

Errors: whatever web3, eth-tester, eth-abi or the HTTP transport raise is mapped to
``ChainError`` in one place (:func:`payments.chain.errors.mapped_errors`); a revert becomes
``ChainError`` with the contract's reason string in ``reason``. ``redeem`` turns the two
reasons that retrying cannot fix into the redeemer's ``TicketUsedError`` and
``NoBlockHashError``.
"""

from __future__ import annotations

from typing import Any

from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from payments.keys import NodeKey
from payments.redeemer import NoBlockHashError, TicketUsedError
from payments.store import StoredTicket

from .dev_accounts import refuse_dev_key_off_dev_chain
from .errors import ChainError, checksum_address, hex_string, mapped_errors
from .reads import ChainReader, ChainSnapshot, UnbondingLock
from .sending import DEFAULT_TX_TIMEOUT, Progress, TransactionSender

__all__ = [
    "DEFAULT_TX_TIMEOUT",
    "REDEEM_GAS",
    "ChainClient",
    "ChainError",
    "ChainSnapshot",
    "Progress",
    "UnbondingLock",
]

REDEEM_GAS = 350_000
"""Gas budgeted for one redeemWinningTicket, as go-livepeer budgets on L1 (``redeemGasL1``;
it uses 1,200,000 on Arbitrum). The orchestrator's txCost is this * the gas price."""

DEFAULT_RPC_TIMEOUT = 20.0
"""Seconds one HTTP JSON-RPC request may take (go-livepeer's ``ethRPCTimeout``)."""

_TICKET_USED = "ticket is used"
_NO_BLOCK_HASH = "ticket creationRound does not have a block hash"
_ROUND_ALREADY_INITIALIZED = "round already initialized"


class ChainClient(ChainReader):
    """Reads and writes lpstream's (or Livepeer's) protocol contracts. Every method blocks.

    Args:
        w3: the connection.
        controller: the Controller's address; the other contracts are looked up through it.
        key: the key that signs transactions; None for a read-only client.
        tx_timeout: seconds to wait for a receipt.
        redeem_gas: gas budgeted per ticket redemption (``redeem_tx_cost``).

    Raises:
        ChainError: the chain cannot be reached, or no Controller (or a Controller without the
            contracts) is at ``controller``.
        DevKeyError: ``key`` is one of the public dev accounts' and the chain is not the dev
            chain (``payments.chain.dev_accounts``).
    """

    def __init__(
        self,
        w3: Web3,
        *,
        controller: str,
        key: NodeKey | None = None,
        tx_timeout: float = DEFAULT_TX_TIMEOUT,
        redeem_gas: int = REDEEM_GAS,
    ) -> None:
        super().__init__(w3, controller=controller)
        if key is not None:
            refuse_dev_key_off_dev_chain(key, self.chain_id)
        self.redeem_gas = redeem_gas
        """Gas budgeted per ticket redemption."""
        self._sender = TransactionSender(w3, chain_id=self.chain_id, key=key, tx_timeout=tx_timeout)

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        controller: str,
        key: NodeKey | None = None,
        timeout: float = DEFAULT_RPC_TIMEOUT,
        tx_timeout: float = DEFAULT_TX_TIMEOUT,
        redeem_gas: int = REDEEM_GAS,
    ) -> ChainClient:
        """A client for the JSON-RPC endpoint at ``url`` (``http://`` or ``https://``).

        Raises:
            ChainError: a bad URL, an unreachable node, or no protocol at ``controller``.
        """
        if not url.startswith(("http://", "https://")):
            raise ChainError(f"eth URL {url!r} must start with http:// or https://")
        w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}))
        return cls(w3, controller=controller, key=key, tx_timeout=tx_timeout, redeem_gas=redeem_gas)

    @property
    def address(self) -> str | None:
        """The signing key's address, or None for a read-only client."""
        key = self._sender.key
        return None if key is None else key.address

    def redeem_tx_cost(self) -> int:
        """What redeeming one ticket costs at today's gas price: ``redeem_gas`` * gas price.

        The orchestrator sets faceValue = this * 100 (PAYMENTS.md).
        """
        return self.redeem_gas * self.gas_price()

    # Writes

    def redeem(self, ticket: StoredTicket) -> str:
        """Redeems a winning ticket (``redeemWinningTicket``) and waits for it to be mined.

        Returns:
            The transaction hash.

        Raises:
            TicketUsedError: the ticket was already redeemed.
            NoBlockHashError: its creation round has no block hash.
            ChainError: anything else (worth retrying later).
        """
        t = ticket.ticket
        ticket_tuple = (
            checksum_address(t.recipient),
            checksum_address(t.sender),
            t.face_value,
            t.win_prob,
            t.sender_nonce,
            bytes(t.recipient_rand_hash),
            bytes(t.aux_data),
        )
        try:
            return self._write(
                self._broker,
                "redeemWinningTicket",
                [ticket_tuple, bytes(ticket.signature), ticket.recipient_rand],
                action=f"redeeming ticket {hex_string(ticket.ticket_hash)}",
            )
        except ChainError as exc:
            if exc.reason == _TICKET_USED:
                raise TicketUsedError(str(exc)) from None
            if exc.reason == _NO_BLOCK_HASH:
                raise NoBlockHashError(str(exc)) from None
            raise

    def fund_deposit_and_reserve(
        self, deposit: int, reserve: int, *, progress: Progress | None = None
    ) -> str:
        """Adds ``deposit`` and ``reserve`` wei to the key's deposit and reserve."""
        return self._write(
            self._broker,
            "fundDepositAndReserve",
            [deposit, reserve],
            value=deposit + reserve,
            progress=progress,
        )

    def fund_deposit(self, amount: int, *, progress: Progress | None = None) -> str:
        """Adds ``amount`` wei to the key's deposit."""
        return self._write(self._broker, "fundDeposit", value=amount, progress=progress)

    def fund_reserve(self, amount: int, *, progress: Progress | None = None) -> str:
        """Adds ``amount`` wei to the key's reserve."""
        return self._write(self._broker, "fundReserve", value=amount, progress=progress)

    def unlock(self, *, progress: Progress | None = None) -> str:
        """Starts the unlock period of the key's deposit and reserve."""
        return self._write(self._broker, "unlock", progress=progress)

    def cancel_unlock(self, *, progress: Progress | None = None) -> str:
        """Cancels a pending unlock."""
        return self._write(self._broker, "cancelUnlock", progress=progress)

    def withdraw(self, *, progress: Progress | None = None) -> str:
        """Withdraws the deposit and reserve once the unlock period is over."""
        return self._write(self._broker, "withdraw", progress=progress)

    def bond(self, amount: int, to: str | None = None, *, progress: Progress | None = None) -> str:
        """Bonds ``amount`` wei (sent with the call) and delegates the key's bond to ``to``.

        ``to`` defaults to the key's own address (self-bonding, as an orchestrator does).
        """
        delegate = checksum_address(to) if to is not None else self._sender.require_key().address
        return self._write(
            self._bonding, "bond", [amount, delegate], value=amount, progress=progress
        )

    def unbond(self, amount: int, *, progress: Progress | None = None) -> UnbondingLock:
        """Moves ``amount`` wei of the key's bond into a new unbonding lock (``unbond``).

        Returns:
            The lock it made, as the transaction's ``Unbond`` event tells it.
        """
        tx_hash = self._write(self._bonding, "unbond", [amount], progress=progress)
        with mapped_errors(f"reading the Unbond event of {tx_hash}"):
            receipt = self._w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            events = self._bonding.events.Unbond().process_receipt(receipt, errors=DISCARD)
        if len(events) != 1:
            raise ChainError(f"transaction {tx_hash} logged {len(events)} Unbond events, not 1")
        args = events[0]["args"]
        return UnbondingLock(
            id=int(args["unbondingLockId"]),
            amount=int(args["amount"]),
            withdraw_round=int(args["withdrawRound"]),
        )

    def rebond(self, lock_id: int, *, progress: Progress | None = None) -> str:
        """Cancels unbonding lock ``lock_id`` and bonds its amount back to the key's delegate
        (``rebond``; the key must still have a bond)."""
        return self._write(self._bonding, "rebond", [lock_id], progress=progress)

    def rebond_from_unbonded(
        self, to: str, lock_id: int, *, progress: Progress | None = None
    ) -> str:
        """Cancels unbonding lock ``lock_id`` of a key with nothing bonded and bonds its amount
        to ``to`` (``rebondFromUnbonded``)."""
        return self._write(
            self._bonding,
            "rebondFromUnbonded",
            [checksum_address(to), lock_id],
            progress=progress,
        )

    def withdraw_stake(self, lock_id: int, *, progress: Progress | None = None) -> str:
        """Pays unbonding lock ``lock_id`` out to the key once its withdraw round has come
        (``withdrawStake``)."""
        return self._write(self._bonding, "withdrawStake", [lock_id], progress=progress)

    def register(self, reward_cut: int, fee_share: int, *, progress: Progress | None = None) -> str:
        """Registers the key as an orchestrator (``transcoder``), or updates its cuts.

        Args:
            reward_cut: parts per million of rewards kept (0..1,000,000).
            fee_share: parts per million of fees shared with delegators (0..1,000,000).
        """
        return self._write(
            self._bonding,
            "transcoder",
            [reward_cut, fee_share],
            action="register (transcoder)",
            progress=progress,
        )

    def set_service_uri(self, uri: str, *, progress: Progress | None = None) -> str:
        """Publishes the URI gateways reach the key's orchestrator at."""
        return self._write(self._registry, "setServiceURI", [uri], progress=progress)

    def initialize_round(self, *, progress: Progress | None = None) -> str | None:
        """Initializes the current round; None (no transaction) if it already is."""
        with mapped_errors("reading currentRoundInitialized"):
            if bool(self._rounds.functions.currentRoundInitialized().call()):
                return None
        try:
            return self._write(self._rounds, "initializeRound", progress=progress)
        except ChainError as exc:
            if exc.reason == _ROUND_ALREADY_INITIALIZED:  # someone else was first
                return None
            raise

    def withdraw_fees(self, *, progress: Progress | None = None) -> str:
        """Withdraws all of the key's pending fees to its own address."""
        address = self._sender.require_key().address
        amount = self.pending_fees(address)
        return self._write(self._bonding, "withdrawFees", [address, amount], progress=progress)

    def wait_for_receipt(
        self, tx_hash: str, *, timeout: float | None = None, progress: Progress | None = None
    ) -> TxReceipt:
        """Waits until ``tx_hash`` (sent by anyone) is mined; one that reverted raises
        ``ChainError``, with the contract's reason when the chain gives it."""
        return self._sender.wait_for_receipt(tx_hash, timeout=timeout, progress=progress)

    def _write(
        self,
        contract: Contract,
        function: str,
        args: list[Any] | None = None,
        *,
        value: int = 0,
        action: str | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Sends ``contract.function(*args)`` and waits for it; ``action`` (the function's
        name unless given) is how errors and progress name the write."""
        return self._sender.transact(
            contract,
            function,
            [] if args is None else args,
            action=function if action is None else action,
            value=value,
            progress=progress,
        )
