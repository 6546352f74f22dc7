"""Physical models of what field devices measure, and the payload bytes their profiles carry.

Owns the physics (research/domain.md §1.3 for waste containers, §3.2 for rivers) and
the encoding of one measurement into the vendor payload of the device's profile
(device_profiles/milesight/em310-udl.yaml, em500-swl.yaml). It owns no LoRaWAN
(frames are built by ``simulator.devices.AbpDevice``), no schedule and no clock: a
model is asked "what do you measure at simulated second ``t_s``", with ``t_s`` never
going backwards, and keeps its own state between questions.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

SECONDS_PER_DAY = 86_400
# Deposits mostly happen between 7 h and 21 h (domain.md §1.3, "fill growth model"):
# 90 % of a day's waste in those 14 hours, 10 % in the 10 night hours.
_DAY_START_H, _DAY_END_H = 7, 21
_DAY_WEIGHT = 0.9 * 24 / 14
_NIGHT_WEIGHT = 0.1 * 24 / 10


@dataclass(frozen=True, slots=True)
class Measurement:
    """What a device really measured (``values``, in its decoder's output keys) and its payload."""

    values: dict[str, Any]
    payload: bytes
    fport: int = 85


def em310_payload(battery_pct: int, distance_mm: int, tilt: bool) -> bytes:
    """Milesight EM310-UDL TLV: 01 75 battery, 03 82 distance (uint16 LE, mm), 04 00 position."""
    return (
        bytes([0x01, 0x75, battery_pct, 0x03, 0x82])
        + distance_mm.to_bytes(2, "little")
        + bytes([0x04, 0x00, 1 if tilt else 0])
    )


def em500_swl_payload(battery_pct: int, level_cm: int) -> bytes:
    """Milesight EM500-SWL TLV (TTN em500-swl.js): 01 75 battery, 03 77 level (uint16 LE, cm)."""
    return bytes([0x01, 0x75, battery_pct, 0x03, 0x77]) + level_cm.to_bytes(2, "little")


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

    def measure(self, t_s: float) -> Measurement:
        fill = self.fill_mm_per_day * _daytime_weighted_s(self._last_t_s, t_s) / SECONDS_PER_DAY
        self.distance_mm = max(float(self.full_mm) - 100.0, self.distance_mm - fill)
        self._last_t_s = t_s
        for start in self.collections_s:
            if start + self.tilt_s <= t_s and start not in self._done:
                self._done.add(start)
                self.distance_mm = float(self.empty_mm)
        tilt = self.collection_in_progress(t_s) is not None
        distance = round(self.distance_mm + self.rng.gauss(0.0, self.noise_mm))
        distance = max(0, min(0xFFFF, distance))
        values: dict[str, Any] = {
            "battery": self.battery_pct,
            "distance": distance,
            "position": "tilt" if tilt else "normal",
        }
        return Measurement(values, em310_payload(self.battery_pct, distance, tilt))


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

    def level_cm(self, t_s: float) -> float:
        diurnal = self.diurnal_cm * math.sin(2 * math.pi * t_s / SECONDS_PER_DAY)
        return self.base_cm + diurnal + sum(f.rise_cm(t_s) for f in self.floods)

    def in_flood(self, t_s: float) -> bool:
        return any(f.start_s <= t_s < f.peak_s + 3 * f.recession_tau_s for f in self.floods)

    def measure(self, t_s: float) -> Measurement:
        level = max(0, min(0xFFFF, round(self.level_cm(t_s))))
        values: dict[str, Any] = {"battery": self.battery_pct, "level": level}
        return Measurement(values, em500_swl_payload(self.battery_pct, level))
