"""The pushed registry on a gateway: a verified message applied to the database, by version.

Owns the ``registry_push_state``, ``pushed_devices`` and ``pushed_groups`` tables
(``schema_add_registry_push.sql``) and the one transaction that applies a registry message
(``gateway.fleet.registry_push``, already verified and its keys opened): each device written
through ``gateway.provisioning.registry`` (keys encrypted at rest under the key store, like a
local import), the devices the previous version pushed and this one no longer lists removed, the
multicast groups likewise, and the version recorded — all or nothing, so a crash or a restart
neither half-applies nor forgets a version. A version not above the applied one changes nothing.

Local devices (``device add``/``import``): a DevEUI the push lists becomes the push's (its fields
and keys are the platform's; the same keys keep its session and counters, other keys replace it);
a device the push never listed stays local and no push removes it. A local change to a pushed
device (``device set``, ``device remove``) lasts until the next version, which writes what the
platform says again. One device or group the gateway cannot take (an unknown profile, a DevAddr
another device uses, a member that is not class C) is refused alone, with its reason, and the
rest applies. It does not own the message format nor the MQTT side (``gateway.app.registry_push``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.db import transaction
from gateway.errors import RegistryError
from gateway.eu868 import sub_band_for
from gateway.fleet.registry_push import PushedDevice, PushedGroup, RegistryMessage, Secrets
from gateway.lorawan import region
from gateway.lorawan.multicast import group_tag
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui
from gateway.provisioning import groups, registry
from gateway.provisioning.keystore import KeyStore

MAX_REFUSED_LISTED = 100
"""Refusals kept in the state (and on ``registry-state``) at most; ``refused_count`` has them all."""


@dataclass(slots=True)
class ApplyResult:
    """What one message did (``status`` ``applied``, or ``ignored``: not newer than ``applied_version``)."""

    status: str
    version: int
    applied_version: int | None
    added: int = 0
    updated: int = 0
    replaced: int = 0
    unchanged: int = 0
    removed: int = 0
    groups: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "version": self.version,
            "applied_version": self.applied_version,
            "added": self.added,
            "updated": self.updated,
            "replaced": self.replaced,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "groups": self.groups,
            "refused": self.refused,
        }


@dataclass(frozen=True, slots=True)
class PushState:
    """The applied version as the database holds it (for ``registry-state`` and `edgegw status`)."""

    version: int
    target: str
    applied_at: str
    devices: int
    groups: int
    refused: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "target": self.target,
            "applied_at": self.applied_at,
            "devices": self.devices,
            "groups": self.groups,
            "refused": self.refused,
        }


def state(conn: sqlite3.Connection) -> PushState | None:
    """The applied version, or None when no push was ever applied."""
    row = conn.execute("SELECT version, target, applied_at, refused FROM registry_push_state").fetchone()
    if row is None:
        return None
    (devices,) = conn.execute("SELECT count(*) FROM pushed_devices").fetchone()
    (group_count,) = conn.execute("SELECT count(*) FROM pushed_groups").fetchone()
    try:
        refused = json.loads(row[3])
    except ValueError:
        refused = []
    return PushState(
        row[0], row[1], row[2], devices, group_count, refused if isinstance(refused, list) else []
    )


def applied_version(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT version FROM registry_push_state").fetchone()
    return None if row is None else int(row[0])


def apply(
    conn: sqlite3.Connection,
    message: RegistryMessage,
    secrets: Secrets,
    *,
    keystore: KeyStore | None = None,
    profile_ids: Collection[str] | None = None,
    now: datetime | None = None,
) -> ApplyResult:
    """Apply ``message`` (verified, ``secrets`` opened) in one transaction, unless not newer."""
    moment = now or datetime.now(UTC)
    with transaction(conn):
        current = applied_version(conn)
        result = ApplyResult("applied", message.version, current)
        if current is not None and message.version <= current:
            result.status = "ignored"
            return result
        writer = _Writer(conn, keystore, moment, _has_column(conn, "devices", "home_gateway"))
        owned = {eui for (eui,) in conn.execute("SELECT dev_eui FROM pushed_devices")}
        kept: set[str] = set()
        for device in message.devices:
            kept.add(device.dev_eui)  # a refused device keeps what an earlier version wrote
            problem = _device_problem(device, profile_ids)
            if problem is not None:
                result.refused.append({"dev_eui": device.dev_eui, "reason": problem[0], "detail": problem[1]})
                continue
            try:
                with _savepoint(conn):
                    outcome = writer.device(device, secrets.devices[device.dev_eui])
            except RegistryError as exc:
                result.refused.append({"dev_eui": device.dev_eui, "reason": "refused", "detail": str(exc)})
                continue
            setattr(result, outcome, getattr(result, outcome) + 1)
            conn.execute(
                "INSERT INTO pushed_devices (dev_eui, version) VALUES (?, ?)"
                " ON CONFLICT (dev_eui) DO UPDATE SET version = excluded.version",
                (device.dev_eui, message.version),
            )
        for eui in sorted(owned - kept):
            conn.execute("DELETE FROM devices WHERE dev_eui = ?", (eui,))
            result.removed += 1
        for eui in sorted(set(message.removals) - owned - kept):
            if conn.execute("SELECT 1 FROM devices WHERE dev_eui = ?", (eui,)).fetchone():
                result.refused.append(
                    {
                        "dev_eui": eui,
                        "reason": "local_device",
                        "detail": "registered locally, never pushed: remove it on the gateway",
                    }
                )
        _apply_groups(conn, writer, message, secrets, result)
        conn.execute(
            "INSERT INTO registry_push_state (id, version, target, applied_at, refused)"
            " VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET version = excluded.version,"
            " target = excluded.target, applied_at = excluded.applied_at, refused = excluded.refused",
            (message.version, message.target, moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
             json.dumps(result.refused[:MAX_REFUSED_LISTED])),
        )  # fmt: skip
    return result


@contextmanager
def _savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    """One device's writes inside the push's transaction: undone alone when it is refused."""
    conn.execute("SAVEPOINT pushed_item")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO pushed_item")
        conn.execute("RELEASE pushed_item")
        raise
    conn.execute("RELEASE pushed_item")


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


def _device_problem(device: PushedDevice, profile_ids: Collection[str] | None) -> tuple[str, str] | None:
    """(reason, detail) when this gateway cannot take the device as it is pushed."""
    if profile_ids is not None and device.profile not in profile_ids:
        return "unknown_profile", f"profile {device.profile!r} is not installed on this gateway"
    try:
        registry.check_class(device.lorawan_class)
        if device.mac_version is not None:
            registry.check_mac_version(device.mac_version)
        registry.check_position(device.lat, device.lon)
        for name, value in device.params.items():
            registry.check_param(name, registry.format_param(value))
    except ValueError as exc:
        return "bad_value", str(exc)
    return None


def _params(device: PushedDevice) -> dict[str, registry.ParamValue]:
    return dict(registry.check_param(n, registry.format_param(v)) for n, v in device.params.items())


class _Writer:
    """The writes of one push: devices through the registry, groups beside them."""

    def __init__(self, conn: sqlite3.Connection, keystore: KeyStore | None, now: datetime,
                 has_home: bool) -> None:  # fmt: skip
        self.conn, self.keystore, self.now, self.has_home = conn, keystore, now, has_home

    def device(self, device: PushedDevice, keys: dict[str, str] | Any) -> str:
        """Write one device; returns ``added``, ``replaced``, ``updated`` or ``unchanged``."""
        eui = DevEui.from_hex(device.dev_eui)
        wanted = _keys(device, keys)
        try:
            current: registry.Device | None = registry.get_device(self.conn, eui)
        except RegistryError:
            current = None
        outcome = "added"
        if current is not None:
            same_addr = device.activation == "otaa" or str(current.dev_addr) == device.dev_addr
            if (
                current.activation == device.activation
                and same_addr
                and _same_keys(registry.device_keys(self.conn, eui, self.keystore), wanted)
            ):
                return self._update(device, current)
            # Other keys or activation: a new device under the same DevEUI (its session goes with it).
            self.conn.execute("DELETE FROM devices WHERE dev_eui = ?", (device.dev_eui,))
            outcome = "replaced"
        registry.insert_device(
            self.conn,
            dev_eui=eui,
            profile=device.profile,
            keys=wanted,
            site=device.site,
            lat=device.lat,
            lon=device.lon,
            params=_params(device),
            now=self.now,
            keystore=self.keystore,
            lorawan_class=registry.check_class(device.lorawan_class),
            adr=device.adr,
            mac_version=device.mac_version,
        )
        self._home(device)
        return outcome

    def _update(self, device: PushedDevice, current: registry.Device) -> str:
        params = _params(device)
        home = self._current_home(device.dev_eui)
        same = (
            current.profile, current.site, current.lat, current.lon, dict(current.params),
            current.lorawan_class, current.adr, current.mac_version, home,
        ) == (
            device.profile, device.site, device.lat, device.lon, params, device.lorawan_class, device.adr,
            device.mac_version, device.home_gateway if self.has_home else None,
        )  # fmt: skip
        if same:
            return "unchanged"
        self.conn.execute(
            "UPDATE devices SET profile = ?, site = ?, lat = ?, lon = ?, params = ?, lorawan_class = ?,"
            " adr = ?, mac_version = ? WHERE dev_eui = ?",
            (device.profile, device.site, device.lat, device.lon, json.dumps(params, sort_keys=True),
             device.lorawan_class, int(device.adr), device.mac_version, device.dev_eui),
        )  # fmt: skip
        self._home(device)
        return "updated"

    def _current_home(self, eui: str) -> str | None:
        if not self.has_home:
            return None
        row = self.conn.execute("SELECT home_gateway FROM devices WHERE dev_eui = ?", (eui,)).fetchone()
        return None if row is None else row[0]

    def _home(self, device: PushedDevice) -> None:
        # The home_gateway column is the roles' compatible addition: written when this file has it.
        if self.has_home:
            self.conn.execute(
                "UPDATE devices SET home_gateway = ? WHERE dev_eui = ?", (device.home_gateway, device.dev_eui)
            )

    def group(self, group: PushedGroup, keys: dict[str, str] | Any) -> str:
        """Write one multicast group and its members; returns ``added``, ``replaced``, ``updated``."""
        groups.check_name(group.name)
        _check_radio(group.dr, group.freq_hz)
        addr = DevAddr.from_hex(group.mc_addr)
        nwk, app = AesKey.from_hex(keys["nwk_s_key"]), AesKey.from_hex(keys["app_s_key"])
        row = self.conn.execute(
            "SELECT mc_addr, nwk_s_key, app_s_key FROM multicast_groups WHERE name = ?", (group.name,)
        ).fetchone()
        decrypt = self.keystore.decrypt_hex if self.keystore is not None else str
        outcome = "added"
        if row is not None:
            if (row[0], decrypt(row[1]), decrypt(row[2])) == (
                group.mc_addr,
                keys["nwk_s_key"],
                keys["app_s_key"],
            ):
                # Same address and keys: McFCntDown goes on from where it is.
                self.conn.execute(
                    "UPDATE multicast_groups SET dr = ?, freq_hz = ? WHERE name = ?",
                    (group.dr, group.freq_hz, group.name),
                )
                outcome = "updated"
            else:
                self.conn.execute("DELETE FROM multicast_groups WHERE name = ?", (group.name,))
                outcome = "replaced"
        if outcome != "updated":
            self._check_addr_free(addr)
            seal = self.keystore.encrypt_hex if self.keystore is not None else str
            self.conn.execute(
                "INSERT INTO multicast_groups (name, mc_addr, nwk_s_key, app_s_key, tag, dr, freq_hz,"
                " fcnt_down, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (group.name, group.mc_addr, seal(nwk.reveal()), seal(app.reveal()), group_tag(addr, nwk),
                 group.dr, group.freq_hz, self.now.isoformat(timespec="seconds")),
            )  # fmt: skip
        self.conn.execute("DELETE FROM multicast_members WHERE group_name = ?", (group.name,))
        profile: str | None = None
        for member in group.members:
            found = self.conn.execute(
                "SELECT profile, lorawan_class FROM devices WHERE dev_eui = ?", (member,)
            ).fetchone()
            if found is None or found[1] != "C":
                raise RegistryError(f"member {member} is not a registered class C device")
            if profile is not None and found[0] != profile:
                raise RegistryError(f"members of {group.name} have profiles {profile} and {found[0]}")
            profile = found[0]
            self.conn.execute(
                "INSERT INTO multicast_members (group_name, dev_eui) VALUES (?, ?)", (group.name, member)
            )
        return outcome

    def _check_addr_free(self, addr: DevAddr) -> None:
        row = self.conn.execute(
            "SELECT name FROM multicast_groups WHERE mc_addr = ?", (str(addr),)
        ).fetchone()
        if row:
            raise RegistryError(f"McAddr {addr} is already used by multicast group {row[0]}")
        row = self.conn.execute("SELECT dev_eui FROM sessions WHERE dev_addr = ?", (str(addr),)).fetchone()
        if row:
            raise RegistryError(f"McAddr {addr} is the DevAddr of device {row[0]}")


def _check_radio(dr: int | None, freq_hz: int | None) -> None:
    """The checks ``groups.add_group`` makes of a group's data rate and frequency."""
    bw_hz = 125_000
    if dr is not None:
        try:
            bw_hz = region.data_rate(dr).bw_hz
        except ValueError as exc:
            raise RegistryError(str(exc)) from exc
    if freq_hz is not None and sub_band_for(freq_hz, bw_hz) is None:
        raise RegistryError(f"{freq_hz} Hz is not inside an EU868 sub-band a gateway may transmit in")


def _apply_groups(conn: sqlite3.Connection, writer: _Writer, message: RegistryMessage, secrets: Secrets,
                  result: ApplyResult) -> None:  # fmt: skip
    owned = {name for (name,) in conn.execute("SELECT name FROM pushed_groups")}
    kept: set[str] = set()
    for group in message.groups:
        kept.add(group.name)
        try:
            with _savepoint(conn):
                writer.group(group, secrets.groups[group.name])
        except RegistryError as exc:
            result.refused.append({"group": group.name, "reason": "refused", "detail": str(exc)})
            continue
        result.groups += 1
        conn.execute(
            "INSERT INTO pushed_groups (name, version) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET version = excluded.version",
            (group.name, message.version),
        )
    for name in sorted(owned - kept):
        conn.execute("DELETE FROM multicast_groups WHERE name = ?", (name,))


def _keys(device: PushedDevice, keys: dict[str, str] | Any) -> registry.AbpKeys | registry.OtaaKeys:
    if device.activation == "abp":
        assert device.dev_addr is not None  # registry_push.parse: an ABP device has its DevAddr
        return registry.AbpKeys(
            DevAddr.from_hex(device.dev_addr),
            AesKey.from_hex(keys["nwk_s_key"]),
            AesKey.from_hex(keys["app_s_key"]),
        )
    assert device.join_eui is not None
    return registry.OtaaKeys(JoinEui.from_hex(device.join_eui), AesKey.from_hex(keys["app_key"]))


def _same_keys(have: dict[str, str], wanted: registry.AbpKeys | registry.OtaaKeys) -> bool:
    if isinstance(wanted, registry.AbpKeys):
        return (have.get("nwk_s_key"), have.get("app_s_key")) == (
            wanted.nwk_s_key.reveal(), wanted.app_s_key.reveal()
        )  # fmt: skip
    return (have.get("join_eui"), have.get("app_key")) == (str(wanted.join_eui), wanted.app_key.reveal())
