"""The noise, water-level, counter, lamp-controller and display firmware on real MicroPython, end to end.

One MicroPython process (the WebAssembly port run by ``run_micropython.mjs``, as in
``test_micropython_e2e.py``) runs ``scenario_nodes.py``: five boards in turn, each with its
own keys, its sensor drivers over the ``machine`` shim (ADC, Pin IRQ, PWM, SPI; ``shims/``)
and a simulated world. This test plays the gateway: ``JoinServer.handle`` answers each
join-request, ``SessionTable.accept`` takes every uplink, each node's ``edgegw/*`` profile
decodes it, and commands are encoded with the profile's encoder and framed by the gateway's
``DownlinkScheduler`` (class A, answered in RX1; the nodes' ``on_downlink`` is the same entry
point a class C window uses). The display command comes from the rules' ``DisplayUpdate``, as
a bike aggregate sends it.

Expected values are computed here from the simulated world with the physics of the shims: the
ADC quantises to 1/65535 of 3.3 V; LAeq is the energy mean (research/domain.md §2.3); LA90 the
0.5 dB bin holding the 10th-percentile sample (firmware/nodes/noise.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.codec.profile import Profile
from gateway.config import LorawanSection
from gateway.errors import EncodeError
from gateway.lorawan.downlink import DownlinkScheduler
from gateway.lorawan.join import JoinAccepted, JoinServer
from gateway.messages import DevEui, RadioFrame, UplinkData
from gateway.rules.actions import DisplayUpdate
from tests.firmware.gateway_side import JOIN_EUI, GatewaySide, device_profile, otaa_device, run_scenario

DEADLINE_S = 30.0
MAX_LINES = 2000
ADC_FULL_MV = 3300

PROFILES = {
    "noise": "edgegw/noise",
    "water_level": "edgegw/water-level",
    "counter": "edgegw/counter",
    "lamp": "edgegw/lamp-controller",
    "display": "edgegw/display",
}
DEV_EUIS = {name: f"70b3d57ed00020{n:02x}" for n, name in enumerate(PROFILES)}
APP_KEYS = {name: bytes(range(n, n + 16)).hex() for n, name in enumerate(PROFILES)}

# Noise: 1 sample/s, 120 s reports, early report once the running LAeq reaches 70 dB(A) after 30 s.
QUIET = [55.3, 61.8, 58.1, 52.7, 66.2]
LOUD = [78.2, 74.6, 81.3]
NOISE_STEPS: list[dict[str, Any]] = [
    {"levels_db": QUIET, "samples": 150},  # first at 30 s, then a 120 s interval
    {"levels_db": LOUD, "samples": 150},  # loud: early at 30 s, then an interval (still loud: no 2nd early)
    {"levels_db": QUIET, "samples": 120},  # quiet interval: a loud episode may come again
]
# Water level: 0-5000 mm probe; depth -> loop current 4 + 16 x depth / 5000 mA.
RANGE_MM = 5000
WATER_STEPS: list[dict[str, Any]] = [
    {"elapsed_s": 0, "sim": {"depth_mm": 1200, "temperature_c": 14.0}},  # first
    {"elapsed_s": 300, "sim": {"depth_mm": 1220}},  # nothing
    {"elapsed_s": 300, "sim": {"depth_mm": 1300}},  # +80 mm in one measurement: rising
    {"elapsed_s": 300, "sim": {"depth_mm": 1320, "probe": False}},  # nothing (no temperature probe)
    {"elapsed_s": 300, "sim": {"loop_ma": 1.5}},  # wire break: fault
    {"elapsed_s": 300, "sim": {"depth_mm": 1340, "probe": True}},  # recovered: fault cleared
    {"elapsed_s": 900, "sim": {"depth_mm": 1350, "temperature_c": 13.5}},  # interval
]
COUNTER_STEPS: list[dict[str, Any]] = [
    {"elapsed_s": 0, "in": 3, "out": 0},  # first (restarted)
    {"elapsed_s": 600, "in": 10, "out": 4, "near_wrap": True},  # not due; the IRQ counters wrap
    {"elapsed_s": 300, "in": 5, "out": 6, "bounces": 3},  # interval; bounces are not passages
    {"elapsed_s": 900, "in": 0, "out": 1},  # interval
]
LAMP_STEPS = [
    {"elapsed_s": 0, "meter_pulses": 0},  # first: off -> gateway sends set_dim 40
    {"elapsed_s": 60, "meter_pulses": 1},  # command report: on at 40 % -> switch off
    {"elapsed_s": 120, "meter_pulses": 1},  # command report: off -> switch on
    {"elapsed_s": 900, "meter_pulses": 9},  # command report: on at 40 % again -> set_interval 600
    {"elapsed_s": 600, "meter_pulses": 6},  # command report (interval changed)
    {"elapsed_s": 300, "meter_pulses": 3},  # not due
    {"elapsed_s": 300, "meter_pulses": 3},  # interval (600 s)
]
DISPLAY_STEPS = [
    {"elapsed_s": 0, "sim": {"mains": True}},  # first heartbeat -> gateway sends show_counts
    {"elapsed_s": 3600, "sim": {}},  # interval heartbeat shows them -> show_count_line 0
    {"elapsed_s": 60, "sim": {"mains": False}},  # mains lost
]
# (node, n-th uplink of that node, 1-based) -> the command the gateway queues after it.
COMMANDS: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {
    # set_interval after each node's last report: obeyed, seen in the node's config at the end.
    ("noise", 5): ("set_interval", {"seconds": 300}),
    ("water_level", 5): ("set_interval", {"seconds": 120}),
    ("counter", 3): ("set_interval", {"seconds": 600}),
    ("lamp", 1): ("set_dim", {"percent": 40}),
    ("lamp", 2): ("switch", {"state": "off"}),
    ("lamp", 3): ("set_dim_level", {"level_pct": 40}),
    ("lamp", 4): ("set_interval", {"seconds": 600}),
    ("display", 2): ("show_count_line", {"line": 0, "value": 1300}),
}
DISPLAY_UPDATE = DisplayUpdate(DEV_EUIS["display"], "show_counts", today=1234, year=456789, at_s=0.0)

ARGS: dict[str, dict[str, Any]] = {
    name: {
        "otaa": {"dev_eui": DEV_EUIS[name], "join_eui": JOIN_EUI, "app_key": APP_KEYS[name]},
        "battery_mv": 3000 + 100 * n,
    }
    for n, name in enumerate(PROFILES)
}
ARGS["noise"] |= {
    "config": {"report_interval_s": 120, "loud_laeq_db": 70.0, "loud_min_s": 30},
    "steps": NOISE_STEPS,
}
ARGS["water_level"] |= {
    "config": {"report_interval_s": 900, "measure_interval_s": 300, "rise_mm": 50},
    "range_mm": RANGE_MM,
    "steps": [
        {
            "elapsed_s": s["elapsed_s"],
            "sim": {k: v for k, v in s["sim"].items() if k != "depth_mm"}
            | ({"loop_ma": 4 + 16 * s["sim"]["depth_mm"] / RANGE_MM} if "depth_mm" in s["sim"] else {}),
        }
        for s in WATER_STEPS
    ],
}
ARGS["counter"] |= {"config": {"report_interval_s": 900}, "steps": COUNTER_STEPS}
ARGS["lamp"] |= {"config": {"report_interval_s": 900, "wh_per_pulse": 1.0}, "steps": LAMP_STEPS}
ARGS["display"] |= {"config": {"report_interval_s": 3600}, "steps": DISPLAY_STEPS}


@dataclass
class Gateway(GatewaySide):
    """Profiles and the DownlinkScheduler: each node's commands, answered in RX1 after its uplinks."""

    profiles: dict[str, Profile] = field(kw_only=True)
    scheduler: DownlinkScheduler | None = None
    uplinks: dict[str, list[UplinkData]] = field(default_factory=lambda: defaultdict(list))
    sent: dict[str, list[tuple[str, bytes]]] = field(default_factory=lambda: defaultdict(list))
    joins: int = 0

    def __post_init__(self) -> None:
        self.scheduler = DownlinkScheduler(LorawanSection(), self.sessions)
        self._names = {DevEui.from_hex(eui): name for name, eui in DEV_EUIS.items()}

    def join(self, frame: RadioFrame) -> JoinAccepted:
        self.joins += 1
        return super().join(frame)

    def uplink(self, up: UplinkData) -> bytes | None:
        name = self._names[up.dev_eui]
        self.uplinks[name].append(up)
        command = COMMANDS.get((name, len(self.uplinks[name])))
        if name == "display" and len(self.uplinks[name]) == 1:
            request = DISPLAY_UPDATE.as_downlink()  # what the rules engine's bike aggregate emits
            command = (request.command, dict(request.params))
        if command is None:
            return None
        encoded = self.profiles[name].encode(command[0], command[1])
        assert self.scheduler is not None
        self.scheduler.enqueue(up.dev_eui, encoded.fport, encoded.payload)
        plan = self.scheduler.on_uplink(up)
        assert plan is not None and plan.rx1 is not None
        self.sent[name].append((command[0], encoded.payload))
        return plan.phy_payload


@dataclass
class Run:
    gateway: Gateway
    events: list[dict[str, Any]]
    elapsed_s: float

    def of(self, node: str, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("node") == node and e["event"] == name]

    def reports(self, node: str) -> list[dict[str, Any]]:
        return [e for e in self.of(node, "report") if e["reason"] is not None]

    def decoded(self, node: str, params: dict[str, float] | None = None) -> list[dict[str, Any]]:
        profile = self.gateway.profiles[node]
        return [
            profile.decode(u.fport or 0, u.payload, params or {}).data for u in self.gateway.uplinks[node]
        ]


@pytest.fixture(scope="module")
def run() -> Run:
    devices = [otaa_device(DEV_EUIS[name], APP_KEYS[name], pid) for name, pid in PROFILES.items()]
    profiles = {name: device_profile(pid) for name, pid in PROFILES.items()}
    gateway = Gateway(JoinServer(LorawanSection(), devices), profiles=profiles)
    events, elapsed_s = run_scenario(
        "scenario_nodes.py", ARGS, gateway, deadline_s=DEADLINE_S, max_lines=MAX_LINES
    )
    return Run(gateway, events, elapsed_s)


def _adc_mv(mv: float) -> float:
    """What the firmware reads back through the shimmed 16-bit ADC for ``mv`` at the pin."""
    return max(0, min(65535, int(mv * 65535 / ADC_FULL_MV + 0.5))) * ADC_FULL_MV / 65535


def _battery_mv(node: str) -> int:
    # 1:1 divider: the pin sees half; the firmware doubles it back (sensors/battery.py).
    return int(_adc_mv(ARGS[node]["battery_mv"] / 2) * 2 + 0.5)


def _with_battery(node: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` as the node's profile decodes its uplinks: each with the node's battery voltage."""
    return [row | {"battery_voltage": _battery_mv(node)} for row in rows]


def test_all_five_nodes_join_in_one_micropython_run(run: Run) -> None:
    assert run.gateway.joins == 5
    for name in PROFILES:
        (joined,) = run.of(name, "joined")
        session = run.gateway.sessions.by_dev_eui(DevEui.from_hex(DEV_EUIS[name]))
        assert session is not None and joined["ok"]
        assert joined["dev_addr"] == session.dev_addr.value.hex()
    assert run.elapsed_s < DEADLINE_S


def test_every_uplink_is_accepted_in_order_with_the_node_counter(run: Run) -> None:
    for name in PROFILES:
        reports = run.reports(name)
        ups = run.gateway.uplinks[name]
        assert len(ups) == len(reports) > 0
        assert [u.fcnt for u in ups] == [r["fcnt"] for r in reports] == list(range(len(ups)))
        assert {u.fport for u in ups} == {10}


def _noise_expected(levels: list[float]) -> dict[str, Any]:
    measured = [_adc_mv(level / 50.0 * 1000) * 50.0 / 1000 for level in levels]
    laeq = 10 * math.log10(sum(10 ** (m / 10) for m in measured) / len(measured))
    ranked = sorted(measured)[len(measured) * 10 // 100]
    return {
        "laeq": laeq,
        "lamax": max(measured),
        "la90": math.floor(ranked / 0.5) * 0.5,
        "period": len(levels),
    }


def test_noise_reports_laeq_lamax_la90_and_an_early_loud_report(run: Run) -> None:
    samples = [
        step["levels_db"][i % len(step["levels_db"])] for step in NOISE_STEPS for i in range(step["samples"])
    ]
    reports = run.reports("noise")
    # 30 s first; 120 s interval; loud reached after 30 s -> early; 120 s interval still loud (no
    # second early report); 120 s quiet interval.
    assert [r["reason"] for r in reports] == ["first", "interval", "loud", "interval", "interval"]
    assert [r["last_sample"] for r in reports] == [29, 149, 179, 299, 419]
    decoded = run.decoded("noise")
    start = 0
    for report, data in zip(reports, decoded, strict=True):
        want = _noise_expected(samples[start : report["last_sample"] + 1])
        start = report["last_sample"] + 1
        assert data["laeq"] == pytest.approx(want["laeq"], abs=0.06)
        assert data["lamax"] == pytest.approx(want["lamax"], abs=0.06)
        assert data["la90"] == want["la90"]
        assert data["period"] == want["period"]
        assert data["loud"] is (want["laeq"] >= 70.0)
        assert data["battery_voltage"] == _battery_mv("noise")
    # An energy mean, not an arithmetic one: one loud block dominates.
    assert decoded[2]["laeq"] > sum(LOUD) / len(LOUD)
    (config,) = run.of("noise", "config")
    assert config["config"]["report_interval_s"] == 300


def test_water_level_reports_depth_stage_and_early_on_a_rise_or_fault(run: Run) -> None:
    reports = [r for r in run.of("water_level", "report")]
    assert [r["reason"] for r in reports] == ["first", None, "rising", None, "fault", "fault", "interval"]
    # The probe's loop supply is switched off again after each measurement.
    assert {r["loop_power"] for r in reports} == {0}
    world: dict[str, Any] = {"probe": True}
    expected = []
    for step, report in zip(WATER_STEPS, reports, strict=True):
        world.update(step["sim"])
        if step["sim"].get("loop_ma") is not None:
            world["depth_mm"] = None
        if report["reason"] is not None:
            expected.append(dict(world))
    decoded = run.decoded("water_level", {"probe_level_mm": 10000.0})
    assert len(decoded) == len(expected)
    for data, world_then in zip(decoded, expected, strict=True):
        assert data["battery_voltage"] == _battery_mv("water_level")
        assert data["temperature"] == (
            round(world_then["temperature_c"] * 16) / 16 if world_then["probe"] else -327.68
        )
        if world_then["depth_mm"] is None:
            assert data["probe_fault"] is True and "water_depth" not in data and "water_stage" not in data
        else:
            assert data["probe_fault"] is False
            assert abs(data["water_depth"] - world_then["depth_mm"]) <= 1
            assert data["water_stage"] == 10000 + data["water_depth"]
    assert [d["rising"] for d in decoded] == [False, True, False, False, False]
    (config,) = run.of("water_level", "config")
    assert config["config"]["report_interval_s"] == 120 and config["sleep_s"] == 120


def test_counter_counts_per_direction_with_totals_wraps_and_debounce(run: Run) -> None:
    assert [r["reason"] for r in run.of("counter", "report")] == ["first", None, "interval", "interval"]
    assert run.decoded("counter") == _with_battery(
        "counter",
        [
            {"restarted": True, "count_in": 3, "count_out": 0, "total_in": 3, "total_out": 0},
            # Between the two reports the IRQ counters wrapped at 2^30 and the in-total at 2^32
            # (set to 2^32 - 4 by the scenario): 15 passages in, 10 out, the 3 bounces not counted.
            {"restarted": False, "count_in": 15, "count_out": 10, "total_in": 11, "total_out": 10},
            {"restarted": False, "count_in": 0, "count_out": 1, "total_in": 11, "total_out": 11},
        ],
    )
    (config,) = run.of("counter", "config")
    assert config["config"]["report_interval_s"] == 600


def test_lamp_controller_obeys_gateway_commands_and_reports_its_new_state(run: Run) -> None:
    gw = run.gateway
    assert [c for c, _ in gw.sent["lamp"]] == ["set_dim", "switch", "set_dim_level", "set_interval"]
    reports = run.of("lamp", "report")
    assert [r["reason"] for r in reports] == [
        "first",
        "command",
        "command",
        "command",
        "command",
        None,
        "interval",
    ]
    decoded = run.decoded("lamp")
    assert [(d["relay_on"], d["dim_level"], d["commanded"]) for d in decoded] == [
        (False, 0, False),
        (True, 40, True),  # set_dim 40
        (False, 0, True),  # switch off
        (True, 40, True),  # set_dim_level 40 (the lighting rules' names)
        (True, 40, True),  # set_interval 600
        (True, 40, False),
    ]
    # Power from S0 pulses (1 Wh each) over the time between measurements; energy is their total.
    assert [d["power"] for d in decoded] == [0, 60.0, 30.0, 36.0, 36.0, 36.0]
    assert [d["energy"] for d in decoded] == [0, 1, 2, 11, 17, 23]
    # What the firmware drove after each cycle (the command received in its RX1 already applied):
    # relay GPIO level and PWM duty (40 % of 65535).
    assert [(r["relay"], r["duty"]) for r in reports if r["reason"]] == [
        (1, 26214),
        (0, 0),
        (1, 26214),
        (1, 26214),
        (1, 26214),
        (1, 26214),
    ]
    (config,) = run.of("lamp", "config")
    assert config["config"]["report_interval_s"] == 600


def test_display_shows_what_the_rules_send(run: Run) -> None:
    gw = run.gateway
    assert [c for c, _ in gw.sent["display"]] == ["show_counts", "show_count_line"]
    assert gw.sent["display"][0][1].hex() == "11000004d20006f855"
    (ready,) = run.of("display", "display_ready")
    assert ready["lines"] == [" " * 8, " " * 8]  # initialised, blank
    reports = run.of("display", "report")
    assert [r["reason"] for r in reports] == ["first", "interval", "mains"]
    # The LED chips, as the MAX7219 model latched them from the SPI bytes, after each cycle.
    assert [r["lines"] for r in reports] == [
        ["    1234", "  456789"],
        ["    1300", "  456789"],
        ["    1300", "  456789"],
    ]
    assert run.decoded("display") == _with_battery(
        "display",
        [
            {"on_mains": True, "shown_line_0": 0xFFFFFFFF, "shown_line_1": 0xFFFFFFFF},
            {"on_mains": True, "shown_line_0": 1234, "shown_line_1": 456789},
            {"on_mains": False, "shown_line_0": 1300, "shown_line_1": 456789},
        ],
    )


def test_display_profile_refuses_what_the_totem_cannot_show() -> None:
    profile = device_profile("edgegw/display")
    with pytest.raises(EncodeError):
        profile.encode("show_counts", {"today": 10_000_000, "year": 1})
    with pytest.raises(EncodeError):
        profile.encode("show_count_line", {"line": 2, "value": 1})
