"""One agent per data directory: an exclusive lock on ``<data_dir>/edgegw.lock`` for the process's life.

Owns the lock file. ``edgegw run`` takes the lock (``fcntl.flock``, exclusive, non-blocking)
before it reads the pushed configuration, counts an agent version's start, opens the database,
the key file or any socket, and writes its pid in the file; a second agent on the same data_dir
stops at once with ``AlreadyRunning`` naming that pid. The kernel releases the lock when the
process ends, however it ends (exit 75 for a restart, SIGKILL, a crash), so a lock file left
behind never blocks a start: only a live holder does. The file is never deleted (deleting a lock
file lets two processes lock two different files).

Across ``os.execve`` (the base install running another agent version, ``gateway.cli.run_cmd``) the
lock is handed on, not released: ``pass_on`` keeps the descriptor open through the exec and names it
in ``_EDGEGW_LOCK_FD``, and the new program adopts that same open file, so no second agent can slip
in between. It does not own anything else in the data directory.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import AlreadyRunning, StorageError

__all__ = ["EXIT_ALREADY_RUNNING", "FD_ENV", "LOCK_NAME", "InstanceLock", "acquire"]

LOCK_NAME = "edgegw.lock"
FD_ENV = "_EDGEGW_LOCK_FD"
"""Names the inherited lock descriptor across an exec; not ``EDGEGW_...``, which the config would read."""
EXIT_ALREADY_RUNNING = 3
"""Exit code of ``edgegw run`` when another agent holds the data directory (docs/cli.md)."""

_held: dict[Path, InstanceLock] = {}


@dataclass
class InstanceLock:
    """The lock this process holds on one data directory."""

    path: Path
    fd: int

    def pass_on(self, env: dict[str, str]) -> None:
        """Keep the lock through ``os.execve(..., env)``: the program run next adopts it."""
        os.set_inheritable(self.fd, True)
        env[FD_ENV] = str(self.fd)

    def release(self) -> None:
        """Give the lock up before the process ends (tests; the agent keeps it to the end)."""
        for key, lock in list(_held.items()):
            if lock is self:
                del _held[key]
        os.close(self.fd)  # closing the only descriptor of the open file releases the flock


def acquire(data_dir: Path) -> InstanceLock:
    """Take the lock of ``data_dir`` (created if missing) or raise ``AlreadyRunning``.

    Idempotent within a process: ``edgegw run`` takes it first, ``gateway.app.run`` again.
    Raises ``StorageError`` when the lock file cannot be opened or locked at all.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    key = data_dir.resolve()
    held = _held.get(key)
    if held is not None:
        return held
    path = key / LOCK_NAME
    fd = _adopt(path)
    if fd is None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise StorageError(f"cannot open the lock file {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"pid {pid}" if pid is not None else "pid unknown"
            raise AlreadyRunning(
                f"another edgegw agent ({who}) is running on {key}: it holds {path};"
                " not starting a second one",
                pid=pid,
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {path}: {exc}") from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, only the pid is not shown to a second agent
    lock = InstanceLock(path, fd)
    _held[key] = lock
    return lock


def _adopt(path: Path) -> int | None:
    """The lock descriptor inherited through an exec (``pass_on``), if it is this very lock file."""
    named = os.environ.pop(FD_ENV, None)
    if named is None:
        return None
    try:
        fd = int(named)
        inherited, on_disk = os.fstat(fd), os.stat(path)
    except (ValueError, OSError):
        return None
    if (inherited.st_dev, inherited.st_ino) != (on_disk.st_dev, on_disk.st_ino):
        os.environ[FD_ENV] = named  # another data_dir's lock: leave it for its owner
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # already ours: the same open file holds it
    except OSError:
        return None
    os.set_inheritable(fd, False)
    return fd


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
