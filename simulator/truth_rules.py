"""Ground truth of alert rules: which edges the gateway must raise and clear, and when.

Owns the reading of a rules file for the truth (docs/rules.md), the meaning of each condition
kind computed from the values the devices sent (threshold with hysteresis, flag, all/any,
rate of change, stuck, daylight), the episodes with their debounce, the silence watchdog,
and the matching of expected edges with the alerts a broker received. The conditions are
written from the document, not from the agent's code (issue 17: an oracle that copies the code
under test shares its bugs); the rate of rise is computed from the readings the scenario made
the devices send, as they reached the gateway.

Readings are stamped by the gateway with the simulated time of their frame, so every
condition is exact. Two things depend on when the agent's rules loop ticks (app.py
``_rules_loop``: at most every 30 s of wall time, i.e. up to 30 s x speed of simulated time
under compression): the completion of a ``for_s``/``clear_for_s`` debounce and the silence
watchdog. For those the truth gives a window: ``t_s`` is the earliest time the edge may carry,
``t_s + late_by_s`` the latest (the next reading that would complete it, or the end of the
run). When a tick may or may not have come before the reading that decides (a reading that
ends the condition, a device reporting again after a silence), the edges are ``optional``: a
group of edges that must all be there or all be absent. A branch that would not come back
to the same state marks the (rule, device) pair ``undetermined`` from then on.

It imports nothing of the agent's rules (tests/simulator/test_truth_rules.py compares the
two); sun times come from ``astral``, the library the agent uses too.
"""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any, Final, TypeGuard
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import sunrise, sunset

from gateway import textfile

_KINDS: Final = ("threshold", "flag", "all", "any", "rate_of_change", "stuck", "daylight")
_TIME_SLACK_S: Final = 0.5
"""Alert records carry milliseconds; exact edges compare to the second, windows with this slack."""


@dataclass(frozen=True, slots=True)
class ExpectedAlert:
    """One alert edge. ``t_s`` (simulated s): the earliest time it may carry; ``late_by_s``: how
    much later it may come (0: exactly then); ``optional``: the id of a group of edges that come
    all or none (None: the edge must come)."""

    dev_eui: str
    device: str
    rule: str
    state: str
    t_s: float
    late_by_s: float = 0.0
    optional: int | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "dev_eui": self.dev_eui,
            "device": self.device,
            "rule": self.rule,
            "state": self.state,
            "t_s": self.t_s,
        }
        if self.late_by_s:
            doc["late_by_s"] = self.late_by_s
        if self.optional is not None:
            doc["optional"] = self.optional
        return doc


@dataclass(frozen=True, slots=True)
class Undetermined:
    """From ``from_s`` on, the alerts of this rule and device depend on tick times: not compared."""

    dev_eui: str
    device: str
    rule: str
    from_s: float
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"dev_eui": self.dev_eui, "device": self.device, "rule": self.rule,
                "from_s": self.from_s, "reason": self.reason}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule of the file the truth can predict (numbers only: no ``$parameters``)."""

    id: str
    profiles: tuple[str, ...]
    sites: tuple[str, ...]
    dev_euis: tuple[str, ...]
    when: Mapping[str, Any] | None
    """The condition; None for a silence rule."""
    silence_s: float = 0.0
    """``interval_s`` x ``factor`` of a silence rule."""
    for_readings: int = 1
    clear_for_readings: int = 1
    for_s: float = 0.0
    clear_for_s: float = 0.0

    def selects(self, dev_eui: str, profile: str, site: str) -> bool:
        return selects(self.profiles, self.sites, self.dev_euis, dev_eui, profile, site)

    def need(self, opening: bool) -> tuple[int, float]:
        return (self.for_readings, self.for_s) if opening else (self.clear_for_readings, self.clear_for_s)


def selects(
    profiles: tuple[str, ...],
    sites: tuple[str, ...],
    dev_euis: tuple[str, ...],
    dev_eui: str,
    profile: str,
    site: str,
) -> bool:
    """A rules file's ``devices:`` selection: every key given must match, an absent key matches
    all (docs/rules.md; gateway/rules/model.py ``Selector``)."""
    if dev_euis and dev_eui not in dev_euis:
        return False
    if profiles and profile not in profiles:
        return False
    return not sites or any(fnmatch.fnmatchcase(site, glob) for glob in sites)


@dataclass(frozen=True, slots=True)
class Place:
    """The rules file's ``location`` (where ``daylight`` looks up the sun)."""

    lat_deg: float = 43.2965
    lon_deg: float = 5.3698
    timezone: str = "Europe/Paris"


def load_rules(path: Path) -> tuple[list[RuleSpec], list[str], Place]:
    """The predictable rules of a rules file, the ids of the others, and the file's location."""
    doc = textfile.load_yaml(path) or {}
    loc = doc.get("location") or {}
    here = Place()
    place = Place(
        float(loc.get("lat", here.lat_deg)),
        float(loc.get("lon", here.lon_deg)),
        str(loc.get("timezone", here.timezone)),
    )
    predictable: list[RuleSpec] = []
    other: list[str] = []
    for rule in doc.get("rules", []):
        devices = rule.get("devices", {})
        euis = devices.get("dev_euis", [])
        common: dict[str, Any] = {
            "id": str(rule["id"]),
            "profiles": tuple(devices.get("profiles", [])),
            "sites": tuple(devices.get("sites", [])),
            "dev_euis": tuple(str(e).lower() for e in (euis if isinstance(euis, list) else [euis])),
        }
        if "silence" in rule:
            interval = rule["silence"].get("interval_s")
            if not _plain_number(interval):
                other.append(common["id"])
                continue
            factor = float(rule["silence"].get("factor", 3.0))
            predictable.append(RuleSpec(**common, when=None, silence_s=float(interval) * factor))
            continue
        when = rule.get("when")
        if when is None or not _predictable(when):
            other.append(common["id"])
            continue
        predictable.append(
            RuleSpec(
                **common,
                when=when,
                for_readings=int(rule.get("for_readings", 1)),
                clear_for_readings=int(rule.get("clear_for_readings", 1)),
                for_s=float(rule.get("for_s", 0.0)),
                clear_for_s=float(rule.get("clear_for_s", 0.0)),
            )
        )
    return predictable, other, place


def _plain_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _predictable(when: Mapping[str, Any]) -> bool:
    """Known kinds whose numbers are plain (a ``$parameter`` needs the registry's values: not predicted)."""
    if not isinstance(when, Mapping) or len(when) != 1:
        return False
    ((kind, body),) = when.items()
    if kind not in _KINDS:
        return False
    if kind in ("all", "any"):
        return all(_predictable(part) for part in body)
    if kind in ("flag", "daylight"):
        return True
    numbers = [body.get(k) for k in ("above", "below", "clear_below", "clear_above", "window_s", "per_s")]
    value = body["value"]
    if isinstance(value, Mapping):
        numbers += [value.get(k) for k in ("scale", "offset", "fill_empty", "fill_full")]
    return all(n is None or _plain_number(n) for n in numbers)


# --- conditions --------------------------------------------------------------------------------
#
# Written from docs/rules.md ("Values", "Conditions"), not from gateway/rules/conditions.py: an oracle
# that copies the code it checks shares its bugs (issue 17). tests/simulator/test_truth_rules.py holds
# cases computed by hand from the document, checked against both. Where the document is silent the
# choice is said where it is made.
#
# One condition object is made per (rule, device) from the file's `when:`. `read` takes one reading
# and says whether the condition could be read from it; `holds` is its state after that reading.
# A condition that could not be read keeps its state ("A reading without the field a condition
# reads leaves that condition as it was").


def _is_number(x: object) -> TypeGuard[int | float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True, slots=True)
class _Value:
    """docs/rules.md "Values": a decoded field, ``field x scale + offset``, or the fill percentage
    between ``fill_empty`` (0 %) and ``fill_full`` (100 %) of that number, clamped to 0..100."""

    field: str
    scale: float = 1.0
    offset: float = 0.0
    fill: tuple[float, float] | None = None
    """(empty, full) distances, when the value is a fill percentage."""

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any]) -> _Value:
        if isinstance(spec, str):
            return cls(spec)
        fill = (float(spec["fill_empty"]), float(spec["fill_full"])) if "fill_empty" in spec else None
        return cls(str(spec["field"]), float(spec.get("scale", 1.0)), float(spec.get("offset", 0.0)), fill)

    def of(self, data: Mapping[str, Any]) -> float | None:
        """The number this reading gives; None when the field is absent or not a finite number."""
        raw = data.get(self.field)
        if not _is_number(raw):
            return None
        x = float(raw) * self.scale + self.offset
        if self.fill is None:
            return x
        empty, full = self.fill
        if empty == full:  # the document is silent; no percentage exists on an empty range
            return None
        # The document's example: 640 mm with empty 2000, full 300 is (2000 - 640) / 1700 = 80 %.
        # The hundredfold share is divided last, so a distance that is exactly N % gives N.
        return min(100.0, max(0.0, 100.0 * (empty - x) / (empty - full)))


@dataclass(frozen=True, slots=True)
class _Band:
    """The two levels of docs/rules.md's threshold table: ``above: A, clear_below: C`` starts at a
    value >= A and ends at a value < C (C defaults to A); ``below: B, clear_above: C`` starts at a
    value <= B and ends at a value > C (the document names no default for C: B, as for ``above``).
    ``rate_of_change`` uses the same levels on its rate ("as threshold")."""

    rising: bool
    start: float
    end: float

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> _Band:
        if "above" in body:
            return cls(True, float(body["above"]), float(body.get("clear_below", body["above"])))
        return cls(False, float(body["below"]), float(body.get("clear_above", body["below"])))

    def starts(self, x: float) -> bool:
        return x >= self.start if self.rising else x <= self.start

    def ends(self, x: float) -> bool:
        return x < self.end if self.rising else x > self.end


@dataclass(slots=True)
class _Latch:
    """Hysteresis as the document states it, by the order of events rather than a flag: the condition
    holds when the latest value that starts it came after the latest value that ends it (between
    the two levels a value does neither, so the condition stays as it was)."""

    band: _Band
    seen: int = 0
    last_start: int = -1
    last_end: int = -1

    def see(self, x: float) -> bool:
        self.seen += 1
        if self.band.starts(x):
            self.last_start = self.seen
        if self.band.ends(x):
            self.last_end = self.seen
        return self.last_start > self.last_end


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """The least-squares slope of value over time of (t, v) points; None when they span no time.

    Computed as the mean of the slopes between every two points weighted by their time apart
    squared: sum (tj - ti)(vj - vi) / sum (tj - ti)^2 over i < j, which is the slope of the
    normal equations (both sums are n times their centred forms) with no mean to compute.
    """
    rise = run = 0.0
    for (t0, v0), (t1, v1) in combinations(points, 2):
        rise += (t1 - t0) * (v1 - v0)
        run += (t1 - t0) * (t1 - t0)
    return rise / run if run else None


class _Condition:
    """One condition of one (rule, device), as docs/rules.md defines its kind."""

    holds: bool = False

    def read(self, at_s: float, data: Mapping[str, Any]) -> bool:
        """Take the reading of Unix time ``at_s``; False if it could not be read (``holds`` kept)."""
        raise NotImplementedError


class _Threshold(_Condition):
    def __init__(self, body: Mapping[str, Any]) -> None:
        self.value = _Value.parse(body["value"])
        self.latch = _Latch(_Band.parse(body))

    def read(self, at_s: float, data: Mapping[str, Any]) -> bool:
        x = self.value.of(data)
        if x is None:
            return False
        self.holds = self.latch.see(x)
        return True


class _RateOfChange(_Condition):
    """docs/rules.md: "least-squares slope over the last ``window_s``, x ``per_s``, past the level",
    here the slope of the readings from ``window_s`` before this one up to it (the document does
    not say whether a reading exactly ``window_s`` old is inside: it is). The document gives no
    defaults: ``per_s`` is taken as ``window_s`` (the change over the window), ``min_points`` as 2
    (a slope needs two points). With fewer points in the window there is no rate, and the
    condition stays as it was, like a missing field. The document bounds the window by time
    only (the agent also keeps at most 512 points)."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.value = _Value.parse(body["value"])
        self.latch = _Latch(_Band.parse(body))
        self.window_s = float(body["window_s"])
        self.per_s = float(body.get("per_s", self.window_s))
        self.min_points = int(body.get("min_points", 2))
        self.recent: list[tuple[float, float]] = []

    def read(self, at_s: float, data: Mapping[str, Any]) -> bool:
        x = self.value.of(data)
        if x is None:
            return False
        self.recent = [(t, v) for t, v in self.recent if t >= at_s - self.window_s] + [(at_s, x)]
        slope = least_squares_slope(self.recent) if len(self.recent) >= self.min_points else None
        if slope is None:
            return False
        self.holds = self.latch.see(slope * self.per_s)
        return True


class _Stuck(_Condition):
    """docs/rules.md: "the last N values lie within ``tolerance``" (read: of each other); it clears
    when a value moves. Until N values came there is no "last N" and the condition is not read."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.value = _Value.parse(body["value"])
        self.tolerance = float(body.get("tolerance", 0.0))
        self.last: deque[float] = deque(maxlen=int(body["readings"]))

    def read(self, at_s: float, data: Mapping[str, Any]) -> bool:
        x = self.value.of(data)
        if x is None:
            return False
        self.last.append(x)
        if len(self.last) < (self.last.maxlen or 0):
            return False
        self.holds = max(self.last) - min(self.last) <= self.tolerance
        return True


def _same(decoded: object, wanted: object) -> bool:
    """docs/rules.md: "`true` ≠ `1`" — a boolean matches only a boolean (Python has True == 1)."""
    return (type(decoded) is bool) == (type(wanted) is bool) and decoded == wanted


class _Flag(_Condition):
    def __init__(self, body: Mapping[str, Any]) -> None:
        self.field = str(body["field"])
        self.wanted = tuple(body["in"]) if "in" in body else (body["equals"],)

    def read(self, at_s: float, data: Mapping[str, Any]) -> bool:
        if self.field not in data:
            return False
        self.holds = any(_same(data[self.field], w) for w in self.wanted)
        return True


@lru_cache(maxsize=64)
def _sun_up_s(place: Place, day: date) -> tuple[float, float] | None:
    """Unix times of sunrise and sunset on the local ``day`` at ``place`` (astral); None when the sun
    does not rise or set that day (the document is silent: not daylight)."""
    tz = ZoneInfo(place.timezone)
    observer = Observer(place.lat_deg, place.lon_deg)
    try:
        return sunrise(observer, day, tzinfo=tz).timestamp(), sunset(observer, day, tzinfo=tz).timestamp()
    except ValueError:
        return None


class _Daylight(_Condition):
    """docs/rules.md: "between sunrise + margin and sunset - margin at the file's location", on the
    reading's local day. Every reading can be read: its time is all it needs."""

    def __init__(self, body: Mapping[str, Any] | None, place: Place) -> None:
        self.margin_s = float((body or {}).get("margin_s", 1800.0))
        self.place = place

    def read(self, at_s: float, data: Mapping[str, Any]) -> bool:
        day = datetime.fromtimestamp(at_s, ZoneInfo(self.place.timezone)).date()
        sun = _sun_up_s(self.place, day)
        self.holds = sun is not None and sun[0] + self.margin_s <= at_s <= sun[1] - self.margin_s
        return True


class _Combination(_Condition):
    """``all``/``any`` over the parts' states; read when any part could be read ("if no part of a rule
    could be read, the rule skips that reading"). Every part sees every reading."""

    def __init__(self, every: bool, parts: list[_Condition]) -> None:
        self.every = every
        self.parts = parts

    def read(self, at_s: float, data: Mapping[str, Any]) -> bool:
        read = [part.read(at_s, data) for part in self.parts]
        states = [part.holds for part in self.parts]
        self.holds = all(states) if self.every else any(states)
        return any(read)


def condition(when: Mapping[str, Any], place: Place) -> _Condition:
    """A fresh condition (no reading seen yet) for a rule's ``when:``."""
    ((kind, body),) = when.items()
    if kind in ("all", "any"):
        return _Combination(kind == "all", [condition(part, place) for part in body])
    if kind == "daylight":
        return _Daylight(body, place)
    kinds: dict[str, type[_Threshold | _RateOfChange | _Stuck | _Flag]] = {
        "threshold": _Threshold, "rate_of_change": _RateOfChange, "stuck": _Stuck, "flag": _Flag,
    }  # fmt: skip
    return kinds[kind](body)


# --- episodes ----------------------------------------------------------------------------------


@dataclass
class _Track:
    """One (rule, device): the open episode, the pending change, the condition, the silence clock."""

    open: bool = False
    pend_since: float | None = None
    pend_n: int = 0
    condition: _Condition | None = None
    """None for a silence rule."""
    last_seen: float | None = None
    undetermined: bool = False


class RuleTruth:
    """Feed it every accepted reading in order (``reading``), then ``finish``; edges in ``alerts``.

    Times given are Unix seconds as the gateway stamps them; edges carry them minus ``epoch_s``.
    ``tick_late_s`` bounds how late a tick may come after a deadline (simulated s; infinite when
    the run's pacing does not bound it): an edge whose deciding reading comes later than that is
    certain, not optional.
    """

    def __init__(
        self,
        rules: Iterable[RuleSpec],
        epoch_s: float,
        place: Place = Place(),
        tick_late_s: float = math.inf,
    ) -> None:
        self.rules = list(rules)
        self.epoch_s = epoch_s
        self.place = place
        self.tick_late_s = tick_late_s
        self.alerts: list[ExpectedAlert] = []
        self.undetermined: list[Undetermined] = []
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._names: dict[str, str] = {}
        self._groups = 0
        self._finished = False

    def known(self, dev_eui: str, name: str, profile: str, site: str, at_s: float) -> None:
        """The agent knows the device from ``at_s`` on (its registry at start): silence counts from then."""
        self._names[dev_eui] = name
        for rule in self.rules:
            if rule.when is None and rule.selects(dev_eui, profile, site):
                self._tracks.setdefault((rule.id, dev_eui), _Track(last_seen=at_s))

    def reading(
        self, dev_eui: str, name: str, profile: str, site: str, at_s: float, data: Mapping[str, Any]
    ) -> None:
        self._names[dev_eui] = name
        for rule in self.rules:
            if not rule.selects(dev_eui, profile, site):
                continue
            track = self._tracks.get((rule.id, dev_eui))
            if track is None:
                cond = None if rule.when is None else condition(rule.when, self.place)
                track = self._tracks[(rule.id, dev_eui)] = _Track(condition=cond)
            if rule.when is None:
                self._silence_reading(rule, dev_eui, track, at_s)
            elif not track.undetermined:
                self._condition_reading(rule, dev_eui, track, at_s, data)

    def finish(self, end_s: float) -> None:
        """The run ended with the gateway's clock at ``end_s``: deadlines before it may have ticked."""
        if self._finished:
            return
        self._finished = True
        for (rule_id, dev), track in self._tracks.items():
            rule = next(r for r in self.rules if r.id == rule_id)
            if track.undetermined:
                continue
            if rule.when is None:
                last = track.last_seen
                if last is not None and end_s - last > rule.silence_s:
                    due = last + rule.silence_s
                    certain = due + self.tick_late_s < end_s
                    late = self.tick_late_s if certain else end_s - due
                    self._edge(rule, dev, "raised", due, late, None if certain else self._group())
                continue
            pending = self._due(rule, track, end_s)
            if pending is not None:
                certain = pending + self.tick_late_s < end_s
                late = self.tick_late_s if certain else end_s - pending
                group = None if certain else self._group()
                self._edge(rule, dev, self._next_state(track), pending, late, group)

    # -- silence --------------------------------------------------------------------------------

    def _silence_reading(self, rule: RuleSpec, dev: str, track: _Track, at_s: float) -> None:
        if track.last_seen is not None and not track.open:
            due = track.last_seen + rule.silence_s
            if at_s - track.last_seen > rule.silence_s:  # a tick raises once now - last_seen > the limit
                certain = due + self.tick_late_s < at_s
                group = None if certain else self._group()
                self._edge(rule, dev, "raised", due, self.tick_late_s if certain else at_s - due, group)
                self._edge(rule, dev, "cleared", at_s, 0.0, group)  # the reading closes it at once
        track.last_seen = at_s if track.last_seen is None else max(track.last_seen, at_s)

    # -- conditions and debounce ----------------------------------------------------------------

    def _condition_reading(
        self, rule: RuleSpec, dev: str, track: _Track, at_s: float, data: Mapping[str, Any]
    ) -> None:
        assert track.condition is not None  # made for every rule with a `when:`
        updated = track.condition.read(at_s, data)
        active = track.condition.holds
        due = self._due(rule, track, at_s)
        if due is not None:  # a tick may have completed the debounce before this reading
            certain = due + self.tick_late_s < at_s
            state = self._next_state(track)
            if certain:
                self._edge(rule, dev, state, due, self.tick_late_s, None)
                self._toggle(track)
            elif not updated:
                return  # still pending: nothing decided yet
            elif active != track.open:  # the reading agrees: it completes the debounce if no tick did
                self._edge(rule, dev, state, due, at_s - due, None)
                self._toggle(track)
                return
            else:  # the reading ends the condition: raised (by a tick) and back at once, or nothing
                need_n, need_s = rule.need(track.open)  # the change back, after a tick's edge
                if need_n > 1 or need_s > 0:
                    track.undetermined = True
                    why = "a tick may or may not have completed a debounce"
                    name = self._names.get(dev, dev)
                    self.undetermined.append(Undetermined(dev, name, rule.id, due - self.epoch_s, why))
                    return
                group = self._group()
                self._edge(rule, dev, state, due, at_s - due, group)
                self._edge(rule, dev, "cleared" if state == "raised" else "raised", at_s, 0.0, group)
                track.pend_since, track.pend_n = None, 0
                return
        if not updated:
            return
        if active != track.open:
            if track.pend_since is None:
                track.pend_since, track.pend_n = at_s, 0
            track.pend_n += 1
            need_n, need_s = rule.need(not track.open)
            if track.pend_n >= need_n and at_s - track.pend_since >= need_s:
                self._edge(rule, dev, self._next_state(track), at_s, 0.0, None)
                self._toggle(track)
        else:
            track.pend_since, track.pend_n = None, 0

    @staticmethod
    def _due(rule: RuleSpec, track: _Track, now_s: float) -> float | None:
        """When a tick completes the pending change, if a tick at ``now_s`` would (the agent's test,
        ``now - since >= need``, float for float); None if it would not or none is pending."""
        if track.pend_since is None:
            return None
        need_n, need_s = rule.need(not track.open)
        if track.pend_n < need_n or now_s - track.pend_since < need_s:
            return None
        return track.pend_since + need_s

    @staticmethod
    def _next_state(track: _Track) -> str:
        return "cleared" if track.open else "raised"

    @staticmethod
    def _toggle(track: _Track) -> None:
        track.open, track.pend_since, track.pend_n = not track.open, None, 0

    def _group(self) -> int:
        self._groups += 1
        return self._groups

    def _edge(
        self, rule: RuleSpec, dev: str, state: str, at_s: float, late_s: float, group: int | None
    ) -> None:
        self.alerts.append(
            ExpectedAlert(dev, self._names.get(dev, dev), rule.id, state, at_s - self.epoch_s, late_s, group)
        )


# --- comparison ----------------------------------------------------------------------------------


@dataclass
class AlertMatch:
    missing: list[dict[str, Any]] = field(default_factory=list)
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    windowed: int = 0
    """Edges with a window that arrived inside it."""
    optional_present: int = 0
    optional_absent: int = 0
    not_compared: int = 0
    """Alerts received for (rule, device) pairs undetermined at their time."""


def match_alerts(
    expected: Iterable[ExpectedAlert],
    undetermined: Iterable[Undetermined],
    received: Iterable[tuple[str, str, str, float]],
    names: Mapping[str, str],
) -> AlertMatch:
    """Match expected edges with received (dev_eui, rule, state, t_s) alerts.

    An exact edge matches an alert of the same second; a windowed one an alert inside its window;
    an optional group is fine when all its edges matched or none did.
    """
    out = AlertMatch()
    cut = {(u.dev_eui, u.rule): u.from_s for u in undetermined}
    pool: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for dev, rule, state, t_s in received:
        if t_s >= cut.get((dev, rule), math.inf) - _TIME_SLACK_S:
            out.not_compared += 1
            continue
        pool[(dev, rule, state)].append(t_s)
    for times in pool.values():
        times.sort()

    def take(a: ExpectedAlert) -> bool:
        times = pool.get((a.dev_eui, a.rule, a.state), [])
        for i, t in enumerate(times):
            fits = (
                round(t) == round(a.t_s)
                if not a.late_by_s
                else a.t_s - _TIME_SLACK_S <= t <= a.t_s + a.late_by_s + _TIME_SLACK_S
            )
            if fits:
                del times[i]
                return True
        return False

    def row(a: ExpectedAlert) -> dict[str, Any]:
        doc: dict[str, Any] = {"device": names.get(a.dev_eui, a.dev_eui), "rule": a.rule, "state": a.state}
        doc["t_s"] = round(a.t_s)
        if a.late_by_s:
            doc["late_by_s"] = round(a.late_by_s)
        return doc

    ordered = sorted(expected, key=lambda a: (a.optional is not None, a.t_s))
    groups: dict[int, list[tuple[ExpectedAlert, bool]]] = defaultdict(list)
    for a in ordered:
        if (a.dev_eui, a.rule) in cut and a.t_s >= cut[(a.dev_eui, a.rule)]:
            continue
        hit = take(a)
        if a.optional is not None:
            groups[a.optional].append((a, hit))
        elif not hit:
            out.missing.append(row(a))
        elif a.late_by_s:
            out.windowed += 1
    for members in groups.values():
        hits = [hit for _, hit in members]
        if all(hits):
            out.optional_present += 1
        elif not any(hits):
            out.optional_absent += 1
        else:
            out.missing.extend(row(a) for a, hit in members if not hit)
    for (dev, rule, state), times in sorted(pool.items()):
        out.unexpected.extend(
            {"device": names.get(dev, dev), "rule": rule, "state": state, "t_s": round(t)} for t in times
        )
    return out
