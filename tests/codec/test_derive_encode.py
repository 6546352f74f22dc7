"""Derived values (fill level, water stage, DALI level ↔ percent) and downlink encoders.

Sources: DALI logarithmic dimming curve X(n) = 10^((n-1)/(253/3) - 1) % from IEC 62386-102
§9.3 (level 254 = 100 %, level 1 = 0.1 %, level 170 ≈ 10 %); standard gravity 9.80665 m/s²
(CGPM 1901); the Decentlab downlink vectors (00 02 0e 10 48 a4 ...) from TTN lorawan-devices
vendor/decentlab/dl-ctd10-codec.yaml; the EM310-UDL commands from TTN
vendor/milesight-iot/em310-udl-encoder.js. Other values are worked out in the test.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import ProfileStore, default_profiles_dir, load_profile
from gateway.codec.derive import (
    dali_level_to_percent,
    dali_percent_to_level,
    fill_percent,
    stage_from_depth,
    stage_from_distance,
    stage_from_pressure,
)
from gateway.crc import crc16_modbus
from gateway.errors import ConfigError, EncodeError
from tests.codec.test_profile import BASE, write_profile

SHIPPED = ProfileStore.load_dir(default_profiles_dir())


def test_fill_percent_is_linear_and_clamped() -> None:
    assert fill_percent(1200, empty=1200, full=200) == 0.0
    assert fill_percent(200, empty=1200, full=200) == 100.0
    assert fill_percent(700, empty=1200, full=200) == 50.0
    assert fill_percent(100, empty=1200, full=200) == 100.0  # closer than "full": clamped
    assert fill_percent(2000, empty=1200, full=200) == 0.0
    with pytest.raises(ValueError):
        fill_percent(100, empty=500, full=500)


def test_water_stage_from_distance_depth_and_pressure() -> None:
    assert stage_from_distance(1250, reference=5000) == 3750
    assert stage_from_depth(4232, reference=250) == 4482
    # 1 bar of fresh water = 1e5 / (1000 * 9.80665) = 10.197 m
    assert stage_from_pressure(1.0, reference_m=100.0) == 110.197
    assert stage_from_pressure(1.01325, reference_m=0.0, atmospheric_bar=1.01325) == 0.0


def test_dali_curve_and_its_inverse() -> None:
    assert dali_level_to_percent(254) == 100.0
    assert dali_level_to_percent(1) == 0.1
    assert dali_level_to_percent(0) == 0.0
    assert dali_level_to_percent(170) == pytest.approx(10.0, abs=0.1)
    for level in (1, 50, 128, 170, 200, 254):
        assert dali_percent_to_level(dali_level_to_percent(level)) == level
    assert dali_percent_to_level(0) == 0
    with pytest.raises(ValueError):
        dali_level_to_percent(255)
    with pytest.raises(ValueError):
        dali_percent_to_level(101)


def test_derived_values_need_their_params_and_source() -> None:
    em310 = SHIPPED.get("milesight/em310-udl")
    payload = bytes.fromhex("0382c201")  # distance 450 mm
    assert em310.decode(85, payload).data == {"distance": 450}
    assert em310.decode(85, payload, {"empty_distance_mm": 1200}).data == {"distance": 450}
    params = {"empty_distance_mm": 1200, "full_distance_mm": 200}
    assert em310.decode(85, payload, params).data == {"distance": 450, "fill_level": 75}
    assert em310.decode(85, bytes.fromhex("017564"), params).data == {"battery": 100}
    assert em310.installation_params == ("empty_distance_mm", "full_distance_mm")


def test_crc16_modbus_matches_the_decentlab_vectors() -> None:
    assert crc16_modbus(bytes.fromhex("00020e10")) == 0x48A4
    assert crc16_modbus(bytes.fromhex("fefe0000")) == 0x3C50


def test_encoders_check_every_parameter() -> None:
    em310 = SHIPPED.get("milesight/em310-udl")
    assert em310.encode("set_report_interval", {"seconds": 1200}).payload.hex() == "ff03b004"
    assert em310.encode("set_report_interval", {"seconds": 1200.0}).fport == 85
    for command, values, reason in (
        ("set_report_interval", {}, "needs seconds"),
        ("set_report_interval", {"seconds": 0}, "out of range"),
        ("set_report_interval", {"seconds": 1.5}, "must be an integer"),
        ("set_report_interval", {"seconds": "ten"}, "must be a number"),
        ("set_report_interval", {"seconds": 60, "x": 1}, "takes no parameter x"),
        ("set_collection_interval", {"seconds": 61}, "out of range 10..60"),
        ("self_destruct", {}, "has no downlink command"),
    ):
        with pytest.raises(EncodeError, match=reason) as info:
            em310.encode(command, values)
        assert info.value.reason == "bad_command"


def _lamp(tmp_path: Path) -> Any:
    doc = copy.deepcopy(BASE)
    doc["lorawan"]["downlink_fport"] = 10
    doc["downlink"] = {
        "commands": [
            {
                "name": "set_dim",
                "params": [
                    {"name": "percent", "type": "number", "min": 0, "max": 100},
                    {"name": "fade", "type": "enum", "values": {"none": 0, "slow": 7}},
                ],
                "bytes": [
                    {"hex": "01"},
                    {"param": "percent", "as": "uint8", "transform": "dali_percent_to_level"},
                    {"param": "fade", "as": "uint8"},
                ],
            },
            {
                "name": "set_threshold",
                "params": [{"name": "celsius", "type": "number", "min": -40, "max": 85}],
                "bytes": [{"hex": "02"}, {"param": "celsius", "as": "int16", "endian": "le", "mul": 10}],
            },
        ],
        "examples": [
            {
                "source": "made up",
                "command": "set_dim",
                "params": {"percent": 100, "fade": "slow"},
                "payload": "01fe07",
            }
        ],
    }
    return load_profile(write_profile(tmp_path, doc))


def test_enum_transform_and_scaled_parameters(tmp_path: Path) -> None:
    lamp = _lamp(tmp_path)
    assert lamp.check_encode_example(lamp.downlinks.examples[0]) is None
    assert lamp.encode("set_dim", {"percent": 0, "fade": "none"}).payload.hex() == "010000"
    assert lamp.encode("set_threshold", {"celsius": -2.5}).payload.hex() == "02e7ff"
    with pytest.raises(EncodeError, match="must be one of none, slow"):
        lamp.encode("set_dim", {"percent": 10, "fade": "fast"})


def test_malformed_downlink_sections_are_refused(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["downlink"] = {"commands": [{"name": "reboot", "bytes": [{"hex": "ff10ff"}]}]}
    with pytest.raises(ConfigError, match="needs an 'fport'") as info:
        load_profile(write_profile(tmp_path, doc))
    assert info.value.key_path == "downlink"
    doc["downlink"] = {
        "fport": 5,
        "commands": [
            {
                "name": "set_x",
                "params": [{"name": "x", "type": "int"}],
                "bytes": [{"param": "x", "as": "uint16"}],
            }
        ],
    }
    with pytest.raises(ConfigError, match="needs 'endian") as info:
        load_profile(write_profile(tmp_path, doc))
    assert info.value.key_path == "downlink.commands[0].bytes[0]"
    doc["downlink"]["commands"][0]["bytes"] = [{"hex": "01"}]
    with pytest.raises(ConfigError, match="not used in 'bytes'"):
        load_profile(write_profile(tmp_path, doc))
    doc["downlink"]["commands"][0]["bytes"] = [{"param": "x", "as": "uint8"}]
    doc["downlink"]["examples"] = [{"source": "s", "command": "set_x", "params": {"x": 300}, "payload": "2c"}]
    profile = load_profile(write_profile(tmp_path, doc))
    assert "does not fit uint8" in (profile.check_encode_example(profile.downlinks.examples[0]) or "")
