"""Lighting schedules against an independent sun: pysolar, not astral (which the code uses).

pysolar implements NREL's Solar Position Algorithm (Reda & Andreas 2004), a different algorithm from
astral's NOAA equations. The reference events are where pysolar's topocentric altitude of the sun's
centre, without refraction (pressure 0), crosses:

- -0.833° for sunrise and sunset (34' of refraction plus 16' of semi-diameter: NOAA "General Solar
  Position Calculations", the 90.833° zenith), the horizon a lamp must never be lit above;
- -d for dawn and dusk at a depression of d degrees (6° civil twilight, 3..6° in cities).

Each crossing is found by bisection to half a second; the code under test only gives the levels.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from pysolar.solar import get_altitude

from gateway.rules import DownlinkRequest, RuleEngine, RuleSet, parse_rules
from gateway.rules.model import LightingGroup
from gateway.rules.presets import PRESETS
from gateway.rules.schedules import level_at, night_events

LAT_DEG, LON_DEG = 43.2965, 5.3698  # Marseille (research/domain.md §5.2)
PARIS = ZoneInfo("Europe/Paris")
SUNRISE_ALT_DEG = -0.833
TOLERANCE_S = 10.0  # NOAA (astral, geometric) and SPA (pysolar) agree within 5 s at Marseille
SAMPLE_S = 600.0
YEAR = 2026
LAMP = "0004a30b00f00001"


def ref_altitude_deg(unix_s: float) -> float:
    """pysolar's geometric altitude of the sun's centre at Marseille (no refraction: pressure 0)."""
    altitude: float = get_altitude(LAT_DEG, LON_DEG, datetime.fromtimestamp(unix_s, UTC), pressure=0)
    return altitude


def _crossing(lo_s: float, hi_s: float, altitude_deg: float) -> float:
    """Where the altitude crosses ``altitude_deg`` between ``lo_s`` and ``hi_s`` (one crossing).

    Regula falsi, Illinois variant: the bracket always holds the crossing; it stops within
    0.0001° of the altitude (a few hundredths of a second of the sun's motion).
    """
    f_lo, f_hi = ref_altitude_deg(lo_s) - altitude_deg, ref_altitude_deg(hi_s) - altitude_deg
    assert (f_lo < 0) != (f_hi < 0), "no crossing in the interval"
    side = 0
    for _ in range(100):
        mid_s = hi_s - f_hi * (hi_s - lo_s) / (f_hi - f_lo)
        f_mid = ref_altitude_deg(mid_s) - altitude_deg
        if abs(f_mid) < 1e-4:
            return mid_s
        if (f_mid < 0) == (f_hi < 0):
            hi_s, f_hi = mid_s, f_mid
            if side == 1:
                f_lo /= 2
            side = 1
        else:
            lo_s, f_lo = mid_s, f_mid
            if side == -1:
                f_hi /= 2
            side = -1
    raise AssertionError("the crossing did not converge")


@cache
def ref_rise_set(day: date, altitude_deg: float) -> tuple[float, float]:
    """Reference (morning, evening) crossings of ``altitude_deg`` on ``day`` (Unix seconds).

    Solar noon at 5.37° E is near 11:38 UTC (± the equation of time, 16 min); the sun is at its
    lowest 12 h either side, below -18° at Marseille all year, so each half-day has one crossing.
    """
    noon_s = datetime(day.year, day.month, day.day, 11, 38, tzinfo=UTC).timestamp()
    return (
        _crossing(noon_s - 12 * 3600, noon_s, altitude_deg),
        _crossing(noon_s, noon_s + 12 * 3600, altitude_deg),
    )


def _rules(steps_yaml: str, extra: str = "") -> RuleSet:
    return parse_rules(
        f"lighting:\n  - {{id: g, devices: {{dev_euis: ['{LAMP}']}}, command: dim, {steps_yaml}{extra}}}\n"
    )


def _group(steps_yaml: str, extra: str = "") -> LightingGroup:
    return _rules(steps_yaml, extra).lighting[0]


def _days() -> Iterator[date]:
    day = date(YEAR, 1, 1)
    while day.year == YEAR:
        yield day
        day += timedelta(days=1)


def _lit_above(group: LightingGroup, altitude_deg: float, depression_deg: float | None = None) -> list[str]:
    """The days of the year with a level > 0 while the reference sun is above ``altitude_deg``
    (``depression_deg``: the group's, None for the default civil twilight).

    Checked at the reference crossings (moved inwards by the tolerance), every 10 minutes in
    between, and just after every step of the schedule that falls in that span (a level changes
    only at a step or at a sun event, so a lit span that starts inside is caught at its step).
    """
    bad: list[str] = []
    for day in _days():
        rise_s, set_s = ref_rise_set(day, altitude_deg)
        start_s, end_s = rise_s + TOLERANCE_S, set_s - TOLERANCE_S
        times = [start_s + k * SAMPLE_S for k in range(int((end_s - start_s) // SAMPLE_S) + 1)] + [end_s]
        extra = () if depression_deg is None else (depression_deg,)
        for night in (day - timedelta(days=1), day):
            steps = night_events(group.steps, group.location, night, *extra)
            times.extend(e.at_s + 1 for e in steps if start_s <= e.at_s + 1 <= end_s)
        lit = [
            t for t in times if (state := level_at(group.steps, group.location, t, *extra)) and state[0] > 0
        ]
        if lit:
            bad.append(f"{day} from {datetime.fromtimestamp(min(lit), PARIS):%H:%M:%S}")
    return bad


def test_reference_sunrise_on_the_issue_day() -> None:
    """The issue's example: Marseille, 2026-06-05, sunrise 05:59:29 local (NOAA)."""
    rise_s, _ = ref_rise_set(date(2026, 6, 5), SUNRISE_ALT_DEG)
    assert abs(rise_s - datetime(2026, 6, 5, 5, 59, 29, tzinfo=PARIS).timestamp()) < 5


def test_quimper_is_off_after_an_earlier_sunrise() -> None:
    """2026-06-05 (a Friday morning, night of Thursday): off at 00:00, sunrise 05:59:29, "06:00 → 100 %"
    must not light the lamps in full day, nor keep them on until 01:00 the next night."""
    group = _group("preset: extinction-quimper")
    rise_s, set_s = ref_rise_set(date(2026, 6, 5), SUNRISE_ALT_DEG)
    six = datetime(2026, 6, 5, 6, 0, tzinfo=PARIS).timestamp()
    assert rise_s < six
    assert level_at(group.steps, group.location, six + 30) == (0, pytest.approx(rise_s, abs=TOLERANCE_S))
    assert level_at(group.steps, group.location, set_s - 60)[0] == 0  # type: ignore[index]
    assert level_at(group.steps, group.location, set_s + 60)[0] == 100  # type: ignore[index]


def test_quimper_commands_through_the_engine_on_the_issue_day() -> None:
    """The agent's path: a tick every 30 s from 04:00 to 23:00; every command and when it was sent."""
    engine = RuleEngine(_rules("preset: extinction-quimper"))
    rise_s, set_s = ref_rise_set(date(2026, 6, 5), SUNRISE_ALT_DEG)
    start_s = datetime(2026, 6, 5, 4, 0, tzinfo=PARIS).timestamp()
    sent: list[tuple[float, object]] = []
    for k in range(19 * 120):
        now_s = start_s + 30 * k
        sent += [(now_s, o.params["level_pct"]) for o in engine.tick(now_s) if isinstance(o, DownlinkRequest)]
    levels_by_day = [lvl for at_s, lvl in sent if rise_s + TOLERANCE_S <= at_s <= set_s - TOLERANCE_S]
    assert levels_by_day == [], f"commanded in daylight: {sent}"
    assert sent[0][1] == 0 and sent[-1] == (pytest.approx(set_s, abs=30 + TOLERANCE_S), 100)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_no_preset_lights_while_the_sun_is_up_any_day_of_the_year(name: str) -> None:
    bad = _lit_above(_group(f"preset: {name}"), SUNRISE_ALT_DEG)
    assert bad == [], f"{name} lit in daylight on {len(bad)} days: {bad[:5]}"


@pytest.mark.parametrize("depression_deg", [3.0, 4.5, 6.0])
def test_custom_depression_dusk_and_dawn_follow_the_reference_sun(depression_deg: float) -> None:
    """``depression_deg`` moves the dusk/dawn anchors to the sun at -d: lamps on from the evening
    crossing to the morning one (checked every 7th day), and never above -d any day of the year."""
    group = _group(
        "steps: [{at: dusk, level_pct: 100}, {at: dawn, level_pct: 0}]", f", depression_deg: {depression_deg}"
    )
    assert group.depression_deg == depression_deg
    for day in list(_days())[::7]:
        _, dusk_s = ref_rise_set(day, -depression_deg)
        dawn_s, _ = ref_rise_set(day + timedelta(days=1), -depression_deg)
        levels = [
            level_at(group.steps, group.location, t, depression_deg)[0]  # type: ignore[index]
            for t in (dusk_s - TOLERANCE_S, dusk_s + TOLERANCE_S, dawn_s - TOLERANCE_S, dawn_s + TOLERANCE_S)
        ]
        assert levels == [0, 100, 100, 0], f"{day}: {levels}"
    assert _lit_above(group, -depression_deg, depression_deg) == []
