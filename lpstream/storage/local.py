"""An object store in a local directory (``file:///path``).

How this works: a key ``a/b/c.ts`` is the file ``ROOT/a/b/c.ts``. A write goes to a temporary
file in the same folder (its name starts with ``.``, which no key part may, so listings never
see it), is flushed with ``fsync``, then renamed over the target with ``os.replace`` and the
folder is synced too: a reader sees the old object or the new one whole, never half of one,
and after a power cut the name still points at the bytes. Deleting an object removes the
folders it leaves empty, up to the root, so a deleted recording leaves no tree behind; a write
racing such a removal recreates its folder and tries again.

Every key goes through :func:`check_key`, and the resolved path must still lie under the
root (a symbolic link inside the root cannot lead a key out of it). Blocking file I/O runs in
threads, at most ``max_threads`` at once per store.
"""

from __future__ import annotations

import builtins
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import trio

from payments.fsync import fsync_folder

from .store import ObjectInfo, StoreError, StoreUnavailable, check_key, is_key

__all__ = ["LocalStore"]

_T = TypeVar("_T")

_TEMP_SUFFIX = ".part"
_WRITE_TRIES = 3
"""A write whose folder another task's delete just removed recreates it; this many tries."""


class LocalStore:
    """:class:`~lpstream.storage.ObjectStore` in a directory of the local file system.

    A directory has no metadata: the content type and cache-control given to :meth:`put` are
    not stored (whoever serves the files derives them from the name, see
    :func:`~lpstream.storage.content_type_of`), and :meth:`public_url` is None.

    Args:
        root: the directory; created by :meth:`check` if it is missing.
        max_threads: blocking file operations running at once.
    """

    def __init__(self, root: Path, *, max_threads: int = 8) -> None:
        self._root = Path(os.path.abspath(root))
        self._limiter = trio.CapacityLimiter(max_threads)

    @property
    def root(self) -> Path:
        """The directory (absolute)."""
        return self._root

    @property
    def url(self) -> str:
        """``file:///…`` of the root."""
        return self._root.as_uri()

    def public_url(self, key: str) -> str | None:
        """None: a directory has no HTTP address of its own."""
        check_key(key)
        return None

    def __repr__(self) -> str:
        return f"LocalStore({self.url})"

    async def check(self) -> None:
        """Creates the root if missing and writes, reads back and deletes a probe file.

        Raises:
            StoreUnavailable: the directory cannot be created, written or read.
        """
        await self._run(self._check_sync)

    async def put(self, key: str, data: bytes, *, content_type: str, cache_control: str) -> None:
        """Writes ``data`` under ``key`` atomically; the content type and cache-control are not
        kept (see the class docstring).

        Raises:
            StoreError: a bad key, or the file system refused (the reason is in the message).
        """
        path = self._path_of(key)
        await self._run(self._write_sync, path, data)

    async def get(self, key: str) -> bytes | None:
        """The file's bytes, None if there is no such object."""
        path = self._path_of(key)
        return await self._run(self._read_sync, path, key)

    async def list(self, prefix: str) -> Sequence[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order (temporary files of
        writes in progress, and files whose names are not keys, are left out)."""
        _check_prefix(prefix)
        return await self._run(self._list_sync, prefix)

    async def delete(self, key: str) -> None:
        """Removes the file and the folders it leaves empty; nothing if there is none."""
        path = self._path_of(key)
        await self._run(self._delete_sync, path, key)

    # -- inside threads -------------------------------------------------------------------

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)

    def _path_of(self, key: str) -> Path:
        check_key(key)
        return self._root.joinpath(*key.split("/"))

    def _confine(self, path: Path) -> None:
        """Refuses a path that symbolic links lead out of the root (defence in depth: keys
        that pass :func:`check_key` cannot name one by themselves)."""
        real_root = os.path.realpath(self._root)
        if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
            raise StoreError(f"{path} leads outside {self._root}")

    def _check_sync(self) -> None:
        probe = self._root / f".probe-{secrets.token_hex(8)}"
        payload = secrets.token_bytes(32)
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            self._write_sync(probe, payload)
            read_back = probe.read_bytes()
            probe.unlink()
        except (OSError, StoreError) as exc:
            raise StoreUnavailable(
                f"directory {self._root} cannot be used as a store: {_reason(exc)}"
            ) from None
        if read_back != payload:
            raise StoreUnavailable(f"directory {self._root} did not give back what was written")

    def _write_sync(self, path: Path, data: bytes) -> None:
        self._confine(path)
        for attempt in range(_WRITE_TRIES):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._replace_sync(path, data)
                return
            except (FileNotFoundError, FileExistsError):
                # A delete emptied and removed the folder meanwhile (mkdir's exist_ok check
                # then finds it gone, FileExistsError): make it again.
                if attempt == _WRITE_TRIES - 1:
                    raise StoreError(f"cannot write {path}: its folder keeps vanishing") from None
            except OSError as exc:
                raise StoreError(f"cannot write {path}: {_reason(exc)}") from None

    @staticmethod
    def _replace_sync(path: Path, data: bytes) -> None:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}")
        try:
            with temp.open("xb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        fsync_folder(path.parent)

    def _read_sync(self, path: Path, key: str) -> bytes | None:
        self._confine(path)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {key!r}: {_reason(exc)}") from None

    def _delete_sync(self, path: Path, key: str) -> None:
        self._confine(path)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return  # a folder of other objects, not an object
        except OSError as exc:
            raise StoreError(f"cannot delete {key!r}: {_reason(exc)}") from None
        folder = path.parent
        while folder != self._root and folder.is_relative_to(self._root):
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or already gone): the folders above are in use too
            folder = folder.parent

    def _list_sync(self, prefix: str) -> builtins.list[ObjectInfo]:
        # Walk only the deepest folder the prefix names whole: "a/b/c" lists under "a/b".
        folder_parts = prefix.split("/")[:-1]
        start = self._root.joinpath(*folder_parts)
        self._confine(start)
        found: builtins.list[ObjectInfo] = []
        for directory, folders, files in os.walk(start, onerror=_walk_error):
            base = Path(directory).relative_to(self._root).parts
            folders[:] = [name for name in folders if not name.startswith(".")]
            for name in files:
                key = "/".join((*base, name))
                if not key.startswith(prefix) or not is_key(key):
                    continue
                try:
                    status = os.lstat(os.path.join(directory, name))
                except FileNotFoundError:
                    continue  # deleted while we walked
                except OSError as exc:
                    raise StoreError(f"cannot list {key!r}: {_reason(exc)}") from None
                if not stat.S_ISREG(status.st_mode):
                    continue  # links and devices are not objects
                found.append(ObjectInfo(key, status.st_size, status.st_mtime))
        found.sort(key=lambda info: info.key)
        return found


def _check_prefix(prefix: str) -> None:
    """A listing prefix is a key, or a key's start ending in ``/``; ``""`` lists everything."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)


def _walk_error(exc: OSError) -> None:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return  # nothing under that prefix
    raise StoreError(f"cannot list {exc.filename}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
