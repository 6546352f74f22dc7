"""A device's installation parameters checked against what its profile declares.

Owns the checks an installer's values meet before they reach the registry (CSV import,
``edgegw device add`` and ``device set``): a name the profile declares (else the closest one,
"did you mean"), a number where the profile declares a number, within the declared bounds,
``less_than`` between two parameters (``full_distance_mm < empty_distance_mm``: the sensor looks
down), and every required parameter present when the values are a device's whole installation.

It does not own the declaration (the profile format, ``gateway.codec.profile``) nor where the
values are stored (``registry``). A profile without a ``parameters`` section declares nothing:
its devices' parameters are not checked (custom profiles written before the section existed).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeGuard

from gateway.codec.profile import Parameter, Profile
from gateway.provisioning.registry import ParamValue, format_param


@dataclass(frozen=True, slots=True)
class Problem:
    """One parameter that does not fit its profile (``name``), with the reason said for an installer."""

    name: str
    message: str

    def __str__(self) -> str:
        return self.message


def check(profile: Profile, params: Mapping[str, ParamValue], *, complete: bool) -> list[Problem]:
    """Every problem of ``params`` for a device of ``profile``, in a stable order.

    ``complete``: ``params`` are the device's whole installation (a CSV line, the registry's
    values after a change), so a missing required parameter is a problem too.
    """
    if profile.parameters is None:
        return []
    declared = {parameter.name: parameter for parameter in profile.parameters}
    problems: list[Problem] = []
    for name in sorted(params):
        parameter = declared.get(name)
        if parameter is None:
            problems.append(Problem(name, _unknown(profile, name)))
            continue
        problem = _check_value(parameter, params[name])
        if problem is not None:
            problems.append(Problem(name, problem))
    bad = {problem.name for problem in problems}
    for parameter in profile.parameters:
        other = parameter.less_than
        if other is None or parameter.name in bad or other in bad:
            continue
        low, high = params.get(parameter.name), params.get(other)
        if _is_number(low) and _is_number(high) and not low < high:
            hint = " (are the two swapped?)" if low > high else ""
            problems.append(
                Problem(
                    parameter.name,
                    f"{parameter.name} ({_show(low, parameter)}) must be less than "
                    f"{other} ({_show(high, declared[other])}){hint}",
                )
            )
    if complete:
        problems.extend(Problem(p.name, _missing(profile, p)) for p in missing(profile, params))
    return problems


def missing(profile: Profile, params: Mapping[str, ParamValue] | Iterable[str]) -> list[Parameter]:
    """The required parameters of ``profile`` that ``params`` (values, or names) lacks."""
    if profile.parameters is None:
        return []
    have = set(params)
    return [p for p in profile.parameters if p.required and p.name not in have]


def describe_missing(profile: Profile, absent: list[Parameter]) -> str:
    """``milesight/em310-udl needs empty_distance_mm (mm: ...), ...`` for a warning or an error."""
    return f"{profile.id} needs " + "; ".join(_wanted(p) for p in absent)


def _check_value(parameter: Parameter, value: ParamValue) -> str | None:
    if parameter.type == "text":
        return None  # a lamp group "3" is read as a number by the registry: text accepts both
    if not _is_number(value):
        return f"parameter {parameter.name} must be a number, got {value!r}"
    if (parameter.min is not None and value < parameter.min) or (
        parameter.max is not None and value > parameter.max
    ):
        low = "" if parameter.min is None else format_param(parameter.min)
        high = "" if parameter.max is None else format_param(parameter.max)
        unit = f" {parameter.unit}" if parameter.unit else ""
        return f"parameter {parameter.name} {_show(value, parameter)} is outside {low}..{high}{unit}"
    return None


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, float | int) and not isinstance(value, bool)


def _unknown(profile: Profile, name: str) -> str:
    assert profile.parameters is not None
    names = [p.name for p in profile.parameters]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    takes = ", ".join(names) if names else "none"
    return f"{profile.id} has no installation parameter {name!r} ({hint}it takes: {takes})"


def _missing(profile: Profile, parameter: Parameter) -> str:
    return f"missing required parameter: {describe_missing(profile, [parameter])}"


def _wanted(parameter: Parameter) -> str:
    what = ", ".join(x for x in (parameter.unit, parameter.description) if x)
    return f"{parameter.name} ({what})" if what else parameter.name


def _show(value: float, parameter: Parameter) -> str:
    return f"{format_param(value)} {parameter.unit}".rstrip()
