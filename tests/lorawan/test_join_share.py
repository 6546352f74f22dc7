"""Join announcements (issue 21): a join-accept made by our JoinServer at the home is opened by a
witness holding the AppKey, which derives the same session; a forged or replayed one changes nothing.

Real parts: the home's ``JoinServer.handle`` builds the join-accept (LoRaWAN 1.0.4 §6.2.6, checked
against published vectors in test_join_crypto.py), the witness's ``JoinShare`` opens it; the durable
install is ``join.store_join`` on a real SQLite file, read back with ``load_sessions``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from gateway import db
from gateway.config import LorawanSection
from gateway.errors import FrameError
from gateway.lorawan import phy
from gateway.lorawan.join import JoinAccepted, JoinServer, OtaaDevice, load_otaa_devices, store_join
from gateway.lorawan.join_share import JoinShare, announcement, parse_announcement
from gateway.lorawan.sessions import SessionTable, load_sessions
from gateway.messages import AesKey, DevEui, JoinEui, RadioFrame, RxInfo
from gateway.provisioning import registry

APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
DEV_EUI = DevEui.from_hex("70b3d57ed0005678")
JOIN_EUI = JoinEui.from_hex("70b3d57ed0000000")
RX = RxInfo(868_300_000, -97.0, 6.25, 9, 125_000, "4/5", True, "test", "aa555a0000000001", 1_000_000)
SECTION = LorawanSection(cflist_hz="867100000 867300000 867500000 867700000 867900000")
PROFILE = "milesight/em310-udl"


def device(key: bytes = APP_KEY) -> OtaaDevice:
    return OtaaDevice(DEV_EUI, JOIN_EUI, key, PROFILE)


def home_join(dev_nonce: int, server: JoinServer | None = None) -> JoinAccepted:
    """A join the home's JoinServer accepted (its join-accept as sent on the air)."""
    server = server or JoinServer(SECTION, [device()])
    request = phy.build_join_request(
        APP_KEY, join_eui=JOIN_EUI.value, dev_eui=DEV_EUI.value, dev_nonce=dev_nonce.to_bytes(2, "big")
    )
    return server.handle(RadioFrame(request, RX, 1_700_000_000.0, time.monotonic()), SessionTable())


def witness(key: bytes = APP_KEY) -> tuple[JoinShare, OtaaDevice, Counter[str]]:
    counters: Counter[str] = Counter()
    share = JoinShare("gw-b", SessionTable(), counters)
    dev = device(key)
    share.merge([dev])
    return share, dev, counters


def test_the_witness_derives_the_home_s_session_from_the_announcement() -> None:
    accepted = home_join(0x0102)
    share, dev, counters = witness()
    shared = share.receive("gw-a", announcement(accepted, 1_700_000_000.0), 1_700_000_001.0)
    assert shared is not None and counters["join_share.malformed"] == 0
    assert shared.nwk_s_key == accepted.nwk_s_key and shared.app_s_key == accepted.app_s_key
    assert shared.session.dev_addr == accepted.session.dev_addr
    # The same session tag: the witness's records carry the home's record ids.
    assert shared.session.session_tag == accepted.session.session_tag
    assert (shared.dev_nonce, shared.join_nonce) == (0x0102, accepted.join_nonce)
    assert shared.rx1 is None and shared.rx2 is None  # a witness never sends the join-accept
    # The nonces are the witness's now: a replayed join-request or announcement finds them used.
    assert 0x0102 in dev.used_dev_nonces and dev.last_join_nonce == accepted.join_nonce


def test_the_announcement_carries_what_the_design_says_and_nothing_secret() -> None:
    accepted = home_join(7)
    doc = json.loads(announcement(accepted, 1_700_000_000.0))
    assert doc == {
        "v": 1, "dev_eui": str(DEV_EUI), "join_eui": str(JOIN_EUI), "dev_nonce": 7,
        "join_accept": accepted.phy_payload.hex(), "at": "2023-11-14T22:13:20+00:00",
    }  # fmt: skip
    text = json.dumps(doc)
    for secret in (APP_KEY.hex(), accepted.nwk_s_key.reveal(), accepted.app_s_key.reveal()):
        assert secret not in text


def test_the_join_accept_is_opened_with_an_aes_encrypt_as_a_device_does() -> None:
    """LoRaWAN 1.0.4 §6.2.6: the network encrypts with AES decrypt; AES encrypt of the air bytes
    gives the clear body whose CMAC (AppKey) is the MIC. Checked here with the bare primitives."""
    accepted = home_join(9)
    air = accepted.phy_payload
    enc = Cipher(algorithms.AES(APP_KEY), modes.ECB()).encryptor()
    clear = enc.update(air[1:]) + enc.finalize()
    mac = CMAC(algorithms.AES(APP_KEY))
    mac.update(air[:1] + clear[:-4])
    assert mac.finalize()[:4] == clear[-4:]
    assert clear[6:10][::-1] == accepted.session.dev_addr.value
    share, _dev, _counters = witness()
    shared = share.receive("gw-a", announcement(accepted, 0.0), 0.0)
    assert shared is not None and shared.session.dev_addr == accepted.session.dev_addr


@pytest.mark.parametrize("forgery", ["wrong_app_key", "flipped_byte", "flipped_mic"])
def test_a_forged_join_accept_is_refused_and_changes_nothing(forgery: str) -> None:
    accepted = home_join(0x0102)
    payload = bytearray(accepted.phy_payload)
    if forgery == "wrong_app_key":
        other_key = bytes(16)
        payload = bytearray(
            phy.build_join_accept(other_key, join_nonce=b"\0\0\5", net_id=bytes(3), dev_addr=b"\x26\1\2\3")
        )
    else:
        payload[5 if forgery == "flipped_byte" else -1] ^= 0x01
    doc = json.loads(announcement(accepted, 0.0))
    doc["join_accept"] = bytes(payload).hex()
    share, dev, counters = witness()
    assert share.receive("gw-a", json.dumps(doc).encode(), 0.0) is None
    assert counters == Counter({"join_share.bad_mic": 1})
    assert dev.used_dev_nonces == set() and dev.last_join_nonce == -1


def test_a_witness_with_another_app_key_refuses_a_true_announcement() -> None:
    share, dev, counters = witness(key=bytes(range(16)))
    assert share.receive("gw-a", announcement(home_join(1), 0.0), 0.0) is None
    assert counters == Counter({"join_share.bad_mic": 1}) and dev.used_dev_nonces == set()


def test_replayed_and_older_announcements_are_stale() -> None:
    server = JoinServer(SECTION, [device()])
    first, second = home_join(1, server), home_join(2, server)
    share, _dev, counters = witness()
    assert share.receive("gw-a", announcement(second, 0.0), 0.0) is not None
    assert share.receive("gw-a", announcement(second, 0.0), 0.0) is None  # the same again
    assert share.receive("gw-a", announcement(first, 0.0), 0.0) is None  # an older session
    assert counters == Counter({"join_share.stale": 2})


def test_own_unknown_and_malformed_announcements() -> None:
    accepted = home_join(3)
    share, _dev, counters = witness()
    assert share.receive("gw-b", announcement(accepted, 0.0), 0.0) is None  # our own, heard back
    other = json.loads(announcement(accepted, 0.0))
    other["dev_eui"] = "70b3d57ed0009999"
    assert share.receive("gw-a", json.dumps(other).encode(), 0.0) is None
    for bad in (b"", b"{", b"[]", b'{"v":2}', json.dumps({**other, "dev_nonce": -1}).encode(), bytes(2000)):
        assert share.receive("gw-a", bad, 0.0) is None
    assert counters == Counter(
        {"join_share.own": 1, "join_share.unknown_device": 1, "join_share.malformed": 6}
    )
    with pytest.raises(FrameError):
        parse_announcement("gw-a", b"{}")


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = db.connect(tmp_path / "edgegw.sqlite")
    registry.add_device(
        c,
        dev_eui=DEV_EUI,
        profile=PROFILE,
        keys=registry.OtaaKeys(join_eui=JOIN_EUI, app_key=AesKey(APP_KEY)),
    )
    return c


def test_a_shared_join_is_stored_as_a_join_would_be(conn: sqlite3.Connection) -> None:
    """The sessions row and the used DevNonce, so a restart serves the session and a replayed
    join-request stays refused; the JoinNonce goes on above the home's if this gateway becomes home."""
    accepted = home_join(0x0A0B)
    share = JoinShare("gw-b", SessionTable())
    share.merge(load_otaa_devices(conn))
    shared = share.receive("gw-a", announcement(accepted, 0.0), 1_700_000_000.0)
    assert shared is not None
    store_join(conn, shared)
    (session,) = load_sessions(conn)
    assert (
        session.session_tag == accepted.session.session_tag and session.dev_addr == accepted.session.dev_addr
    )
    (reloaded,) = load_otaa_devices(conn)
    assert reloaded.used_dev_nonces == {0x0A0B} and reloaded.last_join_nonce == accepted.join_nonce


def test_a_witness_that_becomes_home_continues_the_home_s_nonces() -> None:
    """The join server and the join announcements hold the same OtaaDevice objects (the registry
    snapshot's): a DevNonce the home used stays refused here, the next JoinNonce is above the home's."""
    accepted = home_join(0x0102)
    devices = [device()]
    server = JoinServer(SECTION, devices)
    share = JoinShare("gw-b", SessionTable())
    share.merge(devices)
    assert share.receive("gw-a", announcement(accepted, 0.0), 0.0) is not None
    with pytest.raises(FrameError) as replayed:
        home_join(0x0102, server)
    assert replayed.value.reason == "reused_dev_nonce"
    assert home_join(0x0103, server).join_nonce == accepted.join_nonce + 1
