"""A day of a small city through the real agent and a real mosquitto, checked against the truth.

The agent runs as a process on the simulated clock (simulator/simclock.py); two packet
forwarders hear most frames (the agent's de-duplication must keep one), some frames are lost
on the air, some copies arrive with a failed CRC. What reaches the broker must equal the
ground truth computed from the devices' own values: frames per device, the alerts of the
predictable rules (raised and cleared, at the reading that caused them), the daily Lden of
every noise site within 0.1 dB and the daily passages of every counter.
Rules: simulator/scenarios/first-deployment-rules.yaml. Physics: tests/simulator/test_models.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from simulator.citylab import run_city
from simulator.scenario import load_scenario, parse_scenario
from tests.conftest import Broker

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "simulator" / "scenarios" / "first-deployment-rules.yaml"
WEEK = ROOT / "simulator" / "scenarios" / "first-deployment-week.yaml"

CITY_DAY: dict[str, Any] = {
    "name": "city-day",
    "seed": 7,
    "duration": "1d2h",  # the extra hours close day 0 (Lden, passages) with each site's next report
    "otaa": ["noise", "pedestrian", "lamp"],  # these join first; containers, rivers... are ABP
    "radio": {"forwarders": 2, "loss": 0.1, "crc_errors": 0.02, "retransmissions": 0.005},
    "fleet": {
        "containers": {
            "count": 8,
            "report_interval": "2h",
            "fill_mm_per_day": [600, 900],
            "collection": {"hour": 16},
        },
        "rivers": {
            "count": 2,
            "base_cm": [10, 30],
            "flood": {"start": "10h", "rise_cm_per_15min": [30, 40], "peak_rise_cm": 200, "recession": "2h"},
        },
        "noise": {"sites": {"road": 2, "residential": 1, "nightlife": 1}},
        "counters": {"bikes": {"count": 1}, "pedestrians": {"count": 1}},
        "lighting": {"communes": [{"name": "test", "cabinets": 1, "lamps_per_cabinet": 4}]},
    },
    "faults": [
        {"at": "1h", "kind": "lamp_failure", "device": "lamp-test-1-2"},
        {"at": "2h", "kind": "circuit_loss", "device": "cabinet-test-1", "duration": "2h"},
        {"at": "8h", "kind": "bad_mic", "count": 2},
        {"at": "9h", "kind": "garbage", "count": 3},
        {"at": "9h30m", "kind": "replay", "device": "noise-1"},
        # The gateway's clock runs an hour ahead for two hours: it files readings by its own clock.
        {"at": "13h", "kind": "clock_jump", "jump_s": 3600, "duration": "2h"},
    ],
}


def test_the_first_deployment_week_loads() -> None:
    week = load_scenario(WEEK)
    names = week.device_names()
    assert week.duration_s == 7 * 86_400 and week.radio.forwarders == 2
    assert sum(n.startswith("container-") for n in names) == 100
    assert sum(n.startswith("noise-") for n in names) == 10
    assert sum(n.startswith("river-") for n in names) == 6 and len(week.rivers) == 2
    assert sum(n.startswith(("bike-", "pedestrian-")) for n in names) == 6
    assert {n.split("-")[1] for n in names if n.startswith("cabinet-")} == {"allauch", "cassis"}


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_a_city_day_through_the_agent_matches_the_ground_truth(tmp_path: Path, mosquitto: Broker) -> None:
    scenario = parse_scenario(CITY_DAY, "city-day.yaml")
    result = run_city(
        scenario,
        tmp_path / "city",
        (mosquitto.host, mosquitto.port),
        rules_file=RULES,
        speed=1e9,  # as fast as the agent acknowledges: the clock is driven frame by frame
    )
    check, summary = result.comparison, result.summary
    expected = summary.expected
    assert expected is not None
    detail = "\n".join(result.agent_log[-15:])
    assert check.ok, (check.as_json(), detail)

    # The run exercised what it claims to: duplicates, losses, CRC errors, refusals.
    assert summary.no_push_acks == 0 and summary.controls["clock_jump"] == 1
    assert summary.joins == 4 + 1 + 4 and summary.frames["join"] >= summary.joins  # a lost join is retried
    assert summary.datagrams > 1.5 * sum(summary.expect.values())  # most frames heard twice
    assert summary.crc_error_copies > 0 and summary.expect["lost"] > 0
    # Bad MICs, garbage, the replay, and the second copies of NbTrans-2 frames whose first was heard.
    copies = summary.frames["retransmission"]
    assert copies >= 3 and summary.expect["refused"] + summary.expect["lost"] >= 2 + 3 + copies
    assert check.duplicates == 0 and check.frames_received == sum(expected.counts.values()) > 1000

    # Alerts from the physics, each edge at the reading that caused it (compare() checks times).
    edges = Counter((a.rule, a.state) for a in expected.alerts)
    physics = ("container-tilted", "container-full", "river-flood", "river-rising", "noise-loud")
    for rule in (*physics, "circuit-loss"):
        assert edges[(rule, "raised")] >= 1 and edges[(rule, "cleared")] >= 1, (rule, edges)
    assert edges[("lamp-failure", "raised")] >= 1
    assert expected.unpredicted_rules == []  # every rule is predicted, tick-driven ones in a window

    # Daily Lden of every noise site (4) and passages of every counter (2) for day 0.
    assert check.lden_checked == 4 and check.lden_max_error_db <= 0.1
    assert check.passages_checked == 2


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_frames_acknowledged_before_a_kill_9_reach_the_broker_after_the_restart(
    tmp_path: Path, mosquitto: Broker
) -> None:
    scenario = parse_scenario(
        {
            "name": "kill",
            "seed": 11,
            "duration": "12h",
            "fleet": {"containers": {"count": 10, "report_interval": "30m"}, "noise": {"sites": {"road": 2}}},
            "faults": [{"at": "6h", "kind": "gateway_kill", "duration": "1h"}],
        },
        "kill.yaml",
    )
    result = run_city(scenario, tmp_path / "kill", (mosquitto.host, mosquitto.port), speed=1e9)
    summary, check = result.summary, result.comparison
    assert summary.controls["gateway_kill"] == 1
    # Frames due while the agent was dead are lost (a packet forwarder keeps nothing) ...
    assert summary.expect["lost"] >= 10 and summary.no_push_acks == 0
    # ... every acknowledged one arrives, once per record id (a re-publish after the kill is allowed).
    assert check.count_mismatches == [] and check.unexpected_devices == []
    assert check.frames_received == summary.expect["accepted"] > 300


async def test_broker_outages_and_clock_jumps_run_at_their_simulated_times(tmp_path: Path) -> None:
    import asyncio

    from gateway.radio.semtech_udp.backend import SemtechUdpBackend
    from simulator.runner import Hooks, run
    from simulator.simclock import SharedClock, reader

    scenario = parse_scenario(
        {
            "name": "outage",
            "duration": "6h",
            "fleet": {"containers": {"count": 4, "report_interval": "15m"}},
            "faults": [
                {"at": "1h", "kind": "broker_outage", "duration": "2h"},
                {"at": "4h", "kind": "clock_jump", "jump_s": -600, "duration": "30m"},
            ],
        }
    )
    clock = SharedClock(tmp_path / "clock.bin", 1_000_000.0)
    seen_by_agent = reader(clock.path)
    calls: list[tuple[str, float]] = []
    hooks = Hooks(
        stop_broker=lambda: calls.append(("stop", seen_by_agent())),
        start_broker=lambda: calls.append(("start", seen_by_agent())),
    )
    backend = SemtechUdpBackend("127.0.0.1", 0)
    await backend.start()
    try:
        summary = await asyncio.to_thread(
            run, scenario, ("127.0.0.1", backend.bound_port), speed=1e9, clock=clock, hooks=hooks
        )
    finally:
        await backend.stop()
        clock.close()
    epoch = summary.expected.epoch_s if summary.expected else 0.0
    assert [c for c, _ in calls] == ["stop", "start"]
    assert calls[0][1] - epoch == pytest.approx(3600, abs=1)
    assert 3 * 3600 <= calls[1][1] - epoch <= 3 * 3600 + 15 * 60  # restored at the first event after 3 h
    assert summary.controls == {"broker_outage": 1, "clock_jump": 1}
    assert backend.counters["frames"] == summary.expect["accepted"] > 80
