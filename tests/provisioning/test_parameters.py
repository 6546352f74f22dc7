"""Installation parameters: what a profile declares, and a device's values checked against it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import load_profile, load_profiles
from gateway.errors import ConfigError
from gateway.provisioning import parameters
from tests.codec.test_profile import BASE, write_profile

SHIPPED = load_profiles(None)
EM310 = SHIPPED.get("milesight/em310-udl")


def messages(params: dict[str, Any], *, complete: bool = True) -> list[str]:
    return [str(problem) for problem in parameters.check(EM310, params, complete=complete)]


def test_a_correct_container_passes() -> None:
    assert messages({"empty_distance_mm": 1800.0, "full_distance_mm": 300.0, "full_pct": 70.0}) == []


def test_swapped_empty_and_full_are_refused() -> None:
    got = messages({"empty_distance_mm": 300.0, "full_distance_mm": 1800.0})
    assert got == [
        "full_distance_mm (1800 mm) must be less than empty_distance_mm (300 mm) (are the two swapped?)"
    ]
    assert messages({"empty_distance_mm": 300.0, "full_distance_mm": 300.0}) == [
        "full_distance_mm (300 mm) must be less than empty_distance_mm (300 mm)"
    ]


def test_a_river_parameter_on_a_container_and_a_typo_are_named_with_a_suggestion() -> None:
    got = messages({"empty_distance_mm": 1800.0, "full_distance_mm": 300.0, "probe_level_cm": 450.0})
    assert got == [
        "milesight/em310-udl has no installation parameter 'probe_level_cm' (it takes: "
        "empty_distance_mm, full_distance_mm, full_pct, report_interval_s)"
    ]
    got = messages({"empty_distance_mm": 1800.0, "full_distnce_mm": 300.0}, complete=False)
    assert got[0].startswith(
        "milesight/em310-udl has no installation parameter 'full_distnce_mm'"
        " (did you mean 'full_distance_mm'?"
    )


def test_out_of_bounds_text_for_a_number_and_missing_required() -> None:
    assert messages({"empty_distance_mm": 1800.0, "full_distance_mm": 300.0, "full_pct": 120.0}) == [
        "parameter full_pct 120 % is outside 1..100 %"
    ]
    assert messages({"empty_distance_mm": "high"}, complete=False) == [
        "parameter empty_distance_mm must be a number, got 'high'"
    ]
    got = messages({})
    assert len(got) == 2 and got[0].startswith(
        "missing required parameter: milesight/em310-udl needs empty_distance_mm (mm, sensor to the bottom"
    )
    assert messages({}, complete=False) == []


def test_a_profile_without_a_parameters_section_is_not_checked() -> None:
    vs121 = SHIPPED.get("milesight/vs121")
    assert vs121.parameters is None
    assert parameters.check(vs121, {"anything": 1.0}, complete=True) == []


def test_every_shipped_derived_parameter_is_declared_numeric() -> None:
    for profile in SHIPPED:
        if profile.parameters is None:
            continue
        numbers = {p.name for p in profile.parameters if p.type == "number"}
        assert set(profile.installation_params) <= numbers, profile.id


def with_parameters(section: Any, derived: bool = False) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["parameters"] = section
    if derived:
        doc["derived"] = [
            {
                "name": "fill_level", "kind": "fill_percent", "from": "distance", "quantity": "fill_level",
                "unit": "%", "params": {"empty": "empty_mm", "full": "full_mm"},
            }
        ]  # fmt: skip
    return doc


def test_the_section_loads_and_is_checked_at_load(tmp_path: Path) -> None:
    good = {"empty_mm": {"unit": "mm", "required": True}, "full_mm": {"unit": "mm", "less_than": "empty_mm"}}
    profile = load_profile(write_profile(tmp_path, with_parameters(good, derived=True)))
    assert profile.parameters is not None and profile.parameters[1].less_than == "empty_mm"
    for section, reason in (
        ({"empty_mm": {"unit": "mm"}}, "reads the installation parameter 'full_mm': declare it here"),
        ({"a": {"less_than": "b"}}, "'b' is not another number parameter of this profile"),
        ({"a": {"type": "text", "min": 1}}, "a text parameter takes no unit, min, max nor less_than"),
        ({"a": {"min": 5, "max": 1}}, "min 5 is greater than max 1"),
        ({"a": {"colour": "red"}}, "colour"),
        ({"Bad": {}}, "must be lowercase snake_case"),
    ):
        with pytest.raises(ConfigError) as info:
            load_profile(write_profile(tmp_path, with_parameters(section, derived="full_mm" in reason)))
        assert reason in str(info.value), section
