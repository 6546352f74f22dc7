"""Ground truth of alert rules: which edges the gateway must raise and clear, and when.

Owns the reading of a rules file for the truth (docs/rules.md), the meaning of each condition
kind computed from the values the devices sent (threshold with hysteresis, flag, all/any,
rate of change, stuck, daylight), the episodes with their debounce, the silence watchdog,
and the matching of expected edges with the alerts a broker received.

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

It does not import the agent's rule engine (tests/simulator/test_truth_rules.py compares the
two); sun times come from ``gateway.rules.schedules`` (astral), as the agent's do.
"""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import yaml

_KINDS: Final = ("threshold", "flag", "all", "any", "rate_of_change", "stuck", "daylight")
MAX_WINDOW_POINTS: Final = 512
"""The agent bounds a rate-of-change window to this many points (gateway/rules/conditions.py)."""
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
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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


def read_value(spec: str | Mapping[str, Any], data: Mapping[str, Any]) -> float | None:
    """field x scale + offset, or a clamped fill % (docs/rules.md "Values"); None if not a number."""
    body: Mapping[str, Any] = {"field": spec} if isinstance(spec, str) else spec
    raw = data.get(body["field"])
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return None
    value = float(raw) * float(body.get("scale", 1.0)) + float(body.get("offset", 0.0))
    if "fill_empty" in body:
        empty, full = float(body["fill_empty"]), float(body["fill_full"])
        if empty == full:
            return None
        value = min(100.0, max(0.0, (empty - value) / (empty - full) * 100.0))
    return value


def _levels(body: Mapping[str, Any]) -> tuple[str, float, float]:
    if "above" in body:
        return "above", float(body["above"]), float(body.get("clear_below", body["above"]))
    return "below", float(body["below"]), float(body.get("clear_above", body["below"]))


def _past(on: bool, value: float, direction: str, level: float, clear: float) -> bool:
    """Hysteresis: active from ``level`` on, until past ``clear``."""
    if direction == "above":
        return value >= clear if on else value >= level
    return value <= clear if on else value <= level


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, v); None when the points span no time."""
    n = len(points)
    mean_t = sum(p[0] for p in points) / n
    mean_v = sum(p[1] for p in points) / n
    var_t = sum((p[0] - mean_t) ** 2 for p in points)
    if var_t == 0:
        return None
    return sum((p[0] - mean_t) * (p[1] - mean_v) for p in points) / var_t


def daylight(place: Place, at_s: float, margin_s: float) -> bool:
    """Between sunrise + margin and sunset - margin of the local day of ``at_s`` (no sun event: night)."""
    from gateway.rules.model import Location
    from gateway.rules.schedules import sun_times

    day = datetime.fromtimestamp(at_s, ZoneInfo(place.timezone)).date()
    times = sun_times(Location(place.lat_deg, place.lon_deg, place.timezone), day)
    rise, set_ = times.get("sunrise"), times.get("sunset")
    return rise is not None and set_ is not None and rise + margin_s <= at_s <= set_ - margin_s


@dataclass
class Leaves:
    """Per (rule, device) state of each leaf: hysteresis flag, rate window, last values."""

    on: dict[str, bool] = field(default_factory=dict)
    points: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))


def evaluate(
    when: Mapping[str, Any], key: str, leaves: Leaves, at_s: float, data: Mapping[str, Any], place: Place
) -> tuple[bool, bool]:
    """(updated, active) of a condition after one reading at Unix time ``at_s`` (docs/rules.md)."""
    ((kind, body),) = when.items()
    if kind in ("all", "any"):
        results = [evaluate(part, f"{key}.{i}", leaves, at_s, data, place) for i, part in enumerate(body)]
        states = [active for _, active in results]
        return any(u for u, _ in results), all(states) if kind == "all" else any(states)
    on = leaves.on.get(key, False)
    if kind == "daylight":
        leaves.on[key] = daylight(place, at_s, float((body or {}).get("margin_s", 1800.0)))
        return True, leaves.on[key]
    if kind == "flag":
        if body["field"] not in data:
            return False, on
        wanted = body["in"] if "in" in body else [body["equals"]]
        raw = data[body["field"]]
        leaves.on[key] = any(raw == w and isinstance(raw, bool) == isinstance(w, bool) for w in wanted)
        return True, leaves.on[key]
    value = read_value(body["value"], data)
    if value is None:
        return False, on
    if kind == "threshold":
        leaves.on[key] = _past(on, value, *_levels(body))
        return True, leaves.on[key]
    points = leaves.points[key]
    if kind == "stuck":
        readings = int(body["readings"])
        points.append((at_s, value))
        del points[:-readings]
        if len(points) < readings:
            return False, on
        values = [v for _, v in points]
        leaves.on[key] = max(values) - min(values) <= float(body.get("tolerance", 0.0))
        return True, leaves.on[key]
    # rate_of_change: the slope over the last window_s, per per_s.
    window_s = float(body["window_s"])
    points.append((at_s, value))
    horizon = at_s - window_s
    while points and (points[0][0] < horizon or len(points) > MAX_WINDOW_POINTS):
        points.pop(0)
    slope = _slope(points) if len(points) >= int(body.get("min_points", 2)) else None
    if slope is None:
        return False, on
    leaves.on[key] = _past(on, slope * float(body.get("per_s", window_s)), *_levels(body))
    return True, leaves.on[key]


# --- episodes ----------------------------------------------------------------------------------


@dataclass
class _Track:
    """One (rule, device): the open episode, the pending change, the leaves, the silence clock."""

    open: bool = False
    pend_since: float | None = None
    pend_n: int = 0
    leaves: Leaves = field(default_factory=Leaves)
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
            track = self._tracks.setdefault((rule.id, dev_eui), _Track())
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
        assert rule.when is not None
        updated, active = evaluate(rule.when, "c", track.leaves, at_s, data, self.place)
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
