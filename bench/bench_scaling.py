"""Scaling of the real agent (issue 12): memory and start-up time against registered devices and
buffered records, and end-to-end capacity against registered devices and loaded rules.

Each point runs in a fresh interpreter (``--child``), so one point's memory does not leak into
the next; each is compared with the same process before the agent was built (the interpreter and
its imports), the baseline that does not scale.

* ``devices``: RSS and start-up time (``build()`` + start until ready) with 100 ... 100,000
  registered ABP devices, an empty outbox.
* ``records``: RSS and start-up time with 10^4 ... 10^6 records already in the outbox (a gateway
  back from a long outage; ~420-byte records as the pipeline writes them), 1,000 devices, the
  broker unreachable (nothing drains while it is measured). 10^7 records (~4.5 GB of disk) only
  with ``--records 10000000``.
* ``drain``: a gateway back from an outage with 10^5 records: records/s drained while live
  traffic (~110 frames/s) and alerts (2/s) continue, with the shipped drain limit and without,
  and the alerts' latency meanwhile (they take their own lane, ahead of the backlog).
* ``throughput``: end-to-end capacity (``bench_e2e.throughput_run``: UDP → PUBACK, drain limit
  off) with 100 / 1,000 / 10,000 devices, and with 1 / 10 / 100 threshold rules that all match
  every frame (the rules' cost per frame), one run each.

    .venv/bin/python bench/bench_scaling.py [--quick] [--plot docs/img]

Prints tables, writes bench/results/scaling-<UTC time>.json, and with ``--plot DIR`` PNG curves
(needs matplotlib: ``.venv/bin/pip install matplotlib``; imported only then).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_e2e as e2e
from _common import free_port, full_record, start_broker

from gateway import app, db

INSERT = "INSERT INTO outbox (record_id, kind, priority, created_s, size, body) VALUES (?, ?, ?, ?, ?, ?)"
RULE = """  - id: rule-{n}
    devices: {{profiles: [milesight/em310-udl]}}
    when: {{threshold: {{value: {{field: distance}}, above: {above}, clear_below: {clear}}}}}
    severity: info
    message: distance above {above}
"""


def prefill(data_dir: Path, records: int) -> None:
    """``records`` readings in the outbox, committed in chunks (as a long outage leaves it)."""
    conn = db.connect(db.db_path(data_dir))
    try:
        chunk = 50_000
        for start in range(0, records, chunk):
            rows = []
            for i in range(start, min(records, start + chunk)):
                body = json.dumps(full_record(i), separators=(",", ":"))
                rows.append((f"r-{i}", "reading", 50, 0.0, len(body) + 40, body))
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, rows)
            conn.execute("COMMIT")
    finally:
        conn.close()


def child(devices: int, records: int) -> None:
    """One point, in a fresh interpreter: print RSS before/after and start-up time as JSON."""
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        dead_port = free_port()  # nothing listens: the backlog stays while it is measured
        cfg = e2e.write_config(
            Path(tmp), dead_port, free_port(socket.SOCK_DGRAM), outbox="max_bytes: 20000000000, max_age_s: 0"
        )
        e2e.register(cfg.data_path, devices)
        prefill(cfg.data_path, records)
        before = e2e.rss_kib()
        db_bytes = sum(f.stat().st_size for f in cfg.data_path.iterdir() if f.is_file())
        result: dict[str, Any] = {
            "devices": devices, "records": records, "before_build_kib": before, "db_bytes": db_bytes
        }  # fmt: skip

        async def main() -> None:
            stop = asyncio.Event()
            ready: asyncio.Future[app.Agent] = asyncio.get_running_loop().create_future()
            t0 = time.monotonic()
            runner = asyncio.create_task(app.run(cfg, stop, on_ready=ready.set_result))
            agent = await asyncio.wait_for(asyncio.shield(ready), 600)
            result["startup_s"] = round(time.monotonic() - t0, 3)
            await asyncio.sleep(1.0)
            result["running_kib"] = e2e.rss_kib()
            result["outbox_depth"] = agent.outbox.depth
            stop.set()
            await asyncio.wait_for(runner, 60)

        asyncio.run(main())
    print(json.dumps(result))


def point(devices: int, records: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(devices), str(records)],
        capture_output=True, text=True, timeout=1800, check=True,
    )  # fmt: skip
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def rules_text(rules: int) -> str:
    """``rules`` threshold rules that all see every frame of the bench's EM310 devices."""
    return "schema_version: 1\nrules:\n" + "".join(
        RULE.format(n=n, above=100_000 + n, clear=90_000 + n) for n in range(rules)
    )


def throughput_point(mqtt_port: int, devices: int, rules: int, frames_n: int) -> dict[str, Any]:
    devs = [e2e.device(n) for n in range(devices)]
    frames = [e2e.datagram(devs[i % devices].uplink(e2e.em310(1500, False), 85), i) for i in range(frames_n)]
    text = e2e.RULES if rules == 1 else rules_text(rules)
    run = e2e.throughput_run(mqtt_port, devices, frames, 2_000, "", rules_text=text)
    return {"devices": devices, "rules": rules, "frames_per_s": run["frames_per_s"],
            "records_acked": run["records_acked"], "cpu_pct": run["agent_cpu_pct_of_wall"]}  # fmt: skip


def drain_point(mqtt_port: int, backlog: int, limited: bool) -> dict[str, Any]:
    """A gateway back from an outage with ``backlog`` records: how fast it drains while live
    traffic (~110 frames/s) and alerts (2/s, their latency measured) keep coming."""
    live_s = 40.0
    with tempfile.TemporaryDirectory(prefix="bench-scaling-drain-") as tmp:
        udp_port = free_port(socket.SOCK_DGRAM)
        mqtt = "" if limited else e2e.NO_DRAIN_LIMIT
        cfg = e2e.write_config(Path(tmp), mqtt_port, udp_port, mqtt=mqtt, outbox="max_age_s: 0")
        e2e.register(cfg.data_path, 550)  # paced_sender's 500 readers + 50 alerting devices
        prefill(cfg.data_path, backlog)

        async def body(agent: app.Agent) -> dict[str, Any]:
            proc, out = e2e.spawn(e2e.paced_sender, udp_port, mqtt_port, 110, live_s, 500, 50, 2)
            t0, acked0 = time.monotonic(), agent.forwarder.counters["records_acked"]
            # Drained: the prefilled rows are gone (live records keep coming and going).
            while agent.outbox.depth > 500 and time.monotonic() - t0 < live_s:
                await asyncio.sleep(0.05)
            drain_s = time.monotonic() - t0
            acked = agent.forwarder.counters["records_acked"] - acked0
            sender = await e2e.wait_result(proc, out, live_s + 30)
            lat = sorted(sender["latencies_ms"])
            return {
                "backlog": backlog,
                "drain_limit": "5,000 records/s (shipped)" if limited else "off",
                "drained": agent.outbox.depth <= 500,
                "drain_s": round(drain_s, 2),
                "records_per_s": round(acked / drain_s),
                "alerts": len(lat),
                "alert_p50_ms": round(e2e.percentile(lat, 0.5), 1) if lat else None,
                "alert_p99_ms": round(e2e.percentile(lat, 0.99), 1) if lat else None,
            }

        result: dict[str, Any] = asyncio.run(e2e.with_agent(cfg, body, timeout_s=live_s + 60))
        return result


def plot(results: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib  # only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, x_key, title in (
        ("devices", "devices", "Agent memory and start-up against registered devices"),
        ("records", "records", "Agent memory and start-up against buffered records"),
    ):
        rows = results[key]
        xs = [r[x_key] for r in rows]
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        ax.plot(xs, [r["running_kib"] / 1024 for r in rows], "o-", label="RSS, agent running (MiB)")
        ax.plot(xs, [r["before_build_kib"] / 1024 for r in rows], "s--", label="RSS before build() (MiB)")
        ax.axhline(60 / 1.048576, color="grey", linewidth=0.8, linestyle=":", label="target 60 MB")
        ax.set_xscale("log")
        ax.set_xlabel(x_key)
        ax.set_ylabel("MiB")
        ax2 = ax.twinx()
        ax2.plot(xs, [r["startup_s"] for r in rows], "^-", color="tab:red", label="start-up (s)")
        ax2.set_ylabel("start-up s")
        ax.legend(loc="upper left", fontsize=8)
        ax2.legend(loc="lower right", fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        path = out_dir / f"scaling-{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    curves = ((axes[0], "throughput_devices", "devices"), (axes[1], "throughput_rules", "rules"))
    for ax, key, label in curves:
        rows = results[key]
        ax.plot([r[label] for r in rows], [r["frames_per_s"] for r in rows], "o-")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("frames/s PUBACKed")
        ax.set_ylim(bottom=0)
        ax.set_title(f"End-to-end capacity against {label}", fontsize=10)
    fig.tight_layout()
    path = out_dir / "scaling-throughput.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller points (a smoke test)")
    parser.add_argument("--records", type=int, default=1_000_000, help="largest backlog point")
    parser.add_argument("--plot", type=Path, help="write PNG curves into this directory")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    logging.basicConfig(level=logging.ERROR)
    started = time.monotonic()
    device_points = [100, 1_000, 10_000] if args.quick else [100, 1_000, 10_000, 100_000]
    record_points = [10_000, 100_000]
    if not args.quick:
        record_points = [p for p in (10_000, 100_000, 1_000_000, 10_000_000) if p <= args.records]
    results: dict[str, Any] = {
        "devices": [point(n, 0) for n in device_points],
        "records": [point(1_000, n) for n in record_points],
    }
    frames_n = 10_000 if args.quick else 30_000
    with tempfile.TemporaryDirectory(prefix="bench-scaling-broker-") as broker_dir:
        broker = start_broker(Path(broker_dir))
        mqtt_port = broker.port
        try:
            results["throughput_devices"] = [
                throughput_point(mqtt_port, n, 1, frames_n) for n in (100, 1_000, 10_000)
            ]
            results["throughput_rules"] = [
                throughput_point(mqtt_port, 1_000, n, frames_n) for n in (1, 10, 100)
            ]
            backlog = 20_000 if args.quick else 100_000
            results["drain"] = [drain_point(mqtt_port, backlog, limited) for limited in (True, False)]
        finally:
            broker.stop()
    results["machine"] = e2e.machine()
    results["command"] = " ".join([".venv/bin/python", "bench/bench_scaling.py", *sys.argv[1:]])
    results["total_s"] = round(time.monotonic() - started, 1)
    print(f"\nmachine: {results['machine']['nproc']} x {results['machine']['cpu']}")
    print(f"{'devices':>9} {'records':>11} {'RSS MiB':>8} {'before':>7} {'start s':>8} {'depth':>9}")
    for r in results["devices"] + results["records"]:
        rss_mib, before_mib = r["running_kib"] / 1024, r["before_build_kib"] / 1024
        print(f"{r['devices']:>9,} {r['records']:>11,} {rss_mib:>8.1f} {before_mib:>7.1f} "
              f"{r['startup_s']:>8.2f} {r['outbox_depth']:>9,}")  # fmt: skip
    print(f"\n{'devices':>9} {'rules':>6} {'frames/s':>9} {'agent CPU %':>12}")
    for r in results["throughput_devices"] + results["throughput_rules"]:
        print(f"{r['devices']:>9,} {r['rules']:>6} {r['frames_per_s']:>9,} {r['cpu_pct']:>12}")
    print(f"\n{'backlog':>9} {'drain limit':>26} {'records/s':>10} {'drain s':>8} {'alert p50/p99 ms':>17}")
    for r in results["drain"]:
        print(f"{r['backlog']:>9,} {r['drain_limit']:>26} {r['records_per_s']:>10,} {r['drain_s']:>8} "
              f"{r['alert_p50_ms']!s:>8}/{r['alert_p99_ms']!s:<8}")  # fmt: skip
    print(f"(one run per point; total {results['total_s']} s)")
    e2e.RESULTS_DIR.mkdir(exist_ok=True)
    out = e2e.RESULTS_DIR / f"scaling-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {out}")
    if args.plot:
        for path in plot(results, args.plot):
            print(f"plot: {path}")


if __name__ == "__main__":
    main()
