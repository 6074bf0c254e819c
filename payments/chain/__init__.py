"""The chain seam: lpstream's contracts, the client that talks to them over web3, and the
embedded dev chain (eth-tester + py-evm) that deploys them.

The JSON-RPC server for ``lpstream chain`` lives in ``payments.chain.rpc`` and is not imported
here, so importing ``payments.chain`` does not pull in the HTTP stack.
"""

from __future__ import annotations

from .client import REDEEM_GAS, ChainClient, ChainError, ChainSnapshot, UnbondingLock
from .contracts import CONTRACT_NAMES, Artifact, contract_at, deploy_all, load_artifact
from .dev_accounts import DEV_CHAIN_ID, DevKeyError, dev_account_index
from .devchain import DevChain, dev_key

__all__ = [
    "CONTRACT_NAMES",
    "DEV_CHAIN_ID",
    "REDEEM_GAS",
    "Artifact",
    "ChainClient",
    "ChainError",
    "ChainSnapshot",
    "DevChain",
    "DevKeyError",
    "UnbondingLock",
    "contract_at",
    "deploy_all",
    "dev_account_index",
    "dev_key",
    "load_artifact",
]
