"""Batch registration from CSV, and export of the registry: what an installer's spreadsheet holds.

Owns the CSV format (columns below), the validation of every line before anything
is written, and the all-or-nothing import (one transaction). It does not own the
``devices`` table (``registry``), the parameter checks (``parameters``) nor where the
profiles come from (the caller passes them).

Separator: ``,``, or ``;`` when the header row has semicolons and no comma (Excel saves CSV
with the locale's list separator: ``;`` in French, where the decimal separator is the comma;
so in a ``;`` file a number cell may write ``43,52`` for 43.52). The file is read, not refused.

Columns (header row required, order free, ``#`` lines and blank lines ignored)::

    dev_eui      16 hex digits (required)
    profile      vendor/model id of a device profile (required)
    activation   abp | otaa (required)
    join_eui     OTAA: 16 hex digits (required for otaa)
    app_key      OTAA: 32 hex digits; empty = generate one (CSPRNG) for a new device, keep for a known one
    dev_addr     ABP: 8 hex digits
    nwk_s_key    ABP: 32 hex digits
    app_s_key    ABP: 32 hex digits
    site         free text (optional)
    lat, lon     WGS84 degrees (optional, both or neither)
    class        LoRaWAN class, A or C (optional): empty = the profile's first class for a new
                 device, keep for a known one; C is refused for a profile that does not declare it
    adr          network-side ADR, on or off (optional): empty = on for a new device, keep for a
                 known one
    mac_version  LoRaWAN MAC version when it is not the profile's, 1.0.0..1.0.4 (optional): empty =
                 the profile's for a new device, keep for a known one; ``profile`` = back to the
                 profile's. A 1.0.4 device's DevNonces must count up (LoRaWAN 1.0.4 §6.2.5)
    home_gateway the gateway id that answers the device where several hear it (optional): empty =
                 none named for a new device (every gateway that has it answers it), keep for a
                 known one; ``none`` = no home named any more (docs/fleet.md)
    param.NAME   one column per installation parameter (number or text), e.g. param.empty_distance_mm;
                 checked against the line's profile when the caller passes the profiles:
                 declared name, bounds, ``less_than``, every required one present

A key cell that is not a key is refused with the expected length, never echoed.
Re-importing a line that is already registered with the same keys changes nothing;
non-empty site/position/parameter cells update the device; a different key,
activation or profile is an error (remove the device first).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway import textfile
from gateway.codec.profile import Profile
from gateway.db import transaction
from gateway.errors import NotUtf8, RegistryError
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui
from gateway.provisioning import hexinput, parameters, registry
from gateway.provisioning.keystore import KeyStore

KEY_COLUMNS = ("app_key", "nwk_s_key", "app_s_key")
COLUMNS = (
    "dev_eui",
    "profile",
    "activation",
    "join_eui",
    "app_key",
    "dev_addr",
    "nwk_s_key",
    "app_s_key",
    "site",
    "lat",
    "lon",
    "class",
    "adr",
    "mac_version",
    "home_gateway",
)
REQUIRED = ("dev_eui", "profile", "activation")
PARAM_PREFIX = "param."
_ABP_ONLY = ("dev_addr", "nwk_s_key", "app_s_key")
_OTAA_ONLY = ("join_eui", "app_key")
# In a ';'-separated file (a French Excel) numbers are written with a decimal comma: "43,52".
_DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d+")


@dataclass(frozen=True, slots=True)
class LineError:
    """One problem, with the line of the file (1 = header) and the column when known."""

    line: int
    message: str
    column: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", {self.column}" if self.column else "")
        return f"{where}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "message": self.message}


class ImportFailed(RegistryError):
    """The file has errors; nothing was written. ``errors`` lists all of them."""

    def __init__(self, errors: list[LineError]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} error(s), nothing imported")


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One validated line; ``keys`` is None for an OTAA line with an empty app_key."""

    line: int
    dev_eui: DevEui
    profile: str
    activation: registry.Activation
    keys: registry.AbpKeys | registry.OtaaKeys | None
    join_eui: JoinEui | None
    site: str | None
    lat: float | None
    lon: float | None
    params: dict[str, registry.ParamValue] = field(default_factory=dict)
    lorawan_class: registry.DeviceClass | None = None
    """None: the cell was empty (a new device takes ``default_class``, a known one keeps its own)."""
    default_class: registry.DeviceClass = "A"
    """The line's profile's first class (A when the profiles were not given)."""
    adr: bool | None = None
    """None: the cell was empty (a new device has ADR on, a known one keeps its choice)."""
    mac_version: str | None = None
    """None: the cell was empty (keep); "": back to the profile's; else ``registry.MAC_VERSIONS``."""
    home_gateway: str | None = None
    """None: the cell was empty (keep); "": no home named (``none``); else a gateway id."""


@dataclass(slots=True)
class ImportResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    generated_app_keys: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "generated_app_keys": self.generated_app_keys,
        }


def read_csv(path: str | os.PathLike[str]) -> str:
    """The text of a CSV file: UTF-8, the byte-order mark spreadsheets add dropped.

    A sheet saved as Latin-1 ("CSV" rather than "CSV UTF-8") is ImportFailed with the line of the
    first byte that is not UTF-8; a file that cannot be read at all is a ConfigError naming it.
    """
    try:
        return textfile.read_text(path)
    except NotUtf8 as exc:
        reason = (
            exc.reason
            if exc.byte is None
            else f"not UTF-8 (byte 0x{exc.byte:02x} at column {exc.column}): save the sheet as CSV UTF-8"
        )
        raise ImportFailed([LineError(exc.line, reason)]) from exc


def separator(text: str) -> str:
    """``;`` when the header row (the first line that is neither blank nor a comment) has
    semicolons and no comma, else ``,``."""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        return ";" if ";" in line and "," not in line else ","
    return ","


def parse_csv(
    text: str, profile_ids: Collection[str], profiles: Mapping[str, Profile] | None = None
) -> list[DeviceRow]:
    """Validate every line of ``text``; ImportFailed listing all errors, else the rows.

    ``profiles`` (id → profile), when given, checks each line's installation parameters
    against its profile's declaration (``parameters.check``, the line being the device's
    whole installation: a required parameter must be there).
    """
    errors: list[LineError] = []
    delimiter = separator(text)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[DeviceRow] = []
    seen_eui: dict[str, int] = {}
    seen_addr: dict[str, int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if not record or all(cell.strip() == "" for cell in record) or record[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in record]
                errors.extend(_check_header(header, line))
                if errors:
                    raise ImportFailed(errors)
                continue
            if len(record) != len(header):
                errors.append(LineError(line, f"expected {len(header)} fields, got {len(record)}"))
                continue
            cells = {name: cell.strip() for name, cell in zip(header, record, strict=True)}
            if delimiter == ";":
                cells = {name: _decimal_point(name, cell) for name, cell in cells.items()}
            row, line_errors = _parse_row(line, cells, profile_ids, profiles)
            errors.extend(line_errors)
            if row is None:
                continue
            eui = str(row.dev_eui)
            if eui in seen_eui:
                errors.append(
                    LineError(line, f"duplicate DevEUI {eui} (first on line {seen_eui[eui]})", "dev_eui")
                )
                continue
            seen_eui[eui] = line
            if isinstance(row.keys, registry.AbpKeys):
                addr = str(row.keys.dev_addr)
                if addr in seen_addr:
                    errors.append(
                        LineError(
                            line, f"duplicate DevAddr {addr} (first on line {seen_addr[addr]})", "dev_addr"
                        )
                    )
                    continue
                seen_addr[addr] = line
            rows.append(row)
    except csv.Error as exc:
        errors.append(LineError(reader.line_num, f"malformed CSV: {exc}"))
    if header is None and not errors:
        errors.append(LineError(1, "the file is empty (a header row is required)"))
    if errors:
        raise ImportFailed(errors)
    return rows


def _decimal_point(column: str, cell: str) -> str:
    """``43,52`` → ``43.52`` in a number's column of a ``;`` file (lat, lon, parameters)."""
    if (column in ("lat", "lon") or column.startswith(PARAM_PREFIX)) and _DECIMAL_COMMA.fullmatch(cell):
        return cell.replace(",", ".")
    return cell


def _check_header(header: list[str], line: int) -> list[LineError]:
    errors = []
    for name in header:
        if name in COLUMNS:
            continue
        if name.startswith(PARAM_PREFIX):
            try:
                registry.check_param(name[len(PARAM_PREFIX) :], "0")
            except ValueError as exc:
                errors.append(LineError(line, str(exc), name))
            continue
        errors.append(
            LineError(line, f"unknown column {name!r} (known: {', '.join(COLUMNS)}, param.<name>)", name)
        )
    for name in REQUIRED:
        if name not in header:
            errors.append(LineError(line, f"missing required column {name!r}"))
    dupes = sorted({n for n in header if header.count(n) > 1})
    for name in dupes:
        errors.append(LineError(line, "column appears more than once", name))
    return errors


def _parse_row(
    line: int, cells: dict[str, str], profile_ids: Collection[str], profiles: Mapping[str, Profile] | None
) -> tuple[DeviceRow | None, list[LineError]]:
    errors: list[LineError] = []

    def hex_value(kind: type[Any], column: str, *, required: bool) -> Any:
        text = cells.get(column, "")
        if text == "":
            if required:
                errors.append(LineError(line, "is required here", column))
            return None
        try:
            return hexinput.parse(kind, text)
        except ValueError as exc:  # its wording says the length wanted and never echoes a key
            errors.append(LineError(line, str(exc), column))
            return None

    dev_eui = hex_value(DevEui, "dev_eui", required=True)
    profile = cells.get("profile", "")
    if profile not in profile_ids:
        errors.append(LineError(line, f"unknown profile {profile!r}", "profile"))
    activation = cells.get("activation", "").lower()
    keys: registry.AbpKeys | registry.OtaaKeys | None = None
    join_eui: JoinEui | None = None
    if activation == "abp":
        for column in _OTAA_ONLY:
            if cells.get(column):
                errors.append(LineError(line, "must be empty for an ABP device", column))
        addr = hex_value(DevAddr, "dev_addr", required=True)
        nwk = hex_value(AesKey, "nwk_s_key", required=True)
        app = hex_value(AesKey, "app_s_key", required=True)
        if addr is not None and nwk is not None and app is not None:
            keys = registry.AbpKeys(addr, nwk, app)
    elif activation == "otaa":
        for column in _ABP_ONLY:
            if cells.get(column):
                errors.append(LineError(line, "must be empty for an OTAA device", column))
        join_eui = hex_value(JoinEui, "join_eui", required=True)
        app_key = hex_value(AesKey, "app_key", required=False)
        if join_eui is not None and app_key is not None:
            keys = registry.OtaaKeys(join_eui, app_key)
    else:
        errors.append(LineError(line, f"must be abp or otaa, got {activation!r}", "activation"))
    lat = _float(cells.get("lat", ""), line, "lat", errors)
    lon = _float(cells.get("lon", ""), line, "lon", errors)
    if not any(e.column in ("lat", "lon") for e in errors):
        try:
            registry.check_position(lat, lon)
        except ValueError as exc:
            errors.append(LineError(line, str(exc), "lat"))
    params: dict[str, registry.ParamValue] = {}
    for column, text in cells.items():
        if column.startswith(PARAM_PREFIX) and text != "":
            try:
                name, value = registry.check_param(column[len(PARAM_PREFIX) :], text)
            except ValueError as exc:
                errors.append(LineError(line, str(exc), column))
                continue
            params[name] = value
    declared = profiles.get(profile) if profiles is not None else None
    lorawan_class: registry.DeviceClass | None = None
    if cells.get("class"):
        try:
            lorawan_class = registry.check_class(
                cells["class"], declared.lorawan.classes if declared is not None else None
            )
        except ValueError as exc:
            errors.append(LineError(line, str(exc), "class"))
    adr = _adr(cells.get("adr", ""), line, errors)
    mac_version = _mac_version(cells.get("mac_version", ""), line, errors)
    home_gateway = _home(cells.get("home_gateway", ""), line, errors)
    if declared is not None and not any(e.column and e.column.startswith(PARAM_PREFIX) for e in errors):
        errors.extend(
            LineError(line, problem.message, PARAM_PREFIX + problem.name)
            for problem in parameters.check(declared, params, complete=True)
        )
    if errors or dev_eui is None:
        return None, errors
    return (
        DeviceRow(
            line=line,
            dev_eui=dev_eui,
            profile=profile,
            activation="abp" if activation == "abp" else "otaa",
            keys=keys,
            join_eui=join_eui,
            site=cells.get("site") or None,
            lat=lat,
            lon=lon,
            params=params,
            lorawan_class=lorawan_class,
            default_class=registry.default_class(declared.lorawan.classes) if declared else "A",
            adr=adr,
            mac_version=mac_version,
            home_gateway=home_gateway,
        ),
        [],
    )


def _adr(text: str, line: int, errors: list[LineError]) -> bool | None:
    """The ``adr`` cell: on/off (None: empty)."""
    wanted = text.strip().lower()
    if wanted in ("on", "off"):
        return wanted == "on"
    if wanted:
        errors.append(LineError(line, f"must be on or off, got {text!r}", "adr"))
    return None


def _mac_version(text: str, line: int, errors: list[LineError]) -> str | None:
    """The ``mac_version`` cell: a version, "" for ``profile`` (back to the profile's), None: empty."""
    wanted = text.strip()
    if not wanted:
        return None
    if wanted.lower() == "profile":
        return ""
    try:
        return registry.check_mac_version(wanted)
    except ValueError as exc:
        errors.append(LineError(line, str(exc), "mac_version"))
        return None


def _home(text: str, line: int, errors: list[LineError]) -> str | None:
    """The ``home_gateway`` cell: a gateway id, "" for ``none`` (no home named), None: empty."""
    wanted = text.strip()
    if not wanted:
        return None
    if wanted.lower() == "none":
        return ""
    try:
        return registry.check_home(wanted)
    except ValueError as exc:
        errors.append(LineError(line, str(exc), "home_gateway"))
        return None


def _float(text: str, line: int, column: str, errors: list[LineError]) -> float | None:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        errors.append(LineError(line, f"must be a number, got {text!r}", column))
        return None


def import_devices(
    conn: sqlite3.Connection,
    rows: Iterable[DeviceRow],
    *,
    keystore: KeyStore | None = None,
    now: datetime | None = None,
) -> ImportResult:
    """Register ``rows`` in one transaction; ImportFailed (nothing written) on any conflict."""
    result = ImportResult()
    errors: list[LineError] = []
    with transaction(conn):  # ImportFailed rolls it all back: nothing half-written
        for row in rows:
            _apply(conn, row, result, errors, keystore, now)
        if errors:
            raise ImportFailed(errors)
    return result


def _apply(
    conn: sqlite3.Connection,
    row: DeviceRow,
    result: ImportResult,
    errors: list[LineError],
    keystore: KeyStore | None,
    now: datetime | None,
) -> None:
    eui = str(row.dev_eui)
    try:
        current = registry.get_device(conn, row.dev_eui)
    except RegistryError:
        current = None
    if current is None:
        keys = row.keys
        if keys is None:
            assert row.join_eui is not None  # parse_csv: OTAA lines always carry a JoinEUI
            keys = registry.OtaaKeys(row.join_eui, registry.generate_app_key())
            result.generated_app_keys += 1
        try:
            registry.insert_device(
                conn,
                dev_eui=row.dev_eui,
                profile=row.profile,
                keys=keys,
                site=row.site or "",
                lat=row.lat,
                lon=row.lon,
                params=row.params,
                now=now,
                keystore=keystore,
                lorawan_class=row.lorawan_class or row.default_class,
                adr=row.adr is not False,
                mac_version=row.mac_version or None,
                home_gateway=row.home_gateway or None,
            )
        except RegistryError as exc:
            errors.append(LineError(row.line, str(exc), "dev_addr" if "DevAddr" in str(exc) else "dev_eui"))
            return
        result.added.append(eui)
        return
    conflict = _conflict(conn, row, current, keystore)
    if conflict:
        errors.append(LineError(row.line, f"{eui} is already registered with {conflict} (remove it first)"))
        return
    site = row.site if row.site is not None else current.site
    lat = row.lat if row.lat is not None else current.lat
    lon = row.lon if row.lon is not None else current.lon
    params = {**current.params, **row.params}
    lorawan_class = row.lorawan_class or current.lorawan_class
    adr = current.adr if row.adr is None else row.adr
    mac_version = current.mac_version if row.mac_version is None else row.mac_version or None
    if mac_version != current.mac_version:
        conn.execute("UPDATE devices SET mac_version = ? WHERE dev_eui = ?", (mac_version, eui))
    home = current.home_gateway if row.home_gateway is None else row.home_gateway or None
    if home != current.home_gateway:
        conn.execute("UPDATE devices SET home_gateway = ? WHERE dev_eui = ?", (home, eui))
    if (site, lat, lon, params, lorawan_class, adr) == (
        current.site, current.lat, current.lon, dict(current.params), current.lorawan_class, current.adr
    ) and (mac_version, home) == (current.mac_version, current.home_gateway):  # fmt: skip
        result.unchanged.append(eui)
        return
    if adr != current.adr:
        conn.execute("UPDATE devices SET adr = ? WHERE dev_eui = ?", (int(adr), eui))
    conn.execute(
        "UPDATE devices SET site = ?, lat = ?, lon = ?, params = ?, lorawan_class = ? WHERE dev_eui = ?",
        (site, lat, lon, json.dumps(params, sort_keys=True), lorawan_class, eui),
    )
    result.updated.append(eui)


def _conflict(
    conn: sqlite3.Connection, row: DeviceRow, current: registry.Device, keystore: KeyStore | None
) -> str | None:
    if current.activation != row.activation:
        return f"activation {current.activation}"
    if current.profile != row.profile:
        return f"profile {current.profile}"
    have = registry.device_keys(conn, row.dev_eui, keystore)
    if isinstance(row.keys, registry.AbpKeys):
        if str(current.dev_addr) != str(row.keys.dev_addr):
            return f"DevAddr {current.dev_addr}"
        if (have.get("nwk_s_key"), have.get("app_s_key")) != (
            row.keys.nwk_s_key.reveal(),
            row.keys.app_s_key.reveal(),
        ):
            return "different session keys"
        return None
    if row.join_eui is not None and have.get("join_eui") != str(row.join_eui):
        return f"JoinEUI {have.get('join_eui')}"
    if isinstance(row.keys, registry.OtaaKeys) and have.get("app_key") != row.keys.app_key.reveal():
        return "a different AppKey"
    return None


def export_rows(
    conn: sqlite3.Connection, *, with_keys: bool, keystore: KeyStore | None = None
) -> list[dict[str, str]]:
    """The registry as CSV-ready rows (columns of this module); keys only when asked.

    The ``class`` column only when some device is class C: a registry of class A devices exports
    as it did before classes were recorded (a file older tools and scripts read); the ``adr``
    column likewise, only when some device has ADR off."""
    rows = []
    devices = registry.list_devices(conn)
    with_class = any(device.lorawan_class != "A" for device in devices)
    with_adr = any(not device.adr for device in devices)
    with_mac_version = any(device.mac_version for device in devices)
    with_home = any(device.home_gateway for device in devices)
    for device in devices:
        keys = registry.device_keys(conn, device.dev_eui, keystore) if with_keys else {}
        row = {
            "dev_eui": str(device.dev_eui),
            "profile": device.profile,
            "activation": device.activation,
            "join_eui": str(device.join_eui) if device.join_eui else "",
            "app_key": keys.get("app_key", ""),
            "dev_addr": str(device.dev_addr) if device.activation == "abp" and device.dev_addr else "",
            "nwk_s_key": keys.get("nwk_s_key", "") if device.activation == "abp" else "",
            "app_s_key": keys.get("app_s_key", "") if device.activation == "abp" else "",
            "site": device.site,
            "lat": "" if device.lat is None else repr(device.lat),
            "lon": "" if device.lon is None else repr(device.lon),
            "class": device.lorawan_class,
            "adr": "on" if device.adr else "off",
            "mac_version": device.mac_version or "",
            "home_gateway": device.home_gateway or "",
        }
        if not with_keys:
            for column in KEY_COLUMNS:
                del row[column]
        if not with_class:
            del row["class"]
        if not with_adr:
            del row["adr"]
        if not with_mac_version:  # as before the column, unless some device has its own version
            del row["mac_version"]
        if not with_home:  # likewise: a single-gateway registry exports as before issue 21
            del row["home_gateway"]
        for name, value in sorted(device.params.items()):
            row[PARAM_PREFIX + name] = registry.format_param(value)
        rows.append(row)
    return rows


def _has_class(rows: list[dict[str, str]]) -> bool:
    return any("class" in row for row in rows)


def to_csv(rows: list[dict[str, str]], *, with_keys: bool) -> str:
    with_class = _has_class(rows)
    with_adr = any("adr" in row for row in rows)
    with_mac_version = any("mac_version" in row for row in rows)
    with_home = any("home_gateway" in row for row in rows)
    columns = [
        c
        for c in COLUMNS
        if (with_keys or c not in KEY_COLUMNS)
        and (c != "class" or with_class)
        and (c != "adr" or with_adr)
        and (c != "mac_version" or with_mac_version)
        and (c != "home_gateway" or with_home)
    ]
    params = sorted({name for row in rows for name in row if name.startswith(PARAM_PREFIX)})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*columns, *params], restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
