"""The durable outbox: accepted records in SQLite until the broker's PUBACK, bounded and prioritised.

Owns the ``outbox`` and ``outbox_meta`` tables (``gateway/db/schema_v1.sql``):
putting records (made durable by the ``GroupCommitter``, to which ``Outbox`` is a
``CommitSink``; alerts ask for an urgent commit), leasing committed rows to the
uplink highest priority first, deleting them on ack, giving them back on a failed
publish, and the bounds of ARCHITECTURE.md §3.3: ``max_bytes`` (evict the lowest
priority, oldest first; alerts last) and ``max_age_s`` on the outbox clock
(``gateway.outbox.age_clock``, never the raw wall clock). Evictions are counted per
priority class, in memory and durably in ``outbox_meta``.

It does not own the MQTT side (``gateway.uplink``), the envelope format nor the
record shape (the pipeline's).

Leasing: a leased row is one handed to the uplink and not yet acked or released.
Leases live in memory only: after a restart every row is unleased again and is
delivered again (at least once, §3.3). Per priority, an in-memory cursor on
``seq`` (AUTOINCREMENT, never reused) excludes the rows already leased, so a
lease is one index seek per priority, whatever the backlog.

Acking: ``ack`` takes the rows off the totals at once and hands their deletion to
the next group commit (``DELETE ... BETWEEN`` per run of consecutive seqs, before
that group's inserts). A delete in its own transaction rewrote every page it
touched once more in the WAL; in the group's transaction the freed pages are
reused by the inserts and written once (bench/bench_outbox.py: half the bytes per
record). A delete lost to a crash only means a duplicate delivery with the same
id, which §3.3 allows; a failed group keeps its deletes for the next one.

A full disk (docs/outbox.md) is transient, never a reason to discard: a group that fails is
handed back (``give_back``) and its records wait in memory, bounded by ``memory_queue_records``
(beyond it the lowest-priority, oldest uncommitted records are dropped and counted); the next
groups are small and take alerts first; acknowledged rows are deleted in a transaction of their
own to free pages. No committed row is evicted for it: only ``max_bytes`` and ``max_age_s`` evict.

Quarantine: a leased row that can never be sent (bigger than the broker accepts) moves to the
``outbox_quarantine`` table (created here, outside the versioned schema, so an older agent
still opens the file) with the next group, counted and kept; it never blocks the rows behind it.
``requeue_quarantined`` moves them all back with a later group (new seqs, created now on the
outbox clock), for a cause that went away (``edgegw buffer quarantine --requeue``).

Threads: counters, leases and the byte/row totals live on the event loop; the
SQL runs on the database thread, which only reads the totals (under a lock).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby, repeat
from operator import itemgetter
from typing import NamedTuple, Protocol

from gateway.db import transaction
from gateway.db.commit import Database
from gateway.errors import StorageError
from gateway.loglimit import RateLimitedLog
from gateway.messages import Priority, Record
from gateway.outbox import age_clock

log = logging.getLogger(__name__)

PRIORITY_CLASSES = ("alert", "reading", "event", "diagnostics")
ROW_OVERHEAD_BYTES = 48
"""Counted per row on top of body and id: the other columns, the row header and its index entry."""
CLOCK_SAVE_S = 10.0
EXPIRY_CHECK_S = 10.0
DEDUP_WINDOW = 65_536
_MAX_PRIORITY = 1 << 30
_ALERT = int(Priority.ALERT)
_PRIORITY_OF, _SIZE_OF, _SEQ_OF = (
    itemgetter(2),
    itemgetter(4),
    itemgetter(0),
)  # of an _Row; _SEQ_OF of a Leased


def _compact_encoder() -> Callable[[object], str]:
    """``json.dumps(obj, separators=(",", ":"))`` without its per-call set-up.

    ``JSONEncoder.encode`` builds the C encoder again on every call: half the cost of a
    small record (bench/bench_outbox.py). Built once here; the pure-Python encoder when
    the C one is missing. No cycle check: bodies are JSON-shaped data built by the pipeline.
    """
    compact = json.JSONEncoder(separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return compact.encode
    try:
        chunks = make(
            None, compact.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
        )
    except TypeError:  # another signature in another Python
        return compact.encode

    def encode(obj: object) -> str:
        return "".join(chunks(obj, 0))

    return encode


_ENCODE = _compact_encoder()
_Row = tuple[str, str, int, float, int, str]
"""An outbox row to insert: record_id, kind, priority, created_s, size, body."""

_OVERHEAD = ROW_OVERHEAD_BYTES
MEMORY_QUEUE_RECORDS = 5000
"""Records waiting in memory for a commit, at most (a full disk); beyond, the lowest priority,
oldest ones are dropped and counted (``dropped_uncommitted.<class>``): they were never committed."""
CONSTRAINED_TAKE = 200
"""While the disk is full, a group takes at most this many records, highest priority first."""
DROP_LOG_INTERVAL_S = 60.0
_CREATE_QUARANTINE = (
    "CREATE TABLE IF NOT EXISTS outbox_quarantine ("
    " seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL, kind TEXT NOT NULL, priority INTEGER NOT NULL,"
    " created_s REAL NOT NULL, size INTEGER NOT NULL, body TEXT NOT NULL,"
    " reason TEXT NOT NULL, quarantined_s REAL NOT NULL)"
)
_QUARANTINE = (
    "INSERT OR IGNORE INTO outbox_quarantine"
    " SELECT seq, record_id, kind, priority, created_s, size, body, ?, ? FROM outbox WHERE seq = ?"
)
_REQUEUE = (
    "INSERT INTO outbox (record_id, kind, priority, created_s, size, body)"
    " SELECT record_id, kind, priority, ?, size, body FROM outbox_quarantine ORDER BY seq"
    " RETURNING priority, size"
)
_DELETE_RANGE = "DELETE FROM outbox WHERE seq BETWEEN ? AND ?"
_INSERT = "INSERT INTO outbox (record_id, kind, priority, created_s, size, body) VALUES (?, ?, ?, ?, ?, ?)"
_UPSERT_META = (
    "INSERT INTO outbox_meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_ADD_META = (
    "INSERT INTO outbox_meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value"
)


def priority_class(priority: int) -> str:
    """The class name a priority is counted under: alert, reading, event or diagnostics."""
    if priority >= Priority.ALERT:
        return "alert"
    if priority >= Priority.READING:
        return "reading"
    if priority >= Priority.EVENT:
        return "event"
    return "diagnostics"


def stored_priority(record: Record) -> int:
    """An alert is an alert whatever priority its producer gave it."""
    return max(record.priority, int(Priority.ALERT)) if record.kind == "alert" else record.priority


class CommitNotify(Protocol):
    """What ``Outbox.put`` calls to ask for a commit: ``GroupCommitter.notify`` fits."""

    def __call__(self, count: int, *, urgent: bool) -> None: ...


class Leased(NamedTuple):
    """One committed row handed to the uplink; ``body_json`` is the record as stored.

    A NamedTuple rather than a frozen dataclass: it is built straight from the SQL row
    (``Leased._make``), thousands per second on the drain path.
    """

    seq: int
    record_id: str
    priority: int
    body_json: str
    size: int
    """Bytes counted against ``max_bytes``: taken off the totals when acked."""


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """The committed contents of the outbox (pending, uncommitted puts are not counted)."""

    depth: int
    """Rows in the table (leased ones included: they are deleted only on ack)."""
    bytes: int
    """Stored bytes as counted against ``max_bytes`` (body + id + ROW_OVERHEAD_BYTES per row)."""
    oldest_age_s: float | None
    """Age of the oldest row on the outbox clock; None when empty."""
    max_bytes: int
    depth_by_class: dict[str, int]
    bytes_by_class: dict[str, int]
    evicted_total: dict[str, int]
    """Since the database file was created: ``evicted.<class>`` (full) and ``expired.<class>`` (age)."""
    leased: int
    ingest_bytes_s: float
    quarantined: int = 0
    """Rows in ``outbox_quarantine``: never sent, kept until ``edgegw buffer quarantine --requeue``."""
    waiting_in_memory: int = 0
    """Records accepted and not yet committed (a full disk holds them here, bounded)."""
    """Recent rate of committed bytes (moving average), for a headroom estimate."""

    @property
    def oldest_created_mono(self) -> float | None:
        """Compatibility for callers computing ``time.monotonic() - x``; prefer ``oldest_age_s``."""
        return None if self.oldest_age_s is None else time.monotonic() - self.oldest_age_s


@dataclass(slots=True)
class PendingWrite:
    """What ``take()`` hands to the committer; ``write()`` fills in what it did."""

    records: list[tuple[Record, float]]
    deleted: list[int] = field(default_factory=list)
    """Seqs acked since the last commit: deleted first in this transaction."""
    inserted: int = 0
    duplicates: int = 0
    added: Counter[int] = field(default_factory=Counter)
    added_bytes: Counter[int] = field(default_factory=Counter)
    removed: list[tuple[int, int, int]] = field(default_factory=list)
    """(seq, priority, size) of rows evicted or expired in this transaction."""
    evicted: Counter[str] = field(default_factory=Counter)
    quarantined: list[tuple[int, str]] = field(default_factory=list)
    """(seq, reason) of leased rows moved to ``outbox_quarantine`` here (before the deletes)."""
    requeue: list[asyncio.Future[int]] = field(default_factory=list)
    """``requeue_quarantined`` callers answered by this group (it moves the quarantine back first)."""
    requeued: list[tuple[int, int]] = field(default_factory=list)
    """(priority, size) of the rows moved back from ``outbox_quarantine`` here."""
    unencodable: list[str] = field(default_factory=list)
    """Records whose body could not be serialised (a producer's bug): not stored, counted."""


class Outbox:
    """Durable store-and-forward buffer of records (a ``CommitSink`` of the group committer).

    ``committer_notify`` is usually set after construction, once the committer exists
    (the committer needs its sinks first): ``outbox.committer_notify = committer.notify``.
    Construction reads the table's totals and restores the outbox clock (blocking, at start-up).
    """

    def __init__(
        self,
        database: Database,
        committer_notify: CommitNotify | None = None,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        max_age_s: float = 7 * 86400.0,
        mono_clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        memory_queue_records: int = MEMORY_QUEUE_RECORDS,
    ) -> None:
        self._db = database
        self.committer_notify = committer_notify
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._wall_clock = wall_clock
        self._pending: list[tuple[Record, float]] = []
        self._recent: deque[str] = deque()
        self._recent_set: set[str] = set()
        self._totals_lock = threading.Lock()
        self._count: Counter[int] = Counter()
        self._bytes: Counter[int] = Counter()
        self._memory_queue_records = memory_queue_records
        # After a group failed (a full disk): how many records the next group may take, alerts
        # first; doubled after each commit until it covers what waits (None: no limit).
        self._take_limit: int | None = None
        self._quarantine: list[tuple[int, str]] = []  # (seq, reason) to move with the next group
        self._quarantine_set: set[int] = set()
        self._requeue_asked: list[asyncio.Future[int]] = []  # requeue_quarantined() callers, until committed
        self.quarantined_total = 0
        self._rare_log = RateLimitedLog(log, DROP_LOG_INTERVAL_S)
        self._cursor: dict[int, int] = {}  # per priority: rows with seq <= cursor were leased since start
        self._leased: dict[int, Leased] = {}
        self._acked: list[int] = []  # acked seqs whose DELETE has not been committed yet
        self._acked_set: set[int] = set()
        self._released: dict[int, list[int]] = {}
        self._maybe: dict[int, bool] = {}  # per priority: committed, unleased rows may exist
        self._generation: dict[int, int] = {}
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._lease_lock = asyncio.Lock()
        self.counters: Counter[str] = Counter()
        self.evicted_total: Counter[str] = Counter()
        self._ingest_bytes_s = 0.0
        self._since_rate_bytes = 0
        try:
            state = database.run_sync(_load_state, DEDUP_WINDOW)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the outbox: {exc}") from exc
        for priority, count, size in state.totals:
            self._count[priority] = count
            self._bytes[priority] = size
            self._maybe[priority] = True
        for record_id in reversed(state.recent_ids):
            self._remember(record_id)
        self.quarantined_total = state.quarantined
        self.evicted_total.update({k: int(v) for k, v in state.meta.items() if "." in k})
        restored = age_clock.restore(
            saved_clock_s=state.meta.get("clock_s"),
            saved_wall_s=state.meta.get("wall_s"),
            newest_record_s=state.newest_created_s,
            wall_now_s=wall_clock(),
            max_credit_s=max_age_s if max_age_s > 0 else 30 * 86400.0,
        )
        log.info(
            "outbox: %d records, %d bytes; clock at %.0f s (%s)", state.depth, self.bytes, *_clock(restored)
        )
        self._clock = age_clock.OutboxClock(restored.base_s, mono_clock)
        self._last_save_s = self._rate_mark_s = self._clock.now_s()
        self._last_expiry_s = -EXPIRY_CHECK_S
        try:
            database.run_sync(_save_meta, self._clock_meta())
        except sqlite3.Error as exc:
            # A full disk at start-up must not stop the agent: the backlog can still be read and
            # delivered, and its acknowledgements free space. The clock is saved with a later group.
            log.error("outbox clock not saved at start (%s); delivering the backlog all the same", exc)

    # --- on the loop: producers -------------------------------------------------

    def put(self, record: Record) -> None:
        """Queue ``record`` for the next group commit; an alert asks for an urgent commit.

        A record whose id was put recently (the same frame heard twice) is dropped here.
        """
        # Called for every record: _remember() and stored_priority() are inlined.
        self.counters["put"] += 1
        record_id = record.record_id
        recent_set = self._recent_set
        if record_id in recent_set:
            self.counters["duplicate"] += 1
            return
        recent = self._recent
        recent.append(record_id)
        recent_set.add(record_id)
        if len(recent) > DEDUP_WINDOW:
            recent_set.discard(recent.popleft())
        pending = self._pending
        pending.append((record, self._clock.now_s()))
        if self._take_limit is not None and len(pending) > self._memory_queue_records:
            self._bound_pending()
        notify = self.committer_notify
        if notify is not None:
            notify(1, urgent=record.kind == "alert" or record.priority >= _ALERT)

    def now_s(self) -> float:
        """The outbox clock (seconds, only forward; see ``gateway.outbox.age_clock``)."""
        return self._clock.now_s()

    def _remember(self, record_id: str) -> None:
        self._recent.append(record_id)
        self._recent_set.add(record_id)
        if len(self._recent) > DEDUP_WINDOW:
            self._recent_set.discard(self._recent.popleft())

    # --- CommitSink ---------------------------------------------------------------

    def take(self) -> PendingWrite | None:
        if not self._pending and not self._acked and not self._quarantine and not self._requeue_asked:
            return None
        # The acked seqs stay in ``_acked`` until ``committed()``: a failed group leaves
        # them for the next one (deleting a deleted row is harmless).
        records = self._pending
        limit = self._take_limit
        if limit is not None and len(records) > limit:
            # The disk was full: a small group, alerts first, has a chance where all would not.
            order = sorted(range(len(records)), key=lambda i: -records[i][0].priority)
            chosen = set(order[:limit])
            self._pending = [r for i, r in enumerate(records) if i not in chosen]
            records = [r for i, r in enumerate(records) if i in chosen]
        else:
            self._pending = []
        return PendingWrite(
            records, list(self._acked), quarantined=list(self._quarantine), requeue=list(self._requeue_asked)
        )

    def give_back(self, taken: PendingWrite) -> None:
        """The group could not be committed (a full disk): its records wait in memory for the next
        one, in front of the newer ones; acked deletes and quarantines stay queued anyway."""
        self._take_limit = CONSTRAINED_TAKE
        self._pending[:0] = taken.records
        if len(self._pending) > self._memory_queue_records:
            self._bound_pending()
        if self._pending and self.committer_notify is not None:
            self.committer_notify(0, urgent=False)

    def _bound_pending(self) -> None:
        """Drop the lowest-priority, oldest uncommitted records beyond the memory queue's bound."""
        pending = self._pending
        if len(pending) <= self._memory_queue_records:
            return
        # Down to 90 % of the bound, not to the bound: a sort per put would be quadratic.
        over = len(pending) - self._memory_queue_records * 9 // 10
        # Stable sort by priority: within a priority, the oldest (front) go first.
        doomed = set(sorted(range(len(pending)), key=lambda i: pending[i][0].priority)[:over])
        self._count_dropped(pending[i] for i in doomed)
        self._pending = [item for i, item in enumerate(pending) if i not in doomed]
        self._rare_log.error(
            "dropped_uncommitted",
            "outbox memory queue full (%d records at most wait for a commit): uncommitted records "
            "dropped, totals %s",
            self._memory_queue_records,
            {k: v for k, v in self.counters.items() if k.startswith("dropped_uncommitted.")},
        )

    @property
    def waiting_in_memory(self) -> int:
        """Records put and not yet committed (more than a group's worth only while the disk is full)."""
        return len(self._pending)

    def write(self, conn: sqlite3.Connection, taken: PendingWrite) -> None:
        # On the database thread, inside the group's transaction: serialising here keeps
        # the JSON work off the loop. Written again after SQLITE_FULL: start from scratch.
        taken.removed.clear()
        taken.unencodable.clear()
        taken.evicted.clear()
        taken.added.clear()
        taken.added_bytes.clear()
        self._requeue(conn, taken)  # before this group's own quarantines: those were just refused
        self._move_to_quarantine(conn, taken)
        if taken.deleted:
            conn.executemany(_DELETE_RANGE, _runs(taken.deleted))
        rows: list[_Row] = []
        append = rows.append
        for record, created_s in taken.records:
            try:
                body = _ENCODE(record.body)
            except (TypeError, ValueError) as exc:
                # A producer's bug (a body that is not JSON-shaped) must not fail every group after
                # it: that one record is refused, counted and logged, the others commit.
                taken.unencodable.append(f"{record.record_id}: {exc}")
                continue
            record_id = record.record_id
            priority = record.priority
            if record.kind == "alert" and priority < _ALERT:
                priority = _ALERT  # as stored_priority()
            size = len(body) + len(record_id) + _OVERHEAD
            append((record_id, record.kind, priority, created_s, size, body))
        now_s = self._clock.now_s()
        if self.max_age_s > 0 and now_s - self._last_expiry_s >= EXPIRY_CHECK_S:
            self._expire(conn, now_s, taken)
        rows = self._make_room(conn, rows, taken)
        conn.executemany(_INSERT, rows)
        taken.inserted = len(rows)
        added, added_bytes = taken.added, taken.added_bytes
        for priority, group in groupby(rows, _PRIORITY_OF):  # runs of one priority: C per row
            sizes = list(map(_SIZE_OF, group))
            added[priority] += len(sizes)
            added_bytes[priority] += sum(sizes)
        if taken.evicted:
            conn.executemany(_ADD_META, list(taken.evicted.items()))
        if now_s - self._last_save_s >= CLOCK_SAVE_S:
            conn.executemany(_UPSERT_META, self._clock_meta())
            self._last_save_s = now_s

    def committed(self, taken: PendingWrite) -> None:
        self._since_rate_bytes += sum(taken.added_bytes.values())
        now_s = self._clock.now_s()
        if now_s - self._rate_mark_s >= CLOCK_SAVE_S:
            rate = self._since_rate_bytes / (now_s - self._rate_mark_s)
            self._ingest_bytes_s = (
                rate if self._ingest_bytes_s == 0 else 0.8 * self._ingest_bytes_s + 0.2 * rate
            )
            self._since_rate_bytes, self._rate_mark_s = 0, now_s
        with self._totals_lock:
            for seq, priority, size in taken.removed:
                if seq in self._acked_set:
                    continue  # acked after take(): its ack already took it off the totals
                self._count[priority] -= 1
                self._bytes[priority] -= size
            self._count.update(taken.added)
            self._bytes.update(taken.added_bytes)
        for seq, _priority, _size in taken.removed:
            self._leased.pop(seq, None)  # evicted while in flight: its ack must not count it again
        if taken.deleted:
            # By value, not by position: two groups in flight (a shutdown flush) may share seqs.
            done = set(taken.deleted)
            self._acked = [seq for seq in self._acked if seq not in done]
            self._acked_set -= done
        if taken.quarantined:
            moved = {seq for seq, _reason in taken.quarantined}
            self._quarantine = [item for item in self._quarantine if item[0] not in moved]
            self._quarantine_set -= moved
        if taken.requeue:
            self._requeue_committed(taken)
        if self._take_limit is not None:
            # A commit went through: grow the next group (slow start), so a disk that has room
            # again clears the memory queue in a few groups without a failure each time.
            self._take_limit *= 2
            if len(self._pending) <= self._take_limit:
                self._take_limit = None
        self.counters["committed"] += taken.inserted
        if taken.unencodable:
            self.counters["unencodable"] += len(taken.unencodable)
            log.error("records not stored, their body is not JSON: %s", taken.unencodable[:3])
        for key, count in taken.evicted.items():
            self.counters[key] += count
            self.evicted_total[key] += count
        if taken.evicted:
            log.warning(
                "outbox bounds: %s (max_bytes %d, max_age_s %.0f)",
                dict(taken.evicted),
                self.max_bytes,
                self.max_age_s,
            )
            if any(k.endswith(".alert") for k in taken.evicted):
                log.error("outbox evicted ALERTS: %s", dict(taken.evicted))
        for priority in taken.added:
            self._more_available(priority)

    def relieve_full(self, conn: sqlite3.Connection, taken: PendingWrite) -> None:
        """On the database thread, after a group failed on a full disk: delete the acknowledged
        rows in a transaction of their own (it may fit where the whole group did not; the pages
        it frees take the next inserts). Nothing committed and unacknowledged is evicted: a
        full disk is transient (docs/outbox.md, "A full disk")."""
        # (Counted by the committer: this runs on the database thread, the counters live on the loop.)
        if not taken.deleted:
            return
        try:
            with transaction(conn):
                # Quarantined seqs are among the deleted ones: move them first, as write() does.
                self._move_to_quarantine(conn, taken)
                conn.executemany(_DELETE_RANGE, _runs(taken.deleted))
        except sqlite3.Error as exc:
            log.debug("acknowledged rows not deleted on a full disk: %s", exc)

    def _move_to_quarantine(self, conn: sqlite3.Connection, taken: PendingWrite) -> None:
        """Copy the quarantined rows into ``outbox_quarantine`` (database thread); the DELETE comes after."""
        if taken.quarantined:
            now_wall = self._wall_clock()
            conn.execute(_CREATE_QUARANTINE)  # missing if the first start of this version met a full disk
            conn.executemany(_QUARANTINE, [(reason, now_wall, seq) for seq, reason in taken.quarantined])

    def abandon_waiting(self) -> int:
        """At shutdown, when the disk still refuses them: count the records that never committed as
        ``dropped_uncommitted.<class>`` and log them (ERROR); returns how many."""
        dropped = self._count_dropped(self._pending)
        self._pending = []
        if dropped:
            log.error("stopping with uncommitted records (the disk refused them): %s", dict(dropped))
        return sum(dropped.values())

    def _count_dropped(self, waiting: Iterable[tuple[Record, float]]) -> Counter[str]:
        """Count records that never committed as ``dropped_uncommitted.<class>``; returns the counts."""
        dropped = Counter(
            f"dropped_uncommitted.{priority_class(stored_priority(record))}" for record, _s in waiting
        )
        self.counters.update(dropped)
        return dropped

    # --- bounds (database thread) -------------------------------------------------

    def _expire(self, conn: sqlite3.Connection, now_s: float, taken: PendingWrite) -> None:
        self._last_expiry_s = now_s
        cutoff = now_s - self.max_age_s
        # created_s does not decrease along seq (the clock only moves forward), so the
        # expired rows are a prefix: find its end by walking from the oldest row.
        first_kept = conn.execute(
            "SELECT seq FROM outbox WHERE created_s >= ? ORDER BY seq LIMIT 1", (cutoff,)
        ).fetchone()
        bound = first_kept[0] if first_kept else 1 << 62
        gone = conn.execute(
            "DELETE FROM outbox WHERE seq < ? AND created_s < ? RETURNING seq, priority, size",
            (bound, cutoff),
        ).fetchall()
        self._account(gone, "expired", taken)

    def _make_room(self, conn: sqlite3.Connection, rows: list[_Row], taken: PendingWrite) -> list[_Row]:
        """Evict (lowest priority, oldest first) until ``rows`` fit; incoming rows ranking lower go first."""
        with self._totals_lock:
            total = sum(self._bytes.values())
        total -= sum(size for _s, _p, size in taken.removed)
        over = total + sum(map(_SIZE_OF, rows)) - self.max_bytes
        if over <= 0:
            return rows
        keep = list(rows)
        for _ in range(100_000):
            if over <= 0:
                break
            lowest = conn.execute("SELECT priority FROM outbox ORDER BY priority, seq LIMIT 1").fetchone()
            low_in = min((row[2] for row in keep), default=None)
            if lowest is None and low_in is None:
                break
            if lowest is None or (low_in is not None and low_in < lowest[0]):
                # The incoming record ranks below everything stored: it is the one to go.
                index = next(i for i, row in enumerate(keep) if row[2] == low_in)
                dropped = keep.pop(index)
                over -= dropped[4]
                self._account([(0, dropped[2], dropped[4])], "evicted", taken, stored=False)
                continue
            with self._totals_lock:
                avg = max(1, total // max(1, sum(self._count.values())))
            limit = max(1, min(4096, over // avg + 1))
            gone = conn.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE priority = ? "
                "ORDER BY seq LIMIT ?) RETURNING seq, priority, size",
                (lowest[0], limit),
            ).fetchall()
            over -= sum(size for _s, _p, size in gone)
            self._account(gone, "evicted", taken)
        return keep

    def _account(
        self, gone: Iterable[tuple[int, int, int]], why: str, taken: PendingWrite, *, stored: bool = True
    ) -> None:
        for seq, priority, size in gone:
            if stored:
                taken.removed.append((seq, priority, size))
            taken.evicted[f"{why}.{priority_class(priority)}"] += 1

    def _clock_meta(self) -> list[tuple[str, float]]:
        return [
            ("clock_s", self._clock.now_s()),
            ("wall_s", self._wall_clock()),
            ("max_bytes", float(self.max_bytes)),
            ("ingest_bytes_s", self._ingest_bytes_s),
        ]

    # --- on the loop: the uplink side -------------------------------------------

    async def wait_records(self, min_priority: int = 0, max_priority: int = _MAX_PRIORITY) -> None:
        """Return when committed, unleased rows with a priority in the range may exist."""
        while not self._any_maybe(min_priority, max_priority):
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiter = (min_priority, max_priority, future)
            self._waiters.append(waiter)
            try:
                await future
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def lease(
        self, n: int, *, min_priority: int = 0, max_priority: int = _MAX_PRIORITY
    ) -> list[Leased]:
        """Up to ``n`` committed, unleased rows: highest priority first; in a priority, released
        ones first, then oldest first."""
        if n <= 0:
            return []
        async with self._lease_lock:
            priorities = sorted((p for p in self._maybe if min_priority <= p <= max_priority), reverse=True)
            plan = [(p, sorted(self._released.get(p, ()))[:n], self._cursor.get(p, 0)) for p in priorities]
            generations = {p: self._generation.get(p, 0) for p in priorities}
            try:
                found, exhausted = await self._db.run(_select_rows, plan, n)
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read the outbox: {exc}") from exc
            leased: list[Leased] = []
            for p, again, _cursor in plan:
                if p not in found and p not in exhausted:
                    continue  # not reached: n was filled by higher priorities
                if again:
                    asked = set(again)
                    self._released[p] = [s for s in self._released.get(p, []) if s not in asked]
                rows = found.get(p)
                if rows:
                    leased.extend(rows)
                    self._leased.update(zip(map(_SEQ_OF, rows), rows, strict=True))
                    # Rows come in seq order, released ones (lower seqs) first.
                    if rows[-1].seq > self._cursor.get(p, 0):
                        self._cursor[p] = rows[-1].seq
                unchanged = generations[p] == self._generation.get(p, 0)
                if p in exhausted and unchanged and not self._released.get(p):
                    self._maybe[p] = False
            return leased

    async def ack(self, seqs: Sequence[int]) -> None:
        """The broker has these leased rows: they leave the totals now and the file with the next
        group commit (see the module docstring). Seqs not leased (any more) are ignored.

        Without a committer (``committer_notify`` None) the rows are deleted at once instead.
        """
        leased = self._leased
        mine = [row for row in map(leased.pop, seqs, repeat(None)) if row is not None]
        if not mine:
            return
        with self._totals_lock:
            count, size_by = self._count, self._bytes
            for row in mine:
                count[row.priority] -= 1
                size_by[row.priority] -= row.size
        self.counters["acked"] += len(mine)
        gone = [row.seq for row in mine]
        if self.committer_notify is None:
            try:
                await self._db.run(_delete_now, _runs(gone))
            except sqlite3.Error as exc:
                raise StorageError(f"cannot delete acknowledged outbox rows: {exc}") from exc
            return
        self._acked.extend(gone)
        self._acked_set.update(gone)
        self.committer_notify(0, urgent=False)

    def release(self, seqs: Sequence[int]) -> None:
        """Give leased rows back (their publish failed); they are the next ones leased."""
        released = 0
        for seq in seqs:
            row = self._leased.pop(seq, None)
            if row is None:
                continue
            priority = row.priority
            self._released.setdefault(priority, []).append(seq)
            self._more_available(priority)
            released += 1
        self.counters["released"] += released

    def quarantine(self, seqs: Sequence[int], reason: str) -> None:
        """Leased rows that can never be sent (bigger than the broker takes): they leave the
        outbox's totals now and move to ``outbox_quarantine`` with the next group commit, kept
        for a person to look at (``edgegw buffer``), never deleted and never blocking the others."""
        moved = 0
        with self._totals_lock:
            for seq in seqs:
                row = self._leased.pop(seq, None)
                if row is None or seq in self._quarantine_set:
                    continue
                self._count[row.priority] -= 1
                self._bytes[row.priority] -= row.size
                self._quarantine.append((seq, reason))
                self._quarantine_set.add(seq)
                self._acked.append(seq)
                self._acked_set.add(seq)
                moved += 1
        if not moved:
            return
        self.counters["quarantined"] += moved
        self.counters[f"quarantined.{reason}"] += moved
        self.quarantined_total += moved
        self._rare_log.error(
            f"quarantined.{reason}",
            "outbox: %d record(s) quarantined (%s): kept in outbox_quarantine, not sent (%d in all)",
            moved, reason, self.quarantined_total,
        )  # fmt: skip
        if self.committer_notify is not None:
            self.committer_notify(0, urgent=False)

    async def requeue_quarantined(self) -> int:
        """Move every row of ``outbox_quarantine`` back into the outbox, to be leased again: the
        cause may have gone away (a broker that refused once, a message size limit raised again).

        Done by the next group commit (asked at once), like an insert of those rows: new seqs,
        ``created_s`` now on the outbox clock (``max_age_s`` counts from the requeue; the body keeps
        its own times). Rows quarantined in that same group stay quarantined (they were just
        refused). ``max_bytes`` applies from the group after. Returns how many rows moved, once
        committed; a group that fails (a full disk) keeps the request for the next one, and a
        caller that stops waiting does not withdraw it.
        """
        if self.committer_notify is None:
            try:
                moved = await self._db.run(_requeue_now, self._clock.now_s())
            except sqlite3.Error as exc:
                raise StorageError(f"cannot requeue the quarantined records: {exc}") from exc
            self._back_in_outbox(moved)
            return len(moved)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._requeue_asked.append(future)
        self.committer_notify(0, urgent=True)
        return await asyncio.shield(future)

    def _requeue(self, conn: sqlite3.Connection, taken: PendingWrite) -> None:
        """On the database thread, in the group's transaction: the quarantine back into the outbox."""
        taken.requeued.clear()
        if taken.requeue:
            conn.execute(_CREATE_QUARANTINE)  # missing if the first start of this version met a full disk
            taken.requeued = move_quarantine_back(conn, self._clock.now_s())

    def _requeue_committed(self, taken: PendingWrite) -> None:
        """On the loop, after the group that moved the quarantine back: answer its callers."""
        self._back_in_outbox(taken.requeued)
        answered = set(map(id, taken.requeue))
        self._requeue_asked = [f for f in self._requeue_asked if id(f) not in answered]
        for future in taken.requeue:
            if not future.done():  # two groups in flight may carry the same request
                future.set_result(len(taken.requeued))

    def _back_in_outbox(self, moved: Sequence[tuple[int, int]]) -> None:
        """Rows (priority, size) moved back from the quarantine: counted as inserted, to be leased."""
        if not moved:
            return
        with self._totals_lock:
            for priority, size in moved:
                self._count[priority] += 1
                self._bytes[priority] += size
        self.quarantined_total = max(0, self.quarantined_total - len(moved))
        self.counters["requeued"] += len(moved)
        log.warning(
            "outbox: %d quarantined record(s) moved back to the outbox to be sent again (%d left)",
            len(moved), self.quarantined_total,
        )  # fmt: skip
        for priority in sorted({priority for priority, _size in moved}):
            self._more_available(priority)  # new seqs, above every lease cursor

    async def stats(self) -> OutboxStats:
        try:
            oldest = await self._db.run(_oldest_created)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read outbox stats: {exc}") from exc
        depth_by: Counter[str] = Counter()
        bytes_by: Counter[str] = Counter()
        with self._totals_lock:
            for priority, count in self._count.items():
                depth_by[priority_class(priority)] += count
                bytes_by[priority_class(priority)] += self._bytes[priority]
        return OutboxStats(
            depth=sum(depth_by.values()),
            bytes=sum(bytes_by.values()),
            oldest_age_s=None if oldest is None else max(0.0, self._clock.now_s() - oldest),
            max_bytes=self.max_bytes,
            depth_by_class={c: depth_by[c] for c in PRIORITY_CLASSES},
            bytes_by_class={c: bytes_by[c] for c in PRIORITY_CLASSES},
            evicted_total=dict(self.evicted_total),
            leased=len(self._leased),
            ingest_bytes_s=self._ingest_bytes_s,
            quarantined=self.quarantined_total,
            waiting_in_memory=len(self._pending),
        )

    @property
    def bytes(self) -> int:
        with self._totals_lock:
            return sum(self._bytes.values())

    @property
    def depth(self) -> int:
        with self._totals_lock:
            return sum(self._count.values())

    @property
    def leased_count(self) -> int:
        return len(self._leased)

    def may_have(self, min_priority: int = 0, max_priority: int = _MAX_PRIORITY) -> bool:
        """False when no committed, unleased row in the priority range exists; True when one may
        (a lease that finds none clears it)."""
        return self._any_maybe(min_priority, max_priority)

    def _any_maybe(self, low: int, high: int) -> bool:
        return any(flag for p, flag in self._maybe.items() if low <= p <= high)

    def _more_available(self, priority: int) -> None:
        self._generation[priority] = self._generation.get(priority, 0) + 1
        self._maybe[priority] = True
        for low, high, future in list(self._waiters):
            if low <= priority <= high and not future.done():
                future.set_result(None)


def _clock(restored: age_clock.Restored) -> tuple[float, str]:
    return restored.base_s, restored.note


# --- on the database thread ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _State:
    totals: list[tuple[int, int, int]]
    depth: int
    newest_created_s: float | None
    recent_ids: list[str]
    meta: dict[str, float]
    quarantined: int


def _load_state(conn: sqlite3.Connection, window: int) -> _State:
    try:
        conn.execute(_CREATE_QUARANTINE)  # a no-op (no write) once it exists
    except sqlite3.OperationalError as exc:  # a full disk on the very first start of this version
        log.error("outbox_quarantine table not created: %s", exc)
    totals = [
        (int(p), int(c), int(s))
        for p, c, s in conn.execute("SELECT priority, COUNT(*), SUM(size) FROM outbox GROUP BY priority")
    ]
    newest = conn.execute("SELECT created_s FROM outbox ORDER BY seq DESC LIMIT 1").fetchone()
    recent = [r[0] for r in conn.execute("SELECT record_id FROM outbox ORDER BY seq DESC LIMIT ?", (window,))]
    meta = {str(k): float(v) for k, v in conn.execute("SELECT key, value FROM outbox_meta")}
    try:
        (quarantined,) = conn.execute("SELECT COUNT(*) FROM outbox_quarantine").fetchone()
    except sqlite3.OperationalError:
        quarantined = 0
    return _State(
        totals, sum(c for _p, c, _s in totals), newest[0] if newest else None, recent, meta, int(quarantined)
    )


def _save_meta(conn: sqlite3.Connection, items: list[tuple[str, float]]) -> None:
    with transaction(conn):
        conn.executemany(_UPSERT_META, items)


_COLUMNS = "seq, record_id, priority, body, size"  # the fields of Leased, in order
_SELECT_FRESH = f"SELECT {_COLUMNS} FROM outbox WHERE priority = ? AND seq > ? ORDER BY seq LIMIT ?"


def _select_rows(
    conn: sqlite3.Connection, plan: list[tuple[int, list[int], int]], n: int
) -> tuple[dict[int, list[Leased]], set[int]]:
    found: dict[int, list[Leased]] = {}
    exhausted: set[int] = set()
    remaining = n
    make = partial(tuple.__new__, Leased)  # Leased._make without a Python frame per row
    for priority, again, cursor in plan:
        if remaining <= 0:
            break
        rows: list[Leased] = []
        if again:
            marks = ",".join("?" * len(again))
            sql = f"SELECT {_COLUMNS} FROM outbox WHERE seq IN ({marks}) ORDER BY seq"
            rows.extend(map(make, conn.execute(sql, again)))
        limit = remaining - len(rows)
        if limit > 0:
            fresh = conn.execute(_SELECT_FRESH, (priority, cursor, limit)).fetchall()
            if len(fresh) < limit:
                exhausted.add(priority)
            rows.extend(map(make, fresh))
        found[priority] = rows
        remaining -= len(rows)
    return found, exhausted


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive seqs: one ``BETWEEN`` each (a batch is mostly one run)."""
    ordered = sorted(seqs)
    runs: list[tuple[int, int]] = []
    first = last = ordered[0]
    for seq in ordered:
        if seq > last + 1:
            runs.append((first, last))
            first = seq
        last = seq
    runs.append((first, last))
    return runs


def move_quarantine_back(conn: sqlite3.Connection, created_s: float) -> list[tuple[int, int]]:
    """Every ``outbox_quarantine`` row into the outbox (new seqs, ``created_s``), in the caller's
    transaction; returns (priority, size) of each. Also used by ``edgegw buffer quarantine
    --requeue`` on the file when no agent runs (``gateway.outbox.inspect``)."""
    moved = [(int(priority), int(size)) for priority, size in conn.execute(_REQUEUE, (created_s,))]
    conn.execute("DELETE FROM outbox_quarantine")
    return moved


def _requeue_now(conn: sqlite3.Connection, created_s: float) -> list[tuple[int, int]]:
    # Only without a group committer (tests, tools): its own transaction.
    with transaction(conn):
        conn.execute(_CREATE_QUARANTINE)
        return move_quarantine_back(conn, created_s)


def _delete_now(conn: sqlite3.Connection, runs: list[tuple[int, int]]) -> None:
    # Only without a group committer. A lost delete only means a duplicate delivery (allowed,
    # §3.3), so this transaction is not fsync'd by itself.
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        with transaction(conn):
            conn.executemany(_DELETE_RANGE, runs)
    finally:
        conn.execute("PRAGMA synchronous=FULL")


def _oldest_created(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT created_s FROM outbox ORDER BY seq LIMIT 1").fetchone()
    return None if row is None else float(row[0])
