"""LoRaWAN 1.0.4 DevNonce counters (§6.2.5): a 1.0.4 device counts its DevNonces up from 0 and the join
server refuses one not greater than the last it accepted; 1.0.2/1.0.3 devices keep random nonces, where
only reuse is refused. Which rule applies: the registry's ``mac_version`` of the device, else its
profile's ``lorawan.mac_version``.

Real SQLite files, the registry's own writes, join-requests built with ``phy.build_join_request``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from gateway import db
from gateway.codec import load_profiles
from gateway.config import LorawanSection
from gateway.errors import FrameError, RegistryError
from gateway.lorawan import phy
from gateway.lorawan.join import JoinServer, load_otaa_devices, store_join
from gateway.lorawan.sessions import SessionTable, load_sessions
from gateway.messages import AesKey, DevEui, JoinEui, RadioFrame, RxInfo
from gateway.provisioning import csv_import, registry
from tests.cli.helpers import clear_edgegw_env, run_with_config

SECTION = LorawanSection()
JOIN_EUI = JoinEui.from_hex("70b3d57ed0000000")
LAMP = DevEui.from_hex("70b3d57ed0000104")  # edgegw/lamp-controller declares mac_version "1.0.4"
BIN = DevEui.from_hex("70b3d57ed0000103")  # milesight/em310-udl declares "1.0.3"
KEYS = {LAMP: bytes(range(16)), BIN: bytes(range(16, 32))}
RX = RxInfo(868_100_000, -95.0, 5.0, 7, 125_000, "4/5", True, "test", "aa555a0000000001", 1_000_000)
PROFILES = load_profiles("")


def join_request(dev_eui: DevEui, dev_nonce: int, at_s: float = 1_765_000_000.0) -> RadioFrame:
    raw = phy.build_join_request(
        KEYS[dev_eui], join_eui=JOIN_EUI.value, dev_eui=dev_eui.value, dev_nonce=dev_nonce.to_bytes(2, "big")
    )
    return RadioFrame(raw, RX, at_s, time.monotonic())


def profile_mac_version(profile: str) -> str | None:
    return PROFILES.get(profile).lorawan.mac_version if profile in PROFILES else None


def server(conn: sqlite3.Connection) -> JoinServer:
    """A join server as the agent builds it after a (re)start: devices and nonces from the file."""
    return JoinServer(SECTION, load_otaa_devices(conn), profile_mac_version=profile_mac_version)


def join(conn: sqlite3.Connection, js: JoinServer, dev_eui: DevEui, dev_nonce: int) -> None:
    """One join-request accepted and made durable (raises FrameError when refused)."""
    store_join(conn, js.handle(join_request(dev_eui, dev_nonce), SessionTable(load_sessions(conn))))


def refusal(conn: sqlite3.Connection, js: JoinServer, dev_eui: DevEui, dev_nonce: int) -> str | None:
    try:
        join(conn, js, dev_eui, dev_nonce)
    except FrameError as exc:
        return exc.reason
    return None


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = db.connect(tmp_path / "edgegw.sqlite")
    for dev_eui, profile in ((LAMP, "edgegw/lamp-controller"), (BIN, "milesight/em310-udl")):
        registry.add_device(
            c, dev_eui=dev_eui, profile=profile,
            keys=registry.OtaaKeys(join_eui=JOIN_EUI, app_key=AesKey(KEYS[dev_eui])),
        )  # fmt: skip
    return c


def test_a_104_device_replaying_a_lower_nonce_is_refused_even_if_never_seen(conn: sqlite3.Connection) -> None:
    js = server(conn)
    for nonce in (0, 1, 2, 5):  # counting up; a gap (join-requests the gateway did not hear) is fine
        assert refusal(conn, js, LAMP, nonce) is None
    # 3 and 4 were never heard: a 1.0.3 rule would accept them; 1.0.4 refuses any not above 5.
    assert refusal(conn, js, LAMP, 3) == "old_dev_nonce"
    assert refusal(conn, js, LAMP, 4) == "old_dev_nonce"
    assert refusal(conn, js, LAMP, 5) == "reused_dev_nonce"
    assert refusal(conn, js, LAMP, 6) is None


def test_a_103_device_with_random_nonces_is_accepted(conn: sqlite3.Connection) -> None:
    js = server(conn)
    for nonce in (0xB7E1, 0x0042, 0x9001, 0x0007):  # random: down as often as up
        assert refusal(conn, js, BIN, nonce) is None
    assert refusal(conn, js, BIN, 0x0042) == "reused_dev_nonce"  # reuse is still refused


def test_the_highest_nonce_survives_a_restart(conn: sqlite3.Connection) -> None:
    js = server(conn)
    for nonce in (10, 11, 40):
        assert refusal(conn, js, LAMP, nonce) is None
    restarted = server(conn)  # a new agent: nothing in memory, all from the database
    assert refusal(conn, restarted, LAMP, 39) == "old_dev_nonce"
    assert refusal(conn, restarted, LAMP, 12) == "old_dev_nonce"
    assert refusal(conn, restarted, LAMP, 41) is None


def test_only_an_authentic_join_request_moves_the_highest_nonce(conn: sqlite3.Connection) -> None:
    js = server(conn)
    assert refusal(conn, js, LAMP, 3) is None
    forged = phy.build_join_request(
        bytes(16 * [0xEE]), join_eui=JOIN_EUI.value, dev_eui=LAMP.value, dev_nonce=b"\xff\xff"
    )
    with pytest.raises(FrameError) as caught:
        js.handle(RadioFrame(forged, RX, 1_765_000_000.0, time.monotonic()), SessionTable())
    assert caught.value.reason == "bad_join_mic"
    assert refusal(conn, js, LAMP, 4) is None  # the forged 0xFFFF did not lock the device out


def test_the_registry_overrides_the_profiles_version(conn: sqlite3.Connection) -> None:
    registry.update_installation(conn, BIN, mac_version="1.0.4")  # firmware updated to 1.0.4
    registry.update_installation(conn, LAMP, mac_version="1.0.3")  # an old build of the lamp firmware
    assert registry.get_device(conn, BIN).mac_version == "1.0.4"
    js = server(conn)
    assert refusal(conn, js, BIN, 9) is None
    assert refusal(conn, js, BIN, 8) == "old_dev_nonce"
    assert refusal(conn, js, LAMP, 9) is None
    assert refusal(conn, js, LAMP, 8) is None  # random rule now
    registry.update_installation(conn, BIN, mac_version="")  # back to the profile's (1.0.3)
    assert registry.get_device(conn, BIN).mac_version is None
    assert refusal(conn, server(conn), BIN, 7) is None


def test_a_mac_version_not_served_is_refused(conn: sqlite3.Connection) -> None:
    with pytest.raises(RegistryError):
        registry.update_installation(conn, BIN, mac_version="1.1")
    assert registry.get_device(conn, BIN).mac_version is None


def test_the_csv_column_sets_keeps_and_resets_the_version(conn: sqlite3.Connection) -> None:
    ids = ("edgegw/lamp-controller", "milesight/em310-udl")
    head = "dev_eui,profile,activation,join_eui,mac_version\n"
    line = f"{BIN},milesight/em310-udl,otaa,{JOIN_EUI},"
    csv_import.import_devices(conn, csv_import.parse_csv(head + line + "1.0.4\n", ids))
    assert registry.get_device(conn, BIN).mac_version == "1.0.4"
    exported = csv_import.to_csv(csv_import.export_rows(conn, with_keys=False), with_keys=False)
    assert "mac_version" in exported.splitlines()[0] and f"{BIN},milesight/em310-udl" in exported
    csv_import.import_devices(conn, csv_import.parse_csv(head + line + "\n", ids))  # empty: kept
    assert registry.get_device(conn, BIN).mac_version == "1.0.4"
    csv_import.import_devices(conn, csv_import.parse_csv(head + line + "profile\n", ids))
    assert registry.get_device(conn, BIN).mac_version is None
    with pytest.raises(csv_import.ImportFailed) as caught:
        csv_import.parse_csv(head + line + "1.0.5\n", ids)
    assert caught.value.errors[0].column == "mac_version"
    # No device with its own version: the export has no column (as before it existed).
    exported = csv_import.to_csv(csv_import.export_rows(conn, with_keys=False), with_keys=False)
    assert "mac_version" not in exported


def test_device_add_and_set_take_a_mac_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_edgegw_env(monkeypatch)
    cfg = tmp_path / "edgegw.yaml"
    cfg.write_text(f"gateway: {{id: gw-test-1}}\ndata_dir: {tmp_path / 'data'}\n")
    otaa = ["--dev-eui", str(BIN), "--profile", "milesight/em310-udl", "--otaa", "--join-eui", str(JOIN_EUI)]
    code, out, err = run_with_config(capsys, cfg, "device", "add", *otaa, "--mac-version", "1.0.4", "--json")
    assert code == 0, err
    assert json.loads(out)["mac_version"] == "1.0.4"
    code, out, _ = run_with_config(
        capsys, cfg, "device", "set", str(BIN), "--mac-version", "profile", "--json"
    )
    assert code == 0 and json.loads(out)["mac_version"] is None
    with pytest.raises(SystemExit) as refused:  # argparse: not one of the choices
        run_with_config(capsys, cfg, "device", "set", str(BIN), "--mac-version", "1.1")
    assert refused.value.code == 2 and "--mac-version" in capsys.readouterr().err
