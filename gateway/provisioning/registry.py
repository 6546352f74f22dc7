"""The device registry: which devices this gateway serves, with their profile and keys.

Owns the ``devices`` table and the creation of ABP sessions at registration (an
ABP device's session is fixed by its keys; an OTAA device gets one at each join,
issue 3). Synchronous on purpose: it is driven by the CLI on a stopped or running
agent (SQLite WAL lets both work on one file). Keys are never returned unless
``reveal_keys`` is asked for.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.errors import RegistryError
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui

Activation = Literal["abp", "otaa"]


@dataclass(frozen=True, slots=True)
class AbpKeys:
    dev_addr: DevAddr
    nwk_s_key: AesKey
    app_s_key: AesKey


@dataclass(frozen=True, slots=True)
class OtaaKeys:
    join_eui: JoinEui
    app_key: AesKey


@dataclass(frozen=True, slots=True)
class Device:
    dev_eui: DevEui
    profile: str
    activation: Activation
    site: str
    created_at: str
    dev_addr: DevAddr | None
    fcnt_up: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "dev_eui": str(self.dev_eui),
            "profile": self.profile,
            "activation": self.activation,
            "site": self.site,
            "dev_addr": str(self.dev_addr) if self.dev_addr else None,
            "fcnt_up": self.fcnt_up,
            "created_at": self.created_at,
        }


def session_tag(dev_addr: DevAddr, nwk_s_key: AesKey) -> str:
    """A short tag that changes with every session of a device (new DevAddr or keys).

    Part of record ids (ARCHITECTURE.md §3.4): the same frame always gets the same
    id, and a device that restarts its counters in a new session gets new ids.
    Derived by a one-way hash, 32 bits of which reveal nothing usable about the key.
    """
    digest = hashlib.sha256(b"edgegw-session" + dev_addr.value + nwk_s_key.value).digest()
    return digest[:4].hex()


def add_device(
    conn: sqlite3.Connection,
    *,
    dev_eui: DevEui,
    profile: str,
    keys: AbpKeys | OtaaKeys,
    site: str = "",
    now: datetime | None = None,
) -> Device:
    """Register a device (and its ABP session); RegistryError if the DevEUI is known."""
    created_at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT 1 FROM devices WHERE dev_eui = ?", (str(dev_eui),)).fetchone():
            raise RegistryError(
                f"device {dev_eui} is already registered (remove it first to change its keys)"
            )
        if isinstance(keys, AbpKeys):
            clash = conn.execute(
                "SELECT dev_eui FROM sessions WHERE dev_addr = ?", (str(keys.dev_addr),)
            ).fetchone()
            if clash:
                raise RegistryError(f"DevAddr {keys.dev_addr} is already used by device {clash[0]}")
            conn.execute(
                "INSERT INTO devices (dev_eui, profile, activation, site, created_at)"
                " VALUES (?, ?, 'abp', ?, ?)",
                (str(dev_eui), profile, site, created_at),
            )
            conn.execute(
                "INSERT INTO sessions"
                " (dev_eui, dev_addr, nwk_s_key, app_s_key, session_tag, fcnt_up, created_at)"
                " VALUES (?, ?, ?, ?, ?, NULL, ?)",
                (
                    str(dev_eui),
                    str(keys.dev_addr),
                    keys.nwk_s_key.reveal(),
                    keys.app_s_key.reveal(),
                    session_tag(keys.dev_addr, keys.nwk_s_key),
                    created_at,
                ),
            )
        else:
            conn.execute(
                "INSERT INTO devices (dev_eui, profile, activation, join_eui, app_key, site, created_at)"
                " VALUES (?, ?, 'otaa', ?, ?, ?, ?)",
                (str(dev_eui), profile, str(keys.join_eui), keys.app_key.reveal(), site, created_at),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return get_device(conn, dev_eui)


def remove_device(conn: sqlite3.Connection, dev_eui: DevEui) -> None:
    """Forget a device and its session; RegistryError if unknown."""
    cur = conn.execute("DELETE FROM devices WHERE dev_eui = ?", (str(dev_eui),))
    if cur.rowcount == 0:
        raise RegistryError(f"device {dev_eui} is not registered")


_SELECT = (
    "SELECT d.dev_eui, d.profile, d.activation, d.site, d.created_at, s.dev_addr, s.fcnt_up"
    " FROM devices d LEFT JOIN sessions s ON s.dev_eui = d.dev_eui"
)


def get_device(conn: sqlite3.Connection, dev_eui: DevEui) -> Device:
    row = conn.execute(_SELECT + " WHERE d.dev_eui = ?", (str(dev_eui),)).fetchone()
    if row is None:
        raise RegistryError(f"device {dev_eui} is not registered")
    return _device(row)


def list_devices(conn: sqlite3.Connection) -> list[Device]:
    return [_device(row) for row in conn.execute(_SELECT + " ORDER BY d.dev_eui")]


def device_keys(conn: sqlite3.Connection, dev_eui: DevEui) -> dict[str, str]:
    """The device's keys as hex, for commands explicitly asked to show them."""
    row = conn.execute(
        "SELECT d.join_eui, d.app_key, s.nwk_s_key, s.app_s_key FROM devices d"
        " LEFT JOIN sessions s ON s.dev_eui = d.dev_eui WHERE d.dev_eui = ?",
        (str(dev_eui),),
    ).fetchone()
    if row is None:
        raise RegistryError(f"device {dev_eui} is not registered")
    names = ("join_eui", "app_key", "nwk_s_key", "app_s_key")
    return {name: value for name, value in zip(names, row, strict=True) if value is not None}


def _device(row: tuple[Any, ...]) -> Device:
    dev_eui, profile, activation, site, created_at, dev_addr, fcnt_up = row
    return Device(
        dev_eui=DevEui.from_hex(dev_eui),
        profile=profile,
        activation=activation,
        site=site,
        created_at=created_at,
        dev_addr=DevAddr.from_hex(dev_addr) if dev_addr else None,
        fcnt_up=fcnt_up,
    )
