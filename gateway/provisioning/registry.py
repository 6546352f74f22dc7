"""The device registry: which devices this gateway serves, with their profile and keys.

Owns the ``devices`` table (keys, site, position, installation parameters, LoRaWAN class) and
the creation of ABP sessions at registration (an ABP device's session is fixed by
its keys; an OTAA device gets one at each join, issue 3). Synchronous on purpose:
it is driven by the CLI on a stopped or running agent (SQLite WAL lets both work
on one file). Keys are returned only by ``device_keys``, for commands explicitly
asked to show them. Key columns are encrypted when a ``KeyStore`` with a key file
is passed (``gateway.provisioning.keystore``); readers accept plain and encrypted.
It does not own CSV files or QR codes (``csv_import``, ``qr``).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.db import transaction
from gateway.errors import RegistryError
from gateway.lorawan.sessions import session_tag
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui
from gateway.provisioning.keystore import KeyStore

Activation = Literal["abp", "otaa"]
DeviceClass = Literal["A", "C"]
"""LoRaWAN class: A (downlinks only after an uplink) or C (listening on RX2: downlinks at once).
Class B is not served."""
CLASSES: tuple[DeviceClass, ...] = ("A", "C")
MAC_VERSIONS: tuple[str, ...] = ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4")
"""LoRaWAN MAC versions a device may be registered with (``mac_version``; LoRaWAN 1.1 is not served)."""
ParamValue = float | str
"""An installation parameter: a number (``empty_distance_mm``) or a short text (``lamp_group``)."""

_PARAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_PARAM_TEXT_MAX = 64
# A parameter whose name ends in a unit is a number: "18OO" for empty_distance_mm is a typo, not text.
_UNIT_SUFFIXES = (
    "_mm",
    "_cm",
    "_m",
    "_km",
    "_s",
    "_ms",
    "_min",
    "_h",
    "_pct",
    "_deg",
    "_c",
    "_hz",
    "_db",
    "_v",
)


def format_param(value: ParamValue) -> str:
    """A parameter as people write it (1800, not 1800.0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def generate_app_key() -> AesKey:
    """A fresh OTAA AppKey from the operating system's CSPRNG (``secrets``)."""
    return AesKey(secrets.token_bytes(AesKey.SIZE))


def parse_param(text: str) -> tuple[str, ParamValue]:
    """``name=value`` → (name, number or text); ValueError with a readable reason."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep:
        raise ValueError(f"expected name=value, got {text!r}")
    return check_param(name, raw)


def check_param(name: str, raw: str) -> tuple[str, ParamValue]:
    if not _PARAM_NAME.fullmatch(name):
        raise ValueError(f"parameter name {name!r} must be lowercase snake_case (a-z, 0-9, _), <= 40 chars")
    if raw == "":
        raise ValueError(f"parameter {name} has an empty value")
    try:
        number = float(raw)
    except ValueError:
        if name.endswith(_UNIT_SUFFIXES):
            raise ValueError(
                f"parameter {name} must be a number (its name carries a unit), got {raw!r}"
            ) from None
        if len(raw) > _PARAM_TEXT_MAX:
            raise ValueError(f"parameter {name} is longer than {_PARAM_TEXT_MAX} characters") from None
        return name, raw
    if not math.isfinite(number):
        raise ValueError(f"parameter {name} must be a finite number, got {raw!r}")
    return name, number


def check_class(text: str, profile_classes: tuple[str, ...] | None = None) -> DeviceClass:
    """``"A"``/``"c"`` → the class; ValueError when it is not one we serve, or (given the profile's
    ``lorawan.classes``) one the device's profile does not declare."""
    wanted = text.strip().upper()
    for known in CLASSES:
        if wanted == known:
            if profile_classes is not None and known not in profile_classes:
                raise ValueError(
                    f"class {known} is not one of the profile's classes ({', '.join(profile_classes)})"
                )
            return known
    raise ValueError(f"class must be one of {', '.join(CLASSES)}, got {text!r}")


def default_class(profile_classes: tuple[str, ...]) -> DeviceClass:
    """The class of a device registered without one: its profile's first that we serve (A if none)."""
    for declared in profile_classes:
        if declared in CLASSES:
            return check_class(declared)
    return "A"


def check_mac_version(text: str) -> str:
    """``"1.0.4"`` → itself; ValueError for a version we do not serve. A 1.0.4 device counts its
    DevNonces up (the join server refuses one not above its last); earlier ones pick them at random."""
    wanted = text.strip()
    if wanted not in MAC_VERSIONS:
        raise ValueError(f"MAC version must be one of {', '.join(MAC_VERSIONS)}, got {text!r}")
    return wanted


_GATEWAY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A gateway id as ``gateway.id`` takes it (gateway.config): what ``home_gateway`` names."""


def check_home(text: str) -> str | None:
    """``--home`` / the ``home_gateway`` cell: a gateway id, or None for "" (no home named: every
    gateway that has the device answers it, as before issue 21); ValueError otherwise."""
    wanted = text.strip()
    if not wanted:
        return None
    if not _GATEWAY_ID.fullmatch(wanted):
        raise ValueError(f"home gateway must be a gateway id (letters, digits, '-', '_'), got {text!r}")
    return wanted


def check_position(lat: float | None, lon: float | None) -> None:
    if (lat is None) != (lon is None):
        raise ValueError("give both --lat and --lon, or neither")
    if lat is not None and not -90.0 <= lat <= 90.0:
        raise ValueError(f"latitude {lat} is outside -90..90")
    if lon is not None and not -180.0 <= lon <= 180.0:
        raise ValueError(f"longitude {lon} is outside -180..180")


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
    lat: float | None = None
    lon: float | None = None
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    join_eui: JoinEui | None = None
    lorawan_class: DeviceClass = "A"
    """A for a row written before the class was recorded (an older agent gave every device class A)."""
    adr: bool = True
    """Network-side ADR for this device (``gateway.lorawan.adr``); off: never sent a LinkADRReq.
    On for a row written before the choice was recorded."""
    mac_version: str | None = None
    """LoRaWAN MAC version when it is not the profile's (``MAC_VERSIONS``); None: the profile's."""
    home_gateway: str | None = None
    """The gateway that answers the device where several hear it (``gateway.roles``); None: no home
    named, every gateway that has it answers it (one gateway: this one)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "dev_eui": str(self.dev_eui),
            "profile": self.profile,
            "activation": self.activation,
            "site": self.site,
            "dev_addr": str(self.dev_addr) if self.dev_addr else None,
            "fcnt_up": self.fcnt_up,
            "created_at": self.created_at,
            "join_eui": str(self.join_eui) if self.join_eui else None,
            "lat": self.lat,
            "lon": self.lon,
            "params": dict(self.params),
            "class": self.lorawan_class,
            "adr": self.adr,
            "mac_version": self.mac_version,
            "home": self.home_gateway,
        }


def add_device(
    conn: sqlite3.Connection,
    *,
    dev_eui: DevEui,
    profile: str,
    keys: AbpKeys | OtaaKeys,
    site: str = "",
    lat: float | None = None,
    lon: float | None = None,
    params: Mapping[str, ParamValue] | None = None,
    now: datetime | None = None,
    keystore: KeyStore | None = None,
    lorawan_class: DeviceClass = "A",
    adr: bool = True,
    mac_version: str | None = None,
    home_gateway: str | None = None,
) -> Device:
    """Register a device (and its ABP session); RegistryError if the DevEUI is known.

    ``lorawan_class`` is not checked against the profile here (the registry does not read
    profiles): the CLI and the CSV import do (``check_class``, ``default_class``)."""
    with transaction(conn):
        insert_device(
            conn,
            dev_eui=dev_eui,
            profile=profile,
            keys=keys,
            site=site,
            lat=lat,
            lon=lon,
            params=params,
            now=now,
            keystore=keystore,
            lorawan_class=lorawan_class,
            adr=adr,
            mac_version=mac_version,
            home_gateway=home_gateway,
        )
    return get_device(conn, dev_eui)


def insert_device(
    conn: sqlite3.Connection,
    *,
    dev_eui: DevEui,
    profile: str,
    keys: AbpKeys | OtaaKeys,
    site: str = "",
    lat: float | None = None,
    lon: float | None = None,
    params: Mapping[str, ParamValue] | None = None,
    now: datetime | None = None,
    keystore: KeyStore | None = None,
    lorawan_class: DeviceClass = "A",
    adr: bool = True,
    mac_version: str | None = None,
    home_gateway: str | None = None,
) -> None:
    """The inserts of ``add_device`` inside the caller's transaction (batch import)."""
    try:
        check_position(lat, lon)
    except ValueError as exc:
        raise RegistryError(str(exc)) from exc
    created_at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    seal = keystore.encrypt_hex if keystore is not None else _plain
    params_json = json.dumps(dict(params or {}), sort_keys=True)
    if conn.execute("SELECT 1 FROM devices WHERE dev_eui = ?", (str(dev_eui),)).fetchone():
        raise RegistryError(f"device {dev_eui} is already registered (remove it first to change its keys)")
    if isinstance(keys, AbpKeys):
        clash = conn.execute(
            "SELECT dev_eui FROM sessions WHERE dev_addr = ?", (str(keys.dev_addr),)
        ).fetchone()
        if clash:
            raise RegistryError(f"DevAddr {keys.dev_addr} is already used by device {clash[0]}")
        conn.execute(
            "INSERT INTO devices"
            " (dev_eui, profile, activation, site, lat, lon, params, created_at, lorawan_class, adr)"
            " VALUES (?, ?, 'abp', ?, ?, ?, ?, ?, ?, ?)",
            (str(dev_eui), profile, site, lat, lon, params_json, created_at, lorawan_class, int(adr)),
        )
        conn.execute(
            "INSERT INTO sessions"
            " (dev_eui, dev_addr, nwk_s_key, app_s_key, session_tag, fcnt_up, created_at)"
            " VALUES (?, ?, ?, ?, ?, NULL, ?)",
            (
                str(dev_eui),
                str(keys.dev_addr),
                seal(keys.nwk_s_key.reveal()),
                seal(keys.app_s_key.reveal()),
                session_tag(keys.dev_addr, keys.nwk_s_key),
                created_at,
            ),
        )
    else:
        conn.execute(
            "INSERT INTO devices"
            " (dev_eui, profile, activation, join_eui, app_key, site, lat, lon, params, created_at,"
            " lorawan_class, adr)"
            " VALUES (?, ?, 'otaa', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(dev_eui),
                profile,
                str(keys.join_eui),
                seal(keys.app_key.reveal()),
                site,
                lat,
                lon,
                params_json,
                created_at,
                lorawan_class,
                int(adr),
            ),
        )
    if mac_version is not None:
        _set_mac_version(conn, dev_eui, mac_version)
    if home_gateway is not None:
        _set_home(conn, dev_eui, home_gateway)


def _set_home(conn: sqlite3.Connection, dev_eui: DevEui, home_gateway: str) -> None:
    """The device's home gateway ("": none named); RegistryError for what is no gateway id."""
    try:
        value = check_home(home_gateway)
    except ValueError as exc:
        raise RegistryError(str(exc)) from exc
    conn.execute("UPDATE devices SET home_gateway = ? WHERE dev_eui = ?", (value, str(dev_eui)))


def _set_mac_version(conn: sqlite3.Connection, dev_eui: DevEui, mac_version: str) -> None:
    """The device's MAC version ("": back to its profile's); RegistryError for one not served."""
    try:
        value = check_mac_version(mac_version) if mac_version else None
    except ValueError as exc:
        raise RegistryError(str(exc)) from exc
    conn.execute("UPDATE devices SET mac_version = ? WHERE dev_eui = ?", (value, str(dev_eui)))


def update_installation(
    conn: sqlite3.Connection,
    dev_eui: DevEui,
    *,
    site: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    set_params: Mapping[str, ParamValue] | None = None,
    unset_params: tuple[str, ...] = (),
    keystore: KeyStore | None = None,
    lorawan_class: DeviceClass | None = None,
    adr: bool | None = None,
    mac_version: str | None = None,
    home_gateway: str | None = None,
) -> Device:
    """Change a device's site, position, parameters (merged), class, ADR, MAC version or home gateway
    (``home_gateway`` "": none named); RegistryError if unknown.

    A write is also when a device's plain-hex keys get encrypted, if a key file exists.
    """
    try:
        check_position(lat, lon)
    except ValueError as exc:
        raise RegistryError(str(exc)) from exc
    with transaction(conn):
        current = get_device(conn, dev_eui)
        params = dict(current.params)
        for name in unset_params:
            if name not in params:
                raise RegistryError(f"device {dev_eui} has no parameter {name!r}")
            del params[name]
        params.update(set_params or {})
        if mac_version is not None:  # "": back to the profile's
            _set_mac_version(conn, dev_eui, mac_version)
        if home_gateway is not None:  # "": no home named
            _set_home(conn, dev_eui, home_gateway)
        if adr is not None:
            conn.execute("UPDATE devices SET adr = ? WHERE dev_eui = ?", (int(adr), str(dev_eui)))
        conn.execute(
            "UPDATE devices SET site = ?, lat = ?, lon = ?, params = ?, lorawan_class = ? WHERE dev_eui = ?",
            (
                current.site if site is None else site,
                current.lat if lat is None else lat,
                current.lon if lon is None else lon,
                json.dumps(params, sort_keys=True),
                current.lorawan_class if lorawan_class is None else lorawan_class,
                str(dev_eui),
            ),
        )
        if keystore is not None and keystore.enabled:
            _reseal(conn, keystore, dev_eui=str(dev_eui))
    return get_device(conn, dev_eui)


def rekey(conn: sqlite3.Connection, keystore: KeyStore) -> int:
    """Encrypt every plain-hex key column under ``keystore``; returns how many values changed."""
    if not keystore.enabled:
        raise RegistryError("rekey needs a key file")
    with transaction(conn):
        changed = _reseal(conn, keystore, dev_eui=None)
    return changed


def _reseal(conn: sqlite3.Connection, keystore: KeyStore, *, dev_eui: str | None) -> int:
    where, args = (" WHERE dev_eui = ?", (dev_eui,)) if dev_eui else ("", ())
    changed = 0
    for table, columns in (("devices", ("app_key",)), ("sessions", ("nwk_s_key", "app_s_key"))):
        for column in columns:
            rows = conn.execute(f"SELECT dev_eui, {column} FROM {table}{where}", args).fetchall()
            for eui, value in rows:
                if value is None or KeyStore.is_encrypted(value):
                    continue
                conn.execute(
                    f"UPDATE {table} SET {column} = ? WHERE dev_eui = ?",
                    (keystore.encrypt_hex(value), eui),
                )
                changed += 1
    return changed


def _plain(hex_text: str) -> str:
    return hex_text


def remove_device(conn: sqlite3.Connection, dev_eui: DevEui) -> None:
    """Forget a device and its session; RegistryError if unknown."""
    cur = conn.execute("DELETE FROM devices WHERE dev_eui = ?", (str(dev_eui),))
    if cur.rowcount == 0:
        raise RegistryError(f"device {dev_eui} is not registered")


_SELECT = (
    "SELECT d.dev_eui, d.profile, d.activation, d.site, d.created_at, s.dev_addr, s.fcnt_up,"
    " d.lat, d.lon, d.params, d.join_eui, d.lorawan_class, d.adr, d.mac_version, d.home_gateway"
    " FROM devices d LEFT JOIN sessions s ON s.dev_eui = d.dev_eui"
)


def get_device(conn: sqlite3.Connection, dev_eui: DevEui) -> Device:
    row = conn.execute(_SELECT + " WHERE d.dev_eui = ?", (str(dev_eui),)).fetchone()
    if row is None:
        raise RegistryError(f"device {dev_eui} is not registered")
    return _device(row)


def list_devices(conn: sqlite3.Connection) -> list[Device]:
    return [_device(row) for row in conn.execute(_SELECT + " ORDER BY d.dev_eui")]


def device_params(conn: sqlite3.Connection) -> dict[str, dict[str, ParamValue]]:
    """Installation parameters of every device that has some: DevEUI hex → name → value.

    What the pipeline passes to ``Profile.decode(..., params=...)``.
    """
    out: dict[str, dict[str, ParamValue]] = {}
    for dev_eui, text in conn.execute("SELECT dev_eui, params FROM devices WHERE params != '{}'"):
        params = _load_params(text)
        if params:
            out[dev_eui] = params
    return out


def device_keys(
    conn: sqlite3.Connection, dev_eui: DevEui, keystore: KeyStore | None = None
) -> dict[str, str]:
    """The device's keys as hex, for commands explicitly asked to show them."""
    row = conn.execute(
        "SELECT d.join_eui, d.app_key, s.nwk_s_key, s.app_s_key FROM devices d"
        " LEFT JOIN sessions s ON s.dev_eui = d.dev_eui WHERE d.dev_eui = ?",
        (str(dev_eui),),
    ).fetchone()
    if row is None:
        raise RegistryError(f"device {dev_eui} is not registered")
    names = ("join_eui", "app_key", "nwk_s_key", "app_s_key")
    keys = {name: value for name, value in zip(names, row, strict=True) if value is not None}
    for name in ("app_key", "nwk_s_key", "app_s_key"):
        if name in keys and KeyStore.is_encrypted(keys[name]):
            if keystore is None:
                raise RegistryError(f"keys of {dev_eui} are encrypted: a key store is needed to read them")
            keys[name] = keystore.decrypt_hex(keys[name])
    return keys


def _load_params(text: str | None) -> dict[str, ParamValue]:
    try:
        loaded = json.loads(text or "{}")
    except ValueError:
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(k): v for k, v in loaded.items() if isinstance(v, int | float | str)}


def _device(row: tuple[Any, ...]) -> Device:
    dev_eui, profile, activation, site, created_at, dev_addr, fcnt_up, lat, lon, params, join_eui = row[:11]
    cls, adr = row[11:13]
    mac_version, home_gateway = row[13:15]
    return Device(
        dev_eui=DevEui.from_hex(dev_eui),
        profile=profile,
        activation=activation,
        site=site,
        created_at=created_at,
        dev_addr=DevAddr.from_hex(dev_addr) if dev_addr else None,
        fcnt_up=fcnt_up,
        lat=lat,
        lon=lon,
        params=_load_params(params),
        join_eui=JoinEui.from_hex(join_eui) if join_eui else None,
        lorawan_class="C" if cls == "C" else "A",
        adr=adr != 0,  # NULL: registered before the choice was recorded: on
        mac_version=mac_version,
        home_gateway=home_gateway,
    )
