"""Street-light dimming schedules from the sun and the clock, computed offline on the gateway.

Owns the meaning of a lighting group's steps: which dim level applies at a given
instant, and when the next change happens, for the group's coordinates and time
zone. Sun times come from ``astral`` (NOAA algorithm) at the standard geometric
altitudes of the sun's centre: sunrise/sunset at -0.833° (the 90.833° zenith: 34' of
refraction and 16' of semi-diameter already in it), dawn/dusk at minus the group's
depression (civil twilight 6° by default). astral's own ``sunrise``/``dusk`` add a
refraction term on top of these (15 to 45 s off at Marseille against NREL's SPA), so
they are asked at the altitude without it. Local clock times come from ``zoneinfo``,
so daylight saving changes are handled: a step at "22:00"
stays at 22:00 local time on either side of a change, a sun-anchored step follows the
sun. Everything is computed from the gateway's own clock; nothing needs the backhaul.

No schedule lights in daylight: whatever its steps say, the level is 0 between sunrise
and sunset (``daylight_at``). A clock step that falls after sunrise ("06:00" on a June
morning when the sun rose at 05:59) therefore changes nothing until the sun sets.

The named presets a lighting group may use instead of steps are in ``presets.py``.

It does not send anything: the engine turns a level change into downlink requests.
Its functions are pure (``now`` is passed in).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

from astral import Observer, SunDirection
from astral.sun import elevation, noon, time_at_elevation

from gateway.rules.model import Location, Step

log = logging.getLogger(__name__)

_NOON_S: Final = 12 * 3600
CIVIL_DEPRESSION_DEG: Final = 6.0
"""The sun's depression below the horizon at civil dawn and dusk, the default of ``dawn``/``dusk``."""
_SUNRISE_ALTITUDE_DEG: Final = -0.833
"""Sunrise and sunset: the sun's centre 50' below the horizon (34' refraction + 16' semi-diameter)."""


@dataclass(frozen=True, slots=True)
class SwitchEvent:
    at_s: float
    level_pct: int
    step_index: int


@lru_cache(maxsize=256)
def sun_times(
    location: Location, day: date, depression_deg: float = CIVIL_DEPRESSION_DEG
) -> dict[str, float]:
    """Unix times of sunrise, sunset, dawn and dusk (the sun ``depression_deg`` below the horizon)
    on the local ``day``; an event the sun does not reach that day (polar day or night) is missing."""
    tz = ZoneInfo(location.timezone)
    observer = Observer(location.lat_deg, location.lon_deg)
    wanted = (
        ("sunrise", _SUNRISE_ALTITUDE_DEG, SunDirection.RISING),
        ("sunset", _SUNRISE_ALTITUDE_DEG, SunDirection.SETTING),
        ("dawn", -depression_deg, SunDirection.RISING),
        ("dusk", -depression_deg, SunDirection.SETTING),
    )
    times: dict[str, float] = {}
    for name, altitude_deg, direction in wanted:
        at_s = _crossing_s(observer, day, altitude_deg, direction, tz)
        if at_s is None:
            log.debug("no %s at %g° on %s at %s", name, altitude_deg, day, location)
        else:
            times[name] = at_s
    return times


def _crossing_s(
    observer: Observer, day: date, altitude_deg: float, direction: SunDirection, tz: ZoneInfo
) -> float | None:
    """When the sun's centre crosses ``altitude_deg`` (geometric) on the local ``day``, if it does.

    astral computes for a UTC date; far from Greenwich the local day's event can belong to the
    UTC day before or after, hence the three tries.
    """
    for utc_day in (day, day - timedelta(days=1), day + timedelta(days=1)):
        try:
            at = time_at_elevation(observer, altitude_deg, utc_day, direction, tz, with_refraction=False)
        except ValueError:  # astral: the sun never reaches that altitude on this day
            return None
        if at.date() == day:
            return at.timestamp()
    return None


def daylight_at(location: Location, now_s: float) -> tuple[bool, float]:
    """Whether the sun is up at ``now_s`` (between the local day's sunrise and sunset), and since when.

    On a day without sunrise or sunset (polar day or night, never in the metropolis) the sun's
    geometric altitude at local noon decides for the whole day, since local midnight.
    """
    tz = ZoneInfo(location.timezone)
    today = datetime.fromtimestamp(now_s, tz).date()
    midnight_s = datetime.combine(today, time(0), tzinfo=tz).timestamp()
    times = sun_times(location, today)
    rise, set_ = times.get("sunrise"), times.get("sunset")
    if rise is None or set_ is None:
        observer = Observer(location.lat_deg, location.lon_deg)
        at_noon = noon(observer, today).astimezone(UTC)
        return elevation(observer, at_noon, with_refraction=False) > _SUNRISE_ALTITUDE_DEG, midnight_s
    if now_s < rise:
        evening = sun_times(location, today - timedelta(days=1)).get("sunset")
        return False, evening if evening is not None else midnight_s
    if now_s < set_:
        return True, rise
    return False, set_


@lru_cache(maxsize=512)
def night_events(
    steps: tuple[Step, ...], location: Location, night: date, depression_deg: float = CIVIL_DEPRESSION_DEG
) -> tuple[SwitchEvent, ...]:
    """The switching events the steps give for the night that starts on the local date ``night``,
    in time order (before the daylight guard of ``level_at``).

    Evening anchors (sunset, dusk, clock times from noon on) fall on ``night``; morning
    anchors (sunrise, dawn, clock times before noon) on the day after.
    """
    tz = ZoneInfo(location.timezone)
    evening = sun_times(location, night, depression_deg)
    morning_day = night + timedelta(days=1)
    morning = sun_times(location, morning_day, depression_deg)
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


def _events_around(
    steps: tuple[Step, ...], location: Location, now_s: float, depression_deg: float
) -> list[SwitchEvent]:
    today = datetime.fromtimestamp(now_s, ZoneInfo(location.timezone)).date()
    out: list[SwitchEvent] = []
    for back in (2, 1, 0, -1):
        out.extend(night_events(steps, location, today - timedelta(days=back), depression_deg))
    # Sorted by time; ties keep night order, then step order.
    out.sort(key=lambda e: e.at_s)
    return out


def _scheduled_at(
    steps: tuple[Step, ...], location: Location, now_s: float, depression_deg: float
) -> SwitchEvent | None:
    """The last step event at or before ``now_s`` (what the steps alone say)."""
    current: SwitchEvent | None = None
    for event in _events_around(steps, location, now_s, depression_deg):
        if event.at_s > now_s:
            break
        current = event
    return current


def level_at(
    steps: tuple[Step, ...],
    location: Location,
    now_s: float,
    depression_deg: float = CIVIL_DEPRESSION_DEG,
) -> tuple[int, float] | None:
    """The level in force at ``now_s`` and since when; None if no step ever happened (bad schedule).

    The steps' level, but 0 while the sun is up (issue 18: a "06:00 → 100 %" step after an
    earlier sunrise lit the lamps all day): a level above 0 applies only from sunset to sunrise.
    """
    current = _scheduled_at(steps, location, now_s, depression_deg)
    if current is None:
        return None
    if current.level_pct == 0:
        return 0, current.at_s
    up, sun_since_s = daylight_at(location, now_s)
    if up:
        return 0, sun_since_s
    return current.level_pct, max(current.at_s, sun_since_s)


def next_change_s(
    steps: tuple[Step, ...],
    location: Location,
    now_s: float,
    depression_deg: float = CIVIL_DEPRESSION_DEG,
) -> float | None:
    """The time of the next step, sunrise or sunset after ``now_s`` that changes the level, if any
    in the next day."""
    level = level_at(steps, location, now_s, depression_deg)
    candidates = [e.at_s for e in _events_around(steps, location, now_s, depression_deg) if e.at_s > now_s]
    today = datetime.fromtimestamp(now_s, ZoneInfo(location.timezone)).date()
    for back in (0, -1, -2):
        times = sun_times(location, today - timedelta(days=back))
        candidates.extend(t for name in ("sunrise", "sunset") if (t := times.get(name, now_s)) > now_s)
    for at_s in sorted(candidates):
        then = level_at(steps, location, at_s, depression_deg)
        if then is not None and (level is None or then[0] != level[0]):
            return at_s
    return None
