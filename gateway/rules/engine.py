"""The rules engine: readings and clock ticks in, alerts, aggregates and commands out.

Owns alert episodes (one ``raised`` when a condition starts, after its debounce; one
``cleared`` when it ends; alert ids that are the same on every gateway and after a restart,
see ``_alert_id``), the silence watchdog, the lighting
groups' commanded levels, totem pushes, the device list it has seen, the safe
swap of rule sets (state kept where a rule id is unchanged) and the persistence
of all that state as a JSON-able dict.

It is pure and sans-IO: no clock (``at_s``/``now_s`` are passed in), no sockets, no
files except ``reload`` reading a rules file. It does not encode or send downlinks,
nor store records: callers route the outputs (see docs/rules.md, "Integration").
A rule that raises at evaluation is disabled and reported; the others keep running.
Debounce durations (``for_s``, ``clear_for_s``) complete on a reading or on a tick,
whichever comes first after the duration. An optional ``trace`` callback sees every
rule evaluation (``edgegw rules test --trace``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from gateway.clock import WallTime
from gateway.errors import ConfigError, StorageError
from gateway.messages import Alert
from gateway.rules import conditions, schedules
from gateway.rules.actions import DisplayUpdate, DownlinkRequest, GroupDownlinkRequest, Output, caused_by
from gateway.rules.aggregates import DeviceAggregator
from gateway.rules.loader import load_rules
from gateway.rules.model import Aggregate, LightingGroup, Rule, RuleSet, Silence

log = logging.getLogger(__name__)

SNAPSHOT_VERSION: Final = 1
LIGHTING_HOLD_S: Final = 900.0
"""While the time has not been trusted for less than this, lighting sends nothing (the lamps keep
their level: NTP usually answers within a minute of a boot); then the group's fail-safe level."""


@dataclass(frozen=True, slots=True)
class ReadingFacts:
    """What the engine needs from one decoded uplink."""

    dev_eui: str
    profile: str
    at_s: float
    data: Mapping[str, Any]
    site: str = ""
    installed: Mapping[str, float] = field(default_factory=dict)
    """The device's numeric installation parameters from the registry (`edgegw device add --param`)."""
    record_id: str = ""
    """The reading's record id (``gateway.pipeline.record_id``: ``<dev>-<session>-<fcnt>``, the same on
    every gateway that heard the frame); the alerts it causes are named after it. Empty in a dry run."""


@dataclass(frozen=True, slots=True)
class EvalTrace:
    """One evaluation of one rule for one device, for the dry run's ``--trace``.

    ``outcome``: ``raised``, ``cleared``, ``pending`` (a change waits for its debounce),
    ``steady`` (nothing changes), ``skipped`` (the reading lacks the rule's fields),
    ``no_param`` (a ``$parameter`` has no value for the device), ``disabled``, ``seen``
    (a silence rule heard the device). ``source`` is ``reading`` or ``tick``.
    """

    at_s: float
    rule_id: str
    dev_eui: str
    outcome: str
    active: bool | None = None
    value: float | None = None
    pending_n: int = 0
    pending_since_s: float | None = None
    source: str = "reading"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Episode:
    """Per (rule, device) state: the open episode, the debounce counters, the leaves' state."""

    open: bool = False
    alert_id: str | None = None
    pend_since: float | None = None
    pend_n: int = 0
    last_seen: float | None = None
    leaves: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_value: float | None = None
    opened_s: float | None = None
    raised_value: float | None = None
    """The value that raised the open episode (`edgegw rules` shows it beside the latest)."""
    cause: str | None = None
    """The record id the next raise is named after: the reading that started the pending change, or,
    for a silence rule, the last reading heard (the silence is the period after it)."""


class RuleEngine:
    """Evaluates a ``RuleSet``. Not thread-safe: call it from the event loop only."""

    def __init__(self, rules: RuleSet | None = None) -> None:
        self._rules = rules or RuleSet()
        self._episodes: dict[tuple[str, str], _Episode] = {}
        self._aggs: dict[tuple[str, str], DeviceAggregator] = {}
        self._devices: dict[str, tuple[str, str]] = {}  # dev_eui -> (profile, site)
        self._commanded: dict[tuple[str, str], int] = {}  # (group, dev_eui) -> level_pct
        self._display_next: dict[str, float] = {}
        self._display_last: dict[str, tuple[int, int]] = {}
        self.disabled: dict[str, str] = {}
        """Rule id -> why it was disabled (an exception at evaluation); cleared by the next swap."""
        self._match_cache: dict[tuple[str, str, str], tuple[list[Rule], list[Aggregate]]] = {}
        self._params_cache: dict[str, dict[str, float]] = {}
        self._installed: dict[str, Mapping[str, float]] = {}  # DevEUI -> the registry's parameters
        self._by_id: dict[str, Rule] = {r.id: r for r in self._rules.rules}
        self.trace: Callable[[EvalTrace], None] | None = None
        """Called with every rule evaluation when set (the dry run); None in the agent."""
        self.last_reload: dict[str, Any] | None = None
        """The last ``reload``: at_s, file, ok, error (None when it was applied)."""
        self._dirty: set[str] = set()
        self._dirty_global = False
        self._lighting_clock: dict[str, Any] = {"quality": None, "mode": "schedule"}
        self._lighting_offset_s = 0.0  # trusted time minus the tick's now_s, for next_due_s
        # (group, dev_eui) in fail-safe -> the id of its open lighting_clock alert
        self._clock_alerts: dict[tuple[str, str], str] = {}

    @property
    def rules(self) -> RuleSet:
        return self._rules

    # -- rule sets ------------------------------------------------------------------------------

    def swap(self, new: RuleSet, now_s: float) -> list[Output]:
        """Use ``new`` from now on. State is kept for ids that remain; open episodes of removed
        rules are cleared (returned as ``cleared`` alerts), their other state dropped."""
        old = {r.id: r for r in self._rules.rules}
        kept = {r.id: r for r in new.rules}
        out: list[Output] = []
        for (rule_id, dev), ep in list(self._episodes.items()):
            rule = kept.get(rule_id)
            if rule is None:
                if ep.open and ep.alert_id is not None:
                    prev = old.get(rule_id)
                    out.append(
                        Alert(
                            ep.alert_id,
                            "cleared",
                            rule_id,
                            dev,
                            prev.severity if prev else "warning",
                            now_s,
                            message="rule removed",
                        )
                    )
                del self._episodes[(rule_id, dev)]
            elif old.get(rule_id) is not None and old[rule_id].condition != rule.condition:
                ep.leaves.clear()  # the windows and hysteresis of another condition mean nothing here
        for rule_id in list(self.disabled):
            del self.disabled[rule_id]
        old_aggs = {a.id: a for a in self._rules.aggregates}
        new_aggs = {a.id: a for a in new.aggregates}
        for key in list(self._aggs):
            if old_aggs.get(key[0]) != new_aggs.get(key[0]) or new.location != self._rules.location:
                del self._aggs[key]
        groups = {g.id for g in new.lighting}
        for key in list(self._commanded):
            if key[0] not in groups:
                del self._commanded[key]
        for (group_id, dev), alert_id in sorted(self._clock_alerts.items()):
            if group_id not in groups:
                del self._clock_alerts[(group_id, dev)]
                why = "group removed"
                out.append(Alert(alert_id, "cleared", "lighting_clock", dev, "warning", now_s, message=why))
        self._rules = new
        self._by_id = {r.id: r for r in new.rules}
        self._match_cache.clear()
        self._params_cache.clear()
        self._dirty |= self.state_devices()
        self._dirty_global = True
        return out

    def reload(self, path: Path | str, now_s: float) -> tuple[list[Output], ConfigError | None]:
        """Load a rules file and swap it in; if it is invalid, keep the current rules, return the error."""
        try:
            new = load_rules(path)
        except ConfigError as exc:
            # Logged by the caller, which knows whether there were previous rules to keep.
            self.last_reload = {"at_s": now_s, "file": str(path), "ok": False, "error": str(exc)}
            return [], exc
        self.last_reload = {"at_s": now_s, "file": str(path), "ok": True, "error": None}
        log.info("rules loaded from %s: %d rules, %d aggregates, %d lighting groups",
                 path, len(new.rules), len(new.aggregates), len(new.lighting))  # fmt: skip
        return self.swap(new, now_s), None

    def register_device(self, dev_eui: str, profile: str, site: str = "") -> None:
        """Tell the engine a device exists (from the registry at start), so silence and lighting see it."""
        if self._devices.get(dev_eui) != (profile, site):
            self._devices[dev_eui] = (profile, site)
            self._match_cache.pop((dev_eui, profile, site), None)
            self._dirty.add(dev_eui)

    def keep_devices(self, registered: Collection[str]) -> list[str]:
        """Forget every device not in ``registered`` (removed from the registry, maybe while the agent
        was stopped): no silence watchdog nor lighting for it, no longer counted. Its episodes and
        aggregates are kept (a removal clears no alert). Returns the devices forgotten."""
        gone = sorted(set(self._devices) - set(registered))
        for dev in gone:
            del self._devices[dev]
            self._params_cache.pop(dev, None)
            self._installed.pop(dev, None)
            self._dirty.add(dev)
        if gone:
            self._match_cache.clear()
        return gone

    # -- readings -------------------------------------------------------------------------------

    def evaluate(self, reading: ReadingFacts) -> list[Output]:
        """Run every rule and aggregate that selects this device over one reading."""
        dev = reading.dev_eui
        self.register_device(dev, reading.profile, reading.site)
        if reading.installed != self._installed.get(dev, {}):
            self._installed[dev] = reading.installed
            self._params_cache.pop(dev, None)
        rules, aggs = self._matching(dev, reading.profile, reading.site)
        if rules or aggs:
            self._dirty.add(dev)
        out: list[Output] = []
        if rules:
            params = self._params(dev, reading.profile)
            for rule in rules:
                if rule.id in self.disabled:
                    continue
                try:
                    self._evaluate_rule(rule, reading, params, out)
                except conditions.MissingParam:
                    # No threshold for this device: the rule does not apply to it.
                    if self.trace is not None:
                        self.trace(EvalTrace(reading.at_s, rule.id, dev, "no_param"))
                    continue
                except Exception as exc:  # a rule must never stop the others (issue 6, "Bad input")
                    out.append(self._disable(rule, reading, exc))
                    if self.trace is not None:
                        self.trace(EvalTrace(reading.at_s, rule.id, dev, "disabled"))
        if aggs:
            params = self._params(dev, reading.profile)
            for agg in aggs:
                aggregator = self._aggregator(agg, dev, reading.profile)
                out.extend(aggregator.add(reading.at_s, dict(reading.data), params, reading.record_id))
        return out

    def _evaluate_rule(
        self, rule: Rule, reading: ReadingFacts, params: Mapping[str, float], out: list[Output]
    ) -> None:
        ep = self._episodes.get((rule.id, reading.dev_eui))
        if ep is None:
            ep = self._episodes[(rule.id, reading.dev_eui)] = _Episode()
        at_s = reading.at_s
        if isinstance(rule.condition, Silence):
            # A silence from now on is the period after this reading (the last one to arrive: each
            # silence episode is closed by a reading, so the next one is named after another).
            ep.cause = reading.record_id or None
            ep.last_seen = at_s if ep.last_seen is None else max(ep.last_seen, at_s)
            outcome = "seen"
            if ep.open:
                out.extend(self._close(rule, reading.dev_eui, ep, at_s, None))
                outcome = "cleared"
            if self.trace is not None:
                self.trace(EvalTrace(at_s, rule.id, reading.dev_eui, outcome, active=False))
            return
        updated, active, value = conditions.evaluate(
            rule.condition, "c", ep.leaves, at_s, reading.data, params, self._rules.location
        )
        if not updated:
            if self.trace is not None:
                self.trace(EvalTrace(at_s, rule.id, reading.dev_eui, "skipped"))
            return
        ep.last_value = value
        outcome = "steady"
        if active != ep.open:  # a change is pending: debounce it
            if ep.pend_since is None:
                ep.pend_since, ep.pend_n, ep.cause = at_s, 0, reading.record_id or None
            ep.pend_n += 1
            outcome = self._settle(rule, reading.dev_eui, ep, at_s, out) or "pending"
        else:
            ep.pend_since, ep.pend_n, ep.cause = None, 0, None
        if self.trace is not None:
            self.trace(
                EvalTrace(at_s, rule.id, reading.dev_eui, outcome, active, value, ep.pend_n, ep.pend_since)
            )

    def _settle(self, rule: Rule, dev: str, ep: _Episode, now_s: float, out: list[Output]) -> str | None:
        """Open or close the episode if its pending change has lasted its debounce; the edge or None."""
        if ep.pend_since is None:
            return None
        opening = not ep.open
        need_n, need_s = (
            (rule.for_readings, rule.for_s) if opening else (rule.clear_for_readings, rule.clear_for_s)
        )
        if ep.pend_n < need_n or now_s - ep.pend_since < need_s:
            return None
        if opening:
            out.extend(self._open(rule, dev, ep, now_s, ep.last_value))
            return "raised"
        out.extend(self._close(rule, dev, ep, now_s, ep.last_value))
        return "cleared"

    def _due_s(self, rule: Rule, ep: _Episode) -> float | None:
        """When a pending change will have lasted its debounce (None: it waits for more readings)."""
        if ep.pend_since is None:
            return None
        need_n, need_s = (
            (rule.for_readings, rule.for_s) if not ep.open else (rule.clear_for_readings, rule.clear_for_s)
        )
        return ep.pend_since + need_s if ep.pend_n >= need_n else None

    def _open(self, rule: Rule, dev: str, ep: _Episode, at_s: float, value: float | None) -> list[Output]:
        ep.alert_id = _alert_id(rule, dev, ep, at_s)
        ep.open, ep.pend_since, ep.pend_n, ep.opened_s, ep.raised_value = True, None, 0, at_s, value
        out: list[Output] = [
            Alert(ep.alert_id, "raised", rule.id, dev, rule.severity, at_s, value, rule.message)
        ]
        out.extend(
            DownlinkRequest(d.to or dev, d.command, dict(d.params), at_s, f"rule {rule.id} raised")
            for d in rule.on_raise
        )
        return out

    def _close(self, rule: Rule, dev: str, ep: _Episode, at_s: float, value: float | None) -> list[Output]:
        alert_id = ep.alert_id or f"{dev}-{rule.id}-unknown"
        ep.open, ep.alert_id, ep.pend_since, ep.pend_n, ep.opened_s = False, None, None, 0, None
        ep.raised_value = None
        out: list[Output] = [
            Alert(alert_id, "cleared", rule.id, dev, rule.severity, at_s, value, rule.message)
        ]
        out.extend(
            DownlinkRequest(d.to or dev, d.command, dict(d.params), at_s, f"rule {rule.id} cleared")
            for d in rule.on_clear
        )
        return out

    def _disable(self, rule: Rule, reading: ReadingFacts, exc: Exception) -> Alert:
        dev = reading.dev_eui
        log.error("rule %s disabled after an error on %s: %r", rule.id, dev, exc, exc_info=exc)
        self.disabled[rule.id] = f"{type(exc).__name__}: {exc}"
        # Named after the reading it failed on, so a rule disabled again after a fix is a new event.
        alert_id = f"{dev}-rule_disabled-{rule.id}"
        if reading.record_id:
            alert_id += f"-{caused_by(dev, reading.record_id)}"
        return Alert(
            alert_id, "raised", "rule_disabled", dev, "warning", reading.at_s,
            message=f"rule {rule.id} disabled: {self.disabled[rule.id]}",
        )  # fmt: skip

    # -- clock ----------------------------------------------------------------------------------

    def tick(self, now_s: float, lighting_time: WallTime | None = None) -> list[Output]:
        """Time-driven work: debounce durations, silence watchdog, aggregate periods, lighting, totems.

        ``lighting_time``: the clock's best time and its trust (``SystemClock.wall_time``); None
        means ``now_s`` is trusted. Lighting follows its schedule only at a trusted time.
        """
        out: list[Output] = []
        self._tick_pending(now_s, out)
        self._tick_silence(now_s, out)
        for agg in self._aggs.values():
            out.extend(agg.close_until(now_s))
        for group in self._rules.lighting:
            self._tick_lighting(group, now_s, out, lighting_time)
        for spec in self._rules.aggregates:
            if spec.display is not None:
                self._tick_display(spec, now_s, out)
        # What a tick changes without an output (a silence watchdog starting to count, a period
        # closed with nothing in it) is redone by the next tick after a restart: not saved.
        for item in out:
            if isinstance(item, DisplayUpdate):
                self._dirty_global = True
            elif isinstance(item, GroupDownlinkRequest):
                self._dirty.add(MULTICAST_TARGET_PREFIX + item.group)  # its commanded level's key
            else:
                self._dirty.add(item.dev_eui)
        return out

    def _tick_pending(self, now_s: float, out: list[Output]) -> None:
        """Complete ``for_s``/``clear_for_s`` debounces whose duration has passed since the last reading.

        The condition is taken as still holding: no reading since said otherwise.
        """
        for (rule_id, dev), ep in self._episodes.items():
            if ep.pend_since is None or rule_id in self.disabled:
                continue
            rule = self._by_id.get(rule_id)
            if rule is None or isinstance(rule.condition, Silence):
                continue
            edge = self._settle(rule, dev, ep, now_s, out)
            if edge is not None and self.trace is not None:
                self.trace(EvalTrace(now_s, rule_id, dev, edge, ep.open, ep.last_value, source="tick"))

    def _tick_silence(self, now_s: float, out: list[Output]) -> None:
        for rule in self._rules.rules:
            if not isinstance(rule.condition, Silence) or rule.id in self.disabled:
                continue
            for dev, (profile, site) in self._devices.items():
                if not rule.selector.matches(dev, profile, site):
                    continue
                ep = self._episodes.get((rule.id, dev))
                if ep is None:
                    # Never heard since we know of it: count the silence from now.
                    ep = self._episodes[(rule.id, dev)] = _Episode(last_seen=now_s)
                try:
                    limit_s = conditions.resolve(rule.condition.interval_s, self._params(dev, profile))
                except conditions.MissingParam:
                    continue
                last = ep.last_seen if ep.last_seen is not None else now_s
                ep.last_seen = last
                if not ep.open and now_s - last > limit_s * rule.condition.factor:
                    out.extend(self._open(rule, dev, ep, now_s, now_s - last))
                    if self.trace is not None:
                        self.trace(
                            EvalTrace(now_s, rule.id, dev, "raised", True, now_s - last, source="tick")
                        )

    def _group_devices(self, group: LightingGroup) -> list[str]:
        """Who a lighting group commands: its lamps, or the one ``group:<name>`` target of a
        multicast group (its commanded level and clock alert are kept under that name)."""
        if group.multicast is not None:
            return [MULTICAST_TARGET_PREFIX + group.multicast]
        listed = set(group.selector.dev_euis)
        found = {d for d, (p, s) in self._devices.items() if group.selector.matches(d, p, s)}
        if not group.selector.profiles and not group.selector.sites:
            found |= listed  # listed lamps are commanded even before they are heard
        return sorted(found)

    def _tick_lighting(
        self, group: LightingGroup, now_s: float, out: list[Output], when: WallTime | None
    ) -> None:
        if when is not None and not when.trusted:
            self._tick_lighting_untrusted(group, now_s, out, when)
            return
        at_s = now_s if when is None else when.unix_s
        self._lighting_offset_s = at_s - now_s
        self._lighting_clock = {"quality": None if when is None else when.quality, "mode": "schedule"}
        for dev in self._group_devices(group):
            alert_id = self._clock_alerts.pop((group.id, dev), None)
            if alert_id is not None:
                out.append(_clock_alert(alert_id, dev, "cleared", now_s, "time trusted again"))
        state = schedules.level_at(group.steps, group.location, at_s, group.depression_deg)
        if state is None:
            return
        level, since_s = state
        for dev in self._group_devices(group):
            if self._commanded.get((group.id, dev)) == level:
                continue
            self._commanded[(group.id, dev)] = level
            params = {**group.extra_params, group.level_param: level}
            out.append(
                _lighting_request(group, dev, params, now_s, f"lighting {group.id} since {since_s:.0f}")
            )

    def _tick_lighting_untrusted(
        self, group: LightingGroup, now_s: float, out: list[Output], when: WallTime
    ) -> None:
        """No trusted time: hold (send nothing) for ``LIGHTING_HOLD_S``, then the fail-safe level with
        an alert per lamp; a wrong wall clock must never pick the level (dark streets are the danger)."""
        self._lighting_offset_s = 0.0
        if when.untrusted_for_s < LIGHTING_HOLD_S:
            self._lighting_clock = {"quality": when.quality, "mode": "hold"}
            return
        self._lighting_clock = {"quality": when.quality, "mode": "fail_safe"}
        level = group.fail_safe_pct
        why = f"time not trusted for {when.untrusted_for_s:.0f} s"
        for dev in self._group_devices(group):
            if (group.id, dev) not in self._clock_alerts:
                # Named after the period it covers: since the time stopped being trusted (the best
                # estimate of then, in whole seconds), not after the tick that noticed it.
                since_s = round(when.unix_s - when.untrusted_for_s)
                alert_id = self._clock_alerts[(group.id, dev)] = f"{dev}-lighting_clock-{group.id}-{since_s}"
                out.append(_clock_alert(alert_id, dev, "raised", now_s, f"fail-safe {level} %: {why}"))
            if self._commanded.get((group.id, dev)) == level:
                continue
            self._commanded[(group.id, dev)] = level
            params = {**group.extra_params, group.level_param: level}
            out.append(_lighting_request(group, dev, params, now_s, f"lighting {group.id} fail-safe: {why}"))

    def _tick_display(self, spec: Aggregate, now_s: float, out: list[Output]) -> None:
        display = spec.display
        assert display is not None
        if now_s < self._display_next.get(spec.id, 0.0):
            return
        self._display_next[spec.id] = now_s + display.every_s
        today = sum(a.today_total(now_s) for (aid, _), a in self._aggs.items() if aid == spec.id)
        year = sum(a.year_total(now_s) for (aid, _), a in self._aggs.items() if aid == spec.id)
        if self._display_last.get(spec.id) == (today, year):
            return  # nothing new to show: save the airtime
        self._display_last[spec.id] = (today, year)
        out.append(
            DisplayUpdate(
                display.to, display.command, today, year, now_s, display.today_param, display.year_param
            )
        )

    def next_due_s(self, now_s: float) -> float | None:
        """The next lighting switch or debounce deadline after ``now_s`` (the tick task sleeps until then)."""
        # Lighting switches at the trusted time of the last tick (holdover may differ from now_s).
        shift_s = self._lighting_offset_s
        times: list[float | None] = []
        for g in self._rules.lighting:
            at_s = schedules.next_change_s(g.steps, g.location, now_s + shift_s, g.depression_deg)
            times.append(None if at_s is None else at_s - shift_s)
        for (rule_id, _dev), ep in self._episodes.items():
            rule = self._by_id.get(rule_id)
            if rule is not None and ep.pend_since is not None:
                times.append(self._due_s(rule, ep))
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def next_lighting_change(self, now_s: float) -> dict[str, Any] | None:
        """The next scheduled lighting change of any group: when, which group, to which level."""
        best: dict[str, Any] | None = None
        for g in self._rules.lighting:
            at_s = schedules.next_change_s(g.steps, g.location, now_s, g.depression_deg)
            if at_s is None or (best is not None and at_s >= best["at_s"]):
                continue
            level = schedules.level_at(g.steps, g.location, at_s, g.depression_deg)
            best = {"at_s": at_s, "group": g.id, "level_pct": None if level is None else level[0]}
        return best

    # -- helpers --------------------------------------------------------------------------------

    def _matching(self, dev: str, profile: str, site: str) -> tuple[list[Rule], list[Aggregate]]:
        key = (dev, profile, site)
        hit = self._match_cache.get(key)
        if hit is None:
            if len(self._match_cache) > 50_000:
                self._match_cache.clear()
            hit = (
                [r for r in self._rules.rules if r.selector.matches(dev, profile, site)],
                [a for a in self._rules.aggregates if a.selector.matches(dev, profile, site)],
            )
            self._match_cache[key] = hit
        return hit

    def _params(self, dev: str, profile: str) -> dict[str, float]:
        """``$name`` values: the rules file's device defaults, over the registry's installation
        parameters, over the rules file's profile defaults (docs/rules.md)."""
        params = self._params_cache.get(dev)
        if params is None:
            params = self._params_cache[dev] = self._rules.params_for(dev, profile, self._installed.get(dev))
        return params

    def _aggregator(self, spec: Aggregate, dev: str, profile: str) -> DeviceAggregator:
        agg = self._aggs.get((spec.id, dev))
        if agg is None:
            agg = DeviceAggregator(spec, dev, profile, ZoneInfo(self._rules.location.timezone))
            self._aggs[(spec.id, dev)] = agg
        return agg

    def open_alerts(self, dev: str) -> list[Alert]:
        """The ``raised`` edge of every episode open for ``dev``, as it was raised (same id, time, value).

        For a gateway that becomes the device's home (issue 21): as a witness it evaluated the same
        readings but sent nothing, so an episode that opened while no gateway was home (the failover
        window) was never published. Sent again, an edge the old home did publish has the same id
        and is dropped as a duplicate by the platform (docs/mqtt.md, "One identity per event").
        """
        out = []
        for rule in self._rules.rules:
            ep = self._episodes.get((rule.id, dev))
            if ep is not None and ep.open and ep.alert_id is not None:
                at_s, value = ep.opened_s or 0.0, ep.raised_value
                out.append(
                    Alert(ep.alert_id, "raised", rule.id, dev, rule.severity, at_s, value, rule.message)
                )
        return out

    def status(self, now_s: float | None = None) -> dict[str, Any]:
        """Loaded rules and live state, for `edgegw rules` on a running agent.

        With ``now_s``, also the next scheduled lighting change.
        """
        episodes = [
            {"rule": rid, "dev_eui": dev, "alert_id": ep.alert_id, "since_s": ep.opened_s,
             "value": ep.last_value, "raised_value": ep.raised_value}
            for (rid, dev), ep in sorted(self._episodes.items()) if ep.open
        ]  # fmt: skip
        pending = [
            {"rule": rid, "dev_eui": dev, "to": "clear" if ep.open else "raise", "since_s": ep.pend_since,
             "readings": ep.pend_n}
            for (rid, dev), ep in sorted(self._episodes.items()) if ep.pend_since is not None
        ]  # fmt: skip
        return {
            "source": self._rules.source,
            "timezone": self._rules.location.timezone,
            "open_episodes": episodes,
            "pending": pending,
            "disabled": dict(self.disabled),
            "last_reload": self.last_reload,
            "next_lighting_change": None if now_s is None else self.next_lighting_change(now_s),
            "lighting_clock": dict(self._lighting_clock),
            "rules": [
                {
                    "id": r.id,
                    "severity": r.severity,
                    "disabled": self.disabled.get(r.id),
                    "open": sorted(d for (rid, d), ep in self._episodes.items() if rid == r.id and ep.open),
                }
                for r in self._rules.rules
            ],
            "aggregates": [a.id for a in self._rules.aggregates],
            "lighting": {
                g.id: {d: lvl for (gid, d), lvl in self._commanded.items() if gid == g.id}
                for g in self._rules.lighting
            },
            "devices": len(self._devices),
        }

    # -- persistence ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """All state as a JSON-able dict (give it back to ``restore``)."""
        states = {dev: self.device_state(dev) for dev in self.state_devices()}
        return assemble_snapshot({d: st for d, st in states.items() if st is not None}, self.global_state())

    def device_state(self, dev: str) -> dict[str, Any] | None:
        """One device's state (its episodes, aggregators, registration, commanded levels); None if none."""
        episodes = [
            [r.id, *_episode_fields(ep)]
            for r in self._rules.rules
            if (ep := self._episodes.get((r.id, dev))) is not None
        ]
        aggs = [
            [a.id, agg.snapshot()]
            for a in self._rules.aggregates
            if (agg := self._aggs.get((a.id, dev))) is not None
        ]
        commanded = [
            [g.id, lvl] for g in self._rules.lighting if (lvl := self._commanded.get((g.id, dev))) is not None
        ]
        registered = self._devices.get(dev)
        if not (episodes or aggs or commanded or registered):
            return None
        return {
            "episodes": episodes,
            "aggregates": aggs,
            "commanded": commanded,
            "device": list(registered) if registered else None,
        }

    def global_state(self) -> dict[str, Any]:
        """The state that belongs to no device: what each display totem was last sent."""
        last = self._display_last
        return {"display": {k: [self._display_next.get(k, 0.0), list(v)] for k, v in last.items()}}

    def take_changes(self) -> tuple[dict[str, dict[str, Any] | None], dict[str, Any] | None]:
        """The state of the devices changed since the last call (None: no state left) and the global
        state if it changed; forgets them. ``gateway.rules_state`` commits them with the records."""
        changed = {dev: self.device_state(dev) for dev in self._dirty}
        glob = self.global_state() if self._dirty_global else None
        self._dirty, self._dirty_global = set(), False
        return changed, glob

    def mark_changed(self, devices: Iterable[str], global_changed: bool) -> None:
        """Take back changes whose commit failed (a full disk): the next ``take_changes`` has them
        again, with the state as it is then."""
        self._dirty.update(devices)
        self._dirty_global = self._dirty_global or global_changed

    @property
    def has_changes(self) -> bool:
        return bool(self._dirty) or self._dirty_global

    def state_devices(self) -> set[str]:
        """The devices the engine holds any state for."""
        return (
            {d for _, d in self._episodes}
            | {d for _, d in self._aggs}
            | {d for _, d in self._commanded}
            | set(self._devices)
        )

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a ``snapshot``; entries of rules, aggregates or groups no longer loaded are dropped.

        StorageError if the snapshot is not one this version wrote (start fresh then).
        """
        try:
            if state.get("v") != SNAPSHOT_VERSION:
                raise StorageError(
                    f"rules state snapshot version {state.get('v')!r} is not {SNAPSHOT_VERSION}"
                )
            rule_ids = {r.id for r in self._rules.rules}
            episodes: dict[tuple[str, str], _Episode] = {}
            for entry in state["episodes"]:
                # Entries of the first layout have 8 items; last_value, opened_s, raised_value came
                # later, then cause (an episode an older agent opened keeps its alert id: it clears it).
                rule_id, dev, is_open, alert_id, pend_since, pend_n, last_seen, leaves = entry[:8]
                extra = [*entry[8:12], None, None, None, None][:4]
                if rule_id in rule_ids:
                    episodes[(str(rule_id), str(dev))] = _Episode(
                        bool(is_open), alert_id, pend_since, int(pend_n), last_seen, dict(leaves), *extra
                    )
            devices = {str(d): (str(p), str(s)) for d, (p, s) in state["devices"].items()}
            specs = {a.id: a for a in self._rules.aggregates}
            tz = ZoneInfo(self._rules.location.timezone)
            aggs: dict[tuple[str, str], DeviceAggregator] = {}
            for aid, dev, agg_state in state["aggregates"]:
                if aid in specs:
                    agg = DeviceAggregator(specs[aid], dev, str(agg_state["profile"]), tz)
                    agg.restore(agg_state)
                    aggs[(aid, dev)] = agg
            groups = {g.id for g in self._rules.lighting}
            commanded = {(g, d): int(lvl) for g, d, lvl in state["commanded"] if g in groups}
            display_next = {str(k): float(v[0]) for k, v in state["display"].items()}
            display_last = {str(k): (int(v[1][0]), int(v[1][1])) for k, v in state["display"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StorageError(f"rules state snapshot is unreadable: {exc!r}") from exc
        self._episodes, self._devices, self._aggs = episodes, devices, aggs
        self._commanded, self._display_next, self._display_last = commanded, display_next, display_last
        self._match_cache.clear()


MULTICAST_TARGET_PREFIX = "group:"
"""The target of a lighting group addressed to a multicast group, where a DevEUI is otherwise."""


def _lighting_request(
    group: LightingGroup, target: str, params: dict[str, object], at_s: float, reason: str
) -> DownlinkRequest | GroupDownlinkRequest:
    """One lamp's downlink, or the multicast group's one frame (LoRaWAN 1.0.4 §18)."""
    if group.multicast is not None:
        return GroupDownlinkRequest(group.multicast, group.command, params, at_s, reason)
    return DownlinkRequest(target, group.command, params, at_s, reason)


def _alert_id(rule: Rule, dev: str, ep: _Episode, at_s: float) -> str:
    """The id of the episode ``ep`` opens at ``at_s``: the device, the rule and what caused it.

    Named after a record id (the same frame has the same one on every gateway that heard it, and
    again after a restart), never after a receive or tick time (each gateway has its own), so the
    copies of one alert from two gateways, or from one gateway before and after a restart, are one
    alert for the platform: the reading that started the pending change for a condition, the period
    after the last reading heard for a silence (docs/mqtt.md, "One identity per event").
    Without a record id (a dry run from a file; an episode pending since before this rule existed):
    the start of the silence, else the time the episode opens, as before.
    """
    if ep.cause:
        after = "after-" if isinstance(rule.condition, Silence) else ""
        return f"{dev}-{rule.id}-{after}{caused_by(dev, ep.cause)}"
    if isinstance(rule.condition, Silence) and ep.last_seen is not None:
        return f"{dev}-{rule.id}-since-{round(ep.last_seen * 1000)}"
    return f"{dev}-{rule.id}-{round(at_s * 1000)}"


def _clock_alert(
    alert_id: str, dev: str, state: Literal["raised", "cleared"], at_s: float, message: str
) -> Alert:
    return Alert(alert_id, state, "lighting_clock", dev, "warning", at_s, message=message)


def _episode_fields(ep: _Episode) -> list[Any]:
    return [
        ep.open,
        ep.alert_id,
        ep.pend_since,
        ep.pend_n,
        ep.last_seen,
        ep.leaves,
        ep.last_value,
        ep.opened_s,
        ep.raised_value,
        ep.cause,
    ]


def assemble_snapshot(
    devices: Mapping[str, Mapping[str, Any]], global_state: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A ``RuleEngine.snapshot`` from per-device states (``device_state``) and the global state."""
    return {
        "v": SNAPSHOT_VERSION,
        "episodes": [[e[0], dev, *e[1:]] for dev, st in devices.items() for e in st["episodes"]],
        "aggregates": [[aid, dev, agg] for dev, st in devices.items() for aid, agg in st["aggregates"]],
        "devices": {dev: st["device"] for dev, st in devices.items() if st.get("device")},
        "commanded": [[gid, dev, lvl] for dev, st in devices.items() for gid, lvl in st["commanded"]],
        "display": dict((global_state or {}).get("display", {})),
    }
