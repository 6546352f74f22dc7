"""The ``uint24`` field type: three bytes, either byte order (Milesight ``readUInt24LE``).

Expected values are the byte arithmetic written out (b0 + b1 * 2^8 + b2 * 2^16 for little-endian),
never the decoder under test.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import load_profile
from gateway.errors import ConfigError, DecodeError
from tests.codec.test_profile import BASE, write_profile


def _profile_with_field(tmp_path: Path, field: dict[str, Any], endian: str | None = "le") -> Path:
    doc = copy.deepcopy(BASE)
    if endian is None:
        del doc["decoder"]["endian"]
        doc["decoder"]["channels"] = []
    doc["decoder"]["channels"].append({"channel_id": 0xFF, "channel_type": 0x03, **field})
    return write_profile(tmp_path, doc)


INTERVAL = {"name": "interval", "type": "uint24", "quantity": "report_interval", "unit": "s"}


@pytest.mark.parametrize(
    ("data", "endian", "want"),
    [
        ("805101", "le", 0x80 + 0x51 * 256 + 0x01 * 65536),  # 86400 s: a day, above 65535
        ("ffffff", "le", 0xFF + 0xFF * 256 + 0xFF * 65536),  # 16777215, never negative
        ("015180", "be", 0x01 * 65536 + 0x51 * 256 + 0x80),  # the same day, big-endian
        ("000000", "le", 0),
    ],
)
def test_uint24_reads_three_bytes(tmp_path: Path, data: str, endian: str, want: int) -> None:
    profile = load_profile(_profile_with_field(tmp_path, {**INTERVAL, "endian": endian}))
    decoded = profile.decode(85, bytes.fromhex("ff03" + data + "017564"))
    # The record is 3 bytes long: the battery record after it is read from the right place.
    assert decoded.data == {"interval": want, "battery": 100}


def test_uint24_takes_ops_and_bits(tmp_path: Path) -> None:
    field = {**INTERVAL, "ops": [{"div": 3600}]}
    profile = load_profile(_profile_with_field(tmp_path, field))
    assert profile.decode(85, bytes.fromhex("ff03805101")).data == {"interval": 24}
    field = {**INTERVAL, "bits": [16, 8]}
    profile = load_profile(_profile_with_field(tmp_path, field))
    assert profile.decode(85, bytes.fromhex("ff03805101")).data == {"interval": 1}


def test_a_cut_uint24_is_truncated(tmp_path: Path) -> None:
    profile = load_profile(_profile_with_field(tmp_path, INTERVAL))
    with pytest.raises(DecodeError) as info:
        profile.decode(85, bytes.fromhex("ff038051"))
    assert info.value.reason == "truncated"


def test_uint24_needs_a_byte_order(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile(_profile_with_field(tmp_path, INTERVAL, endian=None))
    assert "needs 'endian: le' or 'endian: be'" in str(info.value)
