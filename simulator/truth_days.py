"""The daily aggregates a gateway must publish: its open day per device, as its clock files readings.

Owns the expected daily Lden (per noise site) and daily passages (per counter) of a run, from
what the devices sent, stamped by the gateway's clock.

Lden, from its definition (ISO 1996-1, Directive 2002/49/EC Annex I), not from the agent's code:
each LAeq a site reported covers the ``cover_s`` seconds before the gateway's stamp (the
model's report interval); every level weighs the seconds it covers in each local hour, an hour
belongs to one period (``period_of_hour``), Ld/Le/Ln = 10·log10(Σ t·10^(L/10) / Σ t). A day is
expected once the site reported at or after its end (the agent publishes it then; the last
revision counts). Coverage stamped more than ``LATE_S`` (the agent's default window,
docs/rules.md) before the latest stamp seen is not filed: the agent counts it as late, which
is what a clock set back (``clock_jump``, ``clock_set`` to 1970) does to LAeq readings.

Passages, filed the way the agent files them (gateway/rules/aggregates.py ``DeviceAggregator``,
read, not imported): each device has one open local day, opened by its first reading; a reading
in a later day first closes it. A count dated before the open day is ADDED TO THE OPEN DAY (the
agent does not check the date of counts), so a day's passages include what was counted while
the clock said 1970. When no day is open, a 1970 reading opens a 1970 day, closed (and
published) by the first reading after the clock came back.

It does not own the formulas (``simulator.truth``: ``french_period``, ``lden_db``) nor the
comparison with the broker.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

_PERIODS: Final = ("day", "evening", "night")
LATE_S: Final = 3600.0
"""The agent's default window for late coverage (aggregate ``late_s``, docs/rules.md)."""
_HOUR_S: Final = 3600


class DayBook:
    """Feed it the accepted readings in order (``at_s``: the gateway's Unix stamp)."""

    def __init__(self, epoch_s: float, timezone: str, period_of_hour: Callable[[int], str]) -> None:
        self._tz = ZoneInfo(timezone)
        self._start = datetime.fromtimestamp(epoch_s, self._tz).date()
        self._period = period_of_hour
        self._clock_s: float | None = None  # the latest stamp seen
        self._reported_s: dict[str, float] = {}  # DevEUI -> its latest LAeq stamp
        self._count_open: dict[str, int] = {}
        self._energy: dict[tuple[str, int], dict[str, list[float]]] = {}
        self._passages: dict[tuple[str, int], int] = {}
        self._closed: set[tuple[str, str, int]] = set()  # (aggregate, DevEUI, day)

    def local(self, at_s: float) -> tuple[int, int]:
        """(local day since the scenario's first day, local hour) of a Unix time."""
        when = datetime.fromtimestamp(at_s, self._tz)
        return (when.date() - self._start).days, when.hour

    def laeq(self, eui: str, at_s: float, laeq_db: float, cover_s: float) -> None:
        """A site's LAeq over the ``cover_s`` seconds before ``at_s``."""
        clock_before = self._clock_s
        self._tick(at_s)
        self._reported_s[eui] = max(self._reported_s.get(eui, at_s), at_s)
        energy = 10.0 ** (laeq_db / 10.0)
        # Local hours of a whole-hour UTC offset (Europe/Paris) start on UTC hour boundaries.
        start_s = at_s - cover_s
        hour_start = math.floor(start_s / _HOUR_S) * _HOUR_S
        while hour_start < at_s:
            seconds = min(at_s, hour_start + _HOUR_S) - max(start_s, hour_start)
            day, hour = self.local(hour_start)
            if clock_before is not None and self._day_end_s(day) + LATE_S <= clock_before:
                pass  # its day is final: the agent counts this as late
            elif seconds > 0:
                sums = self._energy.setdefault((eui, day), {}).setdefault(self._period(hour), [0.0, 0.0])
                sums[0] += seconds * energy
                sums[1] += seconds
            hour_start += _HOUR_S

    def _tick(self, at_s: float) -> None:
        self._clock_s = at_s if self._clock_s is None else max(self._clock_s, at_s)

    def _day_end_s(self, day: int) -> float:
        nxt = self._start + timedelta(days=day + 1)
        return datetime(nxt.year, nxt.month, nxt.day, tzinfo=self._tz).timestamp()

    def count(self, eui: str, at_s: float, passages: int) -> None:
        self._tick(at_s)
        day, _ = self.local(at_s)
        open_day = self._close("count", self._count_open, eui, day)
        if open_day is None:
            open_day = self._count_open[eui] = day
        # Whatever the reading's date: the agent adds counts to the open day.
        self._passages[(eui, open_day)] = self._passages.get((eui, open_day), 0) + passages

    def _close(self, aggregate: str, open_days: dict[str, int], eui: str, day: int) -> int | None:
        open_day = open_days.get(eui)
        if open_day is not None and day > open_day:  # the open day ended before this reading
            self._closed.add((aggregate, eui, open_day))
            del open_days[eui]
            return None
        return open_day

    def lden_levels(self) -> dict[tuple[str, int], dict[str, float]]:
        """Days the site reported past, with all three periods: (DevEUI, day) -> levels, in dB."""
        out: dict[tuple[str, int], dict[str, float]] = {}
        for (eui, day), periods in self._energy.items():
            reported = self._reported_s.get(eui)
            closed = reported is not None and reported >= self._day_end_s(day)
            if closed and all(p in periods for p in _PERIODS):
                out[(eui, day)] = {p: 10.0 * math.log10(s[0] / s[1]) for p, s in periods.items()}
        return out

    def passages(self) -> dict[tuple[str, int], int]:
        """Closed days: (DevEUI, day) -> passages both ways."""
        return {key: n for key, n in self._passages.items() if ("count", *key) in self._closed}
