"""``edgegw rules test`` (dry run) and ``edgegw rules`` without an agent: argv → output, exit codes.

ARCHITECTURE.md §3.1: ``--json`` prints exactly one JSON document; exit 0 on success, 1 when the
checked thing failed (agent not running), 2 on bad input with file / key path / reason on stderr.
Sun times in the lighting case are astral's for Marseille (NOAA algorithm): only their order is
asserted, and clock steps are asserted to the second across the 31 March 2024 DST change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "rules" / "examples"
BIN = "70b3d57ed0000001"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_readings(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bin_reading(at: str, distance_mm: int, position: str = "normal") -> dict[str, Any]:
    return {
        "dev_eui": BIN, "profile": "milesight/em310-udl", "at": at, "site": "bins/a",
        "data": {"distance": distance_mm, "position": position, "battery": 90},
    }  # fmt: skip


@pytest.fixture
def waste_readings(tmp_path: Path) -> Path:
    # empty_mm 2000, full_mm 300 (rules/examples/waste.yaml): 600 mm = 82 %, 500 mm = 88 %.
    return write_readings(
        tmp_path / "bins.jsonl",
        [
            bin_reading("2024-03-30T10:00:00Z", 1000),
            bin_reading("2024-03-30T14:00:00Z", 600),
            bin_reading("2024-03-30T18:00:00Z", 500),
            bin_reading("2024-03-31T06:00:00Z", 1900),  # emptied: 6 %
        ],
    )


def test_dry_run_prints_alerts_and_aggregates_with_their_times(
    capsys: pytest.CaptureFixture[str], waste_readings: Path
) -> None:
    code, out, err = run(
        capsys, "rules", "test", "--rules", str(EXAMPLES / "waste.yaml"), "--readings", str(waste_readings)
    )
    assert code == 0, err
    lines = out.splitlines()
    # Raised on the second report in a row above 80 % (for_readings: 2), 18:00 UTC = 19:00 Paris.
    assert any(
        line.startswith("2024-03-30T19:00:00+01:00  alert     raised  container-full " + BIN)
        for line in lines
    )
    assert any(
        line.startswith("2024-03-31T08:00:00+02:00  alert     cleared container-full") for line in lines
    )
    assert sum("container-fill fill" in line for line in lines) == 4
    assert lines[-1] == "4 readings: 1 alerts raised, 1 cleared, 0 commands, 4 aggregates"
    assert " eval " not in out  # no --trace


def test_trace_prints_every_rule_evaluation(capsys: pytest.CaptureFixture[str], waste_readings: Path) -> None:
    code, out, _ = run(
        capsys, "rules", "test", "--rules", str(EXAMPLES / "waste.yaml"),
        "--readings", str(waste_readings), "--trace",
    )  # fmt: skip
    assert code == 0
    evals = [line for line in out.splitlines() if "  eval " in line]
    assert len(evals) == 4 * 5  # 4 readings x 5 rules selecting the EM310-UDL
    assert any("container-full " + BIN + " pending active=true value 82.35 pending 1" in e for e in evals)
    assert any("container-silent " + BIN + " seen" in e for e in evals)


def test_json_is_one_document_with_every_event(
    capsys: pytest.CaptureFixture[str], waste_readings: Path
) -> None:
    code, out, _ = run(
        capsys, "rules", "test", "--rules", str(EXAMPLES / "waste.yaml"),
        "--readings", str(waste_readings), "--trace", "--json",
    )  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"] == {
        "rules": 5, "readings": 4, "alerts_raised": 1, "alerts_cleared": 1, "commands": 0,
        "aggregates": 4, "evaluations": 20,
    }  # fmt: skip
    raised = next(e for e in doc["events"] if e["kind"] == "alert" and e["state"] == "raised")
    assert raised["rule"] == "container-full" and raised["at"] == "2024-03-30T19:00:00+01:00"
    fill = [e for e in doc["events"] if e["kind"] == "aggregate"]
    assert fill[2]["values"]["rate_pct_per_day"] > 0 and fill[3]["values"]["points"] == 1  # after emptying


def test_lighting_without_readings_steps_across_the_dst_change(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "rules", "test", "--rules", str(EXAMPLES / "lighting.yaml"),
        "--start", "2024-03-30T12:00:00Z", "--until", "2024-03-31T12:00:00Z", "--json",
    )  # fmt: skip
    assert code == 0
    lamp = [
        e for e in json.loads(out)["events"] if e["kind"] == "command" and e["dev_eui"] == "0004a30b00f00001"
    ]
    levels = [(e["at"][11:19], e["params"]["level_pct"]) for e in lamp]
    # Off at the start (daytime), on after sunset, 50 % at 22:00 CET, 100 % at 05:00 CEST (after
    # the change at 02:00), off before sunrise.
    assert [lvl for _, lvl in levels] == [0, 100, 50, 100, 0]
    assert levels[2][0] == "22:00:00" and levels[3][0] == "05:00:00"
    assert lamp[2]["at"].endswith("+01:00") and lamp[3]["at"].endswith("+02:00")


def test_an_invalid_rules_file_exits_2_with_file_key_path_and_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        "rules:\n  - {id: x, devices: {profiles: [a]}, when: {threshold: {value: v, above: eighty}}}\n"
    )
    code, out, err = run(capsys, "rules", "test", "--rules", str(bad))
    assert code == 2 and out == ""
    assert f"{bad}: rules[0].when.threshold.above: expected a number or $parameter, got 'eighty'" in err


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", ":1: not JSON"),
        ('{"dev_eui": "12", "at": 0, "data": {}}', ":1: dev_eui: expected 16 hex digits"),
        ('{"dev_eui": "0011223344556677", "at": "yesterday", "data": {}}', ":1: at: not an ISO 8601 time"),
        ('{"dev_eui": "0011223344556677", "at": 0, "data": 5}', ":1: data: expected a JSON object"),
    ],
)
def test_a_bad_reading_exits_2_naming_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, line: str, reason: str
) -> None:
    readings = tmp_path / "r.jsonl"
    readings.write_text(line + "\n")
    code, _, err = run(
        capsys, "rules", "test", "--rules", str(EXAMPLES / "waste.yaml"), "--readings", str(readings)
    )
    assert code == 2 and f"{readings}{reason}" in err


def test_rules_view_exits_1_when_the_agent_is_not_running(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "edgegw.yaml"
    cfg.write_text(f"gateway: {{id: gw}}\ndata_dir: {tmp_path / 'data'}\n")
    code, _, err = run(capsys, "--config", str(cfg), "rules", "--json")
    assert code == 1 and "not running" in err


TYPO_RULES = """schema_version: 1
rules:
  - id: bin-full
    devices: {profiles: [milesight/em310udl]}
    when: {threshold: {value: fill_levl, above: 80}}
  - id: bin-tilted
    devices: {sites: ["bins/*"]}
    when: {flag: {field: postion, equals: tilt}}
"""


def test_typos_in_fields_and_profile_ids_are_refused_with_a_suggestion(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rules = tmp_path / "typos.yaml"
    rules.write_text(TYPO_RULES)
    code, out, err = run(capsys, "rules", "test", "--rules", str(rules))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0] == (
        f"{rules}: rule bin-full: devices.profiles: unknown profile 'milesight/em310udl'"
        " (did you mean 'milesight/em310-udl'?)"
    )
    # Its profile unknown, the rule's field is looked for in every profile.
    assert lines[1] == (
        f"{rules}: rule bin-full: field 'fill_levl' is not an output of any known profile"
        " (did you mean 'fill_level'?)"
    )
    assert lines[2] == (
        f"{rules}: rule bin-tilted: field 'postion' is not an output of any known profile"
        " (did you mean 'position'?)"
    )
    assert lines[-1] == f"edgegw: {rules}: 3 unknown name(s), nothing simulated"
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(TYPO_RULES.replace("em310udl", "em310-udl").replace("postion", "position"))
    code, _, err = run(capsys, "rules", "test", "--rules", str(fixed))
    assert code == 2 and "field 'fill_levl' is not an output of milesight/em310-udl" in err
    assert "(did you mean 'fill_level'?)" in err


def test_trace_names_the_field_a_reading_lacks(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rules = tmp_path / "fill.yaml"
    rules.write_text(TYPO_RULES.replace("em310udl", "em310-udl").replace("fill_levl", "fill_level"))
    rules.write_text(rules.read_text().replace("postion", "position"))
    # fill_level is derived from the installation parameters: a reading without them lacks it.
    readings = write_readings(tmp_path / "r.jsonl", [bin_reading("2024-03-30T10:00:00Z", 1000)])
    code, out, _ = run(capsys, "rules", "test", "--rules", str(rules), "--readings", str(readings), "--trace")
    assert code == 0
    assert f"bin-full {BIN} skipped (no fill_level in the reading)" in out
    code, out, _ = run(
        capsys, "rules", "test", "--rules", str(rules), "--readings", str(readings), "--trace", "--json"
    )
    skipped = [e for e in json.loads(out)["events"] if e.get("outcome") == "skipped"]
    assert skipped[0]["missing"] == ["fill_level"]
