"""Helpers shared by the benchmarks (not a benchmark): disk writes, a typical record, a broker.

The benches are scripts (`python bench/NAME.py`), so this module is imported by its bare name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulator.broker import Mosquitto
from simulator.broker import free_port as free_port  # the benches import it from here


def write_bytes() -> int:
    """Bytes this process caused to be written to storage so far (/proc/self/io: SD-card wear)."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def small_record(i: int) -> dict[str, Any]:
    """A minimal reading (~176 bytes of JSON)."""
    return {
        "id": f"70b3d5e75e000001-abcd0123-{i}",
        "kind": "reading",
        "dev_eui": "70b3d5e75e000001",
        "fcnt": i,
        "data": {"battery": 92, "distance": 2116, "position": "normal"},
        "raw": "01755c03824408040000",
    }


def full_record(i: int, kind: str = "reading") -> dict[str, Any]:
    """A reading with every key the pipeline writes (~420 bytes of JSON, ARCHITECTURE.md §3.2)."""
    return {
        "id": f"70b3d5e75e{i % 1000:06x}-c365c836-{i}",
        "kind": kind,
        "dev_eui": f"70b3d5e75e{i % 1000:06x}",
        "profile": "milesight/em310-udl",
        "received_at": "2026-11-25T18:03:58.989Z",
        "time_quality": "ntp",
        "fcnt": i,
        "fport": 85,
        "rx": {
            "rssi_dbm": -76.0,
            "snr_db": 7.0,
            "freq_hz": 868100000,
            "sf": 7,
            "bw_hz": 125000,
            "backend": "semtech-udp",
            "gateway_eui": "b827ebfffe000001",
        },
        "data": {"battery": 100, "distance": 1427 + i % 100, "position": "normal"},
        "raw": "01756403829305040000",
    }


def start_broker(workdir: Path) -> Mosquitto:
    """mosquitto on a free loopback port (the tests' broker); ``.port``, ``.stop()``."""
    broker = Mosquitto(free_port(), workdir)
    broker.start()
    return broker
