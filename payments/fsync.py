"""Making a new file's name survive a power cut, not only the file's bytes."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_folder"]


def fsync_folder(folder: Path) -> None:
    """Makes the names of files just created in ``folder`` durable (POSIX; no-op elsewhere).

    ``fsync`` on a file flushes its bytes; the entry that names it lives in the folder, which
    needs its own ``fsync``. Where a folder cannot be opened or synced, nothing is done.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
