"""ADR through the real agent in a simulated city (issue 20): scenario ``radio: {adr: true}``.

The devices follow the network's MAC (``simulator.device_mac``: the firmware's LinkADRReq handling)
and start untuned at DR0 (SF12) on links far better than SF12 needs (path loss exponent 2, no
shadowing: the SNR saturates near +10 dB, 30 dB over SF12's -20 dB floor). The agent runs as a
process on the simulated clock behind Semtech UDP, as in test_city.py (``simulator.citylab``); its
ADR keeps the last 20 uplinks of each device and then asks for the rate the margin allows: +10 dB
- (-20 dB) - 10 dB installation margin = 20 dB, 6 steps of 3 dB: DR0 -> DR5 (SF7), then a lower TX
power. What the agent published shows it: each device's uplinks reach the broker at SF12, then at
SF7 from the uplink after its LinkADRReq on.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from gateway.config import LorawanSection
from simulator.city import build_fleet
from simulator.citylab import run_city
from simulator.scenario import parse_scenario
from tests.conftest import Broker

ADR_CITY: dict[str, Any] = {
    "name": "adr-city",
    "seed": 20,
    "duration": "8h",  # 32 reports of each container: the decision after 20, room to see it hold
    "radio": {"adr": True, "path_loss_exponent": 2.0, "shadowing_db": 0},
    "fleet": {"containers": {"count": 3, "report_interval": "15m"}},
}
SPEED = 1500.0
"""Simulated seconds per wall second: a device's uplinks 0.6 s of wall time apart. The agent answers an
uplink once its de-duplication window (200 ms of wall time) has passed; as fast as the agent
acknowledges (test_city.py's 1e9), a device's next uplinks would go before that answer came back,
which no class A device does (its receive windows close 2 s after its uplink). 19 s of wall time."""
WITHIN_UPLINKS = 25
"""The brief's bound: the history of 20 uplinks, the LinkADRReq after the 20th, a few for the way down."""


def test_radio_adr_gives_every_device_the_firmware_mac_untuned() -> None:
    fleet = build_fleet(parse_scenario(ADR_CITY, "adr-city.yaml"))
    assert all(d.mac is not None for d in fleet)
    assert {(d.tx_sf, d.mac.tx_power_dbm, d.mac.nb_trans) for d in fleet if d.mac} == {(12, 14, 1)}
    # It knows the agent's channels: a LinkADRReq enabling them (ChMask 0x00FF) is applied, not refused.
    assert {d.mac.ch_mask for d in fleet if d.mac} == {0xFF}
    known = {tuple(ch[0] for ch in d.mac.state.channels[3:8]) for d in fleet if d.mac}
    assert known == {LorawanSection().cflist}
    plain = build_fleet(parse_scenario({**ADR_CITY, "radio": {"path_loss_exponent": 2.0}}, "plain.yaml"))
    assert all(d.mac is None for d in plain) and {d.tx_sf for d in plain} == {7}


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_devices_at_sf12_with_good_links_are_moved_to_dr5_by_the_agent(
    tmp_path: Path, mosquitto: Broker
) -> None:
    scenario = parse_scenario(ADR_CITY, "adr-city.yaml")
    result = run_city(scenario, tmp_path / "adr", (mosquitto.host, mosquitto.port), speed=SPEED)
    detail = "\n".join(result.agent_log[-15:])
    assert result.comparison.ok, (result.comparison.as_json(), detail)
    sfs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for record in result.records:
        if record.get("fcnt") is not None:
            sfs[record["dev_eui"]].append((record["fcnt"], record["rx"]["sf"]))
    assert len(sfs) == 3 and result.summary.downlinks >= 3, detail
    for dev_eui, heard in sfs.items():
        by_fcnt = [sf for _, sf in sorted(set(heard))]
        moved = by_fcnt.index(7) if 7 in by_fcnt else None
        print(f"{dev_eui}: {len(by_fcnt)} uplinks, SF7 from uplink {moved} on")
        assert by_fcnt[0] == 12, (dev_eui, by_fcnt)
        assert moved is not None and moved <= WITHIN_UPLINKS, (dev_eui, by_fcnt)
        # Once moved, it stays at SF7 (the agent does not lower the rate of a good link again).
        assert set(by_fcnt[moved:]) == {7}, (dev_eui, by_fcnt)
