"""Outbox full cycle (put → group commit → lease → ack), durable, against TinyDB and raw sqlite3.

One run, same machine, ratios matter (perf-anchors.md). For each buffer: records/s of the
whole cycle and bytes written to disk per record (``/proc/self/io`` write_bytes, all
threads of this process: what wears an SD card). Two record sizes: the ~120-byte record
of perf-anchors.md, and a full pipeline record (~430 bytes, ARCHITECTURE.md §3.2).

    .venv/bin/python bench/bench_outbox.py [--records 100000] [--group 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import full_record, small_record, write_bytes
from tinydb import TinyDB

from gateway import db
from gateway.db.commit import Database, GroupCommitter
from gateway.messages import Priority, Record
from gateway.outbox import Outbox


def bench_outbox(bodies: list[dict[str, Any]], group: int, lease_n: int) -> dict[str, float]:
    records = [Record(b["id"], "reading", Priority.READING, b) for b in bodies]

    async def main(path: Path) -> float:
        # Group by group: ``group`` puts, one durable commit (synchronous=FULL), then lease and
        # ack everything. (A pipelined variant, committing every 5 ms while acking, made smaller
        # groups: slower and more bytes per record on this machine.)
        database = Database(path)
        outbox = Outbox(database)
        committer = GroupCommitter(database, [outbox], interval_s=1.0, max_pending=10**9)
        outbox.committer_notify = committer.notify
        t0 = time.perf_counter()
        for start in range(0, len(records), group):
            for record in records[start : start + group]:
                outbox.put(record)
            await committer.flush()
            while leased := await outbox.lease(lease_n):
                await outbox.ack([x.seq for x in leased])
        await committer.flush()  # the last acks' deletes ride a group commit
        elapsed = time.perf_counter() - t0
        assert outbox.depth == 0
        database.close()
        return elapsed

    with tempfile.TemporaryDirectory() as d:
        before = write_bytes()
        elapsed = asyncio.run(main(db.db_path(d)))
        written = write_bytes() - before
    return {"records_s": len(records) / elapsed, "bytes_per_record": written / len(records)}


def bench_sqlite_raw(bodies: list[dict[str, Any]], group: int) -> dict[str, float]:
    rows = [(b["id"], json.dumps(b, separators=(",", ":"))) for b in bodies]
    with tempfile.TemporaryDirectory() as d:
        conn = sqlite3.connect(Path(d) / "raw.sqlite", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE q (seq INTEGER PRIMARY KEY, id TEXT, body TEXT)")
        before = write_bytes()
        t0 = time.perf_counter()
        for start in range(0, len(rows), group):
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO q (id, body) VALUES (?, ?)", rows[start : start + group])
            conn.execute("COMMIT")
            got = conn.execute("SELECT seq, body FROM q ORDER BY seq LIMIT ?", (group,)).fetchall()
            conn.execute("BEGIN")
            conn.executemany("DELETE FROM q WHERE seq = ?", [(s,) for s, _b in got])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        written = write_bytes() - before
        conn.close()
    return {"records_s": len(rows) / elapsed, "bytes_per_record": written / len(rows)}


def bench_tinydb(bodies: list[dict[str, Any]]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        table = TinyDB(Path(d) / "tiny.json")
        before = write_bytes()
        t0 = time.perf_counter()
        for body in bodies:
            table.insert(body)
        while docs := table.all()[:100]:
            table.remove(doc_ids=[doc.doc_id for doc in docs])
        elapsed = time.perf_counter() - t0
        written = write_bytes() - before
        table.close()
    return {"records_s": len(bodies) / elapsed, "bytes_per_record": written / len(bodies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--group", type=int, default=1000, help="records per group commit")
    parser.add_argument("--lease", type=int, default=1000, help="records per lease/ack")
    parser.add_argument("--tinydb-records", type=int, default=1000)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for name, make in (("small_record", small_record), ("full_record", full_record)):
        bodies = [make(i) for i in range(args.records)]
        size = sum(len(json.dumps(b, separators=(",", ":"))) for b in bodies[:100]) / 100
        results[name] = {
            "record_bytes": round(size),
            "outbox": bench_outbox(bodies, args.group, args.lease),
            "sqlite_raw_batch": bench_sqlite_raw(bodies, args.group),
            "tinydb_insert": bench_tinydb(bodies[: args.tinydb_records]),
        }
        r = results[name]
        r["outbox_vs_tinydb"] = r["outbox"]["records_s"] / r["tinydb_insert"]["records_s"]
        r["outbox_vs_raw"] = r["outbox"]["records_s"] / r["sqlite_raw_batch"]["records_s"]
    print(json.dumps(results, indent=2, default=lambda x: round(x, 1)))


if __name__ == "__main__":
    main()
