"""Why the outbox is SQLite and not TinyDB: both buffers, one run, same records.

1. The buffer alone: a durable append of N records and the drain (read 100 / delete 100 until
   empty), in records/s and bytes written to disk per record (``/proc/self/io`` write_bytes:
   what wears an SD card).
2. End to end, the agent's workload after decoding (what differs with the buffer): records as
   the pipeline writes them (~420 bytes of JSON) are stored durably as they arrive, forwarded in
   batches of 100 as QoS 1 messages to a real mosquitto, and deleted on PUBACK — once as fast as
   possible (records/s) and once at a saturated concentrator's ~110 records/s (CPU % of one
   core and bytes written per record). The MAC, decoding and rules before the buffer are the
   same code whichever buffer follows, so they are left out of both sides.

Ratios are what matter: the machine is shared.

    .venv/bin/python bench/bench_buffer_choice.py [--records 2000] [--e2e-records 2000] [--rate-s 5]
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
from typing import Any

import paho.mqtt.client as mqtt
from _common import full_record, small_record, start_broker, write_bytes
from paho.mqtt.enums import CallbackAPIVersion
from tinydb import TinyDB

BATCH = 100


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


# --- 2. end to end: store as records arrive, forward in batches with PUBACK, delete ---------------


class TinyBuffer:
    """TinyDB as the outbox: one insert per record (TinyDB rewrites its JSON file each time)."""

    def __init__(self, d: Path) -> None:
        self.db = TinyDB(d / "buffer.json")

    def put(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.db.insert(record)

    def lease(self) -> list[tuple[int, str]]:
        docs = self.db.all()[:BATCH]
        return [(doc.doc_id, json.dumps(dict(doc), separators=(",", ":"))) for doc in docs]

    def ack(self, keys: list[int]) -> None:
        self.db.remove(doc_ids=keys)

    def close(self) -> None:
        self.db.close()


class SqliteBuffer:
    """The outbox's way: WAL, synchronous=FULL, one transaction per arrival group."""

    def __init__(self, d: Path) -> None:
        self.conn = sqlite3.connect(d / "outbox.sqlite", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, record_id TEXT UNIQUE, body TEXT)")

    def put(self, records: list[dict[str, Any]]) -> None:
        self.conn.execute("BEGIN")
        self.conn.executemany(
            "INSERT INTO outbox (record_id, body) VALUES (?, ?)",
            [(r["id"], json.dumps(r, separators=(",", ":"))) for r in records],
        )
        self.conn.execute("COMMIT")

    def lease(self) -> list[tuple[int, str]]:
        return self.conn.execute(f"SELECT seq, body FROM outbox ORDER BY seq LIMIT {BATCH}").fetchall()

    def ack(self, keys: list[int]) -> None:
        self.conn.execute("BEGIN")
        self.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(k,) for k in keys])
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def forward(buffer: TinyBuffer | SqliteBuffer, client: mqtt.Client) -> int:
    """One batch from the buffer to the broker, deleted on PUBACK; how many records went."""
    leased = buffer.lease()
    if not leased:
        return 0
    payload = ('{"v":1,"records":[' + ",".join(body for _k, body in leased) + "]}").encode()
    client.publish("bench/buffer/up", payload, qos=1).wait_for_publish(10)
    buffer.ack([k for k, _b in leased])
    return len(leased)


def end_to_end(kind: str, n: int, rate_hz: float, port: int) -> dict[str, float]:
    """``n`` records arriving in groups of 10 (as fast as possible when ``rate_hz`` is 0), each group
    stored durably, the buffer forwarded whenever a batch is full; then drained."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-buffer-{kind}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
            buffer: TinyBuffer | SqliteBuffer = (
                TinyBuffer(Path(d)) if kind == "tinydb" else SqliteBuffer(Path(d))
            )
            io0, cpu0, t0 = write_bytes(), time.process_time(), time.perf_counter()
            sent = pending = 0
            for start in range(0, n, 10):
                if rate_hz:
                    wait_s = t0 + start / rate_hz - time.perf_counter()
                    if wait_s > 0:
                        time.sleep(wait_s)
                group = [full_record(i) for i in range(start, min(n, start + 10))]
                buffer.put(group)
                pending += len(group)
                if pending >= BATCH:
                    sent += forward(buffer, client)
                    pending -= BATCH
            while (moved := forward(buffer, client)) > 0:
                sent += moved
            elapsed = time.perf_counter() - t0
            result = {
                "records_s": sent / elapsed,
                "cpu_pct": 100 * (time.process_time() - cpu0) / elapsed,
                "bytes_per_record": (write_bytes() - io0) / sent,
            }
            buffer.close()
    finally:
        client.loop_stop()
        client.disconnect()
    if sent != n:
        raise AssertionError(f"{kind}: {sent} of {n} records forwarded")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--e2e-records", type=int, default=2000, help="records of the end-to-end run")
    parser.add_argument("--rate-s", type=float, default=5.0, help="seconds of the ~110 records/s run")
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
    with tempfile.TemporaryDirectory(prefix="bench-buffer-broker-") as broker_dir:
        broker = start_broker(Path(broker_dir))
        port = broker.port
        try:
            n, paced = args.e2e_records, int(110 * args.rate_s)
            print(
                f"\nend to end: {n} records of ~420 bytes stored, forwarded (QoS 1, {BATCH}/message), deleted"
            )
            fast = {k: end_to_end(k, n, 0.0, port) for k in ("tinydb", "sqlite")}
            for k, r in fast.items():
                print(f"  {k:<8} as fast as possible {r['records_s']:>10,.0f} records/s "
                      f"{r['bytes_per_record']:>10,.0f} bytes written/record")  # fmt: skip
            print(f"at ~110 records/s for {args.rate_s:g} s ({paced} records)")
            slow = {k: end_to_end(k, paced, 110.0, port) for k in ("tinydb", "sqlite")}
            for k, r in slow.items():
                cpu, per_record = r["cpu_pct"], r["bytes_per_record"]
                print(f"  {k:<8} {cpu:>6.1f} % of one core {per_record:>10,.0f} bytes written/record")
        finally:
            broker.stop()
    speed = fast["sqlite"]["records_s"] / fast["tinydb"]["records_s"]
    cpu = slow["tinydb"]["cpu_pct"] / max(slow["sqlite"]["cpu_pct"], 0.01)
    wear = slow["tinydb"]["bytes_per_record"] / max(slow["sqlite"]["bytes_per_record"], 1)
    print(
        f"\nend to end, SQLite vs TinyDB: {speed:,.1f}x the throughput; at ~110 records/s "
        f"{cpu:,.1f}x less CPU and {wear:,.1f}x fewer bytes written per record"
    )


if __name__ == "__main__":
    main()
