"""Review of the class C multicast code (issue 20): behaviours a hostile tester found wrong.

Each test names the finding; the frame is checked the way a member lamp reads it
(``tests.lorawan.test_multicast.device_reads``: MIC and FRMPayload recomputed from LoRaWAN 1.0.4
§4.3.3 and §4.4 with ``cryptography``, not the gateway's crypto).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import db
from gateway.lorawan.multicast import McGroup, MulticastScheduler
from gateway.messages import AesKey
from gateway.provisioning import groups
from tests.lorawan.test_multicast import APP, MC_ADDR, NWK, commit, device_reads

NEW_APP = AesKey(bytes.fromhex("f0e0d0c0b0a090807060504030201000"))


def _group(app: AesKey, fcnt_down: int = 0) -> McGroup:
    return McGroup(name="district-1", mc_addr=MC_ADDR, nwk_s_key=NWK, app_s_key=app, fcnt_down=fcnt_down)


def test_a_new_mc_app_s_key_under_the_same_mc_addr_and_nwk_key_is_used_at_once() -> None:
    # The installer re-created the group (group remove; group add) with the same McAddr and
    # McNwkSKey but a new McAppSKey, and reprogrammed the lamps; the agent saw both changes in one
    # registry refresh. The group's tag (McAddr, McNwkSKey) is unchanged, so the agent kept its
    # state: it must still encrypt with the McAppSKey the registry now holds. Before the fix it kept
    # the old one until a restart: the MIC (McNwkSKey) passed and every lamp decrypted garbage.
    mc = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    mc.merge([_group(APP)])
    mc.merge([_group(NEW_APP)])
    mc.enqueue("district-1", 60, bytes.fromhex("0132"))
    mc.ready()
    commit(mc)
    (request,) = mc.ready()
    assert device_reads(request.phy_payload, NWK, NEW_APP) == (0, 60, bytes.fromhex("0132"))


def test_the_counter_still_only_moves_forward_when_the_app_key_changes() -> None:
    mc = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    mc.merge([_group(APP, fcnt_down=7)])
    mc.merge([_group(NEW_APP, fcnt_down=0)])  # the registry's row of the group created again
    assert mc.fcnt_down("district-1") == 7
    assert mc.group("district-1") == _group(NEW_APP, fcnt_down=0)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = db.connect(db.db_path(tmp_path))
    yield connection
    connection.close()


def test_a_group_removed_and_created_again_with_the_same_keys_never_reuses_a_counter(
    conn: sqlite3.Connection,
) -> None:
    # There is no `group set`: to change a group's data rate or frequency the installer removes it
    # and adds it again with the McAddr and keys already programmed into every lamp. Its
    # McFCntDown must go on from where it was: restarting at 0 sends new payloads under a
    # keystream already used (same McAppSKey, same McAddr, same FCnt), and every lamp, which keeps
    # the last McFCntDown it accepted, refuses the group's frames until the counter passes it.
    groups.add_group(conn, "district-1", mc_addr=MC_ADDR, nwk_s_key=NWK, app_s_key=APP)
    mc = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    mc.merge(groups.load_groups(conn, str))
    for level in (b"\x01", b"\x02", b"\x03"):
        mc.enqueue("district-1", 60, level)
        mc.ready()
    taken = mc.take()
    assert taken is not None
    with db.transaction(conn):
        mc.write(conn, taken)
    mc.committed(taken)
    assert [device_reads(r.phy_payload, NWK, APP)[0] for r in mc.ready()] == [0, 1, 2]

    groups.remove_group(conn, "district-1")
    groups.add_group(conn, "district-1", mc_addr=MC_ADDR, nwk_s_key=NWK, app_s_key=APP, dr=3)
    restarted = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    restarted.merge(groups.load_groups(conn, str))
    assert restarted.fcnt_down("district-1") == 3


def test_queued_commands_of_a_group_created_again_with_other_keys_are_counted_as_dropped() -> None:
    # Removed and created again under the same name with other keys, seen in one registry refresh:
    # the old group's queue went with it, but unlike a plain removal nothing counted or logged it.
    mc = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    mc.merge([_group(APP)])
    mc.enqueue("district-1", 60, b"\x01")
    mc.merge([McGroup(name="district-1", mc_addr=MC_ADDR, nwk_s_key=NEW_APP, app_s_key=APP)])
    assert mc.queued("district-1") == 0
    assert mc.counters["dropped_group_removed"] == 1


def test_a_frame_committed_after_its_group_was_removed_still_counts_for_the_same_keys(
    conn: sqlite3.Connection,
) -> None:
    groups.add_group(conn, "district-1", mc_addr=MC_ADDR, nwk_s_key=NWK, app_s_key=APP)
    mc = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    mc.merge(groups.load_groups(conn, str))
    mc.enqueue("district-1", 60, b"\x01")
    mc.ready()  # frame 0 built, its counter not committed yet
    groups.remove_group(conn, "district-1")  # the CLI, meanwhile: retired at 0
    taken = mc.take()
    assert taken is not None
    with db.transaction(conn):
        mc.write(conn, taken)
    mc.committed(taken)
    assert [device_reads(r.phy_payload, NWK, APP)[0] for r in mc.ready()] == [0]  # it goes on the air
    groups.add_group(conn, "district-1", mc_addr=MC_ADDR, nwk_s_key=NWK, app_s_key=APP)
    assert groups.get_group(conn, "district-1").fcnt_down == 1
