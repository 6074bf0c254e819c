"""A node's Ethereum key: an encrypted JSON keystore (Web3 Secret Storage, scrypt) on disk.

The key never appears in a repr, a log line or an error message: ``NodeKey`` prints only its
address, and the passphrase is returned to the caller and nothing else. Errors are
``ConfigError``s that name the file and say what to do.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
from pathlib import Path
from typing import Any, NamedTuple

from eth_account import Account

from lpstream.errors import ConfigError

from .pm import address_of, to_checksum_address
from .private_files import read_private_file, write_private_file

__all__ = [
    "DEFAULT_SCRYPT_N",
    "KeystoreError",
    "NodeKey",
    "create_keystore",
    "load_key",
    "read_passphrase",
]

DEFAULT_SCRYPT_N = 2**18
"""scrypt's cost (N) for new keystores: geth's "standard" setting (256 MiB, about a second)."""


class KeystoreError(ConfigError):
    """A keystore cannot be created, read or decrypted."""


class NodeKey(NamedTuple):
    """A private key and its address; unpacks as ``(private_key, address)``.

    Its repr and str show the address only, so it can be logged and can appear in tracebacks.
    """

    private_key: bytes
    """The 32-byte secp256k1 private key."""
    address: str
    """Its checksummed address."""

    @classmethod
    def from_private_key(cls, private_key: bytes) -> NodeKey:
        """The key with its address derived.

        Raises:
            ValueError: not a valid 32-byte secp256k1 private key.
        """
        if len(private_key) != 32:
            raise ValueError("a private key is 32 bytes")
        return cls(private_key=bytes(private_key), address=address_of(private_key))

    def __repr__(self) -> str:
        return f"NodeKey(address={self.address!r}, private_key=<hidden>)"

    def __str__(self) -> str:
        return self.__repr__()

    def __format__(self, spec: str) -> str:
        return format(self.__repr__(), spec)


def create_keystore(
    path: str | os.PathLike[str],
    passphrase: str,
    *,
    private_key: bytes | None = None,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> str:
    """Writes a new encrypted keystore at ``path`` (mode 0600) and returns its address.

    The file appears whole or not at all, and an existing file is never overwritten.

    Args:
        path: where to write it; missing folders are made (mode 0700).
        passphrase: what encrypts it; not empty.
        private_key: the key to store; a fresh random one if None.
        scrypt_n: scrypt's cost, a power of two (lower it only in tests).

    Raises:
        KeystoreError: the file exists, the passphrase is empty, or the file cannot be written.
    """
    target = Path(path)
    if not passphrase:
        raise KeystoreError(f"refusing to write keystore {target} with an empty passphrase")
    if scrypt_n < 2 or scrypt_n & (scrypt_n - 1):
        raise ValueError("scrypt_n must be a power of two, at least 2")
    if target.exists():
        raise KeystoreError(f"keystore {target} already exists; not overwriting it")
    if private_key is None:
        private_key = _random_private_key()
    key = NodeKey.from_private_key(private_key)
    document = Account.encrypt(key.private_key, passphrase, kdf="scrypt", iterations=scrypt_n)
    data = json.dumps(document).encode()

    try:
        write_private_file(target, data)
    except FileExistsError:
        raise KeystoreError(f"keystore {target} already exists; not overwriting it") from None
    except OSError as exc:
        raise KeystoreError(f"cannot write keystore {target}: {exc.strerror or exc}") from exc
    return key.address


def load_key(path: str | os.PathLike[str], passphrase: str) -> NodeKey:
    """Decrypts the keystore at ``path``.

    Raises:
        KeystoreError: the file is missing or unreadable, is not a JSON keystore, or the
            passphrase is wrong ("wrong passphrase for keystore PATH").
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeystoreError(f"keystore {source} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeystoreError(f"cannot read keystore {source}: {exc}") from None
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeystoreError(f"keystore {source} is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("crypto"), dict):
        raise KeystoreError(f"keystore {source} is not an Ethereum JSON keystore")
    try:
        private_key = bytes(Account.decrypt(document, passphrase))
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise KeystoreError(f"wrong passphrase for keystore {source}") from None
        raise KeystoreError(f"keystore {source} cannot be decrypted: {exc}") from None
    except (TypeError, KeyError, NotImplementedError) as exc:
        # eth-keyfile raises NotImplementedError for a KDF or cipher it does not support.
        raise KeystoreError(f"keystore {source} cannot be decrypted: {exc!r}") from None
    try:
        key = NodeKey.from_private_key(private_key)
    except ValueError:
        raise KeystoreError(f"keystore {source} holds no valid secp256k1 key") from None
    named = document.get("address")
    if isinstance(named, str) and named:
        try:
            named_address = to_checksum_address(bytes.fromhex(named.removeprefix("0x")))
        except ValueError:
            named_address = named
        if named_address != key.address:
            raise KeystoreError(
                f"keystore {source} says it holds {named} but holds the key of {key.address}"
            )
    return key


def read_passphrase(passphrase_file: Path | None, *, prompt: bool, confirm: bool = False) -> str:
    """The keystore passphrase, from a file or typed at the terminal.

    A file must be readable by its owner only (like an SSH key); one trailing newline is
    removed. Without a file, the passphrase is asked for (twice with ``confirm``) when ``prompt``
    allows it.

    Raises:
        ConfigError: the file is missing, open to group or others, empty or not UTF-8; or no
            file was named and prompting is off; or the two typed passphrases differ.
    """
    if passphrase_file is not None:
        return _passphrase_from_file(passphrase_file)
    if not prompt:
        raise ConfigError("no passphrase: name a passphrase file (prompting is off)")
    passphrase = getpass.getpass("Keystore passphrase: ")
    if not passphrase:
        raise ConfigError("the passphrase is empty")
    if confirm and getpass.getpass("Repeat the passphrase: ") != passphrase:
        raise ConfigError("the two passphrases differ")
    return passphrase


def _passphrase_from_file(path: Path) -> str:
    try:
        data = read_private_file(path, "passphrase file")
    except FileNotFoundError:
        raise ConfigError(f"passphrase file {path} does not exist") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"passphrase file {path} is not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ConfigError(f"passphrase file {path} is empty")
    return text


def _random_private_key() -> bytes:
    while True:
        candidate = secrets.token_bytes(32)
        try:
            address_of(candidate)
        except ValueError:
            continue  # zero or not below the curve order: astronomically rare
        return candidate
