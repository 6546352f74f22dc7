"""Tests of gateway.lorawan.crypto against published LoRaWAN 1.0.x frames.

Vector sources (each vector names its own, with the test or example it comes from):

* [LP] anthonykirby/lora-packet (npm ``lora-packet``): README demo and
  ``__tests__/mic_test.ts``, ``decrypt_test.ts``, ``packet_test.ts``, ``fopts_test.ts``.
* [BL] brocaar/lorawan (the Go package under ChirpStack v3): ``phypayload_test.go``
  (TestPHYPayloadData, TestPHYPayloadJoinRequest, ExampleNewPHYPayload,
  ExampleNewPHYPayload_joinRequest).
* [MM] Strooom/MuMo-v2-Node-SW: ``test/test_generic_lorawan_4_mac/test.cpp``
  (test_construct_1, test_construct_2, test_parse_1) and ``test.md``: frames
  sent or received by The Things Network (TTN v3), with the device's session keys.

Block layouts: LoRaWAN 1.0.4 §4.3.3.1 (A_i) and §4.4 (B0); join-request MIC §6.2.5.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest

from gateway.lorawan.crypto import SessionKeys, join_request_mic


@dataclass(frozen=True)
class DataVector:
    """One data frame: the bytes on the air, the session keys, and the fields the source states."""

    name: str
    source: str
    frame: bytes
    nwk_s_key: bytes
    app_s_key: bytes
    dev_addr: bytes  # MSB first
    fcnt32: int
    uplink: bool
    fopts: bytes
    fport: int | None
    plaintext: bytes

    @property
    def mic_input(self) -> bytes:
        return self.frame[:-4]

    @property
    def mic(self) -> bytes:
        return self.frame[-4:]

    @property
    def frm_payload(self) -> bytes:
        """Sliced by hand (MHDR 1 + FHDR 7 + FOpts + FPort 1), independently of the parser."""
        if self.fport is None:
            return b""
        return self.frame[9 + len(self.fopts) : -4]


def _h(text: str) -> bytes:
    return bytes.fromhex(text)


_LP_NWK = _h("44024241ed4ce9a68c6a8bc055233fd3")
_LP_APP = _h("ec925802ae430ca77fd3dd73cb2cc588")
_BL_NWK_1_16 = bytes(range(1, 17))
_BL_APP_16_1 = bytes(range(16, 0, -1))
_MM_NWK = _h("8DD6FEB76D7754A78538BA5089A834AA")
_MM_APP = _h("E54E4411F4FE8955904197C8D824BC2C")

UPLINKS = [
    DataVector(
        name="lp_test",
        source="[LP] README demo; mic_test.ts + decrypt_test.ts 'should decrypt test payload' (MIC 2b11ff0d)",
        frame=_h("40F17DBE4900020001954378762B11FF0D"),
        nwk_s_key=_LP_NWK,
        app_s_key=_LP_APP,
        dev_addr=_h("49be7df1"),
        fcnt32=2,
        uplink=True,
        fopts=b"",
        fport=1,
        plaintext=b"test",
    ),
    DataVector(
        name="lp_fox",
        source="[LP] decrypt_test.ts 'should decrypt large payload' (44 bytes: three keystream blocks)",
        frame=_h(
            "40f17dbe490004000155332de41a11adc072553544429ce7787707d1c316e027e7e5e334263376"
            "affb8aa17ad30075293f28dea8a20af3c5e7"
        ),
        nwk_s_key=_LP_NWK,
        app_s_key=_LP_APP,
        dev_addr=_h("49be7df1"),
        fcnt32=4,
        uplink=True,
        fopts=b"",
        fport=1,
        plaintext=b"The quick brown fox jumps over the lazy dog.",
    ),
    DataVector(
        name="lp_fport_no_payload",
        source="[LP] mic_test.ts second case (MIC 2a3518af): FPort present, FRMPayload empty",
        frame=_h("40F17DBE49000300012A3518AF"),
        nwk_s_key=_LP_NWK,
        app_s_key=_LP_APP,
        dev_addr=_h("49be7df1"),
        fcnt32=3,
        uplink=True,
        fopts=b"",
        fport=1,
        plaintext=b"",
    ),
    DataVector(
        name="bl_hello_adr",
        source="[BL] TestPHYPayloadData: 'QAQDAgGAAQABppRkJhXWw7WC', NwkSKey 02*16, AppSKey 01*16, ADR set",
        frame=base64.b64decode("QAQDAgGAAQABppRkJhXWw7WC"),
        nwk_s_key=bytes([2] * 16),
        app_s_key=bytes([1] * 16),
        dev_addr=_h("01020304"),
        fcnt32=1,
        uplink=True,
        fopts=b"",
        fport=1,
        plaintext=b"hello",
    ),
    DataVector(
        name="bl_confirmed_up",
        source="[BL] ExampleNewPHYPayload output [128 4 3 2 1 0 0 0 10 226 100 212 247 181 106 14 117]",
        frame=bytes([128, 4, 3, 2, 1, 0, 0, 0, 10, 226, 100, 212, 247, 181, 106, 14, 117]),
        nwk_s_key=_BL_NWK_1_16,
        app_s_key=_BL_APP_16_1,
        dev_addr=_h("01020304"),
        fcnt32=0,
        uplink=True,
        fopts=b"",
        fport=10,
        plaintext=_h("01020304"),
    ),
    DataVector(
        name="bl_confirmed_up_fopts",
        source="[LP] packet_test.ts 'should encode packet with Lorawan10' (brocaar/lorawan docs), FOpts",
        frame=_h("80040302010300000673070ae264d4f7e117d2c0"),
        nwk_s_key=_BL_NWK_1_16,
        app_s_key=_BL_APP_16_1,
        dev_addr=_h("01020304"),
        fcnt32=0,
        uplink=True,
        fopts=_h("067307"),
        fport=10,
        plaintext=_h("01020304"),
    ),
    DataVector(
        name="mm_ttn_uplink",
        source="[MM] test.cpp test_construct_1: frame received by TTN, FCnt 13451, FPort 16, 37-byte payload",
        frame=_h(
            "4011990b26008b3410a1b61bb7d0a47f5c1d42c7f292b5a34aa326f69bd6ac525c173b97010e49ff92"
            "a86d88e2db0184de4a"
        ),
        nwk_s_key=_MM_NWK,
        app_s_key=_MM_APP,
        dev_addr=_h("260B9911"),
        fcnt32=13451,
        uplink=True,
        fopts=b"",
        fport=16,
        plaintext=_h("02017EC5536412835C40107EC553648D77A241117EC5536450424042127EC553645C897E44"),
    ),
    DataVector(
        name="mm_one_block",
        source="[MM] test.cpp test_construct_2: FCnt 0, FPort 7, 16 zero bytes (one block), MIC f5926d68",
        frame=_h("401bc70b26000000074eaa794c99d25ebeffcee0463c3b34def5926d68"),
        nwk_s_key=_h("34CE07A8DDE81F4C29A0AED7B4F1D7BB"),
        app_s_key=_h("ECF61A5B18BFBF81EF4FA7DBA764CE8B"),
        dev_addr=_h("260BC71B"),
        fcnt32=0,
        uplink=True,
        fopts=b"",
        fport=7,
        plaintext=bytes(16),
    ),
]

FPORT0_UPLINK = DataVector(
    name="lp_fport0",
    source="[LP] packet_test.ts 'should create packet with port 0': MAC command 02 under NwkSKey, FCnt 16",
    frame=_h("40D4C3B2A1001000002712A3F9C9"),
    nwk_s_key=_h("a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4"),
    app_s_key=bytes(16),  # the source gives no AppSKey: FPort 0 must not need it
    dev_addr=_h("a1b2c3d4"),
    fcnt32=16,
    uplink=True,
    fopts=b"",
    fport=0,
    plaintext=_h("02"),
)

# The MuMo TTN downlink (test_parse_1 / test.md, FCnt 176, FPort 0): the source gives the frame and the
# keys but not the plaintext. The plaintext below decodes to RXParamSetupReq(DLSettings 0x03, 869.525 MHz)
# and NewChannelReq for channels 3..7 at 867.1 .. 867.9 MHz, DR 0..5: exactly TTN's EU_863_870_TTN plan,
# and 869.525 MHz is the rx2_frequency in the same TTN log, so the decryption is checked against facts
# that do not come from this code (test_ttn_mac_downlink_matches_the_ttn_eu868_plan decodes them).
TTN_MAC_DOWNLINK = DataVector(
    name="mm_ttn_downlink_fport0",
    source="[MM] test.cpp test_parse_1 and test.md example 1: TTN downlink, FCnt 176, FPort 0, MIC 82879a3f",
    frame=_h(
        "6011990b2600b000002261d02e6dc32e0495279335d16b41e109c11cb7d5df80232fd81280de42be47c964b382879a3f"
    ),
    nwk_s_key=_MM_NWK,
    app_s_key=_MM_APP,
    dev_addr=_h("260B9911"),
    fcnt32=176,
    uplink=False,
    fopts=b"",
    fport=0,
    plaintext=_h("0503d2ad840703184f84500704e85684500705b85e84500706886684500707586e8450"),
)

DOWNLINKS = [
    DataVector(
        name="lp_ack_down",
        source="[LP] mic_test.ts 'MIC for ACK' (MIC f9d65d27): unconfirmed down, ACK, FPort 1, no payload",
        frame=_h("60f17dbe4920020001f9d65d27"),
        nwk_s_key=_LP_NWK,
        app_s_key=_LP_APP,
        dev_addr=_h("49be7df1"),
        fcnt32=2,
        uplink=False,
        fopts=b"",
        fport=1,
        plaintext=b"",
    ),
    DataVector(
        # A LoRaWAN 1.1 example, valid as 1.0: without ACK the 1.1 downlink B0 (ConfFCnt = 0) is the
        # 1.0 B0, FRMPayload uses AppSKey the same way, and 1.0 treats the FOpts bytes as opaque.
        name="bl_down_fopts",
        source="[LP] fopts_test.ts 'should decode packet with Lorawan1.0 Encrypted Fopts' (brocaar docs)",
        frame=base64.b64decode("YAQDAgEDAAAirAoB8LRo3ape0To="),
        nwk_s_key=bytes([1] * 15 + [0]),
        app_s_key=_BL_APP_16_1,
        dev_addr=_h("01020304"),
        fcnt32=0,
        uplink=False,
        fopts=_h("22ac0a"),
        fport=1,
        plaintext=_h("01020304"),
    ),
    TTN_MAC_DOWNLINK,
]

ALL_DATA = [*UPLINKS, FPORT0_UPLINK, *DOWNLINKS]


@dataclass(frozen=True)
class JoinRequestVector:
    name: str
    source: str
    frame: bytes
    app_key: bytes
    join_eui: bytes  # MSB first
    dev_eui: bytes
    dev_nonce: bytes


JOIN_REQUESTS = [
    JoinRequestVector(
        name="lp_join_request",
        source="[LP] mic_test.ts 'join request packet MIC' (MIC c65b1304)",
        frame=_h("0039363463336913AA05693574323831330489C65B1304"),
        app_key=_h("98929b92c49edba9676d646d3b612456"),
        join_eui=_h("aa13693363343639"),
        dev_eui=_h("3331383274356905"),
        dev_nonce=_h("8904"),
    ),
    JoinRequestVector(
        name="bl_join_request",
        source="[BL] TestPHYPayloadJoinRequest: AppEUI 0102030401020304, DevEUI 0203040502030405",
        frame=base64.b64decode("AAQDAgEEAwIBBQQDAgUEAwItEGqZDhI="),
        app_key=bytes([1] * 16),
        join_eui=_h("0102030401020304"),
        dev_eui=_h("0203040502030405"),
        dev_nonce=bytes([16, 45]),
    ),
    JoinRequestVector(
        name="bl_join_request_example",
        source="[BL] ExampleNewPHYPayload_joinRequest output [0 1 ... 3 3 9 185 123 50]",
        frame=bytes([0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 9, 185, 123, 50]),
        app_key=bytes(range(1, 17)),
        join_eui=bytes([1] * 8),
        dev_eui=bytes([2] * 8),
        dev_nonce=bytes([3, 3]),
    ),
]


def _keys(vector: DataVector) -> SessionKeys:
    return SessionKeys(vector.nwk_s_key, vector.app_s_key)


# --- data-frame MIC (§4.4) -------------------------------------------------------------------------


@pytest.mark.parametrize("vector", ALL_DATA, ids=lambda v: v.name)
def test_data_mic_matches_the_published_frame(vector: DataVector) -> None:
    mic = _keys(vector).data_mic(vector.mic_input, vector.dev_addr, vector.fcnt32, vector.uplink)
    assert mic == vector.mic


@pytest.mark.parametrize("vector", ALL_DATA, ids=lambda v: v.name)
def test_data_mic_detects_a_flipped_bit(vector: DataVector) -> None:
    tampered = bytearray(vector.mic_input)
    tampered[-1] ^= 0x01
    mic = _keys(vector).data_mic(bytes(tampered), vector.dev_addr, vector.fcnt32, vector.uplink)
    assert mic != vector.mic


def test_data_mic_covers_the_direction() -> None:
    vector = UPLINKS[0]
    down = _keys(vector).data_mic(vector.mic_input, vector.dev_addr, vector.fcnt32, uplink=False)
    assert down != vector.mic


def test_data_mic_covers_the_full_32_bit_counter() -> None:
    # Same 16 bits on the air, different high half: B0 holds all 32 bits (§4.4), so the MIC differs.
    vector = UPLINKS[0]
    keys = _keys(vector)
    assert keys.data_mic(vector.mic_input, vector.dev_addr, vector.fcnt32, True) == vector.mic
    assert keys.data_mic(vector.mic_input, vector.dev_addr, vector.fcnt32 + 0x10000, True) != vector.mic


def test_data_mic_uses_nwk_s_key_only() -> None:
    vector = UPLINKS[0]
    other_app = SessionKeys(vector.nwk_s_key, bytes(16))
    other_nwk = SessionKeys(bytes(16), vector.app_s_key)
    assert other_app.data_mic(vector.mic_input, vector.dev_addr, vector.fcnt32, True) == vector.mic
    assert other_nwk.data_mic(vector.mic_input, vector.dev_addr, vector.fcnt32, True) != vector.mic


# --- FRMPayload encryption (§4.3.3.1) --------------------------------------------------------------


@pytest.mark.parametrize("vector", ALL_DATA, ids=lambda v: v.name)
def test_crypt_frm_payload_decrypts_the_published_frame(vector: DataVector) -> None:
    assert vector.fport is not None
    plain = _keys(vector).crypt_frm_payload(
        vector.frm_payload, vector.dev_addr, vector.fcnt32, vector.uplink, vector.fport
    )
    assert plain == vector.plaintext


@pytest.mark.parametrize("vector", ALL_DATA, ids=lambda v: v.name)
def test_crypt_frm_payload_encrypts_back_to_the_air_bytes(vector: DataVector) -> None:
    assert vector.fport is not None
    cipher = _keys(vector).crypt_frm_payload(
        vector.plaintext, vector.dev_addr, vector.fcnt32, vector.uplink, vector.fport
    )
    assert cipher == vector.frm_payload


def test_fport_0_uses_nwk_s_key_and_other_ports_app_s_key() -> None:
    v0 = FPORT0_UPLINK
    wrong_app = SessionKeys(v0.nwk_s_key, bytes(range(16)))
    assert wrong_app.crypt_frm_payload(v0.frm_payload, v0.dev_addr, v0.fcnt32, True, 0) == v0.plaintext
    wrong_nwk = SessionKeys(bytes(range(16)), v0.app_s_key)
    assert wrong_nwk.crypt_frm_payload(v0.frm_payload, v0.dev_addr, v0.fcnt32, True, 0) != v0.plaintext

    v1 = UPLINKS[0]
    swapped = SessionKeys(v1.app_s_key, v1.nwk_s_key)
    assert swapped.crypt_frm_payload(v1.frm_payload, v1.dev_addr, v1.fcnt32, True, 1) != v1.plaintext


def test_keystream_depends_on_direction_and_full_counter() -> None:
    v = UPLINKS[1]  # 44 bytes: three blocks
    keys = _keys(v)
    assert keys.crypt_frm_payload(v.frm_payload, v.dev_addr, v.fcnt32, False, 1) != v.plaintext
    assert keys.crypt_frm_payload(v.frm_payload, v.dev_addr, v.fcnt32 + 0x10000, True, 1) != v.plaintext


def test_ttn_mac_downlink_matches_the_ttn_eu868_plan() -> None:
    # Decode the decrypted MAC commands (LoRaWAN 1.0.4 §5.4 RXParamSetupReq, §5.7 NewChannelReq):
    # frequencies are 24-bit little-endian multiples of 100 Hz.
    v = TTN_MAC_DOWNLINK
    plain = _keys(v).crypt_frm_payload(v.frm_payload, v.dev_addr, v.fcnt32, False, 0)
    assert plain[0] == 0x05  # RXParamSetupReq
    assert int.from_bytes(plain[2:5], "little") * 100 == 869_525_000  # rx2_frequency in the TTN log
    channels = {}
    for offset in range(5, len(plain), 6):
        cid, index, freq, dr_range = (
            plain[offset],
            plain[offset + 1],
            plain[offset + 2 : offset + 5],
            plain[offset + 5],
        )
        assert cid == 0x07  # NewChannelReq
        assert dr_range == 0x50  # DR 0..5
        channels[index] = int.from_bytes(freq, "little") * 100
    assert channels == {3: 867_100_000, 4: 867_300_000, 5: 867_500_000, 6: 867_700_000, 7: 867_900_000}


def test_cached_contexts_do_not_leak_state_between_frames() -> None:
    # One SessionKeys serves many frames: odd lengths, both keys, both directions, repeated.
    v_fox, v_test, v_port0 = UPLINKS[1], UPLINKS[0], FPORT0_UPLINK
    keys = SessionKeys(v_fox.nwk_s_key, v_fox.app_s_key)
    port0_keys = SessionKeys(v_port0.nwk_s_key, v_port0.app_s_key)
    for _ in range(3):
        assert keys.crypt_frm_payload(v_test.frm_payload, v_test.dev_addr, 2, True, 1) == b"test"
        assert keys.crypt_frm_payload(v_fox.frm_payload, v_fox.dev_addr, 4, True, 1) == v_fox.plaintext
        assert keys.data_mic(v_fox.mic_input, v_fox.dev_addr, 4, True) == v_fox.mic
        assert keys.crypt_frm_payload(b"\x00", v_fox.dev_addr, 9, False, 0) == keys.crypt_frm_payload(
            b"\x00", v_fox.dev_addr, 9, False, 0
        )
        assert port0_keys.crypt_frm_payload(v_port0.frm_payload, v_port0.dev_addr, 16, True, 0) == b"\x02"


def test_sessions_beyond_the_warm_set_give_up_their_contexts_and_still_verify(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only the WARM_SESSIONS last warmed sessions keep their OpenSSL contexts (memory per
    # registered device); a cold one rebuilds them and must compute exactly the same MIC and plaintext.
    monkeypatch.setattr(SessionKeys, "WARM_SESSIONS", 3)
    monkeypatch.setattr(SessionKeys, "_warm", type(SessionKeys._warm)())  # an empty deque
    v = UPLINKS[1]
    sessions = [SessionKeys(v.nwk_s_key, v.app_s_key) for _ in range(8)]
    for _ in range(2):
        for keys in sessions:
            assert keys.data_mic(v.mic_input, v.dev_addr, 4, True) == v.mic
            assert keys.crypt_frm_payload(v.frm_payload, v.dev_addr, 4, True, 1) == v.plaintext
    assert len(SessionKeys._warm) == 3
    assert [k.warm for k in sessions] == [False] * 5 + [True] * 3  # the last warmed stay warm


def test_empty_payload_is_empty() -> None:
    assert _keys(UPLINKS[0]).crypt_frm_payload(b"", bytes(4), 0, True, 1) == b""


# --- join-request MIC (§6.2.5) ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", JOIN_REQUESTS, ids=lambda v: v.name)
def test_join_request_mic_matches_the_published_frame(vector: JoinRequestVector) -> None:
    assert join_request_mic(vector.app_key, vector.frame[:19]) == vector.frame[19:]
    assert join_request_mic(bytes(16), vector.frame[:19]) != vector.frame[19:]


# --- misuse is the caller's bug: ValueError, never a silent wrong answer ---------------------------


@pytest.mark.parametrize(
    ("nwk", "app"),
    [(bytes(15), bytes(16)), (bytes(16), bytes(17)), (bytes(32), bytes(16)), (b"", b"")],
)
def test_session_keys_must_be_128_bit(nwk: bytes, app: bytes) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        SessionKeys(nwk, app)


def test_join_request_mic_key_must_be_128_bit() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        join_request_mic(bytes(24), bytes(19))


@pytest.mark.parametrize(
    ("dev_addr", "fcnt32"),
    [(bytes(3), 0), (bytes(5), 0), (bytes(4), -1), (bytes(4), 0x1_0000_0000)],
)
def test_bad_dev_addr_or_counter_raise_value_error(dev_addr: bytes, fcnt32: int) -> None:
    keys = SessionKeys(bytes(16), bytes(16))
    with pytest.raises(ValueError):
        keys.data_mic(b"\x40", dev_addr, fcnt32, True)
    with pytest.raises(ValueError):
        keys.crypt_frm_payload(b"x", dev_addr, fcnt32, True, 1)


def test_mic_input_longer_than_b0_can_describe_raises_value_error() -> None:
    with pytest.raises(ValueError, match="too long"):
        SessionKeys(bytes(16), bytes(16)).data_mic(bytes(256), bytes(4), 0, True)


def test_payload_longer_than_255_blocks_raises_value_error() -> None:
    with pytest.raises(ValueError, match="too long"):
        SessionKeys(bytes(16), bytes(16)).crypt_frm_payload(bytes(255 * 16 + 1), bytes(4), 0, True, 1)


def test_repr_hides_the_keys() -> None:
    keys = SessionKeys(bytes.fromhex("44024241ed4ce9a68c6a8bc055233fd3"), bytes(16))
    assert "4402" not in repr(keys)
