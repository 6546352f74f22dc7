"""Keys at rest: AES-GCM key file, encrypted registry columns, migration from plain hex."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import db
from gateway.errors import StorageError
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui
from gateway.provisioning import keystore, registry

NWK = AesKey.from_hex("2b7e151628aed2a6abf7158809cf4f3c")
APP = AesKey.from_hex("000102030405060708090a0b0c0d0e0f")


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = db.connect(db.db_path(tmp_path))
    yield c
    c.close()


def test_key_file_is_created_once_private_and_random(tmp_path: Path) -> None:
    assert not keystore.open_key(tmp_path).enabled
    store = keystore.create_key(tmp_path)
    path = keystore.key_path(tmp_path)
    assert store.enabled and len(path.read_bytes()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    keystore.create_key(tmp_path)
    assert path.read_bytes() == first
    assert keystore.create_key(tmp_path / "other").path.read_bytes() != first


def test_encrypt_decrypt_and_plain_passthrough(tmp_path: Path) -> None:
    store = keystore.create_key(tmp_path)
    a, b = store.encrypt_hex(NWK.reveal()), store.encrypt_hex(NWK.reveal())
    assert a.startswith("enc1:") and a != b  # fresh nonce each time
    assert NWK.reveal() not in a
    assert store.decrypt_hex(a) == NWK.reveal() == store.decrypt_hex(NWK.reveal())


def test_tampering_wrong_key_and_missing_key_are_clear_errors(tmp_path: Path) -> None:
    store = keystore.create_key(tmp_path / "a")
    sealed = store.encrypt_hex(NWK.reveal())
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(StorageError, match="does not decrypt"):
        store.decrypt_hex(flipped)
    with pytest.raises(StorageError, match="does not decrypt"):
        keystore.create_key(tmp_path / "b").decrypt_hex(sealed)
    with pytest.raises(StorageError, match="missing"):
        keystore.open_key(tmp_path / "c").decrypt_hex(sealed)


def test_registry_encrypts_on_write_and_decrypts_on_read(tmp_path: Path, conn: sqlite3.Connection) -> None:
    store = keystore.create_key(tmp_path)
    abp = registry.AbpKeys(DevAddr.from_hex("26011001"), NWK, APP)
    registry.add_device(conn, dev_eui=DevEui(bytes(7) + b"\x01"), profile="p/q", keys=abp, keystore=store)
    otaa = registry.OtaaKeys(JoinEui(bytes(8)), APP)
    registry.add_device(conn, dev_eui=DevEui(bytes(7) + b"\x02"), profile="p/q", keys=otaa, keystore=store)
    raw = conn.execute("SELECT nwk_s_key, app_s_key FROM sessions").fetchone()
    assert all(v.startswith("enc1:") for v in raw)
    assert conn.execute("SELECT app_key FROM devices WHERE app_key IS NOT NULL").fetchone()[0][:5] == "enc1:"
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    blob = db.db_path(tmp_path).read_bytes()
    assert NWK.reveal().encode() not in blob and APP.reveal().encode() not in blob
    assert registry.device_keys(conn, DevEui(bytes(7) + b"\x01"), store)["nwk_s_key"] == NWK.reveal()
    # What gateway.lorawan.sessions.load_sessions would do with the one-line change.
    assert keystore.open_key(tmp_path).decrypt_hex(raw[0]) == NWK.reveal()


def test_plain_rows_migrate_by_rekey_or_next_write(tmp_path: Path, conn: sqlite3.Connection) -> None:
    for n, addr in ((1, "26011001"), (2, "26011002")):
        keys = registry.AbpKeys(DevAddr.from_hex(addr), NWK, APP)
        registry.add_device(conn, dev_eui=DevEui(bytes(7) + bytes([n])), profile="p/q", keys=keys)
    store = keystore.create_key(tmp_path)
    registry.update_installation(conn, DevEui(bytes(7) + b"\x01"), set_params={"x": 1.0}, keystore=store)
    rows = dict(conn.execute("SELECT dev_eui, nwk_s_key FROM sessions").fetchall())
    assert rows["0000000000000001"].startswith("enc1:") and rows["0000000000000002"] == NWK.reveal()
    assert registry.rekey(conn, store) == 2  # the other device's two session keys
    assert registry.rekey(conn, store) == 0
    for eui in ("0000000000000001", "0000000000000002"):
        assert registry.device_keys(conn, DevEui.from_hex(eui), store)["app_s_key"] == APP.reveal()


def test_a_store_opened_before_the_key_file_existed_reads_the_keys_sealed_after(tmp_path: Path) -> None:
    # The running agent opened its store with no key file; `edgegw device rekey` then created the
    # file and sealed the registry's keys (issue 19: the agent logged "key file ... missing" every
    # 10 s and served no new device until restarted).
    running = keystore.open_key(tmp_path)
    assert not running.enabled and running.encrypt_hex("00" * 16) == "00" * 16
    sealed = keystore.create_key(tmp_path).encrypt_hex("2b7e151628aed2a6abf7158809cf4f3c")
    assert running.decrypt_hex(sealed) == "2b7e151628aed2a6abf7158809cf4f3c"
    assert running.enabled and keystore.KeyStore.is_encrypted(running.encrypt_hex("00" * 16))
