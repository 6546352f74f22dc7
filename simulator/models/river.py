"""Rivers under a Milesight EM500-SWL submersible probe (research/domain.md §3.2).

Owns the flash-flood hydrograph, a stuck probe (§3.5 "Sensor-stuck": a flat line while the
river moves) and the EM500-SWL payload (device_profiles/milesight/em500-swl.yaml).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from simulator.models.base import SECONDS_PER_DAY, Measurement


def em500_swl_payload(battery_pct: int, level_cm: int) -> bytes:
    """Milesight EM500-SWL TLV (TTN em500-swl.js): 01 75 battery, 03 77 level (uint16 LE, cm)."""
    return bytes([0x01, 0x75, battery_pct, 0x03, 0x77]) + level_cm.to_bytes(2, "little")


@dataclass(frozen=True, slots=True)
class FloodEvent:
    """A flash flood: a rise at ``rise_cm_per_15min`` from ``start_s`` by ``peak_rise_cm``, then recession."""

    start_s: float
    rise_cm_per_15min: float
    peak_rise_cm: float
    recession_tau_s: float

    @property
    def peak_s(self) -> float:
        return self.start_s + self.peak_rise_cm / self.rise_cm_per_15min * 900.0

    def rise_cm(self, t_s: float) -> float:
        """Water above base level at ``t_s``: linear rise, then exponential recession (domain.md §3.2)."""
        if t_s <= self.start_s:
            return 0.0
        if t_s <= self.peak_s:
            return (t_s - self.start_s) / 900.0 * self.rise_cm_per_15min
        return self.peak_rise_cm * math.exp(-(t_s - self.peak_s) / self.recession_tau_s)


@dataclass
class RiverModel:
    """An EM500-SWL submersible probe in a river: base level, ±1 cm diurnal swing, flash floods."""

    base_cm: float
    floods: list[FloodEvent]
    battery_pct: int = 100
    diurnal_cm: float = 1.0
    stuck_s: list[tuple[float, float]] = field(default_factory=list)
    """(start, duration) of the probe being stuck (silt, a jammed float, a frozen transmitter):
    it reports the level it had at the start while the water moves, then the true level again."""

    def level_cm(self, t_s: float) -> float:
        diurnal = self.diurnal_cm * math.sin(2 * math.pi * t_s / SECONDS_PER_DAY)
        return self.base_cm + diurnal + sum(f.rise_cm(t_s) for f in self.floods)

    def in_flood(self, t_s: float) -> bool:
        return any(f.start_s <= t_s < f.peak_s + 3 * f.recession_tau_s for f in self.floods)

    def reported_cm(self, t_s: float) -> float:
        """What the probe says: the true level, or the level it stuck at."""
        for start, duration in self.stuck_s:
            if start <= t_s < start + duration:
                return self.level_cm(start)
        return self.level_cm(t_s)

    def measure(self, t_s: float) -> Measurement:
        level = max(0, min(0xFFFF, round(self.reported_cm(t_s))))
        values: dict[str, Any] = {"battery": self.battery_pct, "level": level}
        return Measurement(values, em500_swl_payload(self.battery_pct, level))
