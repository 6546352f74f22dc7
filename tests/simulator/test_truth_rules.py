"""The truth's alert rules against the agent's own rule engine, reading for reading.

Each test feeds a short hand-made sequence of readings, with the same Unix timestamps, to
``simulator.truth_rules.RuleTruth`` and to ``gateway.rules.engine.RuleEngine`` (in-process,
ticked where the agent's rules loop could tick), and checks that ``match_alerts`` accepts the
engine's edges: exactly equal for conditions, inside the window for ``for_s`` and silence,
all-or-none for optional groups. Rule semantics: docs/rules.md; the agent's tick loop:
gateway/app.py ``_rules_loop`` (at most 30 s of wall time between ticks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.messages import Alert
from gateway.rules import loader
from gateway.rules.engine import ReadingFacts, RuleEngine
from simulator.truth_rules import AlertMatch, RuleTruth, load_rules, match_alerts

ROOT = Path(__file__).resolve().parents[2]
EPOCH = datetime(2026, 6, 1, tzinfo=ZoneInfo("Europe/Paris")).timestamp()  # local midnight, a Monday
DEV = "70b3d5e75f000001"
PROFILE = "milesight/em500-swl"
SITE = "river/cadiere/1"
HEAD = "schema_version: 1\nlocation: {lat: 43.2965, lon: 5.3698, timezone: Europe/Paris}\nrules:\n"

Reading = tuple[float, Mapping[str, Any]]
Edge = tuple[str, str, str, float]
SEL = "    devices: {sites: ['river/*']}\n"


def _levels(*pairs: tuple[float, float]) -> list[Reading]:
    return [(t_s, {"level": v}) for t_s, v in pairs]


def _rules(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    return path


def _truth(path: Path, readings: Sequence[Reading], end_s: float, *, known: bool = False) -> RuleTruth:
    specs, other, place = load_rules(path)
    assert other == []
    truth = RuleTruth(specs, EPOCH, place)
    if known:
        truth.known(DEV, "river-1", PROFILE, SITE, EPOCH)
    for t_s, data in readings:
        truth.reading(DEV, "river-1", PROFILE, SITE, EPOCH + t_s, data)
    truth.finish(EPOCH + end_s)
    return truth


def _agent(
    path: Path, readings: Sequence[Reading], ticks: Iterable[float] = (), *, known: bool = False
) -> list[Edge]:
    """The engine's edges, ticked at ``ticks`` (simulated s; a tick at a reading's time runs first)."""
    engine = RuleEngine(loader.load_rules(path))
    if known:
        engine.register_device(DEV, PROFILE, SITE)
        engine.tick(EPOCH)  # the agent's first tick at start: silence counts from then
    events = [(t, 0, None) for t in ticks] + [(t, 1, data) for t, data in readings]
    events.sort(key=lambda e: e[:2])
    out: list[Edge] = []
    for t_s, _, data in events:
        if data is None:
            outputs = engine.tick(EPOCH + t_s)
        else:
            outputs = engine.evaluate(ReadingFacts(DEV, PROFILE, EPOCH + t_s, data, SITE))
        out.extend((o.dev_eui, o.rule_id, o.state, o.at_s - EPOCH) for o in outputs if isinstance(o, Alert))
    return out


def _match(truth: RuleTruth, edges: list[Edge]) -> AlertMatch:
    result = match_alerts(truth.alerts, truth.undetermined, edges, {DEV: "river-1"})
    assert result.missing == [] and result.unexpected == [], (truth.alerts, edges)
    return result


def _exact(truth: RuleTruth) -> list[Edge]:
    assert all(a.late_by_s == 0 and a.optional is None for a in truth.alerts)
    return [(a.dev_eui, a.rule, a.state, a.t_s) for a in truth.alerts]


def test_rate_of_change_edges_are_the_engines_exactly(tmp_path: Path) -> None:
    # rules/examples/flood.yaml "river-rising": > 10 cm / 15 min over a 900 s window, >= 3 points.
    path = _rules(
        tmp_path,
        "  - id: rising\n    devices: {sites: ['river/*']}\n"
        "    when: {rate_of_change: {value: level, window_s: 900, per_s: 900, above: 10, clear_below: 2,"
        " min_points: 3}}\n",
    )
    levels = [30, 30, 31, 30, 34, 41, 49, 58, 66, 70, 72, 73, 73, 72, 70, 69, 69, 68]
    readings = [(1000.0 + 120.0 * i + (7.3 if i % 3 else 0.0), {"level": v}) for i, v in enumerate(levels)]
    truth = _truth(path, readings, 4000.0)
    assert _exact(truth) == _agent(path, readings)
    assert [a.state for a in truth.alerts] == ["raised", "cleared"]


def test_stuck_edges_are_the_engines_exactly(tmp_path: Path) -> None:
    path = _rules(
        tmp_path,
        "  - id: stuck\n    devices: {sites: ['river/*']}\n"
        "    when: {stuck: {value: {field: level, scale: 10}, readings: 4, tolerance: 5}}\n",
    )
    levels = [20, 21, 20, 22, 22, 22, 22.4, 22, 23, 30, 30, 30, 30, 31]
    readings = [(900.0 * i, {"level": v}) for i, v in enumerate(levels)]
    truth = _truth(path, readings, 900.0 * len(levels))
    assert _exact(truth) == _agent(path, readings)
    assert [(a.state, a.t_s) for a in truth.alerts] == [
        ("raised", 900.0 * 6), ("cleared", 900.0 * 8), ("raised", 900.0 * 12), ("cleared", 900.0 * 13),
    ]  # fmt: skip


def test_daylight_edges_are_the_engines_exactly(tmp_path: Path) -> None:
    # The day-burner of docs/rules.md: power drawn between sunrise + 30 min and sunset - 30 min.
    path = _rules(
        tmp_path,
        "  - id: burner\n    devices: {sites: ['river/*']}\n"
        "    when: {all: [{daylight: {margin_s: 1800}}, {threshold: {value: power, above: 20}}]}\n",
    )
    readings = [(900.0 * i, {"power": 40.0}) for i in range(2 * 96)]  # two days, always drawing
    truth = _truth(path, readings, 2 * 86400.0)
    edges = _agent(path, readings)
    assert _exact(truth) == edges
    assert [e[2] for e in edges] == ["raised", "cleared", "raised", "cleared"]
    # Marseille, 1 June: sunrise ~06:00, sunset ~21:10 local; the edges are 30 min inside.
    assert 6.5 * 3600 <= edges[0][3] <= 7 * 3600 + 900 and 20.5 * 3600 <= edges[1][3] <= 21 * 3600


def test_for_s_completed_by_the_next_reading_or_a_tick_inside_the_window(tmp_path: Path) -> None:
    path = _rules(
        tmp_path,
        "  - id: high\n    devices: {sites: ['river/*']}\n"
        "    when: {threshold: {value: level, above: 50, clear_below: 40}}\n    for_s: 1000\n",
    )
    levels = [30, 60, 61, 62, 63, 35, 30]
    readings = [(900.0 * i, {"level": v}) for i, v in enumerate(levels)]
    truth = _truth(path, readings, 900.0 * 7)
    raised = [a for a in truth.alerts if a.state == "raised"]
    assert [(a.t_s, a.late_by_s, a.optional) for a in raised] == [(900.0 + 1000.0, 800.0, None)]
    for ticks in ([], [1500.0], [1900.0], [2100.0], [2700.0], [1900.0, 2000.0, 5000.0]):
        edges = _agent(path, readings, ticks)
        assert [e[2] for e in edges] == ["raised", "cleared"], ticks
        assert _match(truth, edges).windowed == 1


def test_for_s_ended_by_a_reading_after_the_deadline_is_an_optional_pair(tmp_path: Path) -> None:
    path = _rules(
        tmp_path,
        "  - id: high\n    devices: {sites: ['river/*']}\n"
        "    when: {threshold: {value: level, above: 50}}\n    for_s: 1000\n",
    )
    readings = _levels((0.0, 30), (900.0, 60), (2700.0, 30), (3600.0, 31))
    truth = _truth(path, readings, 3600.0)
    assert {a.optional for a in truth.alerts} == {1} and len(truth.alerts) == 2
    without = _agent(path, readings, [1000.0, 3000.0])  # no tick between the deadline and the reading
    with_tick = _agent(path, readings, [1000.0, 2200.0])
    assert without == [] and [(e[2], e[3]) for e in with_tick] == [("raised", 2200.0), ("cleared", 2700.0)]
    assert _match(truth, without).optional_absent == 1
    assert _match(truth, with_tick).optional_present == 1
    # Only one of the pair: the tick raised it, yet nothing cleared it at the reading -> missing.
    assert match_alerts(truth.alerts, [], with_tick[:1], {}).missing != []


def test_for_s_with_a_slow_clear_after_an_ambiguous_tick_is_undetermined(tmp_path: Path) -> None:
    path = _rules(
        tmp_path,
        "  - id: high\n    devices: {sites: ['river/*']}\n"
        "    when: {threshold: {value: level, above: 50}}\n    for_s: 1000\n    clear_for_readings: 2\n",
    )
    readings = _levels((0.0, 60), (1800.0, 30), (2700.0, 30), (3600.0, 70))
    truth = _truth(path, readings, 3600.0)
    assert truth.alerts == [] and [u.from_s for u in truth.undetermined] == [1000.0]
    for ticks in ([], [1200.0]):
        assert _match(truth, _agent(path, readings, ticks)).missing == []


def test_silence_raised_by_a_tick_in_its_window_or_not_at_all(tmp_path: Path) -> None:
    path = _rules(
        tmp_path, "  - id: silent\n" + SEL + "    silence: {interval_s: 3600, factor: 3}\n"
    )
    readings = _levels((600.0, 1), (3600.0, 1), (20000.0, 1), (21000.0, 1))
    truth = _truth(path, readings, 40000.0, known=True)
    windows = sorted((a.state, a.t_s, a.t_s + a.late_by_s, a.optional) for a in truth.alerts)
    assert windows == [
        ("cleared", 20000.0, 20000.0, 1),
        ("raised", 3600.0 + 10800.0, 20000.0, 1),  # a tick after 14,400 s and before the next report
        ("raised", 21000.0 + 10800.0, 40000.0, 2),  # the end of the run: silent since 21,000 s
    ]
    cases = {(): (0, 2), (15000.0,): (1, 1), (15000.0, 35000.0): (2, 0), (20000.0, 39999.0): (2, 0)}
    for ticks, (present, absent) in cases.items():
        result = _match(truth, _agent(path, readings, ticks, known=True))
        assert (result.optional_present, result.optional_absent) == (present, absent), ticks
    late = [("70b3d5e75f000001", "silent", "raised", 14000.0)]  # before the limit: not from a tick
    assert match_alerts(truth.alerts, [], late, {}).unexpected != []


def test_silence_of_a_device_never_heard_counts_from_the_agents_start(tmp_path: Path) -> None:
    path = _rules(tmp_path, "  - id: silent\n" + SEL + "    silence: {interval_s: 60}\n")
    truth = _truth(path, [], 1000.0, known=True)
    assert [(a.t_s, a.late_by_s) for a in truth.alerts] == [(180.0, 820.0)]
    _match(truth, _agent(path, [], [500.0], known=True))


def test_rules_with_parameters_are_not_predicted(tmp_path: Path) -> None:
    path = _rules(
        tmp_path,
        "  - id: p\n" + SEL + "    when: {threshold: {value: level, above: $alert_cm}}\n"
        "  - id: q\n    devices: {sites: ['river/*']}\n    silence: {interval_s: $interval_s}\n"
        "  - id: r\n    devices: {sites: ['river/*']}\n    when: {stuck: {value: level, readings: 3}}\n",
    )
    specs, other, _ = load_rules(path)
    assert [s.id for s in specs] == ["r"] and other == ["p", "q"]


def test_the_first_deployment_rules_are_all_predicted_and_valid_for_the_agent() -> None:
    path = ROOT / "simulator" / "scenarios" / "first-deployment-rules.yaml"
    specs, other, _ = load_rules(path)
    assert other == [] and len(specs) == len(loader.load_rules(path).rules)
    kinds = {next(iter(s.when)) if s.when else "silence" for s in specs}
    assert {"rate_of_change", "stuck", "all", "silence"} <= kinds
    assert any(s.for_s for s in specs)


# --- cases computed by hand from docs/rules.md, checked against the truth AND the engine ---------
# The expected edges below come from the document's table, not from either implementation: a
# test that compared the two only would pass when both shared a bug (issue 17).


def _edges_of_both(path: Path, readings: Sequence[Reading], end_s: float) -> tuple[list[Any], list[Any]]:
    """(state, t_s) of the truth's edges and of the engine's, for readings with exact edges only."""
    truth = [(e[2], e[3]) for e in _exact(_truth(path, readings, end_s))]
    return truth, [(e[2], e[3]) for e in _agent(path, readings)]


@pytest.mark.parametrize(
    ("when", "levels", "edges"),
    [
        # "value >= A" starts it, "value < C" ends it, in between it stays as it was.
        (
            "{threshold: {value: level, above: 50, clear_below: 40}}",
            #  45: between 40 and 50, nothing    50: >= 50 (equal counts) -> raised at 600
            #  42, 49: between, stays raised      40: not < 40, stays raised
            #  None (no `level`): left as it was  39.5: < 40 -> cleared at 3600
            #  45, 49.5: between, stays cleared   60: >= 50 -> raised at 5400   20: < 40 -> cleared at 6000
            [45, 50, 42, 49, 40, None, 39.5, 45, 49.5, 60, 20],
            [("raised", 600.0), ("cleared", 3600.0), ("raised", 5400.0), ("cleared", 6000.0)],
        ),
        # "value <= B" starts it, "value > C" ends it (the circuit-loss levels of the first deployment).
        (
            "{threshold: {value: level, below: 3, clear_above: 5}}",
            #  4: between, nothing   3: <= 3 -> raised at 600   4.5, 5: not > 5, stays raised
            #  5.5: > 5 -> cleared at 2400   4: between, stays cleared
            #  2: <= 3 -> raised at 3600     8: > 5 -> cleared at 4200
            [4, 3, 4.5, 5, 5.5, 4, 2, 8],
            [("raised", 600.0), ("cleared", 2400.0), ("raised", 3600.0), ("cleared", 4200.0)],
        ),
    ],
    ids=["above-clear_below", "below-clear_above"],
)
def test_hysteresis_edges_computed_by_hand(
    tmp_path: Path, when: str, levels: list[float | None], edges: list[tuple[str, float]]
) -> None:
    path = _rules(tmp_path, "  - id: band\n" + SEL + f"    when: {when}\n")
    readings = [
        (600.0 * i, {"level": v} if v is not None else {"battery": 3.6}) for i, v in enumerate(levels)
    ]
    truth, engine = _edges_of_both(path, readings, 600.0 * len(levels))
    assert truth == edges
    assert engine == edges


def test_rate_of_rise_edges_computed_by_hand(tmp_path: Path) -> None:
    # The flood rule of docs/rules.md: least-squares slope over the last 900 s, x 900 (cm per 15 min),
    # raised at >= 10, cleared at < 2, from 3 points. A reading every 300 s.
    # Least squares over 3 points at 0, 300, 600 s: t - mean = -300, 0, 300, sum of squares 180,000,
    #   slope x 900 = 900 x 300 (v2 - v0) / 180,000 = 1.5 (v2 - v0).
    # Over 4 points at 0, 300, 600, 900 s: t - mean = -450, -150, 150, 450, sum of squares 450,000,
    #   slope x 900 = 900 x 150 (-3 v0 - v1 + v2 + 3 v3) / 450,000 = 0.3 (3 (v3 - v0) + (v2 - v1)).
    path = _rules(
        tmp_path,
        "  - id: rising\n" + SEL + "    when: {rate_of_change: {value: level, window_s: 900, per_s: 900,"
        " above: 10, clear_below: 2, min_points: 3}}\n",
    )
    levels = {
        0: 100, 300: 102,  # fewer than 3 points: no rate yet
        600: 104,   # 1.5 (104 - 100) = 6: not >= 10
        900: 110,   # the reading at 0 s is exactly 900 s old and inside the window:
                    # 0.3 (3 (110 - 100) + (104 - 102)) = 9.6, nothing (12 without it, raised)
        1200: 116,  # 0.3 (3 (116 - 102) + (110 - 104)) = 14.4 >= 10: raised at 1200
        1500: 120,  # 0.3 (3 x 16 + 6) = 16.2
        1800: 121,  # 0.3 (3 x 11 + 4) = 11.1
        2100: 122,  # 0.3 (3 x 6 + 1) = 5.7: between 2 and 10, stays raised
        2400: 122,  # 0.3 (3 x 2 + 1) = 2.1: not < 2, stays raised
        2700: 122,  # 0.3 (3 x 1 + 0) = 0.9 < 2: cleared at 2700
        6000: 200,  # alone in its window (and 6300 with one more): no rate, the jump raises nothing
        6300: 200,
        6600: 212,  # 1.5 (212 - 200) = 18: raised at 6600
    }  # fmt: skip
    readings = [(float(t_s), {"level": v}) for t_s, v in levels.items()]
    truth, engine = _edges_of_both(path, readings, 7000.0)
    expected = [("raised", 1200.0), ("cleared", 2700.0), ("raised", 6600.0)]
    assert truth == expected
    assert engine == expected


def _fill_rule(tmp_path: Path, above: float) -> Path:
    return _rules(
        tmp_path,
        "  - id: full\n" + SEL + "    when: {threshold: {value: {field: distance, fill_empty: 2000,"
        f" fill_full: 300}}, above: {above}, clear_below: 30}}}}\n",
    )


def test_fill_percentage_edges_computed_by_hand(tmp_path: Path) -> None:
    # docs/rules.md's container: empty 2000 mm, full 300 mm, fill = (2000 - d) / 1700, clamped 0..100.
    distances = [
        1000,  # 1000 / 1700 = 58.8 %: nothing
        640,   # 1360 / 1700 = 80 %, the document's own example: >= 80, raised at 600
        1490,  # 510 / 1700 = 30 %: not < 30, stays raised
        1500,  # 500 / 1700 = 29.4 %: cleared at 1800
        2100,  # below empty: 0 %, stays cleared
        200,   # above full: 100 %, raised at 3000
    ]  # fmt: skip
    readings = [(600.0 * i, {"distance": d}) for i, d in enumerate(distances)]
    truth, engine = _edges_of_both(_fill_rule(tmp_path, 80), readings, 3600.0)
    expected = [("raised", 600.0), ("cleared", 1800.0), ("raised", 3000.0)]
    assert truth == expected
    assert engine == expected


# 1014 mm is (2000 - 1014) / 1700 = 986 / 1700 = 58 % exactly, so `above: 58` raises ("value >= A").
FILL_AT_LEVEL: list[Reading] = [(0.0, {"distance": 1014})]


def test_a_fill_of_exactly_the_level_raises_in_the_truth(tmp_path: Path) -> None:
    truth, _ = _edges_of_both(_fill_rule(tmp_path, 58), FILL_AT_LEVEL, 600.0)
    assert truth == [("raised", 0.0)]


def test_a_fill_of_exactly_the_level_raises_in_the_engine(tmp_path: Path) -> None:
    assert _agent(_fill_rule(tmp_path, 58), FILL_AT_LEVEL) == [(DEV, "full", "raised", 0.0)]
