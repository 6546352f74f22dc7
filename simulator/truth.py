"""Ground truth: what the gateway must publish, computed from what the devices really sent.

Owns the expectations of a run, derived only from the frames the simulator sent and the
values its models reported (never from the gateway's code):

* per-device counts of frames the gateway must accept (lost and refused frames excluded);
* alert edges (raised / cleared, with the simulated time of the reading that causes them)
  for the rules of a rules file whose meaning can be predicted from readings alone:
  ``threshold`` (with hysteresis), ``flag``, ``all`` / ``any`` of those, ``for_readings`` and
  ``clear_for_readings`` (docs/rules.md). Rules with time debounce (``for_s``), ``silence``,
  ``rate_of_change``, ``stuck`` or ``daylight`` are listed as not predicted;
* daily Ld, Le, Ln and Lden per noise site (energetic means of the reported LAeq in the
  French periods day 06-18, evening 18-22, night 22-06 local time, arrêté du 4 avril 2006,
  with +5 and +10 dB penalties), for the days the gateway can close (the site reported after
  the day ended);
* daily passages per counter (the sum of its per-report counts, both directions).

And the comparison of those expectations with the records a broker received.
"""

from __future__ import annotations

import fnmatch
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import yaml

from simulator.city import ScheduledFrame, SimDevice
from simulator.models.base import SECONDS_PER_DAY

_PERIOD_PENALTY_DB: Final = {"day": 0.0, "evening": 5.0, "night": 10.0}
_PERIOD_HOURS: Final = {"day": 12, "evening": 4, "night": 8}
_PREDICTABLE: Final = ("threshold", "flag", "all", "any")


def french_period(hour: int) -> str:
    """Day 06-18, evening 18-22, night 22-06 (arrêté du 4 avril 2006; gateway/rules/aggregates.py)."""
    if 6 <= hour < 18:
        return "day"
    if 18 <= hour < 22:
        return "evening"
    return "night"


def lden_db(ld_db: float, le_db: float, ln_db: float) -> float:
    """Lden = 10·log10((12·10^(Ld/10) + 4·10^((Le+5)/10) + 8·10^((Ln+10)/10)) / 24) (END 2002/49/EC)."""
    levels = {"day": ld_db, "evening": le_db, "night": ln_db}
    total = sum(
        _PERIOD_HOURS[p] * 10.0 ** ((levels[p] + _PERIOD_PENALTY_DB[p]) / 10.0) for p in _PERIOD_HOURS
    )
    return 10.0 * math.log10(total / 24.0)


def fill_percent(distance_mm: float, empty_mm: float, full_mm: float) -> float:
    """The EM310-UDL profile's derived ``fill_level``: 0 % at empty, 100 % at full, clamped, 0.1 %."""
    return round(min(100.0, max(0.0, (empty_mm - distance_mm) / (empty_mm - full_mm) * 100.0)), 1)


# --- rules we can predict ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleSpec:
    id: str
    profiles: tuple[str, ...]
    sites: tuple[str, ...]
    dev_euis: tuple[str, ...]
    when: Mapping[str, Any]
    for_readings: int = 1
    clear_for_readings: int = 1

    def selects(self, dev_eui: str, profile: str, site: str) -> bool:
        if not (self.profiles or self.sites or self.dev_euis):
            return True
        return (
            profile in self.profiles
            or dev_eui in self.dev_euis
            or any(fnmatch.fnmatchcase(site, pattern) for pattern in self.sites)
        )


def load_rules(path: Path) -> tuple[list[RuleSpec], list[str]]:
    """The predictable rules of a rules file, and the ids of the others."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    predictable: list[RuleSpec] = []
    other: list[str] = []
    for rule in doc.get("rules", []):
        when = rule.get("when")
        timed = rule.get("for_s", 0) or rule.get("clear_for_s", 0)
        if when is None or timed or not _predictable(when):
            other.append(str(rule["id"]))
            continue
        devices = rule.get("devices", {})
        predictable.append(
            RuleSpec(
                str(rule["id"]),
                tuple(devices.get("profiles", [])),
                tuple(devices.get("sites", [])),
                tuple(str(e).lower() for e in devices.get("dev_euis", [])),
                when,
                int(rule.get("for_readings", 1)),
                int(rule.get("clear_for_readings", 1)),
            )
        )
    return predictable, other


def _predictable(when: Mapping[str, Any]) -> bool:
    (kind, body), *rest = when.items()
    if rest or kind not in _PREDICTABLE:
        return False
    if kind in ("all", "any"):
        return all(_predictable(part) for part in body)
    if kind == "threshold":
        value = body["value"]
        numbers = [body.get(k) for k in ("above", "below", "clear_below", "clear_above")]
        plain = all(n is None or isinstance(n, int | float) for n in numbers)
        return plain and (isinstance(value, str) or set(value) == {"field"})
    return True


def _evaluate(
    when: Mapping[str, Any], key: str, state: dict[str, bool], data: Mapping[str, Any]
) -> tuple[bool, bool]:
    """(updated, active) of a condition, with hysteresis state per leaf (docs/rules.md)."""
    (kind, body), *_ = when.items()
    if kind in ("all", "any"):
        results = [_evaluate(part, f"{key}.{i}", state, data) for i, part in enumerate(body)]
        states = [active for _, active in results]
        return any(u for u, _ in results), all(states) if kind == "all" else any(states)
    on = state.get(key, False)
    if kind == "flag":
        field_name = body["field"]
        if field_name not in data:
            return False, on
        wanted = body["equals"] if isinstance(body["equals"], list) else [body["equals"]]
        raw = data[field_name]
        on = any(raw == w and isinstance(raw, bool) == isinstance(w, bool) for w in wanted)
        state[key] = on
        return True, on
    value_spec = body["value"]
    raw = data.get(value_spec if isinstance(value_spec, str) else value_spec["field"])
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return False, on
    if "above" in body:
        level, clear = float(body["above"]), float(body.get("clear_below", body["above"]))
        on = raw >= clear if on else raw >= level
    else:
        level, clear = float(body["below"]), float(body.get("clear_above", body["below"]))
        on = raw <= clear if on else raw <= level
    state[key] = on
    return True, on


@dataclass
class _Episode:
    open: bool = False
    pending: int = 0
    leaves: dict[str, bool] = field(default_factory=dict)


# --- the expectations ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpectedAlert:
    dev_eui: str
    device: str
    rule: str
    state: str
    t_s: float


@dataclass
class Expected:
    """Everything the broker must end up with, from the frames of one run."""

    epoch_s: float
    timezone: str = "Europe/Paris"
    devices: dict[str, str] = field(default_factory=dict)
    """DevEUI -> device name."""
    counts: Counter[str] = field(default_factory=Counter)
    """DevEUI -> frames the gateway must accept."""
    alerts: list[ExpectedAlert] = field(default_factory=list)
    predicted_rules: list[str] = field(default_factory=list)
    unpredicted_rules: list[str] = field(default_factory=list)
    lden: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    """(DevEUI, simulated day) -> ld_db, le_db, ln_db, lden_db (unrounded)."""
    passages: dict[tuple[str, int], int] = field(default_factory=dict)
    """(DevEUI, simulated day) -> passages both ways."""

    def as_json(self) -> dict[str, Any]:
        def day_iso(day: int) -> str:
            noon = self.epoch_s + day * SECONDS_PER_DAY + SECONDS_PER_DAY / 2
            return datetime.fromtimestamp(noon, ZoneInfo(self.timezone)).date().isoformat()

        return {
            "type": "expected",
            "counts": dict(sorted(self.counts.items())),
            "alerts": [
                {"dev_eui": a.dev_eui, "device": a.device, "rule": a.rule, "state": a.state, "t_s": a.t_s}
                for a in self.alerts
            ],
            "predicted_rules": self.predicted_rules,
            "unpredicted_rules": self.unpredicted_rules,
            "lden": [
                {
                    "dev_eui": eui,
                    "day": day,
                    "date": day_iso(day),
                    **{k: round(v, 2) for k, v in levels.items()},
                }
                for (eui, day), levels in sorted(self.lden.items())
            ],
            "passages": [
                {"dev_eui": eui, "day": day, "date": day_iso(day), "total": n}
                for (eui, day), n in sorted(self.passages.items())
            ],
        }


class TruthBuilder:
    """Feed it every frame sent, in order; ``finish()`` gives the expectations."""

    def __init__(
        self,
        fleet: list[SimDevice],
        epoch_s: float,
        rules_file: Path | None = None,
        timezone: str = "Europe/Paris",
    ) -> None:
        self._fleet = {d.device.dev_eui.hex(): d for d in fleet}
        self.expected = Expected(epoch_s, timezone, {eui: d.name for eui, d in self._fleet.items()})
        self._rules: list[RuleSpec] = []
        if rules_file is not None:
            self._rules, self.expected.unpredicted_rules = load_rules(rules_file)
            self.expected.predicted_rules = [r.id for r in self._rules]
        self._episodes: dict[tuple[str, str], _Episode] = defaultdict(_Episode)
        self._energy: dict[tuple[str, int], dict[str, list[float]]] = {}
        self._passages: Counter[tuple[str, int]] = Counter()
        self._last_day: dict[str, int] = {}

    def add(self, frame: ScheduledFrame, clock_offset_s: float = 0.0) -> None:
        """Account one frame sent; ``clock_offset_s`` is how far the gateway's clock was off then
        (a ``clock_jump`` fault): the gateway files readings by its own clock, so does the truth."""
        if frame.expect != "accepted" or frame.fcnt is None:
            return
        eui = frame.dev_eui.hex()
        device = self._fleet[eui]
        self.expected.counts[eui] += 1
        data = dict(frame.values)
        if "distance" in data and "empty_distance_mm" in device.params:
            data["fill_level"] = fill_percent(
                data["distance"], device.params["empty_distance_mm"], device.params["full_distance_mm"]
            )
        t_s = frame.t_s + clock_offset_s
        day = int(t_s // SECONDS_PER_DAY)
        self._last_day[eui] = day
        laeq = data.get("LAeq")
        if isinstance(laeq, int | float) and device.device.profile == "milesight/ws302":
            period = french_period(int((t_s % SECONDS_PER_DAY) // 3600))
            sums = self._energy.setdefault((eui, day), {}).setdefault(period, [0.0, 0.0])
            sums[0] += 10.0 ** (laeq / 10.0)
            sums[1] += 1
        if "counter_a" in data and "counter_b" in data:
            self._passages[(eui, day)] += int(data["counter_a"]) + int(data["counter_b"])
        for rule in self._rules:
            if rule.selects(eui, device.device.profile, device.site):
                self._rule(rule, eui, device.name, t_s, data)

    def _rule(self, rule: RuleSpec, eui: str, name: str, t_s: float, data: Mapping[str, Any]) -> None:
        ep = self._episodes[(rule.id, eui)]
        updated, active = _evaluate(rule.when, "c", ep.leaves, data)
        if not updated:
            return
        if active == ep.open:
            ep.pending = 0
            return
        ep.pending += 1
        if ep.pending >= (rule.clear_for_readings if ep.open else rule.for_readings):
            ep.open, ep.pending = not ep.open, 0
            state = "raised" if ep.open else "cleared"
            self.expected.alerts.append(ExpectedAlert(eui, name, rule.id, state, t_s))

    def finish(self) -> Expected:
        for (eui, day), periods in self._energy.items():
            if self._last_day.get(eui, -1) <= day or len(periods) < 3:
                continue  # the gateway closes a day on the site's first report after it
            levels = {p: 10.0 * math.log10(s[0] / s[1]) for p, s in periods.items()}
            self.expected.lden[(eui, day)] = {
                "ld_db": levels["day"],
                "le_db": levels["evening"],
                "ln_db": levels["night"],
                "lden_db": lden_db(levels["day"], levels["evening"], levels["night"]),
            }
        for (eui, day), n in self._passages.items():
            if self._last_day.get(eui, -1) > day:
                self.expected.passages[(eui, day)] = n
        return self.expected


# --- the comparison -------------------------------------------------------------------------------


@dataclass
class Comparison:
    """What differs between the expectations and what the broker received (empty lists: all good)."""

    count_mismatches: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    unexpected_devices: list[str] = field(default_factory=list)
    missing_alerts: list[dict[str, Any]] = field(default_factory=list)
    unexpected_alerts: list[dict[str, Any]] = field(default_factory=list)
    lden_checked: int = 0
    lden_max_error_db: float = 0.0
    lden_mismatches: list[dict[str, Any]] = field(default_factory=list)
    passages_checked: int = 0
    passages_mismatches: list[dict[str, Any]] = field(default_factory=list)
    frames_received: int = 0
    alerts_received: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.count_mismatches
            or self.duplicates
            or self.unexpected_devices
            or self.missing_alerts
            or self.unexpected_alerts
            or self.lden_mismatches
            or self.passages_mismatches
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "frames_received": self.frames_received,
            "alerts_received": self.alerts_received,
            "count_mismatches": self.count_mismatches,
            "duplicates": self.duplicates,
            "unexpected_devices": self.unexpected_devices,
            "missing_alerts": self.missing_alerts,
            "unexpected_alerts": self.unexpected_alerts,
            "lden_checked": self.lden_checked,
            "lden_max_error_db": round(self.lden_max_error_db, 3),
            "lden_mismatches": self.lden_mismatches,
            "passages_checked": self.passages_checked,
            "passages_mismatches": self.passages_mismatches,
        }


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def compare(
    expected: Expected,
    records: Iterable[Mapping[str, Any]],
    alerts: Iterable[Mapping[str, Any]],
    *,
    lden_tolerance_db: float = 0.1,
) -> Comparison:
    """Check the broker's ``up`` records and ``alert`` records against the expectations."""
    out = Comparison()
    seen_ids: set[str] = set()
    counts: Counter[str] = Counter()
    lden: dict[tuple[str, int], float | None] = {}
    passages: dict[tuple[str, int], int] = {}
    for record in records:
        rid = str(record.get("id"))
        if rid in seen_ids:
            out.duplicates += 1
            continue
        seen_ids.add(rid)
        data = record.get("data") or {}
        eui = str(record.get("dev_eui"))
        if record.get("fcnt") is not None:
            counts[eui] += 1
            continue
        series = data.get("series")
        if series not in ("lden", "count_day"):
            continue
        day = round((_unix(data["from"]) - expected.epoch_s) / SECONDS_PER_DAY)
        if series == "lden":
            lden[(eui, day)] = data.get("lden_db")
        else:
            passages[(eui, day)] = int(data.get("total", 0))
    out.frames_received = sum(counts.values())
    for eui in sorted(set(counts) | set(expected.counts)):
        if eui not in expected.devices:
            out.unexpected_devices.append(eui)
        elif counts[eui] != expected.counts[eui]:
            out.count_mismatches.append(
                {"device": expected.devices[eui], "expected": expected.counts[eui], "received": counts[eui]}
            )
    for (eui, day), levels in expected.lden.items():
        got = lden.get((eui, day))
        out.lden_checked += 1
        if got is None:
            out.lden_mismatches.append(
                {"device": expected.devices[eui], "day": day, "expected": levels["lden_db"], "received": None}
            )
            continue
        error = abs(got - levels["lden_db"])
        out.lden_max_error_db = max(out.lden_max_error_db, error)
        if error > lden_tolerance_db:
            out.lden_mismatches.append(
                {"device": expected.devices[eui], "day": day, "expected": levels["lden_db"], "received": got}
            )
    for (eui, day), n in expected.passages.items():
        out.passages_checked += 1
        if passages.get((eui, day)) != n:
            out.passages_mismatches.append(
                {
                    "device": expected.devices[eui],
                    "day": day,
                    "expected": n,
                    "received": passages.get((eui, day)),
                }
            )
    rules = set(expected.predicted_rules)
    want = Counter((a.dev_eui, a.rule, a.state, round(a.t_s)) for a in expected.alerts)
    got_alerts: Counter[tuple[str, str, str, int]] = Counter()
    for alert in alerts:
        data = alert.get("data") or {}
        out.alerts_received += 1
        if data.get("rule") not in rules:
            continue
        t_s = _unix(str(alert["received_at"])) - expected.epoch_s
        got_alerts[(str(alert["dev_eui"]), str(data["rule"]), str(data["state"]), round(t_s))] += 1
    for key, n in (want - got_alerts).items():
        out.missing_alerts.append(
            {
                "device": expected.devices.get(key[0], key[0]),
                "rule": key[1],
                "state": key[2],
                "t_s": key[3],
                "n": n,
            }
        )
    for key, n in (got_alerts - want).items():
        out.unexpected_alerts.append(
            {
                "device": expected.devices.get(key[0], key[0]),
                "rule": key[1],
                "state": key[2],
                "t_s": key[3],
                "n": n,
            }
        )
    return out
