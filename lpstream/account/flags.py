"""What every ``lpstream account`` command shares: the chain flags, the connection, the errors.

:func:`chain_flags` adds ``--eth-url``, ``--controller``, ``--keystore`` and
``--passphrase-file`` to a command and hands it one :class:`ChainFlags` instead of the four
values; it also turns lpstream's errors into click's (a message and exit status 1, no
traceback). The chain's modules load web3 and eth_account, so they are imported only when a
command connects.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click

from lpstream.cliopts import option
from lpstream.errors import ConfigError, LpstreamError

if TYPE_CHECKING:
    from payments.chain.client import ChainClient
    from payments.keys import NodeKey

__all__ = ["ChainFlags", "account_address", "chain_flags", "progress"]

Command = Callable[..., Any]

_FILE = click.Path(dir_okay=False, path_type=Path)


@attrs.frozen(kw_only=True)
class ChainFlags:
    """Where the chain is and whose key signs, as the flags name them."""

    eth_url: str
    """The Ethereum JSON-RPC URL."""
    controller: str
    """The protocol's Controller contract."""
    keystore: Path | None
    """The encrypted keystore of the account that signs, if named."""
    passphrase_file: Path | None
    """The keystore's passphrase file; None asks at the terminal."""

    def connect(self, *, signing: bool = True) -> ChainClient:
        """A chain client, signing with the keystore's key (``signing`` and a keystore named)
        or read-only."""
        from payments.chain.client import ChainClient

        key = self.load_key() if signing and self.keystore is not None else None
        return ChainClient.connect(self.eth_url, controller=self.controller, key=key)

    def load_key(self) -> NodeKey:
        """The keystore's key, decrypted with the passphrase (from its file or typed)."""
        from payments.keys import load_key, read_passphrase

        if self.keystore is None:
            raise ConfigError("no keystore given")
        passphrase = read_passphrase(self.passphrase_file, prompt=sys.stdin.isatty())
        return load_key(self.keystore, passphrase)


def chain_flags(*, key_required: bool = True) -> Callable[[Command], Command]:
    """Adds the chain flags to a command, which takes them as ``chain: ChainFlags``."""
    flags = [
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
            type=_FILE,
            required=key_required,
            default=None,
            help="Encrypted JSON keystore of the account that signs.",
        ),
        option(
            "--passphrase-file",
            type=_FILE,
            default=None,
            help="File holding the keystore's passphrase (mode 0600); "
            "asked for at the terminal if absent.",
        ),
    ]

    def decorate(command: Command) -> Command:
        @functools.wraps(command)
        def run(
            *args: Any,
            eth_url: str,
            controller: str,
            keystore: Path | None,
            passphrase_file: Path | None,
            **kwargs: Any,
        ) -> Any:
            chain = ChainFlags(
                eth_url=eth_url,
                controller=controller,
                keystore=keystore,
                passphrase_file=passphrase_file,
            )
            try:
                return command(*args, chain=chain, **kwargs)
            except LpstreamError as exc:
                raise click.ClickException(str(exc)) from None

        for flag in reversed(flags):
            run = flag(run)
        return run

    return decorate


def progress(line: str) -> None:
    """Prints a write's progress ("sent 0x…, waiting for receipt…")."""
    click.echo(line)


def account_address(client: ChainClient) -> str:
    """The address of the key ``client`` signs with.

    Raises:
        ConfigError: the client has no key.
    """
    if client.address is None:  # pragma: no cover - account commands always load a key
        raise ConfigError("no keystore given")
    return client.address
