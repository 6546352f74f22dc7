"""The city of a scenario: its devices (keys, positions, models) and the schedule of their frames.

Owns the fleet a ``Scenario`` describes (keys and positions derived from the seed, so a run and
its registration CSV agree), the registration CSV, the time-ordered schedule of frames
(readings, collection events, faults, lost frames and CRC-error copies from the radio model)
and the effect of a downlink on a device (a lamp follows the dim level it is sent).

It does not send anything (``simulator.runner``) nor judge what the gateway must do with a
frame beyond "accepted" or "refused" (``simulator.truth`` computes alerts and aggregates).
"""

from __future__ import annotations

import csv
import heapq
import io
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal
from zoneinfo import ZoneInfo

from gateway.config import LorawanSection
from simulator import radio
from simulator.device_mac import DeviceMac
from simulator.devices import AbpDevice, OtaaIdentity
from simulator.models import (
    SECONDS_PER_DAY,
    CabinetModel,
    CircuitLoss,
    ContainerModel,
    CounterModel,
    FloodEvent,
    LampModel,
    Measurement,
    Model,
    NoiseModel,
    RiverModel,
    SunDay,
)
from simulator.models.display import DisplayModel
from simulator.models.noise import draw_events
from simulator.models.own_nodes import FirmwareFillLevel
from simulator.models.waste import Fire
from simulator.multicast import MulticastMember
from simulator.scenario import Fault, RiverGroup, Scenario
from simulator.txgate import TxGate, frame_airtime_s

if TYPE_CHECKING:
    from gateway.lorawan.crypto import SessionKeys

log = logging.getLogger(__name__)

FrameKind = Literal[
    "reading", "bad_mic", "replay", "device_flood", "garbage", "retransmission", "join", "join_replay"
]
JOIN_EUI: Final = bytes.fromhex("70b3d57ed0000001")
ADR_START_DR: Final = 0
"""Where a device that follows the network's MAC (scenario ``radio.adr``) starts: untuned, DR0 = SF12."""
_GATEWAY_CFLIST_HZ: Final = LorawanSection().cflist
"""The agent's default extra channels (``lorawan.cflist_hz``), which the runs' agent configs keep: an
OTAA device learns them from its join-accept, an ABP device here was provisioned with them, so a
LinkADRReq enabling them is not refused (LoRaWAN 1.0.4 §5.3 channel mask)."""
ControlKind = Literal["clock_jump", "broker_outage", "gateway_kill", "clock_set"]
MAX_FRAMES: Final = 2_000_000
"""A scenario bigger than this is a typo, not a test."""
_PROFILE: Final = {
    "container": "milesight/em310-udl",
    "river": "milesight/em500-swl",
    "noise": "milesight/ws302",
    "bike": "imbuildings/people-counter",
    "pedestrian": "imbuildings/people-counter",
    "cabinet": "milesight/ws558",
    "lamp": "nasys/ul20xx",
    "display": "edgegw/display",
}
_USE_CASE: Final = {
    "container": "waste",
    "river": "river",
    "noise": "noise",
    "bike": "counting",
    "pedestrian": "counting",
    "cabinet": "lighting",
    "lamp": "lighting",
    "display": "counting",
}


# --- the fleet -----------------------------------------------------------------------------


@dataclass
class SimDevice:
    name: str
    device: AbpDevice
    model: Model | FirmwareFillLevel | DisplayModel
    """A ``FirmwareFillLevel`` wakes every ``report_interval_s`` and reports by its own policy."""
    report_interval_s: float
    flood_report_interval_s: float
    params: dict[str, int]
    lat_deg: float = 0.0
    lon_deg: float = 0.0
    links: list[radio.Link] = field(default_factory=list)
    sf: int = 7
    cabinet: CabinetModel | None = None
    """A lamp's cabinet: no supply on the circuit, no report."""
    otaa: OtaaIdentity | None = None
    """Set for an OTAA device: it joins before its first uplink (and again if a join is lost)."""
    last_good: bytes | None = None
    awaiting_ack: int | None = None
    """FCnt of its last confirmed uplink while no ACK came for it (LoRaWAN 1.0.4 §4.3.1.2)."""
    retries_left: int = 0
    acks: int = 0
    last_join: ScheduledFrame | None = None
    """Its last join-request the gateway heard (what a ``join_replay`` copies)."""
    join_replays: int = 0
    join_replay_answers: int = 0
    """Join-accepts that came while it was not joining: the gateway answered a replayed join."""
    multicast: list[MulticastMember] = field(default_factory=list)
    """The class C multicast groups it is a member of (keys installed by hand; issue 20)."""
    mac: DeviceMac | None = None
    """Set: the device follows the network's MAC commands (LinkADRReq, NbTrans, DevStatusReq; issue
    20), sends with the ADR bit and the answers it owes in FOpts. None: it stays at ``sf``."""

    @property
    def tx_sf(self) -> int:
        """The spreading factor it sends at now: the network's choice when it follows it, else ``sf``."""
        return self.sf if self.mac is None else self.mac.sf

    def tx_links(self) -> list[radio.Link]:
        """Its links at the TX power it sends with now (the radio model's links assume 14 dBm)."""
        return self.links if self.mac is None else self.mac.links_at_power(self.links)

    @property
    def kind(self) -> str:
        return self.name.split("-", 1)[0]

    @property
    def site(self) -> str:
        return f"{_USE_CASE[self.kind]}/{self.name}"

    def interval_at(self, t_s: float) -> float:
        if isinstance(self.model, RiverModel) and self.model.in_flood(t_s):
            return self.flood_report_interval_s  # the probe's alarm mode (domain.md §3.5)
        return self.report_interval_s

    def silent(self, t_s: float) -> bool:
        return self.cabinet is not None and not self.cabinet.supplied(t_s)


def epoch_s(scenario: Scenario) -> float:
    """Unix time of simulated second 0: local midnight of the scenario's first day."""
    s = scenario.start
    return datetime(s.year, s.month, s.day, tzinfo=ZoneInfo(scenario.timezone)).timestamp()


def sun_days(scenario: Scenario) -> list[SunDay]:
    """Sunrise and sunset of every simulated day at the gateway (NOAA via the gateway's astral)."""
    from gateway.rules.model import Location
    from gateway.rules.schedules import sun_times

    tz = ZoneInfo(scenario.timezone)
    where = Location(scenario.lat_deg, scenario.lon_deg, scenario.timezone)
    out: list[SunDay] = []
    for k in range(math.ceil(scenario.duration_s / SECONDS_PER_DAY) + 1):
        day = scenario.start + timedelta(days=k)
        midnight = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
        times = sun_times(where, day)
        out.append(
            SunDay(
                times.get("sunrise", midnight + 6 * 3600) - midnight,
                times.get("sunset", midnight + 20 * 3600) - midnight,
            )
        )
    return out


class _Builder:
    """Draws devices in a fixed order from one generator, so the same seed gives the same city."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.rng = random.Random(seed)
        self.place = random.Random(seed ^ 0x9E0C)  # positions: kept apart so keys do not move
        self.air = random.Random(seed ^ 0xA1F)
        self.roots = random.Random(seed ^ 0x0AA)  # OTAA root keys: apart, so ABP keys do not move
        self.fleet: list[SimDevice] = []
        self.gateways = [(scenario.lat_deg, scenario.lon_deg)] + [
            (scenario.lat_deg + 0.02 * math.cos(k * 2.1), scenario.lon_deg + 0.03 * math.sin(k * 2.1))
            for k in range(1, scenario.radio.forwarders)
        ]
        if scenario.gateways:  # one forwarder per gateway, at its site (simulator.coverage)
            self.gateways = [(g.lat_deg, g.lon_deg) for g in scenario.gateways]

    def near(self, lat: float, lon: float, radius_m: float) -> tuple[float, float]:
        r = radius_m * math.sqrt(self.place.random())
        a = self.place.uniform(0, 2 * math.pi)
        return lat + r * math.cos(a) / 111_320.0, lon + r * math.sin(a) / (
            111_320.0 * math.cos(math.radians(lat))
        )

    def add(
        self,
        name: str,
        model: Model | FirmwareFillLevel | DisplayModel,
        params: dict[str, int],
        interval_s: float,
        where: tuple[float, float],
        *,
        flood_interval_s: float | None = None,
        cabinet: CabinetModel | None = None,
        profile: str | None = None,
    ) -> None:
        index = len(self.fleet)
        device = AbpDevice(
            dev_eui=bytes.fromhex("70b3d5e75f") + index.to_bytes(3, "big"),
            dev_addr=bytes([0x26, 0x01, 0x20 + (index >> 8 & 0x0F), index & 0xFF]),
            nwk_s_key=self.rng.randbytes(16),
            app_s_key=self.rng.randbytes(16),
            profile=profile or _PROFILE[name.split("-", 1)[0]],
        )
        radio_cfg = self.scenario.radio
        links = [
            radio.Link(
                radio.path_loss_db(radio.distance_m(*where, *gw), radio_cfg.path_loss_exponent)
                + self.air.gauss(0.0, radio_cfg.shadowing_db)
            )
            for gw in self.gateways
        ]
        best = max(link.snr_db for link in links)
        otaa = None
        if name.split("-", 1)[0] in self.scenario.otaa:
            otaa = OtaaIdentity(self.roots.randbytes(16), JOIN_EUI, self.roots.randrange(0, 0x8000))
            device.dev_addr, device.nwk_s_key, device.app_s_key = bytes(4), bytes(16), bytes(16)
        member = SimDevice(
            name,
            device,
            model,
            interval_s,
            interval_s if flood_interval_s is None else flood_interval_s,
            params,
            round(where[0], 6),
            round(where[1], 6),
            links,
            radio.settle_sf(best),
            cabinet,
            otaa,
        )
        if radio_cfg.adr:
            member.mac = DeviceMac(dr=ADR_START_DR, cflist_hz=_GATEWAY_CFLIST_HZ)
        self.fleet.append(member)


def build_fleet(scenario: Scenario, seed: int | None = None) -> list[SimDevice]:
    """The scenario's devices, keys, positions and models, all derived from the seed."""
    b = _Builder(scenario, scenario.seed if seed is None else seed)
    rng = b.rng
    lat0, lon0 = scenario.lat_deg, scenario.lon_deg
    groups = [c for c in scenario.containers for _ in range(c.count)]
    for i, c in enumerate(groups):
        empty_mm = int(rng.uniform(*c.empty_mm))
        first = c.collection_hour * 3600 + i * c.collection_stagger_s
        period = c.collection_every_days * SECONDS_PER_DAY
        collections = [first + k * period for k in range(int(scenario.duration_s // period) + 1)]
        container = ContainerModel(
            rng=random.Random(rng.getrandbits(64)),
            empty_mm=empty_mm,
            full_mm=c.full_mm,
            fill_mm_per_day=rng.uniform(*c.fill_mm_per_day),
            collections_s=[t for t in collections if t < scenario.duration_s],
            battery_pct=rng.randint(80, 100),
            distance_mm=rng.uniform(c.full_mm + 200, empty_mm),
        )
        params = {"empty_distance_mm": empty_mm, "full_distance_mm": c.full_mm}
        where = b.near(lat0, lon0, 6000)
        if c.profile == "edgegw/fill-level":  # the project's node: its firmware decides when to send
            node = FirmwareFillLevel(container, {"report_interval_s": round(c.report_interval_s)})
            b.add(f"container-{i + 1}", node, params, node.measure_interval_s, where, profile=c.profile)
        else:
            b.add(f"container-{i + 1}", container, params, c.report_interval_s, where)
    station = 0
    for r in scenario.rivers:
        _rivers(b, r, station)
        station += r.count
    _noise(b)
    _counters(b)
    _lighting(b)
    _totems(b)
    _physics_faults(b)
    return b.fleet


def _totems(b: _Builder) -> None:
    """A display totem beside each counter (last in the fleet, so the others keep their keys)."""
    group = b.scenario.counters
    if group is None or not group.totems:
        return
    counters = [d for d in b.fleet if isinstance(d.model, CounterModel)]
    for k, counter in enumerate(counters):
        model = DisplayModel(b.rng.randint(3950, 4150), group.totem_report_interval_s)
        where = b.near(counter.lat_deg, counter.lon_deg, 30.0)
        b.add(f"display-{k + 1}", model, {}, group.totem_report_interval_s, where)


def _physics_faults(b: _Builder) -> None:
    """Fires, vandalism and stuck probes are physics: built into the models (docs "Faults")."""
    draw = random.Random(b.scenario.seed ^ 0xF12E)
    by_name = {d.name: d for d in b.fleet}
    for f in b.scenario.faults:
        model = by_name[f.device].model if f.device in by_name else None
        if f.kind == "fire" and isinstance(model, FirmwareFillLevel):
            # +40..+80 °C under the lid within minutes (domain.md §1.3, "Fire signature").
            model.temperature.fires.append(Fire(f.at_s, f.duration_s, draw.uniform(40.0, 80.0)))
        elif f.kind == "vandalism":
            container = model.container if isinstance(model, FirmwareFillLevel) else model
            if isinstance(container, ContainerModel):
                container.vandalism_s.append((f.at_s, f.duration_s))
        elif f.kind == "stuck_sensor" and isinstance(model, RiverModel):
            model.stuck_s.append((f.at_s, f.duration_s))


def _rivers(b: _Builder, r: RiverGroup, first_station: int) -> None:
    rng = b.rng
    # A river runs through town: stations along a line, upstream first.
    source = b.near(b.scenario.lat_deg, b.scenario.lon_deg, 5000)
    heading = b.place.uniform(0, 2 * math.pi)
    for i in range(r.count):
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
        where = (
            source[0] + i * 0.012 * math.cos(heading),
            source[1] + i * 0.016 * math.sin(heading),
        )
        b.add(
            f"river-{first_station + i + 1}",
            river,
            {"probe_level_cm": 0},
            r.report_interval_s,
            where,
            flood_interval_s=r.flood_report_interval_s,
        )


def _noise(b: _Builder) -> None:
    group = b.scenario.noise
    if group is None:
        return
    n = 0
    for site_type, count in group.sites:
        for _ in range(count):
            n += 1
            model_rng = random.Random(b.rng.getrandbits(64))
            model = NoiseModel(
                rng=model_rng,
                site=site_type,
                offset_db=b.rng.uniform(*group.offset_db),
                events=draw_events(model_rng, site_type, b.scenario.duration_s),
                battery_pct=b.rng.randint(70, 100),
                interval_s=group.report_interval_s,
            )
            b.add(
                f"noise-{n}",
                model,
                # What an installer registers: the interval the sensor was configured to report at,
                # the time each of its LAeq reports covers (rules: period_s: $report_interval_s).
                {"report_interval_s": int(group.report_interval_s)},
                group.report_interval_s,
                b.near(b.scenario.lat_deg, b.scenario.lon_deg, 4000),
            )


def _counters(b: _Builder) -> None:
    group = b.scenario.counters
    if group is None:
        return
    k = 0
    for kind, count, totals in group.counters:
        for _ in range(count):
            k += 1
            model = CounterModel(
                rng=random.Random(b.rng.getrandbits(64)),
                kind=kind,
                daily_total=b.rng.uniform(*totals),
                rain_days=group.rain_days,
                battery_v=round(b.rng.uniform(3.3, 3.6), 2),
            )
            b.add(
                f"{kind}-{k}",
                model,
                {},
                group.report_interval_s,
                b.near(b.scenario.lat_deg, b.scenario.lon_deg, 3000),
            )


def _lighting(b: _Builder) -> None:
    group = b.scenario.lighting
    if group is None:
        return
    sun = sun_days(b.scenario)
    faults = b.scenario.faults
    for commune in group.communes:
        centre = b.near(b.scenario.lat_deg, b.scenario.lon_deg, 8000)
        for c in range(commune.cabinets):
            cabinet_name = f"cabinet-{commune.name}-{c + 1}"
            losses = [
                CircuitLoss(f.at_s, f.duration_s)
                for f in faults
                if f.kind == "circuit_loss" and f.device == cabinet_name
            ]
            cabinet = CabinetModel(random.Random(b.rng.getrandbits(64)), [], losses)
            spot = b.near(*centre, 800)
            b.add(cabinet_name, cabinet, {}, group.cabinet_report_interval_s, spot)
            for m in range(commune.lamps_per_cabinet):
                name = f"lamp-{commune.name}-{c + 1}-{m + 1}"
                lamp = LampModel(
                    rng=random.Random(b.rng.getrandbits(64)),
                    rated_w=round(b.rng.uniform(*group.rated_w)),
                    profile=commune.profile,
                    sun=sun,
                )
                cabinet.lamps.append(lamp)
                b.add(name, lamp, {}, group.report_interval_s, b.near(*spot, 400), cabinet=cabinet)
    _fail_lamps(b, faults)


def _fail_lamps(b: _Builder, faults: tuple[Fault, ...]) -> None:
    lamps = [d for d in b.fleet if isinstance(d.model, LampModel)]
    pick = random.Random(b.scenario.seed ^ 0x1A3B)
    for f in faults:
        if f.kind != "lamp_failure" or not lamps:
            continue
        target = next((d for d in lamps if d.name == f.device), None) if f.device else pick.choice(lamps)
        if target is not None and isinstance(target.model, LampModel):
            target.model.failure_s = f.at_s


def registration_csv(fleet: list[SimDevice]) -> str:
    """The fleet as a CSV for ``edgegw device import`` (gateway/provisioning/csv_import.py)."""
    param_names = sorted({p for d in fleet for p in d.params})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    otaa = any(d.otaa is not None for d in fleet)
    writer.writerow(
        ["dev_eui", "profile", "activation", "dev_addr", "nwk_s_key", "app_s_key", "site", "lat", "lon"]
        + (["join_eui", "app_key"] if otaa else [])
        + [f"param.{p}" for p in param_names]
    )
    for d in fleet:
        a = d.device
        abp = d.otaa is None
        writer.writerow(
            [
                a.dev_eui.hex(),
                a.profile,
                "abp" if abp else "otaa",
                a.dev_addr.hex() if abp else "",
                a.nwk_s_key.hex() if abp else "",
                a.app_s_key.hex() if abp else "",
                d.site,
                d.lat_deg,
                d.lon_deg,
            ]
            + (
                []
                if not otaa
                else ["", ""]
                if d.otaa is None
                else [d.otaa.join_eui.hex(), d.otaa.app_key.hex()]
            )
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
    receptions: tuple[radio.Reception, ...] = ()
    """What each forwarder heard; empty: the frame was lost on the air (never reaches the gateway)."""
    corrupted: bytes = b""
    """The bytes a forwarder reports with a failed CRC, when a reception has ``crc_ok`` False."""
    confirmed: bool = False
    """A ConfirmedDataUp: the device waits for an ACK (the runner waits for the downlink)."""

    @property
    def lost(self) -> bool:
        return not any(r.crc_ok for r in self.receptions)

    @property
    def expect(self) -> str:
        if self.lost:
            return "lost"
        if self.kind == "join":
            return "joined"
        return "accepted" if self.accepted else "refused"

    def truth(self) -> dict[str, Any]:
        return {
            "type": "frame",
            "t_s": round(self.t_s, 3),
            "device": self.device,
            "dev_eui": self.dev_eui.hex(),
            "kind": self.kind,
            "expect": self.expect,
            "fcnt": self.fcnt,
            "fport": self.fport,
            "values": self.values,
            "phy_payload": self.phy_payload.hex(),
            "rx": [
                {
                    "forwarder": r.forwarder,
                    "rssi_dbm": r.rssi_dbm,
                    "snr_db": r.snr_db,
                    "sf": r.sf,
                    "crc_ok": r.crc_ok,
                }
                for r in self.receptions
            ],
            **({"confirmed": True} if self.confirmed else {}),
        }


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """Something the runner does to the gateway's world at ``t_s`` (clock, broker, process)."""

    t_s: float
    kind: ControlKind
    fault: Fault

    def truth(self) -> dict[str, Any]:
        return {
            "type": "control",
            "t_s": round(self.t_s, 3),
            "kind": self.kind,
            "duration_s": self.fault.duration_s,
            "jump_s": self.fault.jump_s,
            **({"to_s": self.fault.to_s} if self.kind == "clock_set" else {}),
        }


_PERFECT: Final = (radio.Reception(0, -60.0, 7.0, 7),)


def schedule(
    scenario: Scenario, fleet: list[SimDevice], seed: int | None = None
) -> Iterator[ScheduledFrame | ControlEvent]:
    """Every frame and control event of the run in simulated-time order."""
    used_seed = scenario.seed if seed is None else seed
    rng = random.Random(used_seed ^ 0x5EED)
    air = random.Random(used_seed ^ 0xA112)
    ack = random.Random(used_seed ^ 0xC0F1)  # confirmed uplinks: apart, so other draws do not move
    by_name = {d.name: d for d in fleet}
    device_names = sorted(
        d.name for d in fleet if d.kind in ("container", "river", "noise", "bike", "pedestrian")
    )
    queue: list[tuple[float, int, str, int, int]] = []  # (t_s, tie-break, action, device, fault)
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
            for start, duration in d.model.vandalism_s:
                push(start + 1.0, "event", index)  # tilted: the EM310-UDL's tilt frame
                push(start + duration + 1.0, "event", index)  # upright again, contents still there
    physics = ("lamp_failure", "circuit_loss", "fire", "vandalism", "stuck_sensor")
    for f_index, fault in enumerate(scenario.faults):
        if fault.kind not in physics:  # physics: built into the models
            push(fault.at_s, "fault", -1, f_index)
    gates = [TxGate() for _ in fleet] if scenario.radio.duty_cycle else None
    held: dict[int, list[ScheduledFrame]] = {}  # frames waiting for their device's airtime, in order

    def booked(index: int, frame: ScheduledFrame) -> ScheduledFrame | None:
        """The frame if it may go now; else it waits ("held") for the first time the device may send."""
        if gates is None:
            return frame
        sf = fleet[index].tx_sf if scenario.radio.realistic else 7
        start_s = gates[index].book(frame.t_s, frame_airtime_s(len(frame.phy_payload), sf))
        if start_s <= frame.t_s:
            return frame
        held.setdefault(index, []).append(_replace(frame, t_s=start_s))
        push(start_s, "held", index)
        return None

    last_frame: dict[int, ScheduledFrame] = {}  # each device's last reading, for replays and NbTrans copies
    last_heard: dict[bytes, int] = {}  # DevEUI -> highest counter the gateway has heard

    def copy_of(original: ScheduledFrame, t_s: float, kind: FrameKind) -> ScheduledFrame:
        """The same bytes again: new to the gateway only if it never heard that counter or a later one."""
        fresh = original.fcnt is not None and original.fcnt > last_heard.get(original.dev_eui, -1)
        return _replace(original, t_s=t_s, kind=kind, accepted=fresh, receptions=())

    def track(frame: ScheduledFrame) -> ScheduledFrame:
        if frame.accepted and not frame.lost and frame.fcnt is not None:
            last_heard[frame.dev_eui] = max(frame.fcnt, last_heard.get(frame.dev_eui, -1))
        return frame

    def on_air(d: SimDevice, frame: ScheduledFrame) -> ScheduledFrame:
        if not scenario.radio.realistic:
            sent = _replace(frame, receptions=_PERFECT)
        else:
            heard = radio.hear(air, d.tx_links(), d.tx_sf, scenario.radio.loss, scenario.radio.crc_errors)
            corrupted = radio.corrupt(air, frame.phy_payload) if any(not r.crc_ok for r in heard) else b""
            sent = _replace(frame, receptions=tuple(heard), corrupted=corrupted)
        if sent.kind == "join" and not sent.lost:
            d.last_join = sent  # what a join_replay copies: a DevNonce the gateway has seen
        return sent

    def expect_ack(index: int, frame: ScheduledFrame) -> None:
        """A confirmed uplink went out: check for its ACK once RX2 and RETRANSMIT_TIMEOUT passed."""
        d = fleet[index]
        d.awaiting_ack, d.retries_left = frame.fcnt, scenario.confirmed.retries
        push(frame.t_s + _ack_wait_s(ack), "confirm_check", index)

    def confirm_check(index: int, t_s: float) -> ScheduledFrame | None:
        """No ACK yet: the same frame again (same FCnt, LoRaWAN 1.0.4 §4.3.1.3), or give up."""
        d = fleet[index]
        last = last_frame.get(index)
        if d.awaiting_ack is None or last is None or last.fcnt != d.awaiting_ack or d.silent(t_s):
            return None
        if d.retries_left <= 0:
            d.awaiting_ack = None  # 1.0.4: at most NbTrans transmissions; the frame is given up
            return None
        d.retries_left -= 1
        push(t_s + _ack_wait_s(ack), "confirm_check", index)
        return track(on_air(d, copy_of(last, t_s, "retransmission")))

    for _ in range(MAX_FRAMES):
        if not queue:
            return
        t_s, _, action, index, f_index = heapq.heappop(queue)
        if action == "confirm_check":
            retry = confirm_check(index, t_s)
            if retry is not None:
                yield retry
            continue
        if action == "held":  # booked when it was due; its device may send it now
            frame = held[index].pop(0)
            if frame.kind == "join":
                yield on_air(fleet[index], frame)
                continue
            if frame.kind == "retransmission":
                frame = copy_of(frame, t_s, "retransmission")  # new to the gateway as of now
            frame = track(on_air(fleet[index], frame))
            if frame.kind == "retransmission":
                yield frame
                continue
            last_frame[index] = frame
            if frame.confirmed:
                expect_ack(index, frame)  # before the yield: the runner hands the ACK over meanwhile
            yield frame
            if scenario.radio.retransmissions and air.random() < scenario.radio.retransmissions:
                push(t_s + air.uniform(2.0, 6.0), "retransmit", index)
            continue
        if action in ("report", "event", "flood_frame", "retransmit"):
            d = fleet[index]
            if d.otaa is not None and not d.otaa.joined:
                if action == "report" and not d.silent(t_s):
                    # Not joined yet (or the last join-accept never came): join, retry in 1-3 min.
                    push(t_s + rng.uniform(60.0, 180.0), "report", index)
                    request = d.otaa.join_request(d.device.dev_eui)
                    join = booked(index, ScheduledFrame(t_s, d.name, d.device.dev_eui, "join", request, True))
                    if join is not None:
                        yield on_air(d, join)
                elif action == "report":
                    push(t_s + d.interval_at(t_s), "report", index)
                continue
            if action == "report":
                push(t_s + d.interval_at(t_s), "report", index)
            if d.silent(t_s):
                continue
            if action == "retransmit":
                copy = booked(index, _replace(last_frame[index], t_s=t_s, kind="retransmission"))
                if copy is not None:
                    yield track(on_air(d, copy_of(copy, t_s, "retransmission")))
                continue
            kind: FrameKind = "device_flood" if action == "flood_frame" else "reading"
            reading = _reading(d, t_s, kind, _confirmed(scenario, d, ack))
            if reading is None:  # an own node's policy: nothing to send at this wake-up
                continue
            ready = booked(index, reading)
            if ready is None:
                continue
            frame = track(on_air(d, ready))
            last_frame[index] = frame
            if frame.confirmed:
                expect_ack(index, frame)  # before the yield: the runner hands the ACK over meanwhile
            yield frame
            if scenario.radio.retransmissions and air.random() < scenario.radio.retransmissions:
                # NbTrans 2: the same bytes again after a few seconds (LoRaWAN 1.0.x §5.3, LinkADRReq).
                push(t_s + air.uniform(2.0, 6.0), "retransmit", index)
            for repeat_s in _nb_trans_repeats_s(d, frame, air):
                push(t_s + repeat_s, "retransmit", index)
            continue
        fault = scenario.faults[f_index]
        if fault.kind == "clock_set" and fault.to_s is not None:
            # An absolute time is an offset from the true time of this instant (the runner's
            # clock_offset_s): the clock then runs on from ``to_s`` until ``duration`` ends.
            offset_s = fault.to_s - (epoch_s(scenario) + t_s)
            yield ControlEvent(t_s, "clock_set", replace(fault, jump_s=offset_s))
            continue
        if fault.kind in ("clock_jump", "broker_outage", "gateway_kill"):
            yield ControlEvent(t_s, fault.kind, fault)
            continue
        if fault.kind == "garbage":
            for _ in range(fault.count):
                junk = rng.randbytes(rng.randint(1, 40))
                yield ScheduledFrame(t_s, "-", b"\0" * 8, "garbage", junk, False, receptions=_PERFECT)
            continue
        if fault.kind == "join_replay":
            yield from _join_replays(fleet, fault, t_s, rng)
            continue
        target = by_name[fault.device or rng.choice(device_names)]
        if fault.kind == "device_flood":
            target_index = fleet.index(target)
            for k in range(int(fault.duration_s / fault.interval_s)):
                push(t_s + k * fault.interval_s, "flood_frame", target_index)
        elif fault.kind == "bad_mic":
            for _ in range(fault.count):
                yield _forged(target, t_s, rng)
        elif fleet.index(target) in last_frame:
            original = last_frame[fleet.index(target)]
            for _ in range(fault.count):
                yield track(_replace(copy_of(original, t_s, "replay"), receptions=_PERFECT))
    raise RuntimeError(f"scenario {scenario.name} makes more than {MAX_FRAMES} frames")


def _replace(frame: ScheduledFrame, **changes: Any) -> ScheduledFrame:
    return replace(frame, **changes)


def _reading(d: SimDevice, t_s: float, kind: FrameKind, confirmed: bool = False) -> ScheduledFrame | None:
    m: Measurement | None = d.model.measure(t_s)
    if m is None:
        return None
    fcnt = d.device.fcnt_up
    if d.mac is None:
        phy = d.device.uplink(m.payload, m.fport, confirmed=confirmed)
    else:  # the answers it owes the network ride in FOpts, with the ADR bit (LoRaWAN 1.0.4 §4.3.1)
        phy = d.device.uplink(m.payload, m.fport, confirmed=confirmed, fopts=d.mac.uplink_fopts(), adr=True)
    d.last_good = phy
    return ScheduledFrame(
        t_s, d.name, d.device.dev_eui, kind, phy, True, fcnt, m.fport, m.values, confirmed=confirmed
    )


def _nb_trans_repeats_s(d: SimDevice, frame: ScheduledFrame, air: random.Random) -> list[float]:
    """When a device following the network sends the NbTrans - 1 repetitions of an unconfirmed frame.

    LoRaWAN 1.0.4 §5.3 / §4.3.1.3: each repetition waits for the end of RX2 of the previous one
    (RECEIVE_DELAY2, 2 s) plus a random delay (2-6 s after the previous here, as the scenario's
    ``retransmissions``). Draws only for such devices: the other scenarios' draws do not move.
    """
    if d.mac is None or frame.confirmed or d.mac.nb_trans <= 1:
        return []
    out: list[float] = []
    at_s = 0.0
    for _ in range(d.mac.nb_trans - 1):
        at_s += air.uniform(2.0, 6.0)
        out.append(at_s)
    return out


def _confirmed(scenario: Scenario, d: SimDevice, ack: random.Random) -> bool:
    """Whether this reading goes as ConfirmedDataUp (draws only for the kinds that confirm)."""
    c = scenario.confirmed
    return d.kind in c.kinds and (c.share >= 1.0 or ack.random() < c.share)


def _ack_wait_s(ack: random.Random) -> float:
    """RECEIVE_DELAY2 (2 s, its window included) then RETRANSMIT_TIMEOUT 2 ± 1 s (LoRaWAN 1.0.4 §4.3.1.3)."""
    return 2.0 + ack.uniform(1.0, 3.0)


def _join_replays(
    fleet: list[SimDevice], fault: Fault, t_s: float, rng: random.Random
) -> Iterator[ScheduledFrame]:
    """Copies of a join-request the gateway already heard: its DevNonce is used, it must refuse them
    (LoRaWAN 1.0.4 §6.2.5) and send no join-accept; the device's session stays as it is."""
    heard = [d for d in fleet if d.last_join is not None]
    target = next((d for d in fleet if d.name == fault.device), None) if fault.device else None
    if target is None and heard and fault.device is None:
        target = rng.choice(heard)
    if target is None or target.last_join is None:
        log.warning("join_replay at %.0f s: %s sent no join the gateway heard", t_s, fault.device or "nobody")
        return
    for _ in range(fault.count):
        target.join_replays += 1
        yield replace(target.last_join, t_s=t_s, kind="join_replay", accepted=False, receptions=_PERFECT)


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
    return ScheduledFrame(t_s, d.name, d.device.dev_eui, "bad_mic", phy, False, receptions=_PERFECT)


# --- downlinks -----------------------------------------------------------------------------


def apply_downlink(fleet: list[SimDevice], t_s: float, phy_payload: bytes) -> str | None:
    """Decrypt a downlink for one of the fleet's devices and let its model act on it.

    Returns the device's name when the downlink was for the fleet (whatever it said), else None.
    A lamp follows a UL20xx manual-dimming command (fPort 60: 01, address, level %); a totem
    obeys what its firmware obeys (FPort 20, ``show_counts``); the ACK bit ends the wait of a
    confirmed uplink. A join-accept here (not awaited by a joining device) is counted on the
    device whose AppKey opens it: the gateway answered a replayed join-request.
    """
    from gateway.errors import FrameError
    from gateway.lorawan import phy
    from gateway.lorawan.crypto import SessionKeys

    try:
        frame = phy.parse(phy_payload)
    except FrameError:
        return None
    if isinstance(frame, phy.JoinAccept):
        return _answered_replay(fleet, frame)
    if not isinstance(frame, phy.DataFrame) or frame.uplink:
        return None
    target = next((d for d in fleet if d.device.dev_addr == frame.dev_addr), None)
    if target is None:
        return _multicast_downlink(fleet, t_s, phy_payload)
    if frame.fctrl.ack and target.awaiting_ack is not None:
        target.awaiting_ack = None  # the last confirmed uplink is acknowledged (§4.3.1.2)
        target.acks += 1
    keys = SessionKeys(target.device.nwk_s_key, target.device.app_s_key)
    if target.mac is not None:
        _mac_downlink(target.mac, target, frame, keys)
    if frame.fport and frame.frm_payload:
        plain = keys.crypt_frm_payload(frame.frm_payload, frame.dev_addr, frame.fcnt16, False, frame.fport)
        if isinstance(target.model, LampModel) and frame.fport == 60 and len(plain) >= 3 and plain[0] == 0x01:
            target.model.command_dim(t_s, plain[2])
        if isinstance(target.model, DisplayModel):
            target.model.command(t_s, frame.fport, plain)
    return target.name


def _multicast_downlink(fleet: list[SimDevice], t_s: float, phy_payload: bytes) -> str | None:
    """A multicast frame (LoRaWAN 1.0.4 §18): every member of its group that verifies and decrypts it
    acts on it like on its own downlink (a lamp: UL20xx manual dimming on fPort 60). Returns the first
    member's name, None when no device of the fleet is in the group."""
    first: str | None = None
    for d in fleet:
        for member in d.multicast:
            opened = member.receive(phy_payload)
            if opened is None:
                continue
            fport, plain = opened
            if isinstance(d.model, LampModel) and fport == 60 and len(plain) >= 3 and plain[0] == 0x01:
                d.model.command_dim(t_s, plain[2])
            first = first or d.name
    return first


def _mac_downlink(mac: DeviceMac, target: SimDevice, frame: Any, keys: SessionKeys) -> None:
    """Give a downlink's MAC commands (FOpts, or the FPort-0 payload under NwkSKey) to a following device."""
    commands = bytes(frame.fopts)
    if frame.fport == 0 and frame.frm_payload:
        commands = keys.crypt_frm_payload(frame.frm_payload, frame.dev_addr, frame.fcnt16, False, 0)
    if not commands:
        return
    battery = getattr(target.model, "battery_pct", None)
    # DevStatusAns Battery: 1..254 for 0..100 % (1.0.4 §5.5), 255 when the model has no gauge.
    level = 255 if not isinstance(battery, int) else 1 + round(253 * max(0, min(100, battery)) / 100)
    mac.downlink(commands, battery=level)


def _answered_replay(fleet: list[SimDevice], accept: Any) -> str | None:
    from gateway.errors import InputError
    from gateway.lorawan import phy

    for d in fleet:
        if d.otaa is None or not d.join_replays or d.otaa.pending_nonce is not None:
            continue
        try:
            phy.open_join_accept(accept, d.otaa.app_key)
        except InputError:
            continue  # another device's
        d.join_replay_answers += 1
        log.warning("%s: the gateway answered a replayed join-request", d.name)
        return d.name
    return None
