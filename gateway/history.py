"""The last readings of each device, in memory, for `edgegw device show` and its chart.

Owns a bounded ring of accepted frames per DevEUI (time, signal, frame counter,
decoded values), fed by the pipeline's frame events like ``gateway.inventory``.
It is not the record of what a device sent — the outbox and the platform are. It survives a
restart through ``gateway.inventory_state`` (``restore`` here), which commits the new readings
with the group commit.
"""

from __future__ import annotations

from collections import deque
from typing import Any

READINGS_PER_DEVICE = 200
MAX_DEVICES = 10_000
"""Bounds memory: 200 readings x 10,000 devices is far above one gateway's fleet."""


class ReadingHistory:
    """Per-device ring of the last ``per_device`` accepted frames (see ``UplinkPipeline.listeners``)."""

    def __init__(self, per_device: int = READINGS_PER_DEVICE, max_devices: int = MAX_DEVICES) -> None:
        self._per_device = per_device
        self._max_devices = max_devices
        self._rings: dict[str, deque[dict[str, Any]]] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        dev_eui = event.get("dev_eui")
        if not dev_eui or event.get("verdict") != "accepted":
            return
        ring = self._ring(dev_eui)
        if ring is None:
            return
        ring.append(
            {
                "at_s": float(event["at_s"]),
                "fcnt": event.get("fcnt"),
                "fport": event.get("fport"),
                "rssi_dbm": event.get("rssi_dbm"),
                "snr_db": event.get("snr_db"),
                "sf": event.get("sf"),
                "data": event.get("data") or {},
                "decode_error": event.get("decode_error"),
            }
        )

    def _ring(self, dev_eui: str) -> deque[dict[str, Any]] | None:
        ring = self._rings.get(dev_eui)
        if ring is None:
            if len(self._rings) >= self._max_devices:
                return None  # an unbounded stream of DevEUIs must not grow memory without end
            ring = self._rings[dev_eui] = deque(maxlen=self._per_device)
        return ring

    @property
    def per_device(self) -> int:
        return self._per_device

    def restore(self, dev_eui: str, readings: list[dict[str, Any]]) -> None:
        """Take back stored readings of one device, oldest first (at start; the bounds apply)."""
        ring = self._ring(dev_eui)
        if ring is not None:
            ring.extend(readings)

    def forget(self, dev_eui: str) -> None:
        """The device left the registry."""
        self._rings.pop(dev_eui, None)

    def readings(self, dev_eui: str, since_s: float | None = None) -> list[dict[str, Any]]:
        """Oldest first; only those at or after ``since_s`` (Unix time) when given."""
        ring = self._rings.get(dev_eui.lower(), ())
        return [r for r in ring if since_s is None or r["at_s"] >= since_s]
