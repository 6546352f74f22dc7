"""Bike and pedestrian counters under an IMBuildings People Counter (research/domain.md §4.3).

Owns the hourly traffic profile (weekday double peak at 08 h and 17-18 h for utility cycling,
a broad afternoon peak at weekends, pedestrians at lunchtime and shopping hours), weather dips
(rain roughly halves counts) and the IMBuildings payload type 2 variant 6 without header on
fPort 26 (device_profiles/imbuildings/people-counter.yaml: status, battery, counts per direction
since the last uplink, running totals that wrap at 65536, payload counter).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from simulator.models.base import Measurement, hour_of_day, weekday

CounterKind = Literal["bike", "pedestrian"]
COUNTER_KINDS: Final[tuple[CounterKind, ...]] = ("bike", "pedestrian")
FPORT_VARIANT_6: Final = 26

# Share of a day's passages per hour (normalised to 1 below). Weekday utility cycling: sharp AM peak,
# broader PM peak, 9-12 % of the day in each peak hour, < 1 %/h from 01 to 05 h (§4.3).
_BIKE_WEEKDAY: Final = (
    0.004, 0.002, 0.002, 0.002, 0.003, 0.008, 0.030, 0.080, 0.110, 0.060, 0.035, 0.035,
    0.045, 0.045, 0.035, 0.040, 0.070, 0.100, 0.090, 0.060, 0.030, 0.020, 0.010, 0.007,
)  # fmt: skip
# Weekends: one broad afternoon peak 13-17 h (§4.3).
_BIKE_WEEKEND: Final = (
    0.006, 0.004, 0.003, 0.002, 0.002, 0.003, 0.008, 0.015, 0.030, 0.050, 0.065, 0.070,
    0.075, 0.090, 0.095, 0.095, 0.090, 0.075, 0.060, 0.045, 0.030, 0.015, 0.010, 0.007,
)  # fmt: skip
# Pedestrians: lunchtime and shopping peaks 11-19 h, large on Saturdays (§4.3).
_PEDESTRIAN: Final = (
    0.005, 0.003, 0.002, 0.002, 0.002, 0.004, 0.010, 0.030, 0.050, 0.055, 0.065, 0.080,
    0.095, 0.085, 0.070, 0.070, 0.075, 0.080, 0.075, 0.055, 0.035, 0.025, 0.015, 0.012,
)  # fmt: skip
_WEEKEND_FACTOR: Final[dict[CounterKind, tuple[float, float]]] = {
    "bike": (0.7, 0.7),  # 60-80 % of the weekday total on utility sites (§4.3)
    "pedestrian": (1.4, 0.8),  # Saturday large, Sunday quieter
}
RAIN_FACTOR: Final = 0.5
"""Rain roughly halves counts (domain.md §4.3, UC Davis 1996)."""


def people_counter_payload(
    battery_v: float, count_a: int, count_b: int, total_a: int, total_b: int, payload_counter: int
) -> bytes:
    """IMBuildings type 2 variant 6 without header (fPort 26), big endian, 13 bytes."""
    return (
        bytes([0x00])  # device status
        + round(battery_v * 100).to_bytes(2, "big")
        + count_a.to_bytes(2, "big")
        + count_b.to_bytes(2, "big")
        + bytes([0x00])  # sensor status
        + (total_a & 0xFFFF).to_bytes(2, "big")
        + (total_b & 0xFFFF).to_bytes(2, "big")
        + bytes([payload_counter & 0xFF])
    )


def _normalised(shares: tuple[float, ...]) -> tuple[float, ...]:
    total = sum(shares)
    return tuple(s / total for s in shares)


_SHARES: Final = {
    "bike_weekday": _normalised(_BIKE_WEEKDAY),
    "bike_weekend": _normalised(_BIKE_WEEKEND),
    "pedestrian": _normalised(_PEDESTRIAN),
}


def hourly_share(kind: CounterKind, t_s: float) -> float:
    """The share of the day's passages in the hour containing ``t_s``, weekday-adjusted."""
    day, hour = weekday(t_s), int(hour_of_day(t_s))
    if kind == "bike":
        base = _SHARES["bike_weekend" if day >= 5 else "bike_weekday"][hour]
    else:
        base = _SHARES["pedestrian"][hour]
    if day >= 5:
        base *= _WEEKEND_FACTOR[kind][day - 5]
    return base


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw: Knuth's product method for small means, a rounded normal above 30."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    for _ in range(1000):  # bounded: P(k > 1000 | mean <= 30) is nil
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
    return k


@dataclass
class CounterModel:
    """A counter on a cycle track or a footway: passages per direction since the last report."""

    rng: random.Random
    kind: CounterKind
    daily_total: float
    """Passages on an ordinary weekday, both directions."""
    rain_days: frozenset[int] = frozenset()
    battery_v: float = 3.6
    total_a: int = 0
    total_b: int = 0
    payload_counter: int = 0
    _last_t_s: float | None = None
    passages: list[tuple[float, int, int]] = field(default_factory=list)
    """(t_s, a, b) of every report, for the plots."""

    def mean_passages(self, t0_s: float, t1_s: float) -> float:
        """Expected passages between t0 and t1 (minute steps through the hourly profile)."""
        total, t = 0.0, t0_s
        for _ in range(100_000):  # bounded: one step per minute
            if t >= t1_s:
                break
            step = min(60.0, t1_s - t)
            rain = RAIN_FACTOR if int(t // 86_400) in self.rain_days else 1.0
            total += self.daily_total * hourly_share(self.kind, t) * rain * step / 3600.0
            t += step
        return total

    def measure(self, t_s: float) -> Measurement:
        start = t_s - 900.0 if self._last_t_s is None else self._last_t_s
        self._last_t_s = t_s
        mean = self.mean_passages(start, t_s)
        # Morning flows go mostly one way (towards the centre), evening ones back (§4.3).
        share_a = 0.65 if hour_of_day(t_s) < 12 else 0.35
        count_a = min(0xFFFF, poisson(self.rng, mean * share_a))
        count_b = min(0xFFFF, poisson(self.rng, mean * (1 - share_a)))
        self.total_a = (self.total_a + count_a) & 0xFFFF
        self.total_b = (self.total_b + count_b) & 0xFFFF
        self.payload_counter = (self.payload_counter + 1) & 0xFF
        self.passages.append((t_s, count_a, count_b))
        values: dict[str, Any] = {
            "payload_type": 2,
            "payload_variant": 6,
            "device_status": 0,
            "battery_voltage": round(self.battery_v, 2),
            "counter_a": count_a,
            "counter_b": count_b,
            "sensor_status": 0,
            "total_counter_a": self.total_a,
            "total_counter_b": self.total_b,
            "payload_counter": self.payload_counter,
        }
        payload = people_counter_payload(
            self.battery_v, count_a, count_b, self.total_a, self.total_b, self.payload_counter
        )
        return Measurement(values, payload, FPORT_VARIANT_6)
