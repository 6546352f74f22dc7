"""Noise LAeq / LN / Lden against the standards' definitions (issue 18, "Noise").

The expected figures are written here as plain arithmetic from the references, never by calling
the code under test:

- ISO 1996-1 / Directive 2002/49/EC Annex I: LAeq,T = 10·log10((1/T)·Σ t_i·10^(L_i/10)), t_i the
  time each level covers (a report covers the seconds before it: the node's ``period``).
- Lden = 10·log10((1/24)·(12·10^(Ld/10) + 4·10^((Le+5)/10) + 8·10^((Ln+10)/10))); French periods
  day 06-18, evening 18-22, night 22-06 (arrêté du 4 avril 2006); the Directive's 07-19/19-23/23-07
  have the same 12/4/8 hours.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.rules import AggregateRecord
from gateway.rules.actions import to_record
from gateway.rules.engine import ReadingFacts

from .helpers import engine, reading

PARIS = ZoneInfo("Europe/Paris")
DAY0 = datetime(2024, 6, 10, tzinfo=PARIS).timestamp()  # Monday 10 June 2024, 00:00 CEST
H, Q = 3600.0, 900.0


def e(level_db: float) -> float:
    return 10.0 ** (level_db / 10.0)


def db(energy: float) -> float:
    return 10.0 * math.log10(energy)


def lden_ref(ld: float, le: float, ln: float) -> float:
    return db((12 * e(ld) + 4 * e(le + 5) + 8 * e(ln + 10)) / 24)


NODE = """
location: {timezone: Europe/Paris}
aggregates:
  - id: noise
    devices: {profiles: [edgegw/noise]}
    leq: {field: laeq, intervals_s: [900, 3600]}
    lden: {field: laeq}
    period_field: period
    period_s: 900
"""


def node(at_s: float, laeq: float, period: float = 900) -> object:
    return reading(at_s, profile="edgegw/noise", laeq=laeq, period=period)


def records(outputs: list[object], kind: str) -> list[AggregateRecord]:
    return [o for o in outputs if isinstance(o, AggregateRecord) and o.kind == kind]


def final(outputs: list[object], kind: str) -> dict[float, AggregateRecord]:
    """The latest revision of each interval of a series."""
    out: dict[float, AggregateRecord] = {}
    for rec in records(outputs, kind):
        if rec.start_s not in out or rec.values["revision"] > out[rec.start_s].values["revision"]:  # type: ignore[operator]
            out[rec.start_s] = rec
    return out


def feed_day(text: str, reports: list[tuple[float, float, float]]) -> list[object]:
    """Each report (offset from DAY0, level, period), then ticks past the day and its window."""
    eng = engine(text)
    out: list[object] = []
    for offset_s, level, period in reports:
        out += eng.evaluate(node(DAY0 + offset_s, level, period))
    out += eng.tick(DAY0 + 24 * H + 2 * H)
    return out


def quarter_day(
    level_of: dict[str, float], loud_at_h: tuple[float, ...] = ()
) -> list[tuple[float, float, float]]:
    """Quarter-hour reports from 00:15 to 24:00 (and the one after), each covering the quarter before;
    at each ``loud_at_h`` an early 60-s report at 80 dB, the quarter's report covering the rest."""
    reports = []
    for k in range(1, 98):
        end_s = k * Q
        hour = ((end_s - Q) / H) % 24
        period = "day" if 6 <= hour < 18 else "evening" if 18 <= hour < 22 else "night"
        start_h = (end_s - Q) / H
        if start_h in loud_at_h:
            reports.append((end_s - Q + 60, 80.0, 60.0))
            reports.append((end_s, level_of[period], Q - 60))
        else:
            reports.append((end_s, level_of[period], Q))
    return reports


# -- time weighting: the node's 60-s early report among 15-min reports -----------------------


def test_a_60_s_loud_report_weighs_its_60_s() -> None:
    # Day and evening at 58 dB, night 52 dB; an early 60-s report at 80 dB at 10:00 and at 20:00.
    out = feed_day(NODE, quarter_day({"day": 58.0, "evening": 58.0, "night": 52.0}, (10.0, 20.0)))
    [day] = final(out, "lden").values()
    ld = db((43140 * e(58) + 60 * e(80)) / 43200)  # 58.86
    le = db((14340 * e(58) + 60 * e(80)) / 14400)  # 60.19
    ln = 52.0
    assert ld == pytest.approx(58.86, abs=0.005) and le == pytest.approx(60.19, abs=0.005)
    assert day.values["ld_db"] == round(ld, 1)  # before: 64.2 (49 readings as equals)
    assert day.values["le_db"] == round(le, 1)  # before: 68.1
    assert day.values["ln_db"] == round(ln, 1)  # before: 52.4 (the 22:00 report counted at night)
    assert day.values["lden_db"] == pytest.approx(lden_ref(ld, le, ln), abs=0.05)  # 61.65; before 67.3
    hour20 = final(out, "leq_3600")[DAY0 + 20 * H]
    assert hour20.values["laeq_db"] == round(db((3540 * e(58) + 60 * e(80)) / 3600), 1)  # 63.6; before 73.1
    assert hour20.values["covered_s"] == 3600.0


# -- filing by the time covered ----------------------------------------------------------------


def test_quarter_hour_reports_are_filed_under_the_quarter_they_cover() -> None:
    # Day 65, evening 60, night 55 dB, one report per quarter covering the quarter before it.
    out = feed_day(NODE, quarter_day({"day": 65.0, "evening": 60.0, "night": 55.0}))
    quarters = final(out, "leq_900")
    assert quarters[DAY0 + 6 * H].values["laeq_db"] == 65.0  # before: 55.0 (05:45-06:00's report)
    assert quarters[DAY0 + 6 * H - Q].values["laeq_db"] == 55.0
    [day] = final(out, "lden").values()
    assert (day.values["ld_db"], day.values["le_db"], day.values["ln_db"]) == (
        65.0,
        60.0,
        55.0,
    )  # Le before: 60.6
    assert day.values["lden_db"] == round(lden_ref(65, 60, 55), 1) == 65.0  # before: 65.2


def test_a_report_straddling_a_boundary_is_split_by_time() -> None:
    eng = engine(NODE)
    out = eng.evaluate(node(DAY0 + 18 * H + 300, 70.0))  # covers 17:50-18:05
    out += eng.evaluate(node(DAY0 + 18 * H + 1200, 60.0))  # covers 18:05-18:20
    q1745, q1800 = DAY0 + 17.75 * H, DAY0 + 18 * H
    got = final(out, "leq_900")
    assert got[q1745].values == {"laeq_db": 70.0, "samples": 1, "covered_s": 600.0, "revision": 0}
    assert got[q1800].values["laeq_db"] == round(
        db((300 * e(70) + 600 * e(60)) / 900), 1
    )  # 66.0; before: 70.0


# -- late readings: revisions within the window, never a silent loss ---------------------------


def _hour14(order: str) -> list[object]:
    eng = engine(NODE)
    t = DAY0 + 14 * H - 1  # the node reports one second before each quarter
    out: list[object] = []
    for k in range(3):
        out += eng.evaluate(node(t + (k + 1) * Q, 68.0))  # 14:14:59, 14:29:59, 14:44:59
    late = node(t + 4 * Q, 90.0)  # stamped 14:59:59, processed late
    if order == "after-newer":
        out += eng.evaluate(node(t + 5 * Q, 68.0))  # 15:14:59 first
        out += eng.evaluate(late)
    else:  # just after the tick that ends the hour
        out += eng.tick(DAY0 + 15 * H + 0.5)
        out += eng.evaluate(late)
    out += eng.tick(DAY0 + 17 * H)
    return out


def test_a_late_report_revises_the_published_hour() -> None:
    out = _hour14("after-newer")
    hours = [r for r in records(out, "leq_3600") if r.start_s == DAY0 + 14 * H]
    # 2699 s at 68 dB (1 s of 13:59:59's report is in hour 13), 900 s at 90, 1 s at 68 of 15:14:59.
    reference = db((2700 * e(68) + 900 * e(90)) / 3600)  # 84.06; before: 68.0 (the late one dropped)
    assert [r.values["revision"] for r in hours] == [0, 1]
    assert hours[0].values["laeq_db"] == 68.0 and hours[1].values["laeq_db"] == round(reference, 1)
    ids = [r.record_id for r in hours]
    assert len(set(ids)) == 2 and ids[1] == f"{ids[0]}-r1"  # the outbox and the platform keep both
    bodies = [to_record(r).body["data"] for r in hours]
    assert [b["revision"] for b in bodies] == [0, 1] and bodies[0]["from"] == bodies[1]["from"]


def test_a_report_just_after_the_tick_gives_one_record_not_two_with_one_id() -> None:
    out = _hour14("after-tick")
    hours = [r for r in records(out, "leq_3600") if r.start_s == DAY0 + 14 * H]
    reference = db((2699 * e(68) + 900 * e(90)) / 3599)  # 84.07; before: 68.0 and 90.0, one id
    assert len(hours) == 1 and hours[0].values["laeq_db"] == round(reference, 1)


def test_a_report_past_the_window_is_counted_not_filed() -> None:
    eng = engine(NODE.replace("period_s: 900", "period_s: 900\n    late_s: 600"))
    eng.evaluate(node(DAY0 + 10 * H, 60.0))
    eng.tick(DAY0 + 11 * H)
    out = eng.evaluate(node(DAY0 + 10 * H + Q, 90.0))  # 10:00-10:15, 45 min after its end
    assert records(out, "leq_900") == []  # the quarter's window closed at 10:25
    [agg] = eng._aggs.values()
    assert agg._noise is not None and agg._noise.late_readings == 1 and agg._noise.late_cover_s == Q
    [hour] = records(eng.tick(DAY0 + 11 * H + 600), "leq_3600")  # the hour's window is open until 11:10
    assert hour.start_s == DAY0 + 10 * H and hour.values["laeq_db"] == 90.0


# -- periods -----------------------------------------------------------------------------------


def test_directive_periods_and_custom_periods() -> None:
    levels = [(h, 50.0 + h) for h in range(24)]  # hour h at 50 + h dB
    hourly = NODE.replace("lden: {field: laeq}", "lden: {field: laeq, periods: directive}")
    eng = engine(hourly)
    out: list[object] = []
    for h, level in levels:
        out += eng.evaluate(node(DAY0 + (h + 1) * H, level, 3600))
    out += eng.tick(DAY0 + 26 * H)
    [day] = final(out, "lden").values()

    def mean(hours: list[int]) -> float:
        return db(sum(e(50.0 + h) for h in hours) / len(hours))

    ld, le, ln = mean(list(range(7, 19))), mean([19, 20, 21, 22]), mean([23, 0, 1, 2, 3, 4, 5, 6])
    assert (day.values["ld_db"], day.values["le_db"], day.values["ln_db"]) == (
        round(ld, 1), round(le, 1), round(ln, 1),
    )  # fmt: skip
    assert day.values["lden_db"] == round(lden_ref(ld, le, ln), 1)
    custom = engine(
        NODE.replace(
            "lden: {field: laeq}",
            'lden: {field: laeq, periods: {day: "07:00", evening: "19:00", night: "23:00"}}',
        )
    )
    assert custom.rules.aggregates[0].lden_periods.hours() == (12.0, 4.0, 8.0)


def test_french_periods_are_the_default() -> None:
    spec = engine(NODE).rules.aggregates[0]
    assert (spec.lden_periods.day_s, spec.lden_periods.evening_s, spec.lden_periods.night_s) == (
        6 * 3600, 18 * 3600, 22 * 3600,
    )  # fmt: skip


# -- state -------------------------------------------------------------------------------------


def test_noise_state_survives_a_restart_and_keeps_revisions() -> None:
    eng = engine(NODE)
    t = DAY0 + 14 * H
    out: list[object] = []
    for k in range(1, 5):
        out += eng.evaluate(node(t + k * Q, 68.0))
    out += eng.evaluate(node(t + 5 * Q, 68.0))  # publishes hour 14
    assert [r.values["revision"] for r in records(out, "leq_3600")] == [0]
    again = engine(NODE)
    again.restore(json.loads(json.dumps(eng.snapshot())))
    out = again.evaluate(node(t + H, 90.0, 60))  # a late 60-s report covering 14:59-15:00
    [rev] = records(out, "leq_3600")
    assert rev.values["revision"] == 1
    assert rev.values["laeq_db"] == round(db((3540 * e(68) + 60 * e(68) + 60 * e(90)) / 3660), 1)


WS302_BY_PARAMETER = """
location: {timezone: Europe/Paris}
aggregates:
  - id: noise
    devices: {profiles: [milesight/ws302]}
    leq: {field: LAeq, intervals_s: [3600]}
    period_s: {param: report_interval_s, default: 900}
"""


@pytest.mark.parametrize(("installed", "covered_s"), [({"report_interval_s": 1800.0}, 3600.0), ({}, 1800.0)])
def test_a_reports_coverage_comes_from_the_devices_installation_parameter(
    installed: dict[str, float], covered_s: float
) -> None:
    # Sensors of one model configured at different intervals (`edgegw device add --param
    # report_interval_s=1800`): a 30-min sensor's reports at 10:30 and 11:00 cover the whole hour
    # 10:00-11:00, 70 and 60 dB: LAeq = 10·log10((1800·10^7 + 1800·10^6)/3600) = 67.40 dB over
    # 3600 s. Without the parameter each covers the default 900 s (10:15-10:30, 10:45-11:00):
    # the same weights, so 67.40 dB, but over 1800 s of the hour.
    eng = engine(WS302_BY_PARAMETER)
    out: list[object] = []
    for offset_s, level in ((10.5 * H, 70.0), (11 * H, 60.0), (12 * H, 60.0)):
        r = ReadingFacts(
            "70b3d5e75f000001", "milesight/ws302", DAY0 + offset_s, {"LAeq": level}, "", installed
        )
        out += eng.evaluate(r)
    (hour,) = [rec for rec in records(out, "leq_3600") if rec.start_s == DAY0 + 10 * H]
    assert hour.values["covered_s"] == covered_s
    assert hour.values["laeq_db"] == round(db((1800 * e(70) + 1800 * e(60)) / 3600), 1) == 67.4
