"""Noise sites under a Milesight WS302 sound level meter (research/domain.md §2.5).

Owns the diurnal LAeq of a site type (residential street, arterial road, nightlife district),
the weekend shift, short events (sirens, glass emptying, construction, nightlife peaks), and the
WS302 payload (device_profiles/milesight/ws302.yaml: 01 75 battery; 05 5b weighting byte, then
LAF, LAeq, LAFmax as uint16 LE in 0.1 dB). A report carries the LAeq of the interval that ends
at the report time, computed energetically from one level per minute.

It does not compute Lden (the ground truth does, from the values the model reported).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from simulator.models.base import SECONDS_PER_DAY, Measurement, hour_of_day, weekday

SiteType = Literal["residential", "road", "nightlife"]
SITE_TYPES: Final[tuple[SiteType, ...]] = ("residential", "road", "nightlife")

# Hourly LAeq (dB(A)) of a weekday, hour 0..23 (domain.md §2.5: minimum 03-05 h, steep rise
# 05:30-08:00, plateau 08-19 h at 65-72 dB on arterial roads and 55-62 dB in residential
# streets, slow decline 20-24 h; night 5-10 dB below day, only 2-3 dB on busy roads).
_HOURLY_DB: Final[dict[SiteType, tuple[float, ...]]] = {
    "residential": (
        47, 45, 44, 43, 43, 45, 50, 55, 58, 58, 57, 57,
        58, 58, 57, 57, 58, 59, 59, 57, 55, 53, 51, 49,
    ),
    "road": (
        62, 61, 60, 60, 61, 63, 67, 70, 71, 70, 69, 69,
        69, 69, 69, 70, 71, 71, 70, 68, 66, 65, 64, 63,
    ),
    "nightlife": (
        58, 56, 52, 49, 47, 48, 52, 56, 58, 59, 59, 60,
        61, 60, 60, 60, 61, 62, 62, 62, 62, 62, 61, 60,
    ),
}  # fmt: skip
_WEEKEND_MORNING_DB: Final = -3.0
"""Weekend shift: later rise, lower morning (domain.md §2.5), applied 05-11 h on Sat and Sun."""
_NIGHTLIFE_PEAK_DB: Final = 8.0
"""Nightlife peaks Thursday to Saturday 22:00-02:00 in dense districts (domain.md §2.5)."""
_MINUTE_SIGMA_DB: Final = 2.0
_WEIGHTING_A_FAST: Final = 0x05
"""WS302 weighting byte: bits 0-1 frequency (1 = A), bits 2-3 time (1 = F) (WS302_Decoder.js)."""


@dataclass(frozen=True, slots=True)
class NoiseEvent:
    """A short loud event: a level in dB(A) at the meter during ``duration_s``."""

    kind: str
    start_s: float
    duration_s: float
    level_db: float

    def covers(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.start_s + self.duration_s


def ws302_payload(battery_pct: int, laf_db: float, laeq_db: float, lafmax_db: float) -> bytes:
    """WS302: 01 75 battery, 05 5b weighting (A, fast), L, Leq, Lmax (uint16 LE, 0.1 dB)."""

    def tenth(level_db: float) -> bytes:
        return max(0, min(0xFFFF, round(level_db * 10))).to_bytes(2, "little")

    return (
        bytes([0x01, 0x75, battery_pct, 0x05, 0x5B, _WEIGHTING_A_FAST])
        + tenth(laf_db)
        + tenth(laeq_db)
        + tenth(lafmax_db)
    )


def base_level_db(site: SiteType, t_s: float) -> float:
    """The site type's typical LAeq at ``t_s``, interpolated between hours, with weekly layers."""
    hours = _HOURLY_DB[site]
    h = hour_of_day(t_s)
    i = int(h)
    frac = h - i
    level = hours[i] * (1 - frac) + hours[(i + 1) % 24] * frac
    day = weekday(t_s)
    if day >= 5 and 5 <= h < 11:
        level += _WEEKEND_MORNING_DB
    if site == "nightlife":
        # Thursday 22 h to Sunday 02 h: the evening of Thu, Fri, Sat and the small hours after.
        evening = day in (3, 4, 5) and h >= 22
        small_hours = day in (4, 5, 6) and h < 2
        if evening or small_hours:
            level += _NIGHTLIFE_PEAK_DB
    return level


def draw_events(rng: random.Random, site: SiteType, duration_s: float) -> list[NoiseEvent]:
    """Sirens, glass emptying and (on weekdays, at road sites) construction, from the seed."""
    events: list[NoiseEvent] = []
    days = math.ceil(duration_s / SECONDS_PER_DAY)
    for day in range(days):
        midnight = day * SECONDS_PER_DAY
        for _ in range(rng.randint(0, 3 if site == "road" else 1)):  # sirens, any time
            events.append(NoiseEvent("siren", midnight + rng.uniform(0, SECONDS_PER_DAY), 60, 88))
        if rng.random() < 0.3:  # a glass container emptied nearby, in working hours
            events.append(NoiseEvent("glass", midnight + rng.uniform(7, 12) * 3600, 45, 95))
        if site == "road" and day % 7 < 5 and rng.random() < 0.4:
            start = midnight + rng.uniform(8, 10) * 3600
            events.append(NoiseEvent("construction", start, rng.uniform(2, 5) * 3600, 78))
    return sorted((e for e in events if e.start_s < duration_s), key=lambda e: e.start_s)


@dataclass
class NoiseModel:
    """A WS302 at a site: one report per ``interval_s`` with the interval's LAeq, LAF and LAFmax."""

    rng: random.Random
    site: SiteType
    offset_db: float = 0.0
    """This site's shift from its type's profile (traffic volume, distance to the road)."""
    events: list[NoiseEvent] = field(default_factory=list)
    battery_pct: int = 100
    interval_s: float = 900.0

    def minute_level_db(self, t_s: float) -> float:
        """The 1-min LAeq: the profile, random traffic fluctuation, plus any event (energetic sum)."""
        level = base_level_db(self.site, t_s) + self.offset_db + self.rng.gauss(0.0, _MINUTE_SIGMA_DB)
        energy = 10.0 ** (level / 10.0)
        for event in self.events:
            if event.covers(t_s):
                energy += 10.0 ** (event.level_db / 10.0)
        return 10.0 * math.log10(energy)

    def measure(self, t_s: float) -> Measurement:
        minutes = max(1, int(self.interval_s // 60))
        levels = [self.minute_level_db(t_s - (minutes - k - 0.5) * 60.0) for k in range(minutes)]
        laeq = 10.0 * math.log10(sum(10.0 ** (lv / 10.0) for lv in levels) / len(levels))
        lafmax = max(levels) + self.rng.uniform(5.0, 12.0)  # LAFmax - LAeq 5-15 dB on traffic (§2.5)
        laf = levels[-1] + self.rng.gauss(0.0, 1.5)
        values: dict[str, Any] = {
            "battery": self.battery_pct,
            "LAF": round(laf, 1),
            "LAeq": round(laeq, 1),
            "LAFmax": round(lafmax, 1),
        }
        payload = ws302_payload(self.battery_pct, values["LAF"], values["LAeq"], values["LAFmax"])
        return Measurement(values, payload)
