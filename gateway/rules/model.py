"""Edge rules as data: the rules file (YAML) → a validated, frozen ``RuleSet``.

Owns the rules file format (``schema_version: 1``, documented in docs/rules.md) and
its typed objects: device selectors, value specs, conditions, alert rules,
aggregate specs, lighting groups, the site location and per-profile / per-device
parameter defaults. Validation stops at the first problem with a ``ConfigError``
naming the file, the dotted key path and the reason, so a bad file never replaces
working rules (the engine keeps the previous ``RuleSet``).

It does not evaluate anything: conditions are evaluated by ``conditions.py`` and
``engine.py``, aggregates by ``aggregates.py``, lighting by ``schedules.py``.
No Python runs from the file: every condition and derivation is a named, built-in kind.
"""

from __future__ import annotations

import fnmatch
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NoReturn

from gateway import textfile
from gateway.errors import ConfigError

SCHEMA_VERSION: Final = 1
Severity = Literal["info", "warning", "critical"]
SEVERITIES: Final = ("info", "warning", "critical")
_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_PARAM_RE: Final = re.compile(r"\$([a-z_][a-z0-9_]*)")
_EUI_RE: Final = re.compile(r"[0-9a-f]{16}")

# Marseille, the metropolis's reference point for astronomical schedules (research/domain.md §5.2).
DEFAULT_LAT_DEG: Final = 43.2965
DEFAULT_LON_DEG: Final = 5.3698
DEFAULT_TIMEZONE: Final = "Europe/Paris"


@dataclass(frozen=True, slots=True)
class Param:
    """A number taken from the device's (or its profile's) parameters, ``$name`` in the file."""

    name: str
    default: float | None = None


Num = float | Param


@dataclass(frozen=True, slots=True)
class Selector:
    """Which devices a rule applies to. Every key given must match; an empty key matches all."""

    dev_euis: frozenset[str] = frozenset()
    profiles: frozenset[str] = frozenset()
    sites: tuple[str, ...] = ()
    """Shell-style globs over the device's site tag (``river/*``)."""

    def matches(self, dev_eui: str, profile: str, site: str) -> bool:
        if self.dev_euis and dev_eui not in self.dev_euis:
            return False
        if self.profiles and profile not in self.profiles:
            return False
        return not self.sites or any(fnmatch.fnmatchcase(site, glob) for glob in self.sites)


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """A number read from a reading: ``field`` * ``scale`` + ``offset``, or a fill % from a distance.

    ``fill_empty``/``fill_full`` (distances at 0 % and 100 %, in the field's unit) turn a distance
    into a fill percentage clamped to 0..100 (research/domain.md §1.3).
    """

    field: str
    scale: Num = 1.0
    offset: Num = 0.0
    fill_empty: Num | None = None
    fill_full: Num | None = None


@dataclass(frozen=True, slots=True)
class Threshold:
    """Active at ``value >= above`` (or ``<= below``); clears only past ``clear`` (hysteresis)."""

    value: ValueSpec
    direction: Literal["above", "below"]
    level: Num
    clear: Num


@dataclass(frozen=True, slots=True)
class RateOfChange:
    """Change of ``value`` per ``per_s`` seconds, by least-squares slope over the last ``window_s``."""

    value: ValueSpec
    window_s: float
    per_s: float
    direction: Literal["above", "below"]
    level: Num
    clear: Num
    min_points: int = 2


@dataclass(frozen=True, slots=True)
class Stuck:
    """Active when the last ``readings`` values lie within ``tolerance`` of each other (a flat line)."""

    value: ValueSpec
    readings: int
    tolerance: float = 0.0


@dataclass(frozen=True, slots=True)
class Flag:
    """Active when a decoded field equals one of ``values`` (``position: tilt``, ``fire: true``)."""

    field: str
    values: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Daylight:
    """Active between sunrise + ``margin_s`` and sunset - ``margin_s`` at the rule set's location.

    For the day-burner check (a lamp drawing power in daylight, research/domain.md §5.6:
    TALQ ``lampUnexpectedOn`` between sunrise + 30 min and sunset - 30 min).
    """

    margin_s: float = 1800.0


@dataclass(frozen=True, slots=True)
class Combine:
    """``all`` (every part active) or ``any`` (at least one part active)."""

    op: Literal["all", "any"]
    parts: tuple[Leaf | Combine, ...]


Leaf = Threshold | RateOfChange | Stuck | Flag | Daylight
Condition = Leaf | Combine


@dataclass(frozen=True, slots=True)
class Silence:
    """No uplink from a device for ``factor`` * ``interval_s`` (the silence watchdog, run by ``tick``)."""

    interval_s: Num
    factor: float = 3.0


@dataclass(frozen=True, slots=True)
class Downlink:
    """Ask the profile's encoder for ``command`` with ``params``, for ``to`` (None: the device itself)."""

    command: str
    params: Mapping[str, object] = field(default_factory=dict)
    to: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule: devices, a condition with debounce, a severity, and actions on raise/clear."""

    id: str
    selector: Selector
    condition: Condition | Silence
    severity: Severity = "warning"
    message: str = ""
    for_s: float = 0.0
    for_readings: int = 1
    clear_for_s: float = 0.0
    clear_for_readings: int = 1
    on_raise: tuple[Downlink, ...] = ()
    on_clear: tuple[Downlink, ...] = ()


@dataclass(frozen=True, slots=True)
class LeqSpec:
    """Energetic-average LAeq of ``field`` per interval; L10/L50/L90 when ``percentiles``."""

    field: str
    intervals_s: tuple[int, ...] = (900, 3600)
    percentiles: bool = False


@dataclass(frozen=True, slots=True)
class CountSpec:
    """Passages per interval, per day and year-to-date, one series per field (direction).

    ``mode``: ``increment`` (each reading carries the passages since the last one) or
    ``cumulative`` (a counter since power-up: deltas are taken, a backwards step is a reset).
    """

    fields: tuple[str, ...]
    mode: Literal["increment", "cumulative"] = "increment"
    intervals_s: tuple[int, ...] = (3600,)


@dataclass(frozen=True, slots=True)
class DisplaySpec:
    """Push today's and the year-to-date totals to a class C display every ``every_s`` seconds."""

    to: str
    command: str
    every_s: float = 300.0
    today_param: str = "today"
    year_param: str = "year"


@dataclass(frozen=True, slots=True)
class FillSpec:
    """Container fill rate (% per day) and predicted time to full, one record per reading.

    The rate is the least-squares slope of the fill % over the readings since the last
    emptying (a drop of ``emptied_drop_pct`` or more), at most ``window_s`` back; the
    prediction is when that rate reaches ``full_pct`` (LwM2M 3435 "average filling speed",
    "forecast full date"; research/domain.md §1.4).
    """

    value: ValueSpec
    window_s: float = 7 * 86400.0
    full_pct: Num = 100.0
    emptied_drop_pct: float = 20.0
    min_span_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Aggregate:
    """An aggregate computed at the edge and emitted as a record (noise levels, counts, fill rate)."""

    id: str
    selector: Selector
    leq: LeqSpec | None = None
    lden_field: str | None = None
    count: CountSpec | None = None
    display: DisplaySpec | None = None
    fill: FillSpec | None = None


@dataclass(frozen=True, slots=True)
class Location:
    lat_deg: float = DEFAULT_LAT_DEG
    lon_deg: float = DEFAULT_LON_DEG
    timezone: str = DEFAULT_TIMEZONE


Anchor = Literal["sunset", "sunrise", "dusk", "dawn", "midnight_solar", "clock"]
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Step:
    """From this moment of the night on, lamps are at ``level_pct`` (0 = off).

    ``anchor`` is a sun event (or ``midnight_solar``, halfway between sunset and sunrise)
    plus ``offset_s``, or a local clock time ``clock_s`` (seconds after midnight; times
    before noon belong to the morning after). ``days`` limits the step to nights
    starting on those weekdays (0 = Monday).
    """

    anchor: Anchor
    level_pct: int
    offset_s: float = 0.0
    clock_s: int = 0
    days: frozenset[int] = frozenset(range(7))


@dataclass(frozen=True, slots=True)
class LightingGroup:
    """A group of lamp controllers that share one dimming schedule."""

    id: str
    selector: Selector
    command: str
    level_param: str
    steps: tuple[Step, ...]
    location: Location
    extra_params: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything one rules file says, validated. Build it with ``RuleSet.load`` or ``RuleSet.parse``."""

    rules: tuple[Rule, ...] = ()
    aggregates: tuple[Aggregate, ...] = ()
    lighting: tuple[LightingGroup, ...] = ()
    location: Location = Location()
    profile_params: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    device_params: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def load(cls, path: Path | str) -> RuleSet:
        """Read and validate a rules file; ConfigError (file, key path, reason) if it is not valid."""
        # Not UTF-8 (a file saved in Latin-1) is a ConfigError naming the byte and the line, like any
        # other invalid file: a reload keeps the previous rules, a start runs without rules.
        return cls.parse(textfile.read_text(path), file=str(path))

    @classmethod
    def parse(cls, text: str, *, file: str = "<rules>") -> RuleSet:
        doc = textfile.parse_yaml(text, file=file)  # a repeated key is refused
        try:
            return _Reader(file).ruleset(doc)
        except RecursionError as exc:  # all/any conditions nest; so does the reader
            raise ConfigError("conditions nested too deeply", file=file) from exc

    def params_for(self, dev_eui: str, profile: str) -> dict[str, float]:
        """The device's parameters: its own values over its profile's."""
        merged = dict(self.profile_params.get(profile, {}))
        merged.update(self.device_params.get(dev_eui, {}))
        return merged




class _Reader:
    """Turns the parsed YAML into the typed objects, tracking the key path for errors."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, path: str, reason: str) -> NoReturn:
        raise ConfigError(reason, file=self.file, key_path=path or None)

    # -- primitives ---------------------------------------------------------------------------

    def mapping(
        self, obj: object, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if not isinstance(obj, dict):
            self.fail(path, f"expected a mapping, got {type(obj).__name__}")
        for key in obj:
            if key not in allowed:
                self.fail(_join(path, str(key)), f"unknown key (expected one of: {', '.join(allowed)})")
        for key in required:
            if key not in obj:
                self.fail(_join(path, key), "required key is missing")
        return obj

    def free_mapping(self, obj: object, path: str) -> dict[str, Any]:
        """A mapping with any string keys (parameters of a command, defaults per device)."""
        if obj is None:
            return {}
        if not isinstance(obj, dict):
            self.fail(path, f"expected a mapping, got {type(obj).__name__}")
        for key in obj:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {key!r}")
        return obj

    def number(self, obj: object, path: str, *, minimum: float | None = None) -> float:
        if isinstance(obj, bool) or not isinstance(obj, int | float):
            self.fail(path, f"expected a number, got {obj!r}")
        if minimum is not None and obj < minimum:
            self.fail(path, f"must be >= {minimum:g}, got {obj!r}")
        try:
            return float(obj)
        except OverflowError:  # a YAML integer has no size limit; a float has
            self.fail(path, f"number out of range: {str(obj)[:20]}...")

    def integer(self, obj: object, path: str, *, minimum: int) -> int:
        if isinstance(obj, bool) or not isinstance(obj, int):
            self.fail(path, f"expected an integer, got {obj!r}")
        if obj < minimum:
            self.fail(path, f"must be >= {minimum}, got {obj!r}")
        return obj

    def num(self, obj: object, path: str) -> Num:
        """A number, or ``$name`` (a device parameter), or ``{param: name, default: N}``."""
        if isinstance(obj, str):
            match = _PARAM_RE.fullmatch(obj)
            if not match:
                self.fail(path, f"expected a number or $parameter, got {obj!r}")
            return Param(match.group(1))
        if isinstance(obj, dict):
            spec = self.mapping(obj, path, ("param", "default"), ("param",))
            name = self.string(spec["param"], _join(path, "param"))
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                self.fail(_join(path, "param"), f"not a parameter name: {name!r}")
            default = self.number(spec["default"], _join(path, "default")) if "default" in spec else None
            return Param(name, default)
        return self.number(obj, path)

    def string(self, obj: object, path: str) -> str:
        if not isinstance(obj, str) or not obj:
            self.fail(path, f"expected a non-empty string, got {obj!r}")
        return obj

    def ident(self, obj: object, path: str) -> str:
        text = self.string(obj, path)
        if not _ID_RE.fullmatch(text):
            self.fail(path, f"ids are lowercase letters, digits, '_', '-', '.', got {text!r}")
        return text

    def eui(self, obj: object, path: str) -> str:
        text = self.string(obj, path).lower().replace(":", "").replace("-", "")
        if not _EUI_RE.fullmatch(text):
            self.fail(path, f"expected a DevEUI (16 hex digits), got {obj!r}")
        return text

    def str_list(self, obj: object, path: str) -> list[str]:
        items = obj if isinstance(obj, list) else [obj]
        return [self.string(item, f"{path}[{i}]") for i, item in enumerate(items)]

    # -- file ---------------------------------------------------------------------------------

    def ruleset(self, doc: object) -> RuleSet:
        if doc is None:
            doc = {}
        top = self.mapping(
            doc, "", ("schema_version", "location", "defaults", "rules", "aggregates", "lighting")
        )
        version = top.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            self.fail(
                "schema_version", f"unsupported version {version!r} (this agent reads {SCHEMA_VERSION})"
            )
        location = self.location(top["location"], "location") if "location" in top else Location()
        profile_params, device_params = self.defaults(top.get("defaults", {}), "defaults")
        rules = tuple(self.rule(r, f"rules[{i}]") for i, r in enumerate(self.seq(top, "rules")))
        aggregates = tuple(
            self.aggregate(a, f"aggregates[{i}]") for i, a in enumerate(self.seq(top, "aggregates"))
        )
        lighting = tuple(
            self.lighting(g, f"lighting[{i}]", location) for i, g in enumerate(self.seq(top, "lighting"))
        )
        ids: tuple[tuple[str, list[str]], ...] = (
            ("rules", [r.id for r in rules]),
            ("aggregates", [a.id for a in aggregates]),
            ("lighting", [g.id for g in lighting]),
        )
        for kind, names in ids:
            for i, name in enumerate(names):
                if name in names[:i]:
                    self.fail(f"{kind}[{i}].id", f"duplicate id {name!r}")
        return RuleSet(
            rules=rules,
            aggregates=aggregates,
            lighting=lighting,
            location=location,
            profile_params=profile_params,
            device_params=device_params,
            source=self.file,
        )

    def seq(self, top: Mapping[str, Any], key: str) -> list[Any]:
        items = top.get(key, [])
        if items is None:
            return []
        if not isinstance(items, list):
            self.fail(key, "expected a list")
        return items

    def location(self, obj: object, path: str) -> Location:
        spec = self.mapping(obj, path, ("lat", "lon", "timezone"))
        lat = self.number(spec.get("lat", DEFAULT_LAT_DEG), _join(path, "lat"))
        lon = self.number(spec.get("lon", DEFAULT_LON_DEG), _join(path, "lon"))
        if not -90 <= lat <= 90:
            self.fail(_join(path, "lat"), f"latitude must be in -90..90, got {lat:g}")
        if not -180 <= lon <= 180:
            self.fail(_join(path, "lon"), f"longitude must be in -180..180, got {lon:g}")
        tz = self.string(spec.get("timezone", DEFAULT_TIMEZONE), _join(path, "timezone"))
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: name too long
            self.fail(_join(path, "timezone"), f"unknown time zone {tz!r}: {exc}")
        return Location(lat, lon, tz)

    def defaults(
        self, obj: object, path: str
    ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        spec = self.mapping(obj if obj is not None else {}, path, ("profiles", "devices"))
        out: list[dict[str, dict[str, float]]] = []
        for key in ("profiles", "devices"):
            table = self.free_mapping(spec.get(key), _join(path, key))
            parsed: dict[str, dict[str, float]] = {}
            for name, params in table.items():
                where = _join(_join(path, key), str(name))
                ident = self.eui(name, where) if key == "devices" else self.string(name, where)
                values = self.free_mapping(params, where)
                parsed[ident] = {str(k): self.number(v, _join(where, str(k))) for k, v in values.items()}
            out.append(parsed)
        return out[0], out[1]

    def selector(self, obj: object, path: str) -> Selector:
        spec = self.mapping(obj, path, ("dev_euis", "profiles", "sites"))
        if not spec:
            self.fail(path, "select devices by at least one of dev_euis, profiles, sites")
        euis = spec.get("dev_euis", [])
        euis = euis if isinstance(euis, list) else [euis]
        return Selector(
            dev_euis=frozenset(self.eui(e, f"{path}.dev_euis[{i}]") for i, e in enumerate(euis)),
            profiles=frozenset(self.str_list(spec.get("profiles", []), _join(path, "profiles"))),
            sites=tuple(self.str_list(spec.get("sites", []), _join(path, "sites"))),
        )

    def value(self, obj: object, path: str) -> ValueSpec:
        if isinstance(obj, str):
            return ValueSpec(self.string(obj, path))
        spec = self.mapping(obj, path, ("field", "scale", "offset", "fill_empty", "fill_full"), ("field",))
        has_fill = ("fill_empty" in spec, "fill_full" in spec)
        if any(has_fill) and not all(has_fill):
            self.fail(path, "fill_empty and fill_full go together")
        return ValueSpec(
            field=self.string(spec["field"], _join(path, "field")),
            scale=self.num(spec.get("scale", 1.0), _join(path, "scale")),
            offset=self.num(spec.get("offset", 0.0), _join(path, "offset")),
            fill_empty=self.num(spec["fill_empty"], _join(path, "fill_empty")) if all(has_fill) else None,
            fill_full=self.num(spec["fill_full"], _join(path, "fill_full")) if all(has_fill) else None,
        )

    def direction(self, spec: Mapping[str, Any], path: str) -> tuple[Literal["above", "below"], Num, Num]:
        """``above`` + optional ``clear_below``, or ``below`` + optional ``clear_above``."""
        if ("above" in spec) == ("below" in spec):
            self.fail(path, "give exactly one of above, below")
        if "above" in spec:
            if "clear_above" in spec:
                self.fail(_join(path, "clear_above"), "with 'above', hysteresis is 'clear_below'")
            level = self.num(spec["above"], _join(path, "above"))
            clear = self.num(spec.get("clear_below", spec["above"]), _join(path, "clear_below"))
            if isinstance(level, float) and isinstance(clear, float) and clear > level:
                self.fail(_join(path, "clear_below"), f"must be <= above ({level:g}), got {clear:g}")
            return "above", level, clear
        if "clear_below" in spec:
            self.fail(_join(path, "clear_below"), "with 'below', hysteresis is 'clear_above'")
        level = self.num(spec["below"], _join(path, "below"))
        clear = self.num(spec.get("clear_above", spec["below"]), _join(path, "clear_above"))
        if isinstance(level, float) and isinstance(clear, float) and clear < level:
            self.fail(_join(path, "clear_above"), f"must be >= below ({level:g}), got {clear:g}")
        return "below", level, clear

    def condition(self, obj: object, path: str) -> Condition:
        kinds = ("threshold", "rate_of_change", "stuck", "flag", "daylight", "all", "any")
        spec = self.mapping(obj, path, kinds)
        if len(spec) != 1:
            self.fail(path, f"give exactly one condition kind ({', '.join(kinds)})")
        kind, body = next(iter(spec.items()))
        where = _join(path, kind)
        if kind in ("all", "any"):
            if not isinstance(body, list) or not body:
                self.fail(where, "expected a non-empty list of conditions")
            parts = tuple(self.condition(part, f"{where}[{i}]") for i, part in enumerate(body))
            return Combine("all" if kind == "all" else "any", parts)
        if kind == "threshold":
            t = self.mapping(
                body, where, ("value", "above", "below", "clear_below", "clear_above"), ("value",)
            )
            direction, level, clear = self.direction(t, where)
            return Threshold(self.value(t["value"], _join(where, "value")), direction, level, clear)
        if kind == "rate_of_change":
            r = self.mapping(
                body,
                where,
                ("value", "window_s", "per_s", "above", "below", "clear_below", "clear_above", "min_points"),
                ("value", "window_s"),
            )
            direction, level, clear = self.direction(r, where)
            window_s = self.number(r["window_s"], _join(where, "window_s"), minimum=1)
            return RateOfChange(
                value=self.value(r["value"], _join(where, "value")),
                window_s=window_s,
                per_s=self.number(r.get("per_s", window_s), _join(where, "per_s"), minimum=1),
                direction=direction,
                level=level,
                clear=clear,
                min_points=self.integer(r.get("min_points", 2), _join(where, "min_points"), minimum=2),
            )
        if kind == "daylight":
            d = self.mapping(body if body is not None else {}, where, ("margin_s",))
            return Daylight(self.number(d.get("margin_s", 1800.0), _join(where, "margin_s"), minimum=0))
        if kind == "stuck":
            s = self.mapping(body, where, ("value", "readings", "tolerance"), ("value", "readings"))
            return Stuck(
                self.value(s["value"], _join(where, "value")),
                self.integer(s["readings"], _join(where, "readings"), minimum=2),
                self.number(s.get("tolerance", 0.0), _join(where, "tolerance"), minimum=0),
            )
        f = self.mapping(body, where, ("field", "equals", "in"), ("field",))
        if ("equals" in f) == ("in" in f):
            self.fail(where, "give exactly one of equals, in")
        values = f["in"] if "in" in f else [f["equals"]]
        if not isinstance(values, list) or not values:
            self.fail(_join(where, "in"), "expected a non-empty list")
        for i, v in enumerate(values):
            if not isinstance(v, str | int | float | bool):
                self.fail(f"{where}.in[{i}]", f"expected a scalar, got {v!r}")
        return Flag(self.string(f["field"], _join(where, "field")), tuple(values))

    def downlinks(self, obj: object, path: str) -> tuple[Downlink, ...]:
        if obj is None:
            return ()
        if not isinstance(obj, list):
            self.fail(path, "expected a list of actions")
        out: list[Downlink] = []
        for i, item in enumerate(obj):
            where = f"{path}[{i}]"
            action = self.mapping(item, where, ("downlink",), ("downlink",))
            d = self.mapping(
                action["downlink"], _join(where, "downlink"), ("command", "params", "to"), ("command",)
            )
            params = self.free_mapping(d.get("params"), _join(where, "downlink.params"))
            out.append(
                Downlink(
                    command=self.string(d["command"], _join(where, "downlink.command")),
                    params=dict(params),
                    to=self.eui(d["to"], _join(where, "downlink.to")) if "to" in d else None,
                )
            )
        return tuple(out)

    def rule(self, obj: object, path: str) -> Rule:
        keys = (
            "id", "devices", "when", "silence", "severity", "message", "for_s", "for_readings",
            "clear_for_s", "clear_for_readings", "on_raise", "on_clear",
        )  # fmt: skip
        spec = self.mapping(obj, path, keys, ("id", "devices"))
        if ("when" in spec) == ("silence" in spec):
            self.fail(path, "give exactly one of when (a condition) or silence (the watchdog)")
        condition: Condition | Silence
        if "silence" in spec:
            s = self.mapping(
                spec["silence"], _join(path, "silence"), ("interval_s", "factor"), ("interval_s",)
            )
            condition = Silence(
                self.num(s["interval_s"], _join(path, "silence.interval_s")),
                self.number(s.get("factor", 3.0), _join(path, "silence.factor"), minimum=1),
            )
        else:
            condition = self.condition(spec["when"], _join(path, "when"))
        severity = spec.get("severity", "warning")
        if severity not in SEVERITIES:
            self.fail(_join(path, "severity"), f"expected one of {', '.join(SEVERITIES)}, got {severity!r}")
        message = spec.get("message", "")
        if not isinstance(message, str):
            self.fail(_join(path, "message"), "expected a string")
        return Rule(
            id=self.ident(spec["id"], _join(path, "id")),
            selector=self.selector(spec["devices"], _join(path, "devices")),
            condition=condition,
            severity=severity,
            message=message,
            for_s=self.number(spec.get("for_s", 0.0), _join(path, "for_s"), minimum=0),
            for_readings=self.integer(spec.get("for_readings", 1), _join(path, "for_readings"), minimum=1),
            clear_for_s=self.number(spec.get("clear_for_s", 0.0), _join(path, "clear_for_s"), minimum=0),
            clear_for_readings=self.integer(
                spec.get("clear_for_readings", 1), _join(path, "clear_for_readings"), minimum=1
            ),
            on_raise=self.downlinks(spec.get("on_raise"), _join(path, "on_raise")),
            on_clear=self.downlinks(spec.get("on_clear"), _join(path, "on_clear")),
        )

    def intervals(self, obj: object, path: str, default: tuple[int, ...]) -> tuple[int, ...]:
        if obj is None:
            return default
        if not isinstance(obj, list) or not obj:
            self.fail(path, "expected a non-empty list of seconds")
        out = tuple(self.integer(v, f"{path}[{i}]", minimum=60) for i, v in enumerate(obj))
        for i, v in enumerate(out):
            if 3600 % v:
                self.fail(f"{path}[{i}]", f"an interval must divide an hour (3600 s), got {v}")
        return out

    def aggregate(self, obj: object, path: str) -> Aggregate:
        spec = self.mapping(
            obj, path, ("id", "devices", "leq", "lden", "count", "display", "fill"), ("id", "devices")
        )
        if not any(k in spec for k in ("leq", "lden", "count", "fill")):
            self.fail(path, "give at least one of leq, lden, count, fill")
        fill = None
        if "fill" in spec:
            where = _join(path, "fill")
            s = self.mapping(
                spec["fill"],
                where,
                ("value", "window_s", "full_pct", "emptied_drop_pct", "min_span_s"),
                ("value",),
            )
            fill = FillSpec(
                value=self.value(s["value"], _join(where, "value")),
                window_s=self.number(s.get("window_s", 7 * 86400.0), _join(where, "window_s"), minimum=3600),
                full_pct=self.num(s.get("full_pct", 100.0), _join(where, "full_pct")),
                emptied_drop_pct=self.number(
                    s.get("emptied_drop_pct", 20.0), _join(where, "emptied_drop_pct"), minimum=1
                ),
                min_span_s=self.number(s.get("min_span_s", 3600.0), _join(where, "min_span_s"), minimum=0),
            )
        leq = None
        if "leq" in spec:
            where = _join(path, "leq")
            s = self.mapping(spec["leq"], where, ("field", "intervals_s", "percentiles"), ("field",))
            percentiles = s.get("percentiles", False)
            if not isinstance(percentiles, bool):
                self.fail(_join(where, "percentiles"), "expected true or false")
            leq = LeqSpec(
                self.string(s["field"], _join(where, "field")),
                self.intervals(s.get("intervals_s"), _join(where, "intervals_s"), (900, 3600)),
                percentiles,
            )
        lden = None
        if "lden" in spec:
            s = self.mapping(spec["lden"], _join(path, "lden"), ("field",), ("field",))
            lden = self.string(s["field"], _join(path, "lden.field"))
        count = None
        if "count" in spec:
            where = _join(path, "count")
            s = self.mapping(spec["count"], where, ("fields", "mode", "intervals_s"), ("fields",))
            mode = s.get("mode", "increment")
            if mode not in ("increment", "cumulative"):
                self.fail(_join(where, "mode"), f"expected increment or cumulative, got {mode!r}")
            count = CountSpec(
                tuple(self.str_list(s["fields"], _join(where, "fields"))),
                mode,
                self.intervals(s.get("intervals_s"), _join(where, "intervals_s"), (3600,)),
            )
        display = None
        if "display" in spec:
            where = _join(path, "display")
            if count is None:
                self.fail(where, "a display shows counts: add a count section")
            s = self.mapping(
                spec["display"],
                where,
                ("to", "command", "every_s", "today_param", "year_param"),
                ("to", "command"),
            )
            display = DisplaySpec(
                to=self.eui(s["to"], _join(where, "to")),
                command=self.string(s["command"], _join(where, "command")),
                every_s=self.number(s.get("every_s", 300.0), _join(where, "every_s"), minimum=60),
                today_param=self.string(s.get("today_param", "today"), _join(where, "today_param")),
                year_param=self.string(s.get("year_param", "year"), _join(where, "year_param")),
            )
        return Aggregate(
            id=self.ident(spec["id"], _join(path, "id")),
            selector=self.selector(spec["devices"], _join(path, "devices")),
            leq=leq,
            lden_field=lden,
            count=count,
            display=display,
            fill=fill,
        )

    def lighting(self, obj: object, path: str, location: Location) -> LightingGroup:
        from gateway.rules.schedules import PRESETS  # the presets are schedule knowledge

        keys = ("id", "devices", "command", "level_param", "params", "preset", "steps", "location")
        spec = self.mapping(obj, path, keys, ("id", "devices", "command"))
        if ("preset" in spec) == ("steps" in spec):
            self.fail(path, "give exactly one of preset, steps")
        if "preset" in spec:
            name = spec["preset"]
            if not isinstance(name, str) or name not in PRESETS:
                self.fail(_join(path, "preset"), f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
            raw_steps: object = PRESETS[name]
        else:
            raw_steps = spec["steps"]
        if not isinstance(raw_steps, list) or not raw_steps:
            self.fail(_join(path, "steps"), "expected a non-empty list of steps")
        steps = tuple(self.step(s, f"{path}.steps[{i}]") for i, s in enumerate(raw_steps))
        params = self.free_mapping(spec.get("params"), _join(path, "params"))
        return LightingGroup(
            id=self.ident(spec["id"], _join(path, "id")),
            selector=self.selector(spec["devices"], _join(path, "devices")),
            command=self.string(spec["command"], _join(path, "command")),
            level_param=self.string(spec.get("level_param", "level_pct"), _join(path, "level_param")),
            steps=steps,
            location=self.location(spec["location"], _join(path, "location"))
            if "location" in spec
            else location,
            extra_params=dict(params),
        )

    def step(self, obj: object, path: str) -> Step:
        spec = self.mapping(obj, path, ("at", "level_pct", "days"), ("at", "level_pct"))
        level = self.integer(spec["level_pct"], _join(path, "level_pct"), minimum=0)
        if level > 100:
            self.fail(_join(path, "level_pct"), f"must be in 0..100, got {level}")
        days = frozenset(range(7))
        if "days" in spec:
            names = self.str_list(spec["days"], _join(path, "days"))
            for i, n in enumerate(names):
                if n not in WEEKDAYS:
                    self.fail(f"{path}.days[{i}]", f"expected one of {', '.join(WEEKDAYS)}, got {n!r}")
            days = frozenset(WEEKDAYS.index(n) for n in names)
        at = self.string(spec["at"], _join(path, "at")).replace(" ", "")
        clock = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at)
        if clock:
            return Step(
                "clock", level, clock_s=int(clock.group(1)) * 3600 + int(clock.group(2)) * 60, days=days
            )
        match = re.fullmatch(r"(sunset|sunrise|dusk|dawn|midnight_solar)(?:([+-])(\d{1,6})(min|h))?", at)
        if not match:
            self.fail(
                _join(path, "at"),
                f"expected HH:MM or sunset|sunrise|dusk|dawn|midnight_solar[+-N(min|h)], got {at!r}",
            )
        offset_s = 0.0
        if match.group(2):
            offset_s = int(match.group(3)) * (60 if match.group(4) == "min" else 3600)
            offset_s = -offset_s if match.group(2) == "-" else offset_s
        anchor: Anchor = match.group(1)  # type: ignore[assignment]
        return Step(anchor, level, offset_s=offset_s, days=days)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
