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
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, Literal, get_args

import yaml

from gateway.errors import ConfigError
from simulator.models.base import SECONDS_PER_DAY
from simulator.models.counter import COUNTER_KINDS, CounterKind
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
    start = top.raw("start", DEFAULT_START)
    if isinstance(start, str):
        try:
            start = date.fromisoformat(start)
        except ValueError as exc:
            raise top.error("start", f"expected a date like 2026-06-01: {start!r}") from exc
    if not isinstance(start, date) or start.weekday() != 0:
        raise top.error("start", f"expected a Monday (YYYY-MM-DD), got {start!r}")
    timezone, lat, lon = "Europe/Paris", DEFAULT_LAT_DEG, DEFAULT_LON_DEG
    where = top.child("location")
    if where is not None:
        lat = where.number("lat", DEFAULT_LAT_DEG, minimum=-90.0)
        lon = where.number("lon", DEFAULT_LON_DEG, minimum=-180.0)
        tz = where.raw("timezone", timezone)
        if not isinstance(tz, str):
            raise where.error("timezone", "expected a text like Europe/Paris")
        timezone = tz
        where.done()
    fleet = top.child("fleet")
    if fleet is None:
        raise top.error("fleet", "missing required key")
    containers = _container_groups(fleet)
    rivers = _river_groups(fleet, duration_s)
    noise = _noise(fleet.child("noise"))
    counters = _counters(fleet.child("counters"))
    lighting = _lighting(fleet.child("lighting"))
    fleet.done()
    radio = _radio(top.child("radio"))
    otaa = top.raw("otaa", [])
    if not isinstance(otaa, list) or not all(kind in DEVICE_KINDS for kind in otaa):
        raise top.error(
            "otaa", f"expected a list of device kinds among {', '.join(DEVICE_KINDS)}, got {otaa!r}"
        )
    scenario = Scenario(
        name, seed, duration_s, speed, containers, rivers, (), file, start, timezone, lat, lon,
        noise, counters, lighting, radio,
    )  # fmt: skip
    names = scenario.device_names()
    container_profiles = [c.profile for c in containers for _ in range(c.count)]
    profiles = {f"container-{i + 1}": p for i, p in enumerate(container_profiles)}
    confirmed = _confirmed(top, file)
    faults: list[Fault] = []
    raw_faults = top.raw("faults", [])
    if not isinstance(raw_faults, list):
        raise top.error("faults", "expected a list")
    for index, item in enumerate(raw_faults):
        faults.append(_fault(_Reader(item, file, f"faults[{index}]"), duration_s, names, profiles))
        _join_replay_target(faults[-1], frozenset(otaa), names, file, index)
    top.done()
    return Scenario(
        name, seed, duration_s, speed, containers, rivers, tuple(faults), file, start, timezone, lat,
        lon, noise, counters, lighting, radio, frozenset(otaa), confirmed,
    )  # fmt: skip


def _container_groups(fleet: _Reader) -> tuple[ContainerGroup, ...]:
    """``containers`` is one group (a mapping) or several (a list of mappings, e.g. one per profile)."""
    raw = fleet.raw("containers")
    if raw is None:
        return ()
    path = fleet.key("containers")
    if isinstance(raw, list):
        return tuple(_containers(_Reader(item, fleet.file, f"{path}[{i}]")) for i, item in enumerate(raw))
    return (_containers(_Reader(raw, fleet.file, path)),)


def _containers(r: _Reader) -> ContainerGroup:
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
        profile=r.raw("profile", "milesight/em310-udl"),
    )
    if group.profile not in CONTAINER_PROFILES:
        raise r.error("profile", f"expected one of {', '.join(CONTAINER_PROFILES)}, got {group.profile!r}")
    if group.report_interval_s < 1:
        raise r.error("report_interval", "must be at least 1 s")
    if group.full_mm >= group.empty_mm[0]:
        raise r.error("full_mm", "must be below empty_mm")
    r.done()
    return group


def _river_groups(fleet: _Reader, duration_s: float) -> tuple[RiverGroup, ...]:
    """``rivers`` is one river (a mapping) or several (a list of mappings, each with a name)."""
    raw = fleet.raw("rivers")
    if raw is None:
        return ()
    path = fleet.key("rivers")
    if isinstance(raw, list):
        groups = [
            _rivers(_Reader(item, fleet.file, f"{path}[{i}]"), duration_s) for i, item in enumerate(raw)
        ]
        return tuple(groups)
    return (_rivers(_Reader(raw, fleet.file, path), duration_s),)


def _rivers(r: _Reader, duration_s: float) -> RiverGroup:
    name = r.raw("name", "river")
    if not isinstance(name, str):
        raise r.error("name", "expected a text")
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
        name=name,
    )
    if min(group.report_interval_s, group.flood_report_interval_s) < 1:
        raise r.error("report_interval", "must be at least 1 s")
    r.done()
    return group


def _noise(r: _Reader | None) -> NoiseGroup | None:
    if r is None:
        return None
    sites = r.child("sites")
    if sites is None:
        raise r.error("sites", "missing required key")
    counts: list[tuple[SiteType, int]] = []
    for site_type in list(sites.doc):
        if site_type not in SITE_TYPES:
            raise sites.error(str(site_type), f"expected one of {', '.join(SITE_TYPES)}")
        counts.append((site_type, sites.integer(site_type)))
    sites.done()
    group = NoiseGroup(
        sites=tuple(counts),
        report_interval_s=r.duration("report_interval", 900.0),
        offset_db=_signed_span(r, "offset_db", (-2.0, 2.0)),
    )
    if group.report_interval_s < 60:
        raise r.error("report_interval", "must be at least 1 min (the model has one level per minute)")
    r.done()
    return group


def _signed_span(r: _Reader, name: str, default: tuple[float, float]) -> tuple[float, float]:
    value = r.raw(name, default)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), float(value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        if value[0] > value[1]:
            raise r.error(name, f"expected min <= max, got {list(value)}")
        return float(value[0]), float(value[1])
    raise r.error(name, f"expected a number or [min, max], got {value!r}")


def _confirmed(top: _Reader, file: str) -> ConfirmedUplinks:
    """``confirmed: [lamp, cabinet]`` or ``confirmed: {kinds: [...], share: 0.1, retries: 2}``."""
    raw = top.raw("confirmed")
    if raw is None:
        return ConfirmedUplinks()
    r = _Reader({"kinds": raw} if isinstance(raw, list) else raw, file, "confirmed")
    kinds = r.raw("kinds", required=True)
    if not isinstance(kinds, list) or not all(kind in DEVICE_KINDS for kind in kinds):
        raise r.error("kinds", f"expected a list of device kinds among {', '.join(DEVICE_KINDS)}: {kinds!r}")
    share = r.number("share", 1.0)
    if share > 1:
        raise r.error("share", "must be a probability (0..1)")
    confirmed = ConfirmedUplinks(frozenset(kinds), share, r.integer("retries", 2))
    r.done()
    return confirmed


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


def _counters(r: _Reader | None) -> CounterGroup | None:
    if r is None:
        return None
    kinds: list[tuple[CounterKind, int, tuple[float, float]]] = []
    plural = {"bikes": "bike", "pedestrians": "pedestrian"}
    for key, kind in plural.items():
        sub = r.child(key)
        if sub is None:
            continue
        assert kind in COUNTER_KINDS
        default_total = (800.0, 2500.0) if kind == "bike" else (3000.0, 6000.0)
        kinds.append((kind, sub.integer("count"), sub.span("daily_total", default_total)))
        sub.done()
    rain = r.raw("rain_days", [])
    if not isinstance(rain, list) or not all(isinstance(d, int) and d >= 0 for d in rain):
        raise r.error("rain_days", f"expected a list of day numbers (0 = the first day), got {rain!r}")
    totems = r.raw("totems", False)
    if not isinstance(totems, bool):
        raise r.error("totems", f"expected true or false, got {totems!r}")
    group = CounterGroup(
        tuple(kinds),
        r.duration("report_interval", 900.0),
        frozenset(rain),
        totems,
        r.duration("totem_report_interval", 3600.0),
    )
    if group.totem_report_interval_s < 60:
        raise r.error("totem_report_interval", "must be at least 1 min")
    if group.report_interval_s < 60:
        raise r.error("report_interval", "must be at least 1 min")
    r.done()
    return group


def _lighting(r: _Reader | None) -> LightingGroup | None:
    if r is None:
        return None
    raw = r.raw("communes", required=True)
    if not isinstance(raw, list) or not raw:
        raise r.error("communes", "expected a non-empty list")
    communes: list[Commune] = []
    for i, item in enumerate(raw):
        c = _Reader(item, r.file, f"{r.key('communes')}[{i}]")
        name = c.raw("name", required=True)
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]+", name):
            raise c.error("name", f"expected lowercase letters and digits, got {name!r}")
        profile = c.raw("profile", "reduced")
        if profile not in DIM_PROFILES:
            raise c.error("profile", f"expected one of {', '.join(DIM_PROFILES)}, got {profile!r}")
        communes.append(
            Commune(
                name, c.integer("cabinets", minimum=1), c.integer("lamps_per_cabinet", minimum=1), profile
            )
        )
        c.done()
    group = LightingGroup(
        communes=tuple(communes),
        rated_w=r.span("rated_w", (30.0, 90.0)),
        report_interval_s=r.duration("report_interval", 3600.0),
        cabinet_report_interval_s=r.duration("cabinet_report_interval", 900.0),
    )
    if min(group.report_interval_s, group.cabinet_report_interval_s) < 60:
        raise r.error("report_interval", "must be at least 1 min")
    r.done()
    return group


def _radio(r: _Reader | None) -> RadioConditions:
    if r is None:
        return RadioConditions()
    radio = RadioConditions(
        forwarders=r.integer("forwarders", 1, minimum=1),
        path_loss_exponent=r.number("path_loss_exponent", 3.0, minimum=2.0),
        shadowing_db=r.number("shadowing_db", 6.0),
        loss=r.number("loss", 0.0),
        crc_errors=r.number("crc_errors", 0.0),
        retransmissions=r.number("retransmissions", 0.0),
        realistic=True,
        duty_cycle=r.raw("duty_cycle", False),
        downlink_loss=r.number("downlink_loss", 0.0),
    )
    if not isinstance(radio.duty_cycle, bool):
        raise r.error("duty_cycle", f"expected true or false, got {radio.duty_cycle!r}")
    if radio.forwarders > 4:
        raise r.error("forwarders", "at most 4")
    for name in ("loss", "crc_errors", "retransmissions", "downlink_loss"):
        if getattr(radio, name) >= 1:
            raise r.error(name, "must be a probability below 1")
    r.done()
    return radio


def _fault(
    r: _Reader, duration_s: float, names: list[str], profiles: Mapping[str, str] | None = None
) -> Fault:
    kind = r.raw("kind", required=True)
    if kind not in FAULT_KINDS:
        raise r.error("kind", f"expected one of {', '.join(FAULT_KINDS)}, got {kind!r}")
    at_s = r.duration("at")
    if at_s >= duration_s:
        raise r.error("at", "is after the end of the scenario")
    device = r.raw("device")
    if device is not None and device not in names:
        raise r.error("device", f"no device {device!r} in the fleet (names: container-N, river-N, ...)")
    if kind in _DEVICE_FAULTS and not names:
        raise r.error("kind", "a fault needs at least one device in the fleet")
    if kind == "lamp_failure" and device is not None and not device.startswith("lamp-"):
        raise r.error("device", "a lamp_failure needs a lamp (lamp-COMMUNE-C-N)")
    if kind == "circuit_loss" and (device is None or not device.startswith("cabinet-")):
        raise r.error("device", "a circuit_loss needs a cabinet (cabinet-COMMUNE-N)")
    _physics_target(r, kind, device, profiles or {})
    fault = Fault(
        at_s=at_s,
        kind=kind,
        count=r.integer("count", 1, minimum=1),
        device=device,
        interval_s=r.duration("interval", 1.0),
        duration_s=r.duration("duration", _DEFAULT_DURATION_S.get(kind, 60.0)),
        jump_s=r.number("jump_s", 0.0, minimum=-365 * 86400.0) if kind == "clock_jump" else 0.0,
        to_s=_clock_to_s(r) if kind == "clock_set" else None,
    )
    if fault.interval_s <= 0:
        raise r.error("interval", "must be > 0")
    r.done()
    return fault


def _physics_target(r: _Reader, kind: str, device: str | None, profiles: Mapping[str, str]) -> None:
    """A fire needs a container with a thermometer (the own node; an EM310-UDL has none), a
    vandalism a container, a stuck sensor a river station."""
    if kind == "fire" and (device is None or profiles.get(device) != "edgegw/fill-level"):
        raise r.error(
            "device",
            f"a fire needs a container of profile edgegw/fill-level (an EM310-UDL measures no "
            f"temperature), got {device!r}",
        )
    if kind == "vandalism" and (device is None or device not in profiles):
        raise r.error("device", f"a vandalism needs a container (container-N), got {device!r}")
    if kind == "stuck_sensor" and (device is None or not device.startswith("river-")):
        raise r.error("device", f"a stuck_sensor needs a river station (river-N), got {device!r}")


def _clock_to_s(r: _Reader) -> float:
    """``to: 1970-01-01T00:00:00Z`` (a date-time, YAML may already have parsed it) or ``to_s: 0``."""
    if r.has("to") == r.has("to_s"):
        raise r.error("to", "a clock_set needs one of to (a UTC date-time) or to_s (Unix seconds)")
    if r.has("to_s"):
        return r.number("to_s", minimum=0.0)
    value = r.raw("to")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise r.error("to", f"expected a date-time like 1970-01-01T00:00:00Z: {value!r}") from exc
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, datetime):
        raise r.error("to", f"expected a date-time like 1970-01-01T00:00:00Z: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
