"""Alert episodes: the flood scenario, ids, restarts (snapshot/restore), rule swaps and reloads."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import StorageError
from gateway.messages import Priority
from gateway.rules import DownlinkRequest, RuleEngine, load_rules, to_record

from .helpers import DEV, T0, alerts, edges, engine, reading, ruleset

EXAMPLES = Path(__file__).parents[2] / "rules" / "examples"
RADAR = "a84041000000f100"  # defaults in rules/examples/flood.yaml: reference 450 cm


def flood_trace() -> list[tuple[float, int]]:
    """(time, distance mm) every 5 min: 2 h calm at 300 cm stage, 1 h rising 12 cm / 15 min, 2 h flat,
    then 2 h falling. Stage = 450 cm - distance/10 (research/domain.md §3.4)."""
    out: list[tuple[float, int]] = []
    stage_cm = 300.0
    for i in range(7 * 12):
        minute = i * 5
        if 120 <= minute < 180:
            stage_cm += 4.0  # 12 cm per 15 min
        elif minute >= 300:
            stage_cm -= 2.0
        out.append((T0 + minute * 60, round((450 - stage_cm) * 10)))
    return out


def test_flood_rising_12cm_per_15min_raises_once_and_clears_once() -> None:
    eng = RuleEngine(load_rules(EXAMPLES / "flood.yaml"))
    outputs = []
    for at_s, distance in flood_trace():
        outputs += eng.evaluate(
            reading(at_s, dev=RADAR, profile="decentlab/dl-rad", site="river/touloubre", distance=distance)
        )
    rising = [a for a in alerts(outputs) if a.rule_id == "river-rising"]
    assert [a.state for a in rising] == ["raised", "cleared"]
    raised, cleared = rising
    assert raised.alert_id == cleared.alert_id and raised.record_id != cleared.record_id
    assert T0 + 120 * 60 < raised.at_s <= T0 + 140 * 60  # within the first 20 min of the rise
    assert raised.value == pytest.approx(12.0)
    assert T0 + 180 * 60 < cleared.at_s <= T0 + 200 * 60
    # crisis mode: the sensor is asked for a report every 2 min, and back to 5 min after
    cmds = [o for o in outputs if isinstance(o, DownlinkRequest)]
    assert [(c.dev_eui, c.command, dict(c.params)) for c in cmds] == [
        (RADAR, "set_report_interval", {"interval_s": 120}),
        (RADAR, "set_report_interval", {"interval_s": 300}),
    ]
    # 48 cm/h > 30 cm/h and the stage tops at 348 cm > the 180 cm alert level → one flood alert too
    assert [a.state for a in alerts(outputs) if a.rule_id == "river-alert"] == ["raised", "cleared"]
    # records for the outbox: alerts at the top priority
    record = to_record(raised)
    assert record.priority == Priority.ALERT and record.kind == "alert"
    assert record.body["data"]["state"] == "raised" and record.record_id == raised.record_id


RULES = """
rules:
  - id: full
    devices: {profiles: [test/dev]}
    when: {threshold: {value: v, above: 80, clear_below: 30}}
  - id: quiet
    devices: {profiles: [test/dev]}
    silence: {interval_s: 100}
"""


def test_open_episode_is_not_raised_twice_across_a_restart() -> None:
    first = engine(RULES)
    raised = alerts(first.evaluate(reading(T0, v=90)))
    assert [a.state for a in raised] == ["raised"]
    saved = json.loads(json.dumps(first.snapshot()))  # what the lead writes to disk

    second = engine(RULES)
    second.restore(saved)
    assert second.evaluate(reading(T0 + 60, v=95)) == []  # still open: no second `raised`
    cleared = alerts(second.evaluate(reading(T0 + 120, v=10)))
    assert [(a.state, a.alert_id) for a in cleared] == [("cleared", raised[0].alert_id)]
    # the silence watchdog's last-seen time survived too
    assert edges(second.tick(T0 + 120 + 301)) == ["raised"]


def test_restore_rejects_a_foreign_snapshot() -> None:
    with pytest.raises(StorageError):
        engine(RULES).restore({"v": 99})
    with pytest.raises(StorageError):
        engine(RULES).restore({"v": 1, "episodes": [["x"]]})


def test_swap_keeps_state_of_unchanged_ids_and_clears_removed_rules() -> None:
    eng = engine(
        RULES + "  - {id: tilt, devices: {profiles: [test/dev]}, when: {flag: {field: p, equals: tilt}}}\n"
    )
    assert sorted(a.rule_id for a in alerts(eng.evaluate(reading(T0, v=90, p="tilt")))) == ["full", "tilt"]
    out = eng.swap(ruleset(RULES), T0 + 10)  # `tilt` removed
    assert [(a.rule_id, a.state, a.message) for a in alerts(out)] == [("tilt", "cleared", "rule removed")]
    assert eng.evaluate(reading(T0 + 20, v=90)) == []  # `full` still open: not raised again


def test_reload_keeps_previous_rules_when_the_new_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    eng = RuleEngine()
    assert eng.reload(path, T0) == ([], None)
    path.write_text(RULES.replace("above: 80", "above: eighty"))
    out, error = eng.reload(path, T0 + 1)
    assert out == [] and error is not None
    assert error.file == str(path) and error.key_path == "rules[0].when.threshold.above"
    assert edges(eng.evaluate(reading(T0 + 2, v=90))) == ["raised"]  # the old rules still run


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.floats(min_value=0, max_value=100, allow_nan=False)), min_size=1, max_size=60
    ),
    for_readings=st.integers(1, 3),
    restart_at=st.integers(0, 60),
)
def test_never_two_raised_without_a_cleared(
    values: list[float | None], for_readings: int, restart_at: int
) -> None:
    text = f"""
    rules:
      - id: r
        devices: {{profiles: [test/dev]}}
        for_readings: {for_readings}
        when:
          any:
            - {{threshold: {{value: v, above: 70, clear_below: 40}}}}
            - {{rate_of_change: {{value: v, window_s: 600, above: 30, clear_below: 5}}}}
            - {{stuck: {{value: v, readings: 4}}}}
    """
    eng = engine(text)
    states: list[str] = []
    for i, v in enumerate(values):
        if i == restart_at:  # a restart in the middle keeps the invariant
            saved = json.loads(json.dumps(eng.snapshot()))
            eng = engine(text)
            eng.restore(saved)
        data = {} if v is None else {"v": v}
        states += [a.state for a in alerts(eng.evaluate(reading(T0 + i * 60, **data)))]
    for a, b in itertools.pairwise(states):
        assert a != b, states
    if states:
        assert states[0] == "raised"
    assert DEV
