"""One YAML reading for every file a person writes: a repeated key is refused, ``<<`` means one thing.

The config, rules, device profiles and simulator scenarios (and the simulator's own readings of a
rules file) are parsed by ``gateway.textfile`` and walked with ``gateway.yamldoc.Node``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway import config, textfile
from gateway.codec import load_profile
from gateway.errors import ConfigError
from gateway.rules import load_rules
from gateway.rules.model import Threshold
from gateway.textfile import parse_yaml
from gateway.yamldoc import Node
from simulator import totems, truth_rules
from simulator.scenario import load_scenario

# Each a valid file but for its last line, which gives again a key already given.
REPEATED = {
    "config": ("edgegw.yaml", config.load, "gateway: {id: gw-1}\ndata_dir: /tmp/a\ndata_dir: /tmp/b\n"),
    "rules": ("rules.yaml", load_rules, "rules: []\naggregates: []\nrules: []\n"),
    "profile": ("acme/bin-1.yaml", load_profile, "schema_version: 1\nid: acme/bin-1\nid: acme/bin-2\n"),
    "scenario": ("city.yaml", load_scenario, "duration: 1d\nfleet: {}\nduration: 2d\n"),
    "truth rules": ("rules.yaml", truth_rules.load_rules, "rules: []\naggregates: []\nrules: []\n"),
    "totem feeds": ("rules.yaml", totems.load_feeds, "aggregates: []\nrules: []\naggregates: []\n"),
}


@pytest.mark.parametrize(("name", "read", "text"), REPEATED.values(), ids=REPEATED)
def test_a_repeated_key_is_refused_in_every_kind_of_file(
    tmp_path: Path, name: str, read: Callable[[Path], object], text: str
) -> None:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not valid YAML: line 3, column 1: duplicate key") as info:
        read(path)
    assert info.value.file == str(path)


# The same merges in a rules file and in a profile: `mid` merges `base` and overrides `scale`
# (defined inside the first merge, used again after it); the second item merges [mid, another]:
# the first mapping listed wins. Both must read scale 3 and offset 1.
RULES = """\
rules:
  - id: first
    devices: {sites: [x]}
    when: {threshold: {value: {<<: &mid {<<: &base {field: level, scale: 2, offset: 1}, scale: 3},
                               field: depth}, above: 1}}
  - id: second
    devices: {sites: [x]}
    when: {threshold: {value: {<<: [*mid, {scale: 5, offset: 7}]}, above: 1}}
"""
PROFILE = """\
schema_version: 1
id: acme/bin-1
vendor: Acme
model: BIN-1
description: test device
lorawan: {mac_version: 1.0.3, regions: [EU868], classes: [A], activation: [otaa], uplink_fports: [85]}
decoder:
  family: channel_tlv
  channels:
    - {<<: &mid {<<: &base {channel_id: 1, channel_type: 0x75, name: level, type: uint8, quantity: level,
                            unit: "1", scale: 2, offset: 1}, scale: 3},
       channel_id: 2, name: depth}
    - {<<: [*mid, {scale: 5, offset: 7}], channel_id: 3}
"""


def test_merge_keys_mean_the_same_in_a_rules_file_and_a_profile(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    (tmp_path / "profile.yaml").write_text(PROFILE, encoding="utf-8")
    rules = load_rules(tmp_path / "rules.yaml").rules
    values = [rule.condition.value for rule in rules if isinstance(rule.condition, Threshold)]
    assert [(v.field, v.scale, v.offset) for v in values] == [("depth", 3.0, 1.0), ("level", 3.0, 1.0)]
    profile = load_profile(tmp_path / "profile.yaml")
    assert profile.decode(85, bytes.fromhex("02750a 03750a")).data == {"depth": 31, "level": 31}  # 10*3+1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("b: &b {x: 1}\nc: &c {x: 2}\na: {<<: *b, <<: *c}\n", "duplicate key '<<' (first on line 3)"),
        ("a: {<<: {x: 1, x: 2}, y: 3}\n", "duplicate key 'x' (first on line 1)"),  # inside a merged mapping
        ("a: {<<: [{x: 1}, {x: 1, x: 2}]}\n", "duplicate key 'x' (first on line 1)"),
        ("a: {<<: [1]}\n", "<< merges mappings, not a scalar"),
    ],
)
def test_a_repeated_merge_or_a_repeated_key_inside_a_merge_is_refused(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        textfile.parse_yaml(text, file="f.yaml")


def test_keys_given_beside_a_merge_override_it() -> None:
    doc = textfile.parse_yaml("b: &b {x: 1, y: 1}\na: {x: 2, <<: *b}\n", file="f.yaml")
    assert doc["a"] == {"x": 2, "y": 1}


# --- gateway.yamldoc.Node: the reader under all four ------------------------------------------


def test_node_errors_name_the_file_and_key_path() -> None:
    doc = Node({"mqtt": {"port": "high", "prot": 1}, "items": [1, "x"]}, file="f.yaml")
    with pytest.raises(ConfigError) as info:
        doc["mqtt"]["port"].as_int(1, 65535)
    assert str(info.value) == "f.yaml: mqtt.port: expected an integer, got 'high'"
    with pytest.raises(ConfigError, match=r"^f.yaml: mqtt.prot: unknown key \(did you mean 'port'\?\)$"):
        doc["mqtt"].mapping(optional=("port", "host"))
    with pytest.raises(ConfigError, match=r"^f.yaml: mqtt.host: missing required key$"):
        doc["mqtt"].mapping(required=("host",), optional=("port", "prot"))
    with pytest.raises(ConfigError, match=r"^f.yaml: items\[1\]: expected an integer, got 'x'$"):
        [item.as_int() for item in doc["items"].items()]
    with pytest.raises(ConfigError, match=r"^f.yaml: <top>: expected a list, got \{"):
        doc.items()


def test_node_bounds_choices_and_defaults() -> None:
    doc = Node({"level": 101, "every_s": -5, "mode": "x", "rate": float("nan")}, file="f")
    with pytest.raises(ConfigError, match=r"level: 101 is out of range 0\.\.100$"):
        doc["level"].as_int(0, 100)
    with pytest.raises(ConfigError, match=r"every_s: must be >= 0, got -5$"):
        doc["every_s"].as_float(0.0)
    with pytest.raises(ConfigError, match=r"mode: unknown value 'x' \(expected one of: a, b\)$"):
        doc["mode"].as_choice(("a", "b"))
    with pytest.raises(ConfigError, match=r"rate: expected a finite number, got nan$"):  # NaN passes bounds
        doc["rate"].as_float(0.0, 1.0)
    # A default is checked as if the file gave it, and named at its key.
    assert doc.get("absent") is None
    with pytest.raises(ConfigError, match=r"^f: absent: expected true or false, got 'no'$"):
        doc.get("absent", "no").as_bool()


def test_node_hints_at_yaml_words_read_as_booleans() -> None:
    # YAML 1.1 reads an unquoted `off` as false.
    with pytest.raises(ConfigError, match=r"expected a string, got False \(quote YAML words"):
        Node(textfile.parse_yaml("label: off\n", file="f"), file="f")["label"].as_str()


def test_a_text_parsed_again_is_an_equal_copy_the_caller_may_change() -> None:
    text = "a: [1, 2]\nb: {c: 2001-02-03}\n"
    first = parse_yaml(text, file="x.yaml")
    first["a"].append(3)  # a caller changing what it got must not change what the next one gets
    again = parse_yaml(text, file="y.yaml")
    assert again == {"a": [1, 2], "b": {"c": datetime.date(2001, 2, 3)}} and again is not first


def test_a_refused_text_is_refused_again_with_its_own_file_name() -> None:
    text = "port: 1\nport: 2\n"
    for name in ("one.yaml", "two.yaml"):
        with pytest.raises(ConfigError, match=name):
            parse_yaml(text, file=name)
