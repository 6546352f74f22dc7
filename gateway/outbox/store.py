"""The durable outbox: accepted records in SQLite until the broker's PUBACK.

Owns the ``outbox`` table (``gateway/db/schema_v1.sql``): putting records (made
durable by the ``GroupCommitter``, to which ``Outbox`` is a ``CommitSink``),
leasing committed rows to the uplink, deleting them on ack and giving them back
on a failed publish. A record is *accepted* once its group commit returned
(ARCHITECTURE.md §3.3); from then on it is deleted only by ``ack()``.

It does not own the MQTT side (``gateway.uplink``), the envelope format, nor,
yet, the byte/age bounds and eviction policy of §3.3 (issue 7).

Leasing: a leased row is one handed to the uplink and not yet acked or
released. Leases live in memory only: after a restart every row is unleased
again and is delivered again (at least once, §3.3).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.db.commit import Database
from gateway.errors import StorageError
from gateway.messages import Record

log = logging.getLogger(__name__)

_INSERT = (
    "INSERT OR IGNORE INTO outbox (record_id, kind, priority, created_mono, body) VALUES (?, ?, ?, ?, ?)"
)


class CommitNotify(Protocol):
    """What ``Outbox.put`` calls to ask for a commit: ``GroupCommitter.notify`` fits."""

    def __call__(self, count: int, *, urgent: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class Leased:
    """One committed row handed to the uplink; ``body_json`` is the record as stored."""

    seq: int
    record_id: str
    body_json: str


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """The committed contents of the outbox (pending, uncommitted puts are not counted)."""

    depth: int
    """Rows in the table (leased ones included: they are deleted only on ack)."""
    bytes: int
    """Sum of the stored bodies' lengths (the JSON is ASCII, so characters are bytes)."""
    oldest_created_mono: float | None
    """``created_mono`` of the oldest row, None when empty."""


@dataclass(slots=True)
class PendingWrite:
    """What ``take()`` hands to the committer: records plus, after ``write()``, how many were new."""

    records: list[tuple[Record, float]]
    inserted: int = field(default=0)


class Outbox:
    """Durable store-and-forward buffer of records (a ``CommitSink`` of the group committer).

    ``committer_notify`` is usually set after construction, once the committer exists
    (the committer needs its sinks first): ``outbox.committer_notify = committer.notify``.
    """

    def __init__(
        self,
        database: Database,
        committer_notify: CommitNotify | None = None,
        *,
        mono_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = database
        self.committer_notify = committer_notify
        self._mono_clock = mono_clock
        self._pending: list[tuple[Record, float]] = []
        # Leasing state. This foundation walks the table in seq order with an
        # in-memory cursor; priorities (alerts first, ARCHITECTURE.md §3.2) and
        # the bounded-size eviction of §3.3 arrive with issue 7.
        self._cursor_seq = 0  # every row with seq <= cursor was leased at least once since start
        self._leased: set[int] = set()
        self._released: list[int] = []  # rows given back, leased again before anything newer
        self._lease_lock = asyncio.Lock()
        # "Committed, unleased rows may exist". True at start: the file may hold rows
        # from before a restart. ``_generation`` changes whenever it may become true,
        # so a lease that raced with a commit does not clear it wrongly.
        self._maybe_more = True
        self._generation = 0
        self._ready = asyncio.Event()
        self.counters: Counter[str] = Counter()

    # --- on the loop: producers -------------------------------------------------

    def put(self, record: Record) -> None:
        """Queue ``record`` for the next group commit; an alert asks for an urgent commit."""
        self._pending.append((record, self._mono_clock()))
        self.counters["put"] += 1
        if self.committer_notify is not None:
            self.committer_notify(1, urgent=record.kind == "alert")

    # --- CommitSink ---------------------------------------------------------------

    def take(self) -> PendingWrite | None:
        if not self._pending:
            return None
        taken = PendingWrite(self._pending)
        self._pending = []
        return taken

    def write(self, conn: sqlite3.Connection, taken: PendingWrite) -> None:
        # On the database thread: serialising here keeps the JSON work off the loop.
        before = conn.total_changes
        conn.executemany(
            _INSERT,
            [
                (
                    record.record_id,
                    record.kind,
                    record.priority,
                    created_mono,
                    json.dumps(record.body, separators=(",", ":")),
                )
                for record, created_mono in taken.records
            ],
        )
        # INSERT OR IGNORE: the same frame heard twice (two gateways, a retransmission
        # the MAC let through) is one row, because its id is stable (§3.4).
        taken.inserted = conn.total_changes - before

    def committed(self, taken: PendingWrite) -> None:
        self.counters["committed"] += taken.inserted
        self.counters["duplicate"] += len(taken.records) - taken.inserted
        if taken.inserted:
            self._more_available()

    # --- on the loop: the uplink side -------------------------------------------

    async def wait_records(self) -> None:
        """Return when committed rows that are not leased may exist."""
        while not self._maybe_more:
            self._ready.clear()
            await self._ready.wait()

    async def lease(self, n: int) -> list[Leased]:
        """Up to ``n`` committed, unleased rows, released ones first, then oldest first."""
        if n <= 0:
            return []
        async with self._lease_lock:
            generation = self._generation
            again = sorted(self._released)[:n]
            try:
                rows = await self._db.run(_select_rows, again, self._cursor_seq, n - len(again))
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read the outbox: {exc}") from exc
            again_set = set(again)
            self._released = [seq for seq in self._released if seq not in again_set]
            leased = [Leased(seq, record_id, body) for seq, record_id, body in rows]
            for item in leased:
                self._leased.add(item.seq)
                self._cursor_seq = max(self._cursor_seq, item.seq)
            if len(leased) < n and generation == self._generation and not self._released:
                self._maybe_more = False
            return leased

    async def ack(self, seqs: Sequence[int]) -> None:
        """The broker has the rows: delete them (one transaction)."""
        if not seqs:
            return
        try:
            await self._db.run(_delete_rows, list(seqs))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot delete acknowledged outbox rows: {exc}") from exc
        self._leased.difference_update(seqs)
        self.counters["acked"] += len(seqs)

    def release(self, seqs: Sequence[int]) -> None:
        """Give leased rows back (their publish failed); they are the next ones leased."""
        back = [seq for seq in seqs if seq in self._leased]
        if not back:
            return
        self._leased.difference_update(back)
        self._released.extend(back)
        self.counters["released"] += len(back)
        self._more_available()

    async def stats(self) -> OutboxStats:
        try:
            depth, size, oldest = await self._db.run(_stats)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read outbox stats: {exc}") from exc
        return OutboxStats(depth=depth, bytes=size, oldest_created_mono=oldest)

    @property
    def leased_count(self) -> int:
        return len(self._leased)

    def _more_available(self) -> None:
        self._generation += 1
        self._maybe_more = True
        self._ready.set()


# --- on the database thread ---------------------------------------------------------


def _select_rows(
    conn: sqlite3.Connection, again: list[int], after_seq: int, limit: int
) -> list[tuple[int, str, str]]:
    rows: list[tuple[int, str, str]] = []
    if again:
        marks = ",".join("?" * len(again))
        rows.extend(
            conn.execute(
                f"SELECT seq, record_id, body FROM outbox WHERE seq IN ({marks}) ORDER BY seq", again
            ).fetchall()
        )
    if limit > 0:
        rows.extend(
            conn.execute(
                "SELECT seq, record_id, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        )
    return rows


def _delete_rows(conn: sqlite3.Connection, seqs: list[int]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in seqs])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _stats(conn: sqlite3.Connection) -> tuple[int, int, float | None]:
    depth, size, oldest = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(length(body)), 0), MIN(created_mono) FROM outbox"
    ).fetchone()
    return int(depth), int(size), oldest
