"""What the gateway has heard from each device: last seen, signal, counts.

Owns a small in-memory view per DevEUI, fed by the pipeline's frame events, for
the technician views (`edgegw devices`) and, later, the fleet inventory. It keeps
no history beyond a 24-hour frame count (hour buckets) and is rebuilt after a
restart from what is heard next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

_BUCKET_S = 3600
_BUCKETS = 24


@dataclass(slots=True)
class DeviceSeen:
    last_seen_s: float = 0.0
    rssi_dbm: float | None = None
    snr_db: float | None = None
    fcnt: int | None = None
    battery: float | None = None
    frames: int = 0
    errors: int = 0
    last_error: str = ""
    _hours: dict[int, int] = field(default_factory=dict)

    def frames_24h(self, now_s: float) -> int:
        current = int(now_s // _BUCKET_S)
        return sum(n for hour, n in self._hours.items() if current - hour < _BUCKETS)

    def count(self, now_s: float) -> None:
        hour = int(now_s // _BUCKET_S)
        self._hours[hour] = self._hours.get(hour, 0) + 1
        if len(self._hours) > _BUCKETS + 1:
            for old in sorted(self._hours)[: -(_BUCKETS + 1)]:
                del self._hours[old]


class Inventory:
    """Per-device view built from pipeline events (see ``UplinkPipeline.listeners``)."""

    def __init__(self) -> None:
        self._devices: dict[str, DeviceSeen] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        dev_eui = event.get("dev_eui")
        if not dev_eui:
            return  # frames from unknown devices have no DevEUI: `edgegw tail` shows them
        seen = self._devices.setdefault(dev_eui, DeviceSeen())
        now_s = float(event["at_s"])
        if event["verdict"] == "accepted":
            seen.last_seen_s = now_s
            seen.rssi_dbm, seen.snr_db, seen.fcnt = event["rssi_dbm"], event["snr_db"], event["fcnt"]
            seen.frames += 1
            seen.count(now_s)
            data = event.get("data") or {}
            battery = data.get("battery")
            if isinstance(battery, (int, float)) and not isinstance(battery, bool):
                seen.battery = float(battery)
            if event.get("decode_error"):
                seen.errors += 1
                seen.last_error = str(event["decode_error"])
        else:
            seen.errors += 1
            seen.last_error = str(event.get("reason", ""))

    def snapshot(self, now_s: float | None = None) -> dict[str, dict[str, Any]]:
        now_s = time.time() if now_s is None else now_s
        return {
            dev_eui: {
                "last_seen_s": seen.last_seen_s or None,
                "rssi_dbm": seen.rssi_dbm,
                "snr_db": seen.snr_db,
                "fcnt": seen.fcnt,
                "battery": seen.battery,
                "frames": seen.frames,
                "frames_24h": seen.frames_24h(now_s),
                "errors": seen.errors,
                "last_error": seen.last_error,
            }
            for dev_eui, seen in self._devices.items()
        }
