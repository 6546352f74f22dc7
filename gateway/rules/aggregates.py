"""Aggregates computed at the edge: noise LAeq / percentiles / Lden, passage counts, fill rate.

Owns the arithmetic (energetic averages of decibels, Lden with the French periods and
penalties, LN percentiles, counter deltas with reset detection) and the per-device
accumulators that close intervals and days and emit ``AggregateRecord`` values. Every
accumulator's state is a JSON-able dict (``snapshot``/``restore``), so totals survive
a restart of the agent.

It does not read clocks (times are passed in), select devices (engine.py) or store
records (the outbox).

Facts (research/domain.md §2.3, §4.4):
- LAeq,T = 10·log10(mean of 10^(L_i/10)) for equal sub-intervals: decibels are averaged
  energetically, never arithmetically (60 and 70 dB average to 67.4 dB).
- Lden = 10·log10((12·10^(Ld/10) + 4·10^((Le+5)/10) + 8·10^((Ln+10)/10)) / 24), with the
  French periods day 06-18, evening 18-22, night 22-06 (arrêté du 4 avril 2006), local time.
- LN is the level exceeded N % of the time: L10 peaks, L50 median, L90 background.
- Counts: hourly bins are the national standard; day and year totals in local time, the
  year total resets on 1 January; cumulative counters restart at power-up (negative step).
- Fill rate: average filling speed (%/day) since the last emptying and the forecast full
  date, as in LwM2M object 3435 (research/domain.md §1.4); a drop of the fill level is an
  emptying and starts a new series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from gateway.clock import iso_utc
from gateway.rules import conditions
from gateway.rules.actions import AggregateRecord
from gateway.rules.model import Aggregate

Period = Literal["day", "evening", "night"]
PERIOD_HOURS: Final[dict[Period, int]] = {"day": 12, "evening": 4, "night": 8}
PERIOD_PENALTY_DB: Final[dict[Period, float]] = {"day": 0.0, "evening": 5.0, "night": 10.0}
MAX_FILL_POINTS: Final = 512
"""Bound on the readings kept for a fill rate (a week at one reading every 20 min)."""
MAX_PERCENTILE_SAMPLES: Final = 4096
"""Bound on the samples kept per interval for L10/L50/L90 (one hour of 1-s samples is 3600)."""


def energetic_mean_db(levels_db: Iterable[float]) -> float:
    """10·log10 of the mean of 10^(L/10); ValueError on no levels."""
    values = list(levels_db)
    if not values:
        raise ValueError("no levels to average")
    return 10.0 * math.log10(sum(10.0 ** (level / 10.0) for level in values) / len(values))


def lden_db(ld_db: float, le_db: float, ln_db: float) -> float:
    """Day-evening-night level with +5 dB evening and +10 dB night penalties, 12/4/8 hours."""
    total = (
        PERIOD_HOURS["day"] * 10.0 ** (ld_db / 10.0)
        + PERIOD_HOURS["evening"] * 10.0 ** ((le_db + PERIOD_PENALTY_DB["evening"]) / 10.0)
        + PERIOD_HOURS["night"] * 10.0 ** ((ln_db + PERIOD_PENALTY_DB["night"]) / 10.0)
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
    """LN: the level exceeded ``percent`` % of the time (nearest rank over the sorted samples)."""
    if not samples_db:
        raise ValueError("no samples")
    ordered = sorted(samples_db, reverse=True)
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _bucket_start(at_s: float, interval_s: int) -> float:
    # Epoch-aligned: intervals divide an hour, so they align with the local clock in any zone
    # whose UTC offset is a whole number of hours (Europe/Paris).
    return float(math.floor(at_s / interval_s) * interval_s)


def _local_day(at_s: float, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(at_s, tz).date()


def _day_bounds(day: date, tz: ZoneInfo) -> tuple[float, float]:
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    return start.timestamp(), end.timestamp()


class DeviceAggregator:
    """The accumulators of one aggregate spec for one device."""

    def __init__(self, spec: Aggregate, dev_eui: str, profile: str, tz: ZoneInfo) -> None:
        self.spec = spec
        self.dev_eui = dev_eui
        self.profile = profile
        self._tz = tz
        # Open LAeq intervals: interval_s -> [start_s, energy_sum, n, samples]
        self._leq: dict[int, list[Any]] = {}
        # Lden of the open local day: [iso date, {period: [energy_sum, n]}]
        self._lden: list[Any] | None = None
        # Counts: open intervals interval_s -> [start_s, {field: n}]; the day; the year; last counters.
        self._count: dict[int, list[Any]] = {}
        self._count_day: list[Any] | None = None  # [iso date, {field: n}]
        self._year: list[Any] | None = None  # [year, {field: n}]
        self._last_counter: dict[str, float] = {}
        self._fill: list[list[float]] = []  # [at_s, fill %] since the last emptying
        self.late_readings = 0

    # -- input --------------------------------------------------------------------------------

    def add(
        self, at_s: float, data: dict[str, Any], params: dict[str, float] | None = None
    ) -> list[AggregateRecord]:
        """Account one reading; returns the records of the periods it closed (and a fill record).

        ``params`` are the device's parameters, for ``$name`` values of a fill spec.
        """
        out = self.close_until(at_s)
        spec = self.spec
        if spec.fill is not None:
            record = self._add_fill(at_s, data, params or {})
            if record is not None:
                out.append(record)
        if spec.leq is not None:
            level = _number(data.get(spec.leq.field))
            if level is not None:
                self._add_leq(at_s, level)
        if spec.lden_field is not None:
            level = _number(data.get(spec.lden_field))
            if level is not None:
                self._add_lden(at_s, level)
        if spec.count is not None:
            self._add_counts(at_s, data)
        return out

    def _add_leq(self, at_s: float, level: float) -> None:
        assert self.spec.leq is not None
        for interval_s in self.spec.leq.intervals_s:
            start = _bucket_start(at_s, interval_s)
            acc = self._leq.get(interval_s)
            if acc is not None and start < acc[0]:
                self.late_readings += 1
                continue
            if acc is None:
                acc = self._leq[interval_s] = [start, 0.0, 0, []]
            acc[1] += 10.0 ** (level / 10.0)
            acc[2] += 1
            if self.spec.leq.percentiles and len(acc[3]) < MAX_PERCENTILE_SAMPLES:
                acc[3].append(level)

    def _add_fill(
        self, at_s: float, data: dict[str, Any], params: dict[str, float]
    ) -> AggregateRecord | None:
        spec = self.spec.fill
        assert spec is not None
        try:
            fill = conditions.read_value(spec.value, data, params)
            full_pct = conditions.resolve(spec.full_pct, params)
        except conditions.MissingParam:
            return None  # no container geometry for this device
        if fill is None:
            return None
        points = self._fill
        if points and at_s <= points[-1][0]:
            self.late_readings += 1
            return None
        if points and points[-1][1] - fill >= spec.emptied_drop_pct:
            points.clear()  # an emptying: the filling speed starts again from here
        points.append([at_s, fill])
        horizon = at_s - spec.window_s
        while points and (points[0][0] < horizon or len(points) > MAX_FILL_POINTS):
            points.pop(0)
        values: dict[str, float | int | str | None] = {
            "fill_pct": round(fill, 1),
            "rate_pct_per_day": None,
            "full_in_h": None,
            "full_at": None,
            "points": len(points),
            "since": iso_utc(points[0][0]),
        }
        slope = conditions.slope_per_s(points) if len(points) >= 2 else None
        if slope is not None and at_s - points[0][0] >= spec.min_span_s:
            rate = slope * 86400.0
            values["rate_pct_per_day"] = round(rate, 2)
            if fill >= full_pct:
                values["full_in_h"], values["full_at"] = 0.0, iso_utc(at_s)
            elif rate > 0:
                full_in_s = (full_pct - fill) / rate * 86400.0
                values["full_in_h"] = round(full_in_s / 3600.0, 1)
                values["full_at"] = iso_utc(at_s + full_in_s)
        # A value as of this reading: the record's period is the instant of the reading.
        return self._record("fill", at_s, at_s, values)

    def _add_lden(self, at_s: float, level: float) -> None:
        local = datetime.fromtimestamp(at_s, self._tz)
        day = local.date().isoformat()
        if self._lden is not None and day < self._lden[0]:
            self.late_readings += 1
            return
        if self._lden is None:
            self._lden = [day, {}]
        sums = self._lden[1].setdefault(french_period(local.hour), [0.0, 0])
        sums[0] += 10.0 ** (level / 10.0)
        sums[1] += 1

    def _add_counts(self, at_s: float, data: dict[str, Any]) -> None:
        spec = self.spec.count
        assert spec is not None
        deltas: dict[str, int] = {}
        for name in spec.fields:
            value = _number(data.get(name))
            if value is None:
                continue
            if spec.mode == "increment":
                deltas[name] = max(0, int(value))
                continue
            last = self._last_counter.get(name)
            self._last_counter[name] = value
            if last is None:
                continue  # the first value of a cumulative counter is only a baseline
            # A backwards step is a restart of the counter (PCR2 *_SUM restart at power-up).
            deltas[name] = int(value - last) if value >= last else int(value)
        if not deltas:
            return
        for interval_s in spec.intervals_s:
            start = _bucket_start(at_s, interval_s)
            acc = self._count.get(interval_s)
            if acc is not None and start < acc[0]:
                self.late_readings += 1
                continue
            if acc is None:
                acc = self._count[interval_s] = [start, {}]
            for name, n in deltas.items():
                acc[1][name] = acc[1].get(name, 0) + n
        local = datetime.fromtimestamp(at_s, self._tz).date()
        if self._count_day is None:
            self._count_day = [local.isoformat(), {}]
        if self._year is None or self._year[0] != local.year:
            self._year = [local.year, {}]
        for name, n in deltas.items():
            self._count_day[1][name] = self._count_day[1].get(name, 0) + n
            self._year[1][name] = self._year[1].get(name, 0) + n

    # -- closing ------------------------------------------------------------------------------

    def close_until(self, now_s: float) -> list[AggregateRecord]:
        """Emit and reset every interval and day that ended at or before ``now_s``."""
        out: list[AggregateRecord] = []
        for interval_s, acc in list(self._leq.items()):
            if acc[0] + interval_s <= now_s:
                del self._leq[interval_s]
                values: dict[str, float | int | None] = {"laeq_db": _db(acc[1] / acc[2]), "samples": acc[2]}
                if acc[3]:
                    for pct in (10, 50, 90):
                        values[f"la{pct}_db"] = round(level_exceeded_db(acc[3], pct), 1)
                out.append(self._record(f"leq_{interval_s}", acc[0], acc[0] + interval_s, values))
        if self._lden is not None:
            day = date.fromisoformat(self._lden[0])
            start_s, end_s = _day_bounds(day, self._tz)
            if end_s <= now_s:
                out.append(self._record("lden", start_s, end_s, _lden_values(self._lden[1])))
                self._lden = None
        for interval_s, acc in list(self._count.items()):
            if acc[0] + interval_s <= now_s:
                del self._count[interval_s]
                counts = dict(acc[1])
                counts["total"] = sum(acc[1].values())
                out.append(self._record(f"count_{interval_s}", acc[0], acc[0] + interval_s, counts))
        if self._count_day is not None:
            day = date.fromisoformat(self._count_day[0])
            start_s, end_s = _day_bounds(day, self._tz)
            if end_s <= now_s:
                counts = dict(self._count_day[1])
                counts["total"] = sum(self._count_day[1].values())
                counts["year_total"] = self.year_total() if self._year and self._year[0] == day.year else None
                out.append(self._record("count_day", start_s, end_s, counts))
                self._count_day = None
        return out

    def today_total(self, now_s: float) -> int:
        if self._count_day is None or self._count_day[0] != _local_day(now_s, self._tz).isoformat():
            return 0
        return int(sum(self._count_day[1].values()))

    def year_total(self, now_s: float | None = None) -> int:
        if self._year is None:
            return 0
        if now_s is not None and self._year[0] != _local_day(now_s, self._tz).year:
            return 0
        return int(sum(self._year[1].values()))

    def _record(
        self, kind: str, start_s: float, end_s: float, values: Mapping[str, float | int | str | None]
    ) -> AggregateRecord:
        return AggregateRecord(self.spec.id, kind, self.dev_eui, self.profile, start_s, end_s, values)

    # -- persistence --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "leq": {str(k): v for k, v in self._leq.items()},
            "lden": self._lden,
            "count": {str(k): v for k, v in self._count.items()},
            "count_day": self._count_day,
            "year": self._year,
            "last_counter": self._last_counter,
            "fill": self._fill,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._leq = {int(k): list(v) for k, v in state["leq"].items()}
        self._lden = state["lden"]
        self._count = {int(k): list(v) for k, v in state["count"].items()}
        self._count_day = state["count_day"]
        self._year = state["year"]
        self._last_counter = {str(k): float(v) for k, v in state["last_counter"].items()}
        self._fill = [[float(t), float(v)] for t, v in state.get("fill", [])]


def _db(mean_energy: float) -> float:
    return round(10.0 * math.log10(mean_energy), 1)


def _lden_values(periods: dict[str, list[Any]]) -> dict[str, float | int | None]:
    levels: dict[str, float | None] = {}
    for name in ("day", "evening", "night"):
        sums = periods.get(name)
        levels[name] = 10.0 * math.log10(sums[0] / sums[1]) if sums and sums[1] else None
    ld, le, ln = levels["day"], levels["evening"], levels["night"]
    lden = lden_db(ld, le, ln) if ld is not None and le is not None and ln is not None else None
    return {
        "ld_db": None if ld is None else round(ld, 1),
        "le_db": None if le is None else round(le, 1),
        "ln_db": None if ln is None else round(ln, 1),
        "lden_db": None if lden is None else round(lden, 1),
        "samples": sum(int(s[1]) for s in periods.values()),
    }


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if math.isnan(value) or math.isinf(value):
        return None
    return float(value)
