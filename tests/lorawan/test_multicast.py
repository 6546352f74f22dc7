"""Multicast frames (gateway.lorawan.multicast), checked the way a member device reads them.

The MIC and the FRMPayload are recomputed here from LoRaWAN 1.0.4 §4.3.3 and §4.4 with AES
primitives of ``cryptography`` (not the gateway's own crypto module): B0 with Dir = 1 and the
group's McAddr and McFCntDown, AES-CMAC under McNwkSKey; the keystream blocks A_i under McAppSKey.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from gateway import db
from gateway.errors import DownlinkQueueFull
from gateway.lorawan.multicast import MAX_QUEUE, McGroup, MulticastScheduler
from gateway.messages import AesKey, DevAddr, DevEui, TxRequest
from gateway.provisioning import groups, registry

NWK = AesKey(bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"))
APP = AesKey(bytes.fromhex("000102030405060708090a0b0c0d0e0f"))
MC_ADDR = DevAddr.from_hex("01ab23cd")


def group(**changes: object) -> McGroup:
    base: dict[str, object] = {"name": "district-1", "mc_addr": MC_ADDR, "nwk_s_key": NWK, "app_s_key": APP}
    base.update(changes)
    return McGroup(**base)  # type: ignore[arg-type]


def scheduler(*groups_: McGroup) -> MulticastScheduler:
    mc = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    mc.merge(groups_ or (group(),))
    return mc


def commit(mc: MulticastScheduler) -> None:
    """What the group commit does when it succeeds."""
    taken = mc.take()
    assert taken is not None
    mc.committed(taken)


def device_reads(phy: bytes, nwk: AesKey, app: AesKey) -> tuple[int, int, bytes]:
    """A member's check of a multicast frame: (FCnt, FPort, plaintext); AssertionError on a bad MIC."""
    mhdr, addr_le, fctrl, fcnt16 = phy[0], phy[1:5], phy[5], struct.unpack("<H", phy[6:8])[0]
    assert mhdr == 0x60, "Unconfirmed Data Down, LoRaWAN R1"
    assert fctrl == 0x00, "ADR, ACK, FPending 0 and no FOpts (§18)"
    fport, enc, mic = phy[8], phy[9:-4], phy[-4:]
    fcnt32 = fcnt16  # the member's McFCntDown is 0 here: the high bits are 0
    b0 = bytes([0x49, 0, 0, 0, 0, 1]) + addr_le + struct.pack("<I", fcnt32) + bytes([0, len(phy) - 4])
    cmac = CMAC(algorithms.AES(nwk.value))
    cmac.update(b0 + phy[:-4])
    assert cmac.finalize()[:4] == mic, "MIC under McNwkSKey, Dir = 1"
    stream = b""
    encryptor = Cipher(algorithms.AES(app.value), modes.ECB()).encryptor()
    for i in range(1, (len(enc) + 15) // 16 + 1):
        a_i = bytes([0x01, 0, 0, 0, 0, 1]) + addr_le + struct.pack("<I", fcnt32) + bytes([0, i])
        stream += encryptor.update(a_i)
    return fcnt32, fport, bytes(x ^ y for x, y in zip(enc, stream, strict=False))


def test_a_multicast_frame_is_what_a_member_decrypts_with_the_group_keys() -> None:
    mc = scheduler()
    mc.enqueue("district-1", 60, bytes.fromhex("0132"))
    assert mc.ready() == []  # built, but its McFCntDown is not durable yet
    commit(mc)
    (request,) = mc.ready()
    assert isinstance(request, TxRequest)
    assert request.phy_payload[1:5] == MC_ADDR.value[::-1]
    assert device_reads(request.phy_payload, NWK, APP) == (0, 60, bytes.fromhex("0132"))
    # Class C style: at once, on the RX2 parameters by default, inverted IQ, no device named.
    assert (request.freq_hz, request.sf, request.bw_hz) == (869_525_000, 12, 125_000)
    assert request.send_at_tmst_us is None and request.invert_polarity and request.dev_eui is None
    assert mc.group_of(request) == "district-1"
    with pytest.raises(AssertionError):
        device_reads(request.phy_payload, APP, NWK)  # another group's keys do not verify


def test_the_group_data_rate_and_frequency_are_used_and_each_frame_has_the_next_counter() -> None:
    mc = scheduler(group(dr=5, freq_hz=869_462_500))
    mc.enqueue("district-1", 60, b"\x01")
    mc.enqueue("district-1", 60, b"\x02")
    mc.ready()
    mc.ready()
    commit(mc)
    first, second = mc.ready()
    assert (first.freq_hz, first.sf) == (869_462_500, 7)
    assert device_reads(first.phy_payload, NWK, APP)[0] == 0
    assert device_reads(second.phy_payload, NWK, APP)[0] == 1
    assert mc.fcnt_down("district-1") == 2


def test_a_frame_whose_counter_could_not_be_committed_waits_for_the_next_group() -> None:
    mc = scheduler()
    mc.enqueue("district-1", 60, b"\x01")
    mc.ready()
    taken = mc.take()
    assert taken is not None
    mc.give_back(taken)  # a full disk
    assert mc.ready() == []
    again = mc.take()
    assert again is not None and again[0][0].fcnt_down == 1
    mc.committed(again)
    assert len(mc.ready()) == 1


def test_refusals_unknown_group_bad_fport_too_large_full_queue() -> None:
    mc = scheduler()
    with pytest.raises(ValueError, match="no multicast group"):
        mc.enqueue("nope", 60, b"\x01")
    with pytest.raises(ValueError, match="FPort"):
        mc.enqueue("district-1", 0, b"\x01")
    with pytest.raises(ValueError, match="at most 51 bytes at DR0"):
        mc.enqueue("district-1", 60, bytes(52))
    for _ in range(MAX_QUEUE):
        mc.enqueue("district-1", 60, b"\x01")
    with pytest.raises(DownlinkQueueFull):
        mc.enqueue("district-1", 60, b"\x01")


def test_merge_keeps_the_higher_counter_and_a_recreated_group_starts_from_the_registry() -> None:
    mc = scheduler(group(fcnt_down=5))
    mc.enqueue("district-1", 60, b"\x01")
    mc.ready()  # uses 5, next 6 (not committed yet: the registry still says 5)
    mc.merge([group(fcnt_down=5)])
    assert mc.fcnt_down("district-1") == 6
    mc.merge([group(fcnt_down=0, nwk_s_key=APP)])  # removed and created again with other keys
    assert mc.fcnt_down("district-1") == 0


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = db.connect(db.db_path(tmp_path))
    yield connection
    connection.close()


def test_the_counter_is_durable_across_a_restart(conn: sqlite3.Connection) -> None:
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

    restarted = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    restarted.merge(groups.load_groups(conn, str))
    assert restarted.fcnt_down("district-1") == 3  # never 0 again under the same keys
    restarted.enqueue("district-1", 60, b"\x04")
    restarted.ready()
    commit(restarted)
    (request,) = restarted.ready()
    assert request.phy_payload[6:8] == (3).to_bytes(2, "little")


def test_a_counter_of_a_removed_group_does_not_land_on_its_successor(conn: sqlite3.Connection) -> None:
    groups.add_group(conn, "district-1", mc_addr=MC_ADDR, nwk_s_key=NWK, app_s_key=APP)
    mc = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    mc.merge(groups.load_groups(conn, str))
    mc.enqueue("district-1", 60, b"\x01")
    mc.ready()
    groups.remove_group(conn, "district-1")
    groups.add_group(conn, "district-1", mc_addr=MC_ADDR, nwk_s_key=APP, app_s_key=NWK)
    taken = mc.take()
    assert taken is not None
    with db.transaction(conn):
        mc.write(conn, taken)
    assert groups.get_group(conn, "district-1").fcnt_down == 0


def test_load_groups_gives_members_and_profile(conn: sqlite3.Connection) -> None:
    eui = DevEui.from_hex("0004a30b00f00001")
    keys = registry.AbpKeys(DevAddr.from_hex("26011001"), NWK, APP)
    registry.add_device(conn, dev_eui=eui, profile="nasys/ul20xx", keys=keys, lorawan_class="C")
    groups.add_group(conn, "district-1")
    groups.add_member(conn, "district-1", eui)
    (loaded,) = groups.load_groups(conn, str)
    assert loaded.members == (str(eui),) and loaded.profile == "nasys/ul20xx"
