"""A read-only look at the outbox in the database file, for ``edgegw buffer`` (no agent needed).

Owns the figures an operator asks for: depth, stored bytes, oldest age, per-class counts,
eviction totals and a headroom estimate at the recent ingest rate. It opens the file
read-only (SQLite WAL lets it read while the agent writes) and never changes it. Ages
use the outbox clock the agent saved (``gateway.outbox.clock``), advanced by the wall
clock since that save only when the wall clock moved forward plausibly.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from gateway.errors import StorageError
from gateway.outbox.store import PRIORITY_CLASSES, priority_class


def read_buffer(path: Path, *, wall_now_s: float | None = None) -> dict[str, Any]:
    """The outbox figures of the database at ``path`` as a JSON-ready dict."""
    if not path.exists():
        raise StorageError(f"no database at {path} (is data_dir right?)")
    wall_now = time.time() if wall_now_s is None else wall_now_s
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
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
