"""Sending transactions: the chain client's write path, one transaction at a time.

How this works
--------------
Transactions are signed here, with the node's key (eth-account), and sent raw, so any node
works, including ones that hold no accounts. The nonce is counted locally from the chain's
"pending" count, and re-read after any failed send. Each write is estimated first (a revert
surfaces there, with its reason, before anything is spent), sent as a legacy transaction at the
node's ``eth_gasPrice``, and waited for; a write returns only once its receipt is in. A mined
transaction that failed is replayed at its block to learn the revert reason.

Sending is serialised by a lock, so nonces stay in order when several threads write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

from eth_account import Account
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.types import TxParams, TxReceipt

from payments.keys import NodeKey

from .errors import ChainError, checksum_address, hex_string, mapped_errors

__all__ = ["DEFAULT_TX_TIMEOUT", "Progress", "TransactionSender"]

DEFAULT_TX_TIMEOUT = 300.0
"""Seconds to wait for a transaction's receipt (go-livepeer's ``txTimeout`` is 5 minutes)."""

_GAS_MARGIN_PERCENT = 25
"""Gas limit = estimate + this percent: state may move between estimate and inclusion."""

Progress = Callable[[str], None]
"""Called with one line at each step of a write ("sent 0x…, waiting for receipt…")."""


class TransactionSender:
    """Signs, sends and waits for transactions from one key. Every method blocks.

    Args:
        w3: the connection.
        chain_id: the chain's id (EIP-155), signed into every transaction.
        key: the key that signs; None for a read-only client (sending raises).
        tx_timeout: seconds to wait for a receipt.
    """

    def __init__(self, w3: Web3, *, chain_id: int, key: NodeKey | None, tx_timeout: float) -> None:
        self._w3 = w3
        self._chain_id = chain_id
        self._key = key
        self._tx_timeout = tx_timeout
        self._send_lock = threading.Lock()
        self._nonce: int | None = None

    @property
    def key(self) -> NodeKey | None:
        """The signing key, or None."""
        return self._key

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
        with mapped_errors(f"waiting for {tx_hash}"):
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

    def require_key(self) -> NodeKey:
        """The signing key.

        Raises:
            ChainError: this is a read-only client.
        """
        if self._key is None:
            raise ChainError("this chain client has no key: it cannot send transactions")
        return self._key

    def transact(
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
        key = self.require_key()
        with mapped_errors(action):
            data = contract.encode_abi(function, args=args)
        tx: dict[str, Any] = {
            "from": key.address,
            "to": contract.address,
            "data": data,
            "value": value,
        }
        with self._send_lock, mapped_errors(action):
            estimate = int(self._w3.eth.estimate_gas(cast(TxParams, tx)))
            tx["gas"] = estimate + estimate * _GAS_MARGIN_PERCENT // 100
            tx["gasPrice"] = int(self._w3.eth.gas_price)
            tx["chainId"] = self._chain_id
            if self._nonce is None:
                self._nonce = int(
                    self._w3.eth.get_transaction_count(checksum_address(key.address), "pending")
                )
            tx["nonce"] = self._nonce
            signed = Account.sign_transaction(tx, key.private_key)
            try:
                tx_hash = hex_string(self._w3.eth.send_raw_transaction(signed.raw_transaction))
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
        with mapped_errors(f"reading transaction {tx_hash}"):
            sent = self._w3.eth.get_transaction(HexBytes(tx_hash))
        replay: TxParams = {
            "from": sent["from"],
            "to": sent["to"],
            "data": sent["input"],
            "value": sent["value"],
            "gas": sent["gas"],
        }
        try:
            with mapped_errors(f"transaction {tx_hash}"):
                self._w3.eth.call(replay, block_identifier=block - 1)
        except ChainError as exc:
            if exc.reason is not None:
                return ChainError(
                    f"transaction {tx_hash} reverted in block {block}"
                    + (f": {exc.reason}" if exc.reason else ""),
                    reason=exc.reason,
                )
        return ChainError(f"transaction {tx_hash} failed in block {block} (out of gas?)")
