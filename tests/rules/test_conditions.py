"""Each condition kind, with hysteresis and debounce edges; expectations computed by hand."""

from __future__ import annotations

import pytest

from gateway.rules.conditions import read_value, slope_per_s
from gateway.rules.model import Param, Threshold, ValueSpec

from .helpers import DEV, DEV2, T0, alerts, edges, engine, reading

THRESHOLD = """
rules:
  - id: r
    devices: {profiles: [test/dev]}
    when: {threshold: {value: v, above: 80, clear_below: 30}}
"""


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # at the level raises (>=), inside the hysteresis band nothing happens, below clear clears
        ([79.9, 80, 85, 50, 31, 30, 29.9, 10], [None, "raised", None, None, None, None, "cleared", None]),
        # oscillating around the raise level: one episode only (no storm)
        ([81, 79, 81, 79, 81], ["raised", None, None, None, None]),
        # oscillating around the clear level after the episode ended
        ([90, 29, 31, 29, 31], ["raised", "cleared", None, None, None]),
    ],
)
def test_threshold_hysteresis(values: list[float], expected: list[str | None]) -> None:
    eng = engine(THRESHOLD)
    got = []
    for i, v in enumerate(values):
        states = edges(eng.evaluate(reading(T0 + i * 60, v=v)))
        got.append(states[0] if states else None)
    assert got == expected


def test_threshold_below_with_clear_above() -> None:
    eng = engine(
        """
        rules:
          - id: batt
            devices: {profiles: [test/dev]}
            when: {threshold: {value: battery, below: 15, clear_above: 25}}
        """
    )
    seq = [(20, []), (15, ["raised"]), (24, []), (25, []), (26, ["cleared"])]
    for i, (v, want) in enumerate(seq):
        assert edges(eng.evaluate(reading(T0 + i, battery=v))) == want, v


@pytest.mark.parametrize(
    ("debounce", "times_values", "raised_at"),
    [
        # for_readings: 3 consecutive readings needed; an interruption restarts the count
        ("for_readings: 3", [(0, 90), (60, 90), (120, 10), (180, 90), (240, 90), (300, 90)], 300),
        # for_s: the condition must have held for 600 s (first true at 100)
        ("for_s: 600", [(100, 90), (400, 90), (699, 90), (700, 90)], 700),
        # both: 2 readings AND 300 s
        ("for_readings: 2\n    for_s: 300", [(0, 90), (100, 90), (299, 90), (300, 90)], 300),
    ],
)
def test_debounce_raise(debounce: str, times_values: list[tuple[int, float]], raised_at: int) -> None:
    eng = engine(THRESHOLD.replace("    when:", f"    {debounce}\n    when:"))
    raised = []
    for t, v in times_values:
        raised += [a.at_s - T0 for a in alerts(eng.evaluate(reading(T0 + t, v=v))) if a.state == "raised"]
    assert raised == [raised_at]


def test_debounce_clear() -> None:
    eng = engine(THRESHOLD.replace("    when:", "    clear_for_readings: 2\n    when:"))
    seq = [(90, ["raised"]), (10, []), (90, []), (10, []), (10, ["cleared"])]
    for i, (v, want) in enumerate(seq):
        assert edges(eng.evaluate(reading(T0 + i, v=v))) == want, i


RATE = """
rules:
  - id: rise
    devices: {profiles: [test/dev]}
    when:
      rate_of_change:
        value: {field: level_cm}
        window_s: 900
        per_s: 900
        above: 10
        clear_below: 2
        min_points: 3
"""


def test_rate_of_change_regression_and_hysteresis() -> None:
    """Least-squares slope over the points with t >= now - 900 s, times 900 s; by hand below."""
    eng = engine(RATE)
    # (0,100) (300,103) (600,106): slope 6/600 = 0.01 cm/s → 9 cm/15 min < 10
    for t, v in ((0, 100), (300, 103), (600, 106)):
        assert edges(eng.evaluate(reading(T0 + t, level_cm=v))) == []
    # + (900,110): t̄=450, v̄=104.75, Σdt·dv = 2137.5+262.5+187.5+2362.5 = 4950, Σdt² = 450000
    # → 0.011 cm/s → 9.9 cm/15 min: still below 10
    assert edges(eng.evaluate(reading(T0 + 900, level_cm=110))) == []
    # window (300..1200): (300,103) (600,106) (900,110) (1200,114): Σdt·dv = 5850 → 11.7 cm/15 min
    assert edges(eng.evaluate(reading(T0 + 1200, level_cm=114))) == ["raised"]
    # flat from now on: (600..1500) → 4200/450000·900 = 8.4; (900..1800) → 1800/450000·900 = 3.6:
    # both above the clear level 2 (hysteresis); (1200..2100) all 114 → 0 → cleared
    assert edges(eng.evaluate(reading(T0 + 1500, level_cm=114))) == []
    assert edges(eng.evaluate(reading(T0 + 1800, level_cm=114))) == []
    assert edges(eng.evaluate(reading(T0 + 2100, level_cm=114))) == ["cleared"]


def test_rate_of_change_slope_helper() -> None:
    assert slope_per_s([[0, 100], [300, 103], [600, 106], [900, 110]]) == pytest.approx(4950 / 450000)
    assert slope_per_s([[5, 1], [5, 2]]) is None


def test_rate_of_change_needs_min_points() -> None:
    eng = engine(RATE)
    # two points of a huge rise: min_points 3 → no evaluation yet
    assert edges(eng.evaluate(reading(T0, level_cm=0))) == []
    assert edges(eng.evaluate(reading(T0 + 60, level_cm=500))) == []
    assert edges(eng.evaluate(reading(T0 + 120, level_cm=1000))) == ["raised"]


def test_stuck_sensor_flat_line() -> None:
    eng = engine(
        """
        rules:
          - id: stuck
            devices: {profiles: [test/dev]}
            when: {stuck: {value: d, readings: 4, tolerance: 1}}
        """
    )
    seq = [(100, []), (100, []), (101, []), (100, ["raised"]), (100.5, []), (103, ["cleared"]), (103, [])]
    for i, (v, want) in enumerate(seq):
        assert edges(eng.evaluate(reading(T0 + i, d=v))) == want, i


@pytest.mark.parametrize(
    ("flag_yaml", "values", "expected"),
    [
        (
            "{field: position, equals: tilt}",
            ["normal", "tilt", "tilt", "normal"],
            [None, "raised", None, "cleared"],
        ),
        ("{field: fire, equals: true}", [False, 1, True, False], [None, None, "raised", "cleared"]),
        ("{field: status, in: [1, 2]}", [0, 2, True, 0], [None, "raised", "cleared", None]),
    ],
)
def test_device_flags(flag_yaml: str, values: list[object], expected: list[str | None]) -> None:
    field = flag_yaml.split("field: ")[1].split(",")[0]
    eng = engine(f"rules: [{{id: f, devices: {{profiles: [test/dev]}}, when: {{flag: {flag_yaml}}}}}]")
    got = []
    for i, v in enumerate(values):
        states = edges(eng.evaluate(reading(T0 + i, **{field: v})))
        got.append(states[0] if states else None)
    assert got == expected


def test_silence_watchdog_by_tick() -> None:
    eng = engine(
        """
        defaults: {profiles: {test/dev: {interval_s: 600}}}
        rules:
          - id: quiet
            devices: {profiles: [test/dev]}
            silence: {interval_s: $interval_s, factor: 3}
        """
    )
    eng.evaluate(reading(T0))
    assert eng.tick(T0 + 1800) == []  # exactly 3 x 600: not yet
    out = eng.tick(T0 + 1801)
    assert edges(out) == ["raised"] and alerts(out)[0].value == 1801
    assert eng.tick(T0 + 5000) == []  # no storm while still silent
    assert edges(eng.evaluate(reading(T0 + 5001))) == ["cleared"]
    assert eng.tick(T0 + 5002) == []


def test_silence_of_a_registered_device_never_heard() -> None:
    eng = engine("rules: [{id: q, devices: {profiles: [test/dev]}, silence: {interval_s: 100, factor: 2}}]")
    eng.register_device(DEV2, "test/dev")
    assert eng.tick(T0) == []  # counting starts when the engine first sees the device
    assert edges(eng.tick(T0 + 201)) == ["raised"]


def test_combination_all_and_any_keep_missing_leaves() -> None:
    eng = engine(
        """
        rules:
          - id: both
            devices: {profiles: [test/dev]}
            when:
              all:
                - {threshold: {value: temp, above: 60}}
                - {flag: {field: fire, equals: true}}
          - id: either
            devices: {profiles: [test/dev]}
            when:
              any:
                - {threshold: {value: temp, above: 60}}
                - {flag: {field: fire, equals: true}}
        """
    )
    out = eng.evaluate(reading(T0, temp=70))  # fire not reported yet: `all` false, `any` true
    assert [(a.rule_id, a.state) for a in alerts(out)] == [("either", "raised")]
    out = eng.evaluate(reading(T0 + 1, fire=True))  # temp missing: its leaf keeps 'active'
    assert [(a.rule_id, a.state) for a in alerts(out)] == [("both", "raised")]
    out = eng.evaluate(reading(T0 + 2, temp=20, fire=False))
    assert sorted((a.rule_id, a.state) for a in alerts(out)) == [("both", "cleared"), ("either", "cleared")]


def test_missing_field_skips_the_rule() -> None:
    eng = engine(THRESHOLD)
    assert eng.evaluate(reading(T0, v=90)) != []
    assert eng.evaluate(reading(T0 + 1, other=1)) == []
    assert eng.evaluate(reading(T0 + 2, v="high")) == []  # not a number: skipped too
    assert edges(eng.evaluate(reading(T0 + 3, v=10))) == ["cleared"]


def test_selector_by_site_glob_and_dev_eui() -> None:
    eng = engine(
        """
        rules:
          - id: river
            devices: {sites: ["river/*"], dev_euis: ["0011223344556677"]}
            when: {threshold: {value: v, above: 1}}
        """
    )
    assert eng.evaluate(reading(T0, site="river/touloubre", v=5)) != []
    assert eng.evaluate(reading(T0, dev=DEV2, site="river/touloubre", v=5)) == []
    assert eng.evaluate(reading(T0, dev=DEV2, site="park/x", v=5)) == []
    assert DEV  # selected above


def test_fill_percentage_and_per_device_defaults() -> None:
    spec = ValueSpec("distance", fill_empty=Param("empty_mm"), fill_full=Param("full_mm"))
    params = {"empty_mm": 2000.0, "full_mm": 300.0}
    assert read_value(spec, {"distance": 640}, params) == pytest.approx(80.0)  # (2000-640)/1700
    assert read_value(spec, {"distance": 2500}, params) == 0.0
    assert read_value(spec, {"distance": 100}, params) == 100.0
    eng = engine(
        """
        defaults:
          profiles: {test/dev: {empty_mm: 2000, full_mm: 300}}
          devices: {"8899aabbccddeeff": {full_pct: 90}}
        rules:
          - id: full
            devices: {profiles: [test/dev]}
            when:
              threshold:
                value: {field: distance, fill_empty: $empty_mm, fill_full: $full_mm}
                above: {param: full_pct, default: 80}
                clear_below: 30
        """
    )
    assert edges(eng.evaluate(reading(T0, distance=640))) == ["raised"]  # 80 %: the default
    assert edges(eng.evaluate(reading(T0, dev=DEV2, distance=640))) == []  # this one wants 90 %
    assert edges(eng.evaluate(reading(T0 + 1, dev=DEV2, distance=470))) == ["raised"]  # 90 %


def test_param_without_value_or_default_skips_the_device() -> None:
    eng = engine(
        "rules: [{id: r, devices: {profiles: [test/dev]}, when: {threshold: {value: v, above: $lim}}}]"
    )
    assert eng.evaluate(reading(T0, v=1e9)) == []


def test_a_rule_that_fails_is_disabled_and_reported_others_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.rules.conditions as conditions

    eng = engine(
        THRESHOLD + "  - {id: other, devices: {profiles: [test/dev]}, when: {flag: {field: f, equals: 1}}}\n"
    )
    real = conditions.evaluate

    def broken(cond, key, leaves, at_s, data, params, *rest):  # type: ignore[no-untyped-def]
        if isinstance(cond, Threshold):
            raise ZeroDivisionError("boom")
        return real(cond, key, leaves, at_s, data, params, *rest)

    monkeypatch.setattr(conditions, "evaluate", broken)
    out = eng.evaluate(reading(T0, v=90, f=1))
    assert sorted((a.rule_id, a.state) for a in alerts(out)) == [
        ("other", "raised"),
        ("rule_disabled", "raised"),
    ]
    assert "ZeroDivisionError" in eng.disabled["r"]
    assert alerts(eng.evaluate(reading(T0 + 1, v=90))) == []  # disabled: not run again, not re-reported
