"""The gateway host's own health: CPU, memory, disk and temperature, for the ``health`` message.

Owns reading them from Linux (/proc, /sys, ``os.statvfs``) and the CPU share between two
readings. Every value is optional: a figure the host cannot give (no thermal zone on a VM,
a /proc that is not Linux's) is ``None``, never an error, because health must still go out.
It does not own when health is published (``gateway.uplink.health``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")  # the SoC on a Raspberry Pi
_MIB = 1024 * 1024


class HostInfo:
    """``section()`` gives the ``host`` section; the CPU share is since the previous call."""

    def __init__(self, data_dir: Path, thermal_zone: Path = THERMAL_ZONE) -> None:
        self._data_dir = data_dir
        self._thermal_zone = thermal_zone
        self._last = (time.monotonic(), time.process_time())

    def section(self) -> dict[str, Any]:
        now, cpu = time.monotonic(), time.process_time()
        wall_s, cpu_s = now - self._last[0], cpu - self._last[1]
        self._last = (now, cpu)
        return {
            # % of one core used by the agent since the previous health message.
            "cpu_pct": round(100 * cpu_s / wall_s, 2) if wall_s > 0 else None,
            "load_1m": _load_1m(),
            "rss_mib": _rss_mib(),
            "disk": _disk(self._data_dir),
            "temperature_c": _temperature_c(self._thermal_zone),
        }


def _load_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _rss_mib() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _disk(data_dir: Path) -> dict[str, Any] | None:
    """Space of the file system holding the data dir (the outbox grows there)."""
    try:
        st = os.statvfs(data_dir)
    except OSError:
        return None
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    return {
        "total_mib": round(total / _MIB, 1),
        "free_mib": round(free / _MIB, 1),
        "used_pct": round(100 * (total - free) / total, 1) if total else None,
    }


def _temperature_c(zone: Path) -> float | None:
    try:
        return round(int(zone.read_text(encoding="ascii").strip()) / 1000, 1)  # millidegrees
    except (OSError, ValueError):
        return None
