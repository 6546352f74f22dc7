"""``edgegw demo``: one simulated day of a small city through the real agent and a local broker.

Owns the choreography for a newcomer: a mosquitto of its own (``simulator.broker``), the
scenario ``simulator/scenarios/demo-day.yaml`` (containers, a river in flash flood, noise
sites, counters, a lighting cabinet and its lamps; forged, replayed and garbage frames, a
broker outage and a kill -9 of the agent) run by ``simulator.citylab`` with the agent on
simulated time, a progress line every few seconds, and at the end the comparison of what
reached the broker with the scenario's ground truth (exit 1 when they differ).

Every part is the real one: the mosquitto binary, ``edgegw run`` as a process, Semtech UDP
datagrams from two simulated packet forwarders, a paho subscriber.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from simulator.broker import Mosquitto, MosquittoMissing, free_port
from simulator.city import build_fleet, epoch_s
from simulator.citylab import GATEWAY_ID, CityResult, Collector, result_lines, run_city
from simulator.scenario import Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
DEMO_SCENARIO = SCENARIOS / "demo-day.yaml"
DEMO_RULES = SCENARIOS / "first-deployment-rules.yaml"


def _say(text: str) -> None:
    print(text, flush=True)


class _Narrator:
    """Prints the run as it goes: progress lines, the faults, what the agent logs."""

    def __init__(self, scenario: Scenario, epoch_s: float) -> None:
        self.zone = ZoneInfo(scenario.timezone)
        self.epoch_s = epoch_s
        self.alerts_seen = 0

    def progress(self, simulated_s: float, collector: Collector) -> None:
        records, alerts = collector.snapshot()
        when = datetime.fromtimestamp(self.epoch_s + simulated_s, self.zone).strftime("%a %H:%M")
        _say(
            f"sim   | {when} simulated: broker has {collector.frames()} readings, "
            f"{len(records) - collector.frames()} aggregates, {len(alerts)} alert records"
        )
        self.alerts(alerts)

    def alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Print the alerts not printed yet."""
        for alert in alerts[self.alerts_seen :]:
            data = alert.get("data") or {}
            where = alert.get("site") or alert.get("dev_eui")
            _say(f"alert | {data.get('rule')} {data.get('state')} on {where}")
        self.alerts_seen = len(alerts)

    @staticmethod
    def gateway_kill(over: bool) -> None:
        what = "gateway_kill over: agent restarted" if over else "gateway_kill: kill -9 of the agent"
        _say(f"fault | {what}")

    @staticmethod
    def agent_line(line: str) -> None:
        print(f"agent | {line}", flush=True)


def run_demo(duration_s: float = 30.0, workdir: str | None = None, scenario_file: Path | None = None) -> int:
    """Run the demo scenario in about ``duration_s`` wall seconds; 0 when the broker matches the truth."""
    scenario = load_scenario(scenario_file or DEMO_SCENARIO)
    speed = scenario.duration_s / max(duration_s, 1.0)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="edgegw-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(free_port(), work / "mosquitto", persistent=True)
    try:
        broker.start()
    except MosquittoMissing as exc:
        raise SystemExit(f"edgegw demo: {exc} (make demo installs it)") from exc
    fleet = build_fleet(scenario)
    kinds = Counter(d.kind for d in fleet)
    _say(f"edgegw demo: working directory {work}")
    _say(
        f"scenario {scenario.name}: {scenario.duration_s / 3600:.0f} simulated hours in ~{duration_s:.0f} s "
        f"(x{speed:.0f}); {len(fleet)} devices: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    )
    _say(f"mosquitto on 127.0.0.1:{broker.port}; watch the output with")
    _say(f"  mosquitto_sub -h 127.0.0.1 -p {broker.port} -t 'edgegw/#' -v")
    narrator = _Narrator(scenario, epoch_s(scenario))

    def stop_broker() -> None:
        _say("fault | broker_outage: mosquitto stopped (the agent keeps buffering)")
        broker.stop()

    def start_broker() -> None:
        broker.start()
        _say("fault | broker_outage over: mosquitto back (the backlog drains, alerts first)")

    try:
        result = run_city(
            scenario,
            work,
            broker.address,
            rules_file=DEMO_RULES,
            speed=speed,
            stop_broker=stop_broker,
            start_broker=start_broker,
            on_agent_line=narrator.agent_line,
            on_progress=narrator.progress,
            on_gateway_kill=narrator.gateway_kill,
        )
    finally:
        broker.stop()
    narrator.alerts(result.alerts)  # those that arrived after the last progress line
    return _report(result)


def _report(result: CityResult) -> int:
    records, alerts = result.records, result.alerts
    _say("")
    _say("---- demo summary ----")
    for line in result_lines(result):
        _say(line)
    reading = next((r for r in reversed(records) if r.get("fcnt") is not None), None)
    if reading is not None:
        _say(f"one reading as the platform sees it (edgegw/{GATEWAY_ID}/up):")
        print(json.dumps(reading, indent=2), flush=True)
    if alerts:
        _say(f"one alert (edgegw/{GATEWAY_ID}/alert):")
        print(json.dumps(alerts[-1], indent=2), flush=True)
    ok = result.comparison.ok
    _say(
        "RESULT: what reached the broker matches the ground truth (every accepted frame once, "
        "the alerts at their readings, the day's Lden and passages)"
        if ok
        else "RESULT: MISMATCH between the broker and the ground truth (details above)"
    )
    return 0 if ok else 1
