"""``lpstream chain``: the embedded dev chain, served over JSON-RPC on loopback.

For networks of separate processes on one machine: ``lpstream chain --keystore-dir dev-keys``
then, in another shell, ``lpstream account status --controller 0x… --keystore
dev-keys/dev-0.json --passphrase-file dev-keys/dev-0.passphrase``. The dev accounts' keys are
public knowledge (they are derived from a fixed seed), so their keystores are written with a
cheap scrypt cost, the RPC refuses a non-loopback address unless told otherwise, and lpstream
refuses to sign with them on any chain but this one with its own chain id (``--chain-id``
gives it another, to stand in for another network: then the dev keystores are refused).
"""

from __future__ import annotations

import functools
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click

from lpstream.cliopts import option, run_until_stopped
from lpstream.config import HostPort, is_loopback, parse_host_port
from lpstream.errors import ConfigError
from payments.private_files import write_private_file

if TYPE_CHECKING:
    # The chain's modules load web3 and eth_account: the command imports them when it runs.
    from payments.chain.contracts import ProtocolParameters
    from payments.keys import NodeKey
__all__ = ["DEV_KEYSTORE_SCRYPT_N", "chain", "run_chain", "write_dev_keystores"]

DEV_KEYSTORE_SCRYPT_N = 2**12
"""scrypt's cost for the dev chain's keystores: their keys are public anyway, so make them quick."""


def _rpc_addr(ctx: click.Context, param: click.Parameter, value: Any) -> HostPort:
    try:
        return parse_host_port(str(value), default_port=8545, flag="--rpc-addr")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def write_dev_keystores(keys: list[NodeKey], folder: Path) -> list[tuple[str, Path, Path]]:
    """Writes each dev key's keystore and passphrase file into ``folder`` (both mode 0600).

    Files are ``dev-<i>.json`` and ``dev-<i>.passphrase``. Files left by an earlier run are kept
    when they hold the same key (the dev keys are deterministic).

    Returns:
        (address, keystore, passphrase file) for each key.

    Raises:
        ConfigError: a file there holds another key or cannot be read or written.
    """
    from payments.keys import create_keystore, load_key, read_passphrase

    written: list[tuple[str, Path, Path]] = []
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create --keystore-dir {folder}: {exc.strerror}") from None
    for i, key in enumerate(keys):
        keystore = folder / f"dev-{i}.json"
        passphrase_file = folder / f"dev-{i}.passphrase"
        if not passphrase_file.exists():
            if keystore.exists():
                raise ConfigError(f"{keystore} exists without its passphrase file")
            _write_private(passphrase_file, secrets.token_urlsafe(18) + "\n")
        passphrase = read_passphrase(passphrase_file, prompt=False)
        if keystore.exists():
            if load_key(keystore, passphrase).address != key.address:
                raise ConfigError(f"{keystore} holds another key than dev account {i}")
        else:
            create_keystore(
                keystore,
                passphrase,
                private_key=key.private_key,
                scrypt_n=DEV_KEYSTORE_SCRYPT_N,
            )
        written.append((key.address, keystore, passphrase_file))
    return written


def _write_private(path: Path, text: str) -> None:
    try:
        write_private_file(path, text.encode())
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


async def run_chain(
    *,
    rpc_addr: HostPort,
    block_time: float,
    parameters: ProtocolParameters,
    accounts: int,
    keystore_dir: Path | None,
    announce: Callable[[str], None],
    chain_id: int | None = None,
) -> None:
    """Runs the dev chain (with ``chain_id``, else the dev chain's own id) and its JSON-RPC
    server until cancelled."""
    import trio

    from payments.chain.devchain import DEV_CHAIN_ID, DevChain

    chain_id = DEV_CHAIN_ID if chain_id is None else chain_id
    from payments.chain.rpc import build_rpc_app, serve_rpc

    limiter = trio.CapacityLimiter(1)  # the chain's one limiter (eth-tester is not thread-safe)
    dev = await trio.to_thread.run_sync(
        functools.partial(
            DevChain.start, parameters=parameters, accounts=accounts, chain_id=chain_id
        ),
        limiter=limiter,
    )
    files: list[tuple[str, Path, Path]] = []
    if keystore_dir is not None:
        files = await trio.to_thread.run_sync(write_dev_keystores, dev.keys, keystore_dir)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            serve_rpc, build_rpc_app(dev, limiter), rpc_addr.host, rpc_addr.port
        )
        await nursery.start(dev.run_blocks, block_time, limiter)
        announce(f"chain RPC: {url}")
        announce(f"controller: {dev.controller}")
        announce(f"chain id: {chain_id}")
        if chain_id != DEV_CHAIN_ID:
            announce(
                f"note: not the dev chain id ({DEV_CHAIN_ID}): lpstream refuses to sign with "
                "the dev accounts' keys on this chain"
            )
        if files:
            for i, (address, keystore, passphrase_file) in enumerate(files):
                announce(f"account {i}: {address} keystore {keystore} passphrase {passphrase_file}")
        else:
            for i, key in enumerate(dev.keys):
                announce(f"account {i}: {key.address}")
        announce("lpstream chain ready")


def _default_parameters() -> ProtocolParameters:
    from payments.chain.contracts import DEFAULT_PARAMETERS

    return DEFAULT_PARAMETERS


def _announce(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@option(
    "--rpc-addr",
    default="127.0.0.1:8545",
    callback=_rpc_addr,
    help="Where to serve JSON-RPC (loopback only, unless --allow-remote).",
)
@option(
    "--block-time",
    type=click.FloatRange(0.05, 3600),
    default=1.0,
    help="Seconds between blocks (transactions also mine a block each).",
)
@option(
    "--round-length",
    type=click.IntRange(1, 100_000),
    default=lambda: _default_parameters().round_length,
    show_default="the protocol's",
    help="Blocks per round. Below 45 (the 40-block ticket expiry and a margin) winning "
    "tickets may expire unredeemed: for tests that need rounds to pass quickly.",
)
@option("--accounts", type=click.IntRange(0, 100), default=4, help="Funded dev accounts.")
@option(
    "--chain-id",
    type=click.IntRange(1, 2**63 - 1),
    default=None,
    show_default="the dev chain's",
    help="The chain's id (EIP-155). Any but the default stands in for another network, on "
    "which lpstream refuses the dev accounts' keys.",
)
@option(
    "--keystore-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the dev accounts' keystores and passphrase files here.",
)
@option(
    "--allow-remote",
    is_flag=True,
    default=False,
    help="Serve on a non-loopback address (the RPC has no authentication).",
)
def chain(
    rpc_addr: HostPort,
    block_time: float,
    round_length: int,
    accounts: int,
    chain_id: int | None,
    keystore_dir: Path | None,
    allow_remote: bool,
) -> None:
    """Run a dev chain with lpstream's contracts and serve it over JSON-RPC.

    Its accounts' keys are public knowledge: never send real money to them.
    """
    if not is_loopback(rpc_addr.host) and not allow_remote:
        raise click.BadParameter(
            f"{rpc_addr} is not a loopback address and the RPC has no authentication; "
            "pass --allow-remote to serve it anyway",
            param_hint="--rpc-addr",
        )
    if round_length < 45:
        click.echo(
            f"warning: rounds of {round_length} blocks are shorter than a ticket's 40-block "
            "expiry and a margin: winning tickets may expire unredeemed",
            err=True,
        )
    parameters = attrs.evolve(_default_parameters(), round_length=round_length)
    run_until_stopped(
        functools.partial(
            run_chain,
            rpc_addr=rpc_addr,
            block_time=block_time,
            parameters=parameters,
            accounts=accounts,
            keystore_dir=keystore_dir,
            announce=_announce,
            chain_id=chain_id,
        )
    )
