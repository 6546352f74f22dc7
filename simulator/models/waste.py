"""Waste containers under a Milesight EM310-UDL (research/domain.md §1.3).

Owns the fill physics, the tilts (collections and vandalism), the temperature under the lid
(ambient and fires, for the project's own node: an EM310-UDL has no thermometer) and the
EM310-UDL payload (device_profiles/milesight/em310-udl.yaml).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from simulator.models.base import SECONDS_PER_DAY, Measurement

# Deposits mostly happen between 7 h and 21 h (domain.md §1.3, "fill growth model"):
# 90 % of a day's waste in those 14 hours, 10 % in the 10 night hours.
_DAY_START_H, _DAY_END_H = 7, 21
_DAY_WEIGHT = 0.9 * 24 / 14
_NIGHT_WEIGHT = 0.1 * 24 / 10


def em310_payload(battery_pct: int, distance_mm: int, tilt: bool) -> bytes:
    """Milesight EM310-UDL TLV: 01 75 battery, 03 82 distance (uint16 LE, mm), 04 00 position."""
    return (
        bytes([0x01, 0x75, battery_pct, 0x03, 0x82])
        + distance_mm.to_bytes(2, "little")
        + bytes([0x04, 0x00, 1 if tilt else 0])
    )


def _daytime_weighted_s(t0_s: float, t1_s: float) -> float:
    """Seconds between t0 and t1 weighted by the deposit profile (simulated time 0 = midnight)."""
    total, t = 0.0, t0_s
    for _ in range(10_000):  # bounded: one step per hour boundary
        if t >= t1_s:
            break
        hour = int(t // 3600)
        step_end = min(t1_s, (hour + 1) * 3600.0)
        weight = _DAY_WEIGHT if _DAY_START_H <= hour % 24 < _DAY_END_H else _NIGHT_WEIGHT
        total += (step_end - t) * weight
        t = step_end
    return total


@dataclass
class ContainerModel:
    """A waste container under an EM310-UDL: fills by day, emptied on collection rounds.

    Fill grows as a daytime-weighted ramp of ``fill_mm_per_day`` (domain.md §1.3). A
    collection at time C shows as a tilt lasting ``tilt_s`` (the crane lift, 1 to 3 min),
    then the distance jumps back near ``empty_mm``. Distance noise of a few mm (glass).
    """

    rng: random.Random
    empty_mm: int
    full_mm: int
    fill_mm_per_day: float
    collections_s: list[float]
    battery_pct: int = 100
    tilt_s: float = 120.0
    noise_mm: float = 5.0
    distance_mm: float = 0.0
    vandalism_s: list[tuple[float, float]] = field(default_factory=list)
    """(start, duration) of tilts outside a collection (knocked over or rocked, domain.md §1.4 "Alarms"):
    tilted until a crew rights it, the contents stay (no drop to empty)."""
    _last_t_s: float = 0.0
    _done: set[float] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.distance_mm == 0.0:
            self.distance_mm = float(self.empty_mm)

    def collection_in_progress(self, t_s: float) -> float | None:
        """The start of a collection whose tilt covers ``t_s``, if any."""
        for start in self.collections_s:
            if start <= t_s < start + self.tilt_s:
                return start
        return None

    def vandalised(self, t_s: float) -> bool:
        return any(start <= t_s < start + duration for start, duration in self.vandalism_s)

    def measure(self, t_s: float) -> Measurement:
        fill = self.fill_mm_per_day * _daytime_weighted_s(self._last_t_s, t_s) / SECONDS_PER_DAY
        self.distance_mm = max(float(self.full_mm) - 100.0, self.distance_mm - fill)
        self._last_t_s = t_s
        for start in self.collections_s:
            if start + self.tilt_s <= t_s and start not in self._done:
                self._done.add(start)
                self.distance_mm = float(self.empty_mm)
        tilt = self.collection_in_progress(t_s) is not None or self.vandalised(t_s)
        distance = round(self.distance_mm + self.rng.gauss(0.0, self.noise_mm))
        distance = max(0, min(0xFFFF, distance))
        values: dict[str, Any] = {
            "battery": self.battery_pct,
            "distance": distance,
            "position": "tilt" if tilt else "normal",
        }
        return Measurement(values, em310_payload(self.battery_pct, distance, tilt))


@dataclass(frozen=True, slots=True)
class Fire:
    """A container fire from ``start_s`` for ``duration_s``: the air under the lid heats by
    ``peak_rise_c`` with a time constant of ``rise_tau_s``, then cools once it is put out
    (domain.md §1.3, "Fire signature": far above ambient; nodes alarm at 60-70 °C)."""

    start_s: float
    duration_s: float
    peak_rise_c: float
    rise_tau_s: float = 300.0
    cool_tau_s: float = 900.0

    def rise_c(self, t_s: float) -> float:
        if t_s <= self.start_s:
            return 0.0
        end_s = self.start_s + self.duration_s
        at_end = self.peak_rise_c * (1.0 - math.exp(-self.duration_s / self.rise_tau_s))
        if t_s <= end_s:
            return self.peak_rise_c * (1.0 - math.exp(-(t_s - self.start_s) / self.rise_tau_s))
        return at_end * math.exp(-(t_s - end_s) / self.cool_tau_s)


@dataclass
class ContainerTemperature:
    """Air temperature under a container's lid: a summer day in Marseille (mean ``mean_c``,
    warmest at 15 h, ±``swing_c``), plus its fires."""

    mean_c: float = 22.0
    swing_c: float = 5.0
    fires: list[Fire] = field(default_factory=list)

    def at(self, t_s: float) -> float:
        hour = (t_s % SECONDS_PER_DAY) / 3600.0
        ambient = self.mean_c + self.swing_c * math.cos(2 * math.pi * (hour - 15.0) / 24.0)
        return ambient + sum(f.rise_c(t_s) for f in self.fires)
