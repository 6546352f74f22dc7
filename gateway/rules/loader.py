"""The rules file (YAML, ``schema_version: 1``, docs/rules.md) → a validated, frozen ``RuleSet``.

Owns the rules file format: the keys of each section, their types and bounds, ``$name``
parameters, presets by name, and the checks across keys (one of ``above``/``below``, hysteresis
on the right side, unique ids). Validation stops at the first problem with a ``ConfigError``
naming the file, the dotted key path and the reason, so a bad file never replaces working rules
(the engine keeps the previous ``RuleSet``)::

    /etc/edgegw/rules.yaml: rules[1].when.threshold.above: expected a number or $parameter, got 'sixty'

The text is read and parsed by ``gateway.textfile`` (UTF-8, a repeated key refused) and walked
with ``gateway.yamldoc``. What the objects are is ``model.py``'s; the presets are ``presets.py``'s.
No Python runs from the file: every condition and derivation is a named, built-in kind.
"""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path
from typing import Final, Literal

from gateway import textfile
from gateway.errors import ConfigError
from gateway.rules.model import (
    DEFAULT_LAT_DEG,
    DEFAULT_LON_DEG,
    DEFAULT_TIMEZONE,
    DIRECTIVE_PERIODS,
    FRENCH_PERIODS,
    SEVERITIES,
    Aggregate,
    Anchor,
    Combine,
    Condition,
    CountSpec,
    Daylight,
    DisplaySpec,
    Downlink,
    FillSpec,
    Flag,
    LdenPeriods,
    LeqSpec,
    LightingGroup,
    Location,
    Num,
    Param,
    RateOfChange,
    Rule,
    RuleSet,
    Selector,
    Silence,
    Step,
    Stuck,
    Threshold,
    ValueSpec,
)
from gateway.rules.presets import PRESETS
from gateway.yamldoc import Node, show

SCHEMA_VERSION: Final = 1
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""``days:`` of a lighting step, in ``Step.days`` order (0 = Monday)."""
_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_PARAM_RE: Final = re.compile(r"\$([a-z_][a-z0-9_]*)")
_PARAM_NAME_RE: Final = re.compile(r"[a-z_][a-z0-9_]*")
_EUI_RE: Final = re.compile(r"[0-9a-f]{16}")
_CONDITION_KINDS: Final = ("threshold", "rate_of_change", "stuck", "flag", "daylight", "all", "any")
_COUNT_MODES: Final[tuple[Literal["increment", "cumulative"], ...]] = ("increment", "cumulative")
_SUN_ANCHORS: Final[tuple[Anchor, ...]] = ("sunset", "sunrise", "dusk", "dawn", "midnight_solar")
_CLOCK_RE: Final = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
_SUN_RE: Final = re.compile(rf"({'|'.join(_SUN_ANCHORS)})(?:([+-])(\d{{1,6}})(min|h))?")
_NAMED_PERIODS: Final[dict[str, LdenPeriods]] = {"french": FRENCH_PERIODS, "directive": DIRECTIVE_PERIODS}


def load_rules(path: Path | str) -> RuleSet:
    """Read and validate a rules file; ConfigError (file, key path, reason) if it is not valid."""
    # Not UTF-8 (a file saved in Latin-1) is a ConfigError naming the byte and the line, like any
    # other invalid file: a reload keeps the previous rules, a start runs without rules.
    return parse_rules(textfile.read_text(path), file=str(path))


def parse_rules(text: str, *, file: str = "<rules>") -> RuleSet:
    """Validate the text of a rules file; ``file`` names it in errors."""
    doc = textfile.parse_yaml(text, file=file)
    try:
        return _ruleset(Node({} if doc is None else doc, file=file))
    except RecursionError as exc:  # all/any conditions nest; so does the reader
        raise ConfigError("conditions nested too deeply", file=file) from exc


# -- the file ---------------------------------------------------------------------------------


def _ruleset(top: Node) -> RuleSet:
    top.mapping(optional=("schema_version", "location", "defaults", "rules", "aggregates", "lighting"))
    version = top.get("schema_version", SCHEMA_VERSION)
    if version.value != SCHEMA_VERSION:
        raise version.fail(f"unsupported version {version.value!r} (this agent reads {SCHEMA_VERSION})")
    location = _location(top["location"]) if top.has("location") else Location()
    profile_params, device_params = _defaults(top.get("defaults"))
    rules = tuple(_rule(node) for node in _sequence(top.get("rules")))
    aggregates = tuple(_aggregate(node) for node in _sequence(top.get("aggregates")))
    lighting = tuple(_lighting(node, location) for node in _sequence(top.get("lighting")))
    ids: tuple[tuple[str, list[str]], ...] = (
        ("rules", [r.id for r in rules]),
        ("aggregates", [a.id for a in aggregates]),
        ("lighting", [g.id for g in lighting]),
    )
    for kind, names in ids:
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ConfigError(f"duplicate id {name!r}", file=top.file, key_path=f"{kind}[{i}].id")
    return RuleSet(
        rules=rules,
        aggregates=aggregates,
        lighting=lighting,
        location=location,
        profile_params=profile_params,
        device_params=device_params,
        source=top.file,
    )


def _sequence(node: Node | None) -> list[Node]:
    """The elements of an optional list (absent or empty: none)."""
    return [] if node is None or node.value is None else node.items()


def _location(node: Node) -> Location:
    node.mapping(optional=("lat", "lon", "timezone"))
    lat_node, lon_node = node.get("lat", DEFAULT_LAT_DEG), node.get("lon", DEFAULT_LON_DEG)
    lat, lon = lat_node.as_float(), lon_node.as_float()
    if not -90 <= lat <= 90:
        raise lat_node.fail(f"latitude must be in -90..90, got {lat:g}")
    if not -180 <= lon <= 180:
        raise lon_node.fail(f"longitude must be in -180..180, got {lon:g}")
    tz_node = node.get("timezone", DEFAULT_TIMEZONE)
    tz = tz_node.as_str(non_empty=True)
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: name too long
        raise tz_node.fail(f"unknown time zone {tz!r}: {exc}") from exc
    return Location(lat, lon, tz)


def _defaults(node: Node | None) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """``defaults: {profiles: {a/b: {name: N}}, devices: {DEVEUI: {name: N}}}``."""
    if node is None or node.value is None:
        return {}, {}
    node.mapping(optional=("profiles", "devices"))
    tables: list[dict[str, dict[str, float]]] = []
    for key in ("profiles", "devices"):
        table: dict[str, dict[str, float]] = {}
        for name, params in _free_entries(node.get(key)):
            name_node = Node(name, file=params.file, path=params.path)
            ident = _eui(name_node) if key == "devices" else name_node.as_str(non_empty=True)
            table[ident] = {param: value.as_float() for param, value in _free_entries(params)}
        tables.append(table)
    return tables[0], tables[1]


# -- values -----------------------------------------------------------------------------------


def _free_entries(node: Node | None) -> list[tuple[str, Node]]:
    """The entries of an optional mapping with any string keys (command parameters, defaults)."""
    return [] if node is None or node.value is None else node.entries()


def _num(node: Node) -> Num:
    """A number, or ``$name`` (a device parameter), or ``{param: name, default: N}``."""
    if isinstance(node.value, str):
        match = _PARAM_RE.fullmatch(node.value)
        if not match:
            raise node.fail(f"expected a number or $parameter, got {show(node.value)}")
        return Param(match.group(1))
    if isinstance(node.value, dict):
        node.mapping(required=("param",), optional=("default",))
        name_node = node["param"]
        name = name_node.as_str(non_empty=True)
        if not _PARAM_NAME_RE.fullmatch(name):
            raise name_node.fail(f"not a parameter name: {name!r}")
        default = node.get("default")
        return Param(name, default.as_float() if default is not None else None)
    return node.as_float()


def _period(node: Node) -> Num:
    """``period_s``: seconds (1..86400), or a device parameter (the report interval it was given)."""
    value = _num(node)
    if isinstance(value, Param):
        if value.default is not None and not 1 <= value.default <= 86400:
            raise node.fail("the default must be 1..86400 s")
        return value
    if not 1 <= value <= 86400:
        raise node.fail(f"must be 1..86400 s, got {value:g}")
    return value


def _ident(node: Node) -> str:
    text = node.as_str(non_empty=True)
    if not _ID_RE.fullmatch(text):
        raise node.fail(f"ids are lowercase letters, digits, '_', '-', '.', got {text!r}")
    return text


def _eui(node: Node) -> str:
    text = node.as_str(non_empty=True).lower().replace(":", "").replace("-", "")
    if not _EUI_RE.fullmatch(text):
        raise node.fail(f"expected a DevEUI (16 hex digits), got {show(node.value)}")
    return text


def _listed(node: Node) -> list[Node]:
    """A list's elements, or the node itself: ``profiles: a/b`` means ``profiles: [a/b]``."""
    return node.items() if isinstance(node.value, list) else [node]


def _str_list(node: Node) -> list[str]:
    return [item.as_str(non_empty=True) for item in _listed(node)]


def _selector(node: Node) -> Selector:
    node.mapping(optional=("dev_euis", "profiles", "sites"))
    if not node.value:
        raise node.fail("select devices by at least one of dev_euis, profiles, sites")
    return Selector(
        dev_euis=frozenset(_eui(item) for item in _listed(node.get("dev_euis", []))),
        profiles=frozenset(_str_list(node.get("profiles", []))),
        sites=tuple(_str_list(node.get("sites", []))),
    )


def _value(node: Node) -> ValueSpec:
    if isinstance(node.value, str):
        return ValueSpec(node.as_str(non_empty=True))
    node.mapping(required=("field",), optional=("scale", "offset", "fill_empty", "fill_full"))
    has_fill = (node.has("fill_empty"), node.has("fill_full"))
    if any(has_fill) and not all(has_fill):
        raise node.fail("fill_empty and fill_full go together")
    return ValueSpec(
        field=node["field"].as_str(non_empty=True),
        scale=_num(node.get("scale", 1.0)),
        offset=_num(node.get("offset", 0.0)),
        fill_empty=_num(node["fill_empty"]) if all(has_fill) else None,
        fill_full=_num(node["fill_full"]) if all(has_fill) else None,
    )


# -- rules ------------------------------------------------------------------------------------


def _direction(node: Node) -> tuple[Literal["above", "below"], Num, Num]:
    """``above`` + optional ``clear_below``, or ``below`` + optional ``clear_above``."""
    if node.has("above") == node.has("below"):
        raise node.fail("give exactly one of above, below")
    if node.has("above"):
        if node.has("clear_above"):
            raise node["clear_above"].fail("with 'above', hysteresis is 'clear_below'")
        level = _num(node["above"])
        clear_node = node.get("clear_below", node["above"].value)
        clear = _num(clear_node)
        if isinstance(level, float) and isinstance(clear, float) and clear > level:
            raise clear_node.fail(f"must be <= above ({level:g}), got {clear:g}")
        return "above", level, clear
    if node.has("clear_below"):
        raise node["clear_below"].fail("with 'below', hysteresis is 'clear_above'")
    level = _num(node["below"])
    clear_node = node.get("clear_above", node["below"].value)
    clear = _num(clear_node)
    if isinstance(level, float) and isinstance(clear, float) and clear < level:
        raise clear_node.fail(f"must be >= below ({level:g}), got {clear:g}")
    return "below", level, clear


def _condition(node: Node) -> Condition:
    node.mapping(optional=_CONDITION_KINDS)
    if len(node.as_dict()) != 1:
        raise node.fail(f"give exactly one condition kind ({', '.join(_CONDITION_KINDS)})")
    (kind,) = node.as_dict()
    body = node[kind]
    if kind in ("all", "any"):
        if not isinstance(body.value, list) or not body.value:
            raise body.fail("expected a non-empty list of conditions")
        return Combine("all" if kind == "all" else "any", tuple(_condition(part) for part in body.items()))
    if kind == "threshold":
        body.mapping(required=("value",), optional=("above", "below", "clear_below", "clear_above"))
        direction, level, clear = _direction(body)
        return Threshold(_value(body["value"]), direction, level, clear)
    if kind == "rate_of_change":
        body.mapping(
            required=("value", "window_s"),
            optional=("per_s", "above", "below", "clear_below", "clear_above", "min_points"),
        )
        direction, level, clear = _direction(body)
        window_s = body["window_s"].as_float(1)
        return RateOfChange(
            value=_value(body["value"]),
            window_s=window_s,
            per_s=body.get("per_s", window_s).as_float(1),
            direction=direction,
            level=level,
            clear=clear,
            min_points=body.get("min_points", 2).as_int(2),
        )
    if kind == "daylight":
        if body.value is None:  # `daylight:` alone, the default margin
            return Daylight()
        return Daylight(body.mapping(optional=("margin_s",)).get("margin_s", 1800.0).as_float(0))
    if kind == "stuck":
        body.mapping(required=("value", "readings"), optional=("tolerance",))
        return Stuck(
            _value(body["value"]), body["readings"].as_int(2), body.get("tolerance", 0.0).as_float(0)
        )
    body.mapping(required=("field",), optional=("equals", "in"))
    if body.has("equals") == body.has("in"):
        raise body.fail("give exactly one of equals, in")
    if body.has("in"):
        listed = body["in"]
        if not isinstance(listed.value, list) or not listed.value:
            raise listed.fail("expected a non-empty list")
        values = listed.items()
    else:
        values = [body["equals"]]
    for item in values:
        if not isinstance(item.value, str | int | float | bool):
            raise item.fail(f"expected a scalar, got {show(item.value)}")
    return Flag(body["field"].as_str(non_empty=True), tuple(item.value for item in values))


def _downlinks(node: Node | None) -> tuple[Downlink, ...]:
    if node is None or node.value is None:
        return ()
    if not isinstance(node.value, list):
        raise node.fail("expected a list of actions")
    out: list[Downlink] = []
    for item in node.items():
        action = item.mapping(required=("downlink",))["downlink"]
        action.mapping(required=("command",), optional=("params", "to"))
        to = action.get("to")
        out.append(
            Downlink(
                command=action["command"].as_str(non_empty=True),
                params={key: value.value for key, value in _free_entries(action.get("params"))},
                to=_eui(to) if to is not None else None,
            )
        )
    return tuple(out)


def _rule(node: Node) -> Rule:
    node.mapping(
        required=("id", "devices"),
        optional=(
            "when", "silence", "severity", "message", "for_s", "for_readings", "clear_for_s",
            "clear_for_readings", "on_raise", "on_clear",
        ),
    )  # fmt: skip
    if node.has("when") == node.has("silence"):
        raise node.fail("give exactly one of when (a condition) or silence (the watchdog)")
    condition: Condition | Silence
    if node.has("silence"):
        silence = node["silence"].mapping(required=("interval_s",), optional=("factor",))
        condition = Silence(_num(silence["interval_s"]), silence.get("factor", 3.0).as_float(1))
    else:
        condition = _condition(node["when"])
    return Rule(
        id=_ident(node["id"]),
        selector=_selector(node["devices"]),
        condition=condition,
        severity=node.get("severity", "warning").as_choice(SEVERITIES),
        message=node.get("message", "").as_str(),
        for_s=node.get("for_s", 0.0).as_float(0),
        for_readings=node.get("for_readings", 1).as_int(1),
        clear_for_s=node.get("clear_for_s", 0.0).as_float(0),
        clear_for_readings=node.get("clear_for_readings", 1).as_int(1),
        on_raise=_downlinks(node.get("on_raise")),
        on_clear=_downlinks(node.get("on_clear")),
    )


# -- aggregates -------------------------------------------------------------------------------


def _intervals(node: Node | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if node is None or node.value is None:
        return default
    if not isinstance(node.value, list) or not node.value:
        raise node.fail("expected a non-empty list of seconds")
    out: list[int] = []
    for item in node.items():
        seconds = item.as_int(60)
        if 3600 % seconds:
            raise item.fail(f"an interval must divide an hour (3600 s), got {seconds}")
        out.append(seconds)
    return tuple(out)


def _aggregate(node: Node) -> Aggregate:
    node.mapping(
        required=("id", "devices"),
        optional=("leq", "lden", "count", "display", "fill", "period_field", "period_s", "late_s"),
    )
    if not any(node.has(key) for key in ("leq", "lden", "count", "fill")):
        raise node.fail("give at least one of leq, lden, count, fill")
    for key in ("period_field", "period_s", "late_s"):
        if node.has(key) and not (node.has("leq") or node.has("lden")):
            raise node[key].fail("applies to noise levels: add a leq or lden section")
    fill = None
    if node.has("fill"):
        spec = node["fill"].mapping(
            required=("value",), optional=("window_s", "full_pct", "emptied_drop_pct", "min_span_s")
        )
        fill = FillSpec(
            value=_value(spec["value"]),
            window_s=spec.get("window_s", 7 * 86400.0).as_float(3600),
            full_pct=_num(spec.get("full_pct", 100.0)),
            emptied_drop_pct=spec.get("emptied_drop_pct", 20.0).as_float(1),
            min_span_s=spec.get("min_span_s", 3600.0).as_float(0),
        )
    leq = None
    if node.has("leq"):
        spec = node["leq"].mapping(required=("field",), optional=("intervals_s", "percentiles"))
        leq = LeqSpec(
            spec["field"].as_str(non_empty=True),
            _intervals(spec.get("intervals_s"), (900, 3600)),
            spec.get("percentiles", False).as_bool(),
        )
    lden = None
    periods = FRENCH_PERIODS
    if node.has("lden"):
        lden_node = node["lden"].mapping(required=("field",), optional=("periods",))
        lden = lden_node["field"].as_str(non_empty=True)
        if lden_node.has("periods"):
            periods = _lden_periods(lden_node["periods"])
    count = None
    if node.has("count"):
        spec = node["count"].mapping(required=("fields",), optional=("mode", "intervals_s"))
        count = CountSpec(
            tuple(_str_list(spec["fields"])),
            spec.get("mode", "increment").as_choice(_COUNT_MODES),
            _intervals(spec.get("intervals_s"), (3600,)),
        )
    display = None
    if node.has("display"):
        if count is None:
            raise node["display"].fail("a display shows counts: add a count section")
        spec = node["display"].mapping(
            required=("to", "command"), optional=("every_s", "today_param", "year_param")
        )
        display = DisplaySpec(
            to=_eui(spec["to"]),
            command=spec["command"].as_str(non_empty=True),
            every_s=spec.get("every_s", 300.0).as_float(60),
            today_param=spec.get("today_param", "today").as_str(non_empty=True),
            year_param=spec.get("year_param", "year").as_str(non_empty=True),
        )
    return Aggregate(
        id=_ident(node["id"]),
        selector=_selector(node["devices"]),
        leq=leq,
        lden_field=lden,
        count=count,
        display=display,
        fill=fill,
        lden_periods=periods,
        period_field=node["period_field"].as_str(non_empty=True) if node.has("period_field") else None,
        period_s=_period(node["period_s"]) if node.has("period_s") else 900.0,
        late_s=node.get("late_s", 3600.0).as_float(0, 86400),
    )


def _lden_periods(node: Node) -> LdenPeriods:
    """``french`` (06/18/22), ``directive`` (07/19/23) or ``{day: "HH:MM", evening: ..., night: ...}``."""
    if isinstance(node.value, str):
        name = node.as_choice(tuple(_NAMED_PERIODS))
        return _NAMED_PERIODS[name]
    node.mapping(required=("day", "evening", "night"))
    starts: list[int] = []
    for key in ("day", "evening", "night"):
        text = node[key].as_str(non_empty=True).replace(" ", "")
        clock = _CLOCK_RE.fullmatch(text)
        if not clock:
            raise node[key].fail(f"expected HH:MM, got {text!r}")
        starts.append(int(clock.group(1)) * 3600 + int(clock.group(2)) * 60)
    if not starts[0] < starts[1] < starts[2]:
        raise node.fail("expected day < evening < night start times (the night runs past midnight)")
    return LdenPeriods("custom", starts[0], starts[1], starts[2])


# -- lighting ---------------------------------------------------------------------------------


def _lighting(node: Node, location: Location) -> LightingGroup:
    node.mapping(
        required=("id", "command"),
        optional=(
            "devices", "group", "level_param", "params", "preset", "steps", "location", "depression_deg",
            "fail_safe_pct",
        ),
    )  # fmt: skip
    if node.has("devices") == node.has("group"):
        raise node.fail("give exactly one of devices (one downlink per lamp), group (one multicast frame)")
    if node.has("preset") == node.has("steps"):
        raise node.fail("give exactly one of preset, steps")
    preset = node.get("preset")
    if preset is None:
        steps = node["steps"]
    else:
        name = preset.value
        if not isinstance(name, str) or name not in PRESETS:
            raise preset.fail(f"unknown preset {show(name)} (known: {', '.join(PRESETS)})")
        steps = node.get("steps", PRESETS[name])  # read as if the file had them, at this group's steps
    if not isinstance(steps.value, list) or not steps.value:
        raise steps.fail("expected a non-empty list of steps")
    return LightingGroup(
        id=_ident(node["id"]),
        selector=_selector(node["devices"]) if node.has("devices") else Selector(),
        command=node["command"].as_str(non_empty=True),
        multicast=_group_name(node["group"]) if node.has("group") else None,
        level_param=node.get("level_param", "level_pct").as_str(non_empty=True),
        steps=tuple(_step(step) for step in steps.items()),
        location=_location(node["location"]) if node.has("location") else location,
        extra_params={key: value.value for key, value in _free_entries(node.get("params"))},
        # Degrees below the horizon (6 civil, 12 nautical, 18 astronomical), written positive.
        depression_deg=node.get("depression_deg", 6.0).as_float(0.0, 18.0),
        fail_safe_pct=node.get("fail_safe_pct", 100).as_int(0, 100),
    )


_GROUP_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def _group_name(node: Node) -> str:
    """A multicast group's name as the registry spells it (``edgegw group add``)."""
    name = node.as_str(non_empty=True)
    if not _GROUP_NAME_RE.fullmatch(name):
        raise node.fail(f"group name {name!r}: use 1 to 40 of a-z, 0-9, '-', '_' (edgegw group list)")
    return name


def _step(node: Node) -> Step:
    node.mapping(required=("at", "level_pct"), optional=("days",))
    level = node["level_pct"].as_int(0, 100)
    days = frozenset(range(7))
    if node.has("days"):
        days = frozenset(WEEKDAYS.index(day.as_choice(WEEKDAYS)) for day in _listed(node["days"]))
    at_node = node["at"]
    at = at_node.as_str(non_empty=True).replace(" ", "")
    clock = _CLOCK_RE.fullmatch(at)
    if clock:
        clock_s = int(clock.group(1)) * 3600 + int(clock.group(2)) * 60
        return Step("clock", level, clock_s=clock_s, days=days)
    match = _SUN_RE.fullmatch(at)
    if not match:
        raise at_node.fail(
            f"expected HH:MM or sunset|sunrise|dusk|dawn|midnight_solar[+-N(min|h)], got {at!r}"
        )
    offset_s = 0.0
    if match.group(2):
        offset_s = int(match.group(3)) * (60 if match.group(4) == "min" else 3600)
        offset_s = -offset_s if match.group(2) == "-" else offset_s
    anchor = _SUN_ANCHORS[_SUN_ANCHORS.index(match.group(1))]  # the same word, typed as an Anchor
    return Step(anchor, level, offset_s=offset_s, days=days)
