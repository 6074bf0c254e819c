"""The dev chain's public accounts, and the rule that keeps their keys on the dev chain.

The dev accounts' keys are derived from a fixed text (``keccak256("lpstream dev account
<seed> <i>")``), so anyone can compute them, and ``lpstream chain --keystore-dir`` writes
keystores for them. That is what a dev chain needs and what a real chain must never see: money
sent to one of these addresses can be taken by anyone. So a chain client refuses to sign with a
public dev key (seed ``""``, the first :data:`MAX_DEV_ACCOUNTS`) on any chain whose id is not
the embedded dev chain's, :data:`DEV_CHAIN_ID` (:func:`refuse_dev_key_off_dev_chain`, called
by ``ChainClient`` for every signing client: ``lpstream account`` commands and paid nodes).
"""

from __future__ import annotations

import functools

from lpstream.errors import ConfigError
from payments.keys import NodeKey
from payments.pm import keccak256

__all__ = [
    "DEV_CHAIN_ID",
    "MAX_DEV_ACCOUNTS",
    "DevKeyError",
    "dev_account_index",
    "dev_key",
    "refuse_dev_key_off_dev_chain",
]

DEV_CHAIN_ID = 131277322940537
"""The embedded dev chain's id (EIP-155): eth-tester's py-evm chain's, unless
``lpstream chain --chain-id`` says otherwise."""

MAX_DEV_ACCOUNTS = 100
"""Dev accounts a dev chain funds at most (``lpstream chain --accounts``)."""


class DevKeyError(ConfigError):
    """A public dev account's key was to sign on a chain other than the dev chain."""


def dev_key(index: int, seed: str = "") -> NodeKey:
    """The ``index``-th dev account's key (public knowledge: for the dev chain only)."""
    return NodeKey.from_private_key(keccak256(f"lpstream dev account {seed} {index}".encode()))


@functools.cache
def _public_dev_addresses() -> dict[str, int]:
    return {dev_key(i).address: i for i in range(MAX_DEV_ACCOUNTS)}


def dev_account_index(address: str) -> int | None:
    """Which public dev account ``address`` (checksummed) is; None if it is none of them."""
    return _public_dev_addresses().get(address)


def refuse_dev_key_off_dev_chain(key: NodeKey, chain_id: int) -> None:
    """Refuses a public dev account's key on a chain other than the dev chain.

    Raises:
        DevKeyError: ``key`` is a public dev key and ``chain_id`` is not :data:`DEV_CHAIN_ID`;
            the message says why.
    """
    index = dev_account_index(key.address)
    if index is None or chain_id == DEV_CHAIN_ID:
        return
    raise DevKeyError(
        f"{key.address} is lpstream's dev account {index}: its key is derived from a public "
        f"seed, so anyone can spend from it. It is refused on chain id {chain_id}; dev "
        f"accounts are for the embedded dev chain (chain id {DEV_CHAIN_ID}) only. Use a "
        "keystore of your own."
    )
