"""Lighting schedules: sun times from astral, clock steps across daylight-saving changes, presets,
and a 6-hour backhaul outage during which lights keep dimming and a flood alert is raised locally.

Reference sun times: research/domain.md §5.2 table (Marseille 43.2965 N 5.3698 E, NOAA algorithm),
and astral at the standard geometric altitudes for the exact comparison (-0.833° for sunrise and
sunset; astral's ``sunrise()``/``sunset()`` add a second refraction term, 10-20 s off against NREL's
SPA: see test_lighting_reference.py, which checks against pysolar).
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from astral import Observer, SunDirection
from astral.sun import time_at_elevation

from gateway.clock import WallTime
from gateway.errors import ConfigError
from gateway.messages import Alert, Priority
from gateway.rules import DownlinkRequest, ReadingFacts, RuleEngine, RuleSet, load_rules, to_record
from gateway.rules.engine import LIGHTING_HOLD_S
from gateway.rules.model import Location
from gateway.rules.schedules import level_at, next_change_s, night_events, sun_times

from .helpers import ruleset

PARIS = ZoneInfo("Europe/Paris")
MARSEILLE = Location(43.2965, 5.3698, "Europe/Paris")
OBSERVER = Observer(43.2965, 5.3698)
EXAMPLES = Path(__file__).parents[2] / "rules" / "examples"
LAMP1, LAMP2 = "0004a30b00f00001", "0004a30b00f00002"


def local(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=PARIS).timestamp()


def sunrise(observer: Observer, day: date, tzinfo: ZoneInfo) -> datetime:
    """astral's NOAA sunrise at the standard geometric -0.833°, without astral's refraction term."""
    return time_at_elevation(observer, -0.833, day, SunDirection.RISING, tzinfo, with_refraction=False)


def sunset(observer: Observer, day: date, tzinfo: ZoneInfo) -> datetime:
    return time_at_elevation(observer, -0.833, day, SunDirection.SETTING, tzinfo, with_refraction=False)


def test_sun_times_match_astral_and_the_domain_table() -> None:
    day = date(2024, 12, 21)
    times = sun_times(MARSEILLE, day)
    assert times["sunset"] == sunset(OBSERVER, day, tzinfo=PARIS).timestamp()
    assert times["sunrise"] == sunrise(OBSERVER, day, tzinfo=PARIS).timestamp()
    # domain.md §5.2: 21 Dec sunrise 08:08, sunset 17:06, civil dusk 17:38 (to the minute)
    as_local = {k: datetime.fromtimestamp(v, PARIS) for k, v in times.items()}
    assert abs(as_local["sunset"] - datetime(2024, 12, 21, 17, 6, tzinfo=PARIS)).total_seconds() < 60
    assert abs(as_local["sunrise"] - datetime(2024, 12, 21, 8, 8, tzinfo=PARIS)).total_seconds() < 60
    assert abs(as_local["dusk"] - datetime(2024, 12, 21, 17, 38, tzinfo=PARIS)).total_seconds() < 60


def test_schedule_of_a_given_night_against_astral() -> None:
    group = load_rules(EXAMPLES / "lighting.yaml").lighting[0]  # avenue-north
    night = date(2024, 6, 21)
    events = night_events(group.steps, group.location, night)
    want_on = sunset(OBSERVER, night, tzinfo=PARIS).timestamp() + 600
    want_off = sunrise(OBSERVER, date(2024, 6, 22), tzinfo=PARIS).timestamp() - 600
    assert [(e.at_s, e.level_pct) for e in events] == [
        (want_on, 100),
        (local(2024, 6, 21, 22), 50),
        (local(2024, 6, 22, 5), 100),
        (want_off, 0),
    ]
    assert level_at(group.steps, group.location, want_on - 1) == (0, pytest.approx(want_off - 86400, abs=300))
    assert level_at(group.steps, group.location, want_on) == (100, want_on)
    assert level_at(group.steps, group.location, local(2024, 6, 22, 3)) == (50, local(2024, 6, 21, 22))
    assert next_change_s(group.steps, group.location, local(2024, 6, 22, 3)) == local(2024, 6, 22, 5)


@pytest.mark.parametrize(
    ("night", "utc_offset_h"),
    [
        (date(2024, 3, 30), (1, 2)),  # spring forward in the night of 30 → 31 March 2024
        (date(2024, 10, 26), (2, 1)),  # fall back in the night of 26 → 27 October 2024
    ],
)
def test_dimming_across_a_daylight_saving_change(night: date, utc_offset_h: tuple[int, int]) -> None:
    group = load_rules(EXAMPLES / "lighting.yaml").lighting[0]
    events = night_events(group.steps, group.location, night)
    as_local = [datetime.fromtimestamp(e.at_s, PARIS) for e in events]
    # 22:00 and 05:00 stay at those local wall-clock times on either side of the change
    assert (as_local[1].hour, as_local[1].minute) == (22, 0)
    assert (as_local[2].hour, as_local[2].minute) == (5, 0)
    assert as_local[1].utcoffset().total_seconds() == utc_offset_h[0] * 3600  # type: ignore[union-attr]
    assert as_local[2].utcoffset().total_seconds() == utc_offset_h[1] * 3600  # type: ignore[union-attr]
    # the dimmed period is one hour shorter (spring) or longer (autumn) in real time
    assert events[2].at_s - events[1].at_s == 7 * 3600 + (utc_offset_h[0] - utc_offset_h[1]) * 3600
    # the sunrise step follows astral on the morning after the change
    morning = date.fromordinal(night.toordinal() + 1)
    assert events[3].at_s == sunrise(OBSERVER, morning, tzinfo=PARIS).timestamp() - 600


def test_weekday_preset_quimper() -> None:
    rs = ruleset(
        """
        lighting:
          - {id: q, devices: {dev_euis: ["0004a30b00f00001"]}, command: dim, preset: extinction-quimper}
        """
    )
    group = rs.lighting[0]
    friday = night_events(group.steps, group.location, date(2024, 1, 12))  # a Friday night
    sunday = night_events(group.steps, group.location, date(2024, 1, 14))
    assert next(datetime.fromtimestamp(e.at_s, PARIS).hour for e in friday if e.level_pct == 0) == 1
    assert next(datetime.fromtimestamp(e.at_s, PARIS).hour for e in sunday if e.level_pct == 0) == 0


def test_engine_sends_each_level_once_per_lamp_and_resumes_after_restart() -> None:
    eng = RuleEngine(load_rules(EXAMPLES / "lighting.yaml"))
    t = local(2024, 1, 15, 21)
    cmds = [o for o in eng.tick(t) if isinstance(o, DownlinkRequest)]
    assert [(c.dev_eui, c.params) for c in cmds] == [(LAMP1, {"level_pct": 100}), (LAMP2, {"level_pct": 100})]
    assert eng.tick(t + 60) == []
    snapshot = eng.snapshot()
    again = RuleEngine(load_rules(EXAMPLES / "lighting.yaml"))
    again.restore(snapshot)
    assert again.tick(t + 120) == []  # already commanded before the restart
    cmds = [o for o in again.tick(local(2024, 1, 15, 22)) if isinstance(o, DownlinkRequest)]
    assert {c.params["level_pct"] for c in cmds} == {50}


def test_six_hour_outage_lights_keep_dimming_and_flood_alert_is_raised_locally() -> None:
    """No backhaul from 20:00 to 02:00: the engine needs none. Ticks every 30 s, radar every 5 min."""
    rs_light = load_rules(EXAMPLES / "lighting.yaml")
    rs_flood = load_rules(EXAMPLES / "flood.yaml")
    merged = RuleSet(rules=rs_flood.rules, lighting=rs_light.lighting, location=rs_light.location,
                     device_params=rs_flood.device_params)  # fmt: skip
    eng = RuleEngine(merged)
    start = local(2024, 11, 14, 20)
    end = start + 6 * 3600
    radar = "a84041000000f100"
    outbox: list[tuple[int, str, float]] = []  # (priority, what, at) as the lead would queue them
    commanded: list[tuple[float, str, object]] = []
    stage_cm = 200.0
    for step in range(6 * 120):  # bounded: 720 ticks of 30 s
        now = start + step * 30
        outputs = eng.tick(now)
        if step % 10 == 0:  # a radar reading every 5 min; the river rises 12 cm/15 min from 23:00 to 00:00
            if local(2024, 11, 14, 23) <= now < local(2024, 11, 15, 0):
                stage_cm += 4.0
            outputs += eng.evaluate(
                ReadingFacts(
                    radar,
                    "decentlab/dl-rad",
                    now,
                    {"distance": round((450 - stage_cm) * 10)},
                    "river/cadiere",
                )
            )
        for o in outputs:
            if isinstance(o, Alert):
                outbox.append((to_record(o).priority, f"{o.rule_id}:{o.state}", o.at_s))
            elif isinstance(o, DownlinkRequest):
                commanded.append((o.at_s, o.dev_eui, o.params.get("level_pct", o.params.get("interval_s"))))
    assert now < end
    # lights: the dim step at 22:00 went to both lamps (they were switched on at sunset before 20:00)
    levels = [(datetime.fromtimestamp(at, PARIS).strftime("%H:%M"), dev, lvl) for at, dev, lvl in commanded]
    assert (
        ("20:00", LAMP1, 100) in levels and ("22:00", LAMP1, 50) in levels and ("22:00", LAMP2, 50) in levels
    )
    # flood: raised locally during the outage, at alert priority — it leaves first on reconnection
    raised = [o for o in outbox if o[1] == "river-rising:raised"]
    assert len(raised) == 1 and raised[0][0] == Priority.ALERT
    assert local(2024, 11, 14, 23) < raised[0][2] < local(2024, 11, 14, 23, 30)
    assert all(p == Priority.ALERT for p, _, _ in outbox)


# -- the clock: the schedule only at a trusted time (docs/rules.md "When the clock is not trusted") --

REAL_2130 = local(2026, 12, 15, 21, 30)  # a real 21:30 in December: abaissement-22h-05h says 100 %
ABAISSEMENT = f"""
    lighting:
      - {{id: a, devices: {{dev_euis: ["{LAMP1}"]}}, command: dim, preset: abaissement-22h-05h{{extra}}}}
    """


def _levels(outputs: list[object]) -> list[object]:
    return [o.params["level_pct"] for o in outputs if isinstance(o, DownlinkRequest)]


def _alerts(outputs: list[object]) -> list[tuple[str, str]]:
    return [(o.rule_id, o.state) for o in outputs if isinstance(o, Alert)]


@pytest.mark.parametrize(
    "wall_s",
    [0.0, REAL_2130 - 7 * 3600],  # a Pi booted at 1970; a clock restored from a save 7 h old
    ids=["clock-at-1970", "clock-7h-stale"],
)
def test_an_untrusted_clock_holds_then_commands_the_fail_safe_level_with_an_alert(wall_s: float) -> None:
    """Today's main commanded 50 % (1970) and 0 % (7 h stale) at a real 21:30 in December."""
    eng = RuleEngine(ruleset(ABAISSEMENT.replace("{extra}", "")))
    held = eng.tick(wall_s, lighting_time=WallTime(wall_s, "unsynced", 0.0))
    assert held == [] and eng.status()["lighting_clock"] == {"quality": "unsynced", "mode": "hold"}
    assert eng.tick(wall_s + 60, lighting_time=WallTime(wall_s + 60, "unsynced", LIGHTING_HOLD_S - 1)) == []
    failing = eng.tick(wall_s + 120, lighting_time=WallTime(wall_s + 120, "unsynced", LIGHTING_HOLD_S))
    assert _levels(failing) == [100]  # fail-safe: lamps on, dark streets are the danger
    assert _alerts(failing) == [("lighting_clock", "raised")]
    assert (
        eng.tick(wall_s + 150, lighting_time=WallTime(wall_s + 150, "unsynced", LIGHTING_HOLD_S + 30)) == []
    )
    # NTP answers: the real time, the schedule again (still 100 % at 21:30), the alert cleared
    resumed = eng.tick(REAL_2130, lighting_time=WallTime(REAL_2130, "ntp"))
    assert _levels(resumed) == [] and _alerts(resumed) == [("lighting_clock", "cleared")]
    assert _levels(
        eng.tick(local(2026, 12, 15, 22), lighting_time=WallTime(local(2026, 12, 15, 22), "ntp"))
    ) == [50]


def test_the_fail_safe_level_is_the_groups() -> None:
    eng = RuleEngine(ruleset(ABAISSEMENT.replace("{extra}", ", fail_safe_pct: 60")))
    assert _levels(eng.tick(0.0, lighting_time=WallTime(0.0, "unsynced", LIGHTING_HOLD_S))) == [60]


def test_holdover_follows_the_schedule_at_the_estimated_time_not_the_wall_clock() -> None:
    """NTP lost, the wall clock stepped back 7 h: the last trusted time plus the monotonic clock."""
    eng = RuleEngine(ruleset(ABAISSEMENT.replace("{extra}", "")))
    wall_s = local(2026, 12, 15, 22, 30) - 7 * 3600  # 15:30 by the wall clock: daylight
    out = eng.tick(wall_s, lighting_time=WallTime(local(2026, 12, 15, 22, 30), "holdover"))
    assert _levels(out) == [50]
    due_s = eng.next_due_s(wall_s)
    assert due_s is not None and due_s - wall_s == local(2026, 12, 16, 5) - local(2026, 12, 15, 22, 30)


def test_depression_and_fail_safe_are_validated() -> None:
    with pytest.raises(ConfigError, match="depression_deg"):
        ruleset(ABAISSEMENT.replace("{extra}", ", depression_deg: -4"))
    with pytest.raises(ConfigError, match="fail_safe_pct"):
        ruleset(ABAISSEMENT.replace("{extra}", ", fail_safe_pct: 120"))
    assert ruleset(ABAISSEMENT.replace("{extra}", ", depression_deg: 4.5")).lighting[0].depression_deg == 4.5
