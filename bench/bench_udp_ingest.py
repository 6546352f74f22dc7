"""Semtech UDP ingest: rxpk/s through SemtechUdpBackend versus a bare recvfrom loop, same run.

Two measurements, each against a baseline measured in the same run on the same machine:

1. Throughput: a sender process keeps ``--window`` PUSH_DATA datagrams in flight and sends the
   next one for each PUSH_ACK (a closed loop, so nothing is lost to a full socket buffer and
   the rate is what the receiver sustains). Receiver A is a bare ``recvfrom`` + ``sendto(ack)``
   loop; receiver B is the real backend (parse, ack, RxInfo/RadioFrame, queue) with a task
   draining ``receive()``. Target (issue 4): B >= 20,000 rxpk/s on one core.
2. Latency: the sender paces ``--rate`` rxpk/s (default 1,000) and writes its CLOCK_MONOTONIC
   send time into each PHYPayload; each receiver takes the time when the frame is in hand
   (B: out of ``receive()``). Added latency = B - A per percentile. Target: <= 1 ms.

Run: ``.venv/bin/python bench/bench_udp_ingest.py [--frames 200000] [--rxpk-per-datagram 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import socket
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.radio.semtech_udp.backend import SemtechUdpBackend
from gateway.radio.semtech_udp.packets import PushData, make_rxpk

EUI = bytes.fromhex("b827ebfffe00be4c")
PHY_TAIL = bytes.fromhex("40ac9d0b2600430301ee2bb9")  # after the 8-byte timestamp: 20-byte frames


def _datagram(token: int, rxpk_count: int) -> bytes:
    now = time.monotonic_ns()
    rxpk = [
        make_rxpk(
            struct.pack(">Q", now) + PHY_TAIL,
            freq_hz=868_100_000,
            sf=7,
            rssi_dbm=-60,
            snr_db=7.5,
            tmst_us=now // 1000,
        )
        for _ in range(rxpk_count)
    ]
    return PushData(token & 0xFFFF, EUI, rxpk).to_bytes()


def _closed_loop_sender(port: int, datagrams: int, window: int, rxpk_count: int) -> None:
    # Pre-built datagrams: the sender must not be the bottleneck.
    prebuilt = [_datagram(i, rxpk_count) for i in range(min(datagrams, 4096))]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(5.0)
    sent = 0
    for _ in range(min(window, datagrams)):
        sock.send(prebuilt[sent % len(prebuilt)])
        sent += 1
    acked = 0
    while acked < datagrams:
        try:
            sock.recv(64)
        except TimeoutError:
            break
        acked += 1
        if sent < datagrams:
            sock.send(prebuilt[sent % len(prebuilt)])
            sent += 1
    sock.close()


def _paced_sender(port: int, datagrams: int, rate_per_s: float, rxpk_count: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    interval_ns = int(1e9 * rxpk_count / rate_per_s)
    start = time.monotonic_ns()
    for i in range(datagrams):
        target = start + i * interval_ns
        # Sleep most of the gap and spin only the last 0.3 ms: a sender spinning all the time
        # would steal the receivers' core on a small machine and skew the percentiles.
        remaining_ns = target - time.monotonic_ns()
        if remaining_ns > 300_000:
            time.sleep((remaining_ns - 300_000) / 1e9)
        while time.monotonic_ns() < target:
            pass
        sock.send(_datagram(i, rxpk_count))
    sock.close()


def _sender(kind: str, *args: Any) -> multiprocessing.Process:
    target = _closed_loop_sender if kind == "closed" else _paced_sender
    process = multiprocessing.Process(target=target, args=args, daemon=True)
    process.start()
    return process


# ----------------------------------------------------------------------------- receiver A: bare loop


def bare_throughput(datagrams: int, window: int, rxpk_count: int) -> float:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    sender = _sender("closed", sock.getsockname()[1], datagrams, window, rxpk_count)
    data, addr = sock.recvfrom(65535)
    start = time.perf_counter()
    sock.sendto(b"\x02" + data[1:3] + b"\x01", addr)
    for _ in range(datagrams - 1):
        data, addr = sock.recvfrom(65535)
        sock.sendto(b"\x02" + data[1:3] + b"\x01", addr)
    elapsed = time.perf_counter() - start
    sender.join(10)
    sock.close()
    return (datagrams - 1) * rxpk_count / elapsed


def bare_latency(datagrams: int, rate: float, rxpk_count: int) -> list[float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    sender = _sender("paced", sock.getsockname()[1], datagrams, rate, rxpk_count)
    latencies_us: list[float] = []
    for _ in range(datagrams):
        data, _addr = sock.recvfrom(65535)
        now = time.monotonic_ns()
        # The bare loop does the least possible: find the first payload's timestamp.
        start = data.index(b'"data":"') + 8
        sent_ns = struct.unpack(">Q", base64.b64decode(data[start : start + 12])[:8])[0]
        latencies_us.append((now - sent_ns) / 1000)
    sender.join(10)
    sock.close()
    return latencies_us


# ----------------------------------------------------------------------------- receiver B: the backend


async def backend_throughput(datagrams: int, window: int, rxpk_count: int) -> tuple[float, dict[str, int]]:
    backend = SemtechUdpBackend("127.0.0.1", 0, queue_size=100_000)
    await backend.start()
    total = datagrams * rxpk_count
    sender = _sender("closed", backend.bound_port, datagrams, window, rxpk_count)
    await asyncio.wait_for(backend.receive(), 10)
    start = time.perf_counter()
    for _ in range(total - 1):
        await backend.receive()
    elapsed = time.perf_counter() - start
    await asyncio.to_thread(sender.join, 10)
    await backend.stop()
    return (total - 1) / elapsed, dict(backend.counters)


async def backend_latency(datagrams: int, rate: float, rxpk_count: int) -> list[float]:
    backend = SemtechUdpBackend("127.0.0.1", 0)
    await backend.start()
    sender = _sender("paced", backend.bound_port, datagrams, rate, rxpk_count)
    latencies_us: list[float] = []
    for _ in range(datagrams * rxpk_count):
        frame = await asyncio.wait_for(backend.receive(), 10)
        now = time.monotonic_ns()
        latencies_us.append((now - struct.unpack(">Q", frame.phy_payload[:8])[0]) / 1000)
    await asyncio.to_thread(sender.join, 10)
    await backend.stop()
    return latencies_us


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100)
    return {"p50_us": round(q[49], 1), "p99_us": round(q[98], 1), "max_us": round(ordered[-1], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=200_000, help="rxpk per throughput run")
    parser.add_argument("--window", type=int, default=64, help="PUSH_DATA in flight (throughput)")
    parser.add_argument("--rxpk-per-datagram", type=int, default=1)
    parser.add_argument("--rate", type=float, default=1000.0, help="rxpk/s for the latency run")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    args = parser.parse_args()
    per = args.rxpk_per_datagram
    datagrams = args.frames // per

    bare_rate = bare_throughput(datagrams, args.window, per)
    backend_rate, counters = asyncio.run(backend_throughput(datagrams, args.window, per))
    latency_datagrams = int(args.rate * args.latency_seconds / per)
    bare_lat = _percentiles(bare_latency(latency_datagrams, args.rate, per))
    backend_lat = _percentiles(asyncio.run(backend_latency(latency_datagrams, args.rate, per)))
    added = {k: round(backend_lat[k] - bare_lat[k], 1) for k in bare_lat}
    report = {
        "rxpk_per_datagram": per,
        "throughput_rxpk_per_s": {
            "bare_recvfrom": round(bare_rate),
            "semtech_backend": round(backend_rate),
            "ratio": round(backend_rate / bare_rate, 3),
            "target": 20_000,
            "met": backend_rate >= 20_000,
        },
        "latency_at_rate": {
            "rate_rxpk_per_s": args.rate,
            "bare_recvfrom": bare_lat,
            "semtech_backend": backend_lat,
            "added": added,
            "target_added_us": 1000,
            "met": added["p99_us"] <= 1000,
        },
        "backend_counters": {k: v for k, v in counters.items() if not k.startswith("tx")},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
