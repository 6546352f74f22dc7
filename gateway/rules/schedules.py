"""Street-light dimming schedules from the sun and the clock, computed offline on the gateway.

Owns the meaning of a lighting group's steps: which dim level applies at a given
instant, and when the next change happens, for the group's coordinates and time
zone. Sun times come from ``astral`` (NOAA algorithm; sunrise/sunset at the 90.833°
zenith, civil dawn/dusk at 96°), local clock times from ``zoneinfo``, so daylight
saving changes are handled: a step at "22:00" stays at 22:00 local time on either
side of a change, a sun-anchored step follows the sun. Everything is computed from
the gateway's own clock; nothing needs the backhaul.

The named presets a lighting group may use instead of steps are in ``presets.py``.

It does not send anything: the engine turns a level change into downlink requests.
Its functions are pure (``now`` is passed in).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import dawn, dusk, sunrise, sunset

from gateway.rules.model import Location, Step

log = logging.getLogger(__name__)

_NOON_S: Final = 12 * 3600


@dataclass(frozen=True, slots=True)
class SwitchEvent:
    at_s: float
    level_pct: int
    step_index: int


@lru_cache(maxsize=256)
def sun_times(location: Location, day: date) -> dict[str, float]:
    """Unix times of sunrise, sunset, civil dawn and dusk on the local ``day`` (missing at polar days)."""
    tz = ZoneInfo(location.timezone)
    observer = Observer(location.lat_deg, location.lon_deg)
    times: dict[str, float] = {}
    for name, fn in (("sunrise", sunrise), ("sunset", sunset), ("dawn", dawn), ("dusk", dusk)):
        try:
            times[name] = fn(observer, day, tzinfo=tz).timestamp()
        except ValueError:  # astral: the sun never reaches that elevation on this day
            log.debug("no %s on %s at %s", name, day, location)
    return times


@lru_cache(maxsize=512)
def night_events(steps: tuple[Step, ...], location: Location, night: date) -> tuple[SwitchEvent, ...]:
    """The switching events of the night that starts on the local date ``night``, in time order.

    Evening anchors (sunset, dusk, clock times from noon on) fall on ``night``; morning
    anchors (sunrise, dawn, clock times before noon) on the day after.
    """
    tz = ZoneInfo(location.timezone)
    evening = sun_times(location, night)
    morning_day = night + timedelta(days=1)
    morning = sun_times(location, morning_day)
    events: list[SwitchEvent] = []
    for index, step in enumerate(steps):
        if night.weekday() not in step.days:
            continue
        at_s: float | None
        if step.anchor == "clock":
            day = night if step.clock_s >= _NOON_S else morning_day
            hours, rest = divmod(step.clock_s, 3600)
            # A clock time inside the spring-forward gap resolves with the offset before the change
            # (zoneinfo, fold=0): 02:30 on that night happens at 03:30 summer time.
            at_s = datetime.combine(day, time(hours, rest // 60), tzinfo=tz).timestamp()
        elif step.anchor in ("sunset", "dusk"):
            at_s = evening.get(step.anchor)
        elif step.anchor in ("sunrise", "dawn"):
            at_s = morning.get(step.anchor)
        else:  # midnight_solar: halfway between sunset and the next sunrise
            start, end = evening.get("sunset"), morning.get("sunrise")
            at_s = None if start is None or end is None else (start + end) / 2
        if at_s is None:
            continue
        events.append(SwitchEvent(at_s + step.offset_s, step.level_pct, index))
    events.sort(key=lambda e: (e.at_s, e.step_index))
    return tuple(events)


def _events_around(steps: tuple[Step, ...], location: Location, now_s: float) -> list[SwitchEvent]:
    today = datetime.fromtimestamp(now_s, ZoneInfo(location.timezone)).date()
    out: list[SwitchEvent] = []
    for back in (2, 1, 0, -1):
        out.extend(night_events(steps, location, today - timedelta(days=back)))
    # Sorted by time; ties keep night order, then step order.
    out.sort(key=lambda e: e.at_s)
    return out


def level_at(steps: tuple[Step, ...], location: Location, now_s: float) -> tuple[int, float] | None:
    """The level in force at ``now_s`` and since when; None if no step ever happened (bad schedule)."""
    current: SwitchEvent | None = None
    for event in _events_around(steps, location, now_s):
        if event.at_s > now_s:
            break
        current = event
    return None if current is None else (current.level_pct, current.at_s)


def next_change_s(steps: tuple[Step, ...], location: Location, now_s: float) -> float | None:
    """The time of the next step after ``now_s`` that changes the level, if any in the next day."""
    level = level_at(steps, location, now_s)
    for event in _events_around(steps, location, now_s):
        if event.at_s > now_s and (level is None or event.level_pct != level[0]):
            return event.at_s
    return None
