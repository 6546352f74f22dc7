"""The multicast group registry (gateway.provisioning.groups) on a real SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import db
from gateway.errors import RegistryError
from gateway.messages import AesKey, DevAddr, DevEui
from gateway.provisioning import groups, keystore, registry

LAMP_1 = DevEui.from_hex("0004a30b00f00001")
LAMP_2 = DevEui.from_hex("0004a30b00f00002")
OTHER = DevEui.from_hex("0004a30b00f00003")


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = db.connect(db.db_path(tmp_path))
    yield connection
    connection.close()


def add(
    conn: sqlite3.Connection, eui: DevEui, addr: str, profile: str = "nasys/ul20xx", cls: str = "C"
) -> None:
    keys = registry.AbpKeys(DevAddr.from_hex(addr), AesKey(bytes(16)), AesKey(bytes(16)))
    registry.add_device(conn, dev_eui=eui, profile=profile, keys=keys, lorawan_class=cls)  # type: ignore[arg-type]


def test_a_group_gets_fresh_keys_and_address_and_starts_at_counter_0(conn: sqlite3.Connection) -> None:
    first, nwk, app = groups.add_group(conn, "district-1")
    second, nwk2, _ = groups.add_group(conn, "district-2", dr=3, freq_hz=869_462_500)
    assert nwk != app and nwk != nwk2 and first.mc_addr != second.mc_addr
    assert (first.fcnt_down, first.dr, first.freq_hz, first.members, first.profile) == (
        0,
        None,
        None,
        (),
        None,
    )
    assert (second.dr, second.freq_hz) == (3, 869_462_500)
    assert [g.name for g in groups.list_groups(conn)] == ["district-1", "district-2"]
    assert groups.group_keys(conn, "district-1") == {
        "mc_nwk_s_key": nwk.reveal(),
        "mc_app_s_key": app.reveal(),
    }


def test_names_addresses_rates_and_frequencies_are_checked(conn: sqlite3.Connection) -> None:
    add(conn, LAMP_1, "26011001")
    groups.add_group(conn, "district-1", mc_addr=DevAddr.from_hex("01020304"))
    with pytest.raises(RegistryError, match="exists already"):
        groups.add_group(conn, "district-1")
    with pytest.raises(RegistryError, match="used by multicast group district-1"):
        groups.add_group(conn, "district-2", mc_addr=DevAddr.from_hex("01020304"))
    with pytest.raises(RegistryError, match="DevAddr of device"):
        groups.add_group(conn, "district-2", mc_addr=DevAddr.from_hex("26011001"))
    with pytest.raises(RegistryError, match="group name"):
        groups.add_group(conn, "District 2")
    with pytest.raises(RegistryError, match=r"0\.\.6"):
        groups.add_group(conn, "district-2", dr=7)
    with pytest.raises(RegistryError, match="sub-band"):
        groups.add_group(conn, "district-2", freq_hz=869_300_000)  # 869.2-869.4 MHz: not for us


def test_members_are_class_c_devices_of_one_profile(conn: sqlite3.Connection) -> None:
    add(conn, LAMP_1, "26011001")
    add(conn, LAMP_2, "26011002")
    add(conn, OTHER, "26011003", profile="edgegw/lamp-controller")
    add(conn, DevEui.from_hex("0004a30b00f00004"), "26011004", cls="A")
    groups.add_group(conn, "district-1")
    groups.add_member(conn, "district-1", LAMP_1)
    info = groups.add_member(conn, "district-1", LAMP_2)
    assert info.members == (str(LAMP_1), str(LAMP_2)) and info.profile == "nasys/ul20xx"
    with pytest.raises(RegistryError, match="the members of group district-1 have nasys"):
        groups.add_member(conn, "district-1", OTHER)
    with pytest.raises(RegistryError, match="class A"):
        groups.add_member(conn, "district-1", DevEui.from_hex("0004a30b00f00004"))
    with pytest.raises(RegistryError, match="not registered"):
        groups.add_member(conn, "district-1", DevEui.from_hex("0004a30b00f000ff"))
    assert groups.get_group(conn, "district-1").members == (str(LAMP_1), str(LAMP_2))
    # Once the group is empty again, another profile may join.
    groups.remove_member(conn, "district-1", LAMP_1)
    groups.remove_member(conn, "district-1", LAMP_2)
    assert groups.add_member(conn, "district-1", OTHER).profile == "edgegw/lamp-controller"


def test_a_removed_device_leaves_its_groups_a_removed_group_keeps_its_devices(
    conn: sqlite3.Connection,
) -> None:
    add(conn, LAMP_1, "26011001")
    add(conn, LAMP_2, "26011002")
    groups.add_group(conn, "district-1")
    groups.add_member(conn, "district-1", LAMP_1)
    groups.add_member(conn, "district-1", LAMP_2)
    registry.remove_device(conn, LAMP_1)
    assert groups.get_group(conn, "district-1").members == (str(LAMP_2),)
    groups.remove_group(conn, "district-1")
    assert conn.execute("SELECT COUNT(*) FROM multicast_members").fetchone() == (0,)
    assert [d.dev_eui for d in registry.list_devices(conn)] == [LAMP_2]


def test_keys_are_encrypted_at_rest_with_a_key_file(conn: sqlite3.Connection, tmp_path: Path) -> None:
    store = keystore.create_key(tmp_path)
    _, nwk, app = groups.add_group(conn, "district-1", keystore=store)
    groups.add_group(conn, "district-2")  # before rekey: plain hex
    stored = conn.execute(
        "SELECT nwk_s_key, app_s_key FROM multicast_groups WHERE name = 'district-1'"
    ).fetchone()
    assert all(value.startswith(keystore.PREFIX) for value in stored)
    assert nwk.reveal() not in stored
    with pytest.raises(RegistryError, match="encrypted"):
        groups.group_keys(conn, "district-1")
    assert groups.group_keys(conn, "district-1", store)["mc_app_s_key"] == app.reveal()
    (loaded, _) = groups.load_groups(conn, store.decrypt_hex)
    assert (loaded.nwk_s_key, loaded.app_s_key) == (nwk, app)
    assert groups.reseal(conn, store) == 2
    values = [v for row in conn.execute("SELECT nwk_s_key, app_s_key FROM multicast_groups") for v in row]
    assert all(v.startswith(keystore.PREFIX) for v in values)
