"""Edge rules as data: what a validated rules file holds, as frozen, typed objects.

Owns the vocabulary of the rules (docs/rules.md): device selectors, value specs, conditions,
alert rules, aggregate specs, lighting groups and their steps, the site location and
per-profile / per-device parameter defaults, gathered in a ``RuleSet``.

It does not read the file (``loader.py``: ``load_rules``, ``parse_rules``) and evaluates
nothing: conditions are evaluated by ``conditions.py`` and ``engine.py``, aggregates by
``aggregates.py``, lighting by ``schedules.py``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

Severity = Literal["info", "warning", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = ("info", "warning", "critical")

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
class LdenPeriods:
    """Local start times (seconds after midnight) of the Lden day, evening and night periods.

    The night runs from ``night_s`` to ``day_s`` of the next morning. The Lden weights are the
    periods' nominal lengths in hours (12/4/8 for both the French and the Directive's periods).
    """

    name: str = "french"
    day_s: int = 6 * 3600
    evening_s: int = 18 * 3600
    night_s: int = 22 * 3600

    def hours(self) -> tuple[float, float, float]:
        """Nominal hours of day, evening and night."""
        return (
            (self.evening_s - self.day_s) / 3600.0,
            (self.night_s - self.evening_s) / 3600.0,
            (86400 - self.night_s + self.day_s) / 3600.0,
        )


FRENCH_PERIODS: Final = LdenPeriods()
"""Day 06-18, evening 18-22, night 22-06 (arrêté du 4 avril 2006): the default."""
DIRECTIVE_PERIODS: Final = LdenPeriods("directive", 7 * 3600, 19 * 3600, 23 * 3600)
"""Day 07-19, evening 19-23, night 23-07 (Directive 2002/49/EC, Annex I)."""


@dataclass(frozen=True, slots=True)
class Aggregate:
    """An aggregate computed at the edge and emitted as a record (noise levels, counts, fill rate).

    Noise (``leq``, ``lden_field``): each reading's level covers the ``period_field`` seconds
    before it (the reading's own value), else ``period_s``. A record is published once the
    device's readings cover its interval's end, or ``late_s`` after that end; readings covering
    it that arrive until ``late_s`` after its end publish a revision.
    """

    id: str
    selector: Selector
    leq: LeqSpec | None = None
    lden_field: str | None = None
    count: CountSpec | None = None
    display: DisplaySpec | None = None
    fill: FillSpec | None = None
    lden_periods: LdenPeriods = FRENCH_PERIODS
    period_field: str | None = None
    period_s: Num = 900.0
    """A number or a device parameter (``$report_interval_s``): devices of one model report at the
    interval each was configured with."""
    late_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Location:
    lat_deg: float = DEFAULT_LAT_DEG
    lon_deg: float = DEFAULT_LON_DEG
    timezone: str = DEFAULT_TIMEZONE


Anchor = Literal["sunset", "sunrise", "dusk", "dawn", "midnight_solar", "clock"]


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
    """A group of lamp controllers that share one dimming schedule.

    ``depression_deg``: the sun's depression below the horizon at the ``dawn``/``dusk`` anchors
    (6 = civil twilight; cities use 3..6). ``fail_safe_pct``: the level commanded while the time
    is not trusted (docs/rules.md, "When the clock is not trusted"). ``multicast``: the name of a
    class C multicast group of the registry (``group: <name>``) that gets each step as one frame,
    instead of one downlink per selected lamp (``selector`` is then empty).
    """

    id: str
    selector: Selector
    command: str
    level_param: str
    steps: tuple[Step, ...]
    location: Location
    extra_params: Mapping[str, object] = field(default_factory=dict)
    depression_deg: float = 6.0
    fail_safe_pct: int = 100
    multicast: str | None = None


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything one rules file says, validated. Built by ``loader.load_rules`` or ``loader.parse_rules``."""

    rules: tuple[Rule, ...] = ()
    aggregates: tuple[Aggregate, ...] = ()
    lighting: tuple[LightingGroup, ...] = ()
    location: Location = Location()
    profile_params: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    device_params: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    source: str = ""

    def params_for(
        self, dev_eui: str, profile: str, installed: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """The device's parameters: the file's values for it, over its installation parameters (the
        registry's), over the file's values for its profile."""
        merged = dict(self.profile_params.get(profile, {}))
        merged.update(installed or {})
        merged.update(self.device_params.get(dev_eui, {}))
        return merged
