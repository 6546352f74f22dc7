"""Ground truth: what the gateway must publish, computed from what the devices really sent.

Owns the expectations of a run, derived only from the frames the simulator sent and the
values its models reported (never from the gateway's code):

* per-device counts of frames the gateway must accept (lost and refused frames excluded);
* alert edges (raised / cleared, with the simulated time of the reading that causes them, or
  the window a clock tick may land in) for the rules of a rules file (simulator/truth_rules.py:
  every condition kind, ``for_readings``/``for_s`` debounce and ``silence``); rules with
  ``$parameters`` are listed as not predicted;
* daily Ld, Le, Ln and Lden per noise site (energetic means of the reported LAeq in the
  French periods day 06-18, evening 18-22, night 22-06 local time, arrêté du 4 avril 2006,
  with +5 and +10 dB penalties), for the days the gateway can close (the site reported after
  the day ended);
* daily passages per counter (the sum of its per-report counts, both directions).

And the comparison of those expectations with the records a broker received.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from simulator.city import ScheduledFrame, SimDevice
from simulator.models.base import SECONDS_PER_DAY
from simulator.models.display import DisplayModel
from simulator.models.noise import NoiseModel
from simulator.totems import TotemBook, TotemTruth, load_feeds
from simulator.totems import check as check_totems
from simulator.truth_days import DayBook
from simulator.truth_rules import ExpectedAlert, RuleSpec, RuleTruth, Undetermined, load_rules, match_alerts

_PERIOD_PENALTY_DB: Final = {"day": 0.0, "evening": 5.0, "night": 10.0}
_PERIOD_HOURS: Final = {"day": 12, "evening": 4, "night": 8}


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


# --- the expectations ------------------------------------------------------------------------------


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
    undetermined: list[Undetermined] = field(default_factory=list)
    """(rule, device) pairs whose alerts depend on tick times from some point on: not compared."""
    lden: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    """(DevEUI, simulated day) -> ld_db, le_db, ln_db, lden_db (unrounded)."""
    passages: dict[tuple[str, int], int] = field(default_factory=dict)
    """(DevEUI, simulated day) -> passages both ways."""
    totems: list[TotemTruth] = field(default_factory=list)
    """The states each totem's feed went through, and what the totem received (simulator/totems.py)."""
    join_replays_answered: dict[str, int] = field(default_factory=dict)
    """Observed: join-accepts the gateway sent for replayed join-requests, per device (must be none)."""

    def as_json(self) -> dict[str, Any]:
        def day_iso(day: int) -> str:
            noon = self.epoch_s + day * SECONDS_PER_DAY + SECONDS_PER_DAY / 2
            return datetime.fromtimestamp(noon, ZoneInfo(self.timezone)).date().isoformat()

        return {
            "type": "expected",
            "counts": dict(sorted(self.counts.items())),
            "alerts": [a.as_json() for a in self.alerts],
            "undetermined": [u.as_json() for u in self.undetermined],
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
            **({"totems": [t.as_json() for t in self.totems]} if self.totems else {}),
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
        self._clock_s = epoch_s
        if rules_file is not None:
            self._rules, self.expected.unpredicted_rules, place = load_rules(rules_file)
            self.expected.predicted_rules = [r.id for r in self._rules]
            self._alerts = RuleTruth(self._rules, epoch_s, place)
            for eui, d in self._fleet.items():  # the agent knows the imported fleet from its start
                self._alerts.known(eui, d.name, d.device.profile, d.site, epoch_s)
        else:
            self._alerts = RuleTruth([], epoch_s)
        self._days = DayBook(epoch_s, timezone, french_period)  # Lden and passages, filed as the agent does
        names = {eui: d.name for eui, d in self._fleet.items()}
        self._totems = TotemBook(load_feeds(rules_file) if rules_file else [], names, epoch_s, timezone)

    def add(self, frame: ScheduledFrame, clock_offset_s: float = 0.0) -> None:
        """Account one frame sent; ``clock_offset_s`` is how far the gateway's clock was off then
        (a ``clock_jump`` fault): the gateway files readings by its own clock, so does the truth."""
        at_s = self.expected.epoch_s + frame.t_s + clock_offset_s  # the gateway's stamp, bit for bit
        self._clock_s = max(self._clock_s, at_s)
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
        laeq = data.get("LAeq")
        if isinstance(laeq, int | float) and isinstance(device.model, NoiseModel):
            # The WS302's LAeq covers its report interval, up to the report (simulator/models/noise.py).
            self._days.laeq(eui, at_s, laeq, device.model.interval_s)
        if "counter_a" in data and "counter_b" in data:
            self._days.count(eui, at_s, int(data["counter_a"]) + int(data["counter_b"]))
        self._alerts.reading(eui, device.name, device.device.profile, device.site, at_s, data)
        self._totems.add(eui, device.device.profile, device.site, frame.t_s + clock_offset_s, data)

    def finish(self) -> Expected:
        self._alerts.finish(self._clock_s)
        self.expected.alerts = sorted(self._alerts.alerts, key=lambda a: a.t_s)
        self.expected.undetermined = list(self._alerts.undetermined)
        # The gateway closes a day on the site's first report after it (simulator/truth_days.py).
        for (eui, day), levels in self._days.lden_levels().items():
            self.expected.lden[(eui, day)] = {
                "ld_db": levels["day"],
                "le_db": levels["evening"],
                "ln_db": levels["night"],
                "lden_db": lden_db(levels["day"], levels["evening"], levels["night"]),
            }
        self.expected.passages.update(self._days.passages())
        shown = {
            eui: [(s.t_s, s.today, s.year) for s in d.model.history]
            for eui, d in self._fleet.items()
            if isinstance(d.model, DisplayModel)
        }
        self.expected.totems = self._totems.finish(shown, self._clock_s - self.expected.epoch_s)
        answered = {d.name: d.join_replay_answers for d in self._fleet.values() if d.join_replay_answers}
        self.expected.join_replays_answered = answered
        return self.expected


# --- the comparison -------------------------------------------------------------------------------


@dataclass
class Comparison:
    """What differs between the expectations and what the broker received (empty lists: all good)."""

    count_mismatches: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    """Records delivered again with the same id and the same body: docs/outbox.md allows them
    (a kill -9 between the broker's acknowledgement and the commit that marks it), so they do not
    fail a run; a run without faults asserts the count itself."""
    conflicting_ids: list[str] = field(default_factory=list)
    """Ids delivered twice with different bodies: a stable id must name one record."""
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
    alerts_windowed: int = 0
    """Edges of tick-driven rules (for_s, silence) that arrived inside their window."""
    optional_present: int = 0
    optional_absent: int = 0
    """Groups of edges a tick may or may not have raised: all of them came, or none did."""
    alerts_not_compared: int = 0
    totems_checked: int = 0
    displays_received: int = 0
    totem_mismatches: list[dict[str, Any]] = field(default_factory=list)
    """Numbers a totem showed that its counters never made, or out of order (simulator/totems.py)."""
    join_replays_answered: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.count_mismatches
            or self.conflicting_ids
            or self.unexpected_devices
            or self.missing_alerts
            or self.unexpected_alerts
            or self.lden_mismatches
            or self.passages_mismatches
            or self.totem_mismatches
            or self.join_replays_answered
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "frames_received": self.frames_received,
            "alerts_received": self.alerts_received,
            "alerts_windowed": self.alerts_windowed,
            "optional_present": self.optional_present,
            "optional_absent": self.optional_absent,
            "alerts_not_compared": self.alerts_not_compared,
            "count_mismatches": self.count_mismatches,
            "duplicates": self.duplicates,
            "conflicting_ids": self.conflicting_ids,
            "unexpected_devices": self.unexpected_devices,
            "missing_alerts": self.missing_alerts,
            "unexpected_alerts": self.unexpected_alerts,
            "lden_checked": self.lden_checked,
            "lden_max_error_db": round(self.lden_max_error_db, 3),
            "lden_mismatches": self.lden_mismatches,
            "passages_checked": self.passages_checked,
            "passages_mismatches": self.passages_mismatches,
            **(
                {
                    "totems_checked": self.totems_checked,
                    "displays_received": self.displays_received,
                    "totem_mismatches": self.totem_mismatches,
                }
                if self.totems_checked
                else {}
            ),
            **({"join_replays_answered": self.join_replays_answered} if self.join_replays_answered else {}),
        }


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _first_deliveries(
    records: Iterable[Mapping[str, Any]], out: Comparison
) -> Iterator[Mapping[str, Any]]:
    """Each id once; a second delivery counts in ``out.duplicates`` (same body) or
    ``out.conflicting_ids`` (a different body under the same id)."""
    first: dict[str, Mapping[str, Any]] = {}
    for record in records:
        rid = str(record.get("id"))
        seen = first.get(rid)
        if seen is None:
            first[rid] = record
            yield record
        elif seen == record:
            out.duplicates += 1
        else:
            out.conflicting_ids.append(rid)


def compare(
    expected: Expected,
    records: Iterable[Mapping[str, Any]],
    alerts: Iterable[Mapping[str, Any]],
    *,
    lden_tolerance_db: float = 0.1,
) -> Comparison:
    """Check the broker's ``up`` records and ``alert`` records against the expectations."""
    out = Comparison()
    counts: Counter[str] = Counter()
    lden: dict[tuple[str, int], float | None] = {}
    lden_revision: dict[tuple[str, int], int] = {}
    passages: dict[tuple[str, int], int] = {}
    for record in _first_deliveries(records, out):
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
            # A late report revises a published day (docs/mqtt.md): the highest revision counts.
            revision = int(data.get("revision", 0))
            if revision >= lden_revision.get((eui, day), -1):
                lden_revision[(eui, day)] = revision
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
    received: list[tuple[str, str, str, float]] = []
    for alert in _first_deliveries(alerts, out):
        data = alert.get("data") or {}
        out.alerts_received += 1
        if data.get("rule") not in rules:
            continue
        t_s = _unix(str(alert["received_at"])) - expected.epoch_s
        received.append((str(alert["dev_eui"]), str(data["rule"]), str(data["state"]), t_s))
    matched = match_alerts(expected.alerts, expected.undetermined, received, expected.devices)
    out.missing_alerts, out.unexpected_alerts = matched.missing, matched.unexpected
    out.alerts_windowed, out.alerts_not_compared = matched.windowed, matched.not_compared
    out.optional_present, out.optional_absent = matched.optional_present, matched.optional_absent
    out.totems_checked = len(expected.totems)
    out.displays_received = sum(len(t.received) for t in expected.totems)
    out.totem_mismatches = check_totems(expected.totems)
    out.join_replays_answered = dict(expected.join_replays_answered)
    return out
