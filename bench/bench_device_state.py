"""SD-card cost of keeping what the agent knows of each device across restarts (issue 19).

The inventory (last seen, signal, battery, counts) and the reading history are written by the group
commit (``gateway.inventory_state.InventoryStateStore``, at most every ``WRITE_INTERVAL_S`` and only
for devices that changed). This bench runs the real outbox and group commit on a real SQLite file,
with and without that sink, in the same run, and reports the bytes the kernel wrote per frame
(/proc/self/io ``write_bytes``, after ``sync`` and a WAL checkpoint): SD-card wear.

Time is simulated (the sink's monotonic clock advances with the frames; a group every 50 ms of it),
so a run takes seconds whatever the frame rate.

    .venv/bin/python bench/bench_device_state.py [--devices 200]

Prints a table and writes bench/results/device_state.json (results are not committed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path

from _common import full_record, write_bytes

from gateway import db
from gateway.db.commit import Database, GroupCommitter
from gateway.history import ReadingHistory
from gateway.inventory import Inventory
from gateway.inventory_state import InventoryStateStore
from gateway.messages import Priority, Record
from gateway.outbox import Outbox

RESULTS = Path(__file__).parent / "results" / "device_state.json"
GROUP_S = 0.05
CASES = ((110.0, 4000), (10.0, 1500))
"""(frames/s, frames): the capacity figure of bench_e2e's steady load, and a quiet gateway."""


async def bytes_per_frame(with_store: bool, frames: int, rate_hz: float, devices: int) -> float:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        database = Database(db.db_path(tmp))
        outbox = Outbox(database)
        inventory, history = Inventory(), ReadingHistory()
        now = [0.0]
        store = InventoryStateStore(inventory, history, monotonic=lambda: now[0])
        committer = GroupCommitter(database, [outbox, *([store] if with_store else [])], interval_s=GROUP_S,
                                   max_pending=500)  # fmt: skip
        group_every = max(1, int(rate_hz * GROUP_S))
        os.sync()
        start = write_bytes()
        for n in range(frames):
            body = full_record(n % devices * 1000 + n)
            body["dev_eui"] = dev = f"70b3d57ed{n % devices:07x}"
            outbox.put(Record(record_id=body["id"], kind="reading", priority=Priority.READING, body=body))
            event = {
                "dev_eui": dev, "at_s": 1.0e9 + n / rate_hz, "verdict": "accepted", "fcnt": n, "fport": 85,
                "rssi_dbm": -90.0, "snr_db": 5.0, "sf": 7, "data": body["data"],
            }  # fmt: skip
            inventory(event)
            history(event)
            if with_store:
                store(event)
            now[0] = n / rate_hz
            if n % group_every == 0:
                await committer.flush()
        await committer.flush()
        database.run_sync(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        os.sync()
        written = write_bytes() - start
        database.close()
    return written / frames


async def measure(devices: int) -> list[dict[str, float]]:
    rows = []
    for rate_hz, frames in CASES:
        without = await bytes_per_frame(False, frames, rate_hz, devices)
        with_store = await bytes_per_frame(True, frames, rate_hz, devices)
        extra_pct = round(100 * (with_store - without) / without, 1)
        rows.append({"frames_per_s": rate_hz, "devices": devices, "without_b": round(without),
                     "with_b": round(with_store), "extra_pct": extra_pct})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    args = parser.parse_args()
    rows = asyncio.run(measure(args.devices))
    print(f"{'frames/s':>9} {'devices':>8} {'without B/frame':>16} {'with B/frame':>13} {'extra':>7}")
    for r in rows:
        print(
            f"{r['frames_per_s']:>9g} {r['devices']:>8} {r['without_b']:>16} {r['with_b']:>13} "
            f"{r['extra_pct']:>6}%"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
