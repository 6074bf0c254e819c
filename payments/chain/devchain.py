"""The embedded dev chain: py-evm behind web3's eth-tester provider, with lpstream's contracts.

How this works
--------------
``DevChain.start()`` makes an in-memory chain (eth-tester, py-evm backend), deploys every
protocol contract from eth-tester's first account (which becomes the Controller's owner), gives
``accounts`` fresh keys ``funds`` wei each, and initializes the current round, so tickets can be
made and redeemed at once.

The dev keys are derived from a fixed seed (keccak256("lpstream dev account <seed> <i>")), so a
restarted dev chain has the same accounts and keystores written for them stay valid. Everyone
can derive them: they are for the dev chain only, never for a chain with real money, and a chain
client refuses them on any other chain id (``dev_accounts``). ``start(chain_id=...)`` gives the
chain another id, as a stand-in for another network.

eth-tester mines a block for every transaction and otherwise never: ``run_blocks`` is the clock
that mines one block every ``block_time`` seconds and initializes each round as it starts.

Threads: eth-tester and py-evm are not thread-safe. The rule is that every blocking call on the
chain (clients made by ``client()``, ``mine``, the RPC server in ``rpc.py``) runs in
``trio.to_thread.run_sync`` under the ONE ``trio.CapacityLimiter`` the node keeps for the chain.
As a guard, the provider also takes a lock around each request, and ``mine`` takes the same one,
so a call that escapes the limiter is still serialised.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from typing import Any

import trio
from eth_abi.abi import encode as abi_encode
from web3 import EthereumTesterProvider, Web3
from web3.middleware import combine_middleware
from web3.types import RPCEndpoint, RPCResponse, Wei

from payments.keys import NodeKey

from .client import ChainClient
from .contracts import DEFAULT_PARAMETERS, ProtocolParameters, contract_at, deploy_all
from .dev_accounts import DEV_CHAIN_ID, dev_key
from .errors import ChainError, mapped_errors

__all__ = ["DEV_ACCOUNT_FUNDS", "DEV_CHAIN_ID", "DevChain", "dev_key"]

DEV_ACCOUNT_FUNDS = 1000 * 10**18
"""Wei each dev account starts with (1000 ETH)."""

_ERROR_SELECTOR = bytes.fromhex("08c379a0")
"""Error(string): how Solidity and Vyper encode a revert reason."""

_eth_tester = importlib.import_module("eth_tester")
_TransactionFailed: type[Exception] = importlib.import_module(
    "eth_tester.exceptions"
).TransactionFailed


class _LockedTesterProvider(EthereumTesterProvider):
    """The eth-tester provider with every request under one lock (see the module notes), that
    answers ``eth_chainId`` with the chain's id (web3's provider has eth-tester's fixed)."""

    def __init__(self, tester: Any, lock: threading.RLock, chain_id: int) -> None:
        super().__init__(tester)
        self._lock = lock
        self._chain_id = chain_id

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self._lock:
            response = super().make_request(method, params)
        if method == "eth_chainId" and "result" in response:
            return {**response, "result": self._chain_id}
        return response


class DevChain:
    """An in-memory chain with lpstream's contracts deployed. Make one with ``start()``."""

    def __init__(
        self,
        *,
        w3: Web3,
        tester: Any,
        lock: threading.RLock,
        owner: str,
        addresses: dict[str, str],
        keys: Sequence[NodeKey],
        parameters: ProtocolParameters,
    ) -> None:
        self.w3 = w3
        """The in-process connection (eth-tester provider)."""
        self.tester = tester
        """The ``eth_tester.EthereumTester`` behind it."""
        self.owner = owner
        """The Controller's owner: eth-tester's first account, unlocked in the tester."""
        self.addresses = dict(addresses)
        """Every contract's address, by name."""
        self.controller = addresses["Controller"]
        """The Controller's address: what ``--controller`` takes."""
        self.keys = list(keys)
        """The funded dev accounts' keys."""
        self.parameters = parameters
        """The protocol parameters it was deployed with."""
        self._lock = lock
        self._rpc = combine_middleware(
            middleware=EthereumTesterProvider._middleware,
            w3=w3,
            provider_request_fn=w3.provider.make_request,
        )

    @classmethod
    def start(
        cls,
        *,
        parameters: ProtocolParameters | None = None,
        accounts: int = 4,
        funds: int = DEV_ACCOUNT_FUNDS,
        seed: str = "",
        chain_id: int = DEV_CHAIN_ID,
    ) -> DevChain:
        """Makes the chain, deploys the contracts, funds ``accounts`` dev keys (blocking).

        Args:
            parameters: the protocol's tunables (round length etc.); the dev defaults if None.
            accounts: how many dev keys to fund.
            funds: wei each one gets.
            seed: varies the dev keys (two dev chains with one seed share their accounts).
            chain_id: the chain's id (EIP-155); on any but :data:`DEV_CHAIN_ID` the dev keys
                are refused by chain clients.
        """
        params = DEFAULT_PARAMETERS if parameters is None else parameters
        lock = threading.RLock()
        backend = _eth_tester.PyEVMBackend()
        backend.chain.chain_id = chain_id  # what its own transactions are signed for
        tester = _eth_tester.EthereumTester(backend)
        w3 = Web3(_LockedTesterProvider(tester, lock, chain_id))
        with mapped_errors("starting the dev chain"):
            owner = w3.eth.accounts[0]
            addresses = deploy_all(w3, owner, params)
            keys = [dev_key(i, seed) for i in range(accounts)]
            for key in keys:
                tx = w3.eth.send_transaction(
                    {"from": owner, "to": key.address, "value": Wei(funds)}
                )
                w3.eth.wait_for_transaction_receipt(tx)
        chain = cls(
            w3=w3,
            tester=tester,
            lock=lock,
            owner=owner,
            addresses=dict(addresses),
            keys=keys,
            parameters=params,
        )
        chain.initialize_round()
        return chain

    def client(self, key: NodeKey | None = None) -> ChainClient:
        """A chain client on this chain, signing with ``key`` (read-only if None)."""
        return ChainClient(self.w3, controller=self.controller, key=key)

    def latest_block(self) -> int:
        """The chain head's block number."""
        with mapped_errors("reading the block number"):
            return int(self.w3.eth.block_number)

    def mine(self, blocks: int = 1) -> int:
        """Mines ``blocks`` empty blocks; returns the new head's number (blocking)."""
        with self._lock, mapped_errors("mining"):
            self.tester.mine_blocks(blocks)
            return int(self.w3.eth.block_number)

    def mine_to_round(self, round_: int) -> None:
        """Mines up to ``round_``'s first block (nothing if it has begun) and initializes it."""
        target = round_ * self.parameters.round_length
        latest = self.latest_block()
        if latest < target:
            self.mine(target - latest)
        self.initialize_round()

    def initialize_round(self) -> str | None:
        """Initializes the current round from the owner's account; None if it already is."""
        with mapped_errors("initializing the round"):
            rounds = contract_at(self.w3, "RoundsManager", self.addresses["RoundsManager"])
            if bool(rounds.functions.currentRoundInitialized().call()):
                return None
            tx = rounds.functions.initializeRound().transact({"from": self.owner})
            self.w3.eth.wait_for_transaction_receipt(tx)
            return "0x" + bytes(tx).hex()

    async def run_blocks(
        self,
        block_time: float,
        limiter: trio.CapacityLimiter,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Mines a block every ``block_time`` seconds and initializes each new round; forever.

        Every chain call runs in a thread under ``limiter`` (the chain's one limiter).
        """
        await trio.to_thread.run_sync(self.initialize_round, limiter=limiter)
        task_status.started()
        while True:
            await trio.sleep(block_time)
            await trio.to_thread.run_sync(self._tick, limiter=limiter)

    def _tick(self) -> None:
        self.mine(1)
        self.initialize_round()

    def handle_rpc(self, method: str, params: Any) -> dict[str, Any]:
        """Answers one JSON-RPC call as an Ethereum node would (blocking).

        Returns:
            ``{"result": …}`` or ``{"error": {"code", "message"[, "data"]}}``, ready for
            ``json.dumps``: quantities as hex strings, bytes as ``0x`` hex. A revert answers
            geth's way (code 3, "execution reverted: REASON", data = the Error(string) bytes),
            so web3 and ethers decode the reason.
        """
        try:
            response = self._rpc(RPCEndpoint(method), params)
        except _TransactionFailed as exc:
            reason = str(exc.args[0]) if exc.args else ""
            reason = reason.removeprefix("execution reverted").removeprefix(":").strip()
            if reason in ("", "b''"):
                return {"error": {"code": 3, "message": "execution reverted", "data": "0x"}}
            data = _ERROR_SELECTOR + abi_encode(["string"], [reason])
            return {
                "error": {
                    "code": 3,
                    "message": f"execution reverted: {reason}",
                    "data": "0x" + data.hex(),
                }
            }
        except (KeyError, IndexError, TypeError) as exc:
            return {"error": {"code": -32602, "message": f"invalid params: {_describe(exc)}"}}
        except ChainError as exc:  # pragma: no cover - the pipeline raises no ChainError
            return {"error": {"code": -32000, "message": str(exc)}}
        except Exception as exc:
            # eth-tester's and py-evm's validation errors (bad nonce, unknown block, …).
            return {"error": {"code": -32000, "message": _describe(exc)}}
        if "error" in response:
            error = response["error"]
            if isinstance(error, str):
                return {"error": {"code": -32000, "message": error}}
            answer: dict[str, Any] = {
                "code": int(error.get("code", -32000)),
                "message": str(error.get("message", "")),
            }
            if "data" in error:
                answer["data"] = _json_ready(error["data"])
            return {"error": answer}
        return {"result": _json_ready(response.get("result"))}


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _json_ready(value: Any, key: str | None = None) -> Any:
    """eth-tester's Python values as JSON-RPC writes them: hex quantities and hex bytes."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        if key == "logsBloom":
            return "0x" + value.to_bytes(256, "big").hex()
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _json_ready(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return str(value)
