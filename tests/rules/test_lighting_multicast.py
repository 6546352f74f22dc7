"""Lighting groups addressed to a class C multicast group (``group: <name>``): one command per step."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.clock import WallTime
from gateway.errors import ConfigError
from gateway.rules import DownlinkRequest, GroupDownlinkRequest, RuleEngine
from gateway.rules.engine import LIGHTING_HOLD_S

from .helpers import ruleset

PARIS = ZoneInfo("Europe/Paris")
DISTRICT = """
    location: {lat: 43.2965, lon: 5.3698, timezone: Europe/Paris}
    lighting:
      - {id: north, group: district-north, command: set_dim_level, preset: abaissement-22h-05h}
      - {id: avenue, devices: {dev_euis: ["0004a30b00f00001"]}, command: set_dim_level,
         preset: abaissement-22h-05h}
    """


def local(h: int, mi: int = 0) -> float:
    return datetime(2024, 1, 15, h, mi, tzinfo=PARIS).timestamp()


def test_a_step_is_one_group_command_and_unicast_groups_are_unchanged() -> None:
    eng = RuleEngine(ruleset(DISTRICT))
    out = eng.tick(local(21))
    group_cmds = [o for o in out if isinstance(o, GroupDownlinkRequest)]
    assert [(c.group, c.command, c.params) for c in group_cmds] == [
        ("district-north", "set_dim_level", {"level_pct": 100})
    ]
    assert [(o.dev_eui, o.params) for o in out if isinstance(o, DownlinkRequest)] == [
        ("0004a30b00f00001", {"level_pct": 100})
    ]
    assert eng.tick(local(21, 1)) == []
    # The commanded level survives a restart: no second frame for the same step.
    again = RuleEngine(ruleset(DISTRICT))
    again.restore(eng.snapshot())
    assert again.tick(local(21, 2)) == []
    step = [o for o in again.tick(local(22)) if isinstance(o, GroupDownlinkRequest)]
    assert [(c.group, c.params["level_pct"]) for c in step] == [("district-north", 50)]


def test_the_fail_safe_goes_to_the_group_too() -> None:
    eng = RuleEngine(ruleset(DISTRICT))
    out = eng.tick(0.0, lighting_time=WallTime(0.0, "unsynced", LIGHTING_HOLD_S))
    assert [(o.group, o.params) for o in out if isinstance(o, GroupDownlinkRequest)] == [
        ("district-north", {"level_pct": 100})
    ]


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("{id: g, command: c, preset: abaissement-22h-05h}", "exactly one of devices"),
        (
            "{id: g, group: x, devices: {sites: [s]}, command: c, preset: abaissement-22h-05h}",
            "exactly one of",
        ),
        ("{id: g, group: 'North District', command: c, preset: abaissement-22h-05h}", "group name"),
    ],
)
def test_a_lighting_group_names_lamps_or_one_multicast_group(entry: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        ruleset(f"lighting: [{entry}]")
