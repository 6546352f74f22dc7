"""The rules file loader: valid files become typed objects; invalid ones name file, key path, reason."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.codec import load_profiles
from gateway.codec.profile import Profile
from gateway.errors import ConfigError
from gateway.rules import RuleSet, load_rules, parse_rules
from gateway.rules.model import Combine, Param, RateOfChange, Silence, Threshold

from .helpers import ruleset

EXAMPLES = sorted((Path(__file__).parents[2] / "rules" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_file_loads(path: Path) -> None:
    loaded = load_rules(path)
    assert loaded.rules or loaded.aggregates or loaded.lighting
    assert loaded.source == str(path)


def test_examples_cover_the_five_use_cases() -> None:
    assert {p.stem for p in EXAMPLES} >= {"waste", "noise", "flood", "bikes", "lighting"}


def _fields_read(obj: object, out: set[str]) -> set[str]:
    """Every decoded field a rule, aggregate or lighting group reads (its value specs, walked)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name in ("field", "lden_field", "period_field") and isinstance(value, str):
                out.add(value)
            else:
                _fields_read(value, out)
    elif isinstance(obj, tuple | list):
        for item in obj:
            _fields_read(item, out)
    return out


def _output_keys(profile: Profile) -> set[str]:
    keys = {d.output.name for d in profile.derived}
    for example in profile.examples:
        keys |= set(example.expected)
    return keys


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_rules_read_fields_their_profiles_decode(path: Path) -> None:
    # A rule on a field its devices never report never fires: `laeq` for a WS302, whose decoder
    # (like the vendor's) says `LAeq`, went unnoticed in noise.yaml. The keys are the profiles'
    # own examples' outputs (the vendor decoders' keys) and derived values.
    profiles = load_profiles("")
    for item in (*load_rules(path).rules, *load_rules(path).aggregates):
        read = _fields_read(item, set())
        for profile_id in item.selector.profiles:
            missing = read - _output_keys(profiles.get(profile_id))
            assert not missing, f"{item.id}: {profile_id} does not decode {sorted(missing)}"


def test_threshold_with_param_and_default() -> None:
    rs = ruleset(
        """
        defaults:
          profiles: {a/b: {full_pct: 80}}
          devices: {"0011223344556677": {full_pct: 90}}
        rules:
          - id: full
            devices: {profiles: [a/b]}
            when: {threshold: {value: fill, above: {param: full_pct, default: 75}, clear_below: 30}}
        """
    )
    cond = rs.rules[0].condition
    assert isinstance(cond, Threshold)
    assert cond.level == Param("full_pct", 75.0) and cond.clear == 30.0 and cond.direction == "above"
    assert rs.params_for("0011223344556677", "a/b") == {"full_pct": 90.0}
    assert rs.params_for("ffffffffffffffff", "a/b") == {"full_pct": 80.0}


def test_nested_combination_and_silence() -> None:
    rs = ruleset(
        """
        rules:
          - id: combo
            devices: {sites: ["river/*"]}
            when:
              any:
                - {rate_of_change: {value: level, window_s: 900, above: 10}}
                - all: [{flag: {field: fire, equals: true}}, {stuck: {value: t, readings: 3}}]
          - id: quiet
            devices: {sites: ["*"]}
            silence: {interval_s: $interval_s}
        """
    )
    combo = rs.rules[0].condition
    assert isinstance(combo, Combine) and combo.op == "any"
    roc = combo.parts[0]
    assert isinstance(roc, RateOfChange) and roc.per_s == 900 and roc.clear == 10
    assert isinstance(rs.rules[1].condition, Silence)
    assert rs.rules[1].condition.factor == 3.0


@pytest.mark.parametrize(
    ("text", "key_path", "reason_part"),
    [
        ("rules: [{id: a, devices: {sites: [x]}}]", "rules[0]", "exactly one of when"),
        (
            "rules: [{id: a, devices: {}, when: {flag: {field: f, equals: 1}}}]",
            "rules[0].devices",
            "at least one",
        ),
        (
            "rules: [{id: a, devices: {sites: [x]},"
            " when: {threshold: {value: v, above: 5, clear_below: 9}}}]",
            "rules[0].when.threshold.clear_below",
            "must be <= above",
        ),
        (
            "rules: [{id: a, devices: {sites: [x]}, when: {threshold: {value: v, above: 5, below: 1}}}]",
            "rules[0].when.threshold",
            "exactly one of above, below",
        ),
        (
            "rules: [{id: a, devices: {sites: [x]}, when: {treshold: {value: v}}}]",
            "rules[0].when.treshold",
            "unknown key",
        ),
        ("rules: [{id: A B, devices: {sites: [x]}, silence: {interval_s: 60}}]", "rules[0].id", "ids are"),
        (
            "rules: [{id: a, devices: {dev_euis: [xyz]}, silence: {interval_s: 60}}]",
            "rules[0].devices.dev_euis[0]",
            "DevEUI",
        ),
        (
            "rules: [{id: a, devices: {sites: [x]}, silence: {interval_s: 60}, severity: huge}]",
            "rules[0].severity",
            "expected one of",
        ),
        (
            "rules: [{id: a, devices: {sites: [x]}, silence: {interval_s: 60}},"
            " {id: a, devices: {sites: [x]}, silence: {interval_s: 60}}]",
            "rules[1].id",
            "duplicate id",
        ),
        (
            "rules: [{id: a, devices: {sites: [x]}, when: {stuck: {value: v, readings: 1}}}]",
            "rules[0].when.stuck.readings",
            "must be >= 2",
        ),
        (
            "rules: [{id: a, devices: {sites: [x]}, when: {threshold: {value: v, above: abc}}}]",
            "rules[0].when.threshold.above",
            "number or $parameter",
        ),
        (
            # NaN passes every comparison: such a threshold would never fire.
            "rules: [{id: a, devices: {sites: [x]}, when: {threshold: {value: v, above: .nan}}}]",
            "rules[0].when.threshold.above",
            "expected a finite number",
        ),
        ("location: {lat: 123}", "location.lat", "latitude"),
        ("location: {timezone: Mars/Olympus}", "location.timezone", "unknown time zone"),
        (
            "aggregates: [{id: n, devices: {sites: [x]}, leq: {field: l, intervals_s: [700]}}]",
            "aggregates[0].leq.intervals_s[0]",
            "divide an hour",
        ),
        (
            "lighting: [{id: g, devices: {sites: [x]}, command: c, preset: nope}]",
            "lighting[0].preset",
            "unknown preset",
        ),
        (
            "lighting: [{id: g, devices: {sites: [x]}, command: c, steps: [{at: 'sunset+5', level_pct: 1}]}]",
            "lighting[0].steps[0].at",
            "HH:MM",
        ),
        ("schema_version: 2", "schema_version", "unsupported version"),
        ("rules: {}", "rules", "expected a list"),
    ],
)
def test_invalid_files_name_file_key_path_and_reason(text: str, key_path: str, reason_part: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules(text, file="/etc/edgegw/rules.yaml")
    err = info.value
    assert err.file == "/etc/edgegw/rules.yaml"
    assert err.key_path == key_path
    assert reason_part in err.reason
    assert str(err).startswith(f"/etc/edgegw/rules.yaml: {key_path}: ")


def test_duplicate_yaml_keys_and_bad_yaml_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate key"):
        parse_rules("rules: []\nrules: []\n", file="f.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_rules("rules: [\n", file="f.yaml")
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_rules(tmp_path / "missing.yaml")
    assert info.value.file == str(tmp_path / "missing.yaml")


def test_empty_file_is_an_empty_ruleset() -> None:
    assert parse_rules("", file="f") == RuleSet(source="f")
