"""Derived values of a profile: numbers computed from decoded outputs and installation parameters.

Owns the closed set of derivation kinds a profile's ``derived`` section may name and
their arithmetic: fill percentage from a distance and the container's empty/full
distances, water stage from a distance (sensor above the water), a depth or a
pressure (probe under the water) and a reference level, and
DALI arc level ↔ percent (IEC 62386-102 §9.3, logarithmic curve). Installation
parameters (``empty_distance_mm``, ``reference_level_m``, ...) belong to one device,
not to the model: the caller passes them as a mapping at decode time.

It does not own decoding (``decode.py``) nor where the parameters are stored (the
device registry). A derived value whose source output or parameters are missing is
left out, never guessed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.codec.fields import Output, Spec
from gateway.codec.fields import js_number as _js_number

logger = logging.getLogger(__name__)

# Standard gravity (CGPM 1901) and fresh water density: 1 bar of water column is 10.197 m.
_G_M_S2: Final = 9.80665
_WATER_KG_M3: Final = 1000.0
_PA_PER_BAR: Final = 100_000.0


def fill_percent(distance: float, empty: float, full: float) -> float:
    """Fill level in % from the sensor-to-surface distance; 0 at ``empty``, 100 at ``full``, clamped."""
    if empty == full:
        raise ValueError("empty and full distances are equal")
    percent = (empty - distance) / (empty - full) * 100.0
    return round(min(100.0, max(0.0, percent)), 1)


def stage_from_distance(distance: float, reference: float) -> float:
    """Water stage: the sensor's level (``reference``) minus the distance down to the water."""
    return round(reference - distance, 6)


def stage_from_depth(depth: float, reference: float) -> float:
    """Water stage: the submerged probe's level (``reference``) plus the water depth above it."""
    return round(reference + depth, 6)


def stage_from_pressure(pressure_bar: float, reference_m: float, atmospheric_bar: float = 0.0) -> float:
    """Water stage in m: the probe's level plus the water column above it (hydrostatic, fresh water)."""
    column_m = (pressure_bar - atmospheric_bar) * _PA_PER_BAR / (_WATER_KG_M3 * _G_M_S2)
    return round(reference_m + column_m, 3)


def dali_level_to_percent(level: int) -> float:
    """DALI arc power level 0..254 → light output %: X(n) = 10^((n-1)/(253/3) - 1) (IEC 62386-102 §9.3)."""
    if not 0 <= level <= 254:
        raise ValueError(f"DALI level {level} is outside 0..254 (255 is MASK)")
    if level == 0:
        return 0.0
    return round(10 ** ((level - 1) / (253 / 3) - 1), 3)


def dali_percent_to_level(percent: float) -> int:
    """Light output % → the nearest DALI arc power level (inverse of ``dali_level_to_percent``)."""
    if not 0 <= percent <= 100:
        raise ValueError(f"{percent} % is outside 0..100")
    if percent == 0:
        return 0
    if percent <= 0.1:
        return 1
    return max(1, min(254, round(1 + (math.log10(percent) + 1) * 253 / 3)))


@dataclass(frozen=True, slots=True)
class _Kind:
    function: Callable[..., Any]
    params: tuple[str, ...]
    optional: Mapping[str, float]


KINDS: Final[Mapping[str, _Kind]] = {
    "fill_percent": _Kind(fill_percent, ("empty", "full"), {}),
    "stage_from_distance": _Kind(stage_from_distance, ("reference",), {}),
    "stage_from_depth": _Kind(stage_from_depth, ("reference",), {}),
    "stage_from_pressure": _Kind(stage_from_pressure, ("reference_m",), {"atmospheric_bar": 0.0}),
    "dali_percent": _Kind(dali_level_to_percent, (), {}),
}


@dataclass(frozen=True, slots=True)
class Derivation:
    """One derived output: ``name`` = kind(source value, installation parameters)."""

    output: Output
    kind: str
    source: tuple[str, ...]
    params: Mapping[str, str]
    """Kind's argument → installation parameter name (``empty`` → ``empty_distance_mm``)."""

    def apply(self, data: dict[str, Any], installation: Mapping[str, float]) -> None:
        value: Any = data
        for key in self.source:
            if not isinstance(value, dict) or key not in value:
                return
            value = value[key]
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        kind = KINDS[self.kind]
        args: dict[str, float] = {}
        for role in (*kind.params, *kind.optional):
            param = self.params.get(role)
            if param is not None and param in installation:
                args[role] = float(installation[param])
            elif role in kind.optional:
                args[role] = kind.optional[role]
            else:
                return
        try:
            data[self.output.name] = _js_number(kind.function(value, **args))
        except ValueError as exc:  # e.g. empty == full: a registry mistake, not a payload one
            logger.debug("derived %s not computed: %s", self.output.name, exc)


def compile_derived(spec: Spec, output_names: set[str]) -> tuple[Derivation, ...]:
    """Compile a profile's ``derived`` list; ``output_names`` are the decoder's outputs."""
    derivations: list[Derivation] = []
    for item in spec.items():
        item.mapping(
            required=("name", "kind", "from", "quantity", "unit"), optional=("params", "sdm", "description")
        )
        name = item["name"].as_str()
        if name in output_names:
            raise item["name"].fail(f"{name!r} is already an output of the decoder")
        kind_name = item["kind"].as_choice(KINDS)
        kind = KINDS[kind_name]
        source = tuple(item["from"].as_str().split("."))
        if source[0] not in output_names:
            raise item["from"].fail(f"{source[0]!r} is not an output of this profile's decoder")
        params: dict[str, str] = {}
        params_spec = item.get("params")
        if params_spec is not None:
            params_spec.mapping(optional=(*kind.params, *kind.optional))
            assert isinstance(params_spec.value, dict)  # mapping() checked it
            params = {role: params_spec[role].as_str() for role in params_spec.value}
        missing = [role for role in kind.params if role not in params]
        if missing:
            raise item.fail(f"kind {kind_name} needs params for: {', '.join(missing)}")
        sdm = item.get("sdm")
        description = item.get("description")
        output = Output(
            name=name,
            quantity=item["quantity"].as_str(),
            unit=item["unit"].as_str(),
            sdm=sdm.as_str() if sdm is not None else None,
            description=description.as_str() if description is not None else "",
        )
        output_names.add(name)
        derivations.append(Derivation(output=output, kind=kind_name, source=source, params=params))
    return tuple(derivations)
