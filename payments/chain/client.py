"""The chain client: lpstream's one way to read and write the protocol contracts.

How this works
--------------
``ChainClient`` wraps a ``Web3`` (an HTTP JSON-RPC endpoint, or the in-process eth-tester
provider of the dev chain) and finds the contracts the way go-livepeer does: it asks the
Controller for ``getContract(keccak256(name))`` of each one, once, when it is made.

Every call blocks (web3 is synchronous). The node runs them in ``trio.to_thread.run_sync``
under the one ``trio.CapacityLimiter`` it keeps for the chain; the client itself is safe to call
from several threads (sending is serialised by a lock, so nonces stay in order).

Transactions are signed here, with the node's key (eth-account), and sent raw, so any node
works, including ones that hold no accounts. The nonce is counted locally from the chain's
"pending" count, and re-read after any failed send. Each write is estimated first (a revert
surfaces there, with its reason, before anything is spent), sent as a legacy transaction at the
node's ``eth_gasPrice``, and waited for; a write returns only once its receipt is in.

Errors: whatever web3, eth-tester, eth-abi or the HTTP transport raise is mapped to
``ChainError`` in one place (``_mapped_errors``); a revert becomes ``ChainError`` with the
contract's reason string in ``reason``. ``redeem`` turns the two reasons that retrying cannot
fix into the redeemer's ``TicketUsedError`` and ``NoBlockHashError``.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import attrs
from eth_abi.exceptions import DecodingError, EncodingError
from eth_account import Account
from eth_utils.exceptions import ValidationError as EthUtilsValidationError
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import TxParams, TxReceipt

from lpstream.errors import LpstreamError
from payments.keys import NodeKey
from payments.pm import SenderInfo
from payments.redeemer import NoBlockHashError, TicketUsedError
from payments.store import StoredTicket

from .contracts import contract_at, contract_id

__all__ = [
    "DEFAULT_TX_TIMEOUT",
    "REDEEM_GAS",
    "ChainClient",
    "ChainError",
    "ChainSnapshot",
    "Progress",
]

REDEEM_GAS = 350_000
"""Gas budgeted for one redeemWinningTicket, as go-livepeer budgets on L1 (``redeemGasL1``;
it uses 1,200,000 on Arbitrum). The orchestrator's txCost is this * the gas price."""

DEFAULT_TX_TIMEOUT = 300.0
"""Seconds to wait for a transaction's receipt (go-livepeer's ``txTimeout`` is 5 minutes)."""

DEFAULT_RPC_TIMEOUT = 20.0
"""Seconds one HTTP JSON-RPC request may take (go-livepeer's ``ethRPCTimeout``)."""

_GAS_MARGIN_PERCENT = 25
"""Gas limit = estimate + this percent: state may move between estimate and inclusion."""

_MAX_POOL_SIZE = 100
"""The BondingManager's largest pool: bounds the walk over the active set."""

_REVERT_PREFIX = re.compile(r"^\s*execution reverted:?\s*")
_TICKET_USED = "ticket is used"
_NO_BLOCK_HASH = "ticket creationRound does not have a block hash"
_ROUND_ALREADY_INITIALIZED = "round already initialized"

Progress = Callable[[str], None]
"""Called with one line at each step of a write ("sent 0x…, waiting for receipt…")."""

# eth-tester ships no type information; its exceptions are fetched by name. It is a dependency
# of lpstream (the dev chain), so it is always importable.
_eth_tester_errors = importlib.import_module("eth_tester.exceptions")
_TransactionFailed: type[Exception] = _eth_tester_errors.TransactionFailed
_ETH_TESTER_ERRORS: tuple[type[Exception], ...] = (
    _TransactionFailed,
    _eth_tester_errors.ValidationError,
    _eth_tester_errors.BlockNotFound,
    _eth_tester_errors.TransactionNotFound,
    _eth_tester_errors.FilterNotFound,
    _eth_tester_errors.AccountLocked,
)
_OTHER_ERRORS: tuple[type[Exception], ...] = (
    Web3Exception,
    *_ETH_TESTER_ERRORS,
    EthUtilsValidationError,
    DecodingError,
    EncodingError,
    ValueError,
)
"""What else web3, eth-tester, eth-abi and eth-account raise (after reverts and OSError)."""


class ChainError(LpstreamError):
    """A chain read or transaction failed.

    Attributes:
        reason: the contract's revert reason when the EVM reverted ("" for a revert without
            one); None when the failure was not a revert (transport, timeout, bad answer).
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


@attrs.frozen(kw_only=True)
class ChainSnapshot:
    """The chain's state that ticket parameters and redemption depend on, read at one block."""

    latest_block: int
    """The chain head the rest was read at."""
    current_round: int
    """The RoundsManager's current round."""
    current_round_initialized: bool
    """Whether the current round has been initialized (tickets redeem only then)."""
    last_initialized_round: int
    """The last round initialized: tickets are created in it."""
    round_block_hash: bytes
    """The 32-byte block hash stored for ``last_initialized_round`` (zero if none)."""
    gas_price: int
    """The node's gas price, wei per gas."""
    transcoder_pool_size: int
    """Orchestrators in the current round's active set."""
    round_length: int
    """Blocks per round."""


@contextmanager
def _mapped_errors(action: str) -> Iterator[None]:
    """The one place third-party exceptions become ``ChainError`` (reverts keep their reason)."""
    try:
        yield
    except ChainError:
        raise
    except (ContractLogicError, _TransactionFailed) as exc:
        reason = _revert_reason(exc)
        message = f"{action} reverted: {reason}" if reason else f"{action} reverted"
        raise ChainError(message, reason=reason) from None
    except TimeExhausted as exc:
        raise ChainError(f"{action}: {exc}") from None
    except OSError as exc:  # requests' errors are OSErrors too
        raise ChainError(f"{action}: cannot reach the chain: {_transport_reason(exc)}") from None
    except _OTHER_ERRORS as exc:
        raise ChainError(f"{action}: {_short(exc)}") from None


def _revert_reason(exc: Exception) -> str:
    """The reason string of a revert ("execution reverted: X" from web3 and eth-tester alike)."""
    message = str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else str(exc)
    reason = _REVERT_PREFIX.sub("", message, count=1).strip()
    # eth-tester shows a revert without a reason as the empty bytes' repr.
    return "" if reason in ("b''", "execution reverted") else reason


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _transport_reason(exc: OSError) -> str:
    """The gist of a transport error ("Connection refused"), not urllib3's whole story."""
    if exc.strerror:
        return exc.strerror
    match = _ERRNO_TEXT.search(str(exc))
    if match is not None:
        return match.group(1).strip()
    if "timed out" in str(exc).lower():
        return "timed out"
    return _short(exc)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _hex(data: bytes) -> str:
    return "0x" + bytes(data).hex()


class ChainClient:
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
        self._w3 = w3
        self._key = key
        self._tx_timeout = tx_timeout
        self.redeem_gas = redeem_gas
        """Gas budgeted per ticket redemption."""
        self._send_lock = threading.Lock()
        self._nonce: int | None = None
        endpoint = getattr(w3.provider, "endpoint_uri", None)
        with _mapped_errors(f"connecting to {endpoint}" if endpoint else "connecting"):
            if not Web3.is_address(controller):
                raise ChainError(f"controller {controller!r} is not an address")
            self.controller = Web3.to_checksum_address(controller)
            """The Controller's checksummed address."""
            if not bytes(w3.eth.get_code(self.controller)):
                raise ChainError(
                    f"no contract at controller address {self.controller} on this chain"
                )
            self._chain_id = int(w3.eth.chain_id)
            ctrl = contract_at(w3, "Controller", self.controller)
            found: dict[str, Contract] = {}
            for name in ("RoundsManager", "BondingManager", "TicketBroker", "ServiceRegistry"):
                address = ctrl.functions.getContract(contract_id(name)).call()
                if int(address, 16) == 0:
                    raise ChainError(f"the controller at {self.controller} names no {name}")
                found[name] = contract_at(w3, name, address)
        self._rounds = found["RoundsManager"]
        self._bonding = found["BondingManager"]
        self._broker = found["TicketBroker"]
        self._registry = found["ServiceRegistry"]

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

    # Identity and addresses

    @property
    def w3(self) -> Web3:
        """The underlying connection."""
        return self._w3

    @property
    def address(self) -> str | None:
        """The signing key's address, or None for a read-only client."""
        return None if self._key is None else self._key.address

    @property
    def chain_id(self) -> int:
        """The chain's id (EIP-155)."""
        return self._chain_id

    def contract_address(self, name: str) -> str:
        """The address the Controller gave for ``name`` (e.g. ``"TicketBroker"``)."""
        contracts = {
            "RoundsManager": self._rounds,
            "BondingManager": self._bonding,
            "TicketBroker": self._broker,
            "ServiceRegistry": self._registry,
        }
        return str(contracts[name].address)

    # Reads

    def latest_block(self) -> int:
        """The chain head's block number."""
        with _mapped_errors("reading the block number"):
            return int(self._w3.eth.block_number)

    def current_round(self) -> int:
        """The RoundsManager's current round."""
        with _mapped_errors("reading the current round"):
            return int(self._rounds.functions.currentRound().call())

    def snapshot(self) -> ChainSnapshot:
        """Rounds, gas price and pool size, all read at the same block."""
        with _mapped_errors("reading the chain state"):
            block = int(self._w3.eth.block_number)
            rounds = self._rounds.functions
            last = int(rounds.lastInitializedRound().call(block_identifier=block))
            return ChainSnapshot(
                latest_block=block,
                current_round=int(rounds.currentRound().call(block_identifier=block)),
                current_round_initialized=bool(
                    rounds.currentRoundInitialized().call(block_identifier=block)
                ),
                last_initialized_round=last,
                round_block_hash=bytes(rounds.blockHashForRound(last).call(block_identifier=block)),
                gas_price=int(self._w3.eth.gas_price),
                transcoder_pool_size=int(
                    self._bonding.functions.getTranscoderPoolSize().call(block_identifier=block)
                ),
                round_length=int(rounds.roundLength().call(block_identifier=block)),
            )

    def gas_price(self) -> int:
        """The node's gas price, wei per gas."""
        with _mapped_errors("reading the gas price"):
            return int(self._w3.eth.gas_price)

    def redeem_tx_cost(self) -> int:
        """What redeeming one ticket costs at today's gas price: ``redeem_gas`` * gas price.

        The orchestrator sets faceValue = this * 100 (PAYMENTS.md).
        """
        return self.redeem_gas * self.gas_price()

    def sender_info(self, address: str) -> SenderInfo:
        """A sender's deposit, unlock state and reserve, from the TicketBroker."""
        with _mapped_errors(f"reading the sender info of {address}"):
            sender, reserve = self._broker.functions.getSenderInfo(_checksum(address)).call()
            return SenderInfo(
                deposit=int(sender[0]),
                withdraw_round=int(sender[1]),
                reserve=int(reserve[0]),
                reserve_claimed_in_current_round=int(reserve[1]),
            )

    def claimed_reserve(self, reserve_holder: str, claimant: str) -> int:
        """Wei ``claimant`` has claimed from ``reserve_holder``'s reserve this round."""
        with _mapped_errors("reading the claimed reserve"):
            return int(
                self._broker.functions.claimedReserve(
                    _checksum(reserve_holder), _checksum(claimant)
                ).call()
            )

    def used_ticket(self, ticket_hash: bytes) -> bool:
        """Whether the TicketBroker has redeemed the ticket with this hash."""
        with _mapped_errors("reading usedTickets"):
            return bool(self._broker.functions.usedTickets(bytes(ticket_hash)).call())

    def is_active_transcoder(self, address: str) -> bool:
        """Whether ``address`` is in the current round's active set."""
        with _mapped_errors("reading isActiveTranscoder"):
            return bool(self._bonding.functions.isActiveTranscoder(_checksum(address)).call())

    def is_registered_transcoder(self, address: str) -> bool:
        """Whether ``address`` is registered as an orchestrator (active or not)."""
        with _mapped_errors("reading isRegisteredTranscoder"):
            return bool(self._bonding.functions.isRegisteredTranscoder(_checksum(address)).call())

    def transcoder_stake(self, address: str) -> int:
        """Everything bonded to ``address``, its own bond included (wei)."""
        with _mapped_errors("reading transcoderTotalStake"):
            return int(self._bonding.functions.transcoderTotalStake(_checksum(address)).call())

    def bonded_amount(self, address: str) -> int:
        """``address``'s own bond, wherever it is delegated (wei)."""
        with _mapped_errors("reading getDelegator"):
            return int(self._bonding.functions.getDelegator(_checksum(address)).call()[0])

    def pending_fees(self, address: str) -> int:
        """Fees credited to ``address`` in the BondingManager and not yet withdrawn (wei)."""
        with _mapped_errors("reading pendingFees"):
            round_ = int(self._rounds.functions.currentRound().call())
            return int(self._bonding.functions.pendingFees(_checksum(address), round_).call())

    def service_uri(self, address: str) -> str:
        """The URI ``address`` published in the ServiceRegistry ("" if none)."""
        with _mapped_errors("reading the service URI"):
            return str(self._registry.functions.getServiceURI(_checksum(address)).call())

    def active_transcoders(self) -> list[str]:
        """The current round's active orchestrators, most stake first."""
        with _mapped_errors("reading the active set"):
            block = int(self._w3.eth.block_number)
            functions = self._bonding.functions
            members: list[str] = []
            member = str(functions.getFirstTranscoderInPool().call(block_identifier=block))
            while int(member, 16) != 0 and len(members) < _MAX_POOL_SIZE:
                members.append(Web3.to_checksum_address(member))
                member = str(functions.getNextTranscoderInPool(member).call(block_identifier=block))
            return members

    def balance(self, address: str) -> int:
        """``address``'s ETH balance (wei)."""
        with _mapped_errors(f"reading the balance of {address}"):
            return int(self._w3.eth.get_balance(_checksum(address)))

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
            _checksum(t.recipient),
            _checksum(t.sender),
            t.face_value,
            t.win_prob,
            t.sender_nonce,
            bytes(t.recipient_rand_hash),
            bytes(t.aux_data),
        )
        try:
            return self._transact(
                self._broker,
                "redeemWinningTicket",
                [ticket_tuple, bytes(ticket.signature), ticket.recipient_rand],
                action=f"redeeming ticket {_hex(ticket.ticket_hash)}",
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
        return self._transact(
            self._broker,
            "fundDepositAndReserve",
            [deposit, reserve],
            value=deposit + reserve,
            action="fundDepositAndReserve",
            progress=progress,
        )

    def fund_deposit(self, amount: int, *, progress: Progress | None = None) -> str:
        """Adds ``amount`` wei to the key's deposit."""
        return self._transact(
            self._broker,
            "fundDeposit",
            [],
            value=amount,
            action="fundDeposit",
            progress=progress,
        )

    def fund_reserve(self, amount: int, *, progress: Progress | None = None) -> str:
        """Adds ``amount`` wei to the key's reserve."""
        return self._transact(
            self._broker,
            "fundReserve",
            [],
            value=amount,
            action="fundReserve",
            progress=progress,
        )

    def unlock(self, *, progress: Progress | None = None) -> str:
        """Starts the unlock period of the key's deposit and reserve."""
        return self._transact(self._broker, "unlock", [], action="unlock", progress=progress)

    def cancel_unlock(self, *, progress: Progress | None = None) -> str:
        """Cancels a pending unlock."""
        return self._transact(
            self._broker, "cancelUnlock", [], action="cancelUnlock", progress=progress
        )

    def withdraw(self, *, progress: Progress | None = None) -> str:
        """Withdraws the deposit and reserve once the unlock period is over."""
        return self._transact(self._broker, "withdraw", [], action="withdraw", progress=progress)

    def bond(self, amount: int, to: str | None = None, *, progress: Progress | None = None) -> str:
        """Bonds ``amount`` wei (sent with the call) and delegates the key's bond to ``to``.

        ``to`` defaults to the key's own address (self-bonding, as an orchestrator does).
        """
        delegate = _checksum(to) if to is not None else self._require_key().address
        return self._transact(
            self._bonding,
            "bond",
            [amount, delegate],
            value=amount,
            action="bond",
            progress=progress,
        )

    def register(self, reward_cut: int, fee_share: int, *, progress: Progress | None = None) -> str:
        """Registers the key as an orchestrator (``transcoder``), or updates its cuts.

        Args:
            reward_cut: parts per million of rewards kept (0..1,000,000).
            fee_share: parts per million of fees shared with delegators (0..1,000,000).
        """
        return self._transact(
            self._bonding,
            "transcoder",
            [reward_cut, fee_share],
            action="register (transcoder)",
            progress=progress,
        )

    def set_service_uri(self, uri: str, *, progress: Progress | None = None) -> str:
        """Publishes the URI gateways reach the key's orchestrator at."""
        return self._transact(
            self._registry,
            "setServiceURI",
            [uri],
            action="setServiceURI",
            progress=progress,
        )

    def initialize_round(self, *, progress: Progress | None = None) -> str | None:
        """Initializes the current round; None (no transaction) if it already is."""
        with _mapped_errors("reading currentRoundInitialized"):
            if bool(self._rounds.functions.currentRoundInitialized().call()):
                return None
        try:
            return self._transact(
                self._rounds,
                "initializeRound",
                [],
                action="initializeRound",
                progress=progress,
            )
        except ChainError as exc:
            if exc.reason == _ROUND_ALREADY_INITIALIZED:  # someone else was first
                return None
            raise

    def withdraw_fees(self, *, progress: Progress | None = None) -> str:
        """Withdraws all of the key's pending fees to its own address."""
        address = self._require_key().address
        amount = self.pending_fees(address)
        return self._transact(
            self._bonding,
            "withdrawFees",
            [address, amount],
            action="withdrawFees",
            progress=progress,
        )

    def wait_for_receipt(
        self,
        tx_hash: str,
        *,
        timeout: float | None = None,
        progress: Progress | None = None,
    ) -> TxReceipt:
        """Waits until ``tx_hash`` is mined; a reverted transaction raises.

        Raises:
            ChainError: the wait timed out, or the transaction reverted (with its reason when
                the chain gives it).
        """
        with _mapped_errors(f"waiting for {tx_hash}"):
            receipt = self._w3.eth.wait_for_transaction_receipt(
                HexBytes(tx_hash),
                timeout=self._tx_timeout if timeout is None else timeout,
                poll_latency=0.2,
            )
        block = int(receipt["blockNumber"])
        if int(receipt["status"]) != 1:
            raise self._failure_of(tx_hash, block)
        if progress is not None:
            progress(f"mined in block {block}")
        return receipt

    # Sending

    def _require_key(self) -> NodeKey:
        if self._key is None:
            raise ChainError("this chain client has no key: it cannot send transactions")
        return self._key

    def _transact(
        self,
        contract: Contract,
        function: str,
        args: list[Any],
        *,
        action: str,
        value: int = 0,
        progress: Progress | None = None,
    ) -> str:
        """Estimates, signs and sends ``contract.function(*args)``, then waits for its receipt.

        Returns:
            The transaction hash.
        """
        key = self._require_key()
        with _mapped_errors(action):
            data = contract.encode_abi(function, args=args)
        tx: dict[str, Any] = {
            "from": key.address,
            "to": contract.address,
            "data": data,
            "value": value,
        }
        with self._send_lock, _mapped_errors(action):
            estimate = int(self._w3.eth.estimate_gas(cast(TxParams, tx)))
            tx["gas"] = estimate + estimate * _GAS_MARGIN_PERCENT // 100
            tx["gasPrice"] = int(self._w3.eth.gas_price)
            tx["chainId"] = self._chain_id
            if self._nonce is None:
                self._nonce = int(
                    self._w3.eth.get_transaction_count(_checksum(key.address), "pending")
                )
            tx["nonce"] = self._nonce
            signed = Account.sign_transaction(tx, key.private_key)
            try:
                tx_hash = _hex(self._w3.eth.send_raw_transaction(signed.raw_transaction))
            except BaseException:
                self._nonce = None  # the chain decides what the next nonce is
                raise
            self._nonce += 1
        if progress is not None:
            progress(f"sent {tx_hash}, waiting for receipt…")
        try:
            self.wait_for_receipt(tx_hash, progress=progress)
        except ChainError as exc:
            raise ChainError(f"{action}: {exc}", reason=exc.reason) from None
        return tx_hash

    def _failure_of(self, tx_hash: str, block: int) -> ChainError:
        """Why a mined transaction failed: replays it at its block for the revert reason."""
        with _mapped_errors(f"reading transaction {tx_hash}"):
            sent = self._w3.eth.get_transaction(HexBytes(tx_hash))
        replay: TxParams = {
            "from": sent["from"],
            "to": sent["to"],
            "data": sent["input"],
            "value": sent["value"],
            "gas": sent["gas"],
        }
        try:
            with _mapped_errors(f"transaction {tx_hash}"):
                self._w3.eth.call(replay, block_identifier=block - 1)
        except ChainError as exc:
            if exc.reason is not None:
                return ChainError(
                    f"transaction {tx_hash} reverted in block {block}"
                    + (f": {exc.reason}" if exc.reason else ""),
                    reason=exc.reason,
                )
        return ChainError(f"transaction {tx_hash} failed in block {block} (out of gas?)")


def _checksum(address: str) -> Any:
    """``address`` checksummed for web3; a bad one is a ``ChainError``."""
    if not Web3.is_address(address):
        raise ChainError(f"{address!r} is not an address")
    return Web3.to_checksum_address(address)
