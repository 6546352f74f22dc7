"""What the gateway has heard from each device: last seen, signal, counts.

Owns a small in-memory view per DevEUI, fed by the pipeline's frame events, for the technician
views (`edgegw devices`, `device show`) and the MQTT ``inventory``. It keeps no history beyond a
24-hour frame count (hour buckets). Its verdicts: an accepted frame is counted in ``frames`` (and
in ``errors`` when it could not be decoded), a refused frame tied to the device in ``errors``, a
join in ``joins`` and a repeat of an accepted frame (NbTrans) in ``retransmissions``: neither of
the last two is an error. A device's DevStatusAns (battery, demodulation margin) comes apart, from
``gateway.lorawan.devstatus`` through ``dev_status``.

It survives a restart through ``gateway.device_state`` (``export``/``restore`` here), which
commits what changed with the group commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
    joins: int = 0
    retransmissions: int = 0
    status_battery: int | None = None
    """Battery of the last DevStatusAns (LoRaWAN 1.0.4 §5.5): 0 mains, 1..254 level, 255 unknown."""
    status_margin_db: int | None = None
    """Margin of the last DevStatusAns: SNR in dB of our DevStatusReq at the device."""
    status_at_s: float | None = None
    """When the last DevStatusAns was received."""
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

    def export(self) -> dict[str, Any]:
        """Everything, hour buckets included, as JSON-able values (``from_export`` reads it back)."""
        return {
            "last_seen_s": self.last_seen_s, "rssi_dbm": self.rssi_dbm, "snr_db": self.snr_db,
            "fcnt": self.fcnt, "battery": self.battery, "frames": self.frames, "errors": self.errors,
            "last_error": self.last_error, "joins": self.joins, "retransmissions": self.retransmissions,
            "status_battery": self.status_battery, "status_margin_db": self.status_margin_db,
            "status_at_s": self.status_at_s,
            "hours": [[hour, n] for hour, n in sorted(self._hours.items())],
        }  # fmt: skip

    @classmethod
    def from_export(cls, doc: dict[str, Any]) -> DeviceSeen:
        """Raises KeyError, TypeError or ValueError on a document ``export`` did not write."""
        return cls(
            last_seen_s=float(doc["last_seen_s"]),
            rssi_dbm=_opt_float(doc.get("rssi_dbm")),
            snr_db=_opt_float(doc.get("snr_db")),
            fcnt=None if doc.get("fcnt") is None else int(doc["fcnt"]),
            battery=_opt_float(doc.get("battery")),
            frames=int(doc["frames"]),
            errors=int(doc["errors"]),
            last_error=str(doc.get("last_error", "")),
            joins=int(doc.get("joins", 0)),
            retransmissions=int(doc.get("retransmissions", 0)),
            status_battery=_opt_int(doc.get("status_battery")),
            status_margin_db=_opt_int(doc.get("status_margin_db")),
            status_at_s=_opt_float(doc.get("status_at_s")),
            _hours={int(hour): int(n) for hour, n in doc.get("hours", [])},
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def dev_status_view(seen: DeviceSeen) -> dict[str, Any] | None:
    """The last DevStatusAns as the views show it (None: never answered).

    ``power``: "mains" (Battery 0), "battery" (1..254, with ``battery_pct`` = level/254*100) or
    "unknown" (255, the device cannot measure)."""
    if seen.status_at_s is None or seen.status_battery is None:
        return None
    level = seen.status_battery
    power = "mains" if level == 0 else "unknown" if level == 255 else "battery"
    return {
        "power": power,
        "battery_pct": round(level / 254 * 100, 1) if power == "battery" else None,
        "margin_db": seen.status_margin_db,
        "at_s": seen.status_at_s,
    }


class Inventory:
    """Per-device view built from pipeline events (see ``UplinkPipeline.listeners``)."""

    def __init__(self) -> None:
        self._devices: dict[str, DeviceSeen] = {}
        self.views: list[Callable[[str], dict[str, Any]]] = []
        """What other stages know of a device, added to its snapshot row (``AdrPeer.link``: DR, TX
        power, link margin); each returns {} for a device it knows nothing of."""

    def __call__(self, event: dict[str, Any]) -> None:
        dev_eui = event.get("dev_eui")
        if not dev_eui:
            return  # frames from unknown devices have no DevEUI: `edgegw tail` shows them
        seen = self._devices.setdefault(dev_eui, DeviceSeen())
        now_s = float(event["at_s"])
        verdict = event["verdict"]
        if verdict == "accepted":
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
        elif verdict == "joined":
            seen.joins += 1  # an OTAA device doing what it should: not an error
        elif verdict == "retransmission":
            seen.retransmissions += 1  # the same uplink again (NbTrans): normal, already counted once
        elif verdict == "rejected":
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
                "joins": seen.joins,
                "retransmissions": seen.retransmissions,
                "dev_status": dev_status_view(seen),
                **{key: value for view in self.views for key, value in view(dev_eui).items()},
            }
            for dev_eui, seen in self._devices.items()
        }

    def dev_status(self, dev_eui: str, battery: int, margin_db: int, at_s: float) -> None:
        """A DevStatusAns of the device (``gateway.lorawan.devstatus``): battery and margin."""
        seen = self._devices.setdefault(dev_eui, DeviceSeen())
        seen.status_battery, seen.status_margin_db, seen.status_at_s = battery, margin_db, at_s

    def dev_status_answered(self) -> dict[str, float]:
        """DevEUI → when each device last answered a DevStatusReq (to seed the peer at start)."""
        return {eui: seen.status_at_s for eui, seen in self._devices.items() if seen.status_at_s is not None}

    def export(self, dev_eui: str) -> dict[str, Any] | None:
        """One device's whole state for the database (None: not heard)."""
        seen = self._devices.get(dev_eui)
        return seen.export() if seen is not None else None

    def forget(self, dev_eui: str) -> None:
        """The device left the registry."""
        self._devices.pop(dev_eui, None)

    def restore(self, dev_eui: str, doc: dict[str, Any]) -> None:
        """Take back what ``export`` gave (at start). Raises KeyError, TypeError or ValueError."""
        self._devices[dev_eui] = DeviceSeen.from_export(doc)
