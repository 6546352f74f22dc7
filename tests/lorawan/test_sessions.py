"""Session table: data uplinks are accepted exactly when a network server would accept them.

Frames are built with ``phy.build_data_frame`` (itself checked against published
vectors in test_phy.py / test_crypto.py).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from pathlib import Path

import pytest

from gateway import db
from gateway.errors import FrameError, MicMismatch, ReplayedFrame, UnknownDevice
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.sessions import RETRANSMISSION_WINDOW_S, Session, SessionTable, load_sessions
from gateway.messages import AesKey, DevAddr, DevEui, MType, RadioFrame, RxInfo
from gateway.provisioning import registry

NWK = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
APP = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
ADDR = bytes.fromhex("26011001")
EUI = DevEui.from_hex("70b3d57ed0001234")
RX = RxInfo(868_100_000, -80.0, 7.5, 7, 125_000, "4/5", True, "test")


def frame(phy_payload: bytes) -> RadioFrame:
    return RadioFrame(phy_payload, RX, time.time(), time.monotonic())


def uplink(
    fcnt32: int,
    payload: bytes = b"\x01\x75\x5c",
    *,
    keys: SessionKeys | None = None,
    fport: int = 85,
    mtype: MType = MType.UNCONFIRMED_DATA_UP,
) -> RadioFrame:
    built = phy.build_data_frame(
        keys or SessionKeys(NWK, APP), mtype=mtype, dev_addr=ADDR, fcnt32=fcnt32, fport=fport, payload=payload
    )
    return frame(built)


def table(fcnt_up: int | None = None) -> SessionTable:
    session = Session(EUI, DevAddr(ADDR), "milesight/em310-udl", "abcd0123", SessionKeys(NWK, APP), fcnt_up)
    return SessionTable([session])


def test_accepts_and_decrypts_a_data_uplink() -> None:
    up = table().accept(uplink(0))
    assert up.dev_eui == EUI and up.fcnt == 0 and up.fport == 85 and up.payload == b"\x01\x75\x5c"
    assert up.profile == "milesight/em310-udl" and up.session_tag == "abcd0123" and not up.confirmed


def test_counter_advances_and_rolls_over_16_bits() -> None:
    t = table(fcnt_up=0xFFFE)
    assert t.accept(uplink(0xFFFF)).fcnt == 0xFFFF
    assert t.accept(uplink(0x10000)).fcnt == 0x10000  # 16 bits on air: 0x0000
    assert t.accept(uplink(0x10005)).fcnt == 0x10005


def test_replayed_and_duplicate_frames_are_rejected() -> None:
    t = table()
    first = uplink(7)
    t.accept(first)
    with pytest.raises(ReplayedFrame):
        t.accept(first)
    t.accept(uplink(8))
    with pytest.raises(ReplayedFrame):
        t.accept(uplink(3))


def test_a_repeat_of_the_last_accepted_frame_is_a_retransmission_not_a_replay() -> None:
    # NbTrans 3 (LoRaWAN 1.0.4 §5.3): the same uplink three times, same FCnt, payload and MIC.
    t = table()
    first = uplink(7)
    t.accept(first)
    for _ in range(2):
        with pytest.raises(ReplayedFrame):  # accept still refuses it: it is not a new frame
            t.accept(first)
        session = t.retransmission_of(first)
        assert session is not None and session.dev_eui == EUI and session.fcnt_up == 7
    # Not a retransmission: the same FCnt with another payload, a copied MIC on other bytes,
    # an older frame, and the first frame once a newer one was accepted.
    assert t.retransmission_of(uplink(7, b"\x01\x75\x10")) is None
    forged = bytearray(uplink(7, b"\x01\x75\x10").phy_payload)
    forged[-4:] = first.phy_payload[-4:]
    assert t.retransmission_of(frame(bytes(forged))) is None
    assert t.retransmission_of(uplink(3)) is None
    t.accept(uplink(8))
    assert t.retransmission_of(first) is None
    assert t.retransmission_of(uplink(8)) is not None


def test_the_same_frame_played_back_after_the_repeat_window_is_a_replay() -> None:
    # A captured frame is byte-identical to an NbTrans repeat: only its time tells them apart.
    t = table()
    first = uplink(7)
    t.accept(first)
    within = dataclasses.replace(first, received_at_s=first.received_at_s + RETRANSMISSION_WINDOW_S)
    later = dataclasses.replace(first, received_at_s=first.received_at_s + RETRANSMISSION_WINDOW_S + 1)
    assert t.retransmission_of(within) is not None
    assert t.retransmission_of(later) is None


def test_a_registry_merge_keeps_what_tells_a_retransmission() -> None:
    t = table()
    first = uplink(7)
    t.accept(first)
    t.merge([Session(EUI, DevAddr(ADDR), "milesight/em310-udl", "abcd0123", SessionKeys(NWK, APP), 5)])
    assert t.retransmission_of(first) is not None
    # A new session (another tag): its first frames are new, nothing to compare with.
    t.merge([Session(EUI, DevAddr(ADDR), "milesight/em310-udl", "ffff0000", SessionKeys(NWK, APP), 7)])
    assert t.retransmission_of(first) is None


def test_bad_mic_is_rejected_and_does_not_move_the_counter() -> None:
    t = table(fcnt_up=10)
    forged = uplink(11, keys=SessionKeys(bytes(16), APP))
    with pytest.raises(MicMismatch):
        t.accept(forged)
    assert t.accept(uplink(11)).fcnt == 11  # the real frame 11 still gets in


def test_unknown_devaddr_downlink_and_join_are_rejected_with_reasons() -> None:
    t = table()
    other = phy.build_data_frame(
        SessionKeys(NWK, APP),
        mtype=MType.UNCONFIRMED_DATA_UP,
        dev_addr=bytes(4),
        fcnt32=0,
        fport=1,
        payload=b"x",
    )
    with pytest.raises(UnknownDevice):
        t.accept(frame(other))
    with pytest.raises(FrameError) as info:
        t.accept(uplink(1, mtype=MType.UNCONFIRMED_DATA_DOWN))
    assert info.value.reason == "downlink_on_uplink"
    join = bytes([0x00]) + bytes(18) + bytes(4)
    with pytest.raises(FrameError) as info:
        t.accept(frame(join))
    assert info.value.reason == "unsupported_mtype"
    with pytest.raises(FrameError):
        t.accept(frame(b"\x40\x01"))


def test_counters_are_persisted_through_the_commit_sink(tmp_path: Path) -> None:
    conn = db.connect(db.db_path(tmp_path))
    registry.add_device(
        conn,
        dev_eui=EUI,
        profile="milesight/em310-udl",
        keys=registry.AbpKeys(DevAddr(ADDR), AesKey(NWK), AesKey(APP)),
    )
    t = SessionTable(load_sessions(conn))
    t.accept(uplink(5))
    t.accept(uplink(6))
    taken = t.take()
    assert taken is not None and [c.fcnt_up for c in taken] == [6]  # one row per device, the latest
    assert t.take() is None
    _commit(conn, t, taken)
    # After a restart, the replay window stays closed.
    reloaded = SessionTable(load_sessions(conn))
    with pytest.raises(ReplayedFrame):
        reloaded.accept(uplink(6))
    assert reloaded.accept(uplink(7)).fcnt == 7


def test_merge_keeps_counters_that_are_ahead_of_the_database(tmp_path: Path) -> None:
    conn = db.connect(db.db_path(tmp_path))
    registry.add_device(
        conn,
        dev_eui=EUI,
        profile="milesight/em310-udl",
        keys=registry.AbpKeys(DevAddr(ADDR), AesKey(NWK), AesKey(APP)),
    )
    t = SessionTable(load_sessions(conn))
    t.accept(uplink(9))  # not committed yet
    t.merge(load_sessions(conn))  # the database still says None
    with pytest.raises(ReplayedFrame):
        t.accept(uplink(9))
    registry.remove_device(conn, EUI)
    t.merge(load_sessions(conn))
    with pytest.raises(UnknownDevice):
        t.accept(uplink(10))


def _commit(conn: sqlite3.Connection, t: SessionTable, taken: object) -> None:
    conn.execute("BEGIN")
    t.write(conn, taken)  # type: ignore[arg-type]
    conn.execute("COMMIT")
