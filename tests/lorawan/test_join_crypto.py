"""Join crypto and join-accept frames against published LoRaWAN 1.0.x vectors.

Vector sources (each vector names its own):

* [BL] brocaar/lorawan (Go, ChirpStack v3): ``phypayload_test.go``
  TestPHYPayloadJoinAccept (encrypted join-accept ``20493eeb...``, AppKey
  00112233..., AppNonce 570bc7, NetID 221101, DevAddr 02031980, MIC 43485bbc)
  and ExampleNewPHYPayload_joinAcceptSend.
* [CS] chirpstack/chirpstack ``lrwn/src/phy_payload.rs`` doc example "LoRaWAN 1.0.x
  Join-accept" (JoinNonce 65793, NetID 020202, DevAddr 01020304, MIC 3449f212,
  bytes 2023cf33...) and ``lrwn/src/keys.rs`` test ``lorawan_1_0`` (NwkSKey/AppSKey).
* [TTS] TheThingsNetwork/lorawan-stack ``pkg/crypto/join_messages_test.go``
  (TestJoinAcceptEncryption, TestComputeLegacyJoinAcceptMIC) and
  ``pkg/crypto/key_derivation_test.go`` (DeriveLegacyNwkSKey / DeriveLegacyAppSKey).
* [LP] anthonykirby/lora-packet ``__tests__/key_gen_test.ts`` (generateSessionKeys),
  ``__tests__/join_accept_encrypt.ts`` (all-zero join-accept, MIC f86f0a91) and
  ``__tests__/packet_test.ts`` ("should create join accept packet with CFList", clear layout).

Spec: LoRaWAN 1.0.4 §6.2.5 (join-request MIC), §6.2.6 (join-accept layout, MIC,
encryption with AES decrypt, NwkSKey/AppSKey derivation); RP002 EU868 CFList.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import FrameError, MicMismatch
from gateway.lorawan import phy
from gateway.lorawan.crypto import (
    decrypt_join_accept,
    derive_session_keys,
    encrypt_join_accept,
    join_accept_mic,
    join_request_mic,
)


def _h(text: str) -> bytes:
    return bytes.fromhex(text)


KEY_1_16 = bytes(range(1, 17))


# (source, AppKey, JoinNonce, NetID, DevNonce, NwkSKey, AppSKey), all MSB first
DERIVATION = [
    (
        "[LP] key_gen_test.ts",
        _h("98929b92c49edba9676d646d3b612456"),
        _h("376338"),
        _h("aabbcc"),
        _h("f18e"),
        _h("4e3d6e6afbcc67af2ba3c8e8ec4acf4b"),
        _h("610897aa6f1460623443b527d3ac6a9d"),
    ),
    (
        "[CS] keys.rs lorawan_1_0",
        bytes([1, 2, 3, 4, 5, 6, 7, 8] * 2),
        (65536).to_bytes(3, "big"),
        _h("010203"),
        (258).to_bytes(2, "big"),
        bytes([223, 83, 195, 95, 48, 52, 204, 206, 208, 255, 53, 76, 112, 222, 4, 223]),
        bytes([146, 123, 156, 145, 17, 131, 207, 254, 76, 178, 255, 75, 117, 84, 95, 109]),
    ),
    (
        "[TTS] key_derivation_test.go legacy",
        _h("bec499c69e9c939e413b66396163 6c61".replace(" ", "")),
        _h("ae3b1c"),
        _h("020101"),
        _h("7369"),
        _h("0db924ee6af90698e05fc7ce48303c01"),
        _h("8c1e0543a229088de6f84e74bb46bd62"),
    ),
]


@pytest.mark.parametrize(("source", "app_key", "join_nonce", "net_id", "dev_nonce", "nwk", "app"), DERIVATION)
def test_session_key_derivation(
    source: str, app_key: bytes, join_nonce: bytes, net_id: bytes, dev_nonce: bytes, nwk: bytes, app: bytes
) -> None:
    assert derive_session_keys(app_key, join_nonce, net_id, dev_nonce) == (nwk, app), source


def test_join_accept_encryption_and_mic_tts() -> None:
    # [TTS] TestJoinAcceptEncryption + TestComputeLegacyJoinAcceptMIC: the clear body as on the air.
    key = bytes([1] * 16)
    clear = bytes([0x03, 0x02, 0x01, 0x03, 0x02, 0x01, 0x04, 0x03, 0x02, 0x01, 0x00, 0x01])
    mic = join_accept_mic(key, b"\x20" + clear)
    assert mic == _h("32f54ab3")
    encrypted = encrypt_join_accept(key, clear + mic)
    assert encrypted == _h("c9fbb259e11649096a568a9e3b7117c3")
    assert decrypt_join_accept(key, encrypted) == clear + mic


def test_all_zero_join_accept_lora_packet() -> None:
    # [LP] join_accept_encrypt.ts "should create join accept packet with zero value".
    built = phy.build_join_accept(
        bytes(16), join_nonce=bytes(3), net_id=bytes(3), dev_addr=bytes(4), rx_delay=0
    )
    assert built == _h("20e3de108795f776b8037610ef7869b5b3")
    assert decrypt_join_accept(bytes(16), built[1:]) == _h("000000000000000000000000f86f0a91")


def test_build_join_accept_reproduces_brocaar_and_chirpstack() -> None:
    # [BL] ExampleNewPHYPayload_joinAcceptSend == [CS] 1.0.x join-accept example.
    built = phy.build_join_accept(
        KEY_1_16,
        join_nonce=(65793).to_bytes(3, "big"),
        net_id=_h("020202"),
        dev_addr=_h("01020304"),
        rx_delay=0,
    )
    assert built == bytes([32, 35, 207, 51, 84, 137, 170, 227, 24, 60, 11, 224, 186, 168, 222, 229, 243])
    opened = phy.open_join_accept(_as_join_accept(built), KEY_1_16)
    assert opened.mic == _h("3449f212")


def test_open_join_accept_brocaar() -> None:
    # [BL] TestPHYPayloadJoinAccept.
    frame = _as_join_accept(_h("20493eeb51fba2116f810edb3742975142"))
    opened = phy.open_join_accept(frame, _h("00112233445566778899aabbccddeeff"))
    assert opened.join_nonce == bytes([87, 11, 199])
    assert opened.net_id == bytes([34, 17, 1])
    assert opened.dev_addr == bytes([2, 3, 25, 128])
    assert (opened.rx1_dr_offset, opened.rx2_dr, opened.rx_delay, opened.rx_delay_s) == (0, 0, 0, 1)
    assert opened.cflist is None and opened.cflist_raw == b"" and not opened.opt_neg
    assert opened.mic == bytes([67, 72, 91, 188])


def test_wrong_app_key_is_a_mic_mismatch() -> None:
    frame = _as_join_accept(_h("20493eeb51fba2116f810edb3742975142"))
    with pytest.raises(MicMismatch):
        phy.open_join_accept(frame, KEY_1_16)


def test_cflist_layout_matches_lora_packet() -> None:
    # [LP] packet_test.ts: CFList bytes 112233 x5 + type 00 → 0x332211 * 100 Hz per channel.
    freq = 0x332211 * 100
    built = phy.build_join_accept(
        KEY_1_16,
        join_nonce=_h("aabbcc"),
        net_id=_h("aabbcc"),
        dev_addr=_h("aabbccdd"),
        rx1_dr_offset=1,
        rx2_dr=2,
        rx_delay=15,
        cflist=[freq] * 5,
    )
    clear = decrypt_join_accept(KEY_1_16, built[1:])
    assert clear[:-4] == _h("ccbbaaccbbaaddccbbaa120f11223311223311223311223311223300")
    opened = phy.open_join_accept(_as_join_accept(built), KEY_1_16)
    assert opened.cflist == (freq,) * 5
    assert (opened.rx1_dr_offset, opened.rx2_dr, opened.rx_delay) == (1, 2, 15)


def test_eu868_cflist_round_trip_and_padding() -> None:
    freqs = [867_100_000, 867_300_000, 867_500_000]
    built = phy.build_join_accept(
        KEY_1_16, join_nonce=_h("000001"), net_id=_h("000000"), dev_addr=_h("00000001"), cflist=freqs
    )
    assert len(built) == 33
    assert phy.open_join_accept(_as_join_accept(built), KEY_1_16).cflist == (*freqs, 0, 0)


def test_cflist_of_another_type_is_kept_raw() -> None:
    # CFListType 1 (channel mask, US915-like regions) is not a frequency list.
    msg = b"\x20" + bytes(12) + bytes(15) + b"\x01"
    body = msg[1:] + join_accept_mic(KEY_1_16, msg)
    frame = phy.JoinAccept(encrypted=encrypt_join_accept(KEY_1_16, body))
    opened = phy.open_join_accept(frame, KEY_1_16)
    assert opened.cflist is None and opened.cflist_raw == bytes(15) + b"\x01"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"join_nonce": b"\x00\x01"},
        {"dev_addr": b"\x00"},
        {"rx1_dr_offset": 8},
        {"rx_delay": 16},
        {"cflist": [867_100_050]},
        {"cflist": [867_100_000] * 6},
    ],
)
def test_build_join_accept_rejects_impossible_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"join_nonce": bytes(3), "net_id": bytes(3), "dev_addr": bytes(4)}
    args.update(kwargs)
    with pytest.raises(ValueError):
        phy.build_join_accept(KEY_1_16, **args)  # type: ignore[arg-type]


def test_build_join_request_reproduces_brocaar_and_chirpstack() -> None:
    # [BL] ExampleNewPHYPayload_joinRequest == [CS] join-request example (MIC 09b97b32).
    built = phy.build_join_request(
        KEY_1_16, join_eui=bytes([1] * 8), dev_eui=bytes([2] * 8), dev_nonce=b"\x03\x03"
    )
    assert built == bytes([0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 9, 185, 123, 50])


def test_join_request_mic_tts() -> None:
    # [TTS] TestComputeJoinRequestMIC.
    msg = bytes([0]) + bytes([8, 7, 6, 5, 4, 3, 2, 1]) * 2 + bytes([2, 1])
    assert join_request_mic(bytes([1] * 16), msg) == _h("e6e10c55")


def _as_join_accept(built: bytes) -> phy.JoinAccept:
    parsed = phy.parse(built)
    assert isinstance(parsed, phy.JoinAccept)
    return parsed


@given(
    key=st.binary(min_size=16, max_size=16),
    join_nonce=st.binary(min_size=3, max_size=3),
    net_id=st.binary(min_size=3, max_size=3),
    dev_addr=st.binary(min_size=4, max_size=4),
    offset=st.integers(0, 7),
    rx2=st.integers(0, 15),
    delay=st.integers(0, 15),
    cflist=st.none() | st.lists(st.integers(0, (1 << 24) - 1).map(lambda u: u * 100), max_size=5),
)
def test_join_accept_round_trip_property(
    key: bytes,
    join_nonce: bytes,
    net_id: bytes,
    dev_addr: bytes,
    offset: int,
    rx2: int,
    delay: int,
    cflist: list[int] | None,
) -> None:
    built = phy.build_join_accept(
        key,
        join_nonce=join_nonce,
        net_id=net_id,
        dev_addr=dev_addr,
        rx1_dr_offset=offset,
        rx2_dr=rx2,
        rx_delay=delay,
        cflist=cflist,
    )
    opened = phy.open_join_accept(_as_join_accept(built), key)
    assert (opened.join_nonce, opened.net_id, opened.dev_addr) == (join_nonce, net_id, dev_addr)
    assert (opened.rx1_dr_offset, opened.rx2_dr, opened.rx_delay) == (offset, rx2, delay)
    expected = None if cflist is None else tuple(cflist) + (0,) * (5 - len(cflist))
    assert opened.cflist == expected


@given(st.binary(min_size=16, max_size=32), st.binary(min_size=16, max_size=16))
def test_open_join_accept_of_any_bytes_raises_only_frame_errors(body: bytes, key: bytes) -> None:
    try:
        frame = phy.parse(b"\x20" + body)
        assert isinstance(frame, phy.JoinAccept)
        phy.open_join_accept(frame, key)
    except FrameError:
        pass
