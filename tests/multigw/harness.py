"""The multi-gateway harness of the tests: a city heard by several real agents, and what it proves.

Owns the test city (``OVERLAP_DOC``: three gateways, 20 ABP containers heard by one, two or three
of them with different RSSI, some confirmed uplinks, 3 OTAA noise sites heard by two), a rules file
whose alerts fire in that city, the run (``run_overlap``: three ``edgegw run`` processes through
``simulator.gatewaylab``, on the caller's broker) and the readings of its result the truths need:
which gateways heard each accepted frame (the truth) against which published it (the broker), the
downlinks each uplink drew and the join-accepts each OTAA device got (which gateways transmitted).

The next steps of issue 21 (roles, the coordinator, the join announcements) reuse it: give
``run_overlap`` their config lines and read the same result.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.errors import FrameError, InputError
from gateway.lorawan import phy
from simulator.city import build_fleet
from simulator.gatewaylab import ConfigLines, GatewaysResult, best_homes, heard_by, run_gateways
from simulator.scenario import Scenario, parse_scenario

OVERLAP_DOC: Final[dict[str, Any]] = {
    "name": "overlap",
    "seed": 7,
    "duration": "6h",
    # 3,600 simulated s per wall s: 6 h in 6 s of frames, 0.5 s of wall time between a device's frames.
    "speed": 3600,
    "gateways": 3,  # gw-1 at the location, gw-2 3 km north, gw-3 3 km south (simulator.coverage)
    # Dense urban path loss with mild shadowing: seed 7 puts 6 devices in reach of one gateway, 8 of
    # two, 6 of all three (test_coverage_overlaps checks it).
    "radio": {"path_loss_exponent": 3.8, "shadowing_db": 4},
    "confirmed": {"kinds": ["container"], "share": 0.15, "retries": 0},
    "otaa": ["noise"],  # joined through their home; the witnesses learn the session from its announcement
    "fleet": {
        "containers": {
            "count": 20,
            "report_interval": "30m",
            "empty_mm": [1800, 2000],
            "fill_mm_per_day": [2500, 3500],  # fast enough to cross the rules' threshold in 6 h
            "collection": {"hour": 4, "stagger": "2m"},
        },
        # After the containers, so their keys, positions and links stay those of seed 7.
        "noise": {"sites": {"road": 3}, "report_interval": "30m"},
    },
}

RULES_TEXT: Final = """\
schema_version: 1
rules:
  - id: container-half
    devices: {profiles: [milesight/em310-udl]}
    when: {threshold: {value: fill_level, above: 40, clear_below: 20}}
    severity: warning
    message: container half full
"""


def overlap_scenario(**changes: Any) -> Scenario:
    """The test city, with top-level keys of the scenario file replaced by ``changes``."""
    doc = copy.deepcopy(OVERLAP_DOC)
    doc.update(changes)
    return parse_scenario(doc, "overlap.yaml")


def run_overlap(
    workdir: Path,
    broker: tuple[str, int],
    *,
    scenario: Scenario | None = None,
    config_lines: ConfigLines | None = None,
    rules: bool = True,
    homes: bool = True,
) -> GatewaysResult:
    """The test city through real agents (one per gateway), one broker, the rules of ``RULES_TEXT``;
    ``homes``: the registry names each device's home, the gateway that hears it best."""
    rules_file = None
    if rules:
        rules_file = workdir / "rules.yaml"
        workdir.mkdir(parents=True, exist_ok=True)
        rules_file.write_text(RULES_TEXT)
    return run_gateways(
        scenario or overlap_scenario(),
        workdir,
        broker,
        rules_file=rules_file,
        config_lines=config_lines,
        drain_timeout_s=30.0,
        homes=homes,
    )


def published_by(result: GatewaysResult) -> dict[tuple[str, int], list[str]]:
    """(DevEUI, FCnt) -> the gateways that published a reading of it (one entry per copy)."""
    out: dict[tuple[str, int], list[str]] = defaultdict(list)
    gateway_of = iter(g for g, leaf, _ in result.origins if leaf == "up")
    for record in result.records:  # records and "up" origins are appended together, in the same order
        gateway = next(gateway_of)
        if record.get("fcnt") is not None:
            out[(str(record["dev_eui"]), int(record["fcnt"]))].append(gateway)
    return dict(out)


def heard(result: GatewaysResult) -> dict[tuple[str, int], frozenset[str]]:
    """(DevEUI, FCnt) of every frame to accept -> the gateways that heard it (the truth)."""
    return heard_by(result.truth_file)


@dataclass(frozen=True, slots=True)
class Opportunity:
    """An uplink after which at least one gateway transmitted to its device."""

    device: str
    fcnt: int
    transmissions: tuple[str, ...]
    """The gateways that transmitted to the device after that uplink (one entry per frame)."""
    heard_by: frozenset[str]


def downlink_opportunities(result: GatewaysResult, scenario: Scenario) -> list[Opportunity]:
    """Every downlink the agents sent, grouped by the uplink of its device that preceded it."""
    fleet = build_fleet(scenario)
    by_addr = {d.device.dev_addr: d for d in fleet}
    truth = heard(result)
    groups: dict[tuple[str, int], list[str]] = defaultdict(list)
    for gateway, data, fcnt in result.transmissions:
        try:
            frame = phy.parse(data)
        except FrameError:
            continue
        if not isinstance(frame, phy.DataFrame) or frame.uplink:
            continue
        device = by_addr.get(frame.dev_addr)
        if device is not None and fcnt is not None:
            groups[(device.name, fcnt)].append(gateway)
    names = {d.name: d.device.dev_eui.hex() for d in fleet}
    return [
        Opportunity(name, fcnt, tuple(gws), truth.get((names[name], fcnt), frozenset()))
        for (name, fcnt), gws in sorted(groups.items())
    ]


def join_accepts(result: GatewaysResult, scenario: Scenario) -> dict[str, list[str]]:
    """OTAA device name -> the gateways that sent it a join-accept (one entry per frame), found by
    opening each join-accept with each device's AppKey (only its own opens it: the MIC)."""
    keys = [(d.name, d.otaa.app_key) for d in build_fleet(scenario) if d.otaa is not None]
    out: dict[str, list[str]] = {name: [] for name, _ in keys}
    for gateway, data, _ in result.transmissions:
        try:
            frame = phy.parse(data)
        except FrameError:
            continue
        if not isinstance(frame, phy.JoinAccept):
            continue
        for name, app_key in keys:
            try:
                phy.open_join_accept(frame, app_key)
            except InputError:
                continue
            out[name].append(gateway)
            break
    return out


def device_names(result: GatewaysResult) -> dict[str, str]:
    """DevEUI (hex) -> device name, from the truth file's header."""
    with result.truth_file.open(encoding="utf-8") as lines:
        header = json.loads(next(lines))
    return {str(d["dev_eui"]): str(d["device"]) for d in header["devices"]}


def homes(result: GatewaysResult) -> dict[str, str]:
    """Device name -> its home gateway, as the run's registry named it (``gatewaylab.best_homes``)."""
    return best_homes(result.coverage, result.gateways)
