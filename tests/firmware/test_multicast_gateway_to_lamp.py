"""Acceptance: a district dimming step from the gateway's own multicast code to a real-MicroPython lamp.

The gateway side is the agent's code on a real SQLite registry: the lamps and the groups are
created with the CLI (``edgegw device add --class C``, ``edgegw group add --json``,
``edgegw group add-member``) under a gateway key file, so the group keys are encrypted at rest;
the agent's reading of them (``gateway.provisioning.groups.load_groups`` with the key store) feeds
``gateway.lorawan.multicast.MulticastScheduler``; the lighting rules' engine (a ``group:``
lighting group, preset ``abaissement-22h-05h``) decides the steps, which are encoded with the
members' profile and queued as the agent does (``UplinkPipeline.queue_group_command``); a frame
is sent only once its McFCntDown has been written to the registry (``take``/``write``/``committed``
in one transaction, as the group commit does).

The lamp is ``firmware/main.py``'s: its ``config.json`` is the one ``edgegw provision node`` builds
(``gateway.provisioning.node.node_config``) with the ``multicast`` key holding the group as
``edgegw group add`` printed it, read by ``main.load_config`` on MicroPython (the WebAssembly port,
``scenario_multicast_gateway.py``). Each class C listen asks this test what is on the air: the
frames the scheduler released, a neighbouring district's first (the lamp must skip it).
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway import config, db
from gateway.cli.main import main
from gateway.config import LorawanSection
from gateway.lorawan.join import JoinServer
from gateway.lorawan.multicast import MulticastScheduler
from gateway.messages import DevEui, TxRequest, UplinkData
from gateway.provisioning import groups, keystore, registry
from gateway.provisioning.node import multicast_config, node_config
from gateway.rules import GroupDownlinkRequest, RuleEngine
from tests.cli.helpers import abp_argv, clear_edgegw_env
from tests.firmware.gateway_side import GatewaySide, device_profile, run_scenario
from tests.rules.helpers import ruleset

DEADLINE_S = 30.0
MAX_LINES = 100
PROFILE_ID = "edgegw/lamp-controller"
PROFILE = device_profile(PROFILE_ID)
LAMP = "70b3d57ed00c0201"  # the MicroPython lamp, in district-north
EAST_LAMP = "70b3d57ed00c0202"  # a lamp of the neighbouring district
NWK, APP = bytes(range(0x40, 0x50)).hex(), bytes(range(0x50, 0x60)).hex()
PARIS = ZoneInfo("Europe/Paris")
RULES = """
    location: {lat: 43.2965, lon: 5.3698, timezone: Europe/Paris}
    lighting:
      - {id: east, group: district-east, command: set_dim_level, preset: abaissement-22h-05h}
      - {id: north, group: district-north, command: set_dim_level, preset: abaissement-22h-05h}
    """


def local(h: int, mi: int = 0) -> float:
    return datetime(2024, 1, 15, h, mi, tzinfo=PARIS).timestamp()


# When the gateway's rules tick before each class C listen the lamp opens: the evening level, a
# half hour without a step (nothing on the air), the 22:00 dimming step.
TICKS_S = (local(21), local(21, 30), local(22))


def duty(percent: int) -> int:
    return percent * 65535 // 100


@dataclass
class Gateway(GatewaySide):
    """The agent's multicast path: rules -> profile encoder -> scheduler -> registry commit -> air."""

    conn: sqlite3.Connection = field(kw_only=True)
    scheduler: MulticastScheduler = field(kw_only=True)
    engine: RuleEngine = field(kw_only=True)
    ticks: list[float] = field(kw_only=True)
    air: list[TxRequest] = field(default_factory=list)
    sent: list[tuple[float, str, TxRequest]] = field(default_factory=list)
    before_commit: list[TxRequest] = field(default_factory=list)
    listens: list[dict[str, Any]] = field(default_factory=list)

    def uplink(self, up: UplinkData) -> bytes | None:
        raise AssertionError("the lamp must not answer a multicast frame")

    def _step(self, now_s: float) -> None:
        for out in self.engine.tick(now_s):
            assert isinstance(out, GroupDownlinkRequest), out
            group = self.scheduler.group(out.group)
            assert group is not None and group.profile == PROFILE_ID
            encoded = PROFILE.encode(out.command, out.params)
            self.scheduler.enqueue(out.group, encoded.fport, encoded.payload)
        # The frames are built now but held until their counters are durable.
        self.before_commit += self.scheduler.ready()
        taken = self.scheduler.take()
        if taken is not None:
            with db.transaction(self.conn):
                self.scheduler.write(self.conn, taken)
            self.scheduler.committed(taken)
        for request in self.scheduler.ready():
            self.sent.append((now_s, self.scheduler.group_of(request) or "?", request))
            self.air.append(request)

    def listen(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.listens.append(msg)
        if not self.air and self.ticks:
            self._step(self.ticks.pop(0))
        if not self.air:
            return {"phy": None}
        return {"phy": self.air.pop(0).phy_payload.hex(), "after_ms": 1000}


@dataclass
class Run:
    gateway: Gateway
    printed: dict[str, dict[str, Any]]
    lamp_config: dict[str, Any]
    booted: dict[str, Any]
    listens: list[dict[str, Any]]
    fcnt_down: dict[str, int]
    rx2: tuple[int, int]
    stored_keys: list[tuple[str, str]]
    provisioned: list[dict[str, Any]]
    """The ``multicast`` key `edgegw provision node` builds for the lamp from the registry."""


def _cli(cfg: Path, *argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--config", str(cfg), *argv])
    assert code == 0, err.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp_path = tmp_path_factory.mktemp("multicast-gateway")
    with pytest.MonkeyPatch.context() as mp:
        clear_edgegw_env(mp)
        cfg_path, data = tmp_path / "edgegw.yaml", tmp_path / "data"
        cfg_path.write_text(
            "gateway: {id: gw-test-1}\nmqtt: {host: 127.0.0.1, port: 1883, tls: false}\n"
            f"data_dir: {data}\n"
        )
        keystore.create_key(data)  # the group keys are encrypted at rest
        yield _run(cfg_path, data)


def _run(cfg_path: Path, data: Path) -> Run:
    for eui, addr in ((LAMP, "26011d01"), (EAST_LAMP, "26011d02")):
        _cli(cfg_path, "device", "add", *abp_argv(eui, addr, PROFILE_ID, NWK, APP), "--class", "C")
    printed = {
        name: json.loads(_cli(cfg_path, "group", "add", name, "--json"))
        for name in ("district-east", "district-north")
    }
    _cli(cfg_path, "group", "add-member", "district-north", LAMP)
    _cli(cfg_path, "group", "add-member", "district-east", EAST_LAMP)

    cfg = config.load(str(cfg_path))
    store = keystore.open_key(data)
    conn = db.connect(db.db_path(cfg.data_dir))
    try:
        lamp = DevEui.from_hex(LAMP)
        lamp_config = node_config(registry.get_device(conn, lamp), registry.device_keys(conn, lamp, store))
        north = printed["district-north"]
        # The group as `edgegw group add` printed it for the installer.
        lamp_config["multicast"] = [{k: north[k] for k in ("mc_addr", "mc_nwk_s_key", "mc_app_s_key")}]
        # What `edgegw provision node` writes from the registry for the same lamp.
        member_of = [
            (g, groups.group_keys(conn, g.name, store)) for g in groups.list_groups(conn) if LAMP in g.members
        ]
        provisioned = multicast_config(
            member_of, rx2_dr=cfg.lorawan.rx2_dr, rx2_freq_hz=cfg.lorawan.rx2_freq_hz
        )
        stored_keys = conn.execute("SELECT nwk_s_key, app_s_key FROM multicast_groups").fetchall()
        scheduler = MulticastScheduler(
            rx2_dr=cfg.lorawan.rx2_dr,
            rx2_freq_hz=cfg.lorawan.rx2_freq_hz,
            power_dbm=cfg.lorawan.downlink_power_dbm,
        )
        scheduler.merge(groups.load_groups(conn, store.decrypt_hex))
        gateway = Gateway(
            JoinServer(LorawanSection(), []),
            conn=conn,
            scheduler=scheduler,
            engine=RuleEngine(ruleset(RULES)),
            ticks=list(TICKS_S),
        )
        args = {"config": lamp_config, "listens": len(TICKS_S)}
        events, seconds = run_scenario(
            "scenario_multicast_gateway.py", args, gateway, deadline_s=DEADLINE_S, max_lines=MAX_LINES
        )
        print(f"\nMicroPython lamp under the gateway's multicast: {seconds:.2f} s")
        fcnt_down = {g.name: g.fcnt_down for g in groups.list_groups(conn)}
    finally:
        conn.close()
    (booted,) = [e for e in events if e["event"] == "booted"]
    listens = [e for e in events if e["event"] == "listen"]
    rx2 = (cfg.lorawan.rx2_freq_hz, cfg.lorawan.rx2_dr)
    return Run(gateway, printed, lamp_config, booted, listens, fcnt_down, rx2, stored_keys, provisioned)


def test_provisioning_writes_the_group_as_it_was_printed_on_the_channel_the_gateway_sends(run: Run) -> None:
    (entry,) = run.provisioned
    assert [{k: v for k, v in entry.items() if k not in ("freq_hz", "dr")}] == run.lamp_config["multicast"]
    assert (entry["freq_hz"], entry["dr"]) == run.rx2


def test_the_group_keys_are_encrypted_at_rest(run: Run) -> None:
    values = [value for row in run.stored_keys for value in row]
    assert len(values) == 4 and all(keystore.KeyStore.is_encrypted(v) for v in values)
    north = run.printed["district-north"]
    assert north["mc_nwk_s_key"] not in json.dumps(values)


def test_one_frame_per_group_per_step_sent_only_once_its_counter_is_durable(run: Run) -> None:
    gw = run.gateway
    assert gw.before_commit == []
    # 21:00: the evening level to both districts; 21:30: nothing; 22:00: the dimming step.
    assert [(at, name) for at, name, _ in gw.sent] == [
        (local(21), "district-east"),
        (local(21), "district-north"),
        (local(22), "district-east"),
        (local(22), "district-north"),
    ]
    # Two frames per group, their counters 0 and 1 written to the registry before they left.
    assert run.fcnt_down == {"district-east": 2, "district-north": 2}
    freq_hz, dr = run.rx2
    for _, _, request in gw.sent:
        # Class C: at once, on the gateway's RX2 channel (the group has no channel of its own).
        assert request.send_at_tmst_us is None and request.dev_eui is None
        assert (request.freq_hz, request.sf, request.bw_hz) == (freq_hz, 12 - dr, 125_000)


def test_the_lamp_listens_where_the_gateway_sends(run: Run) -> None:
    freq_hz, dr = run.rx2
    assert run.booted["channel"] == [freq_hz, dr] and run.booted["groups"] == 1
    assert {(m["freq_hz"], m["sf"], m["bw_hz"]) for m in run.gateway.listens} == {(freq_hz, 12 - dr, 125_000)}


def test_the_lamp_obeys_its_districts_steps_and_skips_the_neighbours(run: Run) -> None:
    north = run.printed["district-north"]["mc_addr"].lower()
    evening, quiet, dimmed = run.listens
    assert evening["down"] == {
        "fport": 20,
        "payload": PROFILE.encode("set_dim_level", {"level_pct": 100}).payload.hex(),
        "fcnt": 0,
        "mc_addr": north,
    }
    assert evening["obeyed"] and (evening["relay"], evening["duty"]) == (1, duty(100))
    assert quiet["down"] is None and (quiet["relay"], quiet["duty"]) == (1, duty(100))
    assert dimmed["down"]["fcnt"] == 1 and dimmed["down"]["mc_addr"] == north
    assert dimmed["obeyed"] and (dimmed["relay"], dimmed["duty"]) == (1, duty(50))
    assert dimmed["counters"][north]["last_fcnt"] == 1
    # Each step put the east frame on the air before north's: the lamp heard it and listened on.
    assert len(run.gateway.listens) == 5 and run.gateway.air == []
