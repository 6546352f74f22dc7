"""A reserve of disk space beside the database, given up when the disk is full.

Owns one file, ``edgegw.reserve`` in the data directory: ``size_bytes`` of zeros, written and
fsync'd while the disk has room. When a group commit fails because the filesystem is full
(SQLITE_FULL: another program's log, a core dump, an installer's copy filled the SD card), the
group committer deletes it: the space it held lets SQLite write the deletes of acknowledged rows
and the next groups, alerts first, instead of every commit failing until a person frees space.
It is written again once the filesystem has twice its size free, so the next full disk finds it.

Why a file and not a percentage: the agent cannot make another program stop writing, but it
can keep back room that only it will use. The reserve is counted nowhere else: ``outbox.max_bytes``
bounds what the outbox stores, the reserve only what a full disk leaves us.

It does not decide when the disk is full (``gateway.db.commit``) nor what is evicted (nothing is:
docs/outbox.md, "A full disk").
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

RESERVE_FILENAME = "edgegw.reserve"
_CHUNK_BYTES = 64 * 1024


class DiskReserve:
    """``size_bytes`` held back in ``directory``; 0 turns the reserve off."""

    def __init__(self, directory: Path, size_bytes: int) -> None:
        self.path = Path(directory) / RESERVE_FILENAME
        self.size_bytes = size_bytes
        self.releases = 0

    def free_bytes(self) -> int | None:
        """Bytes the filesystem of the data directory has free for us; None when it cannot say."""
        try:
            stat = os.statvfs(self.path.parent)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def has_room(self, at_least_bytes: int = 0) -> bool:
        """The filesystem has the reserve's size free (and ``at_least_bytes``); True when unknown."""
        free = self.free_bytes()
        return free is None or free >= max(self.size_bytes, at_least_bytes)

    @property
    def held(self) -> bool:
        """The reserve file exists at its full size."""
        try:
            return self.size_bytes > 0 and self.path.stat().st_size >= self.size_bytes
        except OSError:
            return False

    def ensure(self) -> bool:
        """Write the reserve if it is missing and the filesystem has twice its size free.

        Returns True when the reserve is held afterwards. Blocking file I/O: call it from the
        database thread or at start-up. A disk too full to write it leaves no partial file.
        """
        if self.size_bytes <= 0:
            return False
        if self.held:
            return True
        free = self.free_bytes()
        if free is None or free < 2 * self.size_bytes:
            return False
        partial = self.path.with_name(self.path.name + ".part")
        try:
            fd = os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                zeros = bytes(_CHUNK_BYTES)
                left = self.size_bytes
                while left > 0:
                    # Real blocks, not a sparse file: a hole would free nothing when deleted.
                    left -= os.write(fd, zeros[: min(left, _CHUNK_BYTES)])
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, self.path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            log.debug("disk reserve not written: %s", exc)
            return False
        return True

    def release(self) -> int:
        """Delete the reserve; returns the bytes it gave back (0 when there was none)."""
        try:
            size = self.path.stat().st_size
            self.path.unlink()
        except OSError:
            return 0
        self.releases += 1
        log.warning("disk full: released the %d-byte disk reserve %s", size, self.path)
        return size
