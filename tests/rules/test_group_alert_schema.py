"""An alert about a multicast group has a shape gateway/schemas/up-v1.json allows (issue 20 review).

The lighting fail-safe of a ``group: NAME`` lighting entry raises one ``lighting_clock`` alert for
the group; its record names the group with ``group`` and has no ``dev_eui`` (docs/mqtt.md: a dev_eui
is 16 hex digits). Checked with the JSON Schema validator the project uses for up-v1.json, on the
``up`` batch the uplink publishes (``gateway.uplink.envelope.up_batch``).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from gateway.clock import WallTime
from gateway.messages import Alert
from gateway.rules import RuleEngine
from gateway.rules.actions import to_record
from gateway.rules.engine import LIGHTING_HOLD_S
from gateway.uplink import envelope

from .helpers import ruleset

UP_SCHEMA = json.loads(resources.files("gateway").joinpath("schemas/up-v1.json").read_text())
DISTRICT = """
    location: {lat: 43.2965, lon: 5.3698, timezone: Europe/Paris}
    lighting:
      - {id: north, group: district-north, command: set_dim_level, preset: abaissement-22h-05h}
    """


def _batch(*bodies: dict[str, Any]) -> dict[str, Any]:
    payload = envelope.up_batch("gw-test-1", [json.dumps(b) for b in bodies], "2026-12-08T00:00:00Z")
    document: dict[str, Any] = json.loads(payload)
    return document


def _fail_safe_alert() -> Alert:
    engine = RuleEngine(ruleset(DISTRICT))
    out = engine.tick(0.0, lighting_time=WallTime(0.0, "unsynced", LIGHTING_HOLD_S))
    (alert,) = [o for o in out if isinstance(o, Alert)]
    return alert


def test_the_fail_safe_alert_of_a_multicast_lighting_group_names_the_group_and_validates() -> None:
    alert = _fail_safe_alert()
    assert alert.rule_id == "lighting_clock" and alert.state == "raised"
    body = to_record(alert).body
    assert body["group"] == "district-north" and "dev_eui" not in body
    jsonschema.validate(_batch(body), UP_SCHEMA)


def test_a_lamps_alert_and_a_reading_still_carry_a_dev_eui() -> None:
    lamp = Alert("0004a30b00f00001-lighting_clock-avenue-0", "raised", "lighting_clock", "0004a30b00f00001",
                 "warning", 0.0)  # fmt: skip
    body = to_record(lamp).body
    assert body["dev_eui"] == "0004a30b00f00001" and "group" not in body
    jsonschema.validate(_batch(body), UP_SCHEMA)


@pytest.mark.parametrize(
    "change",
    [
        {"dev_eui": "group:district-north"},  # the shape before the fix: not 16 hex digits
        {"dev_eui": "0004a30b00f00001"},  # both a device and a group
        {"kind": "reading"},  # a reading is always a device's
        {"group": "North District"},  # not a group name
    ],
)
def test_the_schema_refuses_what_a_group_alert_must_not_be(change: dict[str, Any]) -> None:
    body = {**to_record(_fail_safe_alert()).body, **change}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_batch(body), UP_SCHEMA)


def test_a_record_without_a_device_or_a_group_is_refused() -> None:
    body = to_record(_fail_safe_alert()).body
    del body["group"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_batch(body), UP_SCHEMA)
