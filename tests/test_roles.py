"""Roles per device (issue 21): home or witness, from the registry column and the coordinator's
assignments; assignments durable through a real group commit on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from gateway import db
from gateway.clock import SystemClock
from gateway.codec import load_profiles
from gateway.config import LorawanSection
from gateway.db.commit import Database, GroupCommitter
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.dedup import HeardFrame
from gateway.lorawan.downlink import DownlinkScheduler
from gateway.lorawan.multicast import McGroup, MulticastScheduler
from gateway.lorawan.sessions import Session, SessionTable
from gateway.messages import AesKey, Alert, DevAddr, DevEui, MType, RadioFrame, Record, RxInfo
from gateway.pipeline import UplinkPipeline
from gateway.provisioning import csv_import, registry
from gateway.roles import Assignment, Roles, load_assignments, load_group_homes
from gateway.rules.actions import DownlinkRequest
from tests.e2e.harness import cli

DEV = "70b3d57ed0000001"
OTHER = "70b3d57ed0000002"


def test_a_gateway_told_nothing_is_home_of_every_device() -> None:
    roles = Roles("gw-a")
    assert roles.is_home(DEV) and roles.home_of(DEV) is None and roles.group_is_home("lamps")
    roles.set_registry_homes({DEV: None, OTHER: ""})
    assert roles.is_home(DEV) and roles.is_home(OTHER) and roles.witnessed() == []


def test_the_registry_column_names_the_home() -> None:
    roles = Roles("gw-b")
    heard: list[tuple[str, bool]] = []
    roles.listeners.append(lambda dev, home: heard.append((dev, home)))
    roles.set_registry_homes({DEV: "gw-a", OTHER: "gw-b"})
    assert not roles.is_home(DEV) and roles.is_home(OTHER) and roles.is_home(DEV.upper()) is False
    assert roles.home_of(DEV) == "gw-a" and roles.witnessed() == [DEV]
    assert heard == [(DEV, False)]
    roles.set_registry_homes({DEV: None})  # the column cleared: home again
    assert roles.is_home(DEV) and heard == [(DEV, False), (DEV, True)]
    roles.set_group_homes({"lamps": "gw-a", "totems": None})
    assert not roles.group_is_home("lamps") and roles.group_is_home("totems")


def test_the_coordinator_s_assignment_wins_and_only_a_newer_epoch_moves_it() -> None:
    roles = Roles("gw-b")
    heard: list[tuple[str, bool]] = []
    roles.listeners.append(lambda dev, home: heard.append((dev, home)))
    roles.set_registry_homes({DEV: "gw-a"})
    assert roles.assign(DEV, "gw-b", epoch=3, fcnt_floor=512)
    assert roles.is_home(DEV) and heard == [(DEV, False), (DEV, True)]
    assert not roles.assign(DEV, "gw-a", epoch=3, fcnt_floor=0)  # the same epoch again: ignored
    assert not roles.assign(DEV, "gw-a", epoch=2, fcnt_floor=0)  # an older one, out of order
    assert roles.is_home(DEV) and roles.assignment(DEV).fcnt_floor == 512  # type: ignore[union-attr]
    roles.set_registry_homes({DEV: "gw-c"})  # the registry changes; the assignment still decides
    assert roles.is_home(DEV) and heard == [(DEV, False), (DEV, True)]
    assert roles.assign(DEV, "gw-c", epoch=4, fcnt_floor=900)
    assert not roles.is_home(DEV) and heard == [(DEV, False), (DEV, True), (DEV, False)]


def test_assignments_are_durable_with_the_group_commit_and_restored(tmp_path: Path) -> None:
    path = db.db_path(tmp_path)

    async def assign_and_commit() -> None:
        database = Database(path)
        roles = Roles("gw-b")
        committer = GroupCommitter(database, [roles], interval_s=0.01, max_pending=10)
        runner = asyncio.create_task(committer.run())
        roles.assign(DEV, "gw-b", 5, 1024)
        roles.assign(OTHER, "gw-a", 1, 0)
        committer.notify(0, urgent=True)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(await database.run(load_assignments)) == 2:
                break
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        database.close()

    asyncio.run(assign_and_commit())
    conn = db.connect(path)
    restored = Roles("gw-b")
    restored.restore(load_assignments(conn))
    assert restored.is_home(DEV) and not restored.is_home(OTHER)
    assert restored.assignment(DEV) is not None and restored.assignment(DEV).epoch == 5  # type: ignore[union-attr]
    # A row with a newer epoch written meanwhile (another process) is not overwritten by an older one.
    conn.execute("UPDATE device_homes SET epoch = 9, home = 'gw-c' WHERE dev_eui = ?", (DEV,))
    with db.transaction(conn):
        restored.write(conn, [Assignment(DEV, "gw-b", 6, 0)])
    assert conn.execute("SELECT home, epoch FROM device_homes WHERE dev_eui = ?", (DEV,)).fetchone() == (
        "gw-c", 9,
    )  # fmt: skip


def test_the_registry_keeps_the_home_column(tmp_path: Path) -> None:
    conn = db.connect(db.db_path(tmp_path))
    registry.add_device(
        conn, dev_eui=DevEui.from_hex(DEV), profile="milesight/em310-udl", home_gateway="gw-a",
        keys=registry.AbpKeys(DevAddr.from_hex("26011001"), AesKey(bytes(16)), AesKey(bytes(16))),
    )  # fmt: skip
    assert registry.get_device(conn, DevEui.from_hex(DEV)).home_gateway == "gw-a"
    assert registry.get_device(conn, DevEui.from_hex(DEV)).as_json()["home"] == "gw-a"
    registry.update_installation(conn, DevEui.from_hex(DEV), home_gateway="")
    assert registry.get_device(conn, DevEui.from_hex(DEV)).home_gateway is None
    conn.execute(
        "INSERT INTO multicast_groups (name, mc_addr, nwk_s_key, app_s_key, tag, created_at, home_gateway)"
        " VALUES ('lamps', '01020304', '00', '00', 't', 'now', 'gw-a')"
    )
    assert load_group_homes(conn) == {"lamps": "gw-a"}


# --- a witness through the real stages: nothing transmitted, nothing answered -------------------

EUI = DevEui.from_hex(DEV)
KEY = bytes(range(16))


class Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def put(self, record: Record) -> None:
        self.records.append(record)


def witness_pipeline(confirmed: bool) -> tuple[UplinkPipeline, DownlinkScheduler, list[object], bytes]:
    """A pipeline whose roles make it a witness of DEV, a confirmed uplink of DEV, what it sends."""
    keys = SessionKeys(KEY, KEY)
    sessions = SessionTable(
        [Session(EUI, DevAddr.from_hex("26011001"), "milesight/em310-udl", "tag", keys, 4)]
    )
    downlinks = DownlinkScheduler(LorawanSection(), sessions)
    sent: list[object] = []
    pipeline = UplinkPipeline(
        sessions, load_profiles(None), Sink(), SystemClock(), downlinks=downlinks,
        send=lambda first, second: sent.append((first, second)),
    )  # fmt: skip
    roles = Roles("gw-b")
    roles.set_registry_homes({DEV: "gw-a"})
    pipeline.is_home = roles.is_home
    downlinks.is_home = lambda dev_eui: roles.is_home(str(dev_eui))
    frame = phy.build_data_frame(
        keys, mtype=MType.CONFIRMED_DATA_UP if confirmed else MType.UNCONFIRMED_DATA_UP,
        dev_addr=bytes.fromhex("26011001"), fcnt32=5, fport=85, payload=bytes.fromhex("017564"),
    )  # fmt: skip
    return pipeline, downlinks, sent, frame


def test_a_witness_forwards_a_confirmed_uplink_and_sends_no_ack() -> None:
    pipeline, _downlinks, sent, raw = witness_pipeline(confirmed=True)
    rx = RxInfo(868_100_000, -90.0, 7.0, 7, 125_000, "4/5", True, "test", "aa", 1_000_000)
    heard = HeardFrame(RadioFrame(raw, rx, 1_700_000_000.0, time.monotonic()), 1, 1)
    record = asyncio.run(pipeline.handle(heard))
    assert record is not None and record.record_id == f"{DEV}-tag-5"
    assert sent == [] and pipeline.counters["witness.uplinks"] == 1
    # The same pipeline as home (the assignment moved it here) answers with the ACK.
    pipeline.is_home = lambda _dev: True
    raw_next = phy.build_data_frame(
        SessionKeys(KEY, KEY), mtype=MType.CONFIRMED_DATA_UP, dev_addr=bytes.fromhex("26011001"), fcnt32=6,
        fport=85, payload=b"\x01",
    )  # fmt: skip
    asyncio.run(
        pipeline.handle(HeardFrame(RadioFrame(raw_next, rx, 1_700_000_010.0, time.monotonic()), 1, 1))
    )
    assert len(sent) == 1


def test_a_witness_refuses_commands_and_drops_rule_outputs_of_the_device() -> None:
    pipeline, downlinks, _sent, _raw = witness_pipeline(confirmed=False)
    outcomes: list[tuple[str, str]] = []
    downlinks.on_outcome = lambda _ref, _dev, state, detail: outcomes.append((state, detail))
    downlinks.enqueue(EUI, 10, b"\x01")
    assert outcomes == [("refused", "not_home")] and downlinks.queued(EUI) == 0
    downlinks.set_class_c(EUI)
    assert downlinks.class_c_ready() == []
    alert = Alert("a1", "raised", "too-full", DEV, "warning", 0.0)
    pipeline.route([alert, DownlinkRequest(DEV, "reboot", {}, 0.0, "rule")])
    assert pipeline.counters["witness.rule_outputs"] == 2 and pipeline.counters["rules.alert"] == 0


def test_a_group_s_fail_safe_alert_is_published_by_the_group_s_home_only() -> None:
    """A lighting fail-safe of a ``group:`` entry is about the group (``group:NAME``), not a device: the
    group's home publishes it, a gateway that is the home of every device but not of the group drops
    it (else every gateway of the district would raise it)."""
    pipeline, _downlinks, _sent, _raw = witness_pipeline(confirmed=False)
    roles = Roles("gw-b")
    roles.set_group_homes({"lamps-north": "gw-a", "lamps-south": None})
    pipeline.is_home, pipeline.group_is_home = roles.is_home, roles.group_is_home
    north = Alert("group:lamps-north-lighting_clock-x-1", "raised", "lighting_clock", "group:lamps-north",
                  "warning", 0.0)  # fmt: skip
    south = Alert("group:lamps-south-lighting_clock-x-1", "raised", "lighting_clock", "group:lamps-south",
                  "warning", 0.0)  # fmt: skip
    pipeline.route([north, south])
    assert pipeline.counters["witness.rule_outputs"] == 1 and pipeline.counters["rules.alert"] == 1


def test_a_multicast_group_is_sent_by_its_home_only() -> None:
    roles = Roles("gw-b")
    roles.set_group_homes({"lamps": "gw-a"})
    scheduler = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=14.0)
    scheduler.is_home = roles.group_is_home
    scheduler.merge([McGroup("lamps", DevAddr.from_hex("01020304"), AesKey(KEY), AesKey(KEY))])
    with pytest.raises(ValueError, match="home"):
        scheduler.enqueue("lamps", 10, b"\x01")
    roles.set_group_homes({})  # no home named: this gateway sends it
    scheduler.enqueue("lamps", 10, b"\x01")
    assert scheduler.queued("lamps") == 1


def test_the_csv_column_home_gateway_imports_updates_and_exports(tmp_path: Path) -> None:
    conn = db.connect(db.db_path(tmp_path))
    head = "dev_eui,profile,activation,join_eui,app_key,home_gateway\n"
    line = f"{DEV},milesight/em310-udl,otaa,70b3d57ed0000000,{KEY.hex()},"

    def load(text: str) -> csv_import.ImportResult:
        return csv_import.import_devices(conn, csv_import.parse_csv(text, ["milesight/em310-udl"]))

    assert load(head + line + "gw-a\n").added == [DEV]
    assert registry.get_device(conn, EUI).home_gateway == "gw-a"
    rows = csv_import.export_rows(conn, with_keys=False)
    assert rows[0]["home_gateway"] == "gw-a" and "home_gateway" in csv_import.to_csv(rows, with_keys=False)
    assert load(head + line + "\n").unchanged == [DEV]  # empty: keep
    assert load(head + line + "none\n").updated == [DEV]  # none: no home named any more
    assert registry.get_device(conn, EUI).home_gateway is None
    assert "home_gateway" not in csv_import.to_csv(
        csv_import.export_rows(conn, with_keys=False), with_keys=False
    )
    with pytest.raises(csv_import.ImportFailed) as refused:
        load(head + line + "gw/a\n")
    assert refused.value.errors[0].column == "home_gateway"


def test_device_add_and_set_take_home(tmp_path: Path) -> None:
    config_file = tmp_path / "edgegw.yaml"
    config_file.write_text(f"gateway: {{id: gw-b}}\ndata_dir: {tmp_path / 'data'}\n")
    added = cli(
        config_file, "device", "add", "--dev-eui", DEV, "--profile", "milesight/em310-udl", "--otaa",
        "--join-eui", "70b3d57ed0000000", "--appkey", KEY.hex(), "--home", "gw-a", "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["home"] == "gw-a"
    cleared = cli(config_file, "device", "set", DEV, "--home", "", "--json")
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout)["home"] is None
    refused = cli(config_file, "device", "set", DEV, "--home", "gw a")
    assert refused.returncode != 0 and "--home" in refused.stderr
