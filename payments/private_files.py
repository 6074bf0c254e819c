"""Files only their owner may read: keystores, passphrases, a node's private keys.

A private file is written whole or not at all, mode 0600 whatever the umask, never over an
existing file, and its name survives a power cut (:func:`write_private_file`). Reading one
refuses a file that group or others may access, as ssh does with its keys
(:func:`read_private_file`): a secret that others could read is no longer only ours.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from lpstream.errors import ConfigError

from .fsync import fsync_folder

__all__ = ["read_private_file", "write_private_file"]


def write_private_file(path: Path, data: bytes) -> None:
    """Writes ``data`` to a new file at ``path``, readable and writable by its owner only.

    Missing folders are made (mode 0700). The file appears whole or not at all, and an existing
    file is never replaced.

    Raises:
        FileExistsError: ``path`` exists.
        OSError: the file or its folder cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)  # atomic, and fails rather than replace a file
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(path.parent)


def read_private_file(path: Path, what: str) -> bytes:
    """The bytes of the private file at ``path``.

    Args:
        path: the file.
        what: what it is, for the errors ("passphrase file").

    Raises:
        FileNotFoundError: there is no such file.
        ConfigError: it cannot be read, is not a regular file, or group or others may access
            it (the message says how to make it private).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        if os.name == "posix" and mode & 0o077:
            raise ConfigError(
                f"{what} {path} is accessible by group or others (mode "
                f"{stat.S_IMODE(mode):04o}); make it private: chmod 600 {path}"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)
