"""Noise levels at the edge: LAeq per interval, LN percentiles and the day's Lden, weighted by time.

Owns the acoustics of ISO 1996-1 and Directive 2002/49/EC Annex I as the gateway applies them to
a sensor's reports, and the per-device accumulators that publish and revise their records:

- A report's level covers the seconds before the report: the report's own period field (the
  edgegw node's ``period``, shorter for an early loud report), else the aggregate's
  ``period_s`` (the model's report interval). A report is split across every interval, day and
  Lden period it covers, and each level weighs the seconds it covers there:
  LAeq,T = 10·log10(Σ t_i·10^(L_i/10) / Σ t_i), Σ t_i being the covered part of T.
- LN is the level exceeded N % of the covered time.
- Lden = 10·log10((h_d·10^(Ld/10) + h_e·10^((Le+5)/10) + h_n·10^((Ln+10)/10)) / 24), h the
  nominal hours of the periods (12/4/8 for the French 06-18/18-22/22-06, the default, and for
  the Directive's 07-19/19-23/23-07), local time.
- Publication: an interval's (or day's) record is published once the device's reports cover
  its end (a report at or after it), or ``late_s`` after its end if they never do. Coverage that
  arrives later but before ``late_s`` after the end (a report processed after a newer one) is
  added and publishes a revision: the same series and interval, ``revision`` n, a distinct id.
  Coverage older than that is counted (``late_readings``, logged), never filed silently.

Every accumulator's state is a JSON-able dict (``snapshot``/``restore``), bounded by ``late_s``:
an interval is forgotten once its revision window has passed. It does not read clocks (times
are passed in), select devices (engine.py) or store records (the outbox).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from gateway.rules.actions import AggregateRecord
from gateway.rules.conditions import MissingParam, resolve
from gateway.rules.model import Aggregate, LdenPeriods

log = logging.getLogger(__name__)

Period = Literal["day", "evening", "night"]
PERIODS: Final[tuple[Period, ...]] = ("day", "evening", "night")
PERIOD_PENALTY_DB: Final[dict[Period, float]] = {"day": 0.0, "evening": 5.0, "night": 10.0}
MAX_COVER_S: Final = 86400.0
DEFAULT_PERIOD_S: Final = 900.0
"""What a report covers when neither it nor the device says (a quarter-hour, the usual interval)."""
"""A report claiming to cover more than a day is taken as covering the last day."""
MAX_PERCENTILE_PIECES: Final = 4096
"""Bound on the (level, seconds) pieces kept per interval for L10/L50/L90."""


# -- the arithmetic ---------------------------------------------------------------------------


def energetic_mean_db(levels_db: Iterable[float]) -> float:
    """10·log10 of the mean of 10^(L/10) (levels covering equal times); ValueError on no levels."""
    values = list(levels_db)
    if not values:
        raise ValueError("no levels to average")
    return 10.0 * math.log10(sum(10.0 ** (level / 10.0) for level in values) / len(values))


def lden_db(
    ld_db: float, le_db: float, ln_db: float, hours: tuple[float, float, float] = (12.0, 4.0, 8.0)
) -> float:
    """Day-evening-night level: +5 dB evening, +10 dB night, weighted by the periods' hours."""
    total = (
        hours[0] * 10.0 ** ((ld_db + PERIOD_PENALTY_DB["day"]) / 10.0)
        + hours[1] * 10.0 ** ((le_db + PERIOD_PENALTY_DB["evening"]) / 10.0)
        + hours[2] * 10.0 ** ((ln_db + PERIOD_PENALTY_DB["night"]) / 10.0)
    )
    return 10.0 * math.log10(total / 24.0)


def french_period(local_hour: int) -> Period:
    """Day 06-18, evening 18-22, night 22-06 (arrêté du 4 avril 2006)."""
    if 6 <= local_hour < 18:
        return "day"
    if 18 <= local_hour < 22:
        return "evening"
    return "night"


def level_exceeded_db(samples_db: Sequence[float], percent: float) -> float:
    """LN over samples of equal duration: nearest rank over the sorted samples."""
    if not samples_db:
        raise ValueError("no samples")
    ordered = sorted(samples_db, reverse=True)
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def level_exceeded_timed_db(pieces: Sequence[Sequence[float]], percent: float) -> float:
    """LN over ``(level, seconds)`` pieces: the highest level exceeded or equalled ``percent`` % of
    the time. With equal durations it is ``level_exceeded_db``'s nearest rank."""
    if not pieces:
        raise ValueError("no samples")
    ordered = sorted(pieces, key=lambda p: -p[0])
    total_s = sum(p[1] for p in ordered)
    target_s = percent / 100.0 * total_s - 1e-9 * total_s  # tolerance for sums of float seconds
    seen_s = 0.0
    for level, seconds in ordered:
        seen_s += seconds
        if seen_s >= target_s:
            return float(level)
    return float(ordered[-1][0])


def _db(energy: float, seconds: float) -> float:
    return 10.0 * math.log10(energy / seconds)


# -- the accumulator --------------------------------------------------------------------------


def _new_acc(start_s: float) -> dict[str, Any]:
    # energy: Σ t·10^(L/10); covered_s: Σ t; n: reports; pieces: [level, t] for LN;
    # rev: last published revision (-1: none yet); changed: coverage added since.
    return {
        "start": start_s,
        "energy": 0.0,
        "covered_s": 0.0,
        "n": 0,
        "pieces": [],
        "rev": -1,
        "changed": False,
    }


def _new_day(day: str) -> dict[str, Any]:
    return {"day": day, "periods": {}, "n": 0, "rev": -1, "changed": False}


class NoiseLevels:
    """The LAeq intervals and Lden days of one aggregate spec for one device."""

    def __init__(self, spec: Aggregate, dev_eui: str, profile: str, tz: ZoneInfo) -> None:
        self.spec = spec
        self.dev_eui = dev_eui
        self.profile = profile
        self._tz = tz
        self._periods: LdenPeriods = spec.lden_periods
        self._leq: dict[int, dict[float, dict[str, Any]]] = {}  # interval_s -> start_s -> acc
        self._days: dict[str, dict[str, Any]] = {}  # local ISO date -> day
        self._now_s: float | None = None  # the latest time seen (readings and ticks)
        self._reported_s: float | None = None  # the end of the latest report's coverage
        self.late_readings = 0
        self.late_cover_s = 0.0
        """Seconds of coverage that arrived after their interval's window (not filed)."""

    # -- input ----------------------------------------------------------------------------------

    def cover_s(self, data: Mapping[str, Any], params: Mapping[str, float] | None = None) -> float:
        """The seconds a reading's levels cover: its period field, else the spec's ``period_s`` (a
        number, or the device's parameter; ``DEFAULT_PERIOD_S`` when the device has none)."""
        if self.spec.period_field is not None:
            own = _number(data.get(self.spec.period_field))
            if own is not None and own > 0:
                return min(own, MAX_COVER_S)
        try:
            period_s = resolve(self.spec.period_s, params or {})
        except MissingParam:
            return DEFAULT_PERIOD_S
        return min(max(period_s, 1.0), MAX_COVER_S)

    def add(self, at_s: float, data: Mapping[str, Any], params: Mapping[str, float] | None = None) -> None:
        """File a reading's levels over the ``cover_s`` seconds before ``at_s``."""
        spec = self.spec
        start_s = at_s - self.cover_s(data, params)
        late_s = 0.0
        filed = False
        if spec.leq is not None:
            level = _number(data.get(spec.leq.field))
            if level is not None:
                filed = True
                for interval_s in spec.leq.intervals_s:
                    late_s += self._file_leq(interval_s, start_s, at_s, level)
        if spec.lden_field is not None:
            level = _number(data.get(spec.lden_field))
            if level is not None:
                filed = True
                late_s += self._file_lden(start_s, at_s, level)
        if not filed:
            return
        self._reported_s = at_s if self._reported_s is None else max(self._reported_s, at_s)
        self._now_s = at_s if self._now_s is None else max(self._now_s, at_s)
        if late_s > 0:
            self.late_readings += 1
            self.late_cover_s += late_s
            # Not silent: the first one at INFO, then DEBUG (a clock set back can make many).
            (log.info if self.late_readings == 1 else log.debug)(
                "aggregate %s %s: a reading at %.0f covers %.0f s of intervals past their %.0f s "
                "window: not filed (%d late readings)",
                spec.id, self.dev_eui, at_s, late_s, spec.late_s, self.late_readings,
            )  # fmt: skip

    def _file_leq(self, interval_s: int, start_s: float, end_s: float, level_db: float) -> float:
        """Add the level to every interval it covers; the seconds that came too late."""
        assert self.spec.leq is not None
        # Past its window once the latest time seen is late_s after its end (then forgotten).
        final_s = None if self._now_s is None else self._now_s - self.spec.late_s
        accs = self._leq.setdefault(interval_s, {})
        energy = 10.0 ** (level_db / 10.0)
        late_s = 0.0
        bucket = float(math.floor(start_s / interval_s) * interval_s)
        while bucket < end_s:
            piece_s = min(end_s, bucket + interval_s) - max(start_s, bucket)
            if piece_s > 0:
                if final_s is not None and bucket + interval_s <= final_s:
                    late_s += piece_s
                else:
                    acc = accs.get(bucket)
                    if acc is None:
                        acc = accs[bucket] = _new_acc(bucket)
                    acc["energy"] += piece_s * energy
                    acc["covered_s"] += piece_s
                    acc["n"] += 1
                    acc["changed"] = True
                    if self.spec.leq.percentiles and len(acc["pieces"]) < MAX_PERCENTILE_PIECES:
                        acc["pieces"].append([level_db, piece_s])
            bucket += interval_s
        return late_s

    def _file_lden(self, start_s: float, end_s: float, level_db: float) -> float:
        final_s = None if self._now_s is None else self._now_s - self.spec.late_s
        energy = 10.0 ** (level_db / 10.0)
        late_s = 0.0
        day = datetime.fromtimestamp(start_s, self._tz).date()
        while True:
            segments = self._segments(day)
            if segments[0][1] >= end_s:
                return late_s
            day_end_s = segments[-1][2]
            touched = False
            for period, seg_from_s, seg_to_s in segments:
                piece_s = min(end_s, seg_to_s) - max(start_s, seg_from_s)
                if piece_s <= 0:
                    continue
                if final_s is not None and day_end_s <= final_s:
                    late_s += piece_s
                    continue
                acc = self._days.get(day.isoformat())
                if acc is None:
                    acc = self._days[day.isoformat()] = _new_day(day.isoformat())
                sums = acc["periods"].setdefault(period, [0.0, 0.0])
                sums[0] += piece_s * energy
                sums[1] += piece_s
                acc["changed"] = touched = True
            if touched:
                self._days[day.isoformat()]["n"] += 1
            day += timedelta(days=1)

    def _segments(self, day: date) -> list[tuple[Period, float, float]]:
        """The day's Lden periods in order, as Unix times: night, day, evening, night."""
        p = self._periods

        def at(seconds: int) -> float:
            clock = time(seconds // 3600, seconds % 3600 // 60)
            return datetime.combine(day, clock, self._tz).timestamp()

        nxt = day + timedelta(days=1)
        midnight = datetime(day.year, day.month, day.day, tzinfo=self._tz).timestamp()
        next_midnight = datetime(nxt.year, nxt.month, nxt.day, tzinfo=self._tz).timestamp()
        day_s, evening_s, night_s = at(p.day_s), at(p.evening_s), at(p.night_s)
        return [
            ("night", midnight, day_s),
            ("day", day_s, evening_s),
            ("evening", evening_s, night_s),
            ("night", night_s, next_midnight),
        ]

    # -- publishing -----------------------------------------------------------------------------

    def close_until(self, now_s: float) -> list[AggregateRecord]:
        """Publish the intervals and days due at ``now_s`` (first records and revisions); forget
        those whose revision window has passed."""
        self._now_s = now_s if self._now_s is None else max(self._now_s, now_s)
        now_s = self._now_s
        out: list[AggregateRecord] = []
        for interval_s, accs in self._leq.items():
            kind = f"leq_{interval_s}"
            for start_s in sorted(accs):
                end_s = start_s + interval_s
                if end_s > now_s:
                    break
                acc = accs[start_s]
                record = self._due(acc, kind, start_s, end_s, now_s, self._leq_values)
                if record is not None:
                    out.append(record)
                if now_s >= end_s + self.spec.late_s:
                    del accs[start_s]
        for day in sorted(self._days):
            acc = self._days[day]
            segments = self._segments(date.fromisoformat(day))
            start_s, end_s = segments[0][1], segments[-1][2]
            if end_s > now_s:
                break
            record = self._due(acc, "lden", start_s, end_s, now_s, self._lden_values)
            if record is not None:
                out.append(record)
            if now_s >= end_s + self.spec.late_s:
                del self._days[day]
        return out

    def _due(
        self, acc: dict[str, Any], kind: str, start_s: float, end_s: float, now_s: float, values: Any
    ) -> AggregateRecord | None:
        """The record of an ended interval if it is due: its first, or a revision."""
        if not acc["changed"]:
            return None
        if acc["rev"] < 0:
            covered = self._reported_s is not None and self._reported_s >= end_s
            if not covered and now_s < end_s + self.spec.late_s:
                return None  # the device's next report may still cover the rest of it
        acc["rev"] += 1
        acc["changed"] = False
        body: dict[str, float | int | str | None] = {**values(acc), "revision": acc["rev"]}
        return AggregateRecord(
            self.spec.id, kind, self.dev_eui, self.profile, start_s, end_s, body, acc["rev"]
        )

    @staticmethod
    def _leq_values(acc: dict[str, Any]) -> dict[str, float | int | str | None]:
        values: dict[str, float | int | str | None] = {
            "laeq_db": round(_db(acc["energy"], acc["covered_s"]), 1),
            "samples": acc["n"],
            "covered_s": round(acc["covered_s"], 1),
        }
        if acc["pieces"]:
            for pct in (10, 50, 90):
                values[f"la{pct}_db"] = round(level_exceeded_timed_db(acc["pieces"], pct), 1)
        return values

    def _lden_values(self, acc: dict[str, Any]) -> dict[str, float | int | str | None]:
        periods: dict[str, list[float]] = acc["periods"]
        levels: dict[str, float | None] = {}
        for name in PERIODS:
            sums = periods.get(name)
            levels[name] = _db(sums[0], sums[1]) if sums and sums[1] > 0 else None
        ld, le, ln = levels["day"], levels["evening"], levels["night"]
        lden = None
        if ld is not None and le is not None and ln is not None:
            lden = lden_db(ld, le, ln, self._periods.hours())
        return {
            "ld_db": None if ld is None else round(ld, 1),
            "le_db": None if le is None else round(le, 1),
            "ln_db": None if ln is None else round(ln, 1),
            "lden_db": None if lden is None else round(lden, 1),
            "samples": acc["n"],
            "covered_s": round(sum(s[1] for s in periods.values()), 1),
        }

    # -- persistence ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "leq": {str(k): list(accs.values()) for k, accs in self._leq.items()},
            "days": list(self._days.values()),
            "now": self._now_s,
            "reported": self._reported_s,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a ``snapshot``; intervals of a length the spec no longer has are dropped."""
        intervals = set(self.spec.leq.intervals_s) if self.spec.leq is not None else set()
        self._leq = {
            int(k): {float(a["start"]): dict(a) for a in accs}
            for k, accs in state.get("leq", {}).items()
            if int(k) in intervals
        }
        self._days = {str(d["day"]): dict(d) for d in state.get("days", [])} if self.spec.lden_field else {}
        now, reported = state.get("now"), state.get("reported")
        self._now_s = None if now is None else float(now)
        self._reported_s = None if reported is None else float(reported)
        # Bounded whatever the snapshot says: the next close_until forgets what is past its window.


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if math.isnan(value) or math.isinf(value):
        return None
    return float(value)
