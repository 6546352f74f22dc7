"""Files that must survive a crash or a power cut: written whole or not at all.

Owns the one way the agent replaces a small file (keys, trust state, pushed configuration,
rules state): a temporary file in the same directory with its final mode from the first byte,
fsynced, renamed over the old one, and the directory fsynced so the rename itself is durable.
A crash at any point leaves either the old content or the new, never a mix. It does not own
what is in the files, nor the database (``gateway.db`` has SQLite's own journal).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o640, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` (created with ``mode``: no window with wider rights).

    ``durable=False`` keeps the all-or-nothing replacement but not the two fsyncs: for a file that
    only matters until the next reboot (a power cut makes it worthless anyway), where the fsyncs
    would only wear the SD card and block the caller.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600; fchmod before any byte is written.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)  # the rename itself must survive a power cut
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a rename, a new or removed file) durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
