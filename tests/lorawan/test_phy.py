"""Tests of the PHYPayload parser and the data-frame builder (gateway.lorawan.phy).

Known frames come from:

* [LP] anthonykirby/lora-packet (npm ``lora-packet``): ``__tests__/mic_test.ts``,
  ``decrypt_test.ts``, ``packet_test.ts`` (frames built from fields, and the
  frame of GitHub issue #18 'should parse packet #1').
* [BL] brocaar/lorawan (Go, ChirpStack v3): ``phypayload_test.go``
  (TestPHYPayloadData, TestPHYPayloadJoinRequest, TestPHYPayloadJoinAccept,
  ExampleNewPHYPayload, ExampleNewPHYPayload_joinRequest).
* [MM] Strooom/MuMo-v2-Node-SW ``test/test_generic_lorawan_4_mac/test.cpp``
  (test_construct_1 / test_construct_2: frames seen by The Things Network).

Layout: LoRaWAN 1.0.4 §4 (MHDR §4.2, FHDR §4.3.1, FPort §4.3.2, MIC §4.4),
join-request §6.2.4, join-accept §6.2.6; rejoin-request: LoRaWAN 1.1 §6.2.4.1.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import FrameError
from gateway.lorawan.crypto import SessionKeys, join_request_mic
from gateway.lorawan.phy import (
    DataFrame,
    FCtrl,
    JoinAccept,
    JoinRequest,
    Proprietary,
    RejoinRequest,
    build_data_frame,
    parse,
)
from gateway.messages import MType


def _h(text: str) -> bytes:
    return bytes.fromhex(text)


def _fctrl(octet: int) -> FCtrl:
    return FCtrl(
        adr=bool(octet & 0x80),
        adr_ack_req=bool(octet & 0x40),
        ack=bool(octet & 0x20),
        fpending=bool(octet & 0x10),
        fopts_len=octet & 0x0F,
    )


# --- parse: known data frames ----------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    name: str
    frame: bytes
    mtype: MType
    dev_addr: bytes
    fctrl: FCtrl
    fcnt16: int
    fopts: bytes
    fport: int | None
    frm_payload: bytes
    mic: bytes


_NO_FLAGS = _fctrl(0)

# fmt: off
KNOWN_DATA = [
    Parsed(  # [LP] README demo / mic_test.ts / decrypt_test.ts ("test", MIC 2b11ff0d)
        "lp_test", _h("40F17DBE4900020001954378762B11FF0D"), MType.UNCONFIRMED_DATA_UP,
        _h("49be7df1"), _NO_FLAGS, 2, b"", 1, _h("95437876"), _h("2b11ff0d"),
    ),
    Parsed(  # [LP] mic_test.ts: FPort 1 without FRMPayload (MIC 2a3518af)
        "lp_fport_no_payload", _h("40F17DBE49000300012A3518AF"), MType.UNCONFIRMED_DATA_UP,
        _h("49be7df1"), _NO_FLAGS, 3, b"", 1, b"", _h("2a3518af"),
    ),
    Parsed(  # [LP] mic_test.ts 'MIC for ACK': downlink with ACK
        "lp_ack_down", _h("60f17dbe4920020001f9d65d27"), MType.UNCONFIRMED_DATA_DOWN,
        _h("49be7df1"), _fctrl(0x20), 2, b"", 1, b"", _h("f9d65d27"),
    ),
    Parsed(  # [LP] packet_test.ts 'should omit FPort if no FRMPayload & no FPort supplied'
        "lp_no_fport", _h("40d4c3b2a1000100eeeeeeee"), MType.UNCONFIRMED_DATA_UP,
        _h("a1b2c3d4"), _NO_FLAGS, 1, b"", None, b"", _h("eeeeeeee"),
    ),
    Parsed(  # [LP] packet_test.ts 'should create packet with FOpts'
        "lp_fopts", _h("40d4c3b2a1040100F0F1F2F30174657374eeeeeeee"), MType.UNCONFIRMED_DATA_UP,
        _h("a1b2c3d4"), _fctrl(0x04), 1, _h("F0F1F2F3"), 1, b"test", _h("eeeeeeee"),
    ),
    Parsed(  # [LP] packet_test.ts 'should create packet with FCnt as buffer': FCnt 0x1234
        "lp_fcnt_1234", _h("40d4c3b2a10034120174657374eeeeeeee"), MType.UNCONFIRMED_DATA_UP,
        _h("a1b2c3d4"), _NO_FLAGS, 0x1234, b"", 1, b"test", _h("eeeeeeee"),
    ),
    Parsed(  # [LP] packet_test.ts 'should create packet with MType as integer': MType 5
        "lp_confirmed_down", _h("A0d4c3b2a10001000174657374eeeeeeee"), MType.CONFIRMED_DATA_DOWN,
        _h("a1b2c3d4"), _NO_FLAGS, 1, b"", 1, b"test", _h("eeeeeeee"),
    ),
    Parsed(  # [LP] packet_test.ts / fopts_test.ts 'should parse packet #1' (GitHub issue #18)
        "lp_issue18", _h("4084412505A3010009110308B33750F504D4B86A"), MType.UNCONFIRMED_DATA_UP,
        _h("05254184"), _fctrl(0xA3), 1, _h("091103"), 8, _h("B33750F5"), _h("04D4B86A"),
    ),
    Parsed(  # [BL] TestPHYPayloadData: DevAddr 01020304, FCnt 1, ADR, FPort 1
        "bl_hello_adr", base64.b64decode("QAQDAgGAAQABppRkJhXWw7WC"), MType.UNCONFIRMED_DATA_UP,
        _h("01020304"), _fctrl(0x80), 1, b"", 1, _h("a694642615"), _h("d6c3b582"),
    ),
    Parsed(  # [LP] packet_test.ts 'should encode packet with Lorawan10' (brocaar/lorawan docs)
        "bl_confirmed_up_fopts", _h("80040302010300000673070ae264d4f7e117d2c0"), MType.CONFIRMED_DATA_UP,
        _h("01020304"), _fctrl(0x03), 0, _h("067307"), 10, _h("e264d4f7"), _h("e117d2c0"),
    ),
]
# fmt: on


@pytest.mark.parametrize("known", KNOWN_DATA, ids=lambda k: k.name)
def test_parse_known_data_frames(known: Parsed) -> None:
    frame = parse(known.frame)
    assert isinstance(frame, DataFrame)
    assert frame.mhdr == known.frame[0]
    assert frame.mtype is known.mtype
    assert frame.dev_addr == known.dev_addr
    assert frame.fctrl == known.fctrl
    assert frame.fcnt16 == known.fcnt16
    assert frame.fopts == known.fopts
    assert frame.fport == known.fport
    assert frame.frm_payload == known.frm_payload
    assert frame.mic == known.mic
    assert frame.mic_input == known.frame[:-4]
    assert frame.to_bytes() == known.frame
    assert frame.uplink is (known.mtype in (MType.UNCONFIRMED_DATA_UP, MType.CONFIRMED_DATA_UP))
    assert frame.confirmed is (known.mtype in (MType.CONFIRMED_DATA_UP, MType.CONFIRMED_DATA_DOWN))


def test_fctrl_all_flags() -> None:
    # [LP] packet_test.ts 'correct FCtrl when all flags set': ADR, ADRACKReq, ACK, FPending -> 0xF0
    frame = parse(_h("40d4c3b2a1f000000174657374eeeeeeee"))
    assert isinstance(frame, DataFrame)
    assert frame.fctrl == FCtrl(adr=True, adr_ack_req=True, ack=True, fpending=True, fopts_len=0)
    assert frame.fctrl.to_byte() == 0xF0


def test_known_frames_verify_and_decrypt() -> None:
    # [LP] README: NwkSKey / AppSKey of frame 40F17DBE...; [BL] TestPHYPayloadData keys 02*16 / 01*16.
    cases = [
        (
            "40F17DBE4900020001954378762B11FF0D",
            "44024241ed4ce9a68c6a8bc055233fd3",
            "ec925802ae430ca77fd3dd73cb2cc588",
            2,
            b"test",
        ),
        (base64.b64decode("QAQDAgGAAQABppRkJhXWw7WC").hex(), "02" * 16, "01" * 16, 1, b"hello"),
    ]
    for frame_hex, nwk, app, fcnt32, plaintext in cases:
        frame = parse(_h(frame_hex))
        assert isinstance(frame, DataFrame) and frame.fport is not None
        keys = SessionKeys(_h(nwk), _h(app))
        mic = keys.data_mic(frame.mic_input, frame.dev_addr, fcnt32, frame.uplink)
        assert hmac.compare_digest(mic, frame.mic)
        plain = keys.crypt_frm_payload(frame.frm_payload, frame.dev_addr, fcnt32, True, frame.fport)
        assert plain == plaintext


# --- parse: joins, rejoin, proprietary --------------------------------------------------------------

# fmt: off
JOIN_REQUESTS = [
    # (name, frame, AppKey, JoinEUI, DevEUI, DevNonce): identifiers MSB first, as the sources print them
    ("lp_join_request", _h("0039363463336913AA05693574323831330489C65B1304"),  # [LP] mic_test.ts
     _h("98929b92c49edba9676d646d3b612456"), _h("aa13693363343639"), _h("3331383274356905"), _h("8904")),
    # [BL] TestPHYPayloadJoinRequest
    ("bl_join_request", base64.b64decode("AAQDAgEEAwIBBQQDAgUEAwItEGqZDhI="),
     bytes([1] * 16), _h("0102030401020304"), _h("0203040502030405"), bytes([16, 45])),
    ("lp_join_request_fields", _h("00DDCCBBAADDCCBBAADDCCBBAADDCCBBAABBAAeeeeeeee"),  # [LP] packet_test.ts
     None, _h("AABBCCDDAABBCCDD"), _h("AABBCCDDAABBCCDD"), _h("AABB")),
]
# fmt: on


@pytest.mark.parametrize(
    ("frame_bytes", "app_key", "join_eui", "dev_eui", "dev_nonce"),
    [j[1:] for j in JOIN_REQUESTS],
    ids=[j[0] for j in JOIN_REQUESTS],
)
def test_parse_join_request(
    frame_bytes: bytes, app_key: bytes | None, join_eui: bytes, dev_eui: bytes, dev_nonce: bytes
) -> None:
    frame = parse(frame_bytes)
    assert isinstance(frame, JoinRequest)
    assert (frame.join_eui, frame.dev_eui, frame.dev_nonce) == (join_eui, dev_eui, dev_nonce)
    assert frame.mic == frame_bytes[19:]
    assert frame.mic_input == frame_bytes[:19]
    assert frame.to_bytes() == frame_bytes
    if app_key is not None:
        assert join_request_mic(app_key, frame.mic_input) == frame.mic


@pytest.mark.parametrize(
    "frame_bytes",
    [
        _h("20493eeb51fba2116f810edb3742975142"),  # [BL] TestPHYPayloadJoinAccept, encrypted, no CFList
        _h("20CCBBAACCBBAADDCCBBAA120F11223311223311223311223311223300eeeeeeee"),  # [LP] with CFList
    ],
)
def test_parse_join_accept_keeps_it_encrypted(frame_bytes: bytes) -> None:
    assert parse(frame_bytes) == JoinAccept(encrypted=frame_bytes[1:])


@pytest.mark.parametrize("body_len", [14, 19])  # rejoin type 0/2 and type 1 (LoRaWAN 1.1 §6.2.4.1)
def test_parse_rejoin_request(body_len: int) -> None:
    body = bytes(range(body_len))
    frame = parse(bytes([0xC0]) + body + _h("01020304"))
    assert frame == RejoinRequest(body=body, mic=_h("01020304"))


@pytest.mark.parametrize("payload", [b"", b"\x01", bytes(range(200))])
def test_parse_proprietary(payload: bytes) -> None:
    assert parse(bytes([0xE0]) + payload) == Proprietary(mhdr=0xE0, payload=payload)


def test_mhdr_rfu_bits_are_kept_and_covered_by_the_mic() -> None:
    # MHDR bits 4..2 are RFU (§4.2): not a reason to drop, and mic_input keeps them.
    frame = parse(_h("5cf17dbe4900020001954378762b11ff0d"))
    assert isinstance(frame, DataFrame)
    assert frame.mtype is MType.UNCONFIRMED_DATA_UP
    assert frame.mic_input[0] == 0x5C


# --- parse: malformed frames -----------------------------------------------------------------------

_GOOD = "40f17dbe4900020001954378762b11ff0d"

MALFORMED = [
    # (name, frame hex, reason)
    ("empty", "", "truncated"),
    ("mhdr only", "40", "truncated"),
    ("data frame of 11 bytes", "40f17dbe49000200019543", "truncated"),
    ("confirmed down of 9 bytes", "a0f17dbe4900020001", "truncated"),
    ("major 1", "41" + _GOOD[2:], "bad_major"),
    ("major 3 on a join-request", "03" + "00" * 22, "bad_major"),
    ("major 2 on proprietary", "e2" + "00" * 4, "bad_major"),
    ("FOptsLen 1 but nothing after FHDR", "40f17dbe4901020011223344", "bad_fopts"),
    ("FOptsLen 15 in a 20-byte frame", "40f17dbe490f0200" + "00" * 8 + "11223344", "bad_fopts"),
    ("FOpts with FPort 0", "40f17dbe4901020006" + "00" + "95437876" + "2b11ff0d", "fopts_with_port0"),
    ("FOpts with FPort 0, empty FRMPayload", "40f17dbe490102000600" + "2b11ff0d", "fopts_with_port0"),
    ("join-request of 22 bytes", "00" * 22, "truncated"),
    ("join-request of 24 bytes", "00" * 24, "bad_frame"),
    ("join-accept of 16 bytes", "20" + "00" * 15, "truncated"),
    ("join-accept of 18 bytes", "20" + "00" * 17, "bad_frame"),
    ("join-accept of 34 bytes", "20" + "00" * 33, "bad_frame"),
    ("rejoin of 18 bytes", "c0" + "00" * 17, "truncated"),
    ("rejoin of 20 bytes", "c0" + "00" * 19, "bad_frame"),
    ("longer than a LoRa frame", "40" + "00" * 255, "bad_frame"),
]


@pytest.mark.parametrize(("frame_hex", "reason"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_frames_raise_frame_error_with_reason(frame_hex: str, reason: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse(bytes.fromhex(frame_hex))
    assert type(caught.value) is FrameError
    assert caught.value.reason == reason


def test_fopts_exactly_filling_the_frame_is_valid() -> None:
    # FOptsLen 4 ending right before the MIC: no FPort, no payload (§4.3.1.6 allows MAC commands alone).
    frame = parse(_h("40f17dbe49040200" + "02030405" + "11223344"))
    assert isinstance(frame, DataFrame)
    assert (frame.fopts, frame.fport, frame.frm_payload) == (_h("02030405"), None, b"")


# --- build_data_frame reproduces published frames ----------------------------------------------------

_BL_NWK = bytes(range(1, 17))
_BL_APP = bytes(range(16, 0, -1))

_UP, _DOWN, _CUP = MType.UNCONFIRMED_DATA_UP, MType.UNCONFIRMED_DATA_DOWN, MType.CONFIRMED_DATA_UP
_LP_NWK, _LP_APP = "44024241ed4ce9a68c6a8bc055233fd3", "ec925802ae430ca77fd3dd73cb2cc588"
_MM_NWK, _MM_APP = "8DD6FEB76D7754A78538BA5089A834AA", "E54E4411F4FE8955904197C8D824BC2C"
_MM_PLAIN = "02017EC5536412835C40107EC553648D77A241117EC5536450424042127EC553645C897E44"

# fmt: off
BUILT = [
    # (name, expected frame, NwkSKey, AppSKey, build kwargs)
    # [LP] packet_test.ts 'should calculate MIC if keys provided'
    ("lp_test", "40f17dbe4900020001954378762b11ff0d", _LP_NWK, _LP_APP,
     {"mtype": _UP, "dev_addr": _h("49be7df1"), "fcnt32": 2, "fport": 1, "payload": b"test"}),
    # [LP] packet_test.ts 'should create packet with port 0'
    ("lp_fport0", "40D4C3B2A1001000002712A3F9C9", "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4", "00" * 16,
     {"mtype": _UP, "dev_addr": _h("a1b2c3d4"), "fcnt32": 16, "fport": 0, "payload": b"\x02"}),
    # [LP] mic_test.ts 'MIC for ACK'
    ("lp_ack_down", "60f17dbe4920020001f9d65d27", _LP_NWK, _LP_APP,
     {"mtype": _DOWN, "dev_addr": _h("49be7df1"), "fcnt32": 2, "fport": 1, "payload": b"", "ack": True}),
    # [BL] TestPHYPayloadData
    ("bl_hello_adr", base64.b64decode("QAQDAgGAAQABppRkJhXWw7WC").hex(), "02" * 16, "01" * 16,
     {"mtype": _UP, "dev_addr": _h("01020304"), "fcnt32": 1, "fport": 1, "payload": b"hello", "adr": True}),
    # [BL] ExampleNewPHYPayload
    ("bl_confirmed_up", bytes([128, 4, 3, 2, 1, 0, 0, 0, 10, 226, 100, 212, 247, 181, 106, 14, 117]).hex(),
     _BL_NWK.hex(), _BL_APP.hex(),
     {"mtype": _CUP, "dev_addr": _h("01020304"), "fcnt32": 0, "fport": 10, "payload": _h("01020304")}),
    # [LP] packet_test.ts 'should encode packet with Lorawan10' (from the brocaar/lorawan docs)
    ("bl_confirmed_up_fopts", "80040302010300000673070ae264d4f7e117d2c0", _BL_NWK.hex(), _BL_APP.hex(),
     {"mtype": _CUP, "dev_addr": _h("01020304"), "fcnt32": 0, "fport": 10, "payload": _h("01020304"),
      "fopts": _h("067307")}),
    # [LP] fopts_test.ts 'should decode packet with Lorawan1.0 Encrypted Fopts' (brocaar/lorawan docs);
    # FOpts are opaque bytes to 1.0, and without ACK the 1.1 downlink MIC equals the 1.0 one.
    ("bl_down_fopts", base64.b64decode("YAQDAgEDAAAirAoB8LRo3ape0To=").hex(),
     (bytes([1] * 15) + b"\x00").hex(), _BL_APP.hex(),
     {"mtype": _DOWN, "dev_addr": _h("01020304"), "fcnt32": 0, "fport": 1, "payload": _h("01020304"),
      "fopts": _h("22ac0a")}),
    # [MM] test_construct_1 (a frame seen by TTN)
    ("mm_ttn_uplink",
     "4011990b26008b3410a1b61bb7d0a47f5c1d42c7f292b5a34aa326f69bd6ac525c173b97010e49ff92a86d88e2db0184de4a",
     _MM_NWK, _MM_APP,
     {"mtype": _UP, "dev_addr": _h("260B9911"), "fcnt32": 13451, "fport": 16, "payload": _h(_MM_PLAIN)}),
    # [MM] test_construct_2
    ("mm_one_block", "401bc70b26000000074eaa794c99d25ebeffcee0463c3b34def5926d68",
     "34CE07A8DDE81F4C29A0AED7B4F1D7BB", "ECF61A5B18BFBF81EF4FA7DBA764CE8B",
     {"mtype": _UP, "dev_addr": _h("260BC71B"), "fcnt32": 0, "fport": 7, "payload": bytes(16)}),
]
# fmt: on


@pytest.mark.parametrize(
    ("expected", "nwk", "app", "kwargs"), [b[1:] for b in BUILT], ids=[b[0] for b in BUILT]
)
def test_build_reproduces_published_frames(
    expected: str, nwk: str, app: str, kwargs: dict[str, object]
) -> None:
    keys = SessionKeys(_h(nwk), _h(app))
    assert build_data_frame(keys, **kwargs) == _h(expected)  # type: ignore[arg-type]


# --- round trip: build -> parse -> verify -> decrypt -------------------------------------------------

_KEYS = SessionKeys(_h("000102030405060708090a0b0c0d0e0f"), _h("f0e0d0c0b0a090807060504030201000"))
_DEV_ADDR = _h("26011bda")

ROUND_TRIPS = [
    # (name, fcnt32, fport, payload, fopts, flags)
    ("plain", 7, 1, b"hello edge", b"", {}),
    ("empty payload with fport", 8, 2, b"", b"", {}),
    ("no fport no payload", 9, None, b"", b"", {}),
    ("fopts and payload", 10, 3, b"\x01\x02", _h("0203"), {"adr": True}),
    ("fopts only", 11, None, b"", _h("06"), {"ack": True}),
    ("fport 0 mac commands", 12, 0, _h("0203"), b"", {}),
    ("fcnt above 16 bits", 0x0001_0005, 1, b"counter", b"", {"adr_ack_req": True}),
    ("fcnt max", 0xFFFF_FFFF, 224, b"last", b"", {"fpending": True}),
    ("longest frame", 3, 5, bytes(range(227)), _h("0102030405060708090a0b0c0d0e0f"), {}),
]
_DATA_MTYPES = [
    MType.UNCONFIRMED_DATA_UP,
    MType.CONFIRMED_DATA_UP,
    MType.UNCONFIRMED_DATA_DOWN,
    MType.CONFIRMED_DATA_DOWN,
]


@pytest.mark.parametrize("mtype", _DATA_MTYPES, ids=lambda m: m.name)
@pytest.mark.parametrize(
    ("fcnt32", "fport", "payload", "fopts", "flags"),
    [r[1:] for r in ROUND_TRIPS],
    ids=[r[0] for r in ROUND_TRIPS],
)
def test_round_trip(
    mtype: MType, fcnt32: int, fport: int | None, payload: bytes, fopts: bytes, flags: dict[str, bool]
) -> None:
    raw = build_data_frame(
        _KEYS,
        mtype=mtype,
        dev_addr=_DEV_ADDR,
        fcnt32=fcnt32,
        fport=fport,
        payload=payload,
        fopts=fopts,
        **flags,
    )
    assert len(raw) <= 255
    frame = parse(raw)
    assert isinstance(frame, DataFrame)
    assert frame.to_bytes() == raw
    assert frame.mtype is mtype
    assert frame.dev_addr == _DEV_ADDR
    assert frame.fcnt16 == fcnt32 & 0xFFFF
    assert frame.fopts == fopts
    assert frame.fport == fport
    expected_flags = {"adr": False, "adr_ack_req": False, "ack": False, "fpending": False, **flags}
    assert frame.fctrl == FCtrl(fopts_len=len(fopts), **expected_flags)
    assert frame.uplink is (mtype in (MType.UNCONFIRMED_DATA_UP, MType.CONFIRMED_DATA_UP))
    assert frame.confirmed is (mtype in (MType.CONFIRMED_DATA_UP, MType.CONFIRMED_DATA_DOWN))
    assert _KEYS.data_mic(frame.mic_input, frame.dev_addr, fcnt32, frame.uplink) == frame.mic
    if fcnt32 > 0xFFFF:  # the MIC covers the full counter, not only the 16 bits on the air
        assert _KEYS.data_mic(frame.mic_input, frame.dev_addr, frame.fcnt16, frame.uplink) != frame.mic
    if fport is None:
        assert frame.frm_payload == b""
    else:
        if payload:
            assert frame.frm_payload != payload  # encrypted on the air
        plain = _KEYS.crypt_frm_payload(frame.frm_payload, frame.dev_addr, fcnt32, frame.uplink, fport)
        assert plain == payload


BAD_BUILDS = [
    ("join-request mtype", {"mtype": MType.JOIN_REQUEST}),
    ("proprietary mtype", {"mtype": MType.PROPRIETARY}),
    ("dev_addr of 3 bytes", {"dev_addr": bytes(3)}),
    ("negative fcnt", {"fcnt32": -1}),
    ("fcnt past 32 bits", {"fcnt32": 0x1_0000_0000}),
    ("16 bytes of FOpts", {"fopts": bytes(16)}),
    ("payload without fport", {"fport": None, "payload": b"x"}),
    ("fport 256", {"fport": 256}),
    ("fport 0 with fopts", {"fport": 0, "fopts": b"\x02"}),
    ("frame over 255 bytes", {"payload": bytes(243)}),
]


@pytest.mark.parametrize("overrides", [b[1] for b in BAD_BUILDS], ids=[b[0] for b in BAD_BUILDS])
def test_build_rejects_impossible_frames(overrides: dict[str, object]) -> None:
    kwargs: dict[str, object] = {
        "mtype": MType.UNCONFIRMED_DATA_UP,
        "dev_addr": _DEV_ADDR,
        "fcnt32": 1,
        "fport": 1,
        "payload": b"ok",
    }
    kwargs.update(overrides)
    with pytest.raises(ValueError):
        build_data_frame(_KEYS, **kwargs)  # type: ignore[arg-type]


def test_longest_buildable_frame_is_255_bytes() -> None:
    raw = build_data_frame(
        _KEYS, mtype=MType.UNCONFIRMED_DATA_UP, dev_addr=_DEV_ADDR, fcnt32=1, fport=1, payload=bytes(242)
    )
    assert len(raw) == 255
    assert isinstance(parse(raw), DataFrame)


# --- hypothesis: parse is total --------------------------------------------------------------------


def _parse_or_frame_error(raw: bytes) -> object:
    """Parse, accepting FrameError as the only failure; any other exception fails the test."""
    try:
        result = parse(raw)
    except FrameError as exc:
        assert type(exc) is FrameError
        assert exc.reason in {"truncated", "bad_major", "bad_fopts", "fopts_with_port0", "bad_frame"}
        return None
    if isinstance(result, (DataFrame, JoinRequest)):
        assert result.to_bytes() == raw
    if isinstance(result, DataFrame):
        assert len(result.fopts) == result.fctrl.fopts_len
        assert len(result.dev_addr) == 4 and len(result.mic) == 4
        assert (result.fport is None) <= (result.frm_payload == b"")
    return result


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_parse_random_bytes_raises_only_frame_error(raw: bytes) -> None:
    _parse_or_frame_error(raw)


_SEEDS = (
    [k.frame for k in KNOWN_DATA]
    + [j[1] for j in JOIN_REQUESTS]
    + [
        _h("20493eeb51fba2116f810edb3742975142"),
        bytes([0xC0]) + bytes(14) + bytes(4),
    ]
)


@st.composite
def _mutated_frames(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        action = draw(st.sampled_from(["flip", "set", "truncate", "extend", "delete"]))
        if action == "flip" and frame:
            index = draw(st.integers(min_value=0, max_value=len(frame) - 1))
            frame[index] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif action == "set" and frame:
            index = draw(st.integers(min_value=0, max_value=len(frame) - 1))
            frame[index] = draw(st.integers(min_value=0, max_value=255))
        elif action == "truncate":
            del frame[draw(st.integers(min_value=0, max_value=len(frame))) :]
        elif action == "extend":
            frame.extend(draw(st.binary(min_size=1, max_size=20)))
        elif action == "delete" and frame:
            del frame[draw(st.integers(min_value=0, max_value=len(frame) - 1))]
    return bytes(frame)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_frames())
def test_parse_mutated_frames_raises_only_frame_error(raw: bytes) -> None:
    _parse_or_frame_error(raw)


@settings(max_examples=300, deadline=None)
@given(
    mtype=st.sampled_from(_DATA_MTYPES),
    fcnt32=st.integers(min_value=0, max_value=0xFFFF_FFFF),
    fport=st.one_of(st.none(), st.integers(min_value=0, max_value=255)),
    payload=st.binary(max_size=60),
    fopts=st.binary(max_size=15),
)
def test_round_trip_property(
    mtype: MType, fcnt32: int, fport: int | None, payload: bytes, fopts: bytes
) -> None:
    if fport is None:
        payload = b""
    if fport == 0:
        fopts = b""
    raw = build_data_frame(
        _KEYS, mtype=mtype, dev_addr=_DEV_ADDR, fcnt32=fcnt32, fport=fport, payload=payload, fopts=fopts
    )
    frame = parse(raw)
    assert isinstance(frame, DataFrame)
    assert _KEYS.data_mic(frame.mic_input, frame.dev_addr, fcnt32, frame.uplink) == frame.mic
    if fport is not None:
        assert (
            _KEYS.crypt_frm_payload(frame.frm_payload, frame.dev_addr, fcnt32, frame.uplink, fport) == payload
        )
