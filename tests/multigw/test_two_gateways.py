"""The demo's two-gateway scenario through real agents: two gateways overlap, one dies, the other
carries on (simulator/scenarios/two-gateways.yaml, docs/simulator.md "Several gateways").

gw-north is killed (kill -9) at 6 h and stays dead to the end of the run. From then on what only it
heard is lost on the air (the truth says so), what both heard reaches the platform through gw-south
alone; before, every reading came once per gateway that heard it. Checked against the ground truth,
one copy per record id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from simulator.broker import Mosquitto, free_port
from simulator.city import epoch_s
from simulator.gatewaylab import GatewaysResult, heard_by, run_gateways
from simulator.scenario import Scenario, load_scenario
from tests.multigw.harness import device_names, published_by

SCENARIO = Path(__file__).resolve().parents[2] / "simulator" / "scenarios" / "two-gateways.yaml"
KILLED, SURVIVOR = "gw-north", "gw-south"


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(SCENARIO)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory, scenario: Scenario) -> Iterator[GatewaysResult]:
    workdir = tmp_path_factory.mktemp("two-gateways")
    broker = Mosquitto(free_port(), workdir / "mosquitto")
    broker.start()
    try:
        yield run_gateways(scenario, workdir, broker.address, speed=7200.0, drain_timeout_s=30.0)
    finally:
        broker.stop()


def _t_s(record: dict[str, object], scenario: Scenario) -> float:
    at = datetime.fromisoformat(str(record["received_at"]).replace("Z", "+00:00"))
    return at.timestamp() - epoch_s(scenario)


def test_the_survivor_carries_on_and_nothing_heard_is_lost(two: GatewaysResult, scenario: Scenario) -> None:
    c = two.comparison
    assert two.exit_codes == {KILLED: 0, SURVIVOR: 0}, {g: lines[-15:] for g, lines in two.agent_logs.items()}
    assert c.ok, c.as_json()
    kill_s = next(f.at_s for f in scenario.faults if f.kind == "gateway_kill")
    gateway_of = [g for g, leaf, _ in two.origins if leaf == "up"]
    after = {
        gateway: sum(
            _t_s(r, scenario) >= kill_s for g, r in zip(gateway_of, two.records, strict=True) if g == gateway
        )
        for gateway in (KILLED, SURVIVOR)
    }
    assert after[KILLED] == 0 and after[SURVIVOR] > 150, after
    # Every reading a live gateway heard reached the platform, from every gateway that heard it.
    expected = heard_by(two.truth_file)
    published = published_by(two)
    assert {k: sorted(v) for k, v in expected.items()} == {k: sorted(v) for k, v in published.items()}


def test_what_only_the_dead_gateway_heard_is_lost_on_the_air(two: GatewaysResult, scenario: Scenario) -> None:
    kill_s = next(f.at_s for f in scenario.faults if f.kind == "gateway_kill")
    alone = {e.device for e in two.coverage if e.heard_by == (KILLED,)}
    assert alone, "the scenario must have a device only the killed gateway hears"
    names = device_names(two)
    survivor = [g.gateway_id for g in two.gateways].index(SURVIVOR)
    lost_after = 0
    with two.truth_file.open(encoding="utf-8") as lines:
        for line in lines:
            if '"type": "frame"' not in line:
                continue
            frame = json.loads(line)
            if names[frame["dev_eui"]] in alone and frame["t_s"] >= kill_s:
                # Mostly lost; fading lets the survivor hear a frame now and then (below its mean floor).
                assert frame["expect"] == "lost" or {rx["forwarder"] for rx in frame["rx"]} == {survivor}
                lost_after += frame["expect"] == "lost"
    assert lost_after >= 5
