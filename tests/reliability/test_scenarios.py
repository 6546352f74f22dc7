"""Reliability on scenarios: broker outages and kill -9 of the agent in the middle of a city's
traffic, judged by the simulator's ground truth (simulator/truth.py) rather than by counting ids.

The agent is the real ``edgegw run`` on simulated time, the broker a real mosquitto that keeps
the subscriber's session across restarts (persistent), the subscriber durable (QoS 1, clean
session off). After each kill the database file must pass ``PRAGMA integrity_check`` before the
agent starts again. At the end the broker must hold every frame the truth says was accepted,
once per record id, the alerts of the predictable rules at the readings that caused them (a
flood alert raised while the broker was down included), and nothing else.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway import db
from simulator.citylab import run_city
from simulator.scenario import parse_scenario
from tests.reliability.conftest import PersistentBroker, integrity

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "simulator" / "scenarios" / "first-deployment-rules.yaml"

OUTAGES_AND_KILLS: dict[str, Any] = {
    "name": "outages-and-kills",
    "seed": 31,
    "duration": "14h",
    "otaa": ["noise"],
    "radio": {"forwarders": 2, "loss": 0.02, "crc_errors": 0.02},
    "fleet": {
        "containers": {"count": 10, "report_interval": "30m", "fill_mm_per_day": [900, 1200]},
        "rivers": {
            "count": 2,
            "report_interval": "15m",
            "flood_report_interval": "5m",
            "base_cm": [10, 20],
            # The flood rises while the broker is down: its alert is raised offline.
            "flood": {"start": "3h30m", "rise_cm_per_15min": 40, "peak_rise_cm": 220, "recession": "2h"},
        },
        "noise": {"sites": {"road": 1}, "report_interval": "15m"},
    },
    "faults": [
        {"at": "3h", "kind": "broker_outage", "duration": "3h"},
        {"at": "6h20m", "kind": "broker_outage", "duration": "10m"},  # while the backlog drains
        {"at": "8h", "kind": "gateway_kill", "duration": "30m"},
        {"at": "9h", "kind": "bad_mic", "count": 2},
        {"at": "10h", "kind": "gateway_kill", "duration": "20m"},
        {"at": "10h05m", "kind": "broker_outage", "duration": "1h"},  # the agent comes back to no broker
        {"at": "12h", "kind": "replay", "device": "river-1"},
    ],
}


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_outages_and_kills_lose_nothing_the_truth_says_was_accepted(
    tmp_path: Path, persistent_broker: PersistentBroker
) -> None:
    scenario = parse_scenario(OUTAGES_AND_KILLS, "outages-and-kills.yaml")
    workdir = tmp_path / "city"
    db_file = db.db_path(workdir / "data")
    checked: list[str] = []

    def after_kill(restarting: bool) -> None:
        if restarting:  # the agent is dead, not yet restarted
            checked.append(integrity(db_file))

    result = run_city(
        scenario,
        workdir,
        (persistent_broker.host, persistent_broker.port),
        rules_file=RULES,
        speed=6000,  # 14 h in ~8 s: the outages last long enough for the agent to notice them
        stop_broker=persistent_broker.stop_saving,
        start_broker=persistent_broker.start,
        on_gateway_kill=after_kill,
    )
    summary, check, expected = result.summary, result.comparison, result.summary.expected
    assert expected is not None
    assert check.ok, (check.as_json(), "\n".join(result.agent_log[-20:]))
    assert summary.controls == {"broker_outage": 3, "gateway_kill": 2}
    assert checked == ["ok", "ok"], "the database must be sound after every kill -9"

    # The run means something: frames due while the agent was dead were lost, the rest arrived.
    assert summary.expect["lost"] >= 5 and summary.no_push_acks == 0
    assert check.frames_received == sum(expected.counts.values()) > 250

    # The flood alert was raised while the broker was down (3 h - 6 h) and reached it before the
    # backlog of readings stamped after it.
    epoch = expected.epoch_s
    offline = [
        a
        for a in expected.alerts
        if a.rule == "river-flood" and a.state == "raised" and 3 * 3600 < a.t_s < 6 * 3600
    ]
    assert offline, [a for a in expected.alerts if a.rule == "river-flood"]
    first_alert = min(offline, key=lambda a: a.t_s)
    alert_id = next(
        str(r["id"])
        for r in result.alerts
        if (r.get("data") or {}).get("rule") == "river-flood"
        and abs(_unix(r["received_at"]) - epoch - first_alert.t_s) < 1
    )
    order: dict[str, int] = {}
    for i, (_leaf, rid) in enumerate(result.arrivals):
        order.setdefault(rid, i)  # the first delivery (a kill -9 may make a second one)
    later_readings = [
        order[str(r["id"])]
        for r in result.records
        if r.get("fcnt") is not None and first_alert.t_s < _unix(r["received_at"]) - epoch < 6 * 3600
    ]
    assert later_readings and order[alert_id] < min(later_readings)


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
