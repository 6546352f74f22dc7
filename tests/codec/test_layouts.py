"""Decoder features added for VS121, LDDS75 and the IMBuildings counter.

* ``expand: bit_flags`` — one integer → ``region_{n}`` outputs, n = 1..count, as Milesight
  VS_Series/VS121/VS121_Decoder.js does with ``(region >> idx) & 1`` (README example 04C9030800A1);
* formats ``version_decimal_dotted`` (VS121 readVersion, README "FF1F1F07004B" → "31.7.0.75") and
  ``int16_be_tenths_fixed2`` (Dragino LDDS75_Decoder_V1.1.4.js ``(value/10).toFixed(2)``; the
  values 0105H = 26.1 and FF3FH = -19.3 are the DS18B20 examples of the Dragino manuals);
* ``constant`` of size 0 (Dragino ``Node_type: "LDDS75"``);
* ``fixed`` with ``layouts`` chosen by prefix, length and fPort (IMBUILDINGS/PayloadParser
  ttn-v3/imbuildings-people-counter.js, containsIMBHeader() and the FPort 26/27/28 switch).
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.codec import FORMATS, ProfileStore, default_profiles_dir
from gateway.codec.decode import compile_decoder
from gateway.codec.fields import Spec, bit_flags
from gateway.errors import ConfigError, DecodeError

STORE = ProfileStore.load_dir(default_profiles_dir())


def compile_spec(decoder: dict[str, Any]) -> Any:
    return compile_decoder(Spec(decoder, file="<test>"))


REGION_CHANNEL: dict[str, Any] = {
    "channel_id": 0x04,
    "channel_type": 0xC9,
    "fields": [
        {"name": "count", "type": "uint8", "quantity": "q", "unit": "1"},
        {
            "name": "region_{n}",
            "type": "uint16",
            "endian": "be",
            "expand": "bit_flags",
            "count": "count",
            "quantity": "q",
            "unit": "1",
        },
    ],
}


# ------------------------------------------------------------------ bit_flags


def test_bit_flags_matches_vendor_readme() -> None:
    # VS121 README: region mask 0x00A1 with 8 regions -> regions 1, 6 and 8 occupied.
    assert bit_flags(0x00A1, 8) == [1, 0, 0, 0, 0, 1, 0, 1]


def test_bit_flags_count_zero_and_javascript_shift_wrap() -> None:
    assert bit_flags(0xFFFF, 0) == []
    # JavaScript shifts by idx mod 32: index 32 reads bit 0 again.
    assert bit_flags(0x0001, 34) == [1] + [0] * 31 + [1, 0]


def test_expand_in_a_channel() -> None:
    decode = compile_spec({"family": "channel_tlv", "channels": [REGION_CHANNEL]}).decode
    assert decode(bytes.fromhex("04c9 03 0005")).data == {
        "count": 3,
        "region_1": 1,
        "region_2": 0,
        "region_3": 1,
    }
    assert decode(bytes.fromhex("04c9 00 ffff")).data == {"count": 0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"count": "nope"}, "must name an earlier field"),
        ({"name": "region"}, "needs a {n} placeholder"),
        ({"count": None}, "needs 'count'"),
        ({"expand": "bytes_flags"}, "unknown value 'bytes_flags'"),
        ({"scale": 2}, "not allowed together with 'expand'"),
    ],
)
def test_expand_is_checked_at_load(change: dict[str, Any], message: str) -> None:
    field = dict(REGION_CHANNEL["fields"][1], **change)
    field = {k: v for k, v in field.items() if v is not None}
    channel = dict(REGION_CHANNEL, fields=[REGION_CHANNEL["fields"][0], field])
    with pytest.raises(ConfigError, match=message):
        compile_spec({"family": "channel_tlv", "channels": [channel]})


def test_count_without_expand_is_refused() -> None:
    with pytest.raises(ConfigError, match="only allowed together with 'expand'"):
        compile_spec(
            {
                "family": "fixed",
                "fields": [{"name": "v", "type": "uint8", "count": "x", "quantity": "q", "unit": "1"}],
            }
        )


# -------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("raw_hex", "text"),
    [("0100", "1.0"), ("1f07004b", "31.7.0.75"), ("ff", "255")],
)
def test_version_decimal_dotted(raw_hex: str, text: str) -> None:
    assert FORMATS["version_decimal_dotted"].apply(bytes.fromhex(raw_hex)) == text


@pytest.mark.parametrize(
    ("raw_hex", "text"),
    [("0105", "26.10"), ("ff3f", "-19.30"), ("0000", "0.00"), ("8000", "-3276.80"), ("7fff", "3276.70")],
)
def test_int16_be_tenths_fixed2(raw_hex: str, text: str) -> None:
    assert FORMATS["int16_be_tenths_fixed2"].apply(bytes.fromhex(raw_hex)) == text


def test_variable_size_format_needs_a_size() -> None:
    with pytest.raises(ConfigError, match="needs a 'size'"):
        compile_spec(
            {
                "family": "fixed",
                "fields": [
                    {"name": "v", "type": "bytes", "format": "version_decimal_dotted", "quantity": "q"}
                ],
            }
        )


def test_constant_of_size_zero_reads_nothing() -> None:
    decoder = compile_spec(
        {
            "family": "fixed",
            "endian": "be",
            "fields": [
                {"name": "kind", "type": "constant", "size": 0, "value": "X1", "quantity": "q"},
                {"name": "v", "type": "uint16", "quantity": "q", "unit": "1"},
            ],
        }
    )
    assert decoder.decode(bytes.fromhex("0102")).data == {"kind": "X1", "v": 0x0102}


def test_only_constant_may_have_size_zero() -> None:
    with pytest.raises(ConfigError, match=r"out of range 1\.\.64"):
        compile_spec(
            {"family": "fixed", "fields": [{"name": "v", "type": "hex", "size": 0, "quantity": "q"}]}
        )


# -------------------------------------------------------------------- layouts

LAYOUTS: dict[str, Any] = {
    "family": "fixed",
    "endian": "be",
    "layouts": [
        {
            "when": {"prefix": "0206", "length": 4},
            "fields": [{"name": "v", "type": "uint16", "at": 2, "quantity": "q", "unit": "1"}],
        },
        {
            "when": {"fport": 26, "length": 2},
            "fields": [{"name": "v", "type": "uint16", "quantity": "q", "unit": "1"}],
        },
        {"when": {"fport": 30}, "fields": [{"name": "w", "type": "uint8", "quantity": "q", "unit": "1"}]},
    ],
}


def test_layout_chosen_by_prefix_and_length_on_any_port() -> None:
    decoder = compile_spec(LAYOUTS)
    assert decoder.decode_port is not None
    assert decoder.decode_port(1, bytes.fromhex("02060102")).data == {"v": 0x0102}
    assert decoder.decode_port(26, bytes.fromhex("02060102")).data == {"v": 0x0102}


def test_layout_chosen_by_fport_and_length() -> None:
    decoder = compile_spec(LAYOUTS)
    assert decoder.decode_port is not None
    assert decoder.decode_port(26, bytes.fromhex("0304")).data == {"v": 0x0304}
    # Without a length condition, extra bytes are decoded around and reported.
    decoded = decoder.decode_port(30, bytes.fromhex("0708"))
    assert decoded.data == {"w": 7}
    assert decoded.warnings == ("1 trailing bytes not decoded",)


@pytest.mark.parametrize(("fport", "payload_hex"), [(26, "030405"), (1, "0304"), (30, "")])
def test_no_matching_layout_is_a_decode_error(fport: int, payload_hex: str) -> None:
    decoder = compile_spec(LAYOUTS)
    assert decoder.decode_port is not None
    with pytest.raises(DecodeError) as info:
        decoder.decode_port(fport, bytes.fromhex(payload_hex))
    assert info.value.reason in ("unknown_layout", "truncated")


def test_layout_conflicting_meanings_are_refused() -> None:
    bad = dict(
        LAYOUTS,
        layouts=[
            *LAYOUTS["layouts"],
            {
                "when": {"fport": 31},
                "fields": [{"name": "v", "type": "uint16", "quantity": "other", "unit": "1"}],
            },
        ],
    )
    with pytest.raises(ConfigError, match="same key must keep one meaning"):
        compile_spec(bad)


def test_layout_needs_a_condition() -> None:
    bad = dict(LAYOUTS, layouts=[{"when": {}, "fields": LAYOUTS["layouts"][0]["fields"]}])
    with pytest.raises(ConfigError, match="needs at least one of"):
        compile_spec(bad)


def test_layout_with_repeat_reads_blocks_to_the_end() -> None:
    # NAS UL20xx manual_dimming (nasys/nas-codecs decodeDimmingCommand): 01, then (address, level) pairs.
    spec: dict[str, Any] = {
        "family": "fixed",
        "layouts": [
            {
                "when": {"fport": 60, "prefix": "01"},
                "fields": [{"name": "t", "type": "constant", "size": 1, "value": "dim", "quantity": "q"}],
                "repeat": {
                    "name": "destination",
                    "quantity": "q",
                    "fields": [
                        {"name": "address", "type": "uint8", "quantity": "q", "unit": "1"},
                        {"name": "level", "type": "uint8", "quantity": "q", "unit": "%"},
                    ],
                },
            }
        ],
    }
    decoder = compile_spec(spec)
    assert decoder.decode_port is not None
    decoded = decoder.decode_port(60, bytes.fromhex("0104320864"))
    assert decoded.data == {
        "t": "dim",
        "destination": [{"address": 4, "level": 50}, {"address": 8, "level": 100}],
    }
    assert decoded.warnings == ()
    short = decoder.decode_port(60, bytes.fromhex("01fe6412"))
    assert short.data["destination"] == [{"address": 0xFE, "level": 100}]
    assert short.warnings == ("1 trailing bytes do not fill a 2-byte block",)
    bad = dict(spec, layouts=[dict(spec["layouts"][0], repeat=dict(spec["layouts"][0]["repeat"], name="t"))])
    with pytest.raises(ConfigError, match="duplicate output 't'"):
        compile_spec(bad)


def test_nasys_ul20xx_frames_it_does_not_describe_are_refused_not_guessed() -> None:
    # The GNSS location notification (fPort 61, header 86) has no layout in the profile: refused,
    # raw kept. (Headers 03 and 85 were refused here before issue 18; nas-codecs
    # 'custom_dali_request response from DS' at 895af9de expects the output below.)
    ul20xx = STORE.get("nasys/ul20xx")
    assert ul20xx.decode(60, bytes.fromhex("0348A1FE48A2A848A3FE48A4FE48A507")).data == {
        "packet_type": "custom_dali_request",
        "query_data_raw": "48A1FE48A2A848A3FE48A4FE48A507",
    }
    with pytest.raises(DecodeError) as info:
        ul20xx.decode(61, bytes.fromhex("8601"))
    assert info.value.reason == "unknown_layout"
    with pytest.raises(DecodeError) as info:
        ul20xx.decode(50, bytes.fromhex("0701"))  # fPort 50 carries downlink configuration only
    assert info.value.reason == "unexpected_fport"


# ------------------------------------------------------------ shipped profiles


def test_imbuildings_profile_dispatches_on_fport() -> None:
    counter = STORE.get("imbuildings/people-counter")
    short = counter.decode(28, bytes.fromhex("00010020"))
    assert short.data == {
        "payload_type": 2,
        "payload_variant": 8,
        "device_status": 0,
        "battery_voltage": 2.56,
        "sensor_status": 32,
    }
    with pytest.raises(DecodeError) as info:
        counter.decode(26, bytes.fromhex("00010020"))  # variant 8's length on variant 6's port
    assert info.value.reason == "unknown_layout"


def test_ldds75_rejects_other_lengths() -> None:
    # 8 bytes (firmware 1.1.4) and 5 bytes (older firmware) are decoded, as Dragino's decoder
    # does (issue 18: the 5-byte frame used to be refused); any other length is refused.
    ldds75 = STORE.get("dragino/ldds75")
    assert ldds75.decode(2, bytes.fromhex("0b450b0500")).data["Distance"] == 2821
    with pytest.raises(DecodeError) as info:
        ldds75.decode(2, bytes.fromhex("0b450b050001"))
    assert info.value.reason == "unknown_layout"


def test_vs121_region_count_drives_the_keys() -> None:
    decoded = STORE.get("milesight/vs121").decode(85, bytes.fromhex("04c9 02 02 0003"))
    assert decoded.data == {"people_count_all": 2, "region_count": 2, "region_1": 1, "region_2": 1}
