"""The coverage model of several gateways (simulator/coverage.py) and the scenario's ``gateways`` key.

Pure: no agent, no broker. The runs through real agents are in tests/multigw/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from simulator import radio
from simulator.city import build_fleet, registration_csv
from simulator.coverage import coverage, hears, overlap_counts, roof_sites
from simulator.gatewaylab import best_homes, with_homes
from simulator.scenario import load_scenario, parse_scenario
from simulator.simclock import SharedClock, reader

ROOT = Path(__file__).resolve().parents[2]


def city(**top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "seed": 7,
        "duration": "2h",
        "gateways": 3,
        "radio": {"path_loss_exponent": 3.8, "shadowing_db": 4},
        "fleet": {"containers": {"count": 20}},
    }
    doc.update(top)
    return doc


def test_roof_sites_stand_on_a_ring_around_the_location() -> None:
    sites = roof_sites(4, 43.2965, 5.3698, spacing_m=2500.0)
    assert [s.gateway_id for s in sites] == ["gw-1", "gw-2", "gw-3", "gw-4"]
    assert (sites[0].lat_deg, sites[0].lon_deg) == (43.2965, 5.3698)
    for s in sites[1:]:
        assert radio.distance_m(43.2965, 5.3698, s.lat_deg, s.lon_deg) == pytest.approx(2500.0, rel=0.01)
    assert len({s.eui for s in sites}) == 4
    assert [int.from_bytes(s.eui) - int.from_bytes(sites[0].eui) for s in sites] == [0, 1, 2, 3]


def test_a_gateway_hears_a_device_above_the_floor_of_its_sf() -> None:
    at_floor_sf7 = radio.Link(radio.TX_POWER_DBM + radio.ANTENNA_GAINS_DB - radio.NOISE_FLOOR_DBM + 7.5)
    assert at_floor_sf7.snr_db == pytest.approx(-7.5)
    assert hears(at_floor_sf7, 7)
    assert not hears(radio.Link(at_floor_sf7.loss_db + 0.1), 7)
    assert hears(radio.Link(at_floor_sf7.loss_db + 10), 12)  # SF12 demodulates down to -20 dB


def test_each_device_has_one_link_per_gateway_and_overlap_exists() -> None:
    scenario = parse_scenario(city())
    assert scenario.radio.forwarders == 3 and scenario.radio.realistic
    fleet = build_fleet(scenario)
    assert all(len(d.links) == 3 for d in fleet)
    picture = coverage(fleet, scenario.gateways)
    assert overlap_counts(picture) == {1: 6, 2: 8, 3: 6}
    for entry in picture:  # heard by exactly those whose mean SNR is above the floor of its SF
        floor_db = radio.SNR_LIMIT_DB[entry.sf]
        ids = [
            g.gateway_id for g, snr in zip(scenario.gateways, entry.snr_db, strict=True) if snr >= floor_db
        ]
        assert list(entry.heard_by) == ids


def test_the_registry_names_each_device_home_the_gateway_that_hears_it_best() -> None:
    scenario = parse_scenario(city())
    fleet = build_fleet(scenario)
    picture = coverage(fleet, scenario.gateways)
    homes = best_homes(picture, scenario.gateways)
    for entry in picture:
        best = max(range(3), key=lambda k: entry.snr_db[k])
        assert homes[entry.device] == scenario.gateways[best].gateway_id
        assert homes[entry.device] in entry.heard_by
    text = with_homes(registration_csv(fleet), {fleet[0].device.dev_eui.hex(): "gw-2"})
    lines = text.splitlines()
    assert lines[0].endswith(",home_gateway")
    assert lines[1].endswith(",gw-2") and lines[2].endswith(",")


def test_gateways_listed_by_position_and_a_kill_of_one() -> None:
    scenario = load_scenario(ROOT / "simulator" / "scenarios" / "two-gateways.yaml")
    assert [g.gateway_id for g in scenario.gateways] == ["gw-north", "gw-south"]
    kill = next(f for f in scenario.faults if f.kind == "gateway_kill")
    assert kill.gateway == "gw-north"
    assert overlap_counts(coverage(build_fleet(scenario), scenario.gateways)) == {1: 4, 2: 14}


@pytest.mark.parametrize(
    ("change", "key_path", "reason"),
    [
        ({"gateways": 0}, "gateways", "must be >= 1"),
        ({"gateways": 17}, "gateways", "at most 16"),
        ({"gateways": "many"}, "gateways", "expected a number of gateways or a list"),
        ({"gateways": [{"id": "a/b", "lat": 43.3, "lon": 5.4}]}, "gateways[0].id", "letters, digits"),
        (
            {"gateways": [{"id": "gw-a", "lat": 43.3, "lon": 5.4}, {"id": "gw-a", "lat": 43.2, "lon": 5.4}]},
            "gateways[1].id",
            "listed twice",
        ),
        ({"gateways": [{"id": "gw-a", "lat": 43.3}]}, "gateways[0].lon", "missing required key"),
        ({"radio": {"forwarders": 2}}, "radio.forwarders", "each gateway is one forwarder"),
        (
            {"faults": [{"at": "1h", "kind": "gateway_kill", "gateway": "gw-9"}]},
            "faults[0].gateway",
            "expected one of",
        ),
        (
            {"gateways": None, "faults": [{"at": "1h", "kind": "gateway_kill", "gateway": "gw-1"}]},
            "faults[0].gateway",
            "unknown key",
        ),
    ],
)
def test_gateways_errors_name_the_key(change: dict[str, Any], key_path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario(city(**change), "city.yaml")
    assert caught.value.key_path == key_path
    assert reason in caught.value.reason


def test_a_gateway_clock_may_run_ahead_of_the_shared_one(tmp_path: Path) -> None:
    clock = SharedClock(tmp_path / "clock.bin", 1_780_000_000.0)
    try:
        assert reader(clock.path)() == 1_780_000_000.0
        assert reader(clock.path, 0.004)() == pytest.approx(1_780_000_000.004)
    finally:
        clock.close()
