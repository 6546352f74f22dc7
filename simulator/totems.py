"""Ground truth of the display totems: which numbers a totem may show, and the check of what it showed.

Owns the expectations of the rules' totem feeds (an aggregate with ``count`` and ``display``,
docs/rules.md): from the counter frames the gateway must accept, the running state of the feed
(passages of the local day and of the year, summed over the aggregate's devices, as the
agent's ``today_total``/``year_total`` count them: increments, or deltas of a cumulative
counter, a new local day starting at 0) after every reading and at every local midnight. The
agent pushes that state to the totem when its rules loop ticks (every ``every_s`` at most, and
only when it changed); under time compression ticks come in wall time, so WHEN a totem shows a
state is not predicted. What is checked, from what the totems really received
(``simulator.models.display``): every state a totem showed is one the feed was in, in the
order the feed went through them (never a number the counters did not make, never going back),
and how far the last one shown lags behind the feed's final state (reported, not a failure).

It does not decide which frames are accepted (``simulator.truth``) nor decode downlinks
(``simulator.city.apply_downlink``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway import textfile
from simulator.truth_rules import selects


@dataclass(frozen=True, slots=True)
class DisplayFeed:
    """One aggregate of a rules file that shows its counts on a totem."""

    aggregate: str
    to: str
    """The totem's DevEUI, lowercase hex."""
    profiles: tuple[str, ...]
    sites: tuple[str, ...]
    dev_euis: tuple[str, ...]
    fields: tuple[str, ...]
    cumulative: bool = False

    def selects(self, dev_eui: str, profile: str, site: str) -> bool:
        return selects(self.profiles, self.sites, self.dev_euis, dev_eui, profile, site)


def load_feeds(path: Path) -> list[DisplayFeed]:
    """The totem feeds of a rules file (aggregates with ``count`` and ``display``)."""
    doc = textfile.load_yaml(path) or {}
    feeds: list[DisplayFeed] = []
    for agg in doc.get("aggregates", []) or []:
        display, count = agg.get("display"), agg.get("count")
        if not isinstance(display, Mapping) or not isinstance(count, Mapping):
            continue
        devices = agg.get("devices", {}) or {}
        feeds.append(
            DisplayFeed(
                str(agg["id"]),
                str(display["to"]).lower(),
                tuple(devices.get("profiles", [])),
                tuple(devices.get("sites", [])),
                tuple(str(e).lower() for e in devices.get("dev_euis", [])),
                tuple(count.get("fields", [])),
                count.get("mode", "increment") == "cumulative",
            )
        )
    return feeds


@dataclass(frozen=True, slots=True)
class FeedState:
    """The feed's totals from ``t_s`` on (simulated seconds, the gateway's clock)."""

    t_s: float
    today: int
    year: int


@dataclass
class TotemTruth:
    """One totem: the states its feed went through, and (observed) what the totem showed."""

    dev_eui: str
    device: str
    aggregate: str
    states: list[FeedState] = field(default_factory=list)
    received: list[tuple[float, int | None, int | None]] = field(default_factory=list)
    """(simulated second, line 0, line 1) after each command the totem obeyed: observed, not predicted."""

    @property
    def final(self) -> FeedState:
        return self.states[-1]

    def as_json(self) -> dict[str, Any]:
        shown = self.received[-1] if self.received else None
        return {
            "dev_eui": self.dev_eui,
            "device": self.device,
            "aggregate": self.aggregate,
            "final": {"today": self.final.today, "year": self.final.year},
            "states": len(self.states),
            "shown": None
            if shown is None
            else {"t_s": round(shown[0], 3), "today": shown[1], "year": shown[2]},
            "displays_received": len(self.received),
        }


@dataclass
class _Counter:
    day: date | None = None
    today: int = 0
    year: int = 0
    year_of: int | None = None
    last: dict[str, float] = field(default_factory=dict)


class TotemBook:
    """Feed it the accepted frames' readings in order; ``finish`` gives one ``TotemTruth`` per totem."""

    def __init__(
        self, feeds: list[DisplayFeed], names: Mapping[str, str], epoch_s: float, timezone: str
    ) -> None:
        self._feeds = [f for f in feeds if f.to in names]
        self._epoch_s = epoch_s
        self._tz = ZoneInfo(timezone)
        self.totems = {
            f.to: TotemTruth(f.to, names[f.to], f.aggregate, [FeedState(0.0, 0, 0)]) for f in self._feeds
        }
        self._counters: dict[tuple[str, str], _Counter] = {}

    def _local(self, t_s: float) -> date:
        return datetime.fromtimestamp(self._epoch_s + t_s, self._tz).date()

    def _midnight_s(self, day: date) -> float:
        return datetime(day.year, day.month, day.day, tzinfo=self._tz).timestamp() - self._epoch_s

    def add(self, dev_eui: str, profile: str, site: str, t_s: float, data: Mapping[str, Any]) -> None:
        """One accepted reading, at the gateway's time of it (simulated seconds)."""
        for feed in self._feeds:
            if not feed.selects(dev_eui, profile, site):
                continue
            deltas = self._deltas(feed, dev_eui, data)
            if not deltas:
                continue
            totem = self.totems[feed.to]
            day = self._local(t_s)
            counters = [c for (agg, _), c in self._counters.items() if agg == feed.aggregate]
            if any(c.day is not None and c.day < day for c in counters):
                # Between the midnight and this reading a tick shows 0 today (today_total).
                totem.states.append(FeedState(self._midnight_s(day), 0, totem.final.year))
            c = self._counters.setdefault((feed.aggregate, dev_eui), _Counter())
            if c.day is None or c.day < day:  # the agent closes the day on the first reading after it
                c.day, c.today = day, 0
            if c.year_of != day.year:
                c.year_of, c.year = day.year, 0
            n = sum(deltas)
            c.today += n
            c.year += n
            counters = [c for (agg, _), c in self._counters.items() if agg == feed.aggregate]
            today = sum(x.today for x in counters if x.day == day)
            year = sum(x.year for x in counters if x.year_of == day.year)
            totem.states.append(FeedState(t_s, today, year))

    def _deltas(self, feed: DisplayFeed, dev_eui: str, data: Mapping[str, Any]) -> list[int]:
        out: list[int] = []
        c = self._counters.get((feed.aggregate, dev_eui))
        for name in feed.fields:
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not feed.cumulative:
                out.append(max(0, int(value)))
                continue
            if c is None:
                c = self._counters[(feed.aggregate, dev_eui)] = _Counter()
            last = c.last.get(name)
            c.last[name] = float(value)
            if last is not None:  # a backwards step is a restart of the counter (as the agent)
                out.append(int(value - last) if value >= last else int(value))
        return out

    def finish(
        self, shown: Mapping[str, list[tuple[float, int | None, int | None]]], until_s: float | None = None
    ) -> list[TotemTruth]:
        """The totems, with what each really showed (DevEUI -> its display history).

        ``until_s``: the gateway's last time in the run; a midnight between a feed's last reading
        and it makes "0 today" a state too.
        """
        for eui, totem in self.totems.items():
            totem.received = list(shown.get(eui, []))
            last = totem.final
            if until_s is not None and self._local(until_s) > self._local(last.t_s) and last.today:
                totem.states.append(FeedState(self._midnight_s(self._local(until_s)), 0, last.year))
        return list(self.totems.values())


def check(totems: list[TotemTruth]) -> list[dict[str, Any]]:
    """What a totem showed that its feed never was, or out of order; empty: all good."""
    problems: list[dict[str, Any]] = []
    for totem in totems:
        at = 0
        for t_s, today, year in totem.received:
            match = next(
                (
                    i
                    for i in range(at, len(totem.states))
                    if (totem.states[i].today, totem.states[i].year) == (today, year)
                ),
                None,
            )
            if match is None:
                earlier = any((s.today, s.year) == (today, year) for s in totem.states[:at])
                problems.append(
                    {
                        "device": totem.device,
                        "t_s": round(t_s, 3),
                        "shown": [today, year],
                        "problem": "went back to an older state"
                        if earlier
                        else "never a state of its counters",
                    }
                )
                continue
            at = match
    return problems
