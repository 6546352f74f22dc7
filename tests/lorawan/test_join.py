"""OTAA joins at the edge: join-request → durable session + join-accept → data uplinks; replays refused.

Real SQLite files in tmp_path, the real database thread (``Database``), frames
built with ``phy.build_join_request`` / ``phy.build_data_frame`` (checked against
published vectors in test_join_crypto.py and test_phy.py). The device side of
the join (decrypting the join-accept, deriving its keys) uses only ``phy`` and
``crypto``, as a device would.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from gateway import db
from gateway.config import LorawanSection
from gateway.db.commit import Database
from gateway.errors import FrameError, MicMismatch, ReplayedFrame, UnknownDevice
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys, derive_session_keys
from gateway.lorawan.join import JoinServer, accept_join, load_otaa_devices, session_tag, store_join
from gateway.lorawan.sessions import SessionTable, load_sessions
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui, MType, RadioFrame, RxInfo
from gateway.provisioning import registry

APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
DEV_EUI = DevEui.from_hex("70b3d57ed0005678")
JOIN_EUI = JoinEui.from_hex("70b3d57ed0000000")
TMST = 4_294_000_000  # near the 32-bit wrap on purpose
RX = RxInfo(868_300_000, -97.0, 6.25, 9, 125_000, "4/5", True, "test", "aa555a0000000001", TMST)
SECTION = LorawanSection()


def frame(phy_payload: bytes, rx: RxInfo = RX) -> RadioFrame:
    return RadioFrame(phy_payload, rx, 1_700_000_000.0, time.monotonic())


def join_request(
    dev_nonce: int, *, key: bytes = APP_KEY, dev_eui: DevEui = DEV_EUI, join_eui: JoinEui = JOIN_EUI
) -> RadioFrame:
    return frame(
        phy.build_join_request(
            key, join_eui=join_eui.value, dev_eui=dev_eui.value, dev_nonce=dev_nonce.to_bytes(2, "big")
        )
    )


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = db.connect(tmp_path / "edgegw.sqlite")
    registry.add_device(
        c,
        dev_eui=DEV_EUI,
        profile="milesight/em310-udl",
        keys=registry.OtaaKeys(join_eui=JOIN_EUI, app_key=AesKey(APP_KEY)),
    )
    return c


def test_join_accept_decrypts_on_the_device_side_and_keys_agree(conn: sqlite3.Connection) -> None:
    server = JoinServer(SECTION, load_otaa_devices(conn))
    accepted = server.handle(join_request(0x0102), SessionTable())
    # The device: decrypt with its AppKey, read the fields, derive its keys.
    parsed = phy.parse(accepted.phy_payload)
    assert isinstance(parsed, phy.JoinAccept)
    opened = phy.open_join_accept(parsed, APP_KEY)
    assert opened.dev_addr == accepted.session.dev_addr.value
    assert opened.net_id == bytes.fromhex(SECTION.net_id)
    assert int.from_bytes(opened.join_nonce, "big") == accepted.join_nonce == 0
    assert (opened.rx1_dr_offset, opened.rx2_dr, opened.rx_delay) == (0, 0, 1)
    assert opened.cflist == SECTION.cflist
    nwk, app = derive_session_keys(APP_KEY, opened.join_nonce, opened.net_id, b"\x01\x02")
    assert (accepted.nwk_s_key.value, accepted.app_s_key.value) == (nwk, app)
    # DevAddr in the configured block (00000000/7: the top 7 bits are 0).
    assert accepted.session.dev_addr.value[0] >> 1 == 0
    assert accepted.session.session_tag == registry.session_tag(accepted.session.dev_addr, accepted.nwk_s_key)


def test_join_accept_windows(conn: sqlite3.Connection) -> None:
    accepted = JoinServer(SECTION, load_otaa_devices(conn)).handle(join_request(1), SessionTable())
    rx1, rx2 = accepted.rx1, accepted.rx2
    assert rx1 is not None and rx2 is not None
    # RX1: the uplink channel and DR (the device's RX1DROffset is still 0), JOIN_ACCEPT_DELAY1 = 5 s.
    assert (rx1.freq_hz, rx1.sf, rx1.bw_hz) == (868_300_000, 9, 125_000)
    assert rx1.send_at_tmst_us == (TMST + 5_000_000) % 2**32
    # RX2: 869.525 MHz DR0 (SF12), JOIN_ACCEPT_DELAY2 = 6 s; the counter wraps at 2**32.
    assert (rx2.freq_hz, rx2.sf, rx2.bw_hz) == (869_525_000, 12, 125_000)
    assert rx2.send_at_tmst_us == (TMST + 6_000_000) % 2**32
    assert rx1.gateway_eui == rx2.gateway_eui == "aa555a0000000001"
    assert rx1.invert_polarity and rx1.phy_payload == rx2.phy_payload == accepted.phy_payload
    assert rx1.dev_eui == DEV_EUI


def test_no_timing_without_a_concentrator_timestamp(conn: sqlite3.Connection) -> None:
    rx = RxInfo(868_100_000, -80.0, 7.0, 7, 125_000, "4/5", True, "test")
    built = phy.build_join_request(
        APP_KEY, join_eui=JOIN_EUI.value, dev_eui=DEV_EUI.value, dev_nonce=b"\x00\x07"
    )
    accepted = JoinServer(SECTION, load_otaa_devices(conn)).handle(frame(built, rx), SessionTable())
    assert accepted.rx1 is None and accepted.rx2 is None


@pytest.mark.parametrize(
    ("request_frame", "reason", "error"),
    [
        (
            lambda: join_request(5, dev_eui=DevEui.from_hex("0000000000000001")),
            "unknown_join_device",
            UnknownDevice,
        ),
        (
            lambda: join_request(5, join_eui=JoinEui.from_hex("0000000000000001")),
            "unknown_join_device",
            UnknownDevice,
        ),
        (lambda: join_request(5, key=bytes(16)), "bad_join_mic", MicMismatch),
        (lambda: frame(b"\x00" + bytes(10)), "truncated", FrameError),
        (lambda: frame(bytes.fromhex("40F17DBE4900020001954378762B11FF0D")), "unsupported_mtype", FrameError),
    ],
)
def test_refused_join_requests_have_typed_reasons(
    conn: sqlite3.Connection, request_frame: object, reason: str, error: type[FrameError]
) -> None:
    server = JoinServer(SECTION, load_otaa_devices(conn))
    with pytest.raises(error) as caught:
        server.handle(request_frame(), SessionTable())  # type: ignore[operator]
    assert caught.value.reason == reason


def test_reused_dev_nonce_is_refused_in_memory_and_after_a_restart(conn: sqlite3.Connection) -> None:
    server = JoinServer(SECTION, load_otaa_devices(conn))
    sessions = SessionTable()
    store_join(conn, server.handle(join_request(42), sessions))
    with pytest.raises(FrameError) as caught:
        server.handle(join_request(42), sessions)
    assert caught.value.reason == "reused_dev_nonce"
    # A restarted agent reads the used DevNonces back from the database.
    restarted = JoinServer(SECTION, load_otaa_devices(conn))
    with pytest.raises(FrameError) as caught:
        restarted.handle(join_request(42), SessionTable(load_sessions(conn)))
    assert caught.value.reason == "reused_dev_nonce"
    # A new DevNonce joins, with the next JoinNonce (a counter that never repeats, §6.2.6).
    again = restarted.handle(join_request(43), SessionTable(load_sessions(conn)))
    assert again.join_nonce == 1


def test_database_refuses_a_dev_nonce_stored_by_another_path(conn: sqlite3.Connection) -> None:
    # Two servers reading the same registry race on one DevNonce: the primary key decides.
    first = JoinServer(SECTION, load_otaa_devices(conn)).handle(join_request(9), SessionTable())
    second = JoinServer(SECTION, load_otaa_devices(conn)).handle(join_request(9), SessionTable())
    store_join(conn, first)
    with pytest.raises(FrameError) as caught:
        store_join(conn, second)
    assert caught.value.reason == "reused_dev_nonce"
    assert conn.execute("SELECT count(*) FROM lorawan_joins").fetchone() == (1,)
    (tag,) = conn.execute("SELECT session_tag FROM sessions").fetchone()
    assert tag == first.session.session_tag


def test_dev_addr_is_unique_among_sessions(conn: sqlite3.Connection) -> None:
    # A 2-address block: the first join takes one, the second must take the other, a third finds none.
    section = LorawanSection(dev_addr_prefix="26011000/31")
    server = JoinServer(section, load_otaa_devices(conn))
    sessions = SessionTable()
    a = server.handle(join_request(1), sessions)
    sessions.install(a.session)
    other = DevEui.from_hex("70b3d57ed0009999")
    registry.add_device(
        conn,
        dev_eui=other,
        profile="milesight/em310-udl",
        keys=registry.OtaaKeys(join_eui=JOIN_EUI, app_key=AesKey(APP_KEY)),
    )
    server.merge(load_otaa_devices(conn))
    b = server.handle(join_request(1, dev_eui=other), sessions)
    sessions.install(b.session)
    assert {a.session.dev_addr.value, b.session.dev_addr.value} == {
        bytes.fromhex("26011000"),
        bytes.fromhex("26011001"),
    }
    with pytest.raises(FrameError) as caught:
        server.handle(join_request(2, dev_eui=other), sessions)
    assert caught.value.reason == "dev_addr_exhausted"


async def test_end_to_end_join_then_uplinks_then_replays(tmp_path: Path) -> None:
    """join-request → durable session + join-accept → the device's data uplinks accepted; replays refused."""
    path = tmp_path / "edgegw.sqlite"
    setup = db.connect(path)
    registry.add_device(
        setup,
        dev_eui=DEV_EUI,
        profile="milesight/em310-udl",
        keys=registry.OtaaKeys(join_eui=JOIN_EUI, app_key=AesKey(APP_KEY)),
    )
    setup.close()
    database = Database(path)
    try:
        sessions = SessionTable(database.run_sync(load_sessions))
        server = JoinServer(SECTION, database.run_sync(load_otaa_devices))
        assert len(sessions) == 0 and len(server) == 1
        accepted = await accept_join(server, join_request(0x2000), sessions, database)
        # Served at once, durable already.
        assert sessions.by_dev_eui(DEV_EUI) is accepted.session
        stored = database.run_sync(load_sessions)
        assert [s.session_tag for s in stored] == [accepted.session.session_tag]
        # The device decrypts the join-accept and sends data frames with the keys it derived.
        parsed = phy.parse(accepted.phy_payload)
        assert isinstance(parsed, phy.JoinAccept)
        opened = phy.open_join_accept(parsed, APP_KEY)
        keys = SessionKeys(*derive_session_keys(APP_KEY, opened.join_nonce, opened.net_id, b"\x20\x00"))

        def data(fcnt: int) -> RadioFrame:
            return frame(
                phy.build_data_frame(
                    keys,
                    mtype=MType.UNCONFIRMED_DATA_UP,
                    dev_addr=opened.dev_addr,
                    fcnt32=fcnt,
                    fport=85,
                    payload=b"\x01\x75\x5c",
                )
            )

        ups = [sessions.accept(data(n)) for n in range(3)]
        assert [u.fcnt for u in ups] == [0, 1, 2]
        assert all(u.payload == b"\x01\x75\x5c" and u.dev_eui == DEV_EUI for u in ups)
        with pytest.raises(ReplayedFrame):
            sessions.accept(data(1))
        # A replayed join-request is refused, and the session it would reset stays.
        with pytest.raises(FrameError) as caught:
            await accept_join(server, join_request(0x2000), sessions, database)
        assert caught.value.reason == "reused_dev_nonce"
        assert sessions.accept(data(3)).fcnt == 3
        # A registry read that started before the join committed must not drop the new session.
        sessions.merge([])
        assert sessions.by_dev_eui(DEV_EUI) is not None
        sessions.merge(database.run_sync(load_sessions))
        assert sessions.by_dev_eui(DEV_EUI) is not None and sessions.accept(data(4)).fcnt == 4
        # A rejoin replaces the session: the old keys stop working, the counter restarts.
        rejoin = await accept_join(server, join_request(0x2001), sessions, database)
        assert rejoin.join_nonce == accepted.join_nonce + 1
        assert rejoin.session.dev_addr != accepted.session.dev_addr
        with pytest.raises(UnknownDevice):
            sessions.accept(data(5))
    finally:
        database.close()


def test_session_tag_matches_the_registry() -> None:
    addr, key = DevAddr.from_hex("26011001"), AesKey(APP_KEY)
    assert session_tag(addr, key) == registry.session_tag(addr, key)
