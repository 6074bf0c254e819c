"""Taking stake back out: ``lpstream account unbond``, ``rebond`` and ``withdraw-stake``.

Livepeer's rules, which lpstream's BondingManager follows: ``unbond AMOUNT`` moves AMOUNT of
the account's bond into a new unbonding lock (ids count up from 0 per account) that
``withdraw-stake LOCK_ID`` pays out from its withdraw round on (the current round plus the
unbonding period); until it is paid out, ``rebond LOCK_ID`` cancels it and the amount is bonded
again, to the account's delegate, or to ``--to`` (the account itself by default) once it has
nothing bonded. An orchestrator that unbonds all of its own bond leaves the pool; having bonded
to itself again it registers again. ``lpstream account status`` lists the pending locks.

Each command checks what it can before it sends anything (the lock exists, its round has come,
the amount is bonded), so a mistake costs no gas and says what is wrong; the contract checks
the same again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from lpstream.cliopts import option

from .amounts import format_wei, wei_argument
from .flags import ChainFlags, account_address, chain_flags, progress

if TYPE_CHECKING:
    from payments.chain.client import ChainClient, UnbondingLock

__all__ = ["lock_json", "rebond", "unbond", "unbonding_lines", "withdraw_stake"]


def lock_json(lock: UnbondingLock, current_round: int) -> dict[str, Any]:
    """A lock as ``lpstream account status --json`` lists it."""
    return {
        "id": lock.id,
        "amount": lock.amount,
        "withdraw_round": lock.withdraw_round,
        "withdrawable": lock.withdrawable(current_round),
    }


def unbonding_lines(locks: list[dict[str, Any]]) -> list[str]:
    """The locks of a status report (``lock_json``), one line each, for people."""
    lines = []
    for lock in locks:
        when = (
            f"withdrawable now (since round {lock['withdraw_round']})"
            if lock["withdrawable"]
            else f"withdrawable from round {lock['withdraw_round']}"
        )
        lines.append(
            f"lock {lock['id']}: {format_wei(lock['amount'])} ({lock['amount']} wei), {when}"
        )
    return lines or ["(none)"]


def _existing_lock(client: ChainClient, address: str, lock_id: int) -> UnbondingLock:
    lock = client.unbonding_lock(address, lock_id)
    if lock is not None:
        return lock
    pending = [str(lock.id) for lock in client.unbonding_locks(address)]
    listed = f"pending: {', '.join(pending)}" if pending else "none pending"
    raise click.ClickException(
        f"{address} has no unbonding lock {lock_id} ({listed}; a lock is gone once it is "
        "withdrawn or rebonded)"
    )


@click.command()
@click.argument("amount", metavar="AMOUNT", callback=wei_argument)
@chain_flags()
def unbond(amount: int, chain: ChainFlags) -> None:
    """Start unbonding AMOUNT of the account's bond (then `withdraw-stake` its lock)."""
    if amount == 0:
        raise click.BadParameter("unbond more than 0", param_hint="AMOUNT")
    client = chain.connect()
    address = account_address(client)
    bonded = client.bonded_amount(address)
    if amount > bonded:
        raise click.ClickException(
            f"cannot unbond {format_wei(amount)}: {address} has {format_wei(bonded)} bonded"
        )
    registered = client.is_registered_transcoder(address)
    lock = client.unbond(amount, progress=progress)
    click.echo(
        f"unbonding {format_wei(amount)}: lock {lock.id}, withdraw-stake from round "
        f"{lock.withdraw_round} (now round {client.current_round()})"
    )
    if registered and not client.is_registered_transcoder(address):
        click.echo(f"{address} left the orchestrator pool: none of its own bond is left")


@click.command()
@click.argument("lock_id", metavar="LOCK_ID", type=click.IntRange(min=0))
@option(
    "--to",
    default=None,
    help="Whom to bond to when the account has nothing bonded (default: the account "
    "itself); with a bond, it goes back to the account's delegate.",
)
@chain_flags()
def rebond(lock_id: int, to: str | None, chain: ChainFlags) -> None:
    """Cancel unbonding lock LOCK_ID: its amount is bonded again."""
    client = chain.connect()
    address = account_address(client)
    lock = _existing_lock(client, address, lock_id)
    delegate = client.delegate_of(address)
    if delegate is not None:
        if to is not None and to.lower() != delegate.lower():
            raise click.ClickException(
                f"{address} is bonded to {delegate}: a rebond goes back there (to bond to "
                f"{to}, rebond and then `lpstream account bond 0 --to {to}`)"
            )
        client.rebond(lock_id, progress=progress)
    else:
        delegate = to or address
        client.rebond_from_unbonded(delegate, lock_id, progress=progress)
    click.echo(f"rebonded {format_wei(lock.amount)} from lock {lock_id} to {delegate}")
    if delegate.lower() == address.lower() and not client.is_registered_transcoder(address):
        click.echo("to take work as an orchestrator again: lpstream account register")


@click.command("withdraw-stake")
@click.argument("lock_id", metavar="LOCK_ID", type=click.IntRange(min=0))
@chain_flags()
def withdraw_stake(lock_id: int, chain: ChainFlags) -> None:
    """Withdraw unbonding lock LOCK_ID to the account once its withdraw round has come."""
    client = chain.connect()
    address = account_address(client)
    lock = _existing_lock(client, address, lock_id)
    now = client.current_round()
    if not lock.withdrawable(now):
        raise click.ClickException(
            f"lock {lock_id} can be withdrawn from round {lock.withdraw_round}; it is round {now}"
        )
    client.withdraw_stake(lock_id, progress=progress)
    click.echo(f"withdrew {format_wei(lock.amount)} of stake (lock {lock_id})")
