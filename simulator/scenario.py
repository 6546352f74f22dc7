"""Scenarios: a fleet, a simulated duration and faults in YAML, turned into frames and ground truth.

Owns the scenario file format (docs/simulator.md), its loader (errors name the file,
the key path and the reason, as ``gateway.errors.ConfigError``), the fleet it
describes (keys derived from the seed, so a run and its registration CSV agree),
the time-ordered schedule of frames including the faults, the ground-truth JSONL
and the paced sending through a Semtech UDP packet forwarder.

It does not own the physics (``simulator.models``), LoRaWAN framing
(``simulator.devices.AbpDevice``) nor the UDP protocol (``simulator.forwarder``).
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gateway.errors import ConfigError
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from simulator.models import SECONDS_PER_DAY, ContainerModel, FloodEvent, Measurement, RiverModel

log = logging.getLogger(__name__)

FrameKind = Literal["reading", "bad_mic", "replay", "device_flood"]
FaultKind = Literal["bad_mic", "replay", "device_flood"]
_FAULT_KINDS: tuple[FaultKind, ...] = ("bad_mic", "replay", "device_flood")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": float(SECONDS_PER_DAY)}
_MAX_FRAMES = 1_000_000  # a scenario bigger than this is a typo, not a test


# --- the scenario file -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerGroup:
    count: int
    report_interval_s: float
    empty_mm: tuple[float, float]
    full_mm: int
    fill_mm_per_day: tuple[float, float]
    collection_every_days: int
    collection_hour: float
    collection_stagger_s: float


@dataclass(frozen=True, slots=True)
class RiverGroup:
    count: int
    report_interval_s: float
    flood_report_interval_s: float
    base_cm: tuple[float, float]
    flood_start_s: float | None
    rise_cm_per_15min: tuple[float, float]
    peak_rise_cm: tuple[float, float]
    recession_s: float


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float
    kind: FaultKind
    count: int = 1
    device: str | None = None
    interval_s: float = 1.0
    duration_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    seed: int
    duration_s: float
    speed: float
    containers: ContainerGroup | None
    rivers: RiverGroup | None
    faults: tuple[Fault, ...]
    source: str = "<scenario>"


class _Reader:
    """Typed access to one mapping of the YAML document, with errors carrying file and key path."""

    def __init__(self, doc: Any, file: str, path: str) -> None:
        if not isinstance(doc, Mapping):
            raise ConfigError("expected a mapping", file=file, key_path=path or None)
        self.doc, self.file, self.path = doc, file, path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(reason, file=self.file, key_path=self.key(name))

    def has(self, name: str) -> bool:
        return name in self.doc

    def raw(self, name: str, default: Any = None, *, required: bool = False) -> Any:
        if name not in self.doc:
            if required:
                raise self.error(name, "missing required key")
            return default
        self.used.add(name)
        return self.doc[name]

    def number(self, name: str, default: float | None = None, *, minimum: float = 0.0) -> float:
        value = self.raw(name, default, required=default is None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number, got {value!r}")
        if value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value}")
        return float(value)

    def integer(self, name: str, default: int | None = None, *, minimum: int = 0) -> int:
        value = self.raw(name, default, required=default is None)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value}")
        return value

    def duration(self, name: str, default: float | None = None) -> float:
        value = self.raw(name, default, required=default is None)
        return parse_duration_s(
            value, self.error(name, f"expected a duration like 90s, 15m, 6h, 1d: {value!r}")
        )

    def span(self, name: str, default: tuple[float, float] | None = None) -> tuple[float, float]:
        """A number or a [min, max] pair, drawn from per device."""
        value = self.raw(name, default, required=default is None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value), float(value)
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            low, high = float(value[0]), float(value[1])
            if low > high or low < 0:
                raise self.error(name, f"expected 0 <= min <= max, got {list(value)}")
            return low, high
        raise self.error(name, f"expected a number or [min, max], got {value!r}")

    def child(self, name: str) -> _Reader | None:
        if name not in self.doc:
            return None
        self.used.add(name)
        return _Reader(self.doc[name], self.file, self.key(name))

    def done(self) -> None:
        for name in self.doc:
            if name not in self.used:
                raise self.error(str(name), "unknown key")


def parse_duration_s(value: Any, error: ConfigError) -> float:
    """Seconds from a number (seconds) or a text like ``90s``, ``15m``, ``6h``, ``1d``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_S[match.group(2)]
    raise error


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; raises ConfigError(reason, file=, key_path=)."""
    file = str(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=file) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=file) from exc
    return parse_scenario(doc, file)


def parse_scenario(doc: Any, file: str = "<scenario>") -> Scenario:
    top = _Reader(doc, file, "")
    name = top.raw("name", Path(file).stem)
    if not isinstance(name, str):
        raise top.error("name", "expected a text")
    seed = top.integer("seed", 1)
    duration_s = top.duration("duration")
    if duration_s <= 0:
        raise top.error("duration", "must be > 0")
    speed = top.number("speed", 3600.0)
    if speed <= 0:
        raise top.error("speed", "must be > 0")
    fleet = top.child("fleet")
    if fleet is None:
        raise top.error("fleet", "missing required key")
    containers = _containers(fleet.child("containers"))
    rivers = _rivers(fleet.child("rivers"), duration_s)
    fleet.done()
    names = _device_names(containers, rivers)
    faults: list[Fault] = []
    raw_faults = top.raw("faults", [])
    if not isinstance(raw_faults, list):
        raise top.error("faults", "expected a list")
    for index, item in enumerate(raw_faults):
        faults.append(_fault(_Reader(item, file, f"faults[{index}]"), duration_s, names))
    top.done()
    return Scenario(name, seed, duration_s, speed, containers, rivers, tuple(faults), file)


def _containers(r: _Reader | None) -> ContainerGroup | None:
    if r is None:
        return None
    collection = r.child("collection")
    every, hour, stagger = 1, 6.0, 300.0
    if collection is not None:
        every = collection.integer("every_days", 1, minimum=1)
        hour = collection.number("hour", 6.0)
        if hour >= 24:
            raise collection.error("hour", "must be < 24")
        stagger = collection.duration("stagger", 300.0)
        collection.done()
    group = ContainerGroup(
        count=r.integer("count"),
        report_interval_s=r.duration("report_interval", 4 * 3600.0),
        empty_mm=r.span("empty_mm", (1800.0, 2200.0)),
        full_mm=r.integer("full_mm", 300),
        fill_mm_per_day=r.span("fill_mm_per_day", (100.0, 300.0)),
        collection_every_days=every,
        collection_hour=hour,
        collection_stagger_s=stagger,
    )
    if group.report_interval_s < 1:
        raise r.error("report_interval", "must be at least 1 s")
    if group.full_mm >= group.empty_mm[0]:
        raise r.error("full_mm", "must be below empty_mm")
    r.done()
    return group


def _rivers(r: _Reader | None, duration_s: float) -> RiverGroup | None:
    if r is None:
        return None
    flood = r.child("flood")
    start: float | None = None
    rise, peak, recession = (20.0, 40.0), (150.0, 250.0), 3 * 3600.0
    if flood is not None:
        start = flood.duration("start")
        if start >= duration_s:
            raise flood.error("start", "is after the end of the scenario")
        rise = flood.span("rise_cm_per_15min", rise)
        if rise[0] <= 0:
            raise flood.error("rise_cm_per_15min", "must be > 0")
        peak = flood.span("peak_rise_cm", peak)
        recession = flood.duration("recession", recession)
        if recession <= 0:
            raise flood.error("recession", "must be > 0")
        flood.done()
    group = RiverGroup(
        count=r.integer("count"),
        report_interval_s=r.duration("report_interval", 900.0),
        flood_report_interval_s=r.duration("flood_report_interval", 120.0),
        base_cm=r.span("base_cm", (20.0, 60.0)),
        flood_start_s=start,
        rise_cm_per_15min=rise,
        peak_rise_cm=peak,
        recession_s=recession,
    )
    if min(group.report_interval_s, group.flood_report_interval_s) < 1:
        raise r.error("report_interval", "must be at least 1 s")
    r.done()
    return group


def _device_names(containers: ContainerGroup | None, rivers: RiverGroup | None) -> list[str]:
    names = [f"container-{i + 1}" for i in range(containers.count if containers else 0)]
    return names + [f"river-{i + 1}" for i in range(rivers.count if rivers else 0)]


def _fault(r: _Reader, duration_s: float, names: list[str]) -> Fault:
    kind = r.raw("kind", required=True)
    if kind not in _FAULT_KINDS:
        raise r.error("kind", f"expected one of {', '.join(_FAULT_KINDS)}, got {kind!r}")
    at_s = r.duration("at")
    if at_s >= duration_s:
        raise r.error("at", "is after the end of the scenario")
    device = r.raw("device")
    if device is not None and device not in names:
        raise r.error("device", f"no device {device!r} in the fleet (names: container-N, river-N)")
    if not names:
        raise r.error("kind", "a fault needs at least one device in the fleet")
    fault = Fault(
        at_s=at_s,
        kind=kind,
        count=r.integer("count", 1, minimum=1),
        device=device,
        interval_s=r.duration("interval", 1.0),
        duration_s=r.duration("duration", 60.0),
    )
    if fault.interval_s <= 0:
        raise r.error("interval", "must be > 0")
    r.done()
    return fault


# --- the fleet -----------------------------------------------------------------------------


@dataclass
class SimDevice:
    name: str
    device: AbpDevice
    model: ContainerModel | RiverModel
    report_interval_s: float
    flood_report_interval_s: float
    params: dict[str, int]
    last_good: bytes | None = None

    def interval_at(self, t_s: float) -> float:
        if isinstance(self.model, RiverModel) and self.model.in_flood(t_s):
            return self.flood_report_interval_s  # the probe's alarm mode (domain.md §3.5)
        return self.report_interval_s


def build_fleet(scenario: Scenario, seed: int | None = None) -> list[SimDevice]:
    """The scenario's devices, keys and models, all derived from the seed."""
    rng = random.Random(scenario.seed if seed is None else seed)
    fleet: list[SimDevice] = []
    c = scenario.containers
    for i in range(c.count if c else 0):
        assert c is not None
        empty_mm = int(rng.uniform(*c.empty_mm))
        first = c.collection_hour * 3600 + i * c.collection_stagger_s
        period = c.collection_every_days * SECONDS_PER_DAY
        collections = [first + k * period for k in range(int(scenario.duration_s // period) + 1)]
        model = ContainerModel(
            rng=random.Random(rng.getrandbits(64)),
            empty_mm=empty_mm,
            full_mm=c.full_mm,
            fill_mm_per_day=rng.uniform(*c.fill_mm_per_day),
            collections_s=[t for t in collections if t < scenario.duration_s],
            battery_pct=rng.randint(80, 100),
            distance_mm=rng.uniform(c.full_mm + 200, empty_mm),
        )
        params = {"empty_distance_mm": empty_mm, "full_distance_mm": c.full_mm}
        fleet.append(_member(rng, len(fleet), f"container-{i + 1}", "milesight/em310-udl", model, params, c))
    r = scenario.rivers
    for i in range(r.count if r else 0):
        assert r is not None
        floods = []
        if r.flood_start_s is not None:
            floods.append(
                FloodEvent(
                    start_s=r.flood_start_s + i * 600.0,  # downstream stations see it later
                    rise_cm_per_15min=rng.uniform(*r.rise_cm_per_15min),
                    peak_rise_cm=rng.uniform(*r.peak_rise_cm),
                    recession_tau_s=r.recession_s,
                )
            )
        river = RiverModel(base_cm=rng.uniform(*r.base_cm), floods=floods, battery_pct=rng.randint(80, 100))
        params = {"probe_level_cm": 0}
        fleet.append(_member(rng, len(fleet), f"river-{i + 1}", "milesight/em500-swl", river, params, r))
    return fleet


def _member(
    rng: random.Random,
    index: int,
    name: str,
    profile: str,
    model: ContainerModel | RiverModel,
    params: dict[str, int],
    group: ContainerGroup | RiverGroup,
) -> SimDevice:
    device = AbpDevice(
        dev_eui=bytes.fromhex("70b3d5e75f") + index.to_bytes(3, "big"),
        dev_addr=bytes([0x26, 0x01, 0x20 + (index >> 8 & 0x0F), index & 0xFF]),
        nwk_s_key=rng.randbytes(16),
        app_s_key=rng.randbytes(16),
        profile=profile,
    )
    flood_interval = (
        group.flood_report_interval_s if isinstance(group, RiverGroup) else group.report_interval_s
    )
    return SimDevice(name, device, model, group.report_interval_s, flood_interval, params)


def registration_csv(fleet: list[SimDevice]) -> str:
    """The fleet as a CSV for ``edgegw device import`` (gateway/provisioning/csv_import.py)."""
    param_names = sorted({p for d in fleet for p in d.params})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["dev_eui", "profile", "activation", "dev_addr", "nwk_s_key", "app_s_key", "site"]
        + [f"param.{p}" for p in param_names]
    )
    for d in fleet:
        a = d.device
        writer.writerow(
            [
                a.dev_eui.hex(),
                a.profile,
                "abp",
                a.dev_addr.hex(),
                a.nwk_s_key.hex(),
                a.app_s_key.hex(),
                d.name,
            ]
            + [str(d.params.get(p, "")) for p in param_names]
        )
    return out.getvalue()


# --- the schedule --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduledFrame:
    """One frame to send at simulated second ``t_s``, with what it should become at the gateway."""

    t_s: float
    device: str
    dev_eui: bytes
    kind: FrameKind
    phy_payload: bytes
    accepted: bool
    """True when the gateway must forward it; False for frames it must refuse."""
    fcnt: int | None = None
    fport: int | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def truth(self) -> dict[str, Any]:
        return {
            "type": "frame",
            "t_s": round(self.t_s, 3),
            "device": self.device,
            "dev_eui": self.dev_eui.hex(),
            "kind": self.kind,
            "expect": "accepted" if self.accepted else "refused",
            "fcnt": self.fcnt,
            "fport": self.fport,
            "values": self.values,
            "phy_payload": self.phy_payload.hex(),
        }


def schedule(scenario: Scenario, fleet: list[SimDevice], seed: int | None = None) -> Iterator[ScheduledFrame]:
    """Every frame of the run in simulated-time order: readings, collection frames and faults."""
    rng = random.Random((scenario.seed if seed is None else seed) ^ 0x5EED)
    by_name = {d.name: d for d in fleet}
    # (t_s, tie-break, action, device index, fault index)
    queue: list[tuple[float, int, str, int, int]] = []
    order = 0

    def push(t_s: float, action: str, device: int, fault: int = -1) -> None:
        nonlocal order
        if t_s < scenario.duration_s:
            heapq.heappush(queue, (t_s, order, action, device, fault))
            order += 1

    for index, d in enumerate(fleet):
        push(rng.uniform(0, d.report_interval_s), "report", index)
        if isinstance(d.model, ContainerModel):
            for start in d.model.collections_s:
                push(start + 1.0, "event", index)  # the tilt frame, sent at once
                push(start + d.model.tilt_s + 30.0, "event", index)  # the drop back to empty
    for f_index, fault in enumerate(scenario.faults):
        push(fault.at_s, "fault", -1, f_index)

    for _ in range(_MAX_FRAMES):
        if not queue:
            return
        t_s, _, action, index, f_index = heapq.heappop(queue)
        if action in ("report", "event", "flood_frame"):
            d = fleet[index]
            kind: FrameKind = "device_flood" if action == "flood_frame" else "reading"
            yield _reading(d, t_s, kind)
            if action == "report":
                push(t_s + d.interval_at(t_s), "report", index)
            continue
        fault = scenario.faults[f_index]
        target_name = fault.device or rng.choice(sorted(by_name))
        target = by_name[target_name]
        if fault.kind == "device_flood":
            target_index = fleet.index(target)
            for k in range(int(fault.duration_s / fault.interval_s)):
                push(t_s + k * fault.interval_s, "flood_frame", target_index)
        elif fault.kind == "bad_mic":
            for _ in range(fault.count):
                yield _forged(target, t_s, rng)
        elif target.last_good is not None:
            for _ in range(fault.count):
                yield ScheduledFrame(
                    t_s, target.name, target.device.dev_eui, "replay", target.last_good, False
                )
    raise RuntimeError(f"scenario {scenario.name} makes more than {_MAX_FRAMES} frames")


def _reading(d: SimDevice, t_s: float, kind: FrameKind) -> ScheduledFrame:
    m: Measurement = d.model.measure(t_s)
    fcnt = d.device.fcnt_up
    phy = d.device.uplink(m.payload, m.fport)
    d.last_good = phy
    return ScheduledFrame(t_s, d.name, d.device.dev_eui, kind, phy, True, fcnt, m.fport, m.values)


def _forged(d: SimDevice, t_s: float, rng: random.Random) -> ScheduledFrame:
    """Right DevAddr and next counter, wrong NwkSKey: the MIC cannot verify (LoRaWAN 1.0.x §4.4)."""
    forged = AbpDevice(
        d.device.dev_eui,
        d.device.dev_addr,
        rng.randbytes(16),
        d.device.app_s_key,
        d.device.profile,
        d.device.fcnt_up,
    )
    phy = forged.uplink(b"\x01\x75\x00", 85)
    return ScheduledFrame(t_s, d.name, d.device.dev_eui, "bad_mic", phy, False)


# --- a run ---------------------------------------------------------------------------------


@dataclass
class Summary:
    scenario: str
    seed: int
    simulated_s: float
    wall_s: float = 0.0
    frames: Counter[str] = field(default_factory=Counter)
    push_acks: int = 0
    no_push_acks: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "simulated_s": self.simulated_s,
            "wall_s": round(self.wall_s, 3),
            "frames": dict(sorted(self.frames.items())),
            "push_acks": self.push_acks,
            "no_push_acks": self.no_push_acks,
        }

    def text(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.frames.items()))
        return (
            f"scenario {self.scenario} (seed {self.seed}): {self.simulated_s / 3600:.1f} h simulated "
            f"in {self.wall_s:.1f} s; frames: {kinds}; PUSH_ACK {self.push_acks}, missing {self.no_push_acks}"
        )


def run(
    scenario: Scenario,
    target: tuple[str, int],
    *,
    speed: float | None = None,
    seed: int | None = None,
    truth: Path | None = None,
    gateway_eui: bytes = bytes.fromhex("b827ebfffe000001"),
    ack_timeout_s: float = 1.0,
) -> Summary:
    """Send the scenario's frames to ``target``, paced at ``speed`` simulated s per wall s."""
    pace = scenario.speed if speed is None else speed
    used_seed = scenario.seed if seed is None else seed
    fleet = build_fleet(scenario, used_seed)
    summary = Summary(scenario.name, used_seed, scenario.duration_s)
    out = truth.open("w", encoding="utf-8") if truth is not None else None
    try:
        if out is not None:
            header = {
                "type": "scenario",
                "name": scenario.name,
                "seed": used_seed,
                "duration_s": scenario.duration_s,
                "devices": [
                    {"device": d.name, "dev_eui": d.device.dev_eui.hex(), "profile": d.device.profile}
                    for d in fleet
                ],
            }
            out.write(json.dumps(header) + "\n")
        with PacketForwarder(gateway_eui, target) as forwarder:
            started = time.monotonic()
            for frame in schedule(scenario, fleet, used_seed):
                delay_s = started + frame.t_s / pace - time.monotonic()
                if delay_s > 0:
                    time.sleep(delay_s)
                token = forwarder.send_frames([(frame.phy_payload, {})])
                if forwarder.wait_ack(token, ack_timeout_s):
                    summary.push_acks += 1
                else:
                    summary.no_push_acks += 1
                summary.frames[frame.kind] += 1
                if out is not None:
                    out.write(json.dumps(frame.truth()) + "\n")
            summary.wall_s = time.monotonic() - started
    finally:
        if out is not None:
            out.close()
    log.info("%s", summary.text())
    return summary
