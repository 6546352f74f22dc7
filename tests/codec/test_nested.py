"""The nested and variable layouts (``gateway/codec/nested.py``) and the field options added with
them: ``object``, ``list``, ``tlv``, ``if``, ``optional``, ``sentinels``, ``flags``, ``{round: N}``,
the NAS formats and the encoder's ``pack``.

Sources of the vectors: the NAS UL20xx frames and outputs are nasys/nas-codecs
test/ul20xx_1_1_x_uplink_decoder.test.js ('status from DS + unknown sensor source', 'usage from DS');
the formulas are src/ul20xx_decoder.js (calcLightLx, decodeUnixEpoch, intToHexStr). JavaScript
Math.round ties go to +infinity (ECMA-262 §21.3.2.28). Other payloads are made up here and their
expected values computed by hand from the byte layouts.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec import FORMATS, ProfileStore, default_profiles_dir, load_profile
from gateway.codec.fields import js_round, js_to_fixed
from gateway.errors import ConfigError, DecodeError, EncodeError
from tests.codec.test_profile import BASE, write_profile

STORE = ProfileStore.load_dir(default_profiles_dir())


def profile_with(tmp_path: Path, decoder: dict[str, Any], **top: Any) -> Any:
    doc = copy.deepcopy(BASE)
    doc["decoder"] = decoder
    doc["examples"] = []
    doc.update(top)
    return load_profile(write_profile(tmp_path, doc))


def fixed(fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {"family": "fixed", "endian": "le", "fields": fields}


def flag(name: str, bit: int, *, at: int | None = 0) -> dict[str, Any]:
    field: dict[str, Any] = {"name": name, "type": "bool", "bits": [bit, 1], "hidden": True}
    if at is not None:
        field["at"] = at
    return field


# ------------------------------------------------------------------ structures


def test_object_is_a_sub_record_with_its_own_offsets(tmp_path: Path) -> None:
    profile = profile_with(
        tmp_path,
        fixed(
            [
                {"name": "kind", "type": "uint8", "quantity": "k", "unit": "1"},
                {
                    "name": "state",
                    "type": "object",
                    "quantity": "state",
                    "fields": [
                        {"name": "a", "type": "bool", "bits": [0, 1], "quantity": "x"},
                        {"name": "b", "type": "bool", "at": 0, "bits": [7, 1], "quantity": "x"},
                        {"name": "c", "type": "bool", "at": 1, "bits": [1, 1], "quantity": "x"},
                    ],
                },
                {"name": "after", "type": "uint16", "quantity": "v", "unit": "1"},
            ]
        ),
    )
    # `at` inside the object counts from its first byte (payload byte 1); the cursor then follows it.
    assert profile.decode(85, bytes.fromhex("07 81 02 3412")).data == {
        "kind": 7,
        "state": {"a": True, "b": True, "c": True},
        "after": 0x1234,
    }
    (state,) = [output for output in profile.outputs if output.name == "state"]
    assert [child.name for child in state.fields] == ["a", "b", "c"]


def test_list_until_the_end_or_by_count(tmp_path: Path) -> None:
    item = [
        {"name": "id", "type": "uint8", "quantity": "id", "unit": "1"},
        {"name": "v", "type": "int16", "quantity": "v", "unit": "1"},
    ]
    until_end = profile_with(
        tmp_path, fixed([{"name": "items", "type": "list", "quantity": "items", "fields": item}])
    )
    assert until_end.decode(85, bytes.fromhex("01 ffff 02 0200")).data == {
        "items": [{"id": 1, "v": -1}, {"id": 2, "v": 2}]
    }
    assert until_end.decode(85, b"").data == {"items": []}
    with pytest.raises(DecodeError) as info:
        until_end.decode(85, bytes.fromhex("01 ffff 02 02"))  # the second item is cut short
    assert info.value.reason == "truncated"

    counted = profile_with(
        tmp_path / "b",
        fixed(
            [
                {"name": "n", "type": "uint8", "hidden": True},
                {"name": "items", "type": "list", "count": "n", "quantity": "items", "fields": item},
                {"name": "tail", "type": "uint8", "quantity": "t", "unit": "1"},
            ]
        ),
    )
    assert counted.decode(85, bytes.fromhex("01 05 0a00 09")).data == {
        "items": [{"id": 5, "v": 10}],
        "tail": 9,
    }


def test_tlv_region_is_framed_by_its_length_and_skips_an_unknown_type(tmp_path: Path) -> None:
    profile = profile_with(
        tmp_path,
        fixed(
            [
                {"name": "len", "type": "uint8", "hidden": True},
                {
                    "name": "sensors",
                    "type": "tlv",
                    "length": "len",
                    "quantity": "sensors",
                    "channels": [
                        {"channel_type": 1, "name": "t", "type": "int8", "quantity": "t", "unit": "Cel"},
                        {
                            "channel_type": 2,
                            "fields": [
                                {"name": "x", "type": "uint8", "quantity": "x", "unit": "1"},
                                {"name": "y", "type": "uint8", "quantity": "y", "unit": "1"},
                            ],
                        },
                    ],
                },
                {"name": "rest", "type": "uint8", "quantity": "r", "unit": "1"},
            ]
        ),
    )
    assert profile.decode(85, bytes.fromhex("05 01fe 020304 63")).data == {
        "sensors": {"t": -2, "x": 3, "y": 4},
        "rest": 0x63,
    }
    skipped = profile.decode(85, bytes.fromhex("05 01fe 09aaaa 63"))
    assert skipped.data == {"sensors": {"t": -2}, "rest": 0x63}
    assert skipped.warnings == ("sensors: unknown type 09 at byte 3, 3 bytes skipped",)
    with pytest.raises(DecodeError) as info:
        profile.decode(85, bytes.fromhex("09 01fe"))  # announces more bytes than the payload has
    assert info.value.reason == "truncated"


def test_if_and_optional_fields(tmp_path: Path) -> None:
    profile = profile_with(
        tmp_path,
        fixed(
            [
                flag("has_a", 0, at=None),
                flag("has_b", 1),
                {"name": "a", "type": "uint16", "if": "has_a", "quantity": "a", "unit": "1"},
                {"name": "b", "type": "uint8", "if": "has_b", "quantity": "b", "unit": "1"},
                {"name": "extra", "type": "uint8", "optional": True, "quantity": "e", "unit": "1"},
            ]
        ),
    )
    # Absent fields without `at` take no bytes: the flags decide where the next value starts.
    assert profile.decode(85, bytes.fromhex("03 0100 02")).data == {"a": 1, "b": 2}
    assert profile.decode(85, bytes.fromhex("02 07")).data == {"b": 7}
    assert profile.decode(85, bytes.fromhex("00 09")).data == {"extra": 9}
    assert profile.decode(85, bytes.fromhex("00")).data == {}
    with pytest.raises(DecodeError) as info:
        profile.decode(85, bytes.fromhex("01 01"))  # a announced, one byte of two
    assert info.value.reason == "truncated"


def test_conditional_field_with_at_keeps_its_place_in_a_tlv_channel(tmp_path: Path) -> None:
    # Milesight WS558 0x32 shape: states at byte 1, printed only where the mask (byte 0) says so.
    profile = profile_with(
        tmp_path,
        {
            "family": "channel_tlv",
            "endian": "le",
            "channels": [
                {
                    "channel_id": 0xFF,
                    "channel_type": 0x32,
                    "fields": [
                        flag("m1", 0),
                        flag("m2", 1),
                        {"name": "s1", "type": "bool", "at": 1, "bits": [0, 1], "if": "m1", "quantity": "s"},
                        {"name": "s2", "type": "bool", "at": 1, "bits": [1, 1], "if": "m2", "quantity": "s"},
                        {"name": "n", "type": "uint8", "quantity": "n", "unit": "1"},
                    ],
                },
                {
                    "channel_id": 1,
                    "channel_type": 0x75,
                    "name": "battery",
                    "type": "uint8",
                    "quantity": "battery_level",
                    "unit": "%",
                },
            ],
        },
    )
    # The record is 3 bytes whatever the mask says, and `n` follows s2's place.
    assert profile.decode(85, bytes.fromhex("ff32 02 03 07 017564")).data == {
        "s2": True,
        "n": 7,
        "battery": 100,
    }
    assert profile.decode(85, bytes.fromhex("ff32 03 01 07")).data == {"s1": True, "s2": False, "n": 7}


# --------------------------------------------------------------- field options


def test_sentinels_keep_other_values_numbers(tmp_path: Path) -> None:
    profile = profile_with(
        tmp_path,
        fixed(
            [
                {
                    "name": "level",
                    "type": "uint8",
                    "sentinels": {0xFF: "resume"},
                    "quantity": "l",
                    "unit": "%",
                },
                {
                    "name": "pf",
                    "type": "uint8",
                    "sentinels": {0xFF: "unknown"},
                    "ops": [{"div": 100}],
                    "quantity": "pf",
                    "unit": "1",
                },
                {"name": "tilt", "type": "uint8", "sentinels": {0xFF: None}, "quantity": "t", "unit": "deg"},
                {
                    "name": "fault",
                    "type": "bool",
                    "bits": [1, 1],
                    "sentinels": {0xFF: False},
                    "quantity": "f",
                },
            ]
        ),
    )
    assert profile.decode(85, bytes.fromhex("32 5d 10 02")).data == {
        "level": 50,
        "pf": 0.93,
        "tilt": 16,
        "fault": True,
    }
    # A bool's sentinel matches its whole byte: 0xFF is "no answer", not "every bit set".
    assert profile.decode(85, bytes.fromhex("ff ff ff ff")).data == {
        "level": "resume",
        "pf": "unknown",
        "tilt": None,
        "fault": False,
    }


def test_flags_list_the_names_of_set_bits(tmp_path: Path) -> None:
    profile = profile_with(
        tmp_path,
        fixed([{"name": "why", "type": "uint8", "flags": {0: "a", 2: "c", 7: "h"}, "quantity": "reason"}]),
    )
    assert profile.decode(85, bytes.fromhex("85")).data == {"why": ["a", "c", "h"]}
    assert profile.decode(85, bytes.fromhex("02")).data == {"why": []}


def test_round_op_is_javascript_math_round(tmp_path: Path) -> None:
    assert [js_round(x) for x in (2.5, -2.5, 0.49999999999999994, -0.5, 13279.2)] == [3, -2, 0, 0, 13279]
    profile = profile_with(
        tmp_path,
        fixed(
            [
                {
                    "name": "h",
                    "type": "uint32",
                    "ops": [{"div": 3600}, {"round": 1}],
                    "quantity": "t",
                    "unit": "h",
                }
            ]
        ),
    )
    # nas-codecs lamp_on_time__h: Math.round((s / 3600) * 10) / 10; 5000 s = 1.3888.. h -> 1.4.
    assert profile.decode(85, (5000).to_bytes(4, "little")).data == {"h": 1.4}
    assert profile.decode(85, (7200).to_bytes(4, "little")).data == {"h": 2}


def test_nas_formats() -> None:
    light = FORMATS["light_lx_log_le"].apply
    assert light(bytes.fromhex("9455")) == "299.9"  # 'status from DS' light_sensor__lx
    assert light(bytes.fromhex("ffff")) == "unavailable"
    assert light(bytes.fromhex("0000")) == "0.001"  # 10^0 / 1000, 3 decimals below 1 lx
    assert FORMATS["unix_time_le_iso8601"].apply(bytes.fromhex("f37f205e")) == "2020-01-16T15:23:31.000Z"
    # decodeUnixEpoch: 1420070400 (0x54a48e00, 2015-01-01) is the first valid second.
    assert FORMATS["unix_time_le_iso8601"].apply(bytes.fromhex("008ea454")) == "2015-01-01T00:00:00.000Z"
    assert FORMATS["unix_time_le_iso8601"].apply(bytes.fromhex("ff8da454")) == "invalid_timestamp"
    assert FORMATS["uint32_le_hex_upper"].apply(bytes.fromhex("0d008350")) == "5083000D"
    # Milesight readD2DCommand: ("0" + b[1].toString(16)).slice(-2) + ("0" + b[0].toString(16)).slice(-2).
    assert FORMATS["uint16_le_hex"].apply(bytes.fromhex("10ab")) == "ab10"
    assert js_to_fixed(1.005, 2) == "1.00"  # the double below 1.005, as JavaScript prints it
    assert js_to_fixed(0.125, 2) == "0.13"  # an exact tie rounds away from zero


# ------------------------------------------------------------- shipped profile


def test_ul20xx_status_with_an_unknown_sensor_source_keeps_the_rest() -> None:
    # nas-codecs 'status from DS + unknown sensor source': type 0x21 is skipped with its region,
    # the dimming sources after it still decode (the vendor reports "unsupported_sensor_source").
    decoded = STORE.get("nasys/ul20xx").decode(
        23, bytes.fromhex("01 F37F205E 82C4 32 09 16 20 09 01 D2 02 9455 04 01 2100 FE 51 19 00 12 3F 19 00")
    )
    assert decoded.data["sensor_source"] == {
        "ldr_input": 210,
        "light_sensor__lx": "299.9",
        "dig_input_1_on": True,
    }
    assert decoded.data["status"]["lumalink_connected_after_boot"] is True
    assert [source["reason"] for source in decoded.data["dimming_source"]] == [
        "calendar_dusk_step_1",
        "calendar_dawn_step_15",
    ]
    assert len(decoded.warnings) == 1 and "unknown type 21" in decoded.warnings[0]


# Every header the UL20xx profile knows, by fPort, so random bodies reach the nested readers.
_UL20XX_HEADERS = [
    (23, b"\x01"),
    (23, b"\x00"),
    (26, b"\x00"),
    (99, b"\x00"),
    (61, b"\x83"),
    (60, b"\x01"),
    (60, b"\x05"),
]


@settings(max_examples=1500, deadline=None)
@given(header=st.sampled_from(_UL20XX_HEADERS), body=st.binary(max_size=48))
def test_ul20xx_random_bodies_raise_only_decode_error(header: tuple[int, bytes], body: bytes) -> None:
    fport, first = header
    try:
        decoded = STORE.get("nasys/ul20xx").decode(fport, first + body)
    except DecodeError as exc:
        assert exc.reason in {"truncated", "unknown_layout", "bad_layout"}
        return
    json.dumps(decoded.data, allow_nan=False)
    assert all(isinstance(warning, str) for warning in decoded.warnings)


def test_ul20xx_usage_with_a_cut_value_is_truncated() -> None:
    with pytest.raises(DecodeError) as info:
        STORE.get("nasys/ul20xx").decode(26, bytes.fromhex("00 FF 80 D0EF2F"))
    assert info.value.reason == "truncated"


def test_readme_nested_example_decodes_as_the_readme_says(tmp_path: Path) -> None:
    text = (default_profiles_dir() / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Nested and variable layouts") :]
    snippet = section[
        section.index("```yaml") + len("```yaml") : section.index("```", section.index("```yaml") + 7)
    ]
    doc = copy.deepcopy(BASE)
    doc["decoder"] = yaml.safe_load(snippet)["decoder"]
    doc["examples"] = []
    doc["lorawan"]["uplink_fports"] = [23, 26]
    profile = load_profile(write_profile(tmp_path, doc))
    assert profile.decode(26, bytes.fromhex("00 12 03 47940300 2a00")).data == {
        "packet_type": "usage_packet",
        "consumption": [{"address": "dali_single_9", "active_energy__Wh": 234567, "active_power__W": 42}],
    }


# ---------------------------------------------------------- malformed profiles

_ITEM = [{"name": "x", "type": "uint8", "quantity": "x", "unit": "1"}]


@pytest.mark.parametrize(
    ("fields", "key_path", "reason"),
    [
        (
            [{"name": "a", "type": "uint8", "if": "later", "quantity": "a", "unit": "1"}],
            "decoder.fields[0].if",
            "'later' must name an earlier field of this record",
        ),
        (
            [{"name": "l", "type": "list", "count": "nope", "quantity": "l", "fields": _ITEM}],
            "decoder.fields[0].count",
            "'nope' must name an earlier field of this record",
        ),
        (
            [{"name": "o", "type": "object", "quantity": "o", "fields": []}],
            "decoder.fields[0].fields",
            "must list at least one field",
        ),
        (
            [{"name": "o", "type": "object", "quantity": "o", "fields": _ITEM, "size": 2}],
            "decoder.fields[0].size",
            "unknown key",
        ),
        (
            [
                {
                    "name": "t",
                    "type": "tlv",
                    "quantity": "t",
                    "channels": [
                        {"channel_type": 1, **_ITEM[0]},
                        {"channel_type": 1, "name": "y", "type": "uint8", "quantity": "y", "unit": "1"},
                    ],
                }
            ],
            "decoder.fields[0].channels[1].channel_type",
            "duplicate channel_type 01",
        ),
        (
            [{"name": "a", "type": "uint8", "sentinels": {256: "x"}, "quantity": "a", "unit": "1"}],
            "decoder.fields[0].sentinels.256",
            "256 is out of range 0..255",
        ),
        (
            [{"name": "a", "type": "uint8", "bits": [0, 3], "flags": {3: "d"}, "quantity": "a"}],
            "decoder.fields[0].flags.3",
            "3 is out of range 0..2",
        ),
        (
            [{"name": "a", "type": "uint8", "flags": {0: "x"}, "enum": {0: "y"}, "quantity": "a"}],
            "decoder.fields[0].enum",
            "not allowed together with 'flags'",
        ),
        (
            [{"name": "a", "type": "uint8", "ops": [{"round": 0.5}], "quantity": "a", "unit": "1"}],
            "decoder.fields[0].ops[0].round",
            "must be an integer",
        ),
        (
            [{"name": "a", "type": "uint8", "optional": "yes", "quantity": "a", "unit": "1"}],
            "decoder.fields[0].optional",
            "must be true or false",
        ),
    ],
)
def test_malformed_nested_fields_name_file_path_and_reason(
    tmp_path: Path, fields: list[dict[str, Any]], key_path: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        profile_with(tmp_path, fixed(fields))
    assert info.value.key_path == key_path
    assert reason in info.value.reason
    assert info.value.file is not None and info.value.file.endswith("acme/bin-1.yaml")


def test_channel_tlv_records_may_be_variable_size(tmp_path: Path) -> None:
    # Refused before issue 18's fourth pass; now such a record ends where its fields end and
    # the next header follows (device_profiles/README.md, "Nested and variable layouts").
    channel = {
        "channel_id": 9,
        "channel_type": 9,
        "fields": [flag("m", 0), {"name": "a", "type": "uint8", "if": "m", "quantity": "a", "unit": "1"}],
    }
    battery = {
        "channel_id": 1,
        "channel_type": 0x75,
        "name": "battery",
        "type": "uint8",
        "quantity": "battery_level",
        "unit": "%",
    }
    profile = profile_with(
        tmp_path, {"family": "channel_tlv", "endian": "le", "channels": [channel, battery]}
    )
    assert profile.decode(85, bytes.fromhex("0909 01 05 0175 5c")).data == {"a": 5, "battery": 92}
    assert profile.decode(85, bytes.fromhex("0909 00 0175 5c")).data == {"battery": 92}
    with pytest.raises(DecodeError):
        profile.decode(85, bytes.fromhex("0909 01"))


# ------------------------------------------------------------------- encoder


def _with_command(tmp_path: Path, command: dict[str, Any]) -> Any:
    doc = copy.deepcopy(BASE)
    doc["downlink"] = {"fport": 85, "commands": [command]}
    return load_profile(write_profile(tmp_path, doc))


_PARAMS = [
    {"name": "mode", "type": "enum", "values": {"off": 0, "below": 1, "outside": 4}},
    {"name": "on", "type": "int", "min": 0, "max": 3},
]


def test_pack_puts_parameters_and_constants_in_bit_fields(tmp_path: Path) -> None:
    profile = _with_command(
        tmp_path,
        {
            "name": "cfg",
            "params": _PARAMS,
            "bytes": [
                {"hex": "ff06"},
                {
                    "pack": [
                        {"param": "mode", "bits": [0, 3]},
                        {"value": 1, "bits": [3, 1]},
                        {"param": "on", "bits": [7, 1]},
                    ],
                    "as": "uint8",
                },
            ],
        },
    )
    # EM310-UDL setDistanceAlarmConfig byte: outside (4) | 1 << 3 | 1 << 7 = 0x8c.
    assert profile.encode("cfg", {"mode": "outside", "on": 1}).payload.hex() == "ff068c"
    with pytest.raises(EncodeError, match="does not fit 1 bits"):
        profile.encode("cfg", {"mode": "below", "on": 2})


@pytest.mark.parametrize(
    ("pack", "key_path", "reason"),
    [
        (
            [{"param": "mode", "bits": [0, 3]}, {"value": 1, "bits": [2, 1]}],
            "downlink.commands[0].bytes[0].pack[1].bits",
            "overlaps",
        ),
        (
            [{"value": 4, "bits": [0, 2]}],
            "downlink.commands[0].bytes[0].pack[0].value",
            "4 is out of range 0..3",
        ),
        (
            [{"param": "mode", "value": 1, "bits": [0, 3]}],
            "downlink.commands[0].bytes[0].pack[0]",
            "exactly one of",
        ),
    ],
)
def test_malformed_pack_names_path_and_reason(
    tmp_path: Path, pack: list[dict[str, Any]], key_path: str, reason: str
) -> None:
    command = {"name": "cfg", "params": _PARAMS[:1], "bytes": [{"pack": pack, "as": "uint8"}]}
    with pytest.raises(ConfigError) as info:
        _with_command(tmp_path, command)
    assert info.value.key_path == key_path
    assert reason in info.value.reason
