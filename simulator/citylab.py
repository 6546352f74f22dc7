"""A scenario run against a real agent and a real broker, checked against its ground truth.

Owns the wiring a whole-city run needs: a config for the agent (Semtech UDP on a loopback
port, the broker, a data directory, the rules file), the registration of the fleet
(``edgegw device import``), the agent started on the simulated clock
(``python -m simulator.simclock``), an MQTT subscriber collecting ``up`` and ``alert``, the
run itself (``simulator.runner``) with hooks to kill -9 and restart the agent or to stop and
start the broker, and the final comparison (``simulator.truth.compare``).

``edgegw-sim city`` uses it with a mosquitto of its own; tests/simulator uses it with the
test broker fixture. It does not own the broker's process (callers give a host, a port and,
for outages, stop/start callables).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulator.city import build_fleet, epoch_s, registration_csv
from simulator.forwarder import PacketForwarder
from simulator.runner import Hooks, Summary, run
from simulator.scenario import Scenario
from simulator.simclock import SharedClock
from simulator.truth import Comparison, compare

log = logging.getLogger(__name__)

GATEWAY_ID = "gw-sim-1"
GATEWAY_EUI = bytes.fromhex("b827ebfffe0000a1")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Collector:
    """A paho subscriber on ``{prefix}/{gateway}/#`` keeping ``up`` records and ``alert`` records."""

    host: str
    port: int
    gateway_id: str = GATEWAY_ID
    records: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: mqtt.Client | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="edgegw-sim-collector", clean_session=False
        )
        subscribed = threading.Event()
        topic = f"edgegw/{self.gateway_id}/#"
        client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *_a: subscribed.set()
        client.on_message = self._on_message
        client.connect(self.host, self.port)
        client.loop_start()
        self._client = client
        if not subscribed.wait(timeout_s):
            raise RuntimeError(f"no SUBACK from the broker at {self.host}:{self.port}")

    def _on_message(self, _client: Any, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        leaf = msg.topic.rsplit("/", 1)[-1]
        if leaf not in ("up", "alert"):
            return
        doc = json.loads(msg.payload)
        with self._lock:
            if leaf == "up":
                self.records.extend(doc["records"])
            else:
                self.alerts.append(doc["record"])

    def frames(self) -> int:
        with self._lock:
            return len({r["id"] for r in self.records if r.get("fcnt") is not None})

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self._lock:
            return list(self.records), list(self.alerts)

    def stop(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None


class Agent:
    """``edgegw run`` on the simulated clock, as a child process with its stderr collected."""

    def __init__(self, config_file: Path, clock_file: Path) -> None:
        self.config_file, self.clock_file = config_file, clock_file
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self, port: int, timeout_s: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEGW_")}
        argv = [sys.executable, "-m", "simulator.simclock", str(self.clock_file), "--"]
        self.proc = subprocess.Popen(
            [*argv, "run", "--config", str(self.config_file)], stderr=subprocess.PIPE, text=True, env=env
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", port)) as probe:
            while not probe.pull(timeout_s=0.3):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the agent did not answer PULL_DATA:\n" + "\n".join(self.lines[-20:]))

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.append(line.rstrip())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        if self._reader is not None:
            self._reader.join(5)
        return code


def gateway_cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config_file), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass
class CityResult:
    summary: Summary
    comparison: Comparison
    agent_log: list[str]
    drain_s: float


def run_city(
    scenario: Scenario,
    workdir: Path,
    broker: tuple[str, int],
    *,
    rules_file: Path | None = None,
    speed: float | None = None,
    seed: int | None = None,
    stop_broker: Callable[[], None] | None = None,
    start_broker: Callable[[], None] | None = None,
    drain_timeout_s: float = 60.0,
) -> CityResult:
    """Register the fleet, start the agent on simulated time, run, wait for the broker, compare."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    config_file = workdir / "edgegw.yaml"
    lines = [
        f"gateway: {{id: {GATEWAY_ID}}}",
        f'radio: {{url: "semtech-udp://127.0.0.1:{port}"}}',
        f"mqtt: {{host: {broker[0]}, port: {broker[1]}, tls: false}}",
        f"data_dir: {workdir / 'data'}",
    ]
    if rules_file is not None:
        lines.append(f"rules: {{path: {rules_file}}}")
    config_file.write_text("\n".join(lines) + "\n")
    fleet_csv = workdir / "fleet.csv"
    fleet_csv.write_text(registration_csv(build_fleet(scenario, seed)))
    imported = gateway_cli(config_file, "device", "import", str(fleet_csv))
    if imported.returncode != 0:
        raise RuntimeError(f"device import failed: {imported.stderr}")
    clock = SharedClock(workdir / "clock.bin", epoch_s(scenario))
    collector = Collector(*broker)
    collector.start()
    agent = Agent(config_file, clock.path)
    agent.start(port)
    hooks = Hooks(
        stop_broker=stop_broker,
        start_broker=start_broker,
        kill_gateway=agent.kill,
        start_gateway=lambda: agent.start(port),
    )
    try:
        summary = run(
            scenario,
            ("127.0.0.1", port),
            speed=speed,
            seed=seed,
            truth=workdir / "truth.jsonl",
            gateway_eui=GATEWAY_EUI,
            clock=clock,
            rules_file=rules_file,
            hooks=hooks,
        )
        assert summary.expected is not None
        want = sum(summary.expected.counts.values())
        drain_started = time.monotonic()
        deadline = drain_started + drain_timeout_s
        while collector.frames() < want and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # alerts and aggregates of the last frames
        drain_s = time.monotonic() - drain_started
    finally:
        code = agent.stop()
        collector.stop()
        clock.close()
    if code != 0:
        log.warning("the agent exited with %s", code)
    records, alerts = collector.snapshot()
    comparison = compare(summary.expected, records, alerts)
    return CityResult(summary, comparison, agent.lines, drain_s)
