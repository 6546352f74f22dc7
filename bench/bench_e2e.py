"""End-to-end figures of the real agent (issue 12, first slice): throughput, alert latency, CPU, memory.

The agent is the real one (``gateway.app.run``) in THIS process, on a temporary data_dir, with a
mosquitto on a free 127.0.0.1 port. Frames come from a separate sender process (Semtech UDP
PUSH_DATA, one rxpk per datagram, ABP devices registered with ``gateway.provisioning.registry``),
so the sender's CPU is not charged to the agent. Each figure is compared in the same run with
a baseline (perf-anchors.md: these machines are noisy, absolute times alone mean little):

1. ``throughput``: frames/s from the first UDP send until every record is PUBACKed
   (the forwarder's ``records_acked``), in a closed loop: at most ``--window`` frames sent and not
   yet through the pipeline (the backend acks PUSH_DATA on receipt: PUSH_ACKs are no back-pressure).
   The agent's capacity is measured with the backlog drain limit off
   (``mqtt.drain_rate_records_s: 0``); the shipped limit (5,000 records/s, there to spare the
   platform's broker after an outage) caps forwarding below that capacity, so one run with it
   is reported beside (``throughput_shipped_drain_limit``).
   Baseline: the sum of the bare costs of the unavoidable parts per frame, measured now —
   AES-CMAC (MIC) + AES block (FRMPayload decrypt) + 1/100 of one batched SQLite insert of 100
   records (WAL, synchronous=FULL, real schema) + ``json.dumps`` of a record. The ratio
   ``limit / measured`` is the "distance to the limit". Target: >= 25,000 frames/s.
2. ``alert_latency``: UDP send of an EM310 tilt frame → arrival of its ``container-tilted``
   alert (raised or cleared) at a subscriber, under ~1,000 frames/s of background readings;
   p50/p99 ms, with the shipped de-duplication window (200 ms, which every uplink waits out)
   and with ``dedup_window_ms: 0`` (one gateway, nothing to de-duplicate). Target p99 <= 50 ms.
3. ``cpu``: % of one core (process_time / wall time) at ~110 frames/s, the ceiling of a
   saturated 8-channel concentrator (SF7, 20-byte payloads), beside an idle agent.
4. ``disk``: bytes the agent process made the kernel write to storage (/proc/self/io
   ``write_bytes``: SQLite's WAL, checkpoints and fsyncs), per frame, at ~110 and ~10 frames/s and
   in the throughput runs: the SD-card wear.
5. ``rss``: resident memory (VmRSS) of a fresh process with 100 and 10,000 registered devices
   after the agent is built and running, beside the same process before ``build()``.

    .venv/bin/python bench/bench_e2e.py [--runs 3] [--frames 30000] [--quick]

Prints a table and writes bench/results/e2e-<UTC time>.json (results are not committed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import free_port, start_broker, write_bytes
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway import app, db
from gateway import config as config_mod
from gateway.messages import AesKey, DevAddr, DevEui
from gateway.provisioning import registry
from gateway.radio.semtech_udp.packets import PushData, make_rxpk
from simulator.devices import AbpDevice

GATEWAY_ID = "gw-bench"
GATEWAY_EUI = bytes.fromhex("b827ebfffe00be12")
PROFILE = "milesight/em310-udl"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
NO_DRAIN_LIMIT = "drain_rate_records_s: 0"  # the capacity run: no backlog drain limit (see 1. above)
# The container-tilted rule of rules/examples/waste.yaml, alone: every reading is evaluated, and
# only a tilt raises (and the next normal reading clears) an alert.
RULES = f"""schema_version: 1
rules:
  - id: container-tilted
    devices: {{profiles: [{PROFILE}]}}
    when: {{flag: {{field: position, equals: tilt}}}}
    clear_for_readings: 1
    severity: info
    message: container tilted (emptying or vandalism)
"""


# --- devices, frames, datagrams ----------------------------------------------------------------


def em310(distance_mm: int, tilt: bool) -> bytes:
    """EM310-UDL TLV (vendor README: 01 75 battery, 03 82 distance uint16 LE, 04 00 position)."""
    return bytes([0x01, 0x75, 90, 0x03, 0x82]) + distance_mm.to_bytes(2, "little") + bytes([4, 0, int(tilt)])


def device(n: int) -> AbpDevice:
    return AbpDevice(
        dev_eui=(0x70B3D5E75E000000 + n).to_bytes(8, "big"),
        dev_addr=(0x26000000 + n).to_bytes(4, "big"),
        nwk_s_key=(n.to_bytes(4, "big") * 4),
        app_s_key=((n + 0x10000000).to_bytes(4, "big") * 4),
        profile=PROFILE,
    )


def datagram(phy: bytes, token: int) -> bytes:
    rxpk = make_rxpk(phy, freq_hz=868_100_000, sf=7, rssi_dbm=-60.0, snr_db=7.0, tmst_us=token * 1000)
    raw: bytes = PushData(token & 0xFFFF, GATEWAY_EUI, [rxpk]).to_bytes()
    return raw


def register(data_dir: Path, count: int) -> None:
    """Register ``count`` ABP devices in one transaction (what `edgegw device import` does)."""
    conn = db.connect(db.db_path(data_dir))
    try:
        conn.execute("BEGIN IMMEDIATE")
        for n in range(count):
            d = device(n)
            keys = registry.AbpKeys(DevAddr(d.dev_addr), AesKey(d.nwk_s_key), AesKey(d.app_s_key))
            registry.insert_device(conn, dev_eui=DevEui(d.dev_eui), profile=PROFILE, keys=keys)
        conn.execute("COMMIT")
    finally:
        conn.close()


def write_config(
    workdir: Path,
    mqtt_port: int,
    udp_port: int,
    *,
    dedup_ms: int = 200,
    outbox: str = "",
    mqtt: str = "",
    rules_text: str = RULES,
) -> config_mod.Config:
    rules = workdir / "rules.yaml"
    rules.write_text(rules_text)
    path = workdir / "edgegw.yaml"
    path.write_text(
        f"gateway: {{id: {GATEWAY_ID}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{udp_port}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, tls: false{', ' + mqtt if mqtt else ''}}}\n"
        f"lorawan: {{dedup_window_ms: {dedup_ms}}}\n"
        f"rules: {{path: {rules}}}\n"
        + (f"outbox: {{{outbox}}}\n" if outbox else "")
        + f"data_dir: {workdir / 'data'}\n"
    )
    return config_mod.load(path)


# --- sender processes (own CPU, own GIL) ---------------------------------------------------------


def closed_loop_sender(port: int, datagrams: list[bytes], window: int, handled: Any, out: Any) -> None:
    """Send every datagram, keeping at most ``window`` frames not yet handled by the pipeline.

    The backend acknowledges PUSH_DATA on receipt, before the pipeline runs, so PUSH_ACKs are no
    back-pressure: the agent publishes its pipeline's frame count in ``handled`` instead (a
    closed loop: the rate measured is what the agent sustains, with no frame dropped).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sent = 0
    first_s = time.monotonic()
    deadline = first_s + 120
    while sent < len(datagrams) and time.monotonic() < deadline:
        room = window - (sent - handled.value)
        if room <= 0:
            time.sleep(0.0002)
            continue
        for _ in range(min(room, len(datagrams) - sent)):
            sock.send(datagrams[sent])
            sent += 1
    out.put({"first_send_s": first_s, "sent": sent})
    sock.close()


def paced_sender(
    port: int, mqtt_port: int, rate_hz: float, duration_s: float, background: int, alert_devices: int,
    alert_hz: float, out: Any,
) -> None:  # fmt: skip
    """``rate_hz`` readings from ``background`` devices, plus tilt/normal frames from the alert
    devices at ``alert_hz``; a subscriber here takes each alert's arrival time."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    arrivals: list[tuple[float, str]] = []
    subscribed = multiprocessing.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-e2e-sub")
    client.on_message = lambda _c, _u, msg: arrivals.append((time.monotonic(), msg.payload.decode()))
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_connect = lambda c, *_a: c.subscribe(f"edgegw/{GATEWAY_ID}/alert", qos=1)
    client.connect("127.0.0.1", mqtt_port)
    client.loop_start()
    subscribed.wait(5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    bg = [device(n) for n in range(background)]
    alerting = [device(background + n) for n in range(alert_devices)]
    tilted = [False] * alert_devices
    sent_at: dict[str, list[float]] = {}
    start = time.monotonic()
    next_bg, next_alert, i, j, token = start, start + 0.2, 0, 0, 0
    end = start + duration_s
    while (now := time.monotonic()) < end:
        if alert_hz > 0 and now >= next_alert:
            k = j % alert_devices
            tilted[k] = not tilted[k]
            phy = alerting[k].uplink(em310(1500, tilted[k]), 85)
            t = time.monotonic()
            sock.send(datagram(phy, token))
            sent_at.setdefault(alerting[k].dev_eui.hex(), []).append(t)
            j, token, next_alert = j + 1, token + 1, next_alert + 1 / alert_hz
        elif now >= next_bg:
            sock.send(datagram(bg[i % background].uplink(em310(1500, False), 85), token))
            i, token, next_bg = i + 1, token + 1, next_bg + 1 / rate_hz
        else:
            time.sleep(min(next_bg, next_alert if alert_hz > 0 else next_bg) - now)
    time.sleep(1.5)  # the last alerts are on their way
    client.loop_stop()
    client.disconnect()
    # Each trigger frame gives exactly one alert (raised on tilt, cleared on the next normal
    # reading) on that device, in order: pair the n-th alert of a device with its n-th trigger.
    latencies_ms: list[float] = []
    seen: dict[str, int] = {}
    for arrived, text in arrivals:
        eui = json.loads(text)["record"]["dev_eui"]
        n = seen.get(eui, 0)
        seen[eui] = n + 1
        if n < len(sent_at.get(eui, [])):
            latencies_ms.append((arrived - sent_at[eui][n]) * 1000)
    out.put({"frames": i, "triggers": j, "alerts": len(arrivals), "latencies_ms": latencies_ms,
             "wall_s": time.monotonic() - start - 1.5})  # fmt: skip


# --- the agent in this process -----------------------------------------------------------------


async def with_agent(
    cfg: config_mod.Config, body: Callable[[app.Agent], Any], timeout_s: float = 90
) -> Any:  # fmt: skip
    """Run the real agent until ``body(agent)`` (a coroutine function) returns."""
    stop = asyncio.Event()
    ready: asyncio.Future[app.Agent] = asyncio.get_running_loop().create_future()
    runner = asyncio.create_task(app.run(cfg, stop, on_ready=ready.set_result))
    agent = await asyncio.wait_for(asyncio.shield(ready), 20)
    while not agent.uplink.connected:
        await asyncio.sleep(0.01)
    try:
        return await asyncio.wait_for(body(agent), timeout_s)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)


def spawn(target: Callable[..., None], *args: Any) -> tuple[Any, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out), daemon=True)
    proc.start()
    return proc, out


async def wait_result(proc: Any, out: Any, timeout_s: float) -> dict[str, Any]:
    result: dict[str, Any] = await asyncio.to_thread(out.get, True, timeout_s)
    await asyncio.to_thread(proc.join, 10)
    return result


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat: is the machine itself saturated?"""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) of each thread of this process, by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(rest[11]) + int(rest[12])) / tick
    return out


def throughput_run(
    mqtt_port: int, devices: int, frames: list[bytes], window: int, outbox: str, mqtt: str = NO_DRAIN_LIMIT,
    rules_text: str = RULES,
) -> dict[str, Any]:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        udp_port = free_port(socket.SOCK_DGRAM)
        cfg = write_config(Path(tmp), mqtt_port, udp_port, outbox=outbox, mqtt=mqtt, rules_text=rules_text)
        register(cfg.data_path, devices)

        async def body(agent: app.Agent) -> dict[str, Any]:
            handled = multiprocessing.get_context("spawn").Value("q", 0, lock=False)
            proc, out = spawn(closed_loop_sender, udp_port, frames, window, handled)
            cpu0, busy0, threads0, io0 = time.process_time(), machine_busy(), thread_cpu_s(), write_bytes()
            # Until every frame is acknowledged, or nothing moved for 3 s (frames lost: reported).
            last, last_change_s = -1, time.monotonic()
            while (acked := agent.forwarder.counters["records_acked"]) < len(frames):
                if acked != last:
                    last, last_change_s = acked, time.monotonic()
                elif time.monotonic() - last_change_s > 3.0:
                    break
                handled.value = agent.pipeline.counters["frames"]
                await asyncio.sleep(0.005)
            end_s, cpu1 = last_change_s if acked < len(frames) else time.monotonic(), time.process_time()
            busy1, threads1 = machine_busy(), thread_cpu_s()
            sender = await wait_result(proc, out, 30)
            wall_s = end_s - sender["first_send_s"]
            per_thread = {k: round(100 * (v - threads0.get(k, 0.0)) / wall_s, 1) for k, v in threads1.items()}
            acked = agent.forwarder.counters["records_acked"]
            return {
                "frames_sent": sender["sent"],
                "records_acked": acked,
                "wall_s": round(wall_s, 3),
                "frames_per_s": round(acked / wall_s),
                "agent_cpu_pct_of_wall": round(100 * (cpu1 - cpu0) / wall_s, 1),
                "disk_bytes_per_frame": round((write_bytes() - io0) / max(1, acked)),
                "agent_threads_cpu_pct": {k: v for k, v in per_thread.items() if v > 0.5},
                "machine_busy_pct_all_cpus": round(
                    100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 1
                ),
                "radio": dict(agent.radio.counters),
                "pipeline": dict(agent.pipeline.counters),
            }

        result: dict[str, Any] = asyncio.run(with_agent(cfg, body))
        return result


def paced_run(
    mqtt_port: int, *, rate_hz: float, duration_s: float, alert_hz: float, dedup_ms: int
) -> dict[str, Any]:  # fmt: skip
    background, alert_devices = 500, 50
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        udp_port = free_port(socket.SOCK_DGRAM)
        cfg = write_config(Path(tmp), mqtt_port, udp_port, dedup_ms=dedup_ms)
        register(cfg.data_path, background + alert_devices)

        async def body(agent: app.Agent) -> dict[str, Any]:
            await asyncio.sleep(0.5)
            idle_w0, idle_c0 = time.monotonic(), time.process_time()
            await asyncio.sleep(1.0)
            idle_pct = 100 * (time.process_time() - idle_c0) / (time.monotonic() - idle_w0)
            proc, out = spawn(
                paced_sender, udp_port, mqtt_port, rate_hz, duration_s, background, alert_devices, alert_hz
            )
            w0, c0, io0 = time.monotonic(), time.process_time(), write_bytes()
            sender = await wait_result(proc, out, duration_s + 30)
            wall_s = time.monotonic() - w0
            sender["cpu_pct"] = round(100 * (time.process_time() - c0) / wall_s, 2)
            # SD-card wear: what the agent (this process) made the kernel write to storage.
            sender["disk_bytes_per_frame"] = round((write_bytes() - io0) / max(1, sender["frames"]))
            sender["idle_cpu_pct"] = round(idle_pct, 2)
            sender["readings_acked"] = agent.forwarder.counters["records_acked"]
            return sender

        result: dict[str, Any] = asyncio.run(with_agent(cfg, body))
        return result


# --- bare costs (the baseline of the throughput) --------------------------------------------------


def bare_costs_us(samples: int = 20_000) -> dict[str, float]:
    key = bytes(range(16))
    b0 = bytes([0x49, 0, 0, 0, 0, 0]) + bytes(4) + bytes(4) + bytes([0, 20])
    msg = bytes(20)
    t = time.perf_counter()
    for _ in range(samples):
        c = cmac.CMAC(algorithms.AES(key))
        c.update(b0 + msg)
        c.finalize()
    cmac_us = (time.perf_counter() - t) / samples * 1e6
    block = bytes([1]) + bytes(15)
    t = time.perf_counter()
    for _ in range(samples):
        stream = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(block)
        bytes(a ^ b for a, b in zip(msg, stream * 2, strict=False))
    aes_us = (time.perf_counter() - t) / samples * 1e6
    record = {
        "id": "70b3d5e75e000001-26000001-12", "kind": "reading", "dev_eui": "70b3d5e75e000001",
        "profile": PROFILE, "received_at": "2026-11-25T18:03:58.989Z", "time_quality": "ntp",
        "fcnt": 12, "fport": 85,
        "rx": {"rssi_dbm": -60.0, "snr_db": 7.0, "freq_hz": 868100000, "sf": 7, "bw_hz": 125000,
               "backend": "semtech-udp", "gateway_eui": "b827ebfffe00be12"},
        "data": {"battery": 90, "distance": 1500, "position": "normal"},
        "raw": "01755a0382dc05040000",
    }  # fmt: skip
    t = time.perf_counter()
    for _ in range(samples):
        body = json.dumps(record, separators=(",", ":"))
    json_us = (time.perf_counter() - t) / samples * 1e6
    with tempfile.TemporaryDirectory(prefix="bench-e2e-sql-") as tmp:
        conn = db.connect(db.db_path(tmp))
        insert = (
            "INSERT INTO outbox (record_id, kind, priority, created_s, size, body) VALUES (?, ?, ?, ?, ?, ?)"
        )
        batches = 200
        t = time.perf_counter()
        for b in range(batches):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                insert, [(f"r-{b}-{k}", "reading", 10, time.time(), len(body), body) for k in range(100)]
            )
            conn.execute("COMMIT")
        sql_us = (time.perf_counter() - t) / (batches * 100) * 1e6
        conn.close()
    return {
        "aes_cmac_us": cmac_us,
        "aes_decrypt_us": aes_us,
        "sqlite_insert_us": sql_us,
        "json_dumps_us": json_us,
    }


# --- memory: a fresh process per device count -------------------------------------------------------


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def rss_child(devices: int, mqtt_port: int) -> None:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-rss-") as tmp:
        cfg = write_config(Path(tmp), mqtt_port, free_port(socket.SOCK_DGRAM))
        register(cfg.data_path, devices)
        before = rss_kib()

        async def body(_agent: app.Agent) -> int:
            await asyncio.sleep(1.0)
            return rss_kib()

        running = asyncio.run(with_agent(cfg, body))
    print(json.dumps({"devices": devices, "before_build_kib": before, "running_kib": running}))


def rss_of(devices: int, mqtt_port: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(devices), "--mqtt-port", str(mqtt_port)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


# --- report ----------------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.machine(),
    )  # fmt: skip
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=30_000, help="frames per throughput run")
    parser.add_argument("--devices", type=int, default=1_000, help="registered devices of the throughput run")
    parser.add_argument(
        "--window", type=int, default=2_000, help="frames sent and not yet handled, at most (throughput run)"
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of each paced run")
    parser.add_argument(
        "--outbox", default="", help='outbox settings of the throughput run, e.g. "max_inflight_batches: 32"'
    )
    parser.add_argument("--quick", action="store_true", help="one run each, shorter (a smoke test)")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mqtt-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child is not None:
        rss_child(args.rss_child, args.mqtt_port)
        return
    if args.quick:
        args.runs, args.frames, args.seconds = 1, 10_000, 3.0
    logging.basicConfig(level=logging.ERROR)
    started = time.monotonic()
    devs = [device(n) for n in range(args.devices)]
    frames = [datagram(devs[i % len(devs)].uplink(em310(1500, False), 85), i) for i in range(args.frames)]
    with tempfile.TemporaryDirectory(prefix="bench-e2e-broker-") as broker_dir:
        broker = start_broker(Path(broker_dir))
        mqtt_port = broker.port
        try:
            results = run_all(args, mqtt_port, frames)
        finally:
            broker.stop()
    results["machine"] = machine()
    results["command"] = " ".join([".venv/bin/python", "bench/bench_e2e.py", *sys.argv[1:]])
    results["total_s"] = round(time.monotonic() - started, 1)
    print_table(results)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"e2e-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {out}")


def run_all(args: argparse.Namespace, mqtt_port: int, frames: list[bytes]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    tp_runs, limits = [], []
    for _ in range(args.runs):
        costs = bare_costs_us()
        per_frame_us = (
            costs["aes_cmac_us"]
            + costs["aes_decrypt_us"]
            + costs["sqlite_insert_us"]
            + costs["json_dumps_us"]
        )
        tp = throughput_run(mqtt_port, args.devices, frames, args.window, args.outbox)
        tp["bare_costs_us"] = {k: round(v, 2) for k, v in costs.items()}
        tp["limit_frames_per_s"] = round(1e6 / per_frame_us)
        tp["distance_to_limit"] = round(tp["limit_frames_per_s"] / tp["frames_per_s"], 1)
        tp_runs.append(tp)
        limits.append(tp["limit_frames_per_s"])
    res["throughput"] = {
        "runs": tp_runs,
        "frames_per_s": spread([r["frames_per_s"] for r in tp_runs]),
        "limit_frames_per_s": spread(limits),
        "distance_to_limit": spread([r["distance_to_limit"] for r in tp_runs]),
        "target_frames_per_s": 25_000,
        "outbox_settings": args.outbox or "shipped defaults",
        "mqtt_settings": NO_DRAIN_LIMIT,
    }
    shipped = throughput_run(mqtt_port, args.devices, frames, args.window, args.outbox, mqtt="")
    res["throughput_shipped_drain_limit"] = shipped | {"mqtt_settings": "shipped defaults (5,000 records/s)"}
    for name, dedup_ms, runs in (
        ("alert_latency_dedup_0ms", 0, args.runs),
        ("alert_latency_dedup_200ms", 200, 1),
    ):
        lat_runs = [
            paced_run(mqtt_port, rate_hz=1000, duration_s=args.seconds, alert_hz=20, dedup_ms=dedup_ms)
            for _ in range(runs)
        ]
        p50 = [percentile(r["latencies_ms"], 0.5) for r in lat_runs if r["latencies_ms"]]
        p99 = [percentile(r["latencies_ms"], 0.99) for r in lat_runs if r["latencies_ms"]]
        res[name] = {
            "dedup_window_ms": dedup_ms,
            "runs": [
                {k: v for k, v in r.items() if k != "latencies_ms"} | {"samples": len(r["latencies_ms"])}
                for r in lat_runs
            ],
            "background_frames_per_s": spread([r["frames"] / r["wall_s"] for r in lat_runs]),
            "p50_ms": spread(p50) if p50 else None,
            "p99_ms": spread(p99) if p99 else None,
            "target_p99_ms": 50,
        }
    cpu_runs = [
        paced_run(mqtt_port, rate_hz=110, duration_s=args.seconds, alert_hz=0, dedup_ms=200)
        for _ in range(args.runs)
    ]
    res["cpu_110_fps"] = {
        "runs": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in cpu_runs],
        "cpu_pct_of_one_core": spread([r["cpu_pct"] for r in cpu_runs]),
        "idle_cpu_pct": spread([r["idle_cpu_pct"] for r in cpu_runs]),
        "disk_bytes_per_frame": spread([r["disk_bytes_per_frame"] for r in cpu_runs]),
    }
    # SD-card wear at a field-like rate, where nearly every frame is a group commit of its own.
    slow = paced_run(mqtt_port, rate_hz=10, duration_s=args.seconds, alert_hz=0, dedup_ms=200)
    res["disk_10_fps"] = {k: v for k, v in slow.items() if k != "latencies_ms"}
    res["rss"] = [rss_of(n, mqtt_port) for n in (100, 10_000)]
    return res


def fmt(s: dict[str, float] | None, unit: str = "", digits: int = 0) -> str:
    if s is None:
        return "n/a"
    return f"{s['median']:,.{digits}f}{unit} [{s['min']:,.{digits}f}-{s['max']:,.{digits}f}]"


def print_table(r: dict[str, Any]) -> None:
    tp, shipped = r["throughput"], r["throughput_shipped_drain_limit"]
    rows = [
        ("end-to-end throughput (frames/s, PUBACKed)", fmt(tp["frames_per_s"]), "target >= 25,000"),
        ("  limit: bare costs of unavoidable parts", fmt(tp["limit_frames_per_s"]), "same run"),
        ("  distance to the limit (limit / measured)", fmt(tp["distance_to_limit"], "x", 1), ""),
        ("  with the shipped drain limit", f"{shipped['frames_per_s']:,}", "5,000 records/s; 1 run"),
    ]
    for name in ("alert_latency_dedup_0ms", "alert_latency_dedup_200ms"):
        a = r[name]
        label = f"alert latency, dedup {a['dedup_window_ms']} ms"
        rows.append((f"{label} p50 (ms)", fmt(a["p50_ms"], digits=1), "under ~1,000 frames/s"))
        rows.append((f"{label} p99 (ms)", fmt(a["p99_ms"], digits=1), "target <= 50"))
    c = r["cpu_110_fps"]
    rows.append(("disk writes per frame at ~110 frames/s (B)", fmt(c["disk_bytes_per_frame"]),
                 f"saturated: {tp['runs'][0]['disk_bytes_per_frame']:,} B"))  # fmt: skip
    rows.append(("disk writes per frame at ~10 frames/s (B)", f"{r['disk_10_fps']['disk_bytes_per_frame']:,}",
                 "1 run"))  # fmt: skip
    rows.append(("CPU at ~110 frames/s (% of one core)", fmt(c["cpu_pct_of_one_core"], digits=1),
                 f"idle agent {c['idle_cpu_pct']['median']:.1f} %"))  # fmt: skip
    for m in r["rss"]:
        rows.append((f"RSS, {m['devices']:,} devices (MiB)", f"{m['running_kib'] / 1024:.1f}",
                     f"before build() {m['before_build_kib'] / 1024:.1f}"))  # fmt: skip
    width = max(len(k) for k, _, _ in rows)
    print(f"\nmachine: {r['machine']['nproc']} x {r['machine']['cpu']}, Python {r['machine']['python']}")
    for key, value, note in rows:
        print(f"{key:<{width}}  {value:<32}  {note}")
    print(f"(median [min-max] of {len(tp['runs'])} run(s); total {r['total_s']} s)")


if __name__ == "__main__":
    main()
