"""The physics faults of a scenario and the device side of the airtime rules.

Containers of the project's own node run its firmware (firmware/nodes/fill_level.py: fire alarm
at 60 °C, a report when the tilt changes; decoded with device_profiles/edgegw/fill-level.yaml).
A fire heats the air under the lid by 40-80 °C within minutes (research/domain.md §1.3 "Fire
signature"); a vandalism is a tilt outside a collection with no drop to empty (§1.4 "Alarms");
a stuck probe reports a flat line while the river moves (§3.5 "Sensor-stuck"); a clock_set to
1970 is a Raspberry Pi without RTC booting before NTP (gateway/clock.py). Airtime: SX127x
formula (gateway/radio/airtime.py, Semtech AN1200.13) and the 1 % of EU868 sub-band M per hour
(ETSI EN 300 220-2 V3.1.1 via gateway/radio/dutycycle.py; domain.md §0.1): 36 s per hour.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import ProfileStore, default_profiles_dir
from gateway.errors import ConfigError
from gateway.radio.airtime import LoraParams, airtime_s
from simulator.city import ControlEvent, ScheduledFrame, SimDevice, build_fleet, epoch_s, schedule
from simulator.citylab import run_city
from simulator.models import RiverModel
from simulator.models.own_nodes import FirmwareFillLevel
from simulator.scenario import Scenario, parse_scenario
from simulator.truth import french_period
from simulator.truth_days import DayBook
from tests.conftest import Broker

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "simulator" / "scenarios" / "first-deployment-rules.yaml"
PROFILES = ProfileStore.load_dir(default_profiles_dir())
HOUR = 3600.0


def scenario(fleet: dict[str, Any], faults: list[dict[str, Any]], **top: Any) -> Scenario:
    return parse_scenario(
        {"name": "t", "seed": 9, "duration": "1d", "fleet": fleet, "faults": faults, **top}, "t.yaml"
    )


def readings(s: Scenario, fleet: list[SimDevice] | None = None) -> list[ScheduledFrame]:
    devices = build_fleet(s) if fleet is None else fleet
    return [e for e in schedule(s, devices) if isinstance(e, ScheduledFrame)]


MIXED = {  # collections at 16 h, apart from the faults
    "containers": [
        {"count": 2, "report_interval": "2h", "collection": {"hour": 16}},
        {"count": 2, "profile": "edgegw/fill-level", "report_interval": "2h", "collection": {"hour": 16}},
    ]
}


# --- the scenario keys -------------------------------------------------------------------------


def test_container_groups_choose_their_profile_and_the_mapping_form_still_works() -> None:
    fleet = build_fleet(scenario(MIXED, []))
    assert [d.device.profile for d in fleet] == ["milesight/em310-udl"] * 2 + ["edgegw/fill-level"] * 2
    assert isinstance(fleet[2].model, FirmwareFillLevel) and fleet[2].report_interval_s == 900  # its wake-up
    assert fleet[2].params == {
        "empty_distance_mm": fleet[2].params["empty_distance_mm"],
        "full_distance_mm": 300,
    }
    single = build_fleet(scenario({"containers": {"count": 3}}, []))
    assert [d.device.profile for d in single] == ["milesight/em310-udl"] * 3


@pytest.mark.parametrize(
    ("fleet", "fault", "key_path", "reason"),
    [
        (
            MIXED,
            {"at": "1h", "kind": "fire", "device": "container-1"},
            "faults[0].device",
            "EM310-UDL measures no",
        ),
        (MIXED, {"at": "1h", "kind": "fire"}, "faults[0].device", "edgegw/fill-level"),
        (MIXED, {"at": "1h", "kind": "vandalism", "device": None}, "faults[0].device", "a vandalism needs"),
        (MIXED, {"at": "1h", "kind": "stuck_sensor", "device": "container-3"}, "faults[0].device", "river"),
        (MIXED, {"at": "1h", "kind": "clock_set"}, "faults[0].to", "to_s"),
        (MIXED, {"at": "1h", "kind": "clock_set", "to": "yesterday"}, "faults[0].to", "date-time"),
        (
            {"containers": {"count": 1, "profile": "acme/bin"}},
            None,
            "fleet.containers.profile",
            "expected one of",
        ),
        ({"containers": {"count": 1}}, None, "radio.duty_cycle", "true or false"),
    ],
)
def test_physics_faults_name_the_key_path_of_a_wrong_target(
    fleet: dict[str, Any], fault: dict[str, Any] | None, key_path: str, reason: str
) -> None:
    top: dict[str, Any] = {"radio": {"duty_cycle": "yes"}} if key_path.startswith("radio") else {}
    with pytest.raises(ConfigError) as caught:
        scenario(fleet, [fault] if fault else [], **top)
    assert caught.value.key_path == key_path and reason in caught.value.reason, caught.value


def test_a_clock_set_takes_a_utc_date_time_or_unix_seconds() -> None:
    for to in ({"to": "1970-01-01T00:00:00Z"}, {"to_s": 0}, {"to": "1970-01-01"}):
        s = scenario(MIXED, [{"at": "2h", "kind": "clock_set", **to}])
        assert s.faults[0].to_s == 0.0 and s.faults[0].duration_s == HOUR  # until NTP answers: 1 h default
    s = scenario(MIXED, [{"at": "2h", "kind": "clock_set", "to": "2020-03-01T12:00:00Z", "duration": "10m"}])
    assert s.faults[0].to_s == 1_583_064_000.0 and s.faults[0].duration_s == 600


# --- physics -----------------------------------------------------------------------------------


def test_a_fire_makes_the_own_node_send_fire_alarms_by_its_own_policy() -> None:
    s = scenario(MIXED, [{"at": "3h", "kind": "fire", "device": "container-3", "duration": "1h"}])
    fleet = build_fleet(s)
    frames = [f for f in readings(s, fleet) if f.device == "container-3"]
    profile = PROFILES.get("edgegw/fill-level")
    for f in frames:  # the firmware's bytes decode to the values of the truth
        assert profile.decode(f.fport or 0, _plain(fleet[2], f)).data.items() >= f.values.items()
    during = [f for f in frames if 3 * HOUR < f.t_s <= 4 * HOUR]
    alarms = [f for f in frames if f.values["fire_alarm"]]
    # Woken every 15 min, the node reports every wake-up while the fire burns (policy: "fire").
    assert len(during) >= 3 and alarms and all(3 * HOUR < f.t_s < 4.5 * HOUR for f in alarms)
    hottest = max(f.values["temperature"] for f in frames)
    assert 60 <= hottest <= 28 + 80  # ambient (17-27 °C) + 40..80 °C
    before = [f.values["temperature"] for f in frames if f.t_s < 3 * HOUR]
    assert before and max(before) < 30
    after = [f for f in frames if f.t_s > 6 * HOUR]
    assert after and not any(f.values["fire_alarm"] for f in after)  # put out, cooled


def test_a_vandalism_is_a_tilt_without_a_drop_to_empty_for_both_profiles() -> None:
    faults = [{"at": "5h", "kind": "vandalism", "device": name} for name in ("container-1", "container-4")]
    s = scenario(MIXED, faults)
    frames = readings(s)
    em310 = [f for f in frames if f.device == "container-1" and 5 * HOUR <= f.t_s <= 7.5 * HOUR]
    # The EM310-UDL sends at the tilt and when it is upright again (2 h default), distance unchanged.
    assert [(f.t_s, f.values["position"]) for f in em310 if f.t_s in (5 * HOUR + 1, 7 * HOUR + 1)] == [
        (5 * HOUR + 1, "tilt"),
        (7 * HOUR + 1, "normal"),
    ]
    distances = [f.values["distance"] for f in em310]
    assert max(distances) - min(distances) < 100  # no emptying (empty is ~2000 mm)
    own = [f for f in frames if f.device == "container-4" and f.t_s >= 5 * HOUR]
    tilted = [f for f in own if f.values["tilt"]]
    assert tilted and tilted[0].t_s < 5 * HOUR + 900  # seen at the next 15-min wake-up
    assert all(f.t_s < 7 * HOUR + 900 for f in tilted)
    upright = next(f for f in own if f.t_s > tilted[-1].t_s)
    assert not upright.values["tilt"] and abs(upright.values["distance"] - tilted[0].values["distance"]) < 150


def test_a_stuck_probe_reports_one_level_while_the_river_floods() -> None:
    fleet_doc = {
        "rivers": {"count": 1, "flood": {"start": "10h", "rise_cm_per_15min": 30, "peak_rise_cm": 200}}
    }
    s = scenario(fleet_doc, [{"at": "10h30m", "kind": "stuck_sensor", "device": "river-1", "duration": "2h"}])
    devices = build_fleet(s)
    model = devices[0].model
    assert isinstance(model, RiverModel)
    frames = readings(s, devices)
    stuck = [f.values["level"] for f in frames if 10.5 * HOUR <= f.t_s < 12.5 * HOUR]
    assert len(stuck) > 30 and len(set(stuck)) == 1  # 2-min flood reports, all the same
    assert model.level_cm(12 * HOUR) - model.level_cm(10.5 * HOUR) > 50  # while the water rose
    after = [f.values["level"] for f in frames if 12.5 * HOUR <= f.t_s < 13 * HOUR]
    assert after and abs(after[0] - round(model.level_cm(12.5 * HOUR))) <= 2  # the true level again


def test_a_clock_set_moves_the_gateway_clock_to_1970_and_back() -> None:
    s = scenario(MIXED, [{"at": "14h", "kind": "clock_set", "to": "1970-01-01T00:00:00Z", "duration": "1h"}])
    controls = [e for e in schedule(s, build_fleet(s)) if isinstance(e, ControlEvent)]
    assert len(controls) == 1 and controls[0].kind == "clock_set"
    # As an offset from the true time: the gateway's clock reads 0 at 14 h and runs on from there.
    assert epoch_s(s) + 14 * HOUR + controls[0].fault.jump_s == 0.0
    assert controls[0].truth()["to_s"] == 0.0


def test_the_daily_aggregates_are_filed_as_the_agent_files_a_1970_reading() -> None:
    # gateway/rules: LAeq coverage more than late_s (3600 s) older than the latest stamp is not
    # filed (counted late); a count is added to the open day whatever its date; a reading of the
    # next day closes the open one.
    epoch = 1_780_264_800.0  # 2026-06-01 00:00 Europe/Paris
    book = DayBook(epoch, "Europe/Paris", french_period)
    for hour in (3, 10, 20):
        book.laeq("n", epoch + hour * HOUR, 60.0, 900.0)
        book.count("c", epoch + hour * HOUR, 10)
    book.laeq("n", 5.0, 90.0, 900.0)  # 1970: dropped
    book.count("c", 5.0, 7)  # 1970: counted in 2026-06-01
    book.laeq("n", epoch + 25 * HOUR, 50.0, 900.0)
    book.count("c", epoch + 25 * HOUR, 1)
    assert book.passages() == {("c", 0): 37}
    assert book.lden_levels() == {("n", 0): {"night": 60.0, "day": 60.0, "evening": 60.0}}
    fresh = DayBook(epoch, "Europe/Paris", french_period)
    fresh.count("c", 5.0, 7)  # no open day: a 1970 day opens, closed by the next reading
    fresh.count("c", epoch + HOUR, 1)
    assert fresh.passages() == {("c", -20_605): 7}


# --- airtime -----------------------------------------------------------------------------------


def _on_air(s: Scenario, fleet: list[SimDevice]) -> dict[str, list[tuple[float, float]]]:
    sf = {d.name: d.sf for d in fleet}
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for f in readings(s, fleet):
        if f.kind not in ("bad_mic", "replay", "garbage"):  # an attacker's radio, not the device's
            out[f.device].append((f.t_s, airtime_s(len(f.phy_payload), LoraParams(sf=sf[f.device]))))
    return out


def test_with_duty_cycle_no_device_overlaps_itself_nor_exceeds_1_percent_an_hour() -> None:
    doc = {
        "containers": {"count": 3, "report_interval": "15m"},
        "rivers": {"count": 1, "report_interval": "5m"},
    }
    faults = [
        {"at": "1h", "kind": "device_flood", "device": "container-1", "interval": "5s", "duration": "1h"}
    ]
    radio = {"radio": {"duty_cycle": True, "retransmissions": 0.2}}
    gated = scenario(doc, faults, **radio)
    fleet = build_fleet(gated)
    fleet[0].sf = 12  # the flooding device at SF12: 1.48 s per 23-byte frame, 24 frames an hour
    on_air = _on_air(gated, fleet)
    flood = on_air["container-1"]
    assert 24 * 20 <= len(flood) <= 24 * 25  # 720 frames due in the hour, about 24 an hour fit in 1 %
    for name, frames in on_air.items():
        for (t0, a0), (t1, _) in itertools.pairwise(frames):
            assert t1 >= t0 + a0 - 1e-9, (name, t0, t1)  # never two frames at once
        for i, (start, _) in enumerate(frames):  # any hour from a frame's start: at most 36 s
            # A frame starting exactly 1 h later belongs to the next hour (float dust of 1e-11 s).
            in_hour = sum(a for t, a in frames[i:] if t < start + HOUR - 1e-6)
            assert in_hour <= 36.0 + 1e-6, (name, start, in_hour)
    ungated = scenario(doc, faults, radio={"retransmissions": 0.2})
    free_fleet = build_fleet(ungated)
    free_fleet[0].sf = 12
    assert len(_on_air(ungated, free_fleet)["container-1"]) > 720  # without the gate: 720 + reports


def test_duty_cycle_leaves_a_sparse_fleet_as_drawn() -> None:
    doc = {"containers": {"count": 5}, "rivers": {"count": 2}}
    plain = [(f.t_s, f.phy_payload) for f in readings(scenario(doc, [], radio={"loss": 0.1}))]
    gated = [
        (f.t_s, f.phy_payload) for f in readings(scenario(doc, [], radio={"loss": 0.1, "duty_cycle": True}))
    ]
    assert plain == gated and len(plain) > 100


# --- through the agent -------------------------------------------------------------------------

PHYSICS_DAY: dict[str, Any] = {
    "name": "physics-day",
    "seed": 5,
    "duration": "1d2h",  # the extra hours close day 0 (Lden, passages)
    "fleet": {
        "containers": [
            {"count": 3, "report_interval": "2h", "collection": {"hour": 16}},
            {"count": 3, "profile": "edgegw/fill-level", "report_interval": "2h", "collection": {"hour": 16}},
        ],
        "rivers": {
            "count": 2,
            "base_cm": [10, 30],
            "flood": {"start": "10h", "rise_cm_per_15min": [30, 40], "peak_rise_cm": 200, "recession": "2h"},
        },
        "noise": {"sites": {"road": 1}},
        "counters": {"bikes": {"count": 1}},
    },
    "faults": [
        {"at": "3h", "kind": "fire", "device": "container-4", "duration": "1h"},
        {"at": "5h", "kind": "vandalism", "device": "container-1"},
        {"at": "5h", "kind": "vandalism", "device": "container-5"},
        {"at": "10h30m", "kind": "stuck_sensor", "device": "river-2", "duration": "2h"},
        # A Pi without RTC rebooted: its clock says 1970 for an hour, until NTP answers.
        {"at": "14h", "kind": "clock_set", "to": "1970-01-01T00:00:00Z", "duration": "1h"},
    ],
}


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_fire_vandalism_stuck_probe_and_a_1970_clock_through_the_agent(
    tmp_path: Path, mosquitto: Broker
) -> None:
    s = parse_scenario(PHYSICS_DAY, "physics-day.yaml")
    result = run_city(s, tmp_path / "city", (mosquitto.host, mosquitto.port), rules_file=RULES, speed=1e9)
    check, summary = result.comparison, result.summary
    expected = summary.expected
    assert expected is not None
    assert check.ok, (check.as_json(), "\n".join(result.agent_log[-15:]))
    assert summary.controls["clock_set"] == 1 and check.frames_received == sum(expected.counts.values()) > 500
    edges = {(a.device, a.rule, a.state) for a in expected.alerts}
    assert {
        ("container-4", "container-fire", "raised"),
        ("container-4", "container-fire", "cleared"),
    } <= edges
    assert ("container-1", "container-tilted", "raised") in edges  # the EM310's vandalism
    assert ("container-5", "container-tilted-node", "raised") in edges  # the own node's
    # The counter's day 0 includes what it counted while the clock said 1970 (the agent adds counts
    # to its open day whatever their date): the truth predicts that total and the broker has it.
    bike = next(eui for eui, name in expected.devices.items() if name == "bike-1")
    truth = [json.loads(line) for line in (tmp_path / "city" / "truth.jsonl").read_text().splitlines()]
    frames = [
        t for t in truth if t["type"] == "frame" and t["device"] == "bike-1" and t["expect"] == "accepted"
    ]
    in_1970 = [t for t in frames if t.get("clock_offset_s", 0) < -1e9]
    day_0 = [t for t in frames if t["t_s"] < 86_400 and not t.get("clock_offset_s")]
    assert len(in_1970) >= 3
    counted = sum(t["values"]["counter_a"] + t["values"]["counter_b"] for t in day_0 + in_1970)
    assert expected.passages[(bike, 0)] == counted and check.passages_checked == 1
    assert check.lden_checked == 1  # the noise site's 1970 LAeq are dropped from its Lden, both sides


def _plain(d: SimDevice, frame: ScheduledFrame) -> bytes:
    """The application payload of an uplink of the fleet (decrypted with the device's AppSKey)."""
    from gateway.lorawan import phy
    from gateway.lorawan.crypto import SessionKeys

    parsed = phy.parse(frame.phy_payload)
    assert isinstance(parsed, phy.DataFrame) and parsed.frm_payload is not None
    device = d.device
    keys = SessionKeys(device.nwk_s_key, device.app_s_key)
    return keys.crypt_frm_payload(parsed.frm_payload, parsed.dev_addr, parsed.fcnt16, True, parsed.fport or 0)
