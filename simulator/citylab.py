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

from simulator.broker import free_port
from simulator.city import build_fleet, epoch_s, registration_csv
from simulator.forwarder import PacketForwarder
from simulator.runner import Hooks, Summary, run
from simulator.scenario import Scenario
from simulator.simclock import SharedClock
from simulator.transports import agent_radio, open_transport
from simulator.truth import Comparison, compare

log = logging.getLogger(__name__)

GATEWAY_ID = "gw-sim-1"
GATEWAY_EUI = bytes.fromhex("b827ebfffe0000a1")


@dataclass
class Collector:
    """A paho subscriber on ``{prefix}/{gateway}/#`` keeping ``up`` records and ``alert`` records."""

    host: str
    port: int
    gateway_id: str = GATEWAY_ID
    records: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[tuple[str, str]] = field(default_factory=list)
    """(topic leaf, record id) in the order the broker delivered them."""
    origins: list[tuple[str, str, str]] = field(default_factory=list)
    """(gateway id from the topic, topic leaf, record id) in the order the broker delivered them: with
    ``gateway_id="+"`` (several gateways) which gateway sent each copy."""
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
        gateway = msg.topic.split("/")[1]
        with self._lock:
            if leaf == "up":
                self.records.extend(doc["records"])
                self.arrivals.extend(("up", str(r["id"])) for r in doc["records"])
                self.origins.extend((gateway, "up", str(r["id"])) for r in doc["records"])
            else:
                self.alerts.append(doc["record"])
                self.arrivals.append(("alert", str(doc["record"]["id"])))
                self.origins.append((gateway, "alert", str(doc["record"]["id"])))

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

    def __init__(
        self,
        config_file: Path,
        clock_file: Path,
        echo: Callable[[str], None] | None = None,
        *,
        bridge_socket: Path | None = None,
        ready_probe: Callable[[], Callable[[], bool]] | None = None,
        clock_offset_s: float = 0.0,
    ) -> None:
        self.config_file, self.clock_file = config_file, clock_file
        self.clock_offset_s = clock_offset_s
        """Its clock runs this far ahead of the shared one (``simulator.simclock --offset-s``)."""
        self.bridge_socket = bridge_socket
        """Run under ``simulator.sx127x_bridge`` (emulated SX127x + clock) instead of ``simclock``."""
        self.ready_probe = ready_probe
        """The transport's readiness check (``Transport.ready_probe``); None: answers PULL_DATA."""
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.echo = echo
        """Called with each line the agent logs (the demo prints them)."""
        self._reader: threading.Thread | None = None

    def start(self, port: int, timeout_s: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEGW_")}
        offset = ["--offset-s", repr(self.clock_offset_s)] if self.clock_offset_s else []
        argv = [sys.executable, "-m", "simulator.simclock", str(self.clock_file), *offset, "--"]
        if self.bridge_socket is not None:
            argv = [sys.executable, "-m", "simulator.sx127x_bridge", str(self.bridge_socket)]
            argv += ["--clock", str(self.clock_file), "--"]
        ready = self.ready_probe() if self.ready_probe is not None else None  # before the agent exists
        self.proc = subprocess.Popen(
            [*argv, "run", "--config", str(self.config_file)], stderr=subprocess.PIPE, text=True, env=env
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        if ready is not None:
            while not ready():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the agent's radio did not get ready:\n" + "\n".join(self.lines[-20:]))
                time.sleep(0.05)
            return
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", port)) as probe:
            while not probe.pull(timeout_s=0.3):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the agent did not answer PULL_DATA:\n" + "\n".join(self.lines[-20:]))

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.append(line.rstrip())
            if self.echo is not None:
                self.echo(line.rstrip())

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
    records: list[dict[str, Any]] = field(default_factory=list)
    """The ``up`` records that reached the broker."""
    alerts: list[dict[str, Any]] = field(default_factory=list)
    """The ``alert`` records that reached the broker."""
    arrivals: list[tuple[str, str]] = field(default_factory=list)
    """(``up`` or ``alert``, record id) in the order the broker delivered them."""


def result_lines(result: CityResult) -> list[str]:
    """The run's summary and the comparison with the truth, as lines for a terminal."""
    c = result.comparison
    lines = [
        result.summary.text(),
        f"check: {'OK' if c.ok else 'MISMATCH'}; frames received {c.frames_received}, "
        f"alerts {c.alerts_received}, Lden days {c.lden_checked} "
        f"(max error {c.lden_max_error_db:.2f} dB), passage days {c.passages_checked}",
    ]
    if not c.ok:
        lines.append(json.dumps(c.as_json(), indent=1)[:4000])
    return lines


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
    on_agent_line: Callable[[str], None] | None = None,
    on_progress: Callable[[float, Collector], None] | None = None,
    progress_every_s: float = 5.0,
    on_gateway_kill: Callable[[bool], None] | None = None,
    transport: str = "semtech-udp",
) -> CityResult:
    """Register the fleet, start the agent on simulated time, run, wait for the broker, compare.

    ``on_progress(simulated_s, collector)`` is called every ``progress_every_s`` wall seconds
    from a thread while the scenario runs (simulated seconds since the scenario's start, as the
    agent's clock reads them). ``on_gateway_kill(over)`` is called just before a ``gateway_kill``
    kills the agent (False) and just before it restarts it (True); a broker outage calls the
    given ``stop_broker`` / ``start_broker``.
    ``transport``: ``semtech-udp``, ``serial`` (a simulated RUI3 modem on a pty) or ``sx127x``
    (the agent under ``simulator.sx127x_bridge``); see ``simulator.transports``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(socket.SOCK_DGRAM)
    config_file = workdir / "edgegw.yaml"
    radio_url, target, bridge_socket = agent_radio(transport, workdir, port)
    lines = [
        f"gateway: {{id: {GATEWAY_ID}}}",
        f'radio: {{url: "{radio_url}"}}',
        # Outages last seconds of wall time under compression: reconnect within 2 s, not 60.
        f"mqtt: {{host: {broker[0]}, port: {broker[1]}, tls: false, "
        "reconnect_min_s: 0.2, reconnect_max_s: 2}",
        f"data_dir: {workdir / 'data'}",
    ]
    if not scenario.radio.adr:
        # The scenario's devices model no MAC commands (radio.adr gives them the firmware's): they
        # would never answer a DevStatusReq, and the agent would keep asking (and the truth's count
        # of downlinks, one per confirmed reading, would not hold).
        lines.append("lorawan: {dev_status_period_s: 0}")
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
    link = open_transport(target, gateway_eui=GATEWAY_EUI, forwarders=scenario.radio.forwarders)
    agent = Agent(
        config_file,
        clock.path,
        on_agent_line,
        bridge_socket=bridge_socket,
        ready_probe=None if transport == "semtech-udp" else link.ready_probe,
    )
    agent.start(port)
    finished = threading.Event()
    if on_progress is not None:
        epoch = epoch_s(scenario)

        def report() -> None:
            while not finished.wait(progress_every_s):
                on_progress(clock.now_s - epoch, collector)

        threading.Thread(target=report, name="city-progress", daemon=True).start()

    def kill() -> None:
        if on_gateway_kill is not None:
            on_gateway_kill(False)
        agent.kill()

    def restart() -> None:
        if on_gateway_kill is not None:
            on_gateway_kill(True)
        agent.start(port)

    hooks = Hooks(
        stop_broker=stop_broker, start_broker=start_broker, kill_gateway=kill, start_gateway=restart
    )
    try:
        summary = run(
            scenario,
            link,
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
        finished.set()
        code = agent.stop()
        link.close()
        collector.stop()
        clock.close()
    if code != 0:
        log.warning("the agent exited with %s", code)
    records, alerts = collector.snapshot()
    comparison = compare(summary.expected, records, alerts)
    return CityResult(summary, comparison, agent.lines, drain_s, records, alerts, list(collector.arrivals))
