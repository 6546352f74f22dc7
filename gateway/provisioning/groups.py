"""The multicast group registry: class C groups, their keys and their member devices.

Owns the ``multicast_groups`` and ``multicast_members`` tables (``schema_add_multicast.sql``): a group's
name, McAddr, McNwkSKey/McAppSKey (encrypted at rest under the gateway key file when there is one,
like the devices' session keys), data rate and frequency (NULL: the gateway's RX2 parameters), and
its members. A member must be a registered class C device, and every member of a group shares one
profile (a group command is encoded once, with that profile). McFCntDown is the agent's to move
(``gateway.lorawan.multicast``); a group is created at 0, or where a removed group with the same
McAddr and McNwkSKey stopped (``multicast_retired``, ``schema_add_multicast_retired.sql``).

Synchronous, driven by the CLI on a stopped or running agent (the agent re-reads the file when
another process changed it). Keys are returned only at creation (printed once for the installer)
and by ``group_keys``. The ``setup`` column is left NULL: it is reserved for TS005 remote multicast
setup and FUOTA sessions (out of scope here).
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.db import transaction
from gateway.errors import RegistryError
from gateway.eu868 import sub_band_for
from gateway.lorawan import region
from gateway.lorawan.multicast import McGroup, group_tag
from gateway.messages import AesKey, DevAddr, DevEui
from gateway.provisioning.keystore import KeyStore

__all__ = [
    "GroupInfo",
    "add_group",
    "add_member",
    "add_members",
    "check_name",
    "get_group",
    "group_keys",
    "list_groups",
    "load_groups",
    "remove_group",
    "remove_member",
    "remove_members",
    "reseal",
]

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group without its keys (what `group list` and `group show` print)."""

    name: str
    mc_addr: DevAddr
    dr: int | None
    freq_hz: int | None
    fcnt_down: int
    created_at: str
    members: tuple[str, ...]
    profile: str | None
    """The members' profile; None while the group has no member."""
    not_class_c: tuple[str, ...] = ()
    """Members whose registry entry was set back to class A after they joined (``device set --class``):
    they listen only after their own uplinks, so the group's frames do not reach them."""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mc_addr": str(self.mc_addr),
            "dr": self.dr,
            "freq_hz": self.freq_hz,
            "fcnt_down": self.fcnt_down,
            "created_at": self.created_at,
            "profile": self.profile,
            "members": list(self.members),
            "not_class_c": list(self.not_class_c),
        }


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise RegistryError(
            f"group name {name!r}: use 1 to 40 of a-z, 0-9, '-', '_' (starting with a-z or 0-9)"
        )
    return name


def add_group(
    conn: sqlite3.Connection,
    name: str,
    *,
    mc_addr: DevAddr | None = None,
    nwk_s_key: AesKey | None = None,
    app_s_key: AesKey | None = None,
    dr: int | None = None,
    freq_hz: int | None = None,
    keystore: KeyStore | None = None,
    now: datetime | None = None,
) -> tuple[GroupInfo, AesKey, AesKey]:
    """Create a group; the McAddr and keys not given are drawn from the OS CSPRNG. Returns the group and
    its two keys (McNwkSKey, McAppSKey) for the installer. RegistryError for a name or McAddr in use
    (by a group or a device's session), a data rate outside EU868 DR0..DR6, a frequency outside the
    EU868 sub-bands."""
    check_name(name)
    bw_hz = 125_000  # the gateway's RX2 data rate when none is given: LoRa 125 kHz unless DR6
    if dr is not None:
        try:
            bw_hz = region.data_rate(dr).bw_hz
        except ValueError as exc:
            raise RegistryError(str(exc)) from exc
    if freq_hz is not None and sub_band_for(freq_hz, bw_hz) is None:
        # The whole channel must fit the sub-band (DR6 is 250 kHz wide): else the radio refuses each frame.
        raise RegistryError(
            f"{freq_hz} Hz at {bw_hz // 1000} kHz is not inside an EU868 sub-band a gateway may transmit in"
        )
    nwk = nwk_s_key or AesKey(secrets.token_bytes(AesKey.SIZE))
    app = app_s_key or AesKey(secrets.token_bytes(AesKey.SIZE))
    seal = keystore.encrypt_hex if keystore is not None else _plain
    created_at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    with transaction(conn):
        if conn.execute("SELECT 1 FROM multicast_groups WHERE name = ?", (name,)).fetchone():
            raise RegistryError(f"multicast group {name} exists already (remove it first to change its keys)")
        addr = mc_addr or _free_addr(conn)
        _check_addr_free(conn, addr)
        tag = group_tag(addr, nwk)
        # A group removed with these McAddr and McNwkSKey: go on from its counter, never back to 0.
        retired = conn.execute("SELECT fcnt_down FROM multicast_retired WHERE tag = ?", (tag,)).fetchone()
        conn.execute(
            "INSERT INTO multicast_groups (name, mc_addr, nwk_s_key, app_s_key, tag, dr, freq_hz, fcnt_down,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                str(addr),
                seal(nwk.reveal()),
                seal(app.reveal()),
                tag,
                dr,
                freq_hz,
                retired[0] if retired else 0,
                created_at,
            ),
        )
    return get_group(conn, name), nwk, app


def _free_addr(conn: sqlite3.Connection) -> DevAddr:
    for _ in range(100):
        addr = DevAddr(secrets.token_bytes(DevAddr.SIZE))
        try:
            _check_addr_free(conn, addr)
        except RegistryError:
            continue
        return addr
    raise RegistryError("no free McAddr found in 100 draws")  # 2^32 addresses: never in practice


def _check_addr_free(conn: sqlite3.Connection, addr: DevAddr) -> None:
    # A McAddr equal to a device's DevAddr would make the device take its own frames for the group's.
    row = conn.execute("SELECT name FROM multicast_groups WHERE mc_addr = ?", (str(addr),)).fetchone()
    if row:
        raise RegistryError(f"McAddr {addr} is already used by multicast group {row[0]}")
    row = conn.execute("SELECT dev_eui FROM sessions WHERE dev_addr = ?", (str(addr),)).fetchone()
    if row:
        raise RegistryError(f"McAddr {addr} is the DevAddr of device {row[0]}")


def remove_group(conn: sqlite3.Connection, name: str) -> None:
    """Forget a group and its members (the devices stay registered); RegistryError if unknown. Its
    counter is kept by tag (``multicast_retired``) for a group created again with the same keys."""
    with transaction(conn):
        row = conn.execute("SELECT tag, fcnt_down FROM multicast_groups WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise RegistryError(f"no multicast group named {name}")
        conn.execute(
            "INSERT INTO multicast_retired (tag, fcnt_down) VALUES (?, ?)"
            " ON CONFLICT (tag) DO UPDATE SET fcnt_down = max(fcnt_down, excluded.fcnt_down)",
            row,
        )
        conn.execute("DELETE FROM multicast_groups WHERE name = ?", (name,))


def add_member(conn: sqlite3.Connection, name: str, dev_eui: DevEui) -> GroupInfo:
    """Add a registered class C device to a group. RegistryError when the group or the device is
    unknown, the device is not class C, or its profile differs from the other members' (one command is
    encoded once for all of them)."""
    return add_members(conn, name, [dev_eui])


def add_members(conn: sqlite3.Connection, name: str, dev_euis: Sequence[DevEui]) -> GroupInfo:
    """``add_member`` for several devices in one transaction: all of them, or none when one is refused
    (an installer who fixes the list and runs it again must not guess what the first run changed)."""
    with transaction(conn):
        group = get_group(conn, name)
        profile_of_group = group.profile
        for dev_eui in dev_euis:
            row = conn.execute(
                "SELECT profile, lorawan_class FROM devices WHERE dev_eui = ?", (str(dev_eui),)
            ).fetchone()
            if row is None:
                raise RegistryError(f"device {dev_eui} is not registered")
            profile, lorawan_class = row
            if lorawan_class != "C":
                raise RegistryError(
                    f"device {dev_eui} is class {lorawan_class or 'A'}: only class C devices receive "
                    "multicast frames at any time (edgegw device set --class C first)"
                )
            if profile_of_group is not None and profile != profile_of_group:
                raise RegistryError(
                    f"device {dev_eui} has profile {profile}, the members of group {name} have "
                    f"{profile_of_group}: a group command is encoded once, with one profile"
                )
            profile_of_group = profile
            conn.execute(
                "INSERT OR IGNORE INTO multicast_members (group_name, dev_eui) VALUES (?, ?)",
                (name, str(dev_eui)),
            )
    return get_group(conn, name)


def remove_member(conn: sqlite3.Connection, name: str, dev_eui: DevEui) -> GroupInfo:
    return remove_members(conn, name, [dev_eui])


def remove_members(conn: sqlite3.Connection, name: str, dev_euis: Sequence[DevEui]) -> GroupInfo:
    """Remove devices from a group in one transaction: all of them, or none when one is not a member."""
    with transaction(conn):
        get_group(conn, name)
        for dev_eui in dev_euis:
            cur = conn.execute(
                "DELETE FROM multicast_members WHERE group_name = ? AND dev_eui = ?", (name, str(dev_eui))
            )
            if cur.rowcount == 0:
                raise RegistryError(f"device {dev_eui} is not a member of group {name}")
    return get_group(conn, name)


_SELECT = "SELECT name, mc_addr, dr, freq_hz, fcnt_down, created_at FROM multicast_groups"


def get_group(conn: sqlite3.Connection, name: str) -> GroupInfo:
    row = conn.execute(_SELECT + " WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise RegistryError(f"no multicast group named {name}")
    return _info(conn, row)


def list_groups(conn: sqlite3.Connection) -> list[GroupInfo]:
    return [_info(conn, row) for row in conn.execute(_SELECT + " ORDER BY name").fetchall()]


def _info(conn: sqlite3.Connection, row: tuple[Any, ...]) -> GroupInfo:
    name, mc_addr, dr, freq_hz, fcnt_down, created_at = row
    members = conn.execute(
        "SELECT m.dev_eui, d.profile, d.lorawan_class FROM multicast_members m"
        " JOIN devices d ON d.dev_eui = m.dev_eui WHERE m.group_name = ? ORDER BY m.dev_eui",
        (name,),
    ).fetchall()
    return GroupInfo(
        name=name,
        mc_addr=DevAddr.from_hex(mc_addr),
        dr=dr,
        freq_hz=freq_hz,
        fcnt_down=fcnt_down,
        created_at=created_at,
        members=tuple(eui for eui, _, _ in members),
        profile=members[0][1] if members else None,
        not_class_c=tuple(eui for eui, _, lorawan_class in members if lorawan_class != "C"),
    )


def group_keys(conn: sqlite3.Connection, name: str, keystore: KeyStore | None = None) -> dict[str, str]:
    """McNwkSKey and McAppSKey as hex, for commands explicitly asked to show them."""
    row = conn.execute("SELECT nwk_s_key, app_s_key FROM multicast_groups WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise RegistryError(f"no multicast group named {name}")
    keys = {"mc_nwk_s_key": row[0], "mc_app_s_key": row[1]}
    for key, value in keys.items():
        if KeyStore.is_encrypted(value):
            if keystore is None:
                raise RegistryError(f"keys of group {name} are encrypted: a key store is needed to read them")
            keys[key] = keystore.decrypt_hex(value)
    return keys


def load_groups(conn: sqlite3.Connection, decrypt: Callable[[str], str]) -> list[McGroup]:
    """Every group with its keys in clear and its members, for the running agent (database thread)."""
    groups = []
    rows = conn.execute(
        "SELECT name, mc_addr, nwk_s_key, app_s_key, dr, freq_hz, fcnt_down FROM multicast_groups"
        " ORDER BY name"
    ).fetchall()
    for name, mc_addr, nwk, app, dr, freq_hz, fcnt_down in rows:
        info = _info(conn, (name, mc_addr, dr, freq_hz, fcnt_down, ""))
        groups.append(
            McGroup(
                name=name,
                mc_addr=info.mc_addr,
                nwk_s_key=AesKey.from_hex(decrypt(nwk)),
                app_s_key=AesKey.from_hex(decrypt(app)),
                fcnt_down=fcnt_down,
                dr=dr,
                freq_hz=freq_hz,
                profile=info.profile,
                members=info.members,
            )
        )
    return groups


def reseal(conn: sqlite3.Connection, keystore: KeyStore) -> int:
    """Encrypt the groups' plain-hex keys under ``keystore`` (``edgegw device rekey``, after the
    devices' keys); returns how many values changed."""
    changed = 0
    with transaction(conn):
        for column in ("nwk_s_key", "app_s_key"):
            for name, value in conn.execute(f"SELECT name, {column} FROM multicast_groups").fetchall():
                if KeyStore.is_encrypted(value):
                    continue
                conn.execute(
                    f"UPDATE multicast_groups SET {column} = ? WHERE name = ?",
                    (keystore.encrypt_hex(value), name),
                )
                changed += 1
    return changed


def _plain(hex_text: str) -> str:
    return hex_text
