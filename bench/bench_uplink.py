"""Uplink throughput to a local mosquitto (batches vs one message per record) and alert latency.

One run, same machine (ratios matter, perf-anchors.md):
* ``batched``: records/s acknowledged (PUBACK) when sent as JSON batches of ``--batch`` records
  through ``MqttUplink`` with ``--window`` batches in flight;
* ``per_record``: the same records one message each (the window is mqtt.max_inflight_messages);
* ``alert_latency``: put → PUBACK of alerts through the real outbox (group commit, fsync) and
  forwarder while a background load of readings drains through the same connection; p50/p99 ms.

    .venv/bin/python bench/bench_uplink.py [--records 200000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import full_record, start_broker

from gateway import db
from gateway.config import MqttSection
from gateway.db.commit import Database, GroupCommitter
from gateway.messages import Priority, Record
from gateway.outbox import Outbox
from gateway.uplink import envelope
from gateway.uplink.forwarder import Forwarder, ForwarderSettings
from gateway.uplink.mqtt import MqttUplink
from gateway.uplink.topics import Topics


async def throughput(port: int, payloads: list[bytes], window: int, records: int) -> float:
    uplink = MqttUplink(
        MqttSection(host="127.0.0.1", port=port, tls=False, max_inflight_messages=window),
        client_id=f"bench-{window}-{len(payloads)}",
        will=None,
    )
    await uplink.start()
    assert await uplink.wait_connected(10)
    t0 = time.perf_counter()
    await asyncio.gather(*(uplink.publish("bench/up", p) for p in payloads))
    elapsed = time.perf_counter() - t0
    await uplink.stop()
    return records / elapsed


class TimedUplink(MqttUplink):
    """Records when each alert's PUBACK arrived."""

    acked_at: dict[str, float]

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        await super().publish(topic, payload, **kwargs)
        if topic.endswith("/alert"):
            self.acked_at[json.loads(payload)["record"]["id"]] = time.perf_counter()


async def alert_latency(port: int, data_dir: Path, seconds: float, load_per_s: int) -> dict[str, float]:
    database = Database(db.db_path(data_dir))
    outbox = Outbox(database)
    committer = GroupCommitter(database, [outbox], interval_s=0.05, max_pending=500)
    outbox.committer_notify = committer.notify
    uplink = TimedUplink(
        MqttSection(host="127.0.0.1", port=port, tls=False), client_id="bench-alerts", will=None
    )
    uplink.acked_at = {}
    forwarder = Forwarder(
        outbox,
        uplink,
        Topics("edgegw", "bench"),
        "bench",
        ForwarderSettings(batch_max_records=100, batch_linger_ms=50, max_inflight_batches=8),
    )
    await uplink.start()
    assert await uplink.wait_connected(10)
    tasks = [asyncio.create_task(committer.run()), asyncio.create_task(forwarder.run())]
    put_at: dict[str, float] = {}
    i = 0
    t_end = time.perf_counter() + seconds
    n_alert = 0
    while time.perf_counter() < t_end:
        for _ in range(load_per_s // 100):  # background readings, 100 per 10 ms tick
            i += 1
            b = full_record(i)
            outbox.put(Record(b["id"], "reading", Priority.READING, b))
        if i % (load_per_s // 20) < load_per_s // 100:  # an alert every 50 ms
            n_alert += 1
            a = full_record(10_000_000 + n_alert, "alert")
            put_at[a["id"]] = time.perf_counter()
            outbox.put(Record(a["id"], "alert", Priority.ALERT, a))
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)
    await forwarder.drain(5.0)
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=5)
    await uplink.stop()
    database.close()
    lat_ms = sorted((uplink.acked_at[k] - t) * 1000 for k, t in put_at.items() if k in uplink.acked_at)
    return {
        "alerts": len(lat_ms),
        "background_records_s": load_per_s,
        "p50_ms": statistics.median(lat_ms),
        "p99_ms": lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))],
        "max_ms": lat_ms[-1],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        broker = start_broker(Path(d))
        port = broker.port
        try:
            bodies = [json.dumps(full_record(i), separators=(",", ":")) for i in range(args.batch)]
            batch = envelope.up_batch("bench", bodies, "2026-11-25T18:03:59.000Z")
            n_batches = args.records // args.batch
            batched = await throughput(port, [batch] * n_batches, args.window, n_batches * args.batch)
            zbatch = envelope.compress(batch)
            zlib_batched = await throughput(port, [zbatch] * n_batches, args.window, n_batches * args.batch)
            single = [b.encode() for b in bodies] * (args.single_records // args.batch)
            per_record = await throughput(port, single, 32, len(single))
            latency = await alert_latency(port, Path(d), args.seconds, args.load)
        finally:
            broker.stop()
    return {
        "batched_records_s": round(batched),
        "batched_zlib_records_s": round(zlib_batched),
        "zlib_ratio": round(len(batch) / len(zbatch), 2),
        "per_record_records_s": round(per_record),
        "batched_vs_per_record": round(batched / per_record, 1),
        "alert_latency": {k: round(v, 2) for k, v in latency.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--single-records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--load", type=int, default=2000, help="background readings per second")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
