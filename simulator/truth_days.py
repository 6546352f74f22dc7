"""The daily aggregates a gateway must publish: its open day per device, as its clock files readings.

Owns the expected daily Lden (per noise site) and daily passages (per counter) of a run, filed
the way the agent files them (gateway/rules/aggregates.py ``DeviceAggregator``, read, not
imported): each device has one open local day per aggregate, opened by its first reading; a
reading in a later day first closes it (the record is published then); the values are the
reading-time facts of what the devices sent, stamped by the gateway's clock.

What a clock that went backwards does (a ``clock_jump`` back or a ``clock_set`` to 1970,
measured through the agent): a LAeq reading dated before the open day is dropped from the
Lden (the agent counts it as late); a count dated before the open day is ADDED TO THE OPEN
DAY (the agent does not check the date of counts), so a day's passages include what was
counted while the clock said 1970. When no day is open, a 1970 reading opens a 1970 day,
closed (and published) by the first reading after the clock came back.

It does not own the formulas (``simulator.truth``: ``french_period``, ``lden_db``) nor the
comparison with the broker.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

_PERIODS: Final = ("day", "evening", "night")


class DayBook:
    """Feed it the accepted readings in order (``at_s``: the gateway's Unix stamp)."""

    def __init__(self, epoch_s: float, timezone: str, period_of_hour: Callable[[int], str]) -> None:
        self._tz = ZoneInfo(timezone)
        self._start = datetime.fromtimestamp(epoch_s, self._tz).date()
        self._period = period_of_hour
        self._lden_open: dict[str, int] = {}
        self._count_open: dict[str, int] = {}
        self._energy: dict[tuple[str, int], dict[str, list[float]]] = {}
        self._passages: dict[tuple[str, int], int] = {}
        self._closed: set[tuple[str, str, int]] = set()  # (aggregate, DevEUI, day)

    def local(self, at_s: float) -> tuple[int, int]:
        """(local day since the scenario's first day, local hour) of a Unix time."""
        when = datetime.fromtimestamp(at_s, self._tz)
        return (when.date() - self._start).days, when.hour

    def laeq(self, eui: str, at_s: float, laeq_db: float) -> None:
        day, hour = self.local(at_s)
        open_day = self._close("lden", self._lden_open, eui, day)
        if open_day is not None and day < open_day:
            return  # dated before the open day: the agent drops it from the Lden (late reading)
        if open_day is None:
            open_day = self._lden_open[eui] = day
        sums = self._energy.setdefault((eui, open_day), {}).setdefault(self._period(hour), [0.0, 0.0])
        sums[0] += 10.0 ** (laeq_db / 10.0)
        sums[1] += 1

    def count(self, eui: str, at_s: float, passages: int) -> None:
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
        """Closed days with all three periods: (DevEUI, day) -> levels per period, in dB."""
        out: dict[tuple[str, int], dict[str, float]] = {}
        for (eui, day), periods in self._energy.items():
            if ("lden", eui, day) in self._closed and all(p in periods for p in _PERIODS):
                out[(eui, day)] = {p: 10.0 * math.log10(s[0] / s[1]) for p, s in periods.items()}
        return out

    def passages(self) -> dict[tuple[str, int], int]:
        """Closed days: (DevEUI, day) -> passages both ways."""
        return {key: n for key, n in self._passages.items() if ("count", *key) in self._closed}
