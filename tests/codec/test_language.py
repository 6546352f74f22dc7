"""The decoder language beyond plain TLV: bit fields, floats, BCD, booleans, offsets, hidden
values and key templates, JavaScript-exact ``ops``, and the ``sensor_flags`` and ``fixed`` families.

Sources of the vectors: the Decentlab v2 frame layout and formulas from
decentlab/decentlab-decoders DL-PR26 (Pmin=0.0,Pmax=1.0).js and TTN lorawan-devices
vendor/decentlab/dl-mbx-codec.yaml; the WS302 weighting byte from Milesight-IoT/SensorDecoders
WS_Series/WS302/WS302_Decoder.js; IEEE 754 half/single encodings from Python's struct
module documentation (1.5 = 3e00 half, 3fc00000 single). Other payloads are made up here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import load_profile
from gateway.errors import ConfigError, DecodeError
from tests.codec.test_profile import BASE, write_profile


def profile_with(
    tmp_path: Path, decoder: dict[str, Any], examples: list[dict[str, Any]] | None = None
) -> Any:
    doc = copy.deepcopy(BASE)
    doc["decoder"] = decoder
    doc["examples"] = examples or []
    return load_profile(write_profile(tmp_path, doc))


def fixed(fields: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"family": "fixed", "endian": "be", "fields": fields, **extra}


def test_bit_fields_booleans_and_offsets(tmp_path: Path) -> None:
    profile = profile_with(
        tmp_path,
        fixed(
            [
                {"name": "mode", "type": "uint8", "bits": [4, 4], "quantity": "mode", "unit": "1"},
                {"name": "alarm", "type": "bool", "at": 0, "bits": [0, 1], "quantity": "alarm"},
                {"name": "door", "type": "bool", "at": 0, "bits": [1, 1], "quantity": "door"},
                {"name": "level", "type": "uint16", "bits": [0, 14], "quantity": "v", "unit": "mV"},
            ]
        ),
    )
    data = profile.decode(85, bytes.fromhex("a1 cb20")).data
    assert data == {"mode": 0xA, "alarm": True, "door": False, "level": 0x0B20}


def test_floats_and_bcd(tmp_path: Path) -> None:
    profile = profile_with(
        tmp_path,
        fixed(
            [
                {"name": "half", "type": "float16", "quantity": "x", "unit": "1"},
                {"name": "single", "type": "float32", "endian": "le", "quantity": "x", "unit": "1"},
                {"name": "meter", "type": "bcd", "size": 3, "quantity": "index", "unit": "1"},
            ]
        ),
    )
    assert profile.decode(85, bytes.fromhex("3e00 0000c03f 123456")).data == {
        "half": 1.5,
        "single": 1.5,
        "meter": 123456,
    }
    with pytest.raises(DecodeError) as info:
        profile.decode(85, bytes.fromhex("3e00 0000c03f 12a456"))
    assert info.value.reason == "bad_bcd"


def test_ops_follow_javascript_number_semantics(tmp_path: Path) -> None:
    # DL-PR26 temperature (x - 384) * 0.003125 - 50 and a /10 that is integral in JS ("80", not "80.0").
    profile = profile_with(
        tmp_path,
        fixed(
            [
                {
                    "name": "t",
                    "type": "uint16",
                    "ops": [{"sub": 384}, {"mul": 0.003125}, {"sub": 50}],
                    "quantity": "t",
                    "unit": "Cel",
                },
                {"name": "db", "type": "uint16", "ops": [{"div": 10}], "quantity": "l", "unit": "dB"},
            ]
        ),
    )
    data = profile.decode(85, bytes.fromhex("6017 0320")).data
    assert data == {"t": (24599 - 384) * 0.003125 - 50, "db": 80}
    assert json.dumps(data["db"]) == "80"


def test_hidden_values_build_keys_like_ws302(tmp_path: Path) -> None:
    decoder = {
        "family": "channel_tlv",
        "endian": "le",
        "channels": [
            {
                "channel_id": 5,
                "channel_type": 0x5B,
                "fields": [
                    {
                        "name": "freq",
                        "type": "uint8",
                        "bits": [0, 2],
                        "enum": {0: "Z", 1: "A", 2: "C"},
                        "hidden": True,
                    },
                    {
                        "name": "time",
                        "type": "uint8",
                        "at": 0,
                        "bits": [2, 2],
                        "enum": {1: "F"},
                        "hidden": True,
                    },
                    {
                        "name": "L{freq}{time}",
                        "type": "uint16",
                        "at": 1,
                        "ops": [{"div": 10}],
                        "quantity": "l",
                        "unit": "dB",
                    },
                ],
            }
        ],
    }
    examples = [{"source": "WS302 README", "fport": 85, "payload": "055b053f02", "expected": {"LAF": 57.5}}]
    profile = profile_with(tmp_path, decoder, examples)
    assert profile.check_example(profile.examples[0]) is None
    assert profile.decode(85, bytes.fromhex("055b0e3f02")).data == {"LCunknown": 57.5}


def test_a_placeholder_needs_an_earlier_hidden_field(tmp_path: Path) -> None:
    decoder = fixed([{"name": "L{freq}", "type": "uint8", "quantity": "l", "unit": "dB"}])
    with pytest.raises(ConfigError, match="placeholder") as info:
        profile_with(tmp_path, decoder)
    assert info.value.key_path == "decoder.fields[0]"


def test_fixed_family_lengths_trailing_bytes_and_repeat(tmp_path: Path) -> None:
    field = {"name": "v", "type": "uint16", "quantity": "v", "unit": "1"}
    strict = profile_with(tmp_path, fixed([field], lengths=[2]))
    with pytest.raises(DecodeError) as info:
        strict.decode(85, b"\x00\x01\x02")
    assert info.value.reason == "bad_length"
    loose = profile_with(tmp_path, fixed([field]))
    assert loose.decode(85, b"\x00\x01\x02").warnings == ("1 trailing bytes not decoded",)
    with pytest.raises(DecodeError) as info:
        loose.decode(85, b"\x00")
    assert info.value.reason == "truncated"
    block = {
        "name": "readings",
        "quantity": "readings",
        "fields": [{"name": "c", "type": "uint8", "quantity": "c", "unit": "1"}],
    }
    repeated = profile_with(tmp_path, fixed([field], repeat=block))
    assert repeated.decode(85, bytes.fromhex("0001 0a0b0c")).data == {
        "v": 1,
        "readings": [{"c": 10}, {"c": 11}, {"c": 12}],
    }


SENSOR_FLAGS = {
    "family": "sensor_flags",
    "protocol_version": 2,
    "sensors": [
        {
            "words": 2,
            "values": [
                {
                    "name": "pressure",
                    "word": 0,
                    "ops": [{"sub": 16384}, {"div": 32768}],
                    "display_name": "Pressure",
                    "vendor_unit": "bar",
                    "quantity": "pressure",
                    "unit": "bar",
                },
                {"name": "raw", "word": 1, "quantity": "raw", "unit": "1"},
            ],
        },
        {
            "words": 1,
            "values": [
                {"name": "battery_voltage", "word": 0, "ops": [{"div": 1000}], "quantity": "v", "unit": "V"}
            ],
        },
    ],
}


def test_sensor_flags_selects_the_present_groups(tmp_path: Path) -> None:
    profile = profile_with(tmp_path, SENSOR_FLAGS)
    # DL-PR26 example 1 header and words: 02 0167 0003 3e80 6017 0c7f.
    assert profile.decode(85, bytes.fromhex("02016700033e8060170c7f")).data == {
        "protocol_version": 2,
        "device_id": 359,
        "pressure": {"displayName": "Pressure", "value": -0.01171875, "unit": "bar"},
        "raw": 0x6017,
        "battery_voltage": 3.199,
    }
    assert profile.decode(85, bytes.fromhex("02016700020c7f")).data == {
        "protocol_version": 2,
        "device_id": 359,
        "battery_voltage": 3.199,
    }


def test_sensor_flags_errors_and_unknown_groups(tmp_path: Path) -> None:
    profile = profile_with(tmp_path, SENSOR_FLAGS)
    for payload, reason in (
        ("0301670002 0c7f", "bad_version"),
        ("020167", "truncated"),
        ("0201670003 3e80", "truncated"),
    ):
        with pytest.raises(DecodeError) as info:
            profile.decode(85, bytes.fromhex(payload))
        assert info.value.reason == reason
    decoded = profile.decode(85, bytes.fromhex("0201670006 0c7f 0001"))
    assert decoded.data["battery_voltage"] == 3.199
    assert "does not know" in decoded.warnings[0]


@pytest.mark.parametrize(
    ("change", "key_path", "reason"),
    [
        ({"bits": [6, 4]}, "decoder.fields[0].bits[1]", "out of range"),
        ({"ops": [{"pow": 2}]}, "decoder.fields[0].ops[0]", "unknown value 'pow'"),
        ({"ops": [{"div": 0}]}, "decoder.fields[0].ops[0].div", "must not be 0"),
        ({"ops": [{"div": 2}], "scale": 2}, "decoder.fields[0].scale", "not allowed together with 'ops'"),
        ({"type": "float32", "enum": {1: "x"}}, "decoder.fields[0].enum", "not allowed with type float32"),
        ({"type": "bcd"}, "decoder.fields[0]", "needs a 'size'"),
        ({"name": "9lives"}, "decoder.fields[0].name", "must not start with a digit"),
    ],
)
def test_bad_field_options_name_their_key(
    tmp_path: Path, change: dict[str, Any], key_path: str, reason: str
) -> None:
    field = {"name": "v", "type": "uint8", "quantity": "v", "unit": "1", **change}
    with pytest.raises(ConfigError) as info:
        profile_with(tmp_path, fixed([field]))
    assert info.value.key_path == key_path
    assert reason in str(info.value)


def test_one_byte_type_headers_like_elsys(tmp_path: Path) -> None:
    # elsys.js (TTN vendor/elsys): type 0x01 temperature int16 BE / 10, type 0x15 peak and average.
    decoder = {
        "family": "channel_tlv",
        "header": "type",
        "endian": "be",
        "channels": [
            {
                "channel_type": 1,
                "name": "temperature",
                "type": "int16",
                "ops": [{"div": 10}],
                "quantity": "t",
                "unit": "Cel",
            },
            {
                "channel_type": 0x15,
                "fields": [
                    {"name": "soundPeak", "type": "uint8", "quantity": "l", "unit": "dB"},
                    {"name": "soundAvg", "type": "uint8", "quantity": "l", "unit": "dB"},
                ],
            },
        ],
    }
    profile = profile_with(tmp_path, decoder)
    assert profile.decode(85, bytes.fromhex("0100e2 150101")).data == {
        "temperature": 22.6,
        "soundPeak": 1,
        "soundAvg": 1,
    }
    decoded = profile.decode(85, bytes.fromhex("0100e2 3d00"))
    assert decoded.data == {"temperature": 22.6}
    assert decoded.warnings == ("unknown type 3d at byte 3: last 2 bytes not decoded",)
    with pytest.raises(DecodeError) as info:
        profile.decode(85, bytes.fromhex("0100"))
    assert info.value.reason == "truncated"
    decoder["channels"][0]["channel_id"] = 1
    with pytest.raises(ConfigError, match="not allowed with 'header: type'") as error:
        profile_with(tmp_path, decoder)
    assert error.value.key_path == "decoder.channels[0].channel_id"
