"""Variable-size ``channel_tlv`` records, one-record ``tlv``, ``object`` with ``at``/``append``, ``unless``.

The shapes are Milesight's (Milesight-IoT/SensorDecoders vs-series/vs121/vs121-decoder.js at
2b9c976969123dbd69a3b00cd6b9b4e611a7dc47):

* ``20 ce`` history: ``readHistoryData`` reads a uint32 LE timestamp, a type byte, then that
  type's fields (type 02: people in/out, 2 x uint16 LE; type 03: people max, uint8), and the
  main loop pushes each entry onto ``decoded.history``;
* ``f8`` answers: ``handle_downlink_response_ext`` reads the answer, then (``hasResultFlag``) a
  result byte; a result that is not 0 replaces the answer with ``device_response_result:
  {channel_type, result: readResultStatus(...), request: <the answer>}``.

Expected outputs are written out by hand from those functions, never taken from the code
under test. Before this feature every profile below was refused at load time
(``ConfigError``: a channel_tlv record had to be fixed-size; ``unless``, ``append``, ``single``,
``inline`` and an object's ``at`` were unknown keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError, DecodeError
from tests.codec.test_nested import profile_with

_BATTERY = {
    "channel_id": 1,
    "channel_type": 0x75,
    "name": "battery",
    "type": "uint8",
    "quantity": "battery_level",
    "unit": "%",
}

_HISTORY = {
    "channel_id": 0x20,
    "channel_type": 0xCE,
    "fields": [
        {
            "name": "history",
            "type": "object",
            "append": True,
            "quantity": "history",
            "fields": [
                {"name": "timestamp", "type": "uint32", "quantity": "timestamp", "unit": "s"},
                {
                    "name": "reading",
                    "type": "tlv",
                    "single": True,
                    "inline": True,
                    "quantity": "history_reading",
                    "channels": [
                        {
                            "channel_type": 0x02,
                            "fields": [
                                {"name": "people_in", "type": "uint16", "quantity": "people_in", "unit": "1"},
                                {
                                    "name": "people_out",
                                    "type": "uint16",
                                    "quantity": "people_out",
                                    "unit": "1",
                                },
                            ],
                        },
                        {
                            "channel_type": 0x03,
                            "name": "people_count_max",
                            "type": "uint8",
                            "quantity": "people_count_max",
                            "unit": "1",
                        },
                    ],
                },
            ],
        }
    ],
}

_SCHEME = {0: "on_the_dot", 1: "from_now_on"}  # readPeriodicReportScheme
_ANSWER_F8_10 = {
    "channel_id": 0xF8,
    "channel_type": 0x10,
    "fields": [
        {"name": "result_code", "type": "uint8", "at": 1, "hidden": True},
        {
            "name": "periodic_report_scheme",
            "type": "uint8",
            "at": 0,
            "unless": "result_code",
            "enum": _SCHEME,
            "quantity": "setting",
        },
        {
            "name": "device_response_result",
            "type": "object",
            "at": 0,
            "if": "result_code",
            "quantity": "command_result",
            "fields": [
                {
                    "name": "channel_type",
                    "type": "constant",
                    "size": 0,
                    "value": 0x10,
                    "quantity": "command",
                    "unit": "1",
                },
                {
                    "name": "result",
                    "type": "uint8",
                    "at": 1,
                    "quantity": "command_result",
                    "enum": {0: "success", 1: "forbidden", 2: "invalid parameter"},
                    "enum_default": "unknown",
                },
                {
                    "name": "request",
                    "type": "object",
                    "at": 0,
                    "quantity": "setting",
                    "fields": [
                        {
                            "name": "periodic_report_scheme",
                            "type": "uint8",
                            "enum": _SCHEME,
                            "quantity": "setting",
                        }
                    ],
                },
            ],
        },
    ],
}


def _tlv(*channels: dict[str, Any]) -> dict[str, Any]:
    return {"family": "channel_tlv", "endian": "le", "channels": [*channels, _BATTERY]}


def test_history_records_collect_into_one_list_and_each_ends_where_its_type_says(tmp_path: Path) -> None:
    profile = profile_with(tmp_path, _tlv(_HISTORY))
    payload = bytes.fromhex("20ce 00e1f505 02 0200 0100  20ce 01e1f505 03 07  0175 5c")
    decoded = profile.decode(85, payload)
    # readUInt32LE(00 e1 f5 05) = 0x05f5e100 = 100000000; readUInt16LE(02 00) = 2, (01 00) = 1.
    assert decoded.data == {
        "history": [
            {"timestamp": 100000000, "people_in": 2, "people_out": 1},
            {"timestamp": 100000001, "people_count_max": 7},
        ],
        "battery": 92,
    }
    assert decoded.warnings == ()


def test_a_cut_history_record_is_truncated(tmp_path: Path) -> None:
    profile = profile_with(tmp_path, _tlv(_HISTORY))
    for cut in ("20ce 00e1f505", "20ce 00e1f505 02 0200"):
        with pytest.raises(DecodeError) as info:
            profile.decode(85, bytes.fromhex(cut))
        assert info.value.reason == "truncated"


def test_an_unknown_history_type_warns_and_keeps_what_came_before(tmp_path: Path) -> None:
    # The vendor throws ("unknown history data type"): outside the contract; edgegw warns.
    profile = profile_with(tmp_path, _tlv(_HISTORY))
    decoded = profile.decode(85, bytes.fromhex("0175 5c 20ce 00e1f505 99 0102"))
    assert decoded.data["battery"] == 92
    assert decoded.warnings and "unknown type 99" in decoded.warnings[0]


def test_answer_with_result_zero_is_flat_and_a_failed_one_moves_under_device_response_result(
    tmp_path: Path,
) -> None:
    profile = profile_with(tmp_path, _tlv(_ANSWER_F8_10))
    # result 0: the answer alone, the result byte consumed; then the next record.
    assert profile.decode(85, bytes.fromhex("f810 01 00 0175 5c")).data == {
        "periodic_report_scheme": "from_now_on",
        "battery": 92,
    }
    # result 2: {channel_type: 0x10 = 16, result: "invalid parameter", request: {...}}.
    assert profile.decode(85, bytes.fromhex("f810 00 02 0175 64")).data == {
        "device_response_result": {
            "channel_type": 16,
            "result": "invalid parameter",
            "request": {"periodic_report_scheme": "on_the_dot"},
        },
        "battery": 100,
    }


def test_if_and_unless_together_are_refused(tmp_path: Path) -> None:
    channel = {
        "channel_id": 9,
        "channel_type": 9,
        "fields": [
            {"name": "m", "type": "uint8", "hidden": True},
            {"name": "a", "type": "uint8", "if": "m", "unless": "m", "quantity": "a", "unit": "1"},
        ],
    }
    with pytest.raises(ConfigError) as info:
        profile_with(tmp_path, _tlv(channel))
    assert info.value.key_path == "decoder.channels[0].fields[1].unless"
