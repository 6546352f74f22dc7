"""A scenario run against several real agents, one per gateway of its coverage model.

Owns the wiring of a multi-gateway run (a scenario with ``gateways``, ``simulator.coverage``):
per gateway a directory with its config (its own ``gateway.id``, Semtech UDP port and data
directory; the same broker), the same registration CSV imported into each (``edgegw device
import``; with ``homes``, its ``home_gateway`` column names for each device the gateway that
hears it best, the choice ``edgegw fleet coordinator`` makes), and one ``edgegw run`` on the
shared simulated clock, gateway N's clock N times ``CLOCK_SKEW_S`` ahead (NTP leaves real
gateways a few milliseconds apart: nothing may rely on two gateways reading the same time).
One subscriber takes every gateway's topics (``edgegw/+/#``); ``GatewaysTransport``
(``simulator.transports``) gives each agent what its gateway heard; the runner's
hooks kill -9 and restart one gateway's agent (``gateway_kill`` with ``gateway:``) or all of them.

The result keeps every copy with the gateway that published it, every downlink with the gateway
that transmitted it, and the comparison with the ground truth after de-duplication by record id
(what the platform does, docs/mqtt.md); ``heard_by`` reads from the truth file which gateways
heard each accepted frame.

It does not own the broker's process (callers give its address, and stop/start callables for a
``broker_outage``) and decides no role itself: the agents do, from the registry's homes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from simulator.broker import free_port
from simulator.city import build_fleet, epoch_s, registration_csv
from simulator.citylab import Agent, Collector, gateway_cli
from simulator.coverage import DeviceCoverage, GatewaySite, coverage, overlap_counts
from simulator.runner import Hooks, Summary, run
from simulator.scenario import Scenario
from simulator.simclock import SharedClock
from simulator.transports import GatewaysTransport
from simulator.truth import Comparison, compare

log = logging.getLogger(__name__)

CLOCK_SKEW_S: Final = 0.003
"""Gateway N's clock runs N times 3 ms ahead of the shared simulated clock."""
QUIET_S: Final = 1.0
"""After the last frame: once every accepted frame reached the broker, copies still coming from the
other gateways are waited for until none came for this long."""

ConfigLines = Callable[[GatewaySite], Sequence[str]]
"""Extra lines for one gateway's config file (a ``fleet:`` section, ``rules:``...)."""


@dataclass
class GatewayAgent:
    """One gateway of the run: its site, files, UDP port and agent process."""

    site: GatewaySite
    workdir: Path
    port: int
    config_file: Path
    agent: Agent

    def cli(self, *args: str) -> Any:
        """``edgegw --config <its config> ARGS`` (a ``subprocess.CompletedProcess``)."""
        return gateway_cli(self.config_file, *args)


def write_config(
    where: GatewaySite,
    workdir: Path,
    port: int,
    broker: tuple[str, int],
    *,
    rules_file: Path | None = None,
    extra: Sequence[str] = (),
) -> Path:
    """The agent config of one gateway: its id, Semtech UDP on ``port``, the broker, its data dir."""
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"gateway: {{id: {where.gateway_id}}}",
        f'radio: {{url: "semtech-udp://127.0.0.1:{port}"}}',
        # Outages last seconds of wall time under compression: reconnect within 2 s, not 60.
        f"mqtt: {{host: {broker[0]}, port: {broker[1]}, tls: false, "
        "reconnect_min_s: 0.2, reconnect_max_s: 2}",
        f"data_dir: {workdir / 'data'}",
    ]
    if rules_file is not None:
        lines.append(f"rules: {{path: {rules_file}}}")
    lines += extra
    config_file = workdir / "edgegw.yaml"
    config_file.write_text("\n".join(lines) + "\n")
    return config_file


@dataclass
class GatewaysResult:
    summary: Summary
    comparison: Comparison
    """The truth against one copy per record id (``first_copies``)."""
    drain_s: float
    gateways: tuple[GatewaySite, ...]
    coverage: list[DeviceCoverage]
    truth_file: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    """Every ``up`` record copy that reached the broker, from whichever gateway."""
    alerts: list[dict[str, Any]] = field(default_factory=list)
    origins: list[tuple[str, str, str]] = field(default_factory=list)
    """(gateway id, ``up`` or ``alert``, record id) of every copy, in broker order."""
    transmissions: list[tuple[str, bytes, int | None]] = field(default_factory=list)
    """(gateway id, PHYPayload, FCnt of the device's uplink just before) of every downlink an agent
    sent (``GatewaysTransport.transmissions``)."""
    agent_logs: dict[str, list[str]] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    """Each agent's exit code when the run stopped it (None: it did not stop and was killed)."""

    def copies(self, leaf: str = "up") -> dict[str, list[str]]:
        """Record id -> the gateways that published it (one entry per copy)."""
        out: dict[str, list[str]] = {}
        for gateway, kind, rid in self.origins:
            if kind == leaf:
                out.setdefault(rid, []).append(gateway)
        return out


def result_lines(result: GatewaysResult, scenario: Scenario) -> list[str]:
    """The run, per gateway (what it heard and published, before and after a kill), and the check."""
    c = result.comparison
    kills = {f.gateway: f.at_s for f in scenario.faults if f.kind == "gateway_kill" and f.gateway}
    overlap = ", ".join(f"{n} by {k}" for k, n in overlap_counts(result.coverage).items())
    lines = [result.summary.text(), f"coverage: devices heard {overlap} gateway(s)"]
    epoch = epoch_s(scenario)
    gateway_of = [g for g, leaf, _ in result.origins if leaf == "up"]
    for where in result.gateways:
        gid = where.gateway_id
        mine = [r for g, r in zip(gateway_of, result.records, strict=True) if g == gid]
        line = f"{gid}: published {len(mine)} readings"
        if gid in kills:
            after = sum(_unix_s(r["received_at"]) - epoch >= kills[gid] for r in mine)
            line += f" (killed at {kills[gid] / 3600:g} h; {after} received after)"
        sent = sum(1 for g, _, _ in result.transmissions if g == gid)
        lines.append(f"{line}; {sent} downlinks sent")
    for gid, at_s in kills.items():
        others = sum(
            _unix_s(r["received_at"]) - epoch >= at_s
            for g, r in zip(gateway_of, result.records, strict=True)
            if g != gid
        )
        lines.append(f"after {gid} died the others published {others} readings: the city carries on")
    lines.append(
        f"check: {'OK' if c.ok else 'MISMATCH'}; readings {c.frames_received} (one per record id, "
        f"{len(result.records)} copies from {len(result.gateways)} gateways), alerts {c.alerts_received}"
    )
    if not c.ok:
        lines.append(json.dumps(c.as_json(), indent=1)[:4000])
    return lines


def _unix_s(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def best_homes(picture: Iterable[DeviceCoverage], sites: Sequence[GatewaySite]) -> dict[str, str]:
    """Device name -> the gateway with the best mean SNR to it (ties: the first listed)."""
    out: dict[str, str] = {}
    for entry in picture:
        best = max(range(len(sites)), key=lambda k: (entry.snr_db[k], -k))
        out[entry.device] = sites[best].gateway_id
    return out


def with_homes(registration: str, homes: Mapping[str, str]) -> str:
    """The registration CSV (``city.registration_csv``) with a ``home_gateway`` column: ``homes``
    maps a DevEUI (hex) to its home's gateway id; a device not in it gets an empty cell."""
    rows = list(csv.reader(io.StringIO(registration)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*rows[0], "home_gateway"])
    eui_column = rows[0].index("dev_eui")
    for row in rows[1:]:
        writer.writerow([*row, homes.get(row[eui_column], "")])
    return out.getvalue()


def first_copies(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One record per id, the first that came: the platform's de-duplication (docs/mqtt.md)."""
    seen: dict[str, Mapping[str, Any]] = {}
    for record in records:
        seen.setdefault(str(record.get("id")), record)
    return list(seen.values())


def heard_by(truth_file: Path) -> dict[tuple[str, int], frozenset[str]]:
    """(DevEUI hex, FCnt) of each frame the gateways must accept -> the gateways that heard it with a
    good CRC (gateway ids from the truth header's ``gateways``)."""
    out: dict[tuple[str, int], frozenset[str]] = {}
    ids: list[str] = []
    with truth_file.open(encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)
            if doc.get("type") == "scenario":
                ids = [str(g["id"]) for g in doc.get("gateways", [])]
            elif doc.get("type") == "frame" and doc["expect"] == "accepted" and doc["fcnt"] is not None:
                heard = frozenset(ids[rx["forwarder"]] for rx in doc["rx"] if rx["crc_ok"])
                key = (str(doc["dev_eui"]), int(doc["fcnt"]))
                out[key] = out.get(key, frozenset()) | heard
    return out


def run_gateways(
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
    config_lines: ConfigLines | None = None,
    on_agent_line: Callable[[str, str], None] | None = None,
    homes: bool = True,
) -> GatewaysResult:
    """Register the fleet on every gateway, start one agent per gateway, run, drain, compare.

    ``homes``: name each device's home in the registry (``best_homes``); False leaves the column
    out, and every gateway that has a device answers it (a gateway configured as before issue 21).

    ``on_agent_line(gateway_id, line)`` gets each line an agent logs. A ``gateway_kill`` naming a
    gateway kills that agent alone; one naming none kills them all (and restarts them after).
    """
    if not scenario.gateways:
        raise ValueError(f"scenario {scenario.name} lists no gateways (simulator.citylab runs one agent)")
    workdir.mkdir(parents=True, exist_ok=True)
    fleet = build_fleet(scenario, seed)
    picture = coverage(fleet, scenario.gateways)
    registration = registration_csv(fleet)
    if homes:
        home_of = best_homes(picture, scenario.gateways)
        registration = with_homes(registration, {d.device.dev_eui.hex(): home_of[d.name] for d in fleet})
    fleet_csv = workdir / "fleet.csv"
    fleet_csv.write_text(registration)
    clock = SharedClock(workdir / "clock.bin", epoch_s(scenario))
    gateways: list[GatewayAgent] = []
    for index, where in enumerate(scenario.gateways):
        home = workdir / where.gateway_id
        port = free_port(socket.SOCK_DGRAM)
        extra = list(config_lines(where)) if config_lines is not None else []
        config_file = write_config(where, home, port, broker, rules_file=rules_file, extra=extra)
        echo = _echo(on_agent_line, where.gateway_id)
        agent = Agent(config_file, clock.path, echo, clock_offset_s=index * CLOCK_SKEW_S)
        gateways.append(GatewayAgent(where, home, port, config_file, agent))
    # The gateways' processes start side by side: each takes seconds to import, one after the other
    # they would take most of a short run.
    with ThreadPoolExecutor(len(gateways)) as pool:
        imports = list(pool.map(lambda g: g.cli("device", "import", str(fleet_csv)), gateways))
    for g, imported in zip(gateways, imports, strict=True):
        if imported.returncode != 0:
            clock.close()
            raise RuntimeError(f"device import on {g.site.gateway_id} failed: {imported.stderr}")
    collector = Collector(*broker, gateway_id="+")
    transport = GatewaysTransport([("127.0.0.1", g.port) for g in gateways], [g.site.eui for g in gateways])
    truth_file = workdir / "truth.jsonl"
    try:
        collector.start()
        with ThreadPoolExecutor(len(gateways)) as pool:
            list(pool.map(lambda g: g.agent.start(g.port), gateways))
        summary, drain_s = _play(
            scenario, gateways, transport, collector, clock, truth_file,
            speed=speed, seed=seed, rules_file=rules_file, stop_broker=stop_broker,
            start_broker=start_broker, drain_timeout_s=drain_timeout_s,
        )  # fmt: skip
    finally:
        codes: dict[str, int | None] = {}
        for g in gateways:
            try:
                codes[g.site.gateway_id] = g.agent.stop()
            except subprocess.TimeoutExpired:  # the others must still be stopped
                log.warning("the agent of %s did not stop: killed", g.site.gateway_id)
                g.agent.kill()
                codes[g.site.gateway_id] = None
                continue
            if codes[g.site.gateway_id] != 0:
                log.warning("the agent of %s exited with %s", g.site.gateway_id, codes[g.site.gateway_id])
        transport.close()
        collector.stop()
        clock.close()
    records, alerts = collector.snapshot()
    assert summary.expected is not None
    comparison = compare(summary.expected, first_copies(records), first_copies(alerts))
    ids = {index: g.site.gateway_id for index, g in enumerate(gateways)}
    return GatewaysResult(
        summary,
        comparison,
        drain_s,
        scenario.gateways,
        picture,
        truth_file,
        records,
        alerts,
        list(collector.origins),
        [(ids[index], data, fcnt) for index, data, fcnt in transport.transmissions],
        {g.site.gateway_id: g.agent.lines for g in gateways},
        codes,
    )


def _echo(on_line: Callable[[str, str], None] | None, gateway_id: str) -> Callable[[str], None] | None:
    if on_line is None:
        return None
    return lambda line: on_line(gateway_id, line)


def _play(
    scenario: Scenario,
    gateways: list[GatewayAgent],
    transport: GatewaysTransport,
    collector: Collector,
    clock: SharedClock,
    truth_file: Path,
    *,
    speed: float | None,
    seed: int | None,
    rules_file: Path | None,
    stop_broker: Callable[[], None] | None,
    start_broker: Callable[[], None] | None,
    drain_timeout_s: float,
) -> tuple[Summary, float]:
    """The run itself, then the wait for the broker; returns the summary and the drain time."""

    def kill_one(index: int) -> None:
        transport.set_down(index, True)
        gateways[index].agent.kill()

    def start_one(index: int) -> None:
        gateways[index].agent.start(gateways[index].port)
        transport.set_down(index, False)

    def kill_all() -> None:
        for index in range(len(gateways)):
            kill_one(index)

    def start_all() -> None:
        for index in range(len(gateways)):
            start_one(index)

    hooks = Hooks(
        stop_broker=stop_broker,
        start_broker=start_broker,
        kill_gateway=kill_all,
        start_gateway=start_all,
        kill_gateway_at=kill_one,
        start_gateway_at=start_one,
    )
    summary = run(
        scenario,
        transport,
        speed=speed,
        seed=seed,
        truth=truth_file,
        clock=clock,
        rules_file=rules_file,
        hooks=hooks,
    )
    assert summary.expected is not None
    want = sum(summary.expected.counts.values())
    started = time.monotonic()
    deadline = started + drain_timeout_s
    while collector.frames() < want and time.monotonic() < deadline:
        time.sleep(0.1)
    _wait_quiet(collector, deadline)
    return summary, time.monotonic() - started


def _wait_quiet(collector: Collector, deadline: float) -> None:
    """Until no copy came for ``QUIET_S`` (the other gateways' copies, alerts, aggregates)."""
    seen, since = len(collector.origins), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = len(collector.origins)
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= QUIET_S:
            return
