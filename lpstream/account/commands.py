"""``lpstream account …``: a node's money and stake on the protocol's contracts.

Every command talks to an Ethereum JSON-RPC endpoint (``--eth-url``) through the protocol's
Controller (``--controller``), signing with an encrypted keystore (:mod:`.flags`). Every write
prints its transaction hash, waits for the receipt and says in which block it was mined.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from lpstream.cliopts import option

from .amounts import format_wei, percent_to_ppm, wei_argument
from .flags import ChainFlags, account_address, chain_flags, progress
from .price import set_price
from .stake import lock_json, rebond, unbond, unbonding_lines, withdraw_stake

if TYPE_CHECKING:
    from payments.chain.client import ChainClient

__all__ = ["account"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def account() -> None:
    """Fund, bond, register and inspect an account on the protocol's contracts."""


# Funds that back tickets


@account.command()
@click.argument("amount", metavar="AMOUNT", callback=wei_argument)
@chain_flags()
def deposit(amount: int, chain: ChainFlags) -> None:
    """Add AMOUNT to the account's ticket deposit (pays winning tickets)."""
    chain.connect().fund_deposit(amount, progress=progress)
    click.echo(f"deposit funded with {format_wei(amount)}")


@account.command()
@click.argument("amount", metavar="AMOUNT", callback=wei_argument)
@chain_flags()
def reserve(amount: int, chain: ChainFlags) -> None:
    """Add AMOUNT to the account's reserve (backs tickets when the deposit runs short)."""
    chain.connect().fund_reserve(amount, progress=progress)
    click.echo(f"reserve funded with {format_wei(amount)}")


@account.command()
@chain_flags()
def unlock(chain: ChainFlags) -> None:
    """Start the unlock period of the deposit and reserve (then `withdraw`)."""
    client = chain.connect()
    client.unlock(progress=progress)
    info = client.sender_info(account_address(client))
    click.echo(
        f"unlocking: withdraw from round {info.withdraw_round} (now round {client.current_round()})"
    )


@account.command("cancel-unlock")
@chain_flags()
def cancel_unlock(chain: ChainFlags) -> None:
    """Cancel a pending unlock: the funds back tickets again."""
    chain.connect().cancel_unlock(progress=progress)
    click.echo("unlock cancelled")


@account.command()
@chain_flags()
def withdraw(chain: ChainFlags) -> None:
    """Withdraw the deposit and reserve once the unlock period is over."""
    client = chain.connect()
    info = client.sender_info(account_address(client))
    client.withdraw(progress=progress)
    click.echo(f"withdrew {format_wei(info.deposit + info.reserve)}")


# Stake and the orchestrator role


@account.command()
@click.argument("amount", metavar="AMOUNT", callback=wei_argument)
@option("--to", default=None, help="Address to delegate to (default: the account itself).")
@chain_flags()
def bond(amount: int, to: str | None, chain: ChainFlags) -> None:
    """Bond AMOUNT as stake, to the account itself (an orchestrator) or to --to."""
    client = chain.connect()
    client.bond(amount, to, progress=progress)
    click.echo(f"bonded {format_wei(amount)} to {to or client.address}")


@account.command()
@option(
    "--reward-cut",
    type=float,
    default=0.0,
    callback=percent_to_ppm,
    help="Percent of rewards kept (recorded; lpstream's contracts pay no rewards).",
)
@option(
    "--fee-share",
    type=float,
    default=0.0,
    callback=percent_to_ppm,
    help="Percent of fees shared with delegators (recorded; all fees go to the orchestrator).",
)
@option(
    "--service-uri",
    default=None,
    help="Where gateways reach this orchestrator, e.g. quic://host:8936 (published on chain).",
)
@chain_flags()
def register(reward_cut: int, fee_share: int, service_uri: str | None, chain: ChainFlags) -> None:
    """Register the account as an orchestrator (bond to itself first)."""
    client = chain.connect()
    address = account_address(client)
    if client.bonded_amount(address) == 0:
        raise click.ClickException(
            f"{address} has no stake: bond to itself first (lpstream account bond AMOUNT)"
        )
    client.register(reward_cut, fee_share, progress=progress)
    if service_uri is not None:
        client.set_service_uri(service_uri, progress=progress)
    click.echo(
        f"registered {address} as an orchestrator; it joins the active set when the next "
        "round is initialized"
    )


@account.command("withdraw-fees")
@chain_flags()
def withdraw_fees(chain: ChainFlags) -> None:
    """Withdraw the fees redeemed tickets credited to this orchestrator."""
    client = chain.connect()
    fees = client.pending_fees(account_address(client))
    client.withdraw_fees(progress=progress)
    click.echo(f"withdrew {format_wei(fees)} of fees")


@account.command("initialize-round")
@chain_flags()
def initialize_round(chain: ChainFlags) -> None:
    """Initialize the current round (anyone may; nothing happens if it already is)."""
    client = chain.connect()
    tx = client.initialize_round(progress=progress)
    round_ = client.current_round()
    click.echo(f"round {round_} initialized" if tx else f"round {round_} was already initialized")


# What the chain says of an account


@account.command()
@option("--address", default=None, help="Account to show (default: the keystore's).")
@option("--json", "as_json", is_flag=True, default=False, help="Print JSON.")
@chain_flags(key_required=False)
def status(address: str | None, as_json: bool, chain: ChainFlags) -> None:
    """Show an account: balance, deposit, reserve, unlock, stake, unbonding locks,
    orchestrator state, fees."""
    if address is None and chain.keystore is None:
        raise click.UsageError("name an account: --keystore or --address")
    if address is None:
        client = chain.connect()
        address = account_address(client)
    else:
        client = chain.connect(signing=False)
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
    locks = unbonding_lines(report["unbonding_locks"])
    lines = [
        ("address", report["address"]),
        ("balance", _wei_text(report["balance"])),
        ("deposit", _wei_text(report["deposit"])),
        ("reserve", _wei_text(report["reserve"])),
        ("unlock", unlock_state),
        ("bonded", _wei_text(report["bonded"])),
        ("stake", _wei_text(report["stake"])),
        ("unbonding", locks[0]),
        *(("", more) for more in locks[1:]),
        ("orchestrator", orchestrator),
        ("pending fees", _wei_text(report["pending_fees"])),
        ("service URI", report["service_uri"] or "(none)"),
        ("round", f"{report['current_round']} (block {report['latest_block']})"),
    ]
    for label, value in lines:
        click.echo(f"{label + ':' if label else '':<14}{value}")


def _status_report(client: ChainClient, address: str) -> dict[str, Any]:
    snapshot = client.snapshot()
    locks = client.unbonding_locks(address)
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
        "unbonding_locks": [lock_json(lock, snapshot.current_round) for lock in locks],
        "registered": client.is_registered_transcoder(address),
        "active": client.is_active_transcoder(address),
        "pending_fees": client.pending_fees(address),
        "service_uri": client.service_uri(address),
        "current_round": snapshot.current_round,
        "latest_block": snapshot.latest_block,
    }


def _wei_text(wei: int) -> str:
    return f"{format_wei(wei)} ({wei} wei)"


# Stake on its way out, and the orchestrator's price (modules of their own).
account.add_command(unbond)
account.add_command(rebond)
account.add_command(withdraw_stake)
account.add_command(set_price)
