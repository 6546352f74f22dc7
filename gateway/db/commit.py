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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gateway import db
from gateway.db.reserve import DiskReserve
from gateway.db.salvage import SalvageReport, read_report
from gateway.errors import StorageError
from gateway.loglimit import RateLimitedLog

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_S = 1.0
"""After a failed group (a full disk), the next try waits this long."""
RESERVE_CHECK_S = 30.0
"""How often a released disk reserve is written again, if there is room."""
FAILURE_LOG_INTERVAL_S = 60.0
ROOM_AFTER_FULL_BYTES = 1 << 20
"""A full-disk episode ends when a group commits at once and the filesystem has this much free
(or the reserve's size, if larger)."""


class Database:
    """The SQLite connection of the running agent, used only from its own thread."""

    def __init__(self, path: Path, *, reserve: DiskReserve | None = None) -> None:
        self.path = path
        self._reserve = reserve
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgegw-db")
        # The running agent never refuses to start on a corrupt file: it is moved aside (ERROR
        # logged) and a fresh one is created; ``quarantined`` says where the old one went.
        self.quarantined: Path | None = None
        self._conn: sqlite3.Connection = self._executor.submit(self._open, path).result()
        # What the salvage of the damaged copy rescued and lost, for health and the final counters.
        self.salvage: SalvageReport | None = None
        if self.quarantined is not None:
            self.salvage = self.run_sync(read_report, self.quarantined)

    def _open(self, path: Path) -> sqlite3.Connection:
        try:
            conn, self.quarantined = db.connect_or_quarantine(path)
        except StorageError:
            # Started on a full disk: SQLite cannot even create its -wal and -shm files. The
            # backlog must still go out (its acknowledgements free space): give up the reserve.
            reserve = self._reserve
            if reserve is None or reserve.has_room() or not reserve.release():
                raise
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

    # Optional: ``relieve_full(conn, taken)`` on the database thread after a group failed with
    # SQLITE_FULL (the transaction was rolled back): free what can be freed without losing
    # anything (the outbox deletes its acknowledged rows); the group is then written once more.
    # Optional: ``give_back(taken)`` on the loop when the group could not be committed at all:
    # the sink keeps the writes for the next group (never drops them silently).


class GroupCommitter:
    """Commit the sinks' pending writes together, bounded in time and count."""

    def __init__(
        self,
        database: Database,
        sinks: Sequence[CommitSink],
        *,
        interval_s: float,
        max_pending: int,
        reserve: DiskReserve | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = database
        self._sinks = list(sinks)
        self._interval_s = interval_s
        self._max_pending = max_pending
        self._reserve = reserve
        self._wall_clock = wall_clock
        self._pending = 0
        self._wake = asyncio.Event()  # something is pending
        self._full = asyncio.Event()  # commit now: urgent, or max_pending reached
        self.commits = 0
        self.failures = 0
        self.disk_full = 0
        """Groups that met a full disk (SQLITE_FULL), since the start."""
        self.full_since_s: float | None = None
        """Wall time of the first failed group of the current full-disk episode; None while writable."""
        self.last_error: str | None = None
        self.failing = False
        """The last group could not be committed: what the sinks hold now is not durable."""
        self._next_reserve_check_s = 0.0
        self._failure_log = RateLimitedLog(log, FAILURE_LOG_INTERVAL_S)
        self._failed_in_episode = 0
        if reserve is not None and reserve.size_bytes > 0:
            # The WAL is checkpointed before it holds half the reserve: on a full disk, the released
            # reserve always has room for that checkpoint (the WAL's pages into the database file),
            # after which the WAL is written from its start again and needs no new blocks.
            database.run_sync(_limit_wal, reserve.size_bytes // 2)

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
                    # Logged by flush(); the sinks kept their writes. Try again a little later
                    # (the disk may be freed): not at every notify, which would spin on a full disk.
                    await asyncio.sleep(max(self._interval_s, RETRY_S))
                    self._wake.set()
        except asyncio.CancelledError:
            if self._wake.is_set():
                try:
                    await self.flush()
                except (StorageError, RuntimeError) as exc:  # RuntimeError: database already closed
                    log.error("final group commit on cancel failed: %s", exc)
            raise

    async def flush(self) -> None:
        """Commit everything pending now (also used at shutdown).

        A group that cannot be committed is handed back to its sinks (``give_back``), never
        dropped: on a full disk the records wait in memory (bounded by the outbox) until space
        comes back. Raises ``StorageError`` when the group failed.
        """
        self._wake.clear()
        self._full.clear()
        self._pending = 0
        taken = [(sink, sink.take()) for sink in self._sinks]
        taken = [(sink, item) for sink, item in taken if item is not None]
        if not taken:
            return
        met_full = False
        try:
            try:
                await self._db.run(_write_all, taken)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorname != "SQLITE_FULL":
                    raise
                # SQLite rolled the whole group back. Give up the disk reserve, let the sinks
                # free what they can without losing anything (acknowledged rows), try once more.
                self.disk_full += 1
                met_full = True
                if self.full_since_s is None:
                    self.full_since_s = self._wall_clock()
                    log.error("DISK FULL: %s (%s); records wait in memory", self._db.path.parent, exc)
                if self._reserve is not None:
                    await self._db.run(_release, self._reserve)
                await self._db.run(_relieve_full, taken)
                await self._db.run(_write_all, taken)
        except Exception as exc:  # sqlite3.Error, OSError, or a sink's own bug: never drop the group
            self.failures += 1
            self.failing = True
            self.last_error = str(exc)
            for sink, item in taken:
                give_back = getattr(sink, "give_back", None)
                if give_back is not None:
                    give_back(item)
            self._failed_in_episode += 1
            # On a full disk a group fails every RETRY_S: one line a minute with the count.
            self._failure_log.error(
                "group_commit_failed",
                "group commit failed, its writes wait in memory for the next one: %r",
                exc,
            )
            raise StorageError(f"group commit failed: {exc}") from exc
        self.commits += 1
        self.failing = False
        for sink, item in taken:
            try:
                sink.committed(item)
            except Exception:
                # Durable already: one sink's bug must not skip the others' bookkeeping nor stop
                # the commit task (which would leave every later record in memory).
                log.exception("after commit, %s failed", type(sink).__name__)
        # Still "full" while groups only fit after freeing room, or while the filesystem has less
        # room than the reserve (a group may fit in WAL blocks that acks freed, on a disk still full).
        if (
            self.full_since_s is not None
            and not met_full
            and (self._reserve is None or self._reserve.has_room(ROOM_AFTER_FULL_BYTES))
        ):
            log.warning(
                "disk writable again after %.0f s of full disk (%d groups could not be committed)",
                self._wall_clock() - self.full_since_s, self._failed_in_episode,
            )  # fmt: skip
            self.full_since_s = None
            self.last_error = None
            self._failed_in_episode = 0
        await self._keep_reserve()

    async def _keep_reserve(self) -> None:
        """Write the disk reserve again once there is room (checked at most every RESERVE_CHECK_S)."""
        reserve = self._reserve
        if reserve is None or reserve.size_bytes <= 0:
            return
        now_s = time.monotonic()
        if now_s < self._next_reserve_check_s:
            return
        self._next_reserve_check_s = now_s + RESERVE_CHECK_S
        await self._db.run(_ensure, reserve)


def _write_all(conn: sqlite3.Connection, taken: list[tuple[CommitSink, Any]]) -> None:
    with db.transaction(conn):
        for sink, item in taken:
            sink.write(conn, item)


def _relieve_full(conn: sqlite3.Connection, taken: list[tuple[CommitSink, Any]]) -> None:
    # The WAL only grows between checkpoints: copying it into the database file and truncating it
    # gives its blocks back to the filesystem, room for the next transaction to append to.
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error as exc:
        log.debug("checkpoint on a full disk failed: %s", exc)
    for sink, item in taken:
        relieve = getattr(sink, "relieve_full", None)
        if relieve is not None:
            relieve(conn, item)


def _limit_wal(conn: sqlite3.Connection, max_wal_bytes: int) -> None:
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    pages = max(64, min(1000, max_wal_bytes // page_size))  # 1000: SQLite's default
    conn.execute(f"PRAGMA wal_autocheckpoint = {pages}").fetchall()


def _release(_conn: sqlite3.Connection, reserve: DiskReserve) -> None:
    reserve.release()


def _ensure(_conn: sqlite3.Connection, reserve: DiskReserve) -> None:
    reserve.ensure()
