"""Fill rate and predicted full time, the daylight condition (day burner), debounce completed by tick.

Facts: fill % from distance (research/domain.md §1.3), filling speed since the last emptying and
forecast full date (LwM2M object 3435, domain.md §1.4), day burner between sunrise + 30 min and
sunset - 30 min (TALQ lampUnexpectedOn, domain.md §5.6). Sun times from astral (NOAA algorithm).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.rules import AggregateRecord, RuleEngine, load_rules
from gateway.rules.conditions import is_daylight
from gateway.rules.model import Location
from gateway.rules.schedules import sun_times

from .helpers import DEV, T0, alerts, edges, engine, reading, ruleset

EXAMPLES = Path(__file__).parents[2] / "rules" / "examples"
HOUR = 3600.0
DAY = 86400.0

FILL = """
schema_version: 1
defaults: {profiles: {test/dev: {empty_mm: 2000, full_mm: 0}}}
aggregates:
  - id: fill
    devices: {profiles: [test/dev]}
    fill: {value: {field: distance, fill_empty: $empty_mm, fill_full: $full_mm}, full_pct: 80}
"""


def fills(outputs: list[object]) -> list[AggregateRecord]:
    return [o for o in outputs if isinstance(o, AggregateRecord) and o.kind == "fill"]


def test_fill_rate_is_percent_per_day_and_predicts_the_full_time() -> None:
    eng = engine(FILL)
    # 10 % per day: distance falls 200 mm per day on a 2000 mm column (fill = (2000 - d) / 2000).
    records = []
    for day in range(4):
        records += fills(eng.evaluate(reading(T0 + day * DAY, distance=2000 - 200 * day)))
    first, last = records[0], records[-1]
    assert first.values["rate_pct_per_day"] is None and first.values["points"] == 1
    assert last.values["fill_pct"] == 30.0 and last.values["rate_pct_per_day"] == pytest.approx(10.0)
    # 30 % now, 80 % is the target: 5 days at 10 %/day.
    assert last.values["full_in_h"] == pytest.approx(120.0)
    expected = datetime.fromtimestamp(T0 + 3 * DAY + 5 * DAY, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert str(last.values["full_at"]).startswith(expected)
    assert last.start_s == last.end_s == T0 + 3 * DAY
    assert last.record_id != records[-2].record_id  # one record per reading


def test_an_emptying_starts_a_new_fill_series() -> None:
    eng = engine(FILL)
    for day, distance in enumerate([1800, 1400, 1000]):  # 10, 30, 50 %
        eng.evaluate(reading(T0 + day * DAY, distance=distance))
    (after,) = fills(eng.evaluate(reading(T0 + 2.5 * DAY, distance=1900)))  # 5 %: emptied
    assert after.values["points"] == 1 and after.values["rate_pct_per_day"] is None
    (later,) = fills(eng.evaluate(reading(T0 + 3.5 * DAY, distance=1700)))
    assert later.values["rate_pct_per_day"] == pytest.approx(10.0) and later.values["points"] == 2


def test_fill_rate_needs_a_minimum_span_and_a_rising_level() -> None:
    eng = engine(FILL)
    eng.evaluate(reading(T0, distance=1000))
    (soon,) = fills(eng.evaluate(reading(T0 + 600, distance=990)))  # 10 min: below min_span_s (1 h)
    assert soon.values["rate_pct_per_day"] is None
    (flat,) = fills(eng.evaluate(reading(T0 + DAY, distance=1000)))
    assert flat.values["full_in_h"] is None and flat.values["full_at"] is None


def test_fill_state_survives_a_restart() -> None:
    eng = engine(FILL)
    eng.evaluate(reading(T0, distance=2000))
    again = RuleEngine(eng.rules)
    again.restore(eng.snapshot())
    (rec,) = fills(again.evaluate(reading(T0 + DAY, distance=1800)))
    assert rec.values["points"] == 2 and rec.values["rate_pct_per_day"] == pytest.approx(10.0)


def test_a_fill_spec_without_value_is_refused_with_its_key_path() -> None:
    with pytest.raises(ConfigError) as err:
        ruleset("aggregates: [{id: f, devices: {profiles: [p]}, fill: {window_s: 7200}}]")
    assert err.value.key_path == "aggregates[0].fill.value"


def test_daylight_is_between_sunrise_plus_margin_and_sunset_minus_margin() -> None:
    loc = Location()  # Marseille, Europe/Paris
    sun = sun_times(loc, date(2024, 6, 21))
    assert is_daylight(loc, sun["sunrise"] + 1801, 1800)
    assert not is_daylight(loc, sun["sunrise"] + 1799, 1800)
    assert is_daylight(loc, sun["sunset"] - 1801, 1800)
    assert not is_daylight(loc, sun["sunset"] - 1799, 1800)


def test_the_day_burner_example_raises_after_15_min_by_tick_alone() -> None:
    eng = RuleEngine(load_rules(EXAMPLES / "lighting.yaml"))
    lamp, site = "0004a30b00f00099", "lighting/residential/a"
    noon = datetime(2024, 6, 21, 10, 0, tzinfo=UTC).timestamp()  # 12:00 local, full daylight
    out = eng.evaluate(reading(noon, dev=lamp, site=site, power=45.0, dim_level=0))
    assert edges(out) == []  # 15 min to go
    assert edges(eng.tick(noon + 600)) == []
    assert eng.next_due_s(noon + 600) == pytest.approx(noon + 900)  # the agent's tick wakes on time
    (raised,) = alerts(eng.tick(noon + 900))
    assert (raised.rule_id, raised.state, raised.value) == ("lamp-day-burner", "raised", 45.0)
    night = datetime(2024, 6, 21, 22, 0, tzinfo=UTC).timestamp()  # midnight local
    assert edges(eng.evaluate(reading(night, dev=lamp, site=site, power=45.0, dim_level=100))) == ["cleared"]


def test_a_lamp_on_at_night_is_not_a_day_burner() -> None:
    eng = RuleEngine(load_rules(EXAMPLES / "lighting.yaml"))
    night = datetime(2024, 6, 21, 22, 0, tzinfo=UTC).timestamp()
    eng.evaluate(reading(night, dev="0004a30b00f00099", site="lighting/x", power=45.0, dim_level=100))
    assert [a for a in alerts(eng.tick(night + 3600)) if a.rule_id == "lamp-day-burner"] == []


THRESHOLD_FOR_S = """
rules:
  - id: hot
    devices: {dev_euis: ["0011223344556677"]}
    when: {threshold: {value: t, above: 60, clear_below: 50}}
    for_s: 300
    clear_for_s: 600
"""


@pytest.mark.parametrize(
    ("tick_at", "raised"),
    [(T0 + 299, False), (T0 + 300, True), (T0 + 1000, True)],
)
def test_for_s_completes_on_a_tick_at_the_duration(tick_at: float, raised: bool) -> None:
    eng = engine(THRESHOLD_FOR_S)
    assert edges(eng.evaluate(reading(T0, t=70))) == []
    out = eng.tick(tick_at)
    assert edges(out) == (["raised"] if raised else [])
    if raised:
        assert alerts(out)[0].at_s == tick_at and alerts(out)[0].value == 70


def test_a_reading_that_ends_the_condition_cancels_the_pending_raise() -> None:
    eng = engine(THRESHOLD_FOR_S)
    eng.evaluate(reading(T0, t=70))
    eng.evaluate(reading(T0 + 100, t=40))
    assert edges(eng.tick(T0 + 400)) == [] and eng.next_due_s(T0 + 400) is None


def test_clear_for_s_completes_on_a_tick_too() -> None:
    eng = engine(THRESHOLD_FOR_S)
    eng.evaluate(reading(T0, t=70))
    assert edges(eng.tick(T0 + 300)) == ["raised"]
    eng.evaluate(reading(T0 + 400, t=45))
    assert edges(eng.tick(T0 + 999)) == []
    assert edges(eng.tick(T0 + 1000)) == ["cleared"]
    status = eng.status()
    assert status["open_episodes"] == [] and status["pending"] == []


def test_status_shows_open_episodes_pending_changes_and_the_last_reload(tmp_path: Path) -> None:
    eng = engine(THRESHOLD_FOR_S)
    eng.evaluate(reading(T0, t=70))
    assert eng.status()["pending"] == [
        {"rule": "hot", "dev_eui": DEV, "to": "raise", "since_s": T0, "readings": 1}
    ]
    eng.tick(T0 + 300)
    (episode,) = eng.status()["open_episodes"]
    assert episode["rule"] == "hot" and episode["since_s"] == T0 + 300 and episode["value"] == 70
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{id: x}]\n")
    _out, error = eng.reload(bad, T0 + 400)
    assert error is not None
    status = eng.status()
    assert status["last_reload"]["ok"] is False and "devices" in status["last_reload"]["error"]
    assert [r["id"] for r in status["rules"]] == ["hot"]  # the previous rules stay
