"""Aggregates computed at the edge: passage counts, fill rate, and the noise levels' accumulator.

Owns the per-device accumulators of one aggregate spec (counter deltas with reset detection,
fill rate) and their records; the noise levels (LAeq, LN, Lden, weighted by the time each
report covers) are ``noise.py``'s, held here per device. Every accumulator's state is a
JSON-able dict (``snapshot``/``restore``), so totals survive a restart of the agent.

It does not read clocks (times are passed in), select devices (engine.py) or store
records (the outbox).

Facts (research/domain.md §4.4, §1.4):
- Counts: hourly bins are the national standard; day and year totals in local time, the
  year total resets on 1 January; cumulative counters restart at power-up (negative step).
- Fill rate: average filling speed (%/day) since the last emptying and the forecast full
  date, as in LwM2M object 3435 (research/domain.md §1.4); a drop of the fill level is an
  emptying and starts a new series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from gateway.clock import iso_utc
from gateway.rules import conditions
from gateway.rules.actions import AggregateRecord
from gateway.rules.model import Aggregate
from gateway.rules.noise import NoiseLevels

MAX_FILL_POINTS: Final = 512
"""Bound on the readings kept for a fill rate (a week at one reading every 20 min)."""


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
        self._noise = NoiseLevels(spec, dev_eui, profile, tz) if spec.leq or spec.lden_field else None
        # Counts: open intervals interval_s -> [start_s, {field: n}]; the day; the year; last counters.
        self._count: dict[int, list[Any]] = {}
        self._count_day: list[Any] | None = None  # [iso date, {field: n}]
        self._year: list[Any] | None = None  # [year, {field: n}]
        self._last_counter: dict[str, float] = {}
        self._fill: list[list[float]] = []  # [at_s, fill %] since the last emptying
        self.late_readings = 0

    # -- input --------------------------------------------------------------------------------

    def add(
        self, at_s: float, data: dict[str, Any], params: dict[str, float] | None = None, record_id: str = ""
    ) -> list[AggregateRecord]:
        """Account one reading; returns the records of the periods it closed (and a fill record).

        ``params`` are the device's parameters, for ``$name`` values of a fill spec; ``record_id`` is
        the reading's record id, which names its fill record (``AggregateRecord.source_record_id``).
        """
        if self._noise is not None:
            # Filed before closing: a report that covers an interval's end publishes it.
            self._noise.add(at_s, data, params)
        out = self.close_until(at_s)
        spec = self.spec
        if spec.fill is not None:
            record = self._add_fill(at_s, data, params or {}, record_id)
            if record is not None:
                out.append(record)
        if spec.count is not None:
            self._add_counts(at_s, data)
        return out

    def _add_fill(
        self, at_s: float, data: dict[str, Any], params: dict[str, float], record_id: str
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
        return self._record("fill", at_s, at_s, values, record_id)

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
        out = self._noise.close_until(now_s) if self._noise is not None else []
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
        self,
        kind: str,
        start_s: float,
        end_s: float,
        values: Mapping[str, float | int | str | None],
        source_record_id: str = "",
    ) -> AggregateRecord:
        return AggregateRecord(
            self.spec.id, kind, self.dev_eui, self.profile, start_s, end_s, values,
            source_record_id=source_record_id,
        )  # fmt: skip

    # -- persistence --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "noise": self._noise.snapshot() if self._noise is not None else None,
            "count": {str(k): v for k, v in self._count.items()},
            "count_day": self._count_day,
            "year": self._year,
            "last_counter": self._last_counter,
            "fill": self._fill,
        }

    def restore(self, state: dict[str, Any]) -> None:
        # A snapshot of an agent that averaged readings as equals ("leq"/"lden" keys) has no
        # durations to carry over: its open intervals start again.
        if self._noise is not None and state.get("noise") is not None:
            self._noise.restore(state["noise"])
        self._count = {int(k): list(v) for k, v in state["count"].items()}
        self._count_day = state["count_day"]
        self._year = state["year"]
        self._last_counter = {str(k): float(v) for k, v in state["last_counter"].items()}
        self._fill = [[float(t), float(v)] for t, v in state.get("fill", [])]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if math.isnan(value) or math.isinf(value):
        return None
    return float(value)
