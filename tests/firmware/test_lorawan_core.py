"""The firmware's LoRaWAN core (firmware/lorawan/) checked byte for byte against the gateway's, under CPython.

The MicroPython run (test_micropython_e2e.py) proves the firmware works on the real runtime;
these tests sweep many more inputs quickly, with the gateway's ``gateway.lorawan`` (itself
checked against published vectors and lora-packet) and ``cryptography`` as the references.
The firmware modules are plain Python that also runs under CPython (``firmware/lorawan`` has no
``machine`` import).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ReplayedFrame
from gateway.lorawan import crypto, phy
from gateway.lorawan.sessions import Session, SessionTable, session_tag
from gateway.messages import AesKey, DevAddr, DevEui, MType, RadioFrame, RxInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firmware"))

from lorawan import aes, cmac, frames, region  # type: ignore[import-not-found]
from lorawan.device import Device  # type: ignore[import-not-found]
from lorawan.storage import FileStorage, MemoryStorage  # type: ignore[import-not-found]

KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
keys16 = st.binary(min_size=16, max_size=16)


def test_fips197_vector() -> None:
    # FIPS-197 Appendix C.1 (AES-128): key 000102..0f, plaintext 00112233..ff.
    key = bytes(range(16))
    out = aes.Aes(key, pure=True).encrypt_block(bytes.fromhex("00112233445566778899aabbccddeeff"))
    assert out.hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"


@settings(max_examples=60, deadline=None)
@given(keys16, keys16)
def test_pure_aes_matches_cryptography(key: bytes, block: bytes) -> None:
    ref = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    assert aes.Aes(key, pure=True).encrypt_block(block) == ref.update(block) + ref.finalize()


@pytest.mark.parametrize(
    ("msg_hex", "mac_hex"),
    [
        # RFC 4493 §4, examples 1-4 (key 2b7e1516 28aed2a6 abf71588 09cf4f3c).
        ("", "bb1d6929e95937287fa37d129b756746"),
        ("6bc1bee22e409f96e93d7e117393172a", "070a16b46b4d4144f79bdd9dd04a287c"),
        (
            "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411",
            "dfa66747de9ae63030ca32611497c827",
        ),
        (
            "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
            "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
            "51f0bebf7e3b9d92fc49741779363cfe",
        ),
    ],
)
def test_rfc4493_vectors(msg_hex: str, mac_hex: str) -> None:
    assert cmac.cmac(KEY, bytes.fromhex(msg_hex)).hex() == mac_hex


@settings(max_examples=40, deadline=None)
@given(keys16, st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8), st.integers(0, 0xFFFF))
def test_join_request_is_the_gateways(key: bytes, join_eui: bytes, dev_eui: bytes, nonce: int) -> None:
    mine = frames.build_join_request(aes.Aes(key), join_eui, dev_eui, nonce)
    theirs = phy.build_join_request(
        key, join_eui=join_eui, dev_eui=dev_eui, dev_nonce=nonce.to_bytes(2, "big")
    )
    assert mine == theirs


@pytest.mark.parametrize("cflist", [None, (867_100_000, 867_300_000, 867_500_000, 867_700_000, 867_900_000)])
def test_join_accept_opens_and_keys_agree(cflist: Any) -> None:
    built = phy.build_join_accept(
        KEY,
        join_nonce=bytes.fromhex("000007"),
        net_id=bytes.fromhex("000013"),
        dev_addr=bytes.fromhex("26011f2a"),
        rx1_dr_offset=2,
        rx2_dr=3,
        rx_delay=0,
        cflist=cflist,
    )
    cipher = aes.Aes(KEY)
    accept = frames.open_join_accept(cipher, built)
    assert (accept.join_nonce, accept.net_id.hex(), accept.dev_addr.hex()) == (7, "000013", "26011f2a")
    assert (accept.rx1_dr_offset, accept.rx2_dr, accept.rx_delay_s) == (2, 3, 1)
    assert accept.cflist_hz == (list(cflist) if cflist else [])
    nwk, app = frames.derive_session_keys(cipher, accept, 0x0102)
    assert (nwk, app) == crypto.derive_session_keys(
        KEY, bytes.fromhex("000007"), bytes.fromhex("000013"), b"\x01\x02"
    )
    tampered = built[:-1] + bytes((built[-1] ^ 1,))
    with pytest.raises(frames.FrameError) as caught:
        frames.open_join_accept(cipher, tampered)
    assert caught.value.reason == "bad_mic"
    with pytest.raises(frames.FrameError) as caught:
        frames.open_join_accept(cipher, built[:16])
    assert caught.value.reason == "bad_length"


@settings(max_examples=40, deadline=None)
@given(
    keys16,
    keys16,
    st.binary(min_size=4, max_size=4),
    st.integers(0, 0xFFFFFFFF),
    st.integers(1, 223),
    st.binary(max_size=51),
    st.booleans(),
)
def test_uplink_is_the_gateways(
    nwk: bytes, app: bytes, addr: bytes, fcnt: int, fport: int, payload: bytes, confirmed: bool
) -> None:
    mine = frames.build_uplink(aes.Aes(nwk), aes.Aes(app), addr, fcnt, fport, payload, confirmed)
    mtype = MType.CONFIRMED_DATA_UP if confirmed else MType.UNCONFIRMED_DATA_UP
    theirs = phy.build_data_frame(
        crypto.SessionKeys(nwk, app), mtype=mtype, dev_addr=addr, fcnt32=fcnt, fport=fport, payload=payload
    )
    assert mine == theirs


def test_downlink_opens_and_a_replay_does_not() -> None:
    nwk, app, addr = bytes(range(16)), bytes(range(16, 32)), bytes.fromhex("26011f2a")
    keys = crypto.SessionKeys(nwk, app)
    down = phy.build_data_frame(
        keys,
        mtype=MType.CONFIRMED_DATA_DOWN,
        dev_addr=addr,
        fcnt32=0x10005,
        fport=3,
        payload=b"dim",
        ack=True,
    )
    opened = frames.open_downlink(aes.Aes(nwk), aes.Aes(app), addr, 0x10004, down)
    assert (opened.fcnt32, opened.fport, opened.payload, opened.confirmed, opened.ack) == (
        0x10005,
        3,
        b"dim",
        True,
        True,
    )
    with pytest.raises(frames.FrameError):
        frames.open_downlink(aes.Aes(nwk), aes.Aes(app), addr, 0x10005, down)  # already seen
    with pytest.raises(frames.FrameError) as caught:
        frames.open_downlink(aes.Aes(nwk), aes.Aes(app), bytes(4), 0x10004, down)
    assert caught.value.reason == "other_dev_addr"


@pytest.mark.parametrize(
    ("sf", "bw_hz", "size", "airtime_us"),
    [
        # Semtech AN1200.13 §4 formula, worked by hand (CR 4/5, explicit header, CRC, 8-symbol preamble):
        # SF7/125k, 20 B: Tsym 1.024 ms; 8 + ceil(176/28)*5 = 43 symbols + 12.25 -> 56.576 ms.
        (7, 125_000, 20, 56_576),
        # SF12/125k, 20 B, low-data-rate optimisation: Tsym 32.768 ms; 8 + ceil(156/40)*5 = 28 + 12.25
        # -> 1318.912 ms.
        (12, 125_000, 20, 1_318_912),
    ],
)
def test_airtime(sf: int, bw_hz: int, size: int, airtime_us: int) -> None:
    assert region.airtime_us(sf, bw_hz, size) == airtime_us


class FakeRadio:
    def __init__(self) -> None:
        self.frames: list[tuple[bytes, int, int]] = []
        self.now_ms = 0

    def transmit(self, phy_payload: bytes, freq_hz: int, sf: int, bw_hz: int, power_dbm: int) -> int:
        self.frames.append((phy_payload, freq_hz, sf))
        return self.now_ms

    def receive(self, freq_hz: int, sf: int, bw_hz: int, open_at_ms: int, timeout_ms: int) -> bytes | None:
        return None


def test_abp_uplinks_are_accepted_and_flash_is_written_once_per_16(tmp_path: Path) -> None:
    nwk, app, addr = bytes(range(16)), bytes(range(16, 32)), "26011f2a"
    abp = {"dev_addr": addr, "nwk_s_key": nwk.hex(), "app_s_key": app.hex()}
    radio, storage = FakeRadio(), FileStorage(str(tmp_path / "state.json"))
    device = Device(radio, storage, abp=abp, sleep_ms=lambda ms: None, ticks_ms=lambda: 0)
    for n in range(40):
        device.send(10, bytes((n,)))
    assert storage.writes == 3  # at FCnt 0, 16 and 32 (ceilings 16, 32, 48)
    dev_addr = DevAddr.from_hex(addr)
    table = SessionTable(
        [
            Session(
                DevEui.from_hex("70b3d57ed0001234"),
                dev_addr,
                "edgegw/fill-level",
                session_tag(dev_addr, AesKey(nwk)),
                crypto.SessionKeys(nwk, app),
                None,
            )
        ]
    )
    rx = RxInfo(868_100_000, -90.0, 7.0, 7, 125_000, "4/5", True, "test")
    got = [table.accept(RadioFrame(f, rx, 0.0, time.monotonic())) for f, _, _ in radio.frames]
    assert [(u.fcnt, u.payload) for u in got] == [(n, bytes((n,))) for n in range(40)]
    # A reset resumes at the stored ceiling (48): never a counter the gateway saw, so never a replay.
    again = Device(radio, storage, abp=abp, sleep_ms=lambda ms: None, ticks_ms=lambda: 0)
    assert again.fcnt_up == 48
    again.send(10, b"x")
    assert table.accept(RadioFrame(radio.frames[-1][0], rx, 0.0, time.monotonic())).fcnt == 48
    with pytest.raises(ReplayedFrame):
        table.accept(RadioFrame(radio.frames[5][0], rx, 0.0, time.monotonic()))


def test_dev_nonce_is_stored_before_the_request_goes_out() -> None:
    storage = MemoryStorage()
    otaa = {"dev_eui": "70b3d57ed0001234", "join_eui": "70b3d57ed0000000", "app_key": KEY.hex()}
    device = Device(FakeRadio(), storage, otaa=otaa, sleep_ms=lambda ms: None, ticks_ms=lambda: 0)
    assert device.join(attempts=3) is False
    assert storage.load() == {"dev_nonce": 3} and storage.writes == 3
    # A reset: the next join-request uses DevNonce 3, never 0..2 again.
    radio = FakeRadio()
    Device(radio, storage, otaa=otaa, sleep_ms=lambda ms: None, ticks_ms=lambda: 0).join()
    assert phy.parse(radio.frames[0][0]).dev_nonce == b"\x00\x03"  # type: ignore[union-attr]


def test_file_storage_survives_garbage(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    assert FileStorage(str(path)).load() == {}
    FileStorage(str(path)).save({"dev_nonce": 5})
    assert FileStorage(str(path)).load() == {"dev_nonce": 5}
