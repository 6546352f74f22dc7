"""Why the outbox is SQLite and not TinyDB: both buffers, one run, same records.

Measures a durable append of N records and the drain (read 100 / delete 100 until
empty), in records/s and bytes written to disk per record (``/proc/self/io``
write_bytes: what wears an SD card). Ratios are what matter: the machine is shared.

    .venv/bin/python bench/bench_buffer_choice.py [--records 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import small_record, write_bytes
from tinydb import TinyDB


def measure(name: str, fn: Callable[[Path, int], None], n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        before_io, t0 = write_bytes(), time.perf_counter()
        fn(Path(d), n)
        elapsed, written = time.perf_counter() - t0, write_bytes() - before_io
    rate, per_record = n / elapsed, written / n
    print(f"{name:<44} {rate:>12,.0f} records/s {per_record:>12,.0f} bytes written/record")
    return rate, per_record


def tinydb_one_by_one(d: Path, n: int) -> None:
    db = TinyDB(d / "buffer.json")  # TinyDB's durable path: it rewrites the whole file on each write
    for i in range(n):
        db.insert(small_record(i))
    while len(db):
        docs = db.all()[:100]
        db.remove(doc_ids=[doc.doc_id for doc in docs])
    db.close()


def sqlite_group_commit(d: Path, n: int, group: int = 100) -> None:
    conn = sqlite3.connect(d / "outbox.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, record_id TEXT UNIQUE, body TEXT)")
    for start in range(0, n, group):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO outbox (record_id, body) VALUES (?, ?)",
            [
                (f"r{i}", json.dumps(small_record(i), separators=(",", ":")))
                for i in range(start, min(n, start + group))
            ],
        )
        conn.execute("COMMIT")
    while True:
        rows = conn.execute("SELECT seq FROM outbox ORDER BY seq LIMIT 100").fetchall()
        if not rows:
            break
        conn.execute("BEGIN")
        conn.executemany("DELETE FROM outbox WHERE seq = ?", rows)
        conn.execute("COMMIT")
    conn.close()


def sqlite_one_by_one(d: Path, n: int) -> None:
    sqlite_group_commit(d, n, group=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    n = args.records
    print(f"durable append of {n} records, then drain 100 at a time")
    tiny = measure("TinyDB insert() one at a time", tinydb_one_by_one, n)
    one = measure("SQLite WAL sync=FULL, 1 record/transaction", sqlite_one_by_one, n)
    group = measure("SQLite WAL sync=FULL, 100 records/transaction", sqlite_group_commit, n)
    print(
        f"\nSQLite group commit vs TinyDB: {group[0] / tiny[0]:,.0f}x the throughput, "
        f"{tiny[1] / max(group[1], 1):,.0f}x fewer bytes written per record"
    )
    print(
        f"group commit vs one transaction per record: {group[0] / one[0]:,.1f}x the throughput, "
        f"{one[1] / max(group[1], 1):,.1f}x fewer bytes written"
    )


if __name__ == "__main__":
    main()
