"""A look at the outbox in the database file, for ``edgegw buffer`` (no agent needed).

Owns the figures an operator asks for: depth, stored bytes, oldest age, per-class counts,
eviction totals and a headroom estimate at the recent ingest rate; and the quarantined
records (``outbox_quarantine``: what the broker never takes). It opens the file
read-only (SQLite WAL lets it read while the agent writes) and never changes it, except
``requeue_in_file``, which the CLI calls only while it holds the data directory's instance
lock, i.e. when no agent runs. Ages use the outbox clock the agent saved
(``gateway.outbox.age_clock``), advanced by the wall clock since that save only when the wall
clock moved forward plausibly.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from gateway import db
from gateway.clock import iso_utc
from gateway.errors import StorageError
from gateway.outbox.store import PRIORITY_CLASSES, move_quarantine_back, priority_class

QUARANTINE_LIST_MAX = 200
"""Quarantined records listed at most (newest first); the counts cover them all."""


def read_buffer(path: Path, *, wall_now_s: float | None = None) -> dict[str, Any]:
    """The outbox figures of the database at ``path`` as a JSON-ready dict."""
    wall_now = time.time() if wall_now_s is None else wall_now_s
    conn = _open_ro(path)
    try:
        meta = {str(k): float(v) for k, v in conn.execute("SELECT key, value FROM outbox_meta")}
        by_priority = conn.execute(
            "SELECT priority, COUNT(*), SUM(size) FROM outbox GROUP BY priority"
        ).fetchall()
        oldest = conn.execute("SELECT created_s FROM outbox ORDER BY seq LIMIT 1").fetchone()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read the outbox in {path}: {exc}") from exc
    finally:
        conn.close()
    depth_by = dict.fromkeys(PRIORITY_CLASSES, 0)
    bytes_by = dict.fromkeys(PRIORITY_CLASSES, 0)
    for priority, count, size in by_priority:
        depth_by[priority_class(int(priority))] += int(count)
        bytes_by[priority_class(int(priority))] += int(size or 0)
    total_bytes = sum(bytes_by.values())
    max_bytes = int(meta.get("max_bytes", 0))
    clock_now = meta.get("clock_s", 0.0) + max(0.0, wall_now - meta.get("wall_s", wall_now))
    rate = meta.get("ingest_bytes_s", 0.0)
    headroom_s = (max(0, max_bytes - total_bytes) / rate) if rate > 0 and max_bytes else None
    return {
        "depth": sum(depth_by.values()),
        "bytes": total_bytes,
        "max_bytes": max_bytes,
        "used_pct": round(100.0 * total_bytes / max_bytes, 1) if max_bytes else None,
        "oldest_age_s": None if oldest is None else round(max(0.0, clock_now - float(oldest[0])), 1),
        "depth_by_class": depth_by,
        "bytes_by_class": bytes_by,
        "evicted": {k: int(v) for k, v in meta.items() if "." in k},
        "ingest_bytes_s": round(rate, 1),
        "headroom_s": None if headroom_s is None else round(headroom_s),
    }


def _open_ro(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise StorageError(f"no database at {path} (is data_dir right?)")
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc


def _has_quarantine(conn: sqlite3.Connection) -> bool:
    # Created by the agent at run time (gateway.outbox.store): missing in a file no agent of
    # this version has opened yet, which then has nothing quarantined.
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox_quarantine'"
    ).fetchone()
    return found is not None


def read_quarantine(path: Path, *, limit: int = QUARANTINE_LIST_MAX) -> dict[str, Any]:
    """The quarantined records of the database at ``path``: counts by reason, and the newest
    ``limit`` records (id, kind, class, size, reason, when), as a JSON-ready dict."""
    conn = _open_ro(path)
    try:
        by_reason: list[tuple[str, int, int]] = []
        rows: list[tuple[str, str, int, int, str, float]] = []
        if _has_quarantine(conn):
            by_reason = conn.execute(
                "SELECT reason, COUNT(*), SUM(size) FROM outbox_quarantine GROUP BY reason ORDER BY reason"
            ).fetchall()
            rows = conn.execute(
                "SELECT record_id, kind, priority, size, reason, quarantined_s FROM outbox_quarantine"
                " ORDER BY seq DESC LIMIT ?",
                (max(0, limit),),
            ).fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read the quarantine in {path}: {exc}") from exc
    finally:
        conn.close()
    return {
        "quarantined": sum(int(count) for _r, count, _s in by_reason),
        "bytes": sum(int(size or 0) for _r, _c, size in by_reason),
        "by_reason": {str(reason): int(count) for reason, count, _s in by_reason},
        "records": [
            {
                "id": record_id,
                "kind": kind,
                "class": priority_class(int(priority)),
                "size": int(size),
                "reason": reason,
                "quarantined_at": iso_utc(float(when_s)),
            }
            for record_id, kind, priority, size, reason, when_s in rows
        ],
    }


def requeue_in_file(path: Path, *, wall_now_s: float | None = None) -> int:
    """Move every quarantined record back into the outbox of the file at ``path``; returns how many.

    Only with no agent running (the caller holds the instance lock): a running agent keeps its
    totals in memory and would not lease rows written behind its back (it reads them at start).
    The rows get ``created_s`` now on the saved outbox clock, never below the newest row's (the
    agent relies on ``created_s`` not decreasing along ``seq``).
    """
    if not path.exists():
        raise StorageError(f"no database at {path} (is data_dir right?)")
    wall_now = time.time() if wall_now_s is None else wall_now_s
    conn = db.connect(path)
    try:
        if not _has_quarantine(conn):
            return 0
        with db.transaction(conn):
            meta = {str(k): float(v) for k, v in conn.execute("SELECT key, value FROM outbox_meta")}
            newest = conn.execute("SELECT created_s FROM outbox ORDER BY seq DESC LIMIT 1").fetchone()
            clock_now = meta.get("clock_s", 0.0) + max(0.0, wall_now - meta.get("wall_s", wall_now))
            created_s = max(clock_now, float(newest[0]) if newest else 0.0)
            return len(move_quarantine_back(conn, created_s))
    except sqlite3.Error as exc:
        raise StorageError(f"cannot requeue the quarantined records in {path}: {exc}") from exc
    finally:
        conn.close()
