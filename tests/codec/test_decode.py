"""Decoding payloads: the channel_tlv layout, field types, formats and the error policy.

Vectors: the EM310-UDL frames follow Milesight-IoT/SensorDecoders
em-series/em310-udl/README.md (example ``01755C 03824408 040001``) and
em310-udl-decoder.js (read* functions, ``else { break; }`` on an unknown channel).
The field-type vectors are computed by hand from the byte layouts (little-/big-endian
two's complement); the version strings follow the vendor's read*Version functions.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec import FORMATS, Decoded, ProfileStore, default_profiles_dir
from gateway.codec.decode import compile_decoder
from gateway.codec.fields import Spec
from gateway.errors import ConfigError, DecodeError

EM310 = ProfileStore.load_dir(default_profiles_dir()).get("milesight/em310-udl")
FPORT = 85


def tlv(*channels: dict[str, Any], endian: str = "le") -> Any:
    """Compile a channel_tlv decoder from Python dicts (the YAML tree a profile would hold)."""
    spec = Spec({"family": "channel_tlv", "endian": endian, "channels": list(channels)}, file="<test>")
    return compile_decoder(spec).decode


def one(channel_type: int, **field: Any) -> Any:
    """A decoder with a single channel 0x01/channel_type holding one field named ``v``."""
    field.setdefault("quantity", "q")
    if "unit" not in field and field.get("type", "").lstrip("u").startswith("int") and "enum" not in field:
        field["unit"] = "1"
    return tlv({"channel_id": 0x01, "channel_type": channel_type, "name": "v", **field})


# ------------------------------------------------------------------ the layout


def test_vendor_readme_example() -> None:
    decoded = EM310.decode(FPORT, bytes.fromhex("01755C03824408040001"))
    assert decoded == Decoded({"battery": 92, "distance": 2116, "position": "tilt"}, ())


def test_empty_payload_gives_empty_data() -> None:
    assert EM310.decode(FPORT, b"") == Decoded({}, ())


@pytest.mark.parametrize(
    "payload_hex",
    [
        "038244",  # distance needs 2 bytes, 1 left
        "0382",  # header without data
        "01755c 03",  # a dangling channel id
        "ff16 6136d192763300",  # serial number: 8 bytes needed, 7 left
        "01755c 038244",  # a good channel first does not save the frame
    ],
)
def test_truncated_field_raises_decode_error(payload_hex: str) -> None:
    with pytest.raises(DecodeError) as info:
        EM310.decode(FPORT, bytes.fromhex(payload_hex))
    assert info.value.reason == "truncated"


def test_unknown_channel_warns_and_keeps_what_came_before() -> None:
    decoded = EM310.decode(FPORT, bytes.fromhex("01755c 0567aabb 03824408"))
    assert decoded.data == {"battery": 92}
    assert len(decoded.warnings) == 1
    assert "unknown channel 05 67 at byte 3" in decoded.warnings[0]
    assert "last 8 bytes" in decoded.warnings[0]


def test_distance_alarm_config_answer_decodes_to_the_vendor_object() -> None:
    # ff 06: condition byte + 4 x int16/uint16 (EM310-UDL_Decoder.js handle_downlink_response 0x06):
    # 0x0a = condition 2 (above) | bit 3, release bit 7 clear; 300, 1000, 0, 0.
    decoded = EM310.decode(FPORT, bytes.fromhex("017564 ff060a 2c01 e803 0000 0000"))
    assert decoded.data == {
        "battery": 100,
        "distance_alarm_config": {
            "condition": "above",
            "alarm_release_enable": "disable",
            "threshold_min": 300,
            "threshold_max": 1000,
            "lock_time": 0,
            "continue_time": 0,
        },
    }
    assert decoded.warnings == ()
    # The answer to the encoder's own bytes decodes back to its values (x 10 as the vendor prints).
    encoded = EM310.encode(
        "set_distance_alarm_config",
        {
            "condition": "outside",
            "threshold_min": -5,
            "threshold_max": 20,
            "lock_time": 3,
            "continue_time": 4,
            "alarm_release_enable": "enable",
        },
    ).payload
    assert encoded.hex() == "ff068cceffc80003000400"
    config = EM310.decode(FPORT, encoded).data["distance_alarm_config"]
    assert config["condition"] == "outside" and config["threshold_min"] == -50


def test_unexpected_fport_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        EM310.decode(1, bytes.fromhex("01755c"))
    assert info.value.reason == "unexpected_fport"


def test_repeated_channel_last_value_wins_like_the_vendor() -> None:
    assert EM310.decode(FPORT, bytes.fromhex("017510 017520")).data == {"battery": 0x20}


def test_channel_id_list_shares_one_layout() -> None:
    assert EM310.decode(FPORT, bytes.fromhex("fe023c00")).data == {"collection_interval": 60}
    assert EM310.decode(FPORT, bytes.fromhex("ff023c00")).data == {"collection_interval": 60}


def test_payload_may_be_any_bytes_like() -> None:
    raw = bytes.fromhex("01755C03824408040001")
    assert EM310.decode(FPORT, bytearray(raw)).data == EM310.decode(FPORT, raw).data  # type: ignore[arg-type]
    assert EM310.decode(FPORT, memoryview(raw)).data == EM310.decode(FPORT, raw).data  # type: ignore[arg-type]


def test_multi_field_channel() -> None:
    # EM400-MUD style alarm frame: int16 temperature /10 then a status byte (`83 67 e800 01` → 23.2 °C).
    decode = tlv(
        {
            "channel_id": 0x83,
            "channel_type": 0x67,
            "fields": [
                {
                    "name": "temperature",
                    "type": "int16",
                    "scale": 0.1,
                    "quantity": "temperature",
                    "unit": "Cel",
                },
                {
                    "name": "temperature_alarm",
                    "type": "uint8",
                    "enum": {1: "threshold_alarm"},
                    "quantity": "alarm",
                },
            ],
        }
    )
    assert decode(bytes.fromhex("8367e80001")).data == {
        "temperature": 23.2,
        "temperature_alarm": "threshold_alarm",
    }
    with pytest.raises(DecodeError):
        decode(bytes.fromhex("8367e800"))


def test_multi_field_channel_rejects_duplicate_names() -> None:
    field = {"name": "a", "type": "uint8", "quantity": "q", "unit": "1"}
    with pytest.raises(ConfigError, match="duplicate output 'a'") as info:
        tlv({"channel_id": 1, "channel_type": 2, "fields": [field, field]})
    assert info.value.key_path == "channels[0].fields[1].name"


# ------------------------------------------------------------------ field types


@pytest.mark.parametrize(
    ("field", "data_hex", "value"),
    [
        ({"type": "uint8"}, "ff", 255),
        ({"type": "int8"}, "ff", -1),
        ({"type": "int8"}, "80", -128),
        ({"type": "uint16"}, "4408", 2116),
        ({"type": "uint16", "endian": "be"}, "0844", 2116),
        ({"type": "int16"}, "18fc", -1000),
        ({"type": "int16", "endian": "be"}, "fc18", -1000),
        ({"type": "uint32"}, "78563412", 0x12345678),
        ({"type": "uint32", "endian": "be"}, "12345678", 0x12345678),
        ({"type": "int32"}, "feffffff", -2),
        ({"type": "int32", "endian": "be"}, "80000000", -(2**31)),
        ({"type": "int16", "scale": 0.1}, "e800", 23.2),
        ({"type": "int16", "scale": 0.1}, "0300", 0.3),  # not 0.30000000000000004
        ({"type": "int16", "scale": 0.1}, "ffff", -0.1),
        ({"type": "uint16", "scale": 0.01}, "3930", 123.45),
        ({"type": "uint8", "offset": -40}, "3c", 20),  # integer scale and offset stay integers
        ({"type": "uint8", "scale": 2, "offset": 1}, "03", 7),
        ({"type": "uint8", "scale": 0.5, "offset": -20.25}, "03", -18.75),
        ({"type": "uint8", "enum": {0: "off", 1: "on"}}, "01", "on"),
        ({"type": "uint8", "enum": {0: "off", 1: "on"}}, "07", "unknown"),
        ({"type": "uint8", "enum": {0: "off"}, "enum_default": "invalid"}, "07", "invalid"),
        ({"type": "int8", "enum": {-1: "error", 0: "ok"}}, "ff", "error"),
        ({"type": "hex", "size": 4}, "DEADBEEF", "deadbeef"),
        ({"type": "constant", "size": 1, "value": "reset"}, "ff", "reset"),
        ({"type": "constant", "size": 2, "value": 1}, "0000", 1),
        ({"type": "bytes", "format": "version_nibbles"}, "13", "v1.3"),
    ],
)
def test_field_types(field: dict[str, Any], data_hex: str, value: Any) -> None:
    decode = one(0x42, **field)
    decoded = decode(bytes.fromhex("0142" + data_hex))
    assert decoded.data == {"v": value}
    assert type(decoded.data["v"]) is type(value)
    with pytest.raises(DecodeError):
        decode(bytes.fromhex("0142" + data_hex)[:-1])


@pytest.mark.parametrize(
    ("name", "raw_hex", "text"),
    [
        # Milesight readProtocolVersion: high nibble . low nibble.
        ("version_nibbles", "01", "v0.1"),
        ("version_nibbles", "a5", "v10.5"),
        # readFirmwareVersion: both bytes in hex (README "0110 -> v1.10").
        ("version_hex_bytes", "0110", "v1.10"),
        ("version_hex_bytes", "0a1f", "va.1f"),
        # readHardwareVersion: major in hex, minor = high nibble (README "0110 -> v1.1").
        ("version_hex_major_hi_nibble", "0110", "v1.1"),
        ("version_hex_major_hi_nibble", "10f0", "v10.15"),
        # readTslVersion: both bytes in decimal.
        ("version_bytes", "0110", "v1.16"),
    ],
)
def test_formats(name: str, raw_hex: str, text: str) -> None:
    fmt = FORMATS[name]
    assert fmt.size == len(bytes.fromhex(raw_hex))
    assert fmt.apply(bytes.fromhex(raw_hex)) == text


def test_format_size_must_agree_with_explicit_size() -> None:
    with pytest.raises(ConfigError, match="reads 2 bytes, not 3"):
        one(0x42, type="bytes", format="version_hex_bytes", size=3)


def test_field_level_endian_overrides_decoder_default() -> None:
    decode = tlv(
        {
            "channel_id": 1,
            "channel_type": 2,
            "name": "v",
            "type": "uint16",
            "endian": "be",
            "quantity": "q",
            "unit": "1",
        },
        endian="le",
    )
    assert decode(bytes.fromhex("01020102")).data == {"v": 0x0102}


# ------------------------------------------------------------------ robustness


@settings(max_examples=2000, deadline=None)
@given(payload=st.binary(max_size=64), fport=st.sampled_from([85, 85, 85, 1, 223]))
def test_random_bytes_raise_only_decode_error(payload: bytes, fport: int) -> None:
    try:
        decoded = EM310.decode(fport, payload)
    except DecodeError as exc:
        assert exc.reason in {"truncated", "unexpected_fport"}
        return
    json.dumps(decoded.data, allow_nan=False)  # always a JSON object
    assert all(isinstance(warning, str) for warning in decoded.warnings)


# Header → (data bytes, output key), from em310-udl-decoder.js.
_LAYOUT = {
    "0175": (1, "battery"),
    "0382": (2, "distance"),
    "0400": (1, "position"),
    "ff01": (1, "ipso_version"),
    "ff09": (2, "hardware_version"),
    "ff0a": (2, "firmware_version"),
    "ffff": (2, "tsl_version"),
    "ff16": (8, "sn"),
    "ff0f": (1, "lorawan_class"),
    "fffe": (1, "reset_event"),
    "ff0b": (1, "device_status"),
    "fe10": (1, "reboot"),
    "ff02": (2, "collection_interval"),
    "fe03": (2, "report_interval"),
}


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(_LAYOUT)), st.binary(min_size=8, max_size=8)), max_size=6))
def test_well_formed_frames_decode_every_channel_without_warnings(parts: list[tuple[str, bytes]]) -> None:
    payload = b"".join(bytes.fromhex(header) + data[: _LAYOUT[header][0]] for header, data in parts)
    decoded = EM310.decode(FPORT, payload)
    assert decoded.warnings == ()
    assert set(decoded.data) == {_LAYOUT[header][1] for header, _data in parts}
    distances = [int.from_bytes(data[:2], "little") for header, data in parts if header == "0382"]
    if distances:
        assert decoded.data["distance"] == distances[-1]
