"""Review of the multicast group registry (issue 20): what a radio engineer found wrong, on a real
SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import db
from gateway.errors import RegistryError
from gateway.eu868 import sub_band_for
from gateway.lorawan import region
from gateway.messages import AesKey, DevAddr, DevEui
from gateway.provisioning import groups, registry


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = db.connect(db.db_path(tmp_path))
    yield connection
    connection.close()


def test_a_250_khz_group_must_fit_its_sub_band_whole(conn: sqlite3.Connection) -> None:
    # DR6 is SF7 at 250 kHz (RP002 EU868): centred on 869.55 MHz it spans 869.425..869.675 MHz and
    # leaves the 869.4..869.65 MHz sub-band, where 125 kHz would fit. The radio layer refuses every
    # such frame (no sub-band holds it): the group must be refused when it is created, not
    # accepted to fail at each lighting step.
    assert region.data_rate(6).bw_hz == 250_000
    assert sub_band_for(869_550_000, 125_000) is not None and sub_band_for(869_550_000, 250_000) is None
    with pytest.raises(RegistryError, match="250 kHz"):
        groups.add_group(conn, "district-1", dr=6, freq_hz=869_550_000)
    assert groups.list_groups(conn) == []
    groups.add_group(conn, "district-2", dr=6, freq_hz=869_525_000)  # 869.4..869.65: it fits
    groups.add_group(conn, "district-3", dr=5, freq_hz=869_550_000)  # 125 kHz: it fits


def test_a_member_set_back_to_class_a_is_named_as_not_receiving(
    conn: sqlite3.Connection,
) -> None:
    # add-member refuses a class A device (it listens only after its own uplinks), but `device set
    # --class A` on a member afterwards left it listed as an ordinary member: `group show` and the
    # step cost counted a lamp the group's frames never reach, and nothing said so.
    for n, cls in ((1, "C"), (2, "C")):
        keys = registry.AbpKeys(DevAddr.from_hex(f"2601100{n}"), AesKey(bytes(16)), AesKey(bytes(16)))
        registry.add_device(
            conn, dev_eui=DevEui.from_hex(f"0004a30b00f0000{n}"), profile="nasys/ul20xx", keys=keys,
            lorawan_class=cls,
        )  # fmt: skip
    groups.add_group(conn, "district-1")
    lamps = [DevEui.from_hex("0004a30b00f00001"), DevEui.from_hex("0004a30b00f00002")]
    groups.add_members(conn, "district-1", lamps)
    registry.update_installation(conn, DevEui.from_hex("0004a30b00f00002"), lorawan_class="A")
    info = groups.get_group(conn, "district-1")
    assert info.members == ("0004a30b00f00001", "0004a30b00f00002")
    assert info.not_class_c == ("0004a30b00f00002",)
    assert info.as_json()["not_class_c"] == ["0004a30b00f00002"]
