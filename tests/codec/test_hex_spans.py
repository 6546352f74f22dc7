"""``hex`` fields of a length the payload decides, and upper-case hex digits.

``size: rest`` reads every byte up to the end of the record, ``length: <earlier field>`` as many
bytes as that field says; ``case: upper`` prints the digits as NAS's ``bytesToHexStr`` does
(``('00' + b.toString(16)).slice(-2).toUpperCase()`` per byte, nasys/nas-codecs src/util/misc.js).
Expected strings are the bytes written out by hand, never the decoder under test.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import load_profile
from gateway.errors import ConfigError, DecodeError
from tests.codec.test_profile import BASE, write_profile


def _fixed(tmp_path: Path, fields: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(BASE)
    doc["decoder"] = {"family": "fixed", "endian": "le", "fields": fields}
    doc["examples"] = []
    return load_profile(write_profile(tmp_path, doc))


KIND = {"name": "kind", "type": "uint8", "quantity": "k", "unit": "1"}


def test_size_rest_reads_to_the_end_in_upper_case(tmp_path: Path) -> None:
    profile = _fixed(
        tmp_path,
        [KIND, {"name": "command", "type": "hex", "size": "rest", "case": "upper", "quantity": "raw"}],
    )
    decoded = profile.decode(85, bytes([0x04, 0x02, 0x7F, 0x03, 0x21, 0x03, 0x2B]))
    assert decoded.data == {"kind": 4, "command": "027F0321032B"}
    assert decoded.warnings == ()
    # Nothing after the header: an empty string (JavaScript getRaw(0) -> "").
    assert profile.decode(85, bytes([0x04])).data == {"kind": 4, "command": ""}


def test_size_rest_with_at_peeks_and_later_fields_read_the_same_bytes(tmp_path: Path) -> None:
    profile = _fixed(
        tmp_path,
        [
            KIND,
            {"name": "raw", "type": "hex", "at": 1, "size": "rest", "quantity": "raw"},
            {"name": "address", "type": "uint8", "at": 1, "quantity": "a", "unit": "1"},
            {"name": "query", "type": "uint8", "at": 2, "quantity": "q", "unit": "1"},
        ],
    )
    assert profile.decode(85, bytes([0x03, 0x48, 0xA1])).data == {
        "kind": 3,
        "raw": "48a1",  # lower case unless the profile says `case: upper`
        "address": 0x48,
        "query": 0xA1,
    }


def test_length_from_an_earlier_field(tmp_path: Path) -> None:
    profile = _fixed(
        tmp_path,
        [
            {"name": "size", "type": "uint8", "quantity": "n", "unit": "By"},
            {"name": "value", "type": "hex", "length": "size", "case": "upper", "quantity": "raw"},
            {"name": "tail", "type": "uint8", "quantity": "t", "unit": "1"},
        ],
    )
    assert profile.decode(85, bytes([0x02, 0xAB, 0x0C, 0x07])).data == {"size": 2, "value": "AB0C", "tail": 7}
    assert profile.decode(85, bytes([0x00, 0x07])).data == {"size": 0, "value": "", "tail": 7}
    with pytest.raises(DecodeError) as info:
        profile.decode(85, bytes([0x03, 0xAB, 0x0C]))  # 3 bytes announced, 2 left
    assert info.value.reason == "truncated"


def test_optional_length_field_is_left_out_when_the_payload_ends(tmp_path: Path) -> None:
    profile = _fixed(
        tmp_path,
        [
            {"name": "size", "type": "uint8", "quantity": "n", "unit": "By"},
            {"name": "value", "type": "hex", "length": "size", "optional": True, "quantity": "raw"},
        ],
    )
    assert profile.decode(85, bytes([0x02])).data == {"size": 2}
    assert profile.decode(85, bytes([0x01, 0xFF])).data == {"size": 1, "value": "ff"}


@pytest.mark.parametrize(
    ("field", "path", "reason"),
    [
        ({"size": "rest", "length": "kind"}, "fields[1]", "either"),
        ({"length": "nothing"}, "fields[1].length", "earlier field"),
        ({"size": "all"}, "fields[1].size", "rest"),
        ({"size": 2, "case": "title"}, "fields[1].case", "upper"),
    ],
    ids=["size-and-length", "unknown-length-field", "bad-size-word", "bad-case"],
)
def test_malformed_spans_are_refused_with_path_and_reason(
    tmp_path: Path, field: dict[str, Any], path: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _fixed(tmp_path, [KIND, {"name": "raw", "type": "hex", "quantity": "raw", **field}])
    assert path in str(info.value)
    assert reason in str(info.value)


def test_case_only_on_hex(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    raw = {"name": "raw", "type": "bcd", "size": 1, "case": "upper", "quantity": "raw"}
    doc["decoder"]["channels"].append({"channel_id": 0x09, "channel_type": 0x01, "fields": [KIND, raw]})
    with pytest.raises(ConfigError):
        load_profile(write_profile(tmp_path, doc))


def test_spans_in_a_channel_tlv_record_make_it_variable_size(tmp_path: Path) -> None:
    # A span no longer makes a channel_tlv record refused: the record ends where the span ends
    # (device_profiles/README.md "Variable-size channel_tlv records"), then the next header follows.
    doc = copy.deepcopy(BASE)
    raw = {"name": "raw", "type": "hex", "length": "kind", "quantity": "raw"}
    doc["decoder"]["channels"].append({"channel_id": 0x09, "channel_type": 0x01, "fields": [KIND, raw]})
    doc["examples"] = []
    profile = load_profile(write_profile(tmp_path, doc))
    decoded = profile.decode(85, bytes([0x09, 0x01, 0x02, 0xAB, 0xCD, 0x01, 0x75, 0x5C]))
    assert decoded.data == {"kind": 2, "raw": "abcd", "battery": 92}
    with pytest.raises(DecodeError):  # announces 3 bytes, 2 follow
        profile.decode(85, bytes([0x09, 0x01, 0x03, 0xAB, 0xCD]))


def test_fixed_size_hex_is_unchanged(tmp_path: Path) -> None:
    profile = _fixed(tmp_path, [{"name": "serial", "type": "hex", "size": 2, "quantity": "serial"}])
    assert profile.decode(85, bytes([0xAB, 0x01])).data == {"serial": "ab01"}
