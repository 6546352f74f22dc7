"""MAC commands (LoRaWAN 1.0.4 §5, Table 4) and the EU868 region rules (RP002-1.0.x EU868).

Byte layouts: LinkCheckAns [CS] chirpstack ``lrwn`` doc example "LoRaWAN 1.1.x downlink with
encrypted f_opts" (LinkCheckAns margin 7, gw_cnt 1 → 02 07 01); DeviceTimeAns §5.9
(GPS epoch seconds, little-endian, then 1/256 s).
"""

from __future__ import annotations

import pytest

from gateway.lorawan import mac, region


def test_split_uplink_commands_and_stop_at_unknown() -> None:
    stream = bytes([0x02, 0x03, 0x07, 0x06, 0xFF, 0x20, 0x0D, 0x80, 0x01, 0x02])
    commands, rest = mac.parse_commands(stream, uplink=True)
    assert [(c.name, c.payload) for c in commands] == [
        ("LinkCheckReq", b""),
        ("LinkADRAns", b"\x07"),
        ("DevStatusAns", b"\xff\x20"),
        ("DeviceTimeReq", b""),
    ]
    assert rest == bytes([0x80, 0x01, 0x02])
    assert commands[1].as_json() == {"cid": 3, "name": "LinkADRAns", "payload": "07"}


def test_truncated_command_is_left_unread() -> None:
    assert mac.parse_commands(bytes([0x06, 0xFF]), uplink=True) == ([], bytes([0x06, 0xFF]))


def test_downlink_direction_table() -> None:
    commands, rest = mac.parse_commands(bytes([0x02, 0x07, 0x01, 0x06]), uplink=False)
    assert [c.name for c in commands] == ["LinkCheckAns", "DevStatusReq"] and rest == b""


def test_link_check_ans_bytes() -> None:
    assert mac.link_check_ans(7, 1) == bytes([0x02, 0x07, 0x01])  # [CS]
    assert mac.link_check_ans(300, 0) == bytes([0x02, 254, 1])
    assert mac.link_margin_db(-20.0, 12) == 0 and mac.link_margin_db(10.0, 7) == 17
    assert mac.link_margin_db(-30.0, 7) == 0


def test_device_time_ans_bytes() -> None:
    # 1980-01-06T00:00:00Z is GPS 0; 2017-01-01T00:00:00Z (Unix 1483228800) is GPS 1167264018.
    assert mac.gps_time_s(1_483_228_800) == 1_167_264_018
    assert (
        mac.device_time_ans(1_167_264_018.25)
        == bytes([0x0D]) + (1_167_264_018).to_bytes(4, "little") + b"\x40"
    )


def test_eu868_data_rates() -> None:
    assert [region.data_rate(dr).sf for dr in range(6)] == [12, 11, 10, 9, 8, 7]
    assert region.data_rate(6) == region.DataRate(7, 250_000)
    assert region.dr_of(9, 125_000) == 3 and region.dr_of(7, 250_000) == 6
    assert region.rx1_dr(5, 2) == 3 and region.rx1_dr(1, 5) == 0
    for bad in (lambda: region.data_rate(7), lambda: region.dr_of(6, 125_000), lambda: region.rx1_dr(3, 6)):
        with pytest.raises(ValueError):
            bad()
