"""The chain's errors: the one place where web3's, eth-tester's, eth-abi's and the transport's
exceptions become :class:`ChainError`.

A revert becomes a ``ChainError`` whose ``reason`` is the contract's reason string (web3 and
eth-tester both say "execution reverted: X"); a transport failure is told in a few words
("Connection refused"), not urllib3's whole story; anything else web3 and its helpers raise is
shortened to one line. Every chain call runs inside :func:`mapped_errors`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eth_abi.exceptions import DecodingError, EncodingError
from eth_utils.exceptions import ValidationError as EthUtilsValidationError
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception

from lpstream.errors import LpstreamError

__all__ = ["ChainError", "checksum_address", "hex_string", "mapped_errors"]

_REVERT_PREFIX = re.compile(r"^\s*execution reverted:?\s*")

# eth-tester ships no type information; its exceptions are fetched by name. It is a dependency
# of lpstream (the dev chain), so it is always importable.
_eth_tester_errors = importlib.import_module("eth_tester.exceptions")
_TransactionFailed: type[Exception] = _eth_tester_errors.TransactionFailed
_ETH_TESTER_ERRORS: tuple[type[Exception], ...] = (
    _TransactionFailed,
    _eth_tester_errors.ValidationError,
    _eth_tester_errors.BlockNotFound,
    _eth_tester_errors.TransactionNotFound,
    _eth_tester_errors.FilterNotFound,
    _eth_tester_errors.AccountLocked,
)
_OTHER_ERRORS: tuple[type[Exception], ...] = (
    Web3Exception,
    *_ETH_TESTER_ERRORS,
    EthUtilsValidationError,
    DecodingError,
    EncodingError,
    ValueError,
)
"""What else web3, eth-tester, eth-abi and eth-account raise (after reverts and OSError)."""


class ChainError(LpstreamError):
    """A chain read or transaction failed.

    Attributes:
        reason: the contract's revert reason when the EVM reverted ("" for a revert without
            one); None when the failure was not a revert (transport, timeout, bad answer).
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


@contextmanager
def mapped_errors(action: str) -> Iterator[None]:
    """The one place third-party exceptions become ``ChainError`` (reverts keep their reason)."""
    try:
        yield
    except ChainError:
        raise
    except (ContractLogicError, _TransactionFailed) as exc:
        reason = _revert_reason(exc)
        message = f"{action} reverted: {reason}" if reason else f"{action} reverted"
        raise ChainError(message, reason=reason) from None
    except TimeExhausted as exc:
        raise ChainError(f"{action}: {exc}") from None
    except OSError as exc:  # requests' errors are OSErrors too
        raise ChainError(f"{action}: cannot reach the chain: {_transport_reason(exc)}") from None
    except _OTHER_ERRORS as exc:
        raise ChainError(f"{action}: {_short(exc)}") from None


def _revert_reason(exc: Exception) -> str:
    """The reason string of a revert ("execution reverted: X" from web3 and eth-tester alike)."""
    message = str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else str(exc)
    reason = _REVERT_PREFIX.sub("", message, count=1).strip()
    # eth-tester shows a revert without a reason as the empty bytes' repr.
    return "" if reason in ("b''", "execution reverted") else reason


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _transport_reason(exc: OSError) -> str:
    """The gist of a transport error ("Connection refused"), not urllib3's whole story."""
    if exc.strerror:
        return exc.strerror
    match = _ERRNO_TEXT.search(str(exc))
    if match is not None:
        return match.group(1).strip()
    if "timed out" in str(exc).lower():
        return "timed out"
    return _short(exc)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def hex_string(data: bytes) -> str:
    """``0x`` and the hex digits of ``data`` (a hash as web3 and explorers show it)."""
    return "0x" + bytes(data).hex()


def checksum_address(address: str) -> Any:
    """``address`` checksummed for web3; a bad one is a ``ChainError``."""
    if not Web3.is_address(address):
        raise ChainError(f"{address!r} is not an address")
    return Web3.to_checksum_address(address)
