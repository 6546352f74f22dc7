"""Edge aggregates: energetic LAeq, percentiles, Lden with French periods, counts and totems.

Hand computations cite research/domain.md §2.3 (formulas, French periods 6-18/18-22/22-6,
worked examples "60 and 70 dB average to 67.4 dB" and "Ld 68 / Le 65 / Ln 58 → Lden 68.4")
and §4.4 (hourly bins, day/year totals, counter resets).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.rules import AggregateRecord, DisplayUpdate
from gateway.rules.noise import energetic_mean_db, french_period, lden_db, level_exceeded_db

from .helpers import DEV, DEV2, engine, reading

PARIS = ZoneInfo("Europe/Paris")
DAY0 = datetime(2024, 6, 10, tzinfo=PARIS).timestamp()  # Monday 10 June 2024, 00:00 CEST


def aggregates(outputs: list[object], kind: str) -> list[AggregateRecord]:
    return [o for o in outputs if isinstance(o, AggregateRecord) and o.kind == kind]


def test_energetic_mean_and_lden_worked_examples() -> None:
    assert energetic_mean_db([60, 70]) == pytest.approx(67.4, abs=0.05)  # not 65
    assert lden_db(68, 65, 58) == pytest.approx(68.4, abs=0.05)
    assert energetic_mean_db([55.0] * 7) == pytest.approx(55.0)
    with pytest.raises(ValueError):
        energetic_mean_db([])


def test_french_periods() -> None:
    assert [french_period(h) for h in (5, 6, 17, 18, 21, 22, 23, 0)] == [
        "night", "day", "day", "evening", "evening", "night", "night", "night",
    ]  # fmt: skip


def test_percentiles_level_exceeded() -> None:
    samples = [float(v) for v in range(1, 101)]  # 1..100 dB, one each
    assert level_exceeded_db(samples, 10) == 91.0  # exceeded 10 % of the time
    assert level_exceeded_db(samples, 50) == 51.0
    assert level_exceeded_db(samples, 90) == 11.0


NOISE = """
location: {timezone: Europe/Paris}
aggregates:
  - id: noise
    devices: {profiles: [test/dev]}
    leq: {field: laeq, intervals_s: [900], percentiles: true}
    lden: {field: laeq}
    period_s: 60
"""
NOISE_HOURLY = NOISE.replace("period_s: 60", "period_s: 3600")


def test_leq_15_min_is_energetic() -> None:
    eng = engine(NOISE)
    t = DAY0 + 10 * 3600  # 10:00, a 15-min boundary
    out = []
    for minute in range(14):  # each reading covers the minute before it
        out += eng.evaluate(reading(t + (minute + 1) * 60, laeq=80.0 if minute == 7 else 60.0))
    assert aggregates(out, "leq_900") == []
    out = eng.evaluate(reading(t + 900, laeq=60.0))  # covers the interval's end: published
    [rec] = aggregates(out, "leq_900")
    # 10·log10((14·10^6 + 10^8) / 15) = 68.81 (the arithmetic mean would say 61.3)
    assert rec.values["laeq_db"] == 68.8 and rec.values["samples"] == 15
    assert rec.values["la10_db"] == 60.0 and rec.values["la90_db"] == 60.0  # 1 loud sample of 15 < 10 %
    assert (rec.start_s, rec.end_s) == (t, t + 900) and rec.dev_eui == DEV
    assert rec.record_id == f"{DEV}-agg-noise-leq_900-{int(t)}"


def test_lden_of_a_hand_computed_day() -> None:
    """Hourly LAeq readings (each covering its hour) over a local day: day hours alternate
    60/70 dB, evening 70, night 55.

    Ld = 10·log10((10^6 + 10^7)/2) = 67.40; Le = 70; Ln = 55;
    Lden = 10·log10((12·5.5e6 + 4·10^(75/10) + 8·10^(65/10)) / 24)
         = 10·log10((6.6e7 + 1.2649e8 + 2.5298e7) / 24) = 10·log10(9.0745e6) = 69.58.
    """
    eng = engine(NOISE_HOURLY)
    out = []
    for hour in range(23):
        if 6 <= hour < 18:
            level = 60.0 if hour % 2 else 70.0
        elif 18 <= hour < 22:
            level = 70.0
        else:
            level = 55.0
        out += eng.evaluate(reading(DAY0 + (hour + 1) * 3600, laeq=level))
    assert aggregates(out, "lden") == []
    out = eng.evaluate(reading(DAY0 + 24 * 3600, laeq=55.0))  # the report covering midnight
    [rec] = aggregates(out, "lden")
    assert rec.values == {
        "ld_db": 67.4, "le_db": 70.0, "ln_db": 55.0, "lden_db": 69.6, "samples": 24,
        "covered_s": 86400.0, "revision": 0,
    }  # fmt: skip
    assert rec.start_s == DAY0 and rec.end_s == DAY0 + 86400


def test_lden_is_null_when_a_period_has_no_data() -> None:
    eng = engine(NOISE)
    eng.evaluate(reading(DAY0 + 12 * 3600, laeq=60.0))
    assert aggregates(eng.tick(DAY0 + 86400), "lden") == []  # its next report may cover the rest
    [rec] = aggregates(eng.tick(DAY0 + 86400 + 3600), "lden")  # late_s (3600) after the day: final
    assert rec.values["ld_db"] == 60.0 and rec.values["lden_db"] is None and rec.values["ln_db"] is None


BIKES = """
location: {timezone: Europe/Paris}
aggregates:
  - id: bikes
    devices: {profiles: [test/dev]}
    count: {fields: [ltr_sum, rtl_sum], mode: cumulative, intervals_s: [3600]}
    display: {to: "70b3d5e75e00f001", command: show_counts, every_s: 300}
"""


def test_counts_per_hour_with_counter_reset_and_totem() -> None:
    eng = engine(BIKES)
    t = DAY0 + 8 * 3600
    out = eng.evaluate(reading(t + 10, ltr_sum=100, rtl_sum=50))  # baseline only
    out += eng.evaluate(reading(t + 600, ltr_sum=130, rtl_sum=60))  # +30 +10
    out += eng.evaluate(reading(t + 1200, ltr_sum=5, rtl_sum=70))  # ltr restarted: +5; rtl +10
    out += eng.evaluate(reading(t + 1800, dev=DEV2, ltr_sum=7, rtl_sum=0))  # second counter: baseline
    out += eng.evaluate(reading(t + 2400, dev=DEV2, ltr_sum=9, rtl_sum=1))  # +2 +1
    [display] = [o for o in eng.tick(t + 2500) if isinstance(o, DisplayUpdate)]
    assert (display.today, display.year) == (58, 58)
    assert display.as_downlink().params == {"today": 58, "year": 58}
    assert [o for o in eng.tick(t + 2600) if isinstance(o, DisplayUpdate)] == []  # every_s not elapsed
    out = eng.tick(t + 3600)
    hourly = {r.dev_eui: r.values for r in aggregates(out, "count_3600")}
    assert hourly == {
        DEV: {"ltr_sum": 35, "rtl_sum": 20, "total": 55},
        DEV2: {"ltr_sum": 2, "rtl_sum": 1, "total": 3},
    }
    # next day: the day record carries the year total, the totem shows today = 0
    out = eng.tick(DAY0 + 86400)
    days = {r.dev_eui: r.values for r in aggregates(out, "count_day")}
    assert days[DEV] == {"ltr_sum": 35, "rtl_sum": 20, "total": 55, "year_total": 55}
    eng.evaluate(reading(DAY0 + 86400 + 3600, ltr_sum=15, rtl_sum=70))  # +10
    [display] = [o for o in eng.tick(DAY0 + 86400 + 3700) if isinstance(o, DisplayUpdate)]
    assert (display.today, display.year) == (10, 68)


def test_year_total_resets_on_1_january() -> None:
    eng = engine(BIKES.replace("cumulative", "increment"))
    dec31 = datetime(2024, 12, 31, 23, 30, tzinfo=PARIS).timestamp()
    eng.evaluate(reading(dec31, ltr_sum=5, rtl_sum=5))
    eng.evaluate(reading(dec31 + 3600, ltr_sum=1, rtl_sum=0))  # 00:30 on 1 January
    [display] = [o for o in eng.tick(dec31 + 3700) if isinstance(o, DisplayUpdate)]
    assert (display.today, display.year) == (1, 1)


def test_aggregate_totals_survive_a_restart() -> None:
    import json

    eng = engine(BIKES)
    t = DAY0 + 8 * 3600
    eng.evaluate(reading(t, ltr_sum=0, rtl_sum=0))
    eng.evaluate(reading(t + 60, ltr_sum=4, rtl_sum=3))
    saved = json.loads(json.dumps(eng.snapshot()))
    again = engine(BIKES)
    again.restore(saved)
    again.evaluate(reading(t + 120, ltr_sum=5, rtl_sum=3))  # +1 (the baseline survived too)
    [display] = [o for o in again.tick(t + 180) if isinstance(o, DisplayUpdate)]
    assert (display.today, display.year) == (8, 8)
