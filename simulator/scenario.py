"""Scenarios: a fleet, a simulated duration, radio conditions and faults, read from YAML.

Owns the scenario file format (docs/simulator.md) and its loader: errors name the file, the key
path and the reason, as ``gateway.errors.ConfigError``; unknown keys are errors. The values it
returns are plain frozen dataclasses.

It does not build devices nor frames (``simulator.city``), run anything (``simulator.runner``)
nor compute the ground truth (``simulator.truth``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, Literal, get_args

from gateway import textfile
from gateway.errors import ConfigError
from gateway.yamldoc import Node
from simulator.coverage import MAX_GATEWAYS, GatewaySite, roof_sites, site
from simulator.models.base import SECONDS_PER_DAY
from simulator.models.counter import CounterKind
from simulator.models.lighting import DIM_PROFILES, DimProfile
from simulator.models.noise import SITE_TYPES, SiteType

FaultKind = Literal[
    "bad_mic",
    "replay",
    "device_flood",
    "garbage",
    "lamp_failure",
    "circuit_loss",
    "clock_jump",
    "broker_outage",
    "gateway_kill",
    "fire",
    "vandalism",
    "stuck_sensor",
    "clock_set",
    "join_replay",
]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)
_DEVICE_FAULTS: Final = ("bad_mic", "replay", "device_flood", "lamp_failure", "circuit_loss")
_DEFAULT_DURATION_S: Final[dict[str, float]] = {
    "fire": 1800.0,
    "vandalism": 7200.0,
    "stuck_sensor": 86_400.0,
    "clock_set": 3600.0,
}
"""Default ``duration`` of the physics faults (built into simulator.models) and of ``clock_set``."""
CONTAINER_PROFILES: Final = ("milesight/em310-udl", "edgegw/fill-level")
"""What a container group may run: the vendor sensor, or the project's own node (its firmware)."""
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[smhd])+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": float(SECONDS_PER_DAY)}
DEVICE_KINDS: Final = ("container", "river", "noise", "bike", "pedestrian", "cabinet", "lamp", "display")
DEFAULT_START: Final = date(2026, 6, 1)
"""A Monday, with no daylight-saving change in the following weeks."""
DEFAULT_LAT_DEG, DEFAULT_LON_DEG = 43.2965, 5.3698
"""The gateway on a roof in central Marseille (the rules examples use the same point)."""


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
    profile: str = "milesight/em310-udl"
    """``edgegw/fill-level``: the project's own node, run by its firmware (simulator.models.own_nodes)."""


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
    name: str = "river"


@dataclass(frozen=True, slots=True)
class NoiseGroup:
    sites: tuple[tuple[SiteType, int], ...]
    """(site type, how many) in file order."""
    report_interval_s: float
    offset_db: tuple[float, float]


@dataclass(frozen=True, slots=True)
class CounterGroup:
    counters: tuple[tuple[CounterKind, int, tuple[float, float]], ...]
    """(kind, how many, weekday total range) in file order."""
    report_interval_s: float
    rain_days: frozenset[int]
    totems: bool = False
    """One ``display-N`` totem (``edgegw/display``, class C) beside each counter N."""
    totem_report_interval_s: float = 3600.0
    """The totem's heartbeat (firmware/nodes/display.py ``report_interval_s``)."""


@dataclass(frozen=True, slots=True)
class ConfirmedUplinks:
    """Readings sent as ConfirmedDataUp, retransmitted when no ACK comes (LoRaWAN 1.0.4 §4.3.1.3)."""

    kinds: frozenset[str] = frozenset()
    share: float = 1.0
    """Probability that a reading of one of ``kinds`` is confirmed."""
    retries: int = 2
    """Retransmissions of the same frame (same FCnt) at most, when no ACK came."""


@dataclass(frozen=True, slots=True)
class Commune:
    name: str
    cabinets: int
    lamps_per_cabinet: int
    profile: DimProfile


@dataclass(frozen=True, slots=True)
class LightingGroup:
    communes: tuple[Commune, ...]
    rated_w: tuple[float, float]
    report_interval_s: float
    cabinet_report_interval_s: float


@dataclass(frozen=True, slots=True)
class RadioConditions:
    """Log-distance path loss and the forwarders that hear the fleet (docs/simulator.md, "Radio")."""

    forwarders: int = 1
    path_loss_exponent: float = 3.0
    shadowing_db: float = 6.0
    loss: float = 0.0
    """Extra loss probability per frame and forwarder, on top of the SNR-driven loss."""
    crc_errors: float = 0.0
    """Probability that a forwarder also reports a corrupted copy (stat -1) of a frame."""
    retransmissions: float = 0.0
    """Probability that a device sends a frame twice (NbTrans 2, LoRaWAN 1.0.x §5.3): the copy is refused."""
    realistic: bool = False
    """False: every frame heard at -60 dBm / 7 dB SNR, SF7, no loss (exact counts)."""
    duty_cycle: bool = False
    """True: a device waits for its previous frame to leave the air and for its sub-band's 1 %
    (simulator.txgate); False keeps the send times of the schedule as drawn."""
    downlink_loss: float = 0.0
    """Probability that a downlink (join-accepts included) never reaches its device (simulator.runner)."""
    adr: bool = False
    """True: every device follows the network's MAC (``simulator.device_mac``: LinkADRReq, NbTrans,
    DevStatusReq), starting untuned at DR0 (SF12), and sets the ADR bit; False: each stays at the SF
    its best link settles on."""


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float
    kind: FaultKind
    count: int = 1
    device: str | None = None
    interval_s: float = 1.0
    duration_s: float = 60.0
    jump_s: float = 0.0
    to_s: float | None = None
    """``clock_set``: the Unix time the gateway's clock is set to (0: a Pi without RTC booting at 1970)."""
    gateway: str | None = None
    """``gateway_kill`` in a scenario with ``gateways``: the one gateway killed (None: every agent)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    seed: int
    duration_s: float
    speed: float
    containers: tuple[ContainerGroup, ...]
    rivers: tuple[RiverGroup, ...]
    faults: tuple[Fault, ...]
    source: str = "<scenario>"
    start: date = DEFAULT_START
    timezone: str = "Europe/Paris"
    lat_deg: float = DEFAULT_LAT_DEG
    lon_deg: float = DEFAULT_LON_DEG
    noise: NoiseGroup | None = None
    counters: CounterGroup | None = None
    lighting: LightingGroup | None = None
    radio: RadioConditions = RadioConditions()
    otaa: frozenset[str] = frozenset()
    """Device kinds that join by OTAA (``noise``, ``bike``, ``lamp``, ...); the others are ABP."""
    confirmed: ConfirmedUplinks = ConfirmedUplinks()
    gateways: tuple[GatewaySite, ...] = ()
    """Several gateways, each its own agent (``simulator.coverage``, ``simulator.gatewaylab``); empty:
    one gateway at ``lat_deg``/``lon_deg`` with ``radio.forwarders`` forwarders."""

    def device_names(self) -> list[str]:
        """Every device's name in fleet order (``simulator.city.build_fleet`` keeps this order)."""
        names = [f"container-{i + 1}" for i in range(sum(c.count for c in self.containers))]
        names += [f"river-{i + 1}" for i in range(sum(r.count for r in self.rivers))]
        if self.noise is not None:
            names += [f"noise-{i + 1}" for i in range(sum(n for _, n in self.noise.sites))]
        if self.counters is not None:
            k = 0
            for kind, n, _ in self.counters.counters:
                for _ in range(n):
                    k += 1
                    names.append(f"{kind}-{k}")
        if self.lighting is not None:
            for commune in self.lighting.communes:
                for c in range(commune.cabinets):
                    names.append(f"cabinet-{commune.name}-{c + 1}")
                    names += [
                        f"lamp-{commune.name}-{c + 1}-{m + 1}" for m in range(commune.lamps_per_cabinet)
                    ]
        if self.counters is not None and self.counters.totems:  # last: the others keep their keys
            names += [f"display-{k + 1}" for k in range(sum(n for _, n, _ in self.counters.counters))]
        return names


def parse_duration_s(value: Any, error: ConfigError) -> float:
    """Seconds from a number (seconds) or a text like ``90s``, ``15m``, ``6h``, ``1d``, ``2d6h30m``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.replace(" ", "")
        if _DURATION.match(text):
            return sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))
    raise error


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; raises ConfigError(reason, file=, key_path=)."""
    # The strict loader of the agent's files: UTF-8, a repeated key refused, merge keys read alike.
    return parse_scenario(textfile.load_yaml(path), str(path))


# --- reading the document (gateway.yamldoc: key paths in every error) ------------------------


def _duration_s(node: Node) -> float:
    return parse_duration_s(
        node.value, node.fail(f"expected a duration like 90s, 15m, 6h, 1d: {node.value!r}")
    )


def _span(node: Node) -> tuple[float, float]:
    """A number or a [min, max] pair, drawn from per device."""
    value = node.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), float(value)
    if (
        isinstance(value, list | tuple)  # a list in the file, a tuple as a default
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        low, high = float(value[0]), float(value[1])
        if low > high or low < 0:
            raise node.fail(f"expected 0 <= min <= max, got {list(value)}")
        return low, high
    raise node.fail(f"expected a number or [min, max], got {value!r}")


def _signed_span(node: Node) -> tuple[float, float]:
    value = node.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), float(value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        if value[0] > value[1]:
            raise node.fail(f"expected min <= max, got {list(value)}")
        return float(value[0]), float(value[1])
    raise node.fail(f"expected a number or [min, max], got {value!r}")


def _groups(node: Node | None) -> list[Node]:
    """One group (a mapping) or several (a list of mappings, e.g. one per profile); none when absent."""
    if node is None or node.value is None:
        return []
    return node.items() if isinstance(node.value, list) else [node]


_TOP_KEYS: Final = ("name", "seed", "speed", "start", "location", "radio", "otaa", "confirmed", "faults")


def parse_scenario(doc: Any, file: str = "<scenario>") -> Scenario:
    top = Node(doc, file=file).mapping(
        required=("duration", "fleet"),
        optional=(*_TOP_KEYS, "gateways"),
    )
    name = top.get("name", Path(file).stem).as_str()
    seed = top.get("seed", 1).as_int(0)
    duration_s = _duration_s(top["duration"])
    if duration_s <= 0:
        raise top["duration"].fail("must be > 0")
    speed = top.get("speed", 3600.0).as_float(0)
    if speed <= 0:
        raise top["speed"].fail("must be > 0")
    start_node = top.get("start", DEFAULT_START)
    start = start_node.value
    if isinstance(start, str):
        try:
            start = date.fromisoformat(start)
        except ValueError as exc:
            raise start_node.fail(f"expected a date like 2026-06-01: {start!r}") from exc
    if not isinstance(start, date) or start.weekday() != 0:
        raise start_node.fail(f"expected a Monday (YYYY-MM-DD), got {start!r}")
    timezone, lat, lon = "Europe/Paris", DEFAULT_LAT_DEG, DEFAULT_LON_DEG
    where = top.get("location")
    if where is not None:
        where.mapping(optional=("lat", "lon", "timezone"))
        lat = where.get("lat", DEFAULT_LAT_DEG).as_float(-90.0)
        lon = where.get("lon", DEFAULT_LON_DEG).as_float(-180.0)
        timezone = where.get("timezone", timezone).as_str()
    fleet = top["fleet"].mapping(optional=("containers", "rivers", "noise", "counters", "lighting"))
    containers = tuple(_containers(group) for group in _groups(fleet.get("containers")))
    rivers = tuple(_rivers(group, duration_s) for group in _groups(fleet.get("rivers")))
    noise = _noise(fleet.get("noise"))
    counters = _counters(fleet.get("counters"))
    lighting = _lighting(fleet.get("lighting"))
    radio = _radio(top.get("radio"))
    gateways = _gateways(top.get("gateways"), lat, lon)
    if gateways:
        if top.has("radio") and top["radio"].has("forwarders"):
            raise top["radio"].fail_at("forwarders", "with gateways, each gateway is one forwarder")
        # Coverage needs the radio model: with gateways the radio is realistic even without a section.
        radio = replace(radio, forwarders=len(gateways), realistic=True)
    gateway_ids = tuple(g.gateway_id for g in gateways)
    otaa_node = top.get("otaa", [])
    otaa = otaa_node.value
    if not isinstance(otaa, list) or not all(kind in DEVICE_KINDS for kind in otaa):
        raise otaa_node.fail(f"expected a list of device kinds among {', '.join(DEVICE_KINDS)}, got {otaa!r}")
    scenario = Scenario(
        name, seed, duration_s, speed, containers, rivers, (), file, start, timezone, lat, lon,
        noise, counters, lighting, radio,
    )  # fmt: skip
    names = scenario.device_names()
    container_profiles = [c.profile for c in containers for _ in range(c.count)]
    profiles = {f"container-{i + 1}": p for i, p in enumerate(container_profiles)}
    confirmed = _confirmed(top.get("confirmed"))
    faults: list[Fault] = []
    for index, item in enumerate(top.get("faults", []).items()):
        faults.append(_fault(item, duration_s, names, profiles, gateway_ids))
        _join_replay_target(faults[-1], frozenset(otaa), names, file, index)
    return Scenario(
        name, seed, duration_s, speed, containers, rivers, tuple(faults), file, start, timezone, lat,
        lon, noise, counters, lighting, radio, frozenset(otaa), confirmed, gateways,
    )  # fmt: skip


def _containers(r: Node) -> ContainerGroup:
    r.mapping(
        required=("count",),
        optional=("report_interval", "empty_mm", "full_mm", "fill_mm_per_day", "collection", "profile"),
    )
    every, hour, stagger = 1, 6.0, 300.0
    collection = r.get("collection")
    if collection is not None:
        collection.mapping(optional=("every_days", "hour", "stagger"))
        every = collection.get("every_days", 1).as_int(1)
        hour = collection.get("hour", 6.0).as_float(0)
        if hour >= 24:
            raise collection["hour"].fail("must be < 24")
        stagger = _duration_s(collection.get("stagger", 300.0))
    group = ContainerGroup(
        count=r["count"].as_int(0),
        report_interval_s=_duration_s(r.get("report_interval", 4 * 3600.0)),
        empty_mm=_span(r.get("empty_mm", (1800.0, 2200.0))),
        full_mm=r.get("full_mm", 300).as_int(0),
        fill_mm_per_day=_span(r.get("fill_mm_per_day", (100.0, 300.0))),
        collection_every_days=every,
        collection_hour=hour,
        collection_stagger_s=stagger,
        profile=r.get("profile", "milesight/em310-udl").as_choice(CONTAINER_PROFILES),
    )
    if group.report_interval_s < 1:
        raise r.fail_at("report_interval", "must be at least 1 s")
    if group.full_mm >= group.empty_mm[0]:
        raise r.fail_at("full_mm", "must be below empty_mm")
    return group


def _rivers(r: Node, duration_s: float) -> RiverGroup:
    r.mapping(
        required=("count",),
        optional=("name", "flood", "report_interval", "flood_report_interval", "base_cm"),
    )
    start: float | None = None
    rise, peak, recession = (20.0, 40.0), (150.0, 250.0), 3 * 3600.0
    flood = r.get("flood")
    if flood is not None:
        flood.mapping(required=("start",), optional=("rise_cm_per_15min", "peak_rise_cm", "recession"))
        start = _duration_s(flood["start"])
        if start >= duration_s:
            raise flood["start"].fail("is after the end of the scenario")
        rise = _span(flood.get("rise_cm_per_15min", rise))
        if rise[0] <= 0:
            raise flood["rise_cm_per_15min"].fail("must be > 0")
        peak = _span(flood.get("peak_rise_cm", peak))
        recession = _duration_s(flood.get("recession", recession))
        if recession <= 0:
            raise flood["recession"].fail("must be > 0")
    group = RiverGroup(
        count=r["count"].as_int(0),
        report_interval_s=_duration_s(r.get("report_interval", 900.0)),
        flood_report_interval_s=_duration_s(r.get("flood_report_interval", 120.0)),
        base_cm=_span(r.get("base_cm", (20.0, 60.0))),
        flood_start_s=start,
        rise_cm_per_15min=rise,
        peak_rise_cm=peak,
        recession_s=recession,
        name=r.get("name", "river").as_str(),
    )
    if min(group.report_interval_s, group.flood_report_interval_s) < 1:
        raise r.fail_at("report_interval", "must be at least 1 s")
    return group


def _noise(r: Node | None) -> NoiseGroup | None:
    if r is None:
        return None
    r.mapping(required=("sites",), optional=("report_interval", "offset_db"))
    counts: list[tuple[SiteType, int]] = []
    for key, count in r["sites"].entries():
        counts.append((Node(key, file=count.file, path=count.path).as_choice(SITE_TYPES), count.as_int(0)))
    group = NoiseGroup(
        sites=tuple(counts),
        report_interval_s=_duration_s(r.get("report_interval", 900.0)),
        offset_db=_signed_span(r.get("offset_db", (-2.0, 2.0))),
    )
    if group.report_interval_s < 60:
        raise r.fail_at("report_interval", "must be at least 1 min (the model has one level per minute)")
    return group


def _confirmed(node: Node | None) -> ConfirmedUplinks:
    """``confirmed: [lamp, cabinet]`` or ``confirmed: {kinds: [...], share: 0.1, retries: 2}``."""
    if node is None or node.value is None:
        return ConfirmedUplinks()
    if isinstance(node.value, list):
        node = Node({"kinds": node.value}, file=node.file, path=node.path)
    node.mapping(required=("kinds",), optional=("share", "retries"))
    kinds = node["kinds"].value
    if not isinstance(kinds, list) or not all(kind in DEVICE_KINDS for kind in kinds):
        raise node["kinds"].fail(
            f"expected a list of device kinds among {', '.join(DEVICE_KINDS)}: {kinds!r}"
        )
    share = node.get("share", 1.0).as_float(0)
    if share > 1:
        raise node.fail_at("share", "must be a probability (0..1)")
    return ConfirmedUplinks(frozenset(kinds), share, node.get("retries", 2).as_int(0))


def _join_replay_target(fault: Fault, otaa: frozenset[str], names: list[str], file: str, index: int) -> None:
    """A join_replay copies a join-request: its device (or some device) must join by OTAA."""
    if fault.kind != "join_replay":
        return
    if fault.device is None and not any(n.split("-", 1)[0] in otaa for n in names):
        raise ConfigError(
            "a join_replay needs a device that joins by OTAA", file=file, key_path=f"faults[{index}].kind"
        )
    if fault.device is not None and fault.device.split("-", 1)[0] not in otaa:
        raise ConfigError(
            f"{fault.device} does not join by OTAA (otaa: {sorted(otaa)})",
            file=file,
            key_path=f"faults[{index}].device",
        )


def _counters(r: Node | None) -> CounterGroup | None:
    if r is None:
        return None
    plural: dict[str, CounterKind] = {"bikes": "bike", "pedestrians": "pedestrian"}
    r.mapping(optional=(*plural, "rain_days", "totems", "report_interval", "totem_report_interval"))
    kinds: list[tuple[CounterKind, int, tuple[float, float]]] = []
    for key, kind in plural.items():
        sub = r.get(key)
        if sub is None:
            continue
        sub.mapping(required=("count",), optional=("daily_total",))
        default_total = (800.0, 2500.0) if kind == "bike" else (3000.0, 6000.0)
        kinds.append((kind, sub["count"].as_int(0), _span(sub.get("daily_total", default_total))))
    rain_node = r.get("rain_days", [])
    rain = rain_node.value
    if not isinstance(rain, list) or not all(isinstance(d, int) and d >= 0 for d in rain):
        raise rain_node.fail(f"expected a list of day numbers (0 = the first day), got {rain!r}")
    group = CounterGroup(
        tuple(kinds),
        _duration_s(r.get("report_interval", 900.0)),
        frozenset(rain),
        r.get("totems", False).as_bool(),
        _duration_s(r.get("totem_report_interval", 3600.0)),
    )
    if group.totem_report_interval_s < 60:
        raise r.fail_at("totem_report_interval", "must be at least 1 min")
    if group.report_interval_s < 60:
        raise r.fail_at("report_interval", "must be at least 1 min")
    return group


def _lighting(r: Node | None) -> LightingGroup | None:
    if r is None:
        return None
    r.mapping(required=("communes",), optional=("rated_w", "report_interval", "cabinet_report_interval"))
    if not isinstance(r["communes"].value, list) or not r["communes"].value:
        raise r["communes"].fail("expected a non-empty list")
    communes: list[Commune] = []
    for c in r["communes"].items():
        c.mapping(required=("name", "cabinets", "lamps_per_cabinet"), optional=("profile",))
        name = c["name"].value
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]+", name):
            raise c["name"].fail(f"expected lowercase letters and digits, got {name!r}")
        communes.append(
            Commune(
                name,
                c["cabinets"].as_int(1),
                c["lamps_per_cabinet"].as_int(1),
                c.get("profile", "reduced").as_choice(DIM_PROFILES),
            )
        )
    group = LightingGroup(
        communes=tuple(communes),
        rated_w=_span(r.get("rated_w", (30.0, 90.0))),
        report_interval_s=_duration_s(r.get("report_interval", 3600.0)),
        cabinet_report_interval_s=_duration_s(r.get("cabinet_report_interval", 900.0)),
    )
    if min(group.report_interval_s, group.cabinet_report_interval_s) < 60:
        raise r.fail_at("report_interval", "must be at least 1 min")
    return group


def _radio(r: Node | None) -> RadioConditions:
    if r is None:
        return RadioConditions()
    probabilities = ("loss", "crc_errors", "retransmissions", "downlink_loss")
    r.mapping(
        optional=("forwarders", "path_loss_exponent", "shadowing_db", "duty_cycle", "adr", *probabilities)
    )
    forwarders = r.get("forwarders", 1).as_int(1)
    if forwarders > 4:
        raise r["forwarders"].fail("at most 4")
    for name in probabilities:
        if r.get(name, 0.0).as_float(0) >= 1:
            raise r.fail_at(name, "must be a probability below 1")
    return RadioConditions(
        forwarders=forwarders,
        path_loss_exponent=r.get("path_loss_exponent", 3.0).as_float(2.0),
        shadowing_db=r.get("shadowing_db", 6.0).as_float(0),
        loss=r.get("loss", 0.0).as_float(0),
        crc_errors=r.get("crc_errors", 0.0).as_float(0),
        retransmissions=r.get("retransmissions", 0.0).as_float(0),
        realistic=True,
        duty_cycle=r.get("duty_cycle", False).as_bool(),
        downlink_loss=r.get("downlink_loss", 0.0).as_float(0),
        adr=r.get("adr", False).as_bool(),
    )


def _gateways(node: Node | None, lat_deg: float, lon_deg: float) -> tuple[GatewaySite, ...]:
    """``gateways: 3`` (roof-top sites around ``location``) or a list of ``{id, lat, lon}``."""
    if node is None or node.value is None:
        return ()
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        count = node.as_int(1)
        if count > MAX_GATEWAYS:
            raise node.fail(f"at most {MAX_GATEWAYS}")
        return roof_sites(count, lat_deg, lon_deg)
    if not isinstance(node.value, list) or not node.value:
        raise node.fail("expected a number of gateways or a list of {id, lat, lon}")
    if len(node.value) > MAX_GATEWAYS:
        raise node.fail(f"at most {MAX_GATEWAYS} gateways")
    sites: list[GatewaySite] = []
    for index, item in enumerate(node.items()):
        item.mapping(required=("id", "lat", "lon"))
        gateway_id = item["id"].as_str()
        if any(s.gateway_id == gateway_id for s in sites):
            raise item["id"].fail(f"gateway {gateway_id!r} is listed twice")
        try:
            sites.append(
                site(index, gateway_id, item["lat"].as_float(-90.0), item["lon"].as_float(-180.0))
            )
        except ValueError as exc:
            raise item["id"].fail(str(exc)) from exc
    return tuple(sites)


def _fault(
    r: Node,
    duration_s: float,
    names: list[str],
    profiles: Mapping[str, str] | None = None,
    gateway_ids: tuple[str, ...] = (),
) -> Fault:
    kind = r["kind"].as_choice(FAULT_KINDS)
    # jump_s is a clock_jump's; to and to_s are a clock_set's; gateway a gateway_kill's among several
    # gateways: elsewhere they are unknown keys.
    extra: tuple[str, ...] = ()
    if kind == "clock_jump":
        extra = ("jump_s",)
    elif kind == "clock_set":
        extra = ("to", "to_s")
    elif kind == "gateway_kill" and gateway_ids:
        extra = ("gateway",)
    r.mapping(required=("kind", "at"), optional=("device", "count", "interval", "duration", *extra))
    at_s = _duration_s(r["at"])
    if at_s >= duration_s:
        raise r["at"].fail("is after the end of the scenario")
    device_node = r.get("device", None)  # errors about the device name its key, given or not
    device = None if device_node.value is None else device_node.as_str()
    if device is not None and device not in names:
        raise device_node.fail(f"no device {device!r} in the fleet (names: container-N, river-N, ...)")
    if kind in _DEVICE_FAULTS and not names:
        raise r["kind"].fail("a fault needs at least one device in the fleet")
    if kind == "lamp_failure" and device is not None and not device.startswith("lamp-"):
        raise device_node.fail("a lamp_failure needs a lamp (lamp-COMMUNE-C-N)")
    if kind == "circuit_loss" and (device is None or not device.startswith("cabinet-")):
        raise device_node.fail("a circuit_loss needs a cabinet (cabinet-COMMUNE-N)")
    _physics_target(device_node, kind, device, profiles or {})
    fault = Fault(
        at_s=at_s,
        kind=kind,
        count=r.get("count", 1).as_int(1),
        device=device,
        interval_s=_duration_s(r.get("interval", 1.0)),
        duration_s=_duration_s(r.get("duration", _DEFAULT_DURATION_S.get(kind, 60.0))),
        jump_s=r.get("jump_s", 0.0).as_float(-365 * 86400.0) if kind == "clock_jump" else 0.0,
        to_s=_clock_to_s(r) if kind == "clock_set" else None,
        gateway=r["gateway"].as_choice(gateway_ids) if r.has("gateway") else None,
    )
    if fault.interval_s <= 0:
        raise r.fail_at("interval", "must be > 0")
    return fault


def _physics_target(where: Node, kind: str, device: str | None, profiles: Mapping[str, str]) -> None:
    """A fire needs a container with a thermometer (the own node; an EM310-UDL has none), a
    vandalism a container, a stuck sensor a river station (``where``: the fault's device key)."""
    if kind == "fire" and (device is None or profiles.get(device) != "edgegw/fill-level"):
        raise where.fail(
            f"a fire needs a container of profile edgegw/fill-level (an EM310-UDL measures no "
            f"temperature), got {device!r}"
        )
    if kind == "vandalism" and (device is None or device not in profiles):
        raise where.fail(f"a vandalism needs a container (container-N), got {device!r}")
    if kind == "stuck_sensor" and (device is None or not device.startswith("river-")):
        raise where.fail(f"a stuck_sensor needs a river station (river-N), got {device!r}")


def _clock_to_s(r: Node) -> float:
    """``to: 1970-01-01T00:00:00Z`` (a date-time, YAML may already have parsed it) or ``to_s: 0``."""
    if r.has("to") == r.has("to_s"):
        raise r.fail_at("to", "a clock_set needs one of to (a UTC date-time) or to_s (Unix seconds)")
    if r.has("to_s"):
        return r["to_s"].as_float(0)
    value = r["to"].value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise r["to"].fail(f"expected a date-time like 1970-01-01T00:00:00Z: {value!r}") from exc
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, datetime):
        raise r["to"].fail(f"expected a date-time like 1970-01-01T00:00:00Z: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
