"""The money commands: ``lpstream account …`` (a node's funds and stake on chain) and
``lpstream chain`` (the dev chain over JSON-RPC).

Amounts are wei, or a decimal with a unit: ``1.5eth``, ``2gwei``, ``100wei``.
"""

from __future__ import annotations

from .amounts import PERC_DIVISOR, format_wei, parse_wei
from .chain_server import (
    DEV_KEYSTORE_SCRYPT_N,
    chain,
    run_chain,
    write_dev_keystores,
)
from .commands import account
from .flags import ChainFlags, chain_flags

__all__ = [
    "DEV_KEYSTORE_SCRYPT_N",
    "PERC_DIVISOR",
    "ChainFlags",
    "account",
    "chain",
    "chain_flags",
    "format_wei",
    "parse_wei",
    "run_chain",
    "write_dev_keystores",
]
