"""Reading the protocol contracts: the chain client's read side.

How this works
--------------
:class:`ChainReader` wraps a ``Web3`` (an HTTP JSON-RPC endpoint, or the in-process eth-tester
provider of the dev chain) and finds the contracts the way go-livepeer does: it asks the
Controller for ``getContract(keccak256(name))`` of each one, once, when it is made. Every read
blocks, runs inside :func:`~payments.chain.errors.mapped_errors`, and returns plain ints,
bools, strings or frozen values; :meth:`ChainReader.snapshot` reads what ticket parameters
and redemption depend on at one block, so the figures agree with each other.
"""

from __future__ import annotations

import attrs
from web3 import Web3
from web3.contract import Contract

from payments.pm import SenderInfo

from .contracts import contract_at, contract_id
from .errors import ChainError, checksum_address, mapped_errors

__all__ = ["MAX_UNBONDING_LOCKS_LISTED", "ChainReader", "ChainSnapshot", "UnbondingLock"]

_MAX_POOL_SIZE = 100
"""The BondingManager's largest pool: bounds the walk over the active set."""

MAX_UNBONDING_LOCKS_LISTED = 100
"""How many of a delegator's latest lock ids ``unbonding_locks`` reads (one call each)."""

_CONTRACTS = ("RoundsManager", "BondingManager", "TicketBroker", "ServiceRegistry")
"""The contracts the Controller is asked for."""


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


@attrs.frozen(kw_only=True)
class UnbondingLock:
    """Stake on its way out of the BondingManager: made by ``unbond``, ended by
    ``withdrawStake`` (paid out) or ``rebond`` (bonded again)."""

    id: int
    """The lock's id, counted from 0 per delegator."""
    amount: int
    """Wei being unbonded."""
    withdraw_round: int
    """The first round ``withdrawStake`` pays it out in."""

    def withdrawable(self, current_round: int) -> bool:
        """Whether ``withdrawStake`` pays it out in ``current_round``."""
        return self.withdraw_round <= current_round


class ChainReader:
    """Reads lpstream's (or Livepeer's) protocol contracts. Every method blocks.

    Args:
        w3: the connection.
        controller: the Controller's address; the other contracts are looked up through it.

    Raises:
        ChainError: the chain cannot be reached, or no Controller (or a Controller without the
            contracts) is at ``controller``.
    """

    def __init__(self, w3: Web3, *, controller: str) -> None:
        self._w3 = w3
        endpoint = getattr(w3.provider, "endpoint_uri", None)
        with mapped_errors(f"connecting to {endpoint}" if endpoint else "connecting"):
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
            for name in _CONTRACTS:
                address = ctrl.functions.getContract(contract_id(name)).call()
                if int(address, 16) == 0:
                    raise ChainError(f"the controller at {self.controller} names no {name}")
                found[name] = contract_at(w3, name, address)
        self._rounds = found["RoundsManager"]
        self._bonding = found["BondingManager"]
        self._broker = found["TicketBroker"]
        self._registry = found["ServiceRegistry"]

    # Identity and addresses

    @property
    def w3(self) -> Web3:
        """The underlying connection."""
        return self._w3

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
        with mapped_errors("reading the block number"):
            return int(self._w3.eth.block_number)

    def current_round(self) -> int:
        """The RoundsManager's current round."""
        with mapped_errors("reading the current round"):
            return int(self._rounds.functions.currentRound().call())

    def snapshot(self) -> ChainSnapshot:
        """Rounds, gas price and pool size, all read at the same block."""
        with mapped_errors("reading the chain state"):
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
        with mapped_errors("reading the gas price"):
            return int(self._w3.eth.gas_price)

    def sender_info(self, address: str) -> SenderInfo:
        """A sender's deposit, unlock state and reserve, from the TicketBroker."""
        with mapped_errors(f"reading the sender info of {address}"):
            sender, reserve = self._broker.functions.getSenderInfo(checksum_address(address)).call()
            return SenderInfo(
                deposit=int(sender[0]),
                withdraw_round=int(sender[1]),
                reserve=int(reserve[0]),
                reserve_claimed_in_current_round=int(reserve[1]),
            )

    def claimed_reserve(self, reserve_holder: str, claimant: str) -> int:
        """Wei ``claimant`` has claimed from ``reserve_holder``'s reserve this round."""
        with mapped_errors("reading the claimed reserve"):
            return int(
                self._broker.functions.claimedReserve(
                    checksum_address(reserve_holder), checksum_address(claimant)
                ).call()
            )

    def used_ticket(self, ticket_hash: bytes) -> bool:
        """Whether the TicketBroker has redeemed the ticket with this hash."""
        with mapped_errors("reading usedTickets"):
            return bool(self._broker.functions.usedTickets(bytes(ticket_hash)).call())

    def is_active_transcoder(self, address: str) -> bool:
        """Whether ``address`` is in the current round's active set."""
        with mapped_errors("reading isActiveTranscoder"):
            return bool(
                self._bonding.functions.isActiveTranscoder(checksum_address(address)).call()
            )

    def is_registered_transcoder(self, address: str) -> bool:
        """Whether ``address`` is registered as an orchestrator (active or not)."""
        with mapped_errors("reading isRegisteredTranscoder"):
            return bool(
                self._bonding.functions.isRegisteredTranscoder(checksum_address(address)).call()
            )

    def transcoder_stake(self, address: str) -> int:
        """Everything bonded to ``address``, its own bond included (wei)."""
        with mapped_errors("reading transcoderTotalStake"):
            return int(
                self._bonding.functions.transcoderTotalStake(checksum_address(address)).call()
            )

    def bonded_amount(self, address: str) -> int:
        """``address``'s own bond, wherever it is delegated (wei)."""
        with mapped_errors("reading getDelegator"):
            return int(self._bonding.functions.getDelegator(checksum_address(address)).call()[0])

    def unbonding_lock(self, address: str, lock_id: int) -> UnbondingLock | None:
        """``address``'s unbonding lock ``lock_id``; None if it has none by that id (never
        made, or already withdrawn or rebonded)."""
        with mapped_errors("reading getDelegatorUnbondingLock"):
            amount, withdraw_round = self._bonding.functions.getDelegatorUnbondingLock(
                checksum_address(address), lock_id
            ).call()
        if int(amount) == 0:
            return None
        return UnbondingLock(id=lock_id, amount=int(amount), withdraw_round=int(withdraw_round))

    def unbonding_locks(self, address: str) -> list[UnbondingLock]:
        """``address``'s pending unbonding locks, oldest first, read at one block: those among
        its latest ``MAX_UNBONDING_LOCKS_LISTED`` lock ids that were neither withdrawn nor
        rebonded."""
        with mapped_errors("reading the unbonding locks"):
            account = checksum_address(address)
            block = int(self._w3.eth.block_number)
            functions = self._bonding.functions
            next_id = int(functions.getDelegator(account).call(block_identifier=block)[6])
            locks: list[UnbondingLock] = []
            for lock_id in range(max(0, next_id - MAX_UNBONDING_LOCKS_LISTED), next_id):
                amount, withdraw_round = functions.getDelegatorUnbondingLock(account, lock_id).call(
                    block_identifier=block
                )
                if int(amount) > 0:
                    locks.append(
                        UnbondingLock(
                            id=lock_id, amount=int(amount), withdraw_round=int(withdraw_round)
                        )
                    )
            return locks

    def delegate_of(self, address: str) -> str | None:
        """Whom ``address``'s bond is delegated to; None when nothing is bonded."""
        with mapped_errors("reading getDelegator"):
            delegate = str(
                self._bonding.functions.getDelegator(checksum_address(address)).call()[2]
            )
        return None if int(delegate, 16) == 0 else Web3.to_checksum_address(delegate)

    def pending_fees(self, address: str) -> int:
        """Fees credited to ``address`` in the BondingManager and not yet withdrawn (wei)."""
        with mapped_errors("reading pendingFees"):
            round_ = int(self._rounds.functions.currentRound().call())
            return int(
                self._bonding.functions.pendingFees(checksum_address(address), round_).call()
            )

    def service_uri(self, address: str) -> str:
        """The URI ``address`` published in the ServiceRegistry ("" if none)."""
        with mapped_errors("reading the service URI"):
            return str(self._registry.functions.getServiceURI(checksum_address(address)).call())

    def active_transcoders(self) -> list[str]:
        """The current round's active orchestrators, most stake first."""
        with mapped_errors("reading the active set"):
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
        with mapped_errors(f"reading the balance of {address}"):
            return int(self._w3.eth.get_balance(checksum_address(address)))
