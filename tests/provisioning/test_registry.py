"""Device registry: ABP and OTAA registration, duplicates refused, keys kept out of plain views."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import db
from gateway.errors import RegistryError
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui
from gateway.provisioning import registry

NWK = AesKey.from_hex("2b7e151628aed2a6abf7158809cf4f3c")
APP = AesKey.from_hex("000102030405060708090a0b0c0d0e0f")


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = db.connect(db.db_path(tmp_path))
    yield c
    c.close()


def abp(addr: str = "26011001") -> registry.AbpKeys:
    return registry.AbpKeys(DevAddr.from_hex(addr), NWK, APP)


def test_abp_device_gets_a_session(conn: sqlite3.Connection) -> None:
    dev = registry.add_device(
        conn,
        dev_eui=DevEui.from_hex("70B3D57ED0001234"),
        profile="milesight/em310-udl",
        keys=abp(),
        site="aix/a1",
    )
    assert str(dev.dev_eui) == "70b3d57ed0001234"
    assert dev.activation == "abp" and str(dev.dev_addr) == "26011001" and dev.fcnt_up is None
    shown = dev.as_json()
    assert "nwk_s_key" not in str(shown) and NWK.reveal() not in str(shown)
    assert registry.device_keys(conn, dev.dev_eui)["nwk_s_key"] == NWK.reveal()
    tag = conn.execute("SELECT session_tag FROM sessions").fetchone()[0]
    assert tag == registry.session_tag(DevAddr.from_hex("26011001"), NWK) and len(tag) == 8


def test_otaa_device_has_no_session_until_it_joins(conn: sqlite3.Connection) -> None:
    keys = registry.OtaaKeys(JoinEui.from_hex("0000000000000001"), APP)
    dev = registry.add_device(conn, dev_eui=DevEui.from_hex("0000000000000002"), profile="p/q", keys=keys)
    assert dev.activation == "otaa" and dev.dev_addr is None
    assert registry.device_keys(conn, dev.dev_eui) == {
        "join_eui": "0000000000000001",
        "app_key": APP.reveal(),
    }


def test_duplicates_are_refused_and_nothing_is_half_written(conn: sqlite3.Connection) -> None:
    eui = DevEui.from_hex("0000000000000001")
    registry.add_device(conn, dev_eui=eui, profile="p/q", keys=abp())
    with pytest.raises(RegistryError, match="already registered"):
        registry.add_device(conn, dev_eui=eui, profile="p/q", keys=abp("26011002"))
    with pytest.raises(RegistryError, match="DevAddr 26011001 is already used"):
        registry.add_device(conn, dev_eui=DevEui.from_hex("0000000000000009"), profile="p/q", keys=abp())
    assert [str(d.dev_eui) for d in registry.list_devices(conn)] == ["0000000000000001"]
    assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1


def test_remove_forgets_device_and_session(conn: sqlite3.Connection) -> None:
    eui = DevEui.from_hex("0000000000000001")
    registry.add_device(conn, dev_eui=eui, profile="p/q", keys=abp())
    registry.remove_device(conn, eui)
    assert registry.list_devices(conn) == []
    assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    with pytest.raises(RegistryError, match="not registered"):
        registry.remove_device(conn, eui)


def test_session_tag_changes_with_keys_or_address() -> None:
    a = registry.session_tag(DevAddr.from_hex("26011001"), NWK)
    assert a != registry.session_tag(DevAddr.from_hex("26011002"), NWK)
    assert a != registry.session_tag(DevAddr.from_hex("26011001"), APP)
    assert a == registry.session_tag(DevAddr.from_hex("26011001"), NWK)
