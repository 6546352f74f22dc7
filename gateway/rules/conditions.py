"""Evaluation of one rule condition for one device: values, leaves, combinations.

Owns the per-leaf state (hysteresis flag, rate-of-change window, flat-line window) as
JSON-able dicts and the meaning of each condition kind. A leaf whose field is missing
from a reading is not updated and keeps its previous state; a condition none of whose
leaves could be updated reports ``updated=False`` and the rule skips that reading.

It does not own episodes, debounce or alerts (engine.py), nor read any clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from gateway.rules.model import (
    Combine,
    Condition,
    Daylight,
    Flag,
    Location,
    Num,
    Param,
    RateOfChange,
    Stuck,
    Threshold,
    ValueSpec,
)

_DEFAULT_LOCATION: Final = Location()
MAX_WINDOW_POINTS: Final = 512
"""Bound on a rate-of-change window (a 15-min window at one reading per 2 s)."""


class MissingParam(LookupError):
    """A ``$name`` has no value for this device and no default: the rule does not apply to it."""


def resolve(num: Num, params: Mapping[str, float]) -> float:
    if isinstance(num, Param):
        if num.name in params:
            return params[num.name]
        if num.default is not None:
            return num.default
        raise MissingParam(num.name)
    return num


def read_value(spec: ValueSpec, data: Mapping[str, Any], params: Mapping[str, float]) -> float | None:
    """The spec's number from a reading, or None when the field is missing or not a finite number."""
    raw = data.get(spec.field)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return None
    value = float(raw) * resolve(spec.scale, params) + resolve(spec.offset, params)
    if spec.fill_empty is not None and spec.fill_full is not None:
        empty, full = resolve(spec.fill_empty, params), resolve(spec.fill_full, params)
        if empty == full:
            return None
        # Divide last: 1014 mm between 2000 (empty) and 300 (full) is exactly 58 %, and a rule
        # "above: 58" must see 58.0, not the 57.99999999999999 of dividing first (docs/rules.md).
        value = min(100.0, max(0.0, 100.0 * (empty - value) / (empty - full)))
    return value


def is_daylight(location: Location, at_s: float, margin_s: float) -> bool:
    """Between sunrise + margin and sunset - margin on the local day of ``at_s`` (polar cases: no sun
    event that day counts as night, the safe side for a day-burner alert)."""
    from gateway.rules.schedules import sun_times  # schedules imports astral; keep it off this path

    day = datetime.fromtimestamp(at_s, ZoneInfo(location.timezone)).date()
    times = sun_times(location, day)
    rise, set_ = times.get("sunrise"), times.get("sunset")
    if rise is None or set_ is None:
        return False
    return rise + margin_s <= at_s <= set_ - margin_s


def _hysteresis(on: bool, value: float, direction: str, level: float, clear: float) -> bool:
    if direction == "above":
        return value >= clear if on else value >= level
    return value <= clear if on else value <= level


def slope_per_s(points: list[list[float]]) -> float | None:
    """Least-squares slope of (t, v) points; None when they do not span any time."""
    n = len(points)
    mean_t = sum(p[0] for p in points) / n
    mean_v = sum(p[1] for p in points) / n
    var_t = sum((p[0] - mean_t) ** 2 for p in points)
    if var_t == 0:
        return None
    return sum((p[0] - mean_t) * (p[1] - mean_v) for p in points) / var_t


def evaluate(
    cond: Condition,
    key: str,
    leaves: dict[str, dict[str, Any]],
    at_s: float,
    data: Mapping[str, Any],
    params: Mapping[str, float],
    location: Location = _DEFAULT_LOCATION,
) -> tuple[bool, bool, float | None]:
    """(updated, active, value) of ``cond`` after this reading; leaf state lives in ``leaves[key...]``.

    ``location`` is where the sun is looked up for ``daylight`` leaves.
    """
    if isinstance(cond, Combine):
        any_updated = False
        states: list[bool] = []
        first_value: float | None = None
        for i, part in enumerate(cond.parts):
            updated, active, value = evaluate(part, f"{key}.{i}", leaves, at_s, data, params, location)
            any_updated = any_updated or updated
            states.append(active)
            if first_value is None and updated:
                first_value = value
        active = all(states) if cond.op == "all" else any(states)
        return any_updated, active, first_value
    state = leaves.setdefault(key, {"on": False})
    if isinstance(cond, Daylight):
        state["on"] = is_daylight(location, at_s, cond.margin_s)
        return True, state["on"], None
    if isinstance(cond, Flag):
        if cond.field not in data:
            return False, state["on"], None
        raw = data[cond.field]
        # bool is an int in Python: `true` must never match 1, nor `1` match true.
        state["on"] = any(raw == v and isinstance(raw, bool) == isinstance(v, bool) for v in cond.values)
        return True, state["on"], None
    value = read_value(cond.value, data, params)
    if value is None:
        return False, state["on"], None
    if isinstance(cond, Threshold):
        state["on"] = _hysteresis(
            state["on"], value, cond.direction, resolve(cond.level, params), resolve(cond.clear, params)
        )
        return True, state["on"], value
    if isinstance(cond, RateOfChange):
        points: list[list[float]] = state.setdefault("pts", [])
        points.append([at_s, value])
        horizon = at_s - cond.window_s
        while points and (points[0][0] < horizon or len(points) > MAX_WINDOW_POINTS):
            points.pop(0)
        slope = slope_per_s(points) if len(points) >= cond.min_points else None
        if slope is None:
            return False, state["on"], None
        rate = slope * cond.per_s
        state["on"] = _hysteresis(
            state["on"], rate, cond.direction, resolve(cond.level, params), resolve(cond.clear, params)
        )
        return True, state["on"], rate
    assert isinstance(cond, Stuck)
    values: list[float] = state.setdefault("vals", [])
    values.append(value)
    del values[: -cond.readings]
    if len(values) < cond.readings:
        return False, state["on"], value
    state["on"] = max(values) - min(values) <= cond.tolerance
    return True, state["on"], value
