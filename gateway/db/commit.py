"""The database thread and group commit.

Owns the agent's single database thread (``Database``: every SQL statement of the
running agent goes through it, so the event loop never blocks on an fsync) and
``GroupCommitter``, which turns many small writes from several stages into one
durable transaction: at most every ``interval_s`` or as soon as ``max_pending``
writes wait, or at once for an urgent write (an alert).

Stages take part through a ``CommitSink``: ``take()`` (on the loop) hands over what
is pending, ``write()`` (on the database thread, inside the transaction) writes it,
``committed()`` (on the loop, after COMMIT returned) tells the stage it is durable.
Because a record and the session's new frame counter go through the same
transaction, no crash can keep one without the other.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gateway import db
from gateway.errors import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Database:
    """The SQLite connection of the running agent, used only from its own thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgegw-db")
        # The running agent never refuses to start on a corrupt file: it is moved aside (ERROR
        # logged) and a fresh one is created; ``quarantined`` says where the old one went.
        self.quarantined: Path | None = None
        self._conn: sqlite3.Connection = self._executor.submit(self._open, path).result()

    def _open(self, path: Path) -> sqlite3.Connection:
        conn, self.quarantined = db.connect_or_quarantine(path)
        return conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the database thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._conn, *args)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the database thread, blocking (start-up and shutdown only)."""
        return self._executor.submit(fn, self._conn, *args).result()

    def close(self) -> None:
        self._executor.submit(self._conn.close).result()
        self._executor.shutdown(wait=True)


class CommitSink(Protocol):
    """A stage's pending writes, committed by the ``GroupCommitter``."""

    def take(self) -> Any | None:
        """On the loop: hand over the pending writes and forget them (None when there are none)."""

    def write(self, conn: sqlite3.Connection, taken: Any) -> None:
        """On the database thread, inside the open transaction: write what ``take()`` returned."""

    def committed(self, taken: Any) -> None:
        """On the loop, after COMMIT: the writes are durable."""

    # Optional: ``relieve_full(conn)`` on the database thread after a group failed with
    # SQLITE_FULL (the transaction was rolled back); the group is then written once more.


class GroupCommitter:
    """Commit the sinks' pending writes together, bounded in time and count."""

    def __init__(
        self, database: Database, sinks: Sequence[CommitSink], *, interval_s: float, max_pending: int
    ) -> None:
        self._db = database
        self._sinks = list(sinks)
        self._interval_s = interval_s
        self._max_pending = max_pending
        self._pending = 0
        self._wake = asyncio.Event()  # something is pending
        self._full = asyncio.Event()  # commit now: urgent, or max_pending reached
        self.commits = 0
        self.failures = 0
        self.disk_full = 0

    def notify(self, count: int = 1, *, urgent: bool = False) -> None:
        """A sink has ``count`` more pending writes; ``urgent`` commits without waiting."""
        self._pending += count
        self._wake.set()
        if urgent or self._pending >= self._max_pending:
            self._full.set()

    async def run(self) -> None:
        """Commit forever; each group waits at most ``interval_s``.

        Cancelled while writes are pending (the outbox's acked deletes arrive until the
        forwarder is drained), it commits them once more before ending.
        """
        try:
            while True:
                await self._wake.wait()
                if not self._full.is_set():
                    try:
                        await asyncio.wait_for(self._full.wait(), timeout=self._interval_s)
                    except TimeoutError:
                        pass
                try:
                    await self.flush()
                except StorageError:
                    # Logged by flush(); keep committing later groups (the disk may recover).
                    await asyncio.sleep(self._interval_s)
        except asyncio.CancelledError:
            if self._wake.is_set():
                try:
                    await self.flush()
                except (StorageError, RuntimeError) as exc:  # RuntimeError: database already closed
                    log.error("final group commit on cancel failed: %s", exc)
            raise

    async def flush(self) -> None:
        """Commit everything pending now (also used at shutdown)."""
        self._wake.clear()
        self._full.clear()
        self._pending = 0
        taken = [(sink, sink.take()) for sink in self._sinks]
        taken = [(sink, item) for sink, item in taken if item is not None]
        if not taken:
            return
        try:
            try:
                await self._db.run(_write_all, taken)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorname != "SQLITE_FULL":
                    raise
                # SQLite rolled the whole group back. Sinks that can free space (the outbox
                # evicts by its policy) do so, then the same group is tried once more.
                self.disk_full += 1
                await self._db.run(_relieve_full, [sink for sink, _item in taken])
                await self._db.run(_write_all, taken)
        except (sqlite3.Error, OSError) as exc:
            self.failures += 1
            # The writes are lost to the database but were never acknowledged as
            # accepted: the frames' PUSH_ACK says only that the datagram arrived.
            log.error("group commit failed, %d sink batches dropped: %s", len(taken), exc)
            raise StorageError(f"group commit failed: {exc}") from exc
        self.commits += 1
        for sink, item in taken:
            sink.committed(item)


def _write_all(conn: sqlite3.Connection, taken: list[tuple[CommitSink, Any]]) -> None:
    with db.transaction(conn):
        for sink, item in taken:
            sink.write(conn, item)


def _relieve_full(conn: sqlite3.Connection, sinks: list[CommitSink]) -> None:
    for sink in sinks:
        relieve = getattr(sink, "relieve_full", None)
        if relieve is not None:
            relieve(conn)
