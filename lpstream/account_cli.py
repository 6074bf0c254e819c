"""``lpstream account …`` (a node's money on chain) and ``lpstream chain`` (the dev chain).

``account`` commands talk to any Ethereum JSON-RPC endpoint (``--eth-url``) through the protocol's
Controller (``--controller``), signing with an encrypted keystore (``--keystore``, with its
passphrase from ``--passphrase-file`` or typed at the terminal). Every write prints its
transaction hash, waits for the receipt and says in which block it was mined.

``chain`` runs the embedded dev chain and serves it over JSON-RPC, for networks of separate
processes on one machine: ``lpstream chain --keystore-dir dev-keys`` then, in another shell,
``lpstream account status --controller 0x… --keystore dev-keys/dev-0.json
--passphrase-file dev-keys/dev-0.passphrase``.

Amounts are wei, or a decimal with a unit: ``1.5eth``, ``2gwei``, ``100wei``.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import secrets
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import click

from lpstream.cliopts import option, run_until_stopped
from lpstream.config import HostPort, parse_host_port
from lpstream.errors import ConfigError, LpstreamError

if TYPE_CHECKING:
    # The chain's modules load web3 and eth_account: the commands import them when they run.
    from payments.chain.client import ChainClient
    from payments.chain.contracts import ProtocolParameters
    from payments.keys import NodeKey

__all__ = ["DEV_KEYSTORE_SCRYPT_N", "account", "chain", "format_wei", "parse_wei"]

F = TypeVar("F", bound=Callable[..., Any])

DEV_KEYSTORE_SCRYPT_N = 2**12
"""scrypt's cost for the dev chain's keystores: their keys are public anyway, so make them quick."""

_UNITS = {"wei": 0, "gwei": 9, "eth": 18, "ether": 18}
_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
PERC_DIVISOR = 1_000_000
"""The BondingManager's unit for rewardCut and feeShare: parts per million."""


def parse_wei(text: str) -> int:
    """Wei from ``"1000"`` (wei), ``"1.5eth"``, ``"2 gwei"``, ``"7wei"``.

    Raises:
        ValueError: not a non-negative whole number of wei.
    """
    match = _AMOUNT.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an amount: use wei, or a number with eth/gwei/wei")
    number, unit = match.group(1), match.group(2).lower() or "wei"
    if unit not in _UNITS:
        raise ValueError(f"{text!r}: unknown unit {unit!r} (use eth, gwei or wei)")
    try:
        value = Decimal(number).scaleb(_UNITS[unit])
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"{text!r} is not an amount") from None
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of wei")
    return int(value)


def format_wei(wei: int) -> str:
    """``1.5 ETH`` for 1500000000000000000; exact, with no trailing zeros."""
    text = f"{Decimal(wei).scaleb(-18):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} ETH"


def _wei(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None or isinstance(value, int):
        return value
    try:
        return parse_wei(str(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _percent_to_ppm(ctx: click.Context, param: click.Parameter, value: float | None) -> int | None:
    if value is None:
        return None
    if not 0 <= value <= 100:
        raise click.BadParameter("a percentage from 0 to 100")
    return round(value * PERC_DIVISOR / 100)


def _chain_options(*, key_required: bool = True) -> Callable[[F], F]:
    """The flags every account command takes: where the chain is, and whose key signs."""

    def decorate(f: F) -> F:
        for decorator in reversed(
            [
                option(
                    "--eth-url",
                    default="http://127.0.0.1:8545",
                    help="Ethereum JSON-RPC URL (lpstream chain's, or any node's).",
                ),
                option(
                    "--controller",
                    required=True,
                    help="Address of the protocol's Controller contract.",
                ),
                option(
                    "--keystore",
                    type=click.Path(dir_okay=False, path_type=Path),
                    required=key_required,
                    default=None,
                    help="Encrypted JSON keystore of the account that signs.",
                ),
                option(
                    "--passphrase-file",
                    type=click.Path(dir_okay=False, path_type=Path),
                    default=None,
                    help="File holding the keystore's passphrase (mode 0600); "
                    "asked for at the terminal if absent.",
                ),
            ]
        ):
            f = decorator(f)
        return f

    return decorate


def _load_key(keystore: Path, passphrase_file: Path | None) -> NodeKey:
    from payments.keys import load_key, read_passphrase

    passphrase = read_passphrase(passphrase_file, prompt=sys.stdin.isatty())
    return load_key(keystore, passphrase)


def _connect(
    eth_url: str, controller: str, keystore: Path | None, passphrase_file: Path | None
) -> ChainClient:
    from payments.chain.client import ChainClient

    key = None if keystore is None else _load_key(keystore, passphrase_file)
    return ChainClient.connect(eth_url, controller=controller, key=key)


def _guarded(f: F) -> F:
    """Turns lpstream's errors into click's (a message and exit status 1, no traceback)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except LpstreamError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _progress(line: str) -> None:
    click.echo(line)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def account() -> None:
    """Fund, bond, register and inspect an account on the protocol's contracts."""


@account.command()
@click.argument("amount", metavar="AMOUNT", callback=_wei)
@_chain_options()
@_guarded
def deposit(
    amount: int, eth_url: str, controller: str, keystore: Path, passphrase_file: Path | None
) -> None:
    """Add AMOUNT to the account's ticket deposit (pays winning tickets)."""
    client = _connect(eth_url, controller, keystore, passphrase_file)
    client.fund_deposit(amount, progress=_progress)
    click.echo(f"deposit funded with {format_wei(amount)}")


@account.command()
@click.argument("amount", metavar="AMOUNT", callback=_wei)
@_chain_options()
@_guarded
def reserve(
    amount: int, eth_url: str, controller: str, keystore: Path, passphrase_file: Path | None
) -> None:
    """Add AMOUNT to the account's reserve (backs tickets when the deposit runs short)."""
    client = _connect(eth_url, controller, keystore, passphrase_file)
    client.fund_reserve(amount, progress=_progress)
    click.echo(f"reserve funded with {format_wei(amount)}")


@account.command()
@_chain_options()
@_guarded
def unlock(eth_url: str, controller: str, keystore: Path, passphrase_file: Path | None) -> None:
    """Start the unlock period of the deposit and reserve (then `withdraw`)."""
    client = _connect(eth_url, controller, keystore, passphrase_file)
    client.unlock(progress=_progress)
    info = client.sender_info(_address(client))
    click.echo(
        f"unlocking: withdraw from round {info.withdraw_round} (now round {client.current_round()})"
    )


@account.command("cancel-unlock")
@_chain_options()
@_guarded
def cancel_unlock(
    eth_url: str, controller: str, keystore: Path, passphrase_file: Path | None
) -> None:
    """Cancel a pending unlock: the funds back tickets again."""
    client = _connect(eth_url, controller, keystore, passphrase_file)
    client.cancel_unlock(progress=_progress)
    click.echo("unlock cancelled")


@account.command()
@_chain_options()
@_guarded
def withdraw(eth_url: str, controller: str, keystore: Path, passphrase_file: Path | None) -> None:
    """Withdraw the deposit and reserve once the unlock period is over."""
    client = _connect(eth_url, controller, keystore, passphrase_file)
    info = client.sender_info(_address(client))
    client.withdraw(progress=_progress)
    click.echo(f"withdrew {format_wei(info.deposit + info.reserve)}")


@account.command()
@click.argument("amount", metavar="AMOUNT", callback=_wei)
@option("--to", default=None, help="Address to delegate to (default: the account itself).")
@_chain_options()
@_guarded
def bond(
    amount: int,
    to: str | None,
    eth_url: str,
    controller: str,
    keystore: Path,
    passphrase_file: Path | None,
) -> None:
    """Bond AMOUNT as stake, to the account itself (an orchestrator) or to --to."""
    client = _connect(eth_url, controller, keystore, passphrase_file)
    client.bond(amount, to, progress=_progress)
    click.echo(f"bonded {format_wei(amount)} to {to or client.address}")


@account.command()
@option(
    "--reward-cut",
    type=float,
    default=0.0,
    callback=_percent_to_ppm,
    help="Percent of rewards kept (recorded; lpstream's contracts pay no rewards).",
)
@option(
    "--fee-share",
    type=float,
    default=0.0,
    callback=_percent_to_ppm,
    help="Percent of fees shared with delegators (recorded; all fees go to the orchestrator).",
)
@option(
    "--service-uri",
    default=None,
    help="Where gateways reach this orchestrator, e.g. quic://host:8936 (published on chain).",
)
@_chain_options()
@_guarded
def register(
    reward_cut: int,
    fee_share: int,
    service_uri: str | None,
    eth_url: str,
    controller: str,
    keystore: Path,
    passphrase_file: Path | None,
) -> None:
    """Register the account as an orchestrator (bond to itself first)."""
    client = _connect(eth_url, controller, keystore, passphrase_file)
    address = _address(client)
    if client.bonded_amount(address) == 0:
        raise click.ClickException(
            f"{address} has no stake: bond to itself first (lpstream account bond AMOUNT)"
        )
    client.register(reward_cut, fee_share, progress=_progress)
    if service_uri is not None:
        client.set_service_uri(service_uri, progress=_progress)
    click.echo(
        f"registered {address} as an orchestrator; it joins the active set when the next "
        "round is initialized"
    )


@account.command("withdraw-fees")
@_chain_options()
@_guarded
def withdraw_fees(
    eth_url: str, controller: str, keystore: Path, passphrase_file: Path | None
) -> None:
    """Withdraw the fees redeemed tickets credited to this orchestrator."""
    client = _connect(eth_url, controller, keystore, passphrase_file)
    fees = client.pending_fees(_address(client))
    client.withdraw_fees(progress=_progress)
    click.echo(f"withdrew {format_wei(fees)} of fees")


@account.command("initialize-round")
@_chain_options()
@_guarded
def initialize_round(
    eth_url: str, controller: str, keystore: Path, passphrase_file: Path | None
) -> None:
    """Initialize the current round (anyone may; nothing happens if it already is)."""
    client = _connect(eth_url, controller, keystore, passphrase_file)
    tx = client.initialize_round(progress=_progress)
    round_ = client.current_round()
    click.echo(f"round {round_} initialized" if tx else f"round {round_} was already initialized")


@account.command()
@option("--address", default=None, help="Account to show (default: the keystore's).")
@option("--json", "as_json", is_flag=True, default=False, help="Print JSON.")
@_chain_options(key_required=False)
@_guarded
def status(
    address: str | None,
    as_json: bool,
    eth_url: str,
    controller: str,
    keystore: Path | None,
    passphrase_file: Path | None,
) -> None:
    """Show an account: balance, deposit, reserve, unlock, stake, orchestrator state, fees."""
    if address is None and keystore is None:
        raise click.UsageError("name an account: --keystore or --address")
    if address is None:
        client = _connect(eth_url, controller, keystore, passphrase_file)
        address = _address(client)
    else:
        client = _connect(eth_url, controller, None, None)
    report = _status_report(client, address)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if report["withdraw_round"] == 0:
        unlock_state = "locked (no unlock in progress)"
    elif report["withdraw_round"] <= report["current_round"]:
        unlock_state = f"unlocked since round {report['withdraw_round']}: withdraw now"
    else:
        unlock_state = f"unlocking: withdraw from round {report['withdraw_round']}"
    orchestrator = (
        "active" if report["active"] else "registered, not active" if report["registered"] else "no"
    )
    lines = [
        ("address", report["address"]),
        ("balance", _wei_text(report["balance"])),
        ("deposit", _wei_text(report["deposit"])),
        ("reserve", _wei_text(report["reserve"])),
        ("unlock", unlock_state),
        ("bonded", _wei_text(report["bonded"])),
        ("stake", _wei_text(report["stake"])),
        ("orchestrator", orchestrator),
        ("pending fees", _wei_text(report["pending_fees"])),
        ("service URI", report["service_uri"] or "(none)"),
        ("round", f"{report['current_round']} (block {report['latest_block']})"),
    ]
    for label, value in lines:
        click.echo(f"{label + ':':<14}{value}")


def _status_report(client: ChainClient, address: str) -> dict[str, Any]:
    snapshot = client.snapshot()
    info = client.sender_info(address)
    return {
        "address": address,
        "balance": client.balance(address),
        "deposit": info.deposit,
        "reserve": info.reserve,
        "withdraw_round": info.withdraw_round,
        "unlocking": info.unlocking,
        "bonded": client.bonded_amount(address),
        "stake": client.transcoder_stake(address),
        "registered": client.is_registered_transcoder(address),
        "active": client.is_active_transcoder(address),
        "pending_fees": client.pending_fees(address),
        "service_uri": client.service_uri(address),
        "current_round": snapshot.current_round,
        "latest_block": snapshot.latest_block,
    }


def _wei_text(wei: int) -> str:
    return f"{format_wei(wei)} ({wei} wei)"


def _address(client: ChainClient) -> str:
    if client.address is None:  # pragma: no cover - account commands always load a key
        raise ConfigError("no keystore given")
    return client.address


# The dev chain


def _rpc_addr(ctx: click.Context, param: click.Parameter, value: Any) -> HostPort:
    try:
        return parse_host_port(str(value), default_port=8545, flag="--rpc-addr")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text.encode())
        finally:
            os.close(fd)
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
) -> None:
    """Runs the dev chain and its JSON-RPC server until cancelled."""
    import trio

    from payments.chain.devchain import DevChain
    from payments.chain.rpc import build_rpc_app, serve_rpc

    limiter = trio.CapacityLimiter(1)  # the chain's one limiter (eth-tester is not thread-safe)
    dev = await trio.to_thread.run_sync(
        functools.partial(DevChain.start, parameters=parameters, accounts=accounts),
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
        )
    )
