"""The pure Semtech UDP codec against known bytes.

Sources of the vectors:

* [PROTO] Semtech, "Basic communication protocol between Lora gateway and server",
  PROTOCOL.TXT of Lora-net/packet_forwarder (protocol version 2, revision v1.3,
  commit 36ab4b40542c7ad59b6b4d083577aa9f13a2ed46): byte layouts of §3.2, §3.3,
  §5.2-§5.5 and the JSON examples of §4 and §6 (``tests/fixtures/semtech.py``).
* [KERLINK] Datagrams captured from a Kerlink gateway running a "jver":2 forwarder,
  published as base64 constants ("Raw data from kerlink gateways") in the test file
  of a public Go Semtech-UDP parser (stored-corpus file id 2926097293; the index does
  not name the repository). They carry ``rsig`` instead of top-level rssi/lsnr.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DatagramError
from gateway.radio.semtech_udp import packets
from gateway.radio.semtech_udp.packets import (
    PullAck,
    PullData,
    PullResp,
    PushAck,
    PushData,
    Rxpk,
    TxAck,
    make_rxpk,
    parse,
    rxpk_to_frame_parts,
)
from tests.fixtures.semtech import GATEWAY_EUI as EUI
from tests.fixtures.semtech import (
    LORA_RXPK,
    PROTO_RXPK_FSK,
    PROTO_RXPK_LORA_SF7,
    PROTO_RXPK_LORA_SF10,
    PROTO_STAT,
    PROTO_TXPK_FSK,
    PROTO_TXPK_LORA,
    header,
)


def push_data_bytes(json_text: str | bytes, eui: bytes = EUI, token: int = 0x1234) -> bytes:
    body = json_text.encode() if isinstance(json_text, str) else json_text
    return header(0x00, token) + eui + body


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def reason_of(datagram: bytes) -> str:
    with pytest.raises(DatagramError) as info:
        parse(datagram)
    return info.value.reason


# --------------------------------------------------------------------------- [PROTO] §4 examples


def test_proto_section4_example_parses_and_only_its_first_rxpk_is_refused() -> None:
    # [PROTO] §4: the first rxpk's "data" mixes '-' (URL-safe alphabet) and '+' (standard
    # alphabet), so it is valid in neither. The datagram itself is well formed (§3.2): it parses
    # with its three rxpk, and each rxpk stands or falls alone (issue 18: the whole datagram was
    # refused, the valid SF10 rxpk lost).
    doc = compact({"rxpk": [PROTO_RXPK_LORA_SF7, PROTO_RXPK_FSK, PROTO_RXPK_LORA_SF10]})
    packet = parse(push_data_bytes(doc))
    assert isinstance(packet, PushData)
    assert packet.rxpk == [PROTO_RXPK_LORA_SF7, PROTO_RXPK_FSK, PROTO_RXPK_LORA_SF10]
    reasons = []
    for rxpk in packet.rxpk:
        try:
            rxpk_to_frame_parts(rxpk)
            reasons.append("ok")
        except DatagramError as exc:
            reasons.append(exc.reason)
    assert reasons == ["bad_base64", "unsupported_modulation", "ok"]


def test_proto_section4_lora_rxpk_unpadded_data_decodes_and_maps_to_rxinfo() -> None:
    # [PROTO] §4, third rxpk: 43 base64 characters without the '=' pad → 32 bytes == "size".
    packet = parse(push_data_bytes(compact({"rxpk": [PROTO_RXPK_LORA_SF10]})))
    assert isinstance(packet, PushData)
    assert packet.gateway_eui == EUI
    assert packet.rxpk == [PROTO_RXPK_LORA_SF10]
    payload, rx = rxpk_to_frame_parts(packet.rxpk[0], gateway_eui=packet.gateway_eui)
    assert payload == base64.b64decode(PROTO_RXPK_LORA_SF10["data"] + "=")
    assert len(payload) == 32
    assert rx.freq_hz == 863_009_810
    assert (rx.sf, rx.bw_hz, rx.coding_rate) == (10, 125_000, "4/7")
    assert (rx.rssi_dbm, rx.snr_db) == (-38.0, 5.5)
    assert rx.crc_ok is True
    assert rx.concentrator_tmst_us == 3316387610
    assert rx.gps_time == "2013-03-31T16:21:17.532038Z"
    assert rx.gateway_eui == "aa555a0000000101"
    assert rx.backend == "semtech-udp"


def test_proto_section4_frequency_with_hz_precision() -> None:
    # [PROTO] §4 first rxpk (its metadata; its data is not base64, see above): 866.349812 MHz.
    rxpk = dict(PROTO_RXPK_LORA_SF7, data=PROTO_RXPK_LORA_SF10["data"])
    _, rx = rxpk_to_frame_parts(rxpk)  # type: ignore[arg-type]
    assert rx.freq_hz == 866_349_812
    assert (rx.sf, rx.coding_rate, rx.rssi_dbm, rx.snr_db) == (7, "4/6", -35.0, 5.1)


def test_frequency_is_rounded_not_truncated() -> None:
    # Some MHz floats land a hair below the integer number of Hz (found by scanning).
    assert int(131.667387 * 1_000_000) == 131_667_386
    _, rx = rxpk_to_frame_parts(LORA_RXPK | {"freq": 131.667387})  # type: ignore[arg-type]
    assert rx.freq_hz == 131_667_387


def test_proto_section4_fsk_rxpk_parses_but_is_not_a_lora_frame() -> None:
    # [PROTO] §4 second rxpk: FSK, "datr" is a number, no codr/lsnr.
    packet = parse(push_data_bytes(compact({"rxpk": [PROTO_RXPK_FSK]})))
    assert isinstance(packet, PushData)
    assert base64.b64decode(packet.rxpk[0]["data"]) == b"TEST_PACKET_1234"
    with pytest.raises(DatagramError) as info:
        rxpk_to_frame_parts(packet.rxpk[0])
    assert info.value.reason == "unsupported_modulation"


def test_proto_section4_stat_only_push_data() -> None:
    # [PROTO] §4 status example; "It is possible for a packet to contain no rxpk array".
    packet = parse(push_data_bytes(compact({"stat": PROTO_STAT})))
    assert packet == PushData(0x1234, EUI, [], PROTO_STAT)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- [PROTO] byte layouts


def test_proto_header_layouts_of_every_packet() -> None:
    # [PROTO] §3.2, §3.3, §5.2, §5.3, §5.4, §5.5: version, token (bytes 1-2), identifier,
    # then the gateway EUI for gateway → server packets, then JSON.
    assert PushAck(0xBE37).to_bytes() == b"\x02\xbe\x37\x01"
    assert PullAck(0x0102).to_bytes() == b"\x02\x01\x02\x04"
    assert PullData(0x0102, EUI).to_bytes() == b"\x02\x01\x02\x02" + EUI
    assert PushData(0xFFFF, EUI, []).to_bytes() == b"\x02\xff\xff\x00" + EUI + b"{}"
    assert PullResp(0, {"imme": True}).to_bytes() == b'\x02\x00\x00\x03{"txpk":{"imme":true}}'
    assert TxAck(7, EUI).to_bytes() == b"\x02\x00\x07\x05" + EUI
    assert TxAck(7, EUI, "NONE").to_bytes() == b"\x02\x00\x07\x05" + EUI + b'{"txpk_ack":{"error":"NONE"}}'


def test_proto_section6_txpk_examples_round_trip() -> None:
    # [PROTO] §6, both txpk examples (LoRa and FSK), verbatim values.
    for txpk in (PROTO_TXPK_LORA, PROTO_TXPK_FSK):
        datagram = header(0x03, 0x0400) + compact({"txpk": txpk}).encode()
        packet = parse(datagram)
        assert packet == PullResp(0x0400, txpk)
        assert packet.to_bytes() == datagram


def test_proto_section6_tx_ack_error_example() -> None:
    # [PROTO] §6: {"txpk_ack":{"error":"COLLISION_PACKET"}}
    packet = parse(header(0x05, 0x0400) + EUI + b'{"txpk_ack":{"error":"COLLISION_PACKET"}}')
    assert packet == TxAck(0x0400, EUI, "COLLISION_PACKET")
    assert isinstance(packet, TxAck) and not packet.ok


def test_proto_section5_5_tx_ack_without_json_means_no_error() -> None:
    # [PROTO] §5.5: "If no JSON is present (empty string), this means than no error occured."
    packet = parse(header(0x05) + EUI)
    assert packet == TxAck(0x1234, EUI, None)
    assert isinstance(packet, TxAck) and packet.ok
    # A C string terminator instead of nothing is tolerated the same way.
    assert parse(header(0x05) + EUI + b"\x00") == TxAck(0x1234, EUI, None)


def test_protocol_version_1_is_accepted_and_kept() -> None:
    # [PROTO] §7: v1 (revisions ≤ v1.2) has the same header; older forwarders still send it.
    assert parse(b"\x01\xab\xcd\x02" + EUI) == PullData(0xABCD, EUI, version=1)
    assert PushAck(0xABCD, version=1).to_bytes() == b"\x01\xab\xcd\x01"


# --------------------------------------------------------------------------- [KERLINK] captures

KERLINK_EUI = bytes.fromhex("7076ff00560603e5")
KERLINK = {
    "pull_data": "Ar4XAnB2/wBWBgPl",
    "pull_ack": "Ar4XBA==",
    "push_stat": (
        "Ar42AHB2/wBWBgPleyJzdGF0Ijp7ImFja3IiOjEwMC4wLCJib290IjoiMjAyMy0wMi0yMiAwMTowNTowNiBHTVQiLCJk"
        "d25iIjowLCJmcGdhIjozMSwiaGFsIjoiNS4wLjEiLCJscHBzIjozMCwicGluZyI6MTIwLCJyeGZ3IjoxLCJyeG5iIjox"
        "LCJyeG9rIjowLCJ0aW1lIjoiMjAyMy0wMi0yMiAwMTo1MzowNyBHTVQiLCJ0eG5iIjowfX0="
    ),
    "push_rxpk": (
        "Ar43AHB2/wBWBgPleyJyeHBrIjpbeyJhZXNrIjowLCJicmQiOjAsImNvZHIiOiI0LzUiLCJkYXRhIjoiUUt5ZEN5WUFR"
        "d01CN2l1NVFENnNINXUxQytZaCIsImRhdHIiOiJTRjlCVzEyNSIsImZyZXEiOjg2Ny4xLCJqdmVyIjoyLCJtb2R1Ijoi"
        "TE9SQSIsInJzaWciOlt7ImFudCI6MCwiY2hhbiI6MCwibHNuciI6MTMuMiwicnNzaWMiOi01MH1dLCJzaXplIjoyMSwi"
        "c3RhdCI6MSwidGltZSI6IjIwMjMtMDItMjJUMDE6NTM6MzEuMzA2MjI0WiIsInRtc3QiOjM4MDA1OTUyODR9XX0="
    ),
    "push_ack": "Ar43AQ==",
    "pull_resp": (
        "AgAEA3sidHhwayI6eyJpbW1lIjpmYWxzZSwidG1zdCI6NDI1NDM3MDM5NiwiZnJlcSI6ODY4LjMsInJmY2giOjAsInBv"
        "d2UiOjE0LCJtb2R1IjoiTE9SQSIsImRhdHIiOiJTRjdCVzEyNSIsImNvZHIiOiI0LzUiLCJpcG9sIjp0cnVlLCJzaXpl"
        "IjozMywibmNyYyI6dHJ1ZSwiZGF0YSI6IklHK1NCcGU1TlVvNEk4TDNpQ1RzbUlnWFBFSERMNjNFcWo2bGFWbXJHS1JG"
        "In19"
    ),
    "tx_ack": "AgAEBXB2/wBWBgPleyJ0eHBrX2FjayI6eyJlcnJvciI6Ik5PTkUifX0=",
}


@pytest.mark.parametrize("name", sorted(set(KERLINK) - {"push_stat"}))
def test_kerlink_captures_parse_and_serialise_back_to_the_same_bytes(name: str) -> None:
    datagram = base64.b64decode(KERLINK[name])
    assert parse(datagram).to_bytes() == datagram


def test_kerlink_acks_answer_the_captured_requests() -> None:
    # [KERLINK]: the server's PULL_ACK/PUSH_ACK repeat the request's token bytes (§3.3, §5.3).
    pull = parse(base64.b64decode(KERLINK["pull_data"]))
    assert pull == PullData(0xBE17, KERLINK_EUI)
    assert PullAck(pull.token).to_bytes() == base64.b64decode(KERLINK["pull_ack"])
    push = parse(base64.b64decode(KERLINK["push_rxpk"]))
    assert isinstance(push, PushData)
    assert PushAck(push.token).to_bytes() == base64.b64decode(KERLINK["push_ack"])


def test_kerlink_rxpk_takes_rssi_and_snr_from_rsig() -> None:
    push = parse(base64.b64decode(KERLINK["push_rxpk"]))
    assert isinstance(push, PushData) and push.stat is None
    payload, rx = rxpk_to_frame_parts(push.rxpk[0], gateway_eui=push.gateway_eui)
    assert payload.hex() == "40ac9d0b2600430301ee2bb9403eac1f9bb50be621"
    assert (rx.rssi_dbm, rx.snr_db) == (-50.0, 13.2)
    assert (rx.freq_hz, rx.sf, rx.bw_hz, rx.coding_rate) == (867_100_000, 9, 125_000, "4/5")
    assert rx.concentrator_tmst_us == 3800595284
    assert rx.gateway_eui == "7076ff00560603e5"


def test_kerlink_stat_keeps_only_the_protocol_fields() -> None:
    push = parse(base64.b64decode(KERLINK["push_stat"]))
    assert isinstance(push, PushData) and push.rxpk == []
    # Kerlink's extra keys (boot, fpga, hal, lpps, ping) are not kept: a stat holds
    # only the PROTOCOL.TXT §4 fields, whatever the sender put in.
    assert push.stat == {
        "ackr": 100.0,
        "dwnb": 0,
        "rxfw": 1,
        "rxnb": 1,
        "rxok": 0,
        "time": "2023-02-22 01:53:07 GMT",
        "txnb": 0,
    }


def test_stat_fields_of_the_wrong_type_or_too_long_are_dropped() -> None:
    stat = {"time": "x" * 65, "rxnb": "2", "rxok": True, "lati": 46.2, "long": 6, "alti": 1.5, "ackr": None}
    push = parse(header(0x00) + EUI + compact({"stat": stat}).encode())
    assert isinstance(push, PushData)
    assert push.stat == {"lati": 46.2, "long": 6}


def test_a_datagram_at_the_size_cap_is_parsed() -> None:
    head = header(0x00) + EUI
    body = compact({"rxpk": [_RXPK_OK]}).encode()
    datagram = head + body + b" " * (packets.MAX_DATAGRAM_BYTES - len(head) - len(body))
    assert len(datagram) == packets.MAX_DATAGRAM_BYTES
    push = parse(datagram)
    assert isinstance(push, PushData) and len(push.rxpk) == 1


def test_kerlink_tx_ack_none_is_success() -> None:
    ack = parse(base64.b64decode(KERLINK["tx_ack"]))
    assert ack == TxAck(0x0004, KERLINK_EUI, "NONE")
    assert isinstance(ack, TxAck) and ack.ok


# --------------------------------------------------------------------------- round trips

tokens = st.integers(0, 0xFFFF)
euis = st.binary(min_size=8, max_size=8)
versions = st.sampled_from([1, 2])
json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def lora_rxpk(draw: st.DrawFn) -> Rxpk:
    return make_rxpk(
        draw(st.binary(max_size=255)),
        freq_hz=draw(st.integers(137_000_000, 1_020_000_000)),
        sf=draw(st.integers(5, 12)),
        bw_hz=draw(st.sampled_from([125_000, 250_000, 500_000])),
        rssi_dbm=draw(st.integers(-140, 0)),
        snr_db=draw(st.integers(-250, 150)) / 10,
        tmst_us=draw(st.integers(0, 2**32 - 1)),
        time_iso=draw(st.none() | st.just("2024-05-01T12:00:00.000001Z")),
        coding_rate=draw(st.sampled_from(["4/5", "4/6", "4/7", "4/8"])),
        crc_ok=draw(st.booleans()),
    )


@given(
    st.one_of(
        st.builds(PushData, tokens, euis, st.lists(lora_rxpk(), max_size=4), st.none(), versions),
        st.builds(PushAck, tokens, versions),
        st.builds(PullData, tokens, euis, versions),
        st.builds(PullAck, tokens, versions),
        st.builds(PullResp, tokens, st.dictionaries(st.text(max_size=8), json_values, max_size=6), versions),
        st.builds(TxAck, tokens, euis, st.none() | st.sampled_from(sorted(packets.TX_ACK_ERRORS)), versions),
    )
)
def test_every_packet_type_round_trips(packet: packets.Packet) -> None:
    assert parse(packet.to_bytes()) == packet


@given(lora_rxpk())
def test_make_rxpk_and_rxpk_to_frame_parts_agree(rxpk: Rxpk) -> None:
    payload, rx = rxpk_to_frame_parts(rxpk)
    assert payload == base64.b64decode(rxpk["data"])
    # Hz survive the MHz float exactly, for every frequency (round(), not int()).
    assert rx.freq_hz / 1_000_000 == rxpk["freq"]
    assert (rx.rssi_dbm, rx.snr_db) == (rxpk["rssi"], rxpk["lsnr"])
    assert rx.crc_ok == (rxpk["stat"] == 1)


@given(st.integers(137_000_000, 1_020_000_000))
def test_frequency_in_hz_survives_the_mhz_float(freq_hz: int) -> None:
    rxpk = make_rxpk(b"\x40", freq_hz=freq_hz, sf=7, rssi_dbm=-50, snr_db=9.0, tmst_us=0)
    wire = json.loads(json.dumps(rxpk))  # through the JSON text, as on the wire
    assert rxpk_to_frame_parts(wire)[1].freq_hz == freq_hz


def test_make_rxpk_matches_the_section4_shape() -> None:
    # [PROTO] §4 field names and units: freq in MHz, datr "SF7BW125", integer rssi,
    # lsnr to 0.1 dB, stat -1 for a failed CRC, data padded base64.
    rxpk = make_rxpk(
        b"\x01\x02\x03\x04",
        freq_hz=868_100_000,
        sf=7,
        rssi_dbm=-87.4,
        snr_db=7.25,
        tmst_us=2**32 + 5,
        time_iso="2024-05-01T12:00:00.000001Z",
        crc_ok=False,
    )
    assert rxpk == {
        "time": "2024-05-01T12:00:00.000001Z",
        "tmst": 5,  # the concentrator counter wraps at 32 bits
        "chan": 0,
        "rfch": 0,
        "freq": 868.1,
        "stat": -1,
        "modu": "LORA",
        "datr": "SF7BW125",
        "codr": "4/5",
        "rssi": -87,
        "lsnr": 7.2,
        "size": 4,
        "data": "AQIDBA==",
    }


@pytest.mark.parametrize(
    "kwargs",
    [{"sf": 13}, {"sf": 4}, {"bw_hz": 100_000}, {"bw_hz": 125_500}, {"coding_rate": "5/4"}],
)
def test_make_rxpk_refuses_impossible_radio_settings(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"freq_hz": 868_100_000, "sf": 7, "rssi_dbm": -50, "snr_db": 5.0, "tmst_us": 0}
    with pytest.raises(ValueError):
        make_rxpk(b"", **(args | kwargs))


@pytest.mark.parametrize(
    "build",
    [
        lambda: PushAck(0x10000),
        lambda: PushAck(-1),
        lambda: PushAck(1, version=3),
        lambda: PullData(1, b"\x00" * 7),
        lambda: PushData(1, b"\x00" * 9, []),
        lambda: TxAck(1, b""),
    ],
)
def test_constructors_refuse_values_that_cannot_be_encoded(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


# --------------------------------------------------------------------------- malformed datagrams

_PD = header(0x00) + EUI  # PUSH_DATA header + EUI, JSON to follow
_RXPK_OK = {"data": "AQID", "size": 3}

MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty", b"", "truncated"),
    ("three bytes", b"\x02\x00\x00", "truncated"),
    ("version 0", b"\x00\x00\x00\x01", "bad_version"),
    ("version 3", b"\x03\x00\x00\x01", "bad_version"),
    ("version 0xff", b"\xff" * 40, "bad_version"),
    ("identifier 6", b"\x02\x00\x00\x06", "unknown_identifier"),
    ("identifier 0xff", b"\x02\x00\x00\xff" + EUI, "unknown_identifier"),
    ("push_data without EUI", header(0x00) + EUI[:7], "truncated"),
    ("push_data without JSON", _PD, "bad_json"),
    ("push_data not JSON", _PD + b"hello", "bad_json"),
    ("push_data JSON cut short", _PD + b'{"rxpk":[', "bad_json"),
    ("push_data JSON array", _PD + b"[]", "bad_json"),
    ("push_data not UTF-8", _PD + b'{"a":"\xff"}', "bad_json"),
    ("push_data NaN", _PD + b'{"stat":{"lati":NaN}}', "bad_json"),
    ("push_data Infinity", _PD + b'{"stat":{"lati":-Infinity}}', "bad_json"),
    ("push_data nested 16000 deep", _PD + b"[" * 16_000 + b"]" * 16_000, "bad_json"),
    # Bounds, checked before anything is decoded (docs/radio.md "Bounds").
    ("push_data nested 100000 deep", _PD + b"[" * 100_000 + b"]" * 100_000, "datagram_too_large"),
    ("datagram of the UDP maximum", _PD + b" " * (65_507 - len(_PD)), "datagram_too_large"),
    (
        "256 rxpk in one push_data",
        _PD + compact({"rxpk": [_RXPK_OK] * 256}).encode(),
        "too_many_rxpk",
    ),
    (
        "stat with 65 keys",
        _PD + compact({"stat": {f"k{i}": 0 for i in range(65)}}).encode(),
        "stat_too_large",
    ),
    ("push_data 5000-digit integer", _PD + b'{"x":' + b"9" * 5000 + b"}", "bad_json"),
    ("rxpk not an array", _PD + b'{"rxpk":{}}', "bad_rxpk"),
    ("stat not an object", _PD + b'{"stat":[1,2]}', "bad_stat"),
    ("push_ack with trailing bytes", header(0x01) + b"\x00", "trailing_bytes"),
    ("pull_data without EUI", header(0x02) + EUI[:4], "truncated"),
    ("pull_data with trailing bytes", header(0x02) + EUI + b"{}", "trailing_bytes"),
    ("pull_ack with trailing bytes", header(0x04) + EUI, "trailing_bytes"),
    ("pull_resp without JSON", header(0x03), "bad_json"),
    ("pull_resp without txpk", header(0x03) + b'{"rxpk":[]}', "bad_txpk"),
    ("pull_resp txpk not an object", header(0x03) + b'{"txpk":"now"}', "bad_txpk"),
    ("tx_ack without EUI", header(0x05) + EUI[:3], "truncated"),
    ("tx_ack without txpk_ack", header(0x05) + EUI + b'{"error":"NONE"}', "bad_tx_ack"),
    ("tx_ack error not a string", header(0x05) + EUI + b'{"txpk_ack":{"error":3}}', "bad_tx_ack"),
    ("tx_ack not JSON", header(0x05) + EUI + b"NONE", "bad_json"),
]


@pytest.mark.parametrize(
    ("datagram", "reason"), [(d, r) for _, d, r in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_datagram_is_rejected_with_its_reason(datagram: bytes, reason: str) -> None:
    assert reason_of(datagram) == reason


# A well-formed PUSH_DATA with one bad rxpk: the datagram parses (it is acknowledged and its other
# rxpk are used), the bad entry is refused alone by rxpk_to_frame_parts with its reason.
BAD_RXPK_IN_GOOD_DATAGRAM: list[tuple[str, bytes, str]] = [
    ("rxpk entry not an object", _PD + b'{"rxpk":[1]}', "bad_rxpk"),
    ("rxpk without data", _PD + b'{"rxpk":[{"size":0}]}', "bad_rxpk"),
    ("rxpk data a number", _PD + b'{"rxpk":[{"data":5}]}', "bad_rxpk"),
    ("rxpk data bad characters", _PD + b'{"rxpk":[{"data":"!!!!"}]}', "bad_base64"),
    ("rxpk data URL-safe alphabet", _PD + b'{"rxpk":[{"data":"-_-_"}]}', "bad_base64"),
    ("rxpk data non-ASCII", _PD + '{"rxpk":[{"data":"é"}]}'.encode(), "bad_base64"),
    ("rxpk data impossible length", _PD + b'{"rxpk":[{"data":"AAAAA"}]}', "bad_base64"),
    ("rxpk size too big", _PD + b'{"rxpk":[{"data":"AQID","size":4}]}', "size_mismatch"),
    ("rxpk size too small", _PD + b'{"rxpk":[{"data":"AQID","size":2}]}', "size_mismatch"),
    ("rxpk size a string", _PD + b'{"rxpk":[{"data":"AQID","size":"3"}]}', "bad_rxpk"),
    ("rxpk size a bool", _PD + b'{"rxpk":[{"data":"AQ==","size":true}]}', "bad_rxpk"),
    (
        "two good rxpk and one whose size is not its data's",
        _PD + compact({"rxpk": [LORA_RXPK, LORA_RXPK, LORA_RXPK | {"size": 9}]}).encode(),
        "size_mismatch",
    ),
]


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [(d, r) for _, d, r in BAD_RXPK_IN_GOOD_DATAGRAM],
    ids=[n for n, _, _ in BAD_RXPK_IN_GOOD_DATAGRAM],
)
def test_a_bad_rxpk_is_refused_alone_not_its_datagram(datagram: bytes, reason: str) -> None:
    packet = parse(datagram)
    assert isinstance(packet, PushData)
    *good, bad = packet.rxpk
    for rxpk in good:
        rxpk_to_frame_parts(rxpk)
    with pytest.raises(DatagramError) as info:
        rxpk_to_frame_parts(bad)
    assert info.value.reason == reason


BAD_RXPK: list[tuple[str, dict[str, Any], str]] = [
    ("FSK", {"modu": "FSK", "datr": 50000}, "unsupported_modulation"),
    ("LR-FHSS", {"modu": "LR-FHSS"}, "unsupported_modulation"),
    ("modu missing", {"modu": None}, "bad_rxpk"),
    ("freq missing", {"freq": None}, "bad_rxpk"),
    ("freq a string", {"freq": "868.1"}, "bad_rxpk"),
    ("freq a bool", {"freq": True}, "bad_rxpk"),
    ("freq zero", {"freq": 0}, "bad_rxpk"),
    ("freq negative", {"freq": -868.1}, "bad_rxpk"),
    ("freq infinite", {"freq": math.inf}, "bad_rxpk"),
    ("freq NaN", {"freq": math.nan}, "bad_rxpk"),
    ("freq 400-digit integer", {"freq": 10**400}, "bad_rxpk"),
    ("datr missing", {"datr": None}, "bad_rxpk"),
    ("datr a number", {"datr": 50000}, "bad_rxpk"),
    ("datr SF13", {"datr": "SF13BW125"}, "bad_rxpk"),
    ("datr SF4", {"datr": "SF4BW125"}, "bad_rxpk"),
    ("datr BW126", {"datr": "SF7BW126"}, "bad_rxpk"),
    ("datr lowercase", {"datr": "sf7bw125"}, "bad_rxpk"),
    ("codr missing", {"codr": None}, "bad_rxpk"),
    ("codr 5/4", {"codr": "5/4"}, "bad_rxpk"),
    ("stat missing", {"stat": None}, "bad_rxpk"),
    ("stat 2", {"stat": 2}, "bad_rxpk"),
    ("stat true", {"stat": True}, "bad_rxpk"),
    ("stat 1.0", {"stat": 1.0}, "bad_rxpk"),
    ("tmst negative", {"tmst": -1}, "bad_rxpk"),
    ("tmst beyond 32 bits", {"tmst": 2**32}, "bad_rxpk"),
    ("tmst a string", {"tmst": "1000"}, "bad_rxpk"),
    ("time a number", {"time": 5}, "bad_rxpk"),
    ("time very long", {"time": "9" * 1000}, "bad_rxpk"),
    ("rssi a string", {"rssi": "-50"}, "bad_rxpk"),
    ("rssi and lsnr missing, no rsig", {"rssi": None, "lsnr": None}, "bad_rxpk"),
    ("rsig empty", {"rssi": None, "lsnr": None, "rsig": []}, "bad_rxpk"),
    ("rsig not objects", {"rssi": None, "lsnr": None, "rsig": [1]}, "bad_rxpk"),
    ("rsig without lsnr", {"rssi": None, "lsnr": None, "rsig": [{"rssic": -50}]}, "bad_rxpk"),
    ("data bad base64", {"data": "A"}, "bad_base64"),
    ("size mismatch", {"size": 2}, "size_mismatch"),
    ("not an object", {"__replace__": [1, 2]}, "bad_rxpk"),
]


@pytest.mark.parametrize(
    ("changes", "reason"), [(c, r) for _, c, r in BAD_RXPK], ids=[n for n, _, _ in BAD_RXPK]
)
def test_bad_rxpk_is_rejected_with_its_reason(changes: dict[str, Any], reason: str) -> None:
    if "__replace__" in changes:
        rxpk: Any = changes["__replace__"]
    else:
        rxpk = {k: v for k, v in (LORA_RXPK | changes).items() if v is not None}
    with pytest.raises(DatagramError) as info:
        rxpk_to_frame_parts(rxpk)
    assert info.value.reason == reason


def test_good_lora_rxpk_of_the_bad_rxpk_table_is_good() -> None:
    # Guards the table above: each case fails because of its change, not the base.
    payload, rx = rxpk_to_frame_parts(LORA_RXPK)  # type: ignore[arg-type]
    assert payload == b"\x01\x02\x03"
    assert (rx.freq_hz, rx.rssi_dbm, rx.snr_db, rx.gateway_eui, rx.gps_time) == (
        868_100_000,
        -50,
        9.5,
        None,
        None,
    )


@pytest.mark.parametrize(("stat", "crc_ok"), [(1, True), (-1, False), (0, False)])
def test_crc_status_maps_to_crc_ok(stat: int, crc_ok: bool) -> None:
    # [PROTO] §4 stat: 1 = OK, -1 = fail, 0 = no CRC.
    assert rxpk_to_frame_parts(LORA_RXPK | {"stat": stat})[1].crc_ok is crc_ok  # type: ignore[arg-type]


def test_top_level_rssi_and_lsnr_win_over_rsig() -> None:
    rxpk = LORA_RXPK | {"rsig": [{"ant": 0, "chan": 0, "rssic": -99, "lsnr": -9.9}]}
    assert rxpk_to_frame_parts(rxpk)[1].rssi_dbm == -50  # type: ignore[arg-type]
    only_lsnr = {k: v for k, v in rxpk.items() if k != "rssi"}
    assert rxpk_to_frame_parts(only_lsnr)[1].rssi_dbm == -99  # type: ignore[arg-type]


def test_sf5_and_long_interleaving_coding_rate_from_sx1302_forwarders_are_accepted() -> None:
    _, rx = rxpk_to_frame_parts(LORA_RXPK | {"datr": "SF5BW500", "codr": "4/8LI"})  # type: ignore[arg-type]
    assert (rx.sf, rx.bw_hz, rx.coding_rate) == (5, 500_000, "4/8LI")


# --------------------------------------------------------------------------- anything in, DatagramError out


def _only_datagram_error(datagram: bytes) -> None:
    try:
        parse(datagram)
    except DatagramError as exc:
        # A counter key: snake_case, digits allowed after the first letter (e.g. bad_base64).
        assert re.fullmatch(r"[a-z][a-z0-9_]*", exc.reason), exc.reason


@settings(max_examples=2000)
@given(st.binary(max_size=300))
def test_parse_of_random_bytes_raises_only_datagram_error(datagram: bytes) -> None:
    _only_datagram_error(datagram)


@settings(max_examples=500)
@given(st.binary(min_size=4, max_size=40).map(lambda b: bytes((2,)) + b[1:3] + bytes((b[3] % 6,)) + b[4:]))
def test_parse_of_random_bytes_behind_a_valid_header_raises_only_datagram_error(datagram: bytes) -> None:
    _only_datagram_error(datagram)


rxpk_fields = st.dictionaries(
    st.sampled_from(
        ["time", "tmst", "freq", "stat", "modu", "datr", "codr", "rssi", "lsnr", "size", "data", "rsig"]
    ),
    json_values | st.sampled_from(["LORA", "SF7BW125", "4/5", "AQID", 868.1, 1, -1, 3]),
    max_size=12,
)


@settings(max_examples=1000)
@given(
    st.sampled_from([0x00, 0x03, 0x05]),
    st.dictionaries(
        st.sampled_from(["rxpk", "stat", "txpk", "txpk_ack"]),
        json_values | st.lists(rxpk_fields, max_size=3) | rxpk_fields,
        max_size=3,
    ),
)
def test_parse_of_random_json_raises_only_datagram_error(identifier: int, body: dict[str, Any]) -> None:
    eui = EUI if identifier != 0x03 else b""
    _only_datagram_error(header(identifier) + eui + json.dumps(body).encode())


@settings(max_examples=1000)
@given(json_values | rxpk_fields)
def test_rxpk_to_frame_parts_of_random_json_raises_only_datagram_error(rxpk: Any) -> None:
    try:
        rxpk_to_frame_parts(rxpk)
    except DatagramError as exc:
        assert exc.reason
