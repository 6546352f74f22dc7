"""A rules file checked against the device profiles: the names a rule reads must exist.

Owns the cross-check ``edgegw rules test`` runs before its dry run: every profile id a rules
file names (selectors, ``defaults.profiles``) is a known profile, and every decoded field a
rule or an aggregate reads (``value``/``field``, ``leq``, ``lden_field``, ``period_field``,
``count.fields``) is an output of the profiles the rule selects — of every one it names, or of
at least one known profile when it selects by site or DevEUI only. Each problem comes with the
closest known name ("did you mean").

It lives in the CLI because it joins two independent stages (rules and codec may not import
each other, .importlinter). The running agent does not run it when it loads or reloads a rules
file: the agent is given the profiles it serves, but a rules file may be written for a whole
fleet's profiles, and a reload must not be refused for a model this gateway does not serve;
``edgegw rules test`` is the installer's check before a file is deployed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator

from gateway.codec import Profile, ProfileStore
from gateway.rules.model import (
    Aggregate,
    Combine,
    Condition,
    Flag,
    RateOfChange,
    Rule,
    RuleSet,
    Selector,
    Silence,
    Stuck,
    Threshold,
)


def rule_fields(rule: Rule) -> tuple[str, ...]:
    """The decoded fields ``rule``'s condition reads, in order, once each."""
    return tuple(dict.fromkeys(_condition_fields(rule.condition)))


def aggregate_fields(aggregate: Aggregate) -> tuple[str, ...]:
    """The decoded fields ``aggregate`` reads, in order, once each."""
    names: list[str] = []
    if aggregate.leq is not None:
        names.append(aggregate.leq.field)
    if aggregate.lden_field is not None:
        names.append(aggregate.lden_field)
    if aggregate.period_field is not None:
        names.append(aggregate.period_field)
    if aggregate.count is not None:
        names.extend(aggregate.count.fields)
    if aggregate.fill is not None:
        names.append(aggregate.fill.value.field)
    return tuple(dict.fromkeys(names))


def _condition_fields(condition: Condition | Silence) -> Iterator[str]:
    if isinstance(condition, Threshold | RateOfChange | Stuck):
        yield condition.value.field
    elif isinstance(condition, Flag):
        yield condition.field
    elif isinstance(condition, Combine):
        for part in condition.parts:
            yield from _condition_fields(part)


def check(rules: RuleSet, profiles: ProfileStore) -> list[str]:
    """Every unknown profile id and unknown field of ``rules``, one readable line each."""
    problems: list[str] = []
    known = profiles.ids()
    for profile_id in sorted(rules.profile_params):
        if profile_id not in profiles:
            problems.append(f"defaults.profiles: {_unknown_profile(profile_id, known)}")
    users: list[tuple[str, Selector, tuple[str, ...]]] = [
        (f"rule {rule.id}", rule.selector, rule_fields(rule)) for rule in rules.rules
    ]
    users += [(f"aggregate {agg.id}", agg.selector, aggregate_fields(agg)) for agg in rules.aggregates]
    users += [(f"lighting group {group.id}", group.selector, ()) for group in rules.lighting]
    for where, selector, fields in users:
        for profile_id in sorted(selector.profiles):
            if profile_id not in profiles:
                problems.append(f"{where}: devices.profiles: {_unknown_profile(profile_id, known)}")
        selected = [profiles.get(pid) for pid in sorted(selector.profiles) if pid in profiles]
        for name in fields:
            problems.extend(f"{where}: {problem}" for problem in _field_problems(name, selected, profiles))
    return problems


def _field_problems(name: str, selected: list[Profile], profiles: ProfileStore) -> Iterator[str]:
    if selected:
        for profile in selected:
            outputs = output_names(profile)
            if outputs is not None and not _is_output(name, outputs):
                yield f"field {name!r} is not an output of {profile.id}{_did_you_mean(name, outputs)}"
        return
    every: set[str] = set()
    for profile in profiles:
        outputs = output_names(profile)
        if outputs is None or _is_output(name, outputs):
            return  # a profile that declares no outputs (a JavaScript codec) may send it
        every |= outputs
    yield f"field {name!r} is not an output of any known profile{_did_you_mean(name, every)}"


def output_names(profile: Profile) -> set[str] | None:
    """The top-level keys ``profile``'s decoded readings may carry; None when it does not say."""
    names = {output.name for output in profile.outputs} | {d.output.name for d in profile.derived}
    return names or None


def _is_output(name: str, outputs: set[str]) -> bool:
    if name in outputs:
        return True
    # Templated outputs ("current_{n}") stand for a family of keys; one with no literal part
    # ("{interval_kind}", a key named by the payload) would match any typo, so it is not used.
    return any(
        _template(output).fullmatch(name) for output in outputs if "{" in output and _LITERAL.search(output)
    )


_LITERAL = re.compile(r"(?:^|\})[^{]")


def _template(output: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[a-z_][a-z0-9_]*\})", output)
    return re.compile("".join(".+" if part.startswith("{") else re.escape(part) for part in parts))


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_profile(profile_id: str, known: list[str]) -> str:
    hint = _did_you_mean(profile_id, known)
    return f"unknown profile {profile_id!r}{hint or ' (edgegw profile list shows the known ones)'}"
