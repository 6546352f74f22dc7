"""``edgegw rules`` (the running agent's rules and their live state) and ``edgegw rules test`` (dry run).

``rules test`` validates a rules file and replays a list of readings (JSON lines) through a
fresh ``RuleEngine`` on a simulated clock: the engine is ticked every ``--tick-s`` seconds
and at every lighting change or debounce deadline between readings, so an hour or a week
of readings runs in a moment, and every alert edge, command and aggregate is printed with
the time it would happen (``--trace`` adds every rule evaluation, and names the fields a
reading lacks when a rule skips it). Exit code 2 when the rules file or a reading is invalid
(file, key path or line, and the reason on stderr), or when the file names a profile or a
decoded field the device profiles do not know (``rules_check``, with "did you mean"): the
shipped profiles plus ``--profiles-dir``, else the config's ``profiles_dir`` when the config
file exists.

``rules`` asks the agent over its control socket; exit code 1 when the agent is not running.
This module owns the readings-file format and the dry run's output; the rules are the
engine's (gateway/rules/).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway import config, db, textfile
from gateway.cli import layout, multicast_cost, rules_check
from gateway.cli.common import CheckFailed, UsageError, add_config_option, config_path, print_json
from gateway.codec import ProfileStore, load_profiles
from gateway.control import SOCKET_NAME, client
from gateway.errors import ConfigError, EncodeError, GatewayError
from gateway.messages import Alert
from gateway.provisioning import groups
from gateway.rules import (
    AggregateRecord,
    DisplayUpdate,
    DownlinkRequest,
    GroupDownlinkRequest,
    Output,
    ReadingFacts,
    RuleEngine,
)
from gateway.rules.engine import EvalTrace
from gateway.rules.loader import load_rules
from gateway.rules.model import RuleSet

DEFAULT_TICK_S = 60.0
DEFAULT_SPAN_S = 86400.0
"""Without readings nor --until, the dry run covers a day (one night of lighting)."""
MAX_TICKS = 1_000_000
"""Bound on simulated ticks (a year at one per minute is 525,600)."""


def add_arguments(rules: argparse.ArgumentParser) -> None:
    rules.add_argument("--json", action="store_true", help="one JSON document")
    rules.add_argument("--wide", action="store_true", help="no line wrapped to the terminal width")
    add_config_option(rules)
    rules.set_defaults(handler=show_rules)
    inner = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    test = inner.add_parser("test", help="dry run: validate a rules file and replay readings through it")
    test.add_argument("--rules", required=True, metavar="FILE", help="the rules file (YAML)")
    test.add_argument(
        "--readings",
        metavar="FILE.jsonl",
        help="one reading per line: {dev_eui, profile, at (ISO 8601 or Unix s), data, site}",
    )
    test.add_argument("--trace", action="store_true", help="also print every rule evaluation")
    test.add_argument(
        "--profiles-dir",
        metavar="DIR",
        help="your profiles, added to the shipped ones (default: the config's profiles_dir)",
    )
    test.add_argument("--json", action="store_true", help="one JSON document")
    test.add_argument("--start", metavar="TIME", help="simulated start (default: first reading, or now)")
    test.add_argument(
        "--until", metavar="TIME", help="simulated end (default: last reading, or start + 24 h)"
    )
    test.add_argument(
        "--tick-s", type=float, default=DEFAULT_TICK_S, metavar="S", help="clock tick between readings"
    )
    test.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="NAME=PROFILE:MEMBERS",
        help="a multicast group the rules address, for the airtime cost of its steps"
        " (default: the registry of the config's gateway)",
    )
    test.set_defaults(handler=run_test)


# --- the dry run -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the dry run's output."""

    at_s: float
    kind: str  # alert | command | aggregate | eval | reload
    body: dict[str, Any]


def parse_time(text: str, what: str) -> float:
    """ISO 8601 (a time without offset is UTC) or Unix seconds; UsageError otherwise."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"{what}: not an ISO 8601 time nor Unix seconds: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo("UTC"))
    return moment.timestamp()


def load_readings(path: Path) -> list[ReadingFacts]:
    """Read a JSON-lines readings file; UsageError naming the line on the first bad one."""
    try:
        lines = textfile.read_text(path).splitlines()
    except ConfigError as exc:  # unreadable, or not UTF-8 (the line of the first bad byte)
        raise UsageError(str(exc)) from exc
    out: list[ReadingFacts] = []
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{where}: not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise UsageError(f"{where}: expected a JSON object")
        dev = str(doc.get("dev_eui", "")).lower().replace(":", "").replace("-", "")
        if len(dev) != 16 or any(c not in "0123456789abcdef" for c in dev):
            raise UsageError(f"{where}: dev_eui: expected 16 hex digits, got {doc.get('dev_eui')!r}")
        at = doc.get("at")
        if isinstance(at, bool) or not isinstance(at, str | int | float):
            raise UsageError(f"{where}: at: expected an ISO 8601 time or Unix seconds")
        at_s = float(at) if not isinstance(at, str) else parse_time(at, f"{where}: at")
        if not math.isfinite(at_s):
            raise UsageError(f"{where}: at: not a finite time")
        data = doc.get("data")
        if not isinstance(data, dict):
            raise UsageError(f"{where}: data: expected a JSON object of decoded fields")
        profile, site = doc.get("profile", ""), doc.get("site", "")
        if not isinstance(profile, str) or not isinstance(site, str):
            raise UsageError(f"{where}: profile and site must be strings")
        out.append(ReadingFacts(dev, profile, at_s, data, site))
    return out


def simulate(
    rules: RuleSet,
    readings: list[ReadingFacts],
    *,
    start_s: float,
    until_s: float,
    tick_s: float = DEFAULT_TICK_S,
    trace: bool = False,
) -> list[Event]:
    """Replay ``readings`` (in time order) through a fresh engine on a simulated clock."""
    engine = RuleEngine(rules)
    events: list[Event] = []
    current: list[ReadingFacts] = []  # the reading being evaluated, for the trace's "missing"
    fields = {rule.id: rules_check.rule_fields(rule) for rule in rules.rules}

    def on_trace(t: EvalTrace) -> None:
        event = _trace_event(t)
        if t.outcome == "skipped" and t.source == "reading" and current:
            data = current[0].data
            event.body["missing"] = [
                name for name in fields.get(t.rule_id, ()) if not _is_number(data.get(name))
            ]
        events.append(event)

    if trace:
        engine.trace = on_trace
    clock = {"now_s": start_s, "ticks": 0}

    def advance(to_s: float) -> None:
        while clock["ticks"] < MAX_TICKS:
            now_s = clock["now_s"]
            due_s = engine.next_due_s(now_s)
            step_s = now_s + tick_s
            nxt = min(step_s, due_s) if due_s is not None and due_s > now_s else step_s
            if nxt > to_s:
                break
            clock["now_s"], clock["ticks"] = nxt, clock["ticks"] + 1
            events.extend(_events(engine.tick(nxt)))

    # The state at the start: lamps already on when the run starts after dusk.
    events.extend(_events(engine.tick(start_s)))
    for reading in sorted(readings, key=lambda r: r.at_s):
        advance(reading.at_s)
        current[:] = [reading]
        events.extend(_events(engine.evaluate(reading)))
        current.clear()
    advance(until_s)
    if clock["now_s"] < until_s:
        events.extend(_events(engine.tick(until_s)))
    return events


def _events(outputs: list[Output]) -> Iterator[Event]:
    for out in outputs:
        if isinstance(out, Alert):
            yield Event(
                out.at_s,
                "alert",
                {
                    "state": out.state, "rule": out.rule_id, "dev_eui": out.dev_eui, "severity": out.severity,
                    "value": out.value, "message": out.message, "alert_id": out.alert_id,
                },
            )  # fmt: skip
        elif isinstance(out, AggregateRecord):
            yield Event(
                out.end_s,
                "aggregate",
                {
                    "aggregate": out.aggregate_id, "series": out.kind, "dev_eui": out.dev_eui,
                    "from_s": out.start_s, "to_s": out.end_s, "values": dict(out.values),
                },
            )  # fmt: skip
        elif isinstance(out, GroupDownlinkRequest):
            yield Event(
                out.at_s,
                "command",
                {
                    "group": out.group,
                    "command": out.command,
                    "params": dict(out.params),
                    "reason": out.reason,
                },
            )
        else:
            request = out.as_downlink() if isinstance(out, DisplayUpdate) else out
            assert isinstance(request, DownlinkRequest)
            yield Event(
                request.at_s,
                "command",
                {
                    "dev_eui": request.dev_eui, "command": request.command, "params": dict(request.params),
                    "reason": request.reason,
                },
            )  # fmt: skip


def _is_number(value: object) -> bool:
    # What a rule can read (conditions.read_value): a finite number, not a boolean.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _trace_event(t: EvalTrace) -> Event:
    body = t.as_json()
    del body["at_s"]
    return Event(t.at_s, "eval", body)


def run_test(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules)  # ConfigError (file: key path: reason) → exit 2
    readings = load_readings(Path(args.readings)) if args.readings else []
    profiles = _check_names(args, rules, readings)
    if args.tick_s <= 0:
        raise UsageError("--tick-s must be > 0")
    times = sorted(r.at_s for r in readings)
    start_s = parse_time(args.start, "--start") if args.start else (times[0] if times else time.time())
    if args.until:
        until_s = parse_time(args.until, "--until")
    else:
        until_s = times[-1] if times else start_s + DEFAULT_SPAN_S
    if until_s < start_s:
        raise UsageError("--until is before the start")
    if times and times[0] < start_s:
        raise UsageError(f"a reading is before --start ({_iso(times[0], ZoneInfo('UTC'))})")
    events = simulate(rules, readings, start_s=start_s, until_s=until_s, tick_s=args.tick_s, trace=args.trace)
    _add_group_costs(args, rules, profiles, events)
    tz = ZoneInfo(rules.location.timezone)
    summary = _summary(rules, readings, events)
    if args.json:
        print_json(
            {
                "rules_file": str(args.rules),
                "from": _iso(start_s, tz),
                "until": _iso(until_s, tz),
                "summary": summary,
                "events": [
                    {"at": _iso(e.at_s, tz), "at_s": e.at_s, "kind": e.kind, **e.body} for e in events
                ],
            }
        )
        return 0
    print(
        f"rules {args.rules}: {len(rules.rules)} rules, {len(rules.aggregates)} aggregates, "
        f"{len(rules.lighting)} lighting groups; simulated {_iso(start_s, tz)} .. {_iso(until_s, tz)}"
    )
    for event in events:
        print(f"{_iso(event.at_s, tz)}  {event.kind:<9} {_describe(event, tz)}")
        if "cost" in event.body:
            print(f"{'':<27}{'cost':<9} {event.body['cost']['text']}")
    print(
        f"{summary['readings']} readings: {summary['alerts_raised']} alerts raised, "
        f"{summary['alerts_cleared']} cleared, {summary['commands']} commands, "
        f"{summary['aggregates']} aggregates"
    )
    return 0


def _profiles(args: argparse.Namespace) -> ProfileStore:
    """The shipped profiles plus --profiles-dir, else plus the config's profiles_dir if the file exists."""
    if args.profiles_dir:
        return load_profiles(args.profiles_dir)
    path = Path(config_path(args))
    return load_profiles(config.load(str(path)).profiles_dir if path.is_file() else None)


def _check_names(args: argparse.Namespace, rules: RuleSet, readings: list[ReadingFacts]) -> ProfileStore:
    """UsageError (exit 2) after one stderr line per unknown profile or field of the rules file; the
    profiles it checked against."""
    profiles = _profiles(args)
    problems = [f"{args.rules}: {problem}" for problem in rules_check.check(rules, profiles)]
    for profile_id in sorted({r.profile for r in readings if r.profile and r.profile not in profiles}):
        problems.append(f"{args.readings}: unknown profile {profile_id!r}")
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        raise UsageError(f"{args.rules}: {len(problems)} unknown name(s), nothing simulated")
    return profiles


# --- multicast groups: the airtime of a step to a group -----------------------------------------


@dataclass(frozen=True, slots=True)
class _GroupPlan:
    profile: str
    members: int
    dr: int
    freq_hz: int


def _group_plans(args: argparse.Namespace, rules: RuleSet) -> dict[str, _GroupPlan | str]:
    """The groups the rules address: from the registry of the config's gateway (read only, when its
    database exists), then ``--group NAME=PROFILE:MEMBERS`` (on the gateway's RX2 parameters). A
    registered group that no class C member would hear has why instead of a plan: a frame to it
    reaches nobody (members set back to class A listen only after their own uplinks)."""
    wanted = {g.multicast for g in rules.lighting if g.multicast is not None}
    plans: dict[str, _GroupPlan | str] = {}
    if not wanted:
        return plans
    path = Path(config_path(args))
    cfg = config.load(str(path)) if path.is_file() else None
    lorawan = cfg.lorawan if cfg is not None else config.LorawanSection()
    rx2_dr, rx2_freq_hz = lorawan.rx2_dr, lorawan.rx2_freq_hz
    if cfg is not None and db.db_path(cfg.data_dir).is_file():
        try:
            conn = sqlite3.connect(f"file:{db.db_path(cfg.data_dir)}?mode=ro", uri=True)
            try:
                for info in groups.list_groups(conn):
                    if info.name not in wanted:
                        continue
                    class_c = len(info.members) - len(info.not_class_c)
                    if info.profile is None:
                        plans[info.name] = f"group {info.name}: no member (edgegw group add-member)"
                    elif class_c == 0:
                        plans[info.name] = (
                            f"group {info.name}: no class C member ({len(info.members)} set back to class A)"
                        )
                    else:
                        plans[info.name] = _GroupPlan(
                            info.profile,
                            class_c,
                            rx2_dr if info.dr is None else info.dr,
                            rx2_freq_hz if info.freq_hz is None else info.freq_hz,
                        )
            finally:
                conn.close()
        except sqlite3.Error:
            pass  # no multicast tables yet (an older file): only --group then
    for text in args.group:
        name, _, rest = text.partition("=")
        profile, _, members = rest.rpartition(":")
        if not name or not profile or not members.isdigit() or int(members) < 1:
            raise UsageError(
                f"--group {text!r}: expected NAME=PROFILE:MEMBERS, e.g. district-north=nasys/ul20xx:200"
            )
        plans[name] = _GroupPlan(profile, int(members), rx2_dr, rx2_freq_hz)
    return plans


def _add_group_costs(
    args: argparse.Namespace, rules: RuleSet, profiles: ProfileStore, events: list[Event]
) -> None:
    """Each command to a multicast group gets its ``cost``: one frame against one per member."""
    plans = _group_plans(args, rules)
    for event in events:
        name = event.body.get("group")
        if event.kind != "command" or name is None:
            continue
        plan = plans.get(name)
        if plan is None:
            text = (
                f"group {name}: not in this gateway's registry; --group {name}=PROFILE:MEMBERS gives its cost"
            )
            event.body["cost"] = {"text": text}
            continue
        if isinstance(plan, str):
            event.body["cost"] = {"text": plan}
            continue
        if plan.profile not in profiles:
            event.body["cost"] = {"text": f"group {name}: unknown profile {plan.profile!r}"}
            continue
        try:
            payload = profiles.get(plan.profile).encode(event.body["command"], event.body["params"]).payload
        except EncodeError as exc:
            event.body["cost"] = {"text": f"group {name}: {exc}"}
            continue
        cost = multicast_cost.step_cost(name, plan.members, len(payload), plan.dr, plan.freq_hz)
        event.body["cost"] = {**cost.as_json(), "text": cost.describe()}


def _summary(rules: RuleSet, readings: list[ReadingFacts], events: list[Event]) -> dict[str, int]:
    def count(kind: str, state: str | None = None) -> int:
        return sum(1 for e in events if e.kind == kind and (state is None or e.body.get("state") == state))

    return {
        "rules": len(rules.rules),
        "readings": len(readings),
        "alerts_raised": count("alert", "raised"),
        "alerts_cleared": count("alert", "cleared"),
        "commands": count("command"),
        "aggregates": count("aggregate"),
        "evaluations": count("eval"),
    }


# The engine's lighting reason says "since <Unix seconds>" (gateway/rules/engine.py); until it gives
# the time apart, the view turns that number into a time in the rules' zone.
_SINCE_UNIX = re.compile(r"\bsince (\d{9,11})\b")


def readable_reason(reason: str, tz: tzinfo) -> str:
    """``lighting avenue since 1774675078`` → ``lighting avenue since 2026-03-28 06:17:58 CET``."""
    return _SINCE_UNIX.sub(lambda m: f"since {when(float(m.group(1)), tz)}", reason)


def _describe(event: Event, tz: tzinfo) -> str:
    b = event.body
    if event.kind == "alert":
        value = "" if b["value"] is None else f" value {b['value']:.4g}"
        message = f" — {b['message']}" if b["message"] else ""
        return f"{b['state']:<7} {b['rule']} {b['dev_eui']} {b['severity']}{value}{message}"
    if event.kind == "command":
        to = f"group {b['group']}" if "group" in b else b["dev_eui"]  # one multicast frame, or one lamp
        return f"{to} {b['command']} {json.dumps(b['params'])} ({readable_reason(b['reason'], tz)})"
    if event.kind == "aggregate":
        return f"{b['aggregate']} {b['series']} {b['dev_eui']} {json.dumps(b['values'])}"
    value = "" if b["value"] is None else f" value {b['value']:.4g}"
    active = "" if b["active"] is None else f" active={str(b['active']).lower()}"
    pending = f" pending {b['pending_n']} reading(s)" if b["outcome"] == "pending" else ""
    via = " (tick)" if b["source"] == "tick" else ""
    missing = f" (no {', '.join(b['missing'])} in the reading)" if b.get("missing") else ""
    return f"{b['rule_id']} {b['dev_eui']} {b['outcome']}{active}{value}{pending}{via}{missing}"


def _iso(at_s: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(at_s, tz).isoformat(timespec="seconds")


# --- the running agent ------------------------------------------------------------------------


def when(at_s: float, tz: tzinfo) -> str:
    """A time of the running agent's view in the rules' zone, said with it: ``2026-03-28 23:00:00 CET``.

    The rules' zone, not the machine's: a lighting step at 23:00 Europe/Paris is 23:00 CET even
    on a gateway set to UTC, where the bare local time read 22:00.
    """
    return datetime.fromtimestamp(at_s, tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def rules_zone(doc: dict[str, Any]) -> tzinfo:
    """The zone of the rules the agent runs: the one it gives (``timezone``), else the rules
    file's ``location.timezone``, else (the file unreadable now) this machine's own zone."""
    name = doc.get("timezone")
    if not name:
        try:
            name = load_rules(doc.get("source") or doc["path"]).location.timezone
        except (GatewayError, OSError):
            return datetime.now().astimezone().tzinfo or ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return datetime.now().astimezone().tzinfo or ZoneInfo("UTC")


def show_rules(args: argparse.Namespace) -> int:
    socket_path = config.load(config_path(args)).data_path / SOCKET_NAME
    try:
        doc = client.request(socket_path, "rules")
    except client.AgentUnreachable as exc:
        raise CheckFailed(str(exc)) from exc
    doc.pop("ok", None)
    if args.json:
        print_json(doc)
        return 0
    for line in rules_lines(
        doc, rules_zone(doc) if doc.get("enabled") else ZoneInfo("UTC"), layout.width(args.wide)
    ):
        print(line)
    return 0


def rules_lines(doc: dict[str, Any], tz: tzinfo, room: int | None) -> list[str]:
    """The ``rules`` view of the agent's answer, times in ``tz``, lines within ``room``."""
    if not doc.get("enabled"):
        return ["no rules file configured (rules.path is empty)"]
    lines: list[str] = []

    def say(text: str, indent: int = 0) -> None:
        # Wrapped at spaces, continuation lines under the text: a rule id or a time is never cut.
        lines.extend(layout.labelled(" " * indent, text, room, indent))

    say(
        f"rules from {doc['source'] or doc['path']}: {len(doc['rules'])} rules, "
        f"{len(doc['aggregates'])} aggregates, {len(doc['lighting'])} lighting groups, "
        f"{doc['devices']} devices known"
    )
    reload = doc.get("last_reload")
    if reload:
        verdict = "applied" if reload["ok"] else f"REFUSED, previous rules kept: {reload['error']}"
        say(f"last reload {when(reload['at_s'], tz)}: {verdict}")
    for rule in doc["rules"]:
        state = f"DISABLED: {rule['disabled']}" if rule["disabled"] else f"{len(rule['open'])} open"
        say(f"{rule['id']:<28} {rule['severity']:<8} {state}", 2)
    if doc["open_episodes"]:
        say("open episodes:")
        for ep in doc["open_episodes"]:
            since = when(ep["since_s"], tz) if ep["since_s"] else "?"
            say(f"{ep['rule']} {ep['dev_eui']} since {since}{_episode_value(ep)}", 2)
    for item in doc["pending"]:
        say(f"pending {item['to']}: {item['rule']} {item['dev_eui']} since {when(item['since_s'], tz)}", 2)
    nxt = doc.get("next_lighting_change")
    if nxt:
        say(f"next lighting change: {when(nxt['at_s'], tz)} group {nxt['group']} to {nxt['level_pct']} %")
    return lines


def _episode_value(ep: dict[str, Any]) -> str:
    """The value that raised the episode (what the alert said), and the latest when it differs.

    ``raised_value`` comes from agents that give it; an older agent gives only the latest value,
    said as such so that it is not read as the one that raised the alert.
    """
    latest = ep.get("value")
    if "raised_value" not in ep:
        return "" if latest is None else f", latest value {latest:.4g}"
    raised = ep["raised_value"]
    text = "" if raised is None else f", raised at {raised:.4g}"
    if latest is not None and latest != raised:
        text += f", now {latest:.4g}"
    return text
