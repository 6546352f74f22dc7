"""The pushed registry: the message (signature, address, sealed keys), its apply on a real SQLite file
with the key store (one transaction, by version), and the agent's applier and its registry-state."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway import db
from gateway.app.registry_push import RegistryPushApplier
from gateway.cli import fleet_registry_cmd
from gateway.cli.common import UsageError
from gateway.errors import CommandRejected
from gateway.fleet import registry_push, seal
from gateway.fleet.registry_push import PushedDevice, PushedGroup, RegistryMessage, Secrets
from gateway.messages import AesKey, DevAddr, DevEui
from gateway.provisioning import keystore, pushed_registry, registry

PROFILE = "milesight/em310-udl"
LAMP = "edgegw/lamp-controller"
GW_A, GW_B = "gw-a", "gw-b"
SIG = "A" * 86 + "=="  # 64 bytes of base64: a signature's length, not a signature
EMPTY = {"v": 1, "sig": SIG, "devices": [], "groups": [], "removals": []}


def abp(n: int, **fields: Any) -> tuple[PushedDevice, dict[str, str]]:
    device = PushedDevice(
        dev_eui=f"70b3d57e{n:08x}", profile=PROFILE, activation="abp", dev_addr=f"26{n:06x}",
        site=f"site-{n % 7}", params={"empty_distance_mm": 1800 + n % 100}, **fields,
    )  # fmt: skip
    return device, {"nwk_s_key": f"{n:032x}", "app_s_key": f"{n + 1:032x}"}


def otaa(n: int) -> tuple[PushedDevice, dict[str, str]]:
    device = PushedDevice(
        dev_eui=f"a0b3d57e{n:08x}", profile=PROFILE, activation="otaa", join_eui="70b3d57ed0000000"
    )
    return device, {"app_key": f"{n + 7:032x}"}


def message(
    gateway_key: X25519PrivateKey,
    platform: Ed25519PrivateKey,
    items: list[tuple[PushedDevice, dict[str, str]]],
    *,
    version: int = 1,
    gateway: str = GW_A,
    target: str | None = None,
    groups: list[tuple[PushedGroup, dict[str, str]]] | None = None,
) -> RegistryMessage:
    return registry_push.build(
        gateway=gateway, target=target or gateway, version=version, issued_at=1_764_000_000,
        devices=[d for d, _ in items], groups=[g for g, _ in groups or []],
        secrets=Secrets({d.dev_eui: k for d, k in items}, {g.name: k for g, k in groups or []}),
        removals=(), recipient=gateway_key.public_key(), signing_key=platform,
    )  # fmt: skip


@pytest.fixture
def keys() -> tuple[X25519PrivateKey, Ed25519PrivateKey]:
    return X25519PrivateKey.generate(), Ed25519PrivateKey.generate()


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = db.connect(db.db_path(tmp_path))
    yield connection
    connection.close()


@pytest.fixture
def store(tmp_path: Path) -> keystore.KeyStore:
    return keystore.create_key(tmp_path)


def received(data: bytes, gw_key: X25519PrivateKey, platform: Ed25519PrivateKey,
             gateway_id: str = GW_A) -> tuple[RegistryMessage, Secrets]:  # fmt: skip
    """What the agent does with the bytes: parse, verify, open."""
    parsed = registry_push.parse(data)
    registry_push.verify(parsed, [platform.public_key()], gateway_id=gateway_id)
    return parsed, registry_push.open_secrets(parsed, gw_key)


# --- the message -----------------------------------------------------------------------------


def test_a_message_round_trips_and_carries_no_key_in_clear(
    keys: tuple[X25519PrivateKey, Ed25519PrivateKey],
) -> None:
    gw_key, platform = keys
    items = [abp(1), otaa(2)]
    data = message(gw_key, platform, items).to_bytes()
    for _, secret in items:
        for value in secret.values():
            assert value.encode() not in data
    parsed, secrets = received(data, gw_key, platform)
    assert parsed.devices == tuple(d for d, _ in items)
    assert dict(secrets.devices) == {d.dev_eui: k for d, k in items}


def test_another_gateway_cannot_open_its_copy(keys: tuple[X25519PrivateKey, Ed25519PrivateKey]) -> None:
    gw_key, platform = keys
    other = X25519PrivateKey.generate()
    data = message(gw_key, platform, [abp(1)]).to_bytes()
    parsed = registry_push.parse(data)
    with pytest.raises(CommandRejected) as caught:
        registry_push.open_secrets(parsed, other)
    assert caught.value.reason == "unsealable"
    # Nor by claiming to be gw-a: gw-b's agent refuses the address before anything else.
    with pytest.raises(CommandRejected) as caught:
        registry_push.verify(parsed, [platform.public_key()], gateway_id=GW_B)
    assert caught.value.reason == "misaddressed"


def test_a_blob_moved_into_another_gateways_signed_message_does_not_open(
    keys: tuple[X25519PrivateKey, Ed25519PrivateKey],
) -> None:
    """The platform signed a message for gw-b; gw-a's blob pasted into it (a re-signed copy, say by a
    platform bug) still does not open at gw-b: the blob is bound to gw-a's id and key."""
    gw_key, platform = keys
    b_key = X25519PrivateKey.generate()
    for_a = message(gw_key, platform, [abp(1)])
    for_b = message(b_key, platform, [abp(1)], gateway=GW_B)
    forged = replace(for_b, sealed=for_a.sealed)
    with pytest.raises(CommandRejected, match="do not open"):
        registry_push.open_secrets(forged, b_key)


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc["devices"][0].update(profile="dragino/ldds75"),
        lambda doc: doc.update(version=doc["version"] + 1),
        lambda doc: doc.update(gateway=GW_B, target=GW_B),
        lambda doc: doc["removals"].append("70b3d57e00000099"),
    ],
    ids=["device-field", "version", "address", "removals"],
)
def test_a_tampered_message_is_refused_bad_signature(
    keys: tuple[X25519PrivateKey, Ed25519PrivateKey], change: Any
) -> None:
    gw_key, platform = keys
    doc = json.loads(message(gw_key, platform, [abp(1)]).to_bytes())
    change(doc)
    parsed = registry_push.parse(json.dumps(doc).encode())
    with pytest.raises(CommandRejected) as caught:
        registry_push.verify(parsed, [platform.public_key()], gateway_id=doc["gateway"])
    assert caught.value.reason == "bad_signature"


def test_a_tampered_sealed_blob_fails_the_signature_before_it_is_opened(
    keys: tuple[X25519PrivateKey, Ed25519PrivateKey],
) -> None:
    gw_key, platform = keys
    msg = message(gw_key, platform, [abp(1)])
    blob = bytearray(msg.sealed)
    blob[-1] ^= 1
    forged = replace(msg, sealed=bytes(blob))
    with pytest.raises(CommandRejected) as caught:
        registry_push.verify(registry_push.parse(forged.to_bytes()), [platform.public_key()], gateway_id=GW_A)
    assert caught.value.reason == "bad_signature"
    with pytest.raises(CommandRejected) as caught:  # and it would not open either
        registry_push.open_secrets(forged, gw_key)
    assert caught.value.reason == "unsealable"


def test_a_group_target_needs_the_gateway_in_the_group(
    keys: tuple[X25519PrivateKey, Ed25519PrivateKey],
) -> None:
    gw_key, platform = keys
    parsed = registry_push.parse(message(gw_key, platform, [abp(1)], target="group:north").to_bytes())
    registry_push.verify(parsed, [platform.public_key()], gateway_id=GW_A, groups=frozenset({"north"}))
    with pytest.raises(CommandRejected) as caught:
        registry_push.verify(parsed, [platform.public_key()], gateway_id=GW_A, groups=frozenset({"south"}))
    assert caught.value.reason == "misaddressed"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "malformed"),
        (b'{"v": 1, "gateway": "gw-a"}', "unsigned"),
        (b'{"v": 1, "sig": "AAAA", "devices": [], "groups": [], "removals": []}', "bad_signature"),
        (json.dumps({**EMPTY, "devices": [{"dev_eui": "x"}]}).encode(), "malformed"),
        (json.dumps({**EMPTY, "removals": None}).encode(), "malformed"),
    ],
    ids=["not-json", "unsigned", "short-signature", "bad-device", "bad-removals"],
)  # fmt: skip
def test_what_is_no_registry_message_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(CommandRejected) as caught:
        registry_push.parse(data)
    assert caught.value.reason == reason


def test_diff_names_added_changed_removed_and_compares_keys_when_it_has_them() -> None:
    d1, k1 = abp(1)
    d2, _ = abp(2)
    d3, _ = abp(3)
    d2_moved = replace(d2, site="elsewhere")
    d = registry_push.diff([d1, d2, d3], [d1, d2_moved, abp(4)[0]])
    assert (d.added, d.changed, d.removed, d.unchanged, d.keys_compared) == (
        ("70b3d57e00000004",), ("70b3d57e00000002",), ("70b3d57e00000003",), 1, False
    )  # fmt: skip
    rekeyed = {**k1, "app_s_key": "f" * 32}
    d = registry_push.diff(
        [d1], [d1], old_secrets=Secrets({d1.dev_eui: k1}), new_secrets=Secrets({d1.dev_eui: rekeyed})
    )
    assert d.changed == (d1.dev_eui,) and d.keys_compared


# --- the apply on a real file ----------------------------------------------------------------


def apply(conn: sqlite3.Connection, store: keystore.KeyStore, data: bytes, gw_key: X25519PrivateKey,
          platform: Ed25519PrivateKey) -> pushed_registry.ApplyResult:  # fmt: skip
    parsed, secrets = received(data, gw_key, platform)
    return pushed_registry.apply(conn, parsed, secrets, keystore=store, profile_ids={PROFILE, LAMP})


def test_10000_devices_are_applied_within_10_s_on_a_real_file_with_the_key_store(
    conn: sqlite3.Connection, store: keystore.KeyStore, keys: tuple[X25519PrivateKey, Ed25519PrivateKey]
) -> None:
    """The figure of issue 21, measured from the bytes the broker delivers (parse, signature, opening
    the sealed keys) to the committed transaction (every key encrypted under the key store)."""
    gw_key, platform = keys
    items = [abp(n) if n % 2 else otaa(n) for n in range(1, 10_001)]
    data = message(gw_key, platform, items).to_bytes()
    assert len(data) < registry_push.MAX_MESSAGE_BYTES
    started = time.perf_counter()
    result = apply(conn, store, data, gw_key, platform)
    elapsed_s = time.perf_counter() - started
    print(f"\n10,000 devices: {len(data) / 1e6:.2f} MB message, applied in {elapsed_s:.2f} s")
    assert (result.status, result.added, result.refused) == ("applied", 10_000, [])
    assert elapsed_s < 10.0
    assert conn.execute("SELECT count(*) FROM devices").fetchone() == (10_000,)
    # Keys at rest are the key store's, as a local import writes them.
    stored = conn.execute("SELECT app_key FROM devices WHERE app_key IS NOT NULL").fetchall()
    stored += conn.execute("SELECT nwk_s_key FROM sessions").fetchall()
    assert stored and all(keystore.KeyStore.is_encrypted(v) for (v,) in stored)
    eui = DevEui.from_hex(items[0][0].dev_eui)
    assert registry.device_keys(conn, eui, store)["nwk_s_key"] == items[0][1]["nwk_s_key"]


def test_a_version_is_applied_once_and_an_older_one_is_ignored(
    conn: sqlite3.Connection, store: keystore.KeyStore, keys: tuple[X25519PrivateKey, Ed25519PrivateKey]
) -> None:
    gw_key, platform = keys
    items = [abp(n) for n in range(1, 6)]
    v2 = message(gw_key, platform, items, version=2).to_bytes()
    assert apply(conn, store, v2, gw_key, platform).added == 5
    conn.execute("UPDATE sessions SET fcnt_up = 41")  # the devices spoke since
    again = apply(conn, store, v2, gw_key, platform)
    assert (again.status, again.added, again.applied_version) == ("ignored", 0, 2)
    older = message(gw_key, platform, items[:2], version=1).to_bytes()
    assert apply(conn, store, older, gw_key, platform).status == "ignored"
    assert conn.execute("SELECT count(*) FROM devices").fetchone() == (5,)
    # A newer version with the same devices: nothing rewritten, sessions and counters kept.
    v3 = apply(conn, store, message(gw_key, platform, items, version=3).to_bytes(), gw_key, platform)
    assert (v3.status, v3.unchanged, v3.added, v3.replaced) == ("applied", 5, 0, 0)
    assert conn.execute("SELECT DISTINCT fcnt_up FROM sessions").fetchall() == [(41,)]
    assert pushed_registry.applied_version(conn) == 3


def test_a_newer_version_updates_replaces_and_removes_what_it_owns_only(
    conn: sqlite3.Connection, store: keystore.KeyStore, keys: tuple[X25519PrivateKey, Ed25519PrivateKey]
) -> None:
    gw_key, platform = keys
    local = DevEui.from_hex("70b3d57e000000aa")
    local_keys = registry.AbpKeys(DevAddr.from_hex("260000aa"), AesKey(bytes(16)), AesKey(bytes([1]) * 16))
    registry.add_device(conn, dev_eui=local, profile=PROFILE, keys=local_keys, keystore=store)
    apply(
        conn,
        store,
        message(gw_key, platform, [abp(1), abp(2), abp(3)], version=1).to_bytes(),
        gw_key,
        platform,
    )
    moved = replace(abp(1)[0], site="quai")
    rekeyed = (abp(2)[0], {"nwk_s_key": "a" * 32, "app_s_key": "b" * 32})
    v2 = message(gw_key, platform, [(moved, abp(1)[1]), rekeyed], version=2).to_bytes()
    result = apply(conn, store, v2, gw_key, platform)
    assert (result.updated, result.replaced, result.removed) == (1, 1, 1)
    euis = {str(d.dev_eui) for d in registry.list_devices(conn)}
    assert euis == {str(local), abp(1)[0].dev_eui, abp(2)[0].dev_eui}  # the local device stays
    assert registry.get_device(conn, DevEui.from_hex(abp(1)[0].dev_eui)).site == "quai"
    assert registry.device_keys(conn, DevEui.from_hex(abp(2)[0].dev_eui), store)["nwk_s_key"] == "a" * 32


def test_a_local_device_the_push_lists_becomes_pushed_and_keeps_its_session(
    conn: sqlite3.Connection, store: keystore.KeyStore, keys: tuple[X25519PrivateKey, Ed25519PrivateKey]
) -> None:
    gw_key, platform = keys
    device, secret = abp(5)
    registry.add_device(conn, dev_eui=DevEui.from_hex(device.dev_eui), profile=PROFILE, keys=registry.AbpKeys(
        DevAddr.from_hex(device.dev_addr or ""), AesKey.from_hex(secret["nwk_s_key"]),
        AesKey.from_hex(secret["app_s_key"])), site="old", keystore=store)  # fmt: skip
    conn.execute("UPDATE sessions SET fcnt_up = 7")
    result = apply(conn, store, message(gw_key, platform, [(device, secret)]).to_bytes(), gw_key, platform)
    assert result.updated == 1
    assert conn.execute("SELECT fcnt_up FROM sessions").fetchall() == [(7,)]
    assert conn.execute("SELECT dev_eui FROM pushed_devices").fetchall() == [(device.dev_eui,)]
    # Now the push's: the next version that no longer lists it removes it.
    result = apply(conn, store, message(gw_key, platform, [], version=2).to_bytes(), gw_key, platform)
    assert result.removed == 1


def test_a_device_the_gateway_cannot_take_is_refused_alone(
    conn: sqlite3.Connection, store: keystore.KeyStore, keys: tuple[X25519PrivateKey, Ed25519PrivateKey]
) -> None:
    gw_key, platform = keys
    unknown = replace(abp(1)[0], profile="acme/x")
    clash = replace(abp(3)[0], dev_addr="26000002")
    items = [(unknown, abp(1)[1]), abp(2), (clash, abp(3)[1])]
    result = apply(conn, store, message(gw_key, platform, items).to_bytes(), gw_key, platform)
    assert result.added == 1
    assert [(r["dev_eui"], r["reason"]) for r in result.refused] == [
        (unknown.dev_eui, "unknown_profile"), (clash.dev_eui, "refused")
    ]  # fmt: skip
    assert pushed_registry.state(conn) is not None
    assert len(pushed_registry.state(conn).refused) == 2  # type: ignore[union-attr]


def test_multicast_groups_are_pushed_with_their_members_and_keep_their_counter(
    conn: sqlite3.Connection, store: keystore.KeyStore, keys: tuple[X25519PrivateKey, Ed25519PrivateKey]
) -> None:
    gw_key, platform = keys
    lamps = [(replace(abp(n)[0], profile=LAMP, lorawan_class="C", params={}), abp(n)[1]) for n in (1, 2)]
    group = (PushedGroup("street-7", "27000001", members=tuple(d.dev_eui for d, _ in lamps)),
             {"nwk_s_key": "c" * 32, "app_s_key": "d" * 32})  # fmt: skip
    result = apply(conn, store, message(gw_key, platform, lamps, groups=[group]).to_bytes(), gw_key, platform)
    assert (result.groups, result.refused) == (1, [])
    conn.execute("UPDATE multicast_groups SET fcnt_down = 12")
    apply(
        conn, store, message(gw_key, platform, lamps, groups=[group], version=2).to_bytes(), gw_key, platform
    )
    assert conn.execute("SELECT fcnt_down FROM multicast_groups").fetchall() == [(12,)]
    assert sorted(conn.execute("SELECT dev_eui FROM multicast_members")) == sorted(
        (d.dev_eui,) for d, _ in lamps
    )
    (nwk,) = conn.execute("SELECT nwk_s_key FROM multicast_groups").fetchone()
    assert keystore.KeyStore.is_encrypted(nwk)
    apply(conn, store, message(gw_key, platform, lamps, version=3).to_bytes(), gw_key, platform)
    assert conn.execute("SELECT count(*) FROM multicast_groups").fetchone() == (0,)


# --- the agent's applier ---------------------------------------------------------------------


class Harness:
    """The applier with the real apply on a real file; what it publishes is kept."""

    def __init__(self, conn: sqlite3.Connection, store: keystore.KeyStore, gw_key: X25519PrivateKey | None,
                 platform: Ed25519PrivateKey) -> None:  # fmt: skip
        self.states: list[dict[str, Any]] = []
        self.refreshed = 0

        async def run_db(fn: Any, *args: Any) -> Any:
            return fn(conn, *args)

        async def refresh() -> None:
            self.refreshed += 1

        async def publish_state(data: bytes) -> None:
            self.states.append(json.loads(data))

        async def publish_seal_key(_data: bytes) -> None:
            return None

        self.applier = RegistryPushApplier(
            gateway_id=GW_A, keys=lambda: [platform.public_key()], groups=frozenset, seal_key=gw_key,
            run_db=run_db, keystore=store, profile_ids=lambda: {PROFILE}, refresh_registry=refresh,
            publish_state=publish_state, publish_seal_key=publish_seal_key, connected=lambda: True,
            applied=pushed_registry.state(conn),
        )  # fmt: skip


def test_the_applier_reports_applied_and_refused_versions_on_registry_state(
    conn: sqlite3.Connection, store: keystore.KeyStore, keys: tuple[X25519PrivateKey, Ed25519PrivateKey]
) -> None:
    gw_key, platform = keys
    h = Harness(conn, store, gw_key, platform)
    asyncio.run(h.applier.handle(message(gw_key, platform, [abp(1), abp(2)], version=4).to_bytes()))
    assert (h.states[-1]["version"], h.states[-1]["devices"], h.states[-1]["refused"]) == (4, 2, [])
    assert h.refreshed == 1  # the running stages adopt it at once
    forged = message(gw_key, Ed25519PrivateKey.generate(), [abp(3)], version=5).to_bytes()
    asyncio.run(h.applier.handle(forged))
    last = h.states[-1]
    assert last["version"] == 4  # still the applied one
    assert [(r["version"], r["reason"]) for r in last["refused"]] == [(5, "bad_signature")]
    other_gw = message(X25519PrivateKey.generate(), platform, [abp(3)], version=6).to_bytes()
    asyncio.run(h.applier.handle(other_gw))
    assert [(r["version"], r["reason"]) for r in h.states[-1]["refused"]] == [(6, "unsealable")]
    assert conn.execute("SELECT count(*) FROM devices").fetchone() == (2,)


def test_the_applied_version_is_kept_across_a_restart(
    conn: sqlite3.Connection, store: keystore.KeyStore, keys: tuple[X25519PrivateKey, Ed25519PrivateKey]
) -> None:
    gw_key, platform = keys
    data = message(gw_key, platform, [abp(1)], version=9).to_bytes()
    asyncio.run(Harness(conn, store, gw_key, platform).applier.handle(data))
    restarted = Harness(conn, store, gw_key, platform)  # a new agent on the same file
    assert restarted.applier.applied_version == 9
    result = asyncio.run(restarted.applier.handle(data))  # the retained message, delivered again
    assert result is not None and result.status == "ignored"
    assert restarted.refreshed == 0


def test_a_gateway_without_a_seal_key_refuses_every_push(
    conn: sqlite3.Connection, store: keystore.KeyStore, keys: tuple[X25519PrivateKey, Ed25519PrivateKey]
) -> None:
    gw_key, platform = keys
    h = Harness(conn, store, None, platform)
    asyncio.run(h.applier.handle(message(gw_key, platform, [abp(1)]).to_bytes()))
    assert h.states[-1]["refused"][0]["reason"] == "no_seal_key"


# --- the platform's source files (edgegw fleet registry) ---------------------------------------


def test_a_csv_and_the_platforms_json_give_the_same_registry(tmp_path: Path) -> None:
    csv_file, json_file = tmp_path / "city.csv", tmp_path / "city.json"
    csv_file.write_text(
        "dev_eui,profile,activation,dev_addr,nwk_s_key,app_s_key,join_eui,app_key,site,class,param.lamp_group\n"
        f"70b3d57e00000001,{LAMP},abp,26000001,{'1' * 32},{'2' * 32},,,quai,C,b12\n"
        f"70b3d57e00000002,{LAMP},otaa,,,,70b3d57ed0000000,{'3' * 32},,,\n"
    )
    json_file.write_text(json.dumps({
        "devices": [
            {"dev_eui": "70b3d57e00000001", "profile": LAMP, "activation": "abp", "dev_addr": "26000001",
             "nwk_s_key": "1" * 32, "app_s_key": "2" * 32, "site": "quai", "class": "C",
             "params": {"lamp_group": "b12"}},
            {"dev_eui": "70b3d57e00000002", "profile": LAMP, "activation": "otaa",
             "join_eui": "70b3d57ed0000000", "app_key": "3" * 32},
        ],
        "groups": [{"name": "quai", "mc_addr": "27000001", "members": ["70b3d57e00000001"],
                    "nwk_s_key": "4" * 32, "app_s_key": "5" * 32}],
    }))  # fmt: skip
    from_csv = fleet_registry_cmd.read_source(str(csv_file))
    from_json = fleet_registry_cmd.read_source(str(json_file))
    assert from_csv.devices == from_json.devices
    assert dict(from_csv.secrets.devices) == dict(from_json.secrets.devices)
    assert from_json.devices[0].lorawan_class == "C" and from_json.devices[0].params == {"lamp_group": "b12"}
    assert [g.name for g in from_json.groups] == ["quai"]
    assert dict(from_json.secrets.groups) == {"quai": {"nwk_s_key": "4" * 32, "app_s_key": "5" * 32}}


def test_a_pushed_otaa_device_needs_its_app_key(tmp_path: Path) -> None:
    csv_file = tmp_path / "city.csv"
    csv_file.write_text(
        f"dev_eui,profile,activation,join_eui,app_key\n70b3d57e00000002,{LAMP},otaa,70b3d57ed0000000,\n"
    )
    with pytest.raises(UsageError, match="needs its app_key"):
        fleet_registry_cmd.read_source(str(csv_file))


def test_the_gateways_keys_come_from_a_directory_and_a_group_from_their_seal_keys(tmp_path: Path) -> None:
    a, b = X25519PrivateKey.generate().public_key(), X25519PrivateKey.generate().public_key()
    (tmp_path / "gw-a.json").write_bytes(registry_push.SealKey(GW_A, a, frozenset({"north"})).to_bytes())
    (tmp_path / "gw-b.pub").write_text(seal.public_key_text(b) + "\n")  # as `provision gateway` prints it
    (tmp_path / "notes.txt").write_text("not a key")
    keys = fleet_registry_cmd.keys_from_dir(str(tmp_path))
    assert {gw: k.key.public_bytes_raw() for gw, k in keys.items()} == {
        GW_A: a.public_bytes_raw(),
        GW_B: b.public_bytes_raw(),
    }
    assert fleet_registry_cmd.recipients("group:north", [], keys) == [GW_A]
    assert fleet_registry_cmd.recipients("group:north", [GW_A, GW_B], keys) == [GW_A, GW_B]
    assert fleet_registry_cmd.recipients(GW_B, [], keys) == [GW_B]
    with pytest.raises(UsageError, match="no gateway lists group south"):
        fleet_registry_cmd.recipients("group:south", [], keys)
