"""``edgegw device add | list | remove``: the installer's device registry commands.

They open the agent's database directly (SQLite WAL lets the running agent and
this command share it); the agent serves a new device within
``gateway.app.SESSION_REFRESH_S`` seconds. Keys are printed only with ``--show-keys``.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway import config, db
from gateway.codec import ProfileStore, default_profiles_dir
from gateway.errors import RegistryError
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui
from gateway.provisioning import registry


def register(sub: Any) -> None:
    p = sub.add_parser("device", help="register, list and remove devices")
    p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="config file")
    dsub = p.add_subparsers(dest="device_command", metavar="ACTION", required=True)

    add = dsub.add_parser("add", help="register a device (ABP or OTAA)")
    add.add_argument("--dev-eui", required=True, metavar="HEX")
    add.add_argument("--profile", required=True, metavar="VENDOR/MODEL")
    add.add_argument("--site", default="", help="site tag (e.g. commune/street)")
    mode = add.add_mutually_exclusive_group(required=True)
    mode.add_argument("--abp", action="store_true", help="activation by personalisation")
    mode.add_argument(
        "--otaa", action="store_true", help="over-the-air activation (joins arrive with issue 3)"
    )
    add.add_argument("--dev-addr", metavar="HEX")
    add.add_argument("--nwkskey", metavar="HEX")
    add.add_argument("--appskey", metavar="HEX")
    add.add_argument("--join-eui", metavar="HEX")
    add.add_argument("--appkey", metavar="HEX")
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=add_device)

    ls = dsub.add_parser("list", help="list registered devices")
    ls.add_argument("--json", action="store_true")
    ls.add_argument(
        "--show-keys", action="store_true", help="also print the keys (handle the output with care)"
    )
    ls.set_defaults(handler=list_devices)

    rm = dsub.add_parser("remove", help="forget a device and its session")
    rm.add_argument("dev_eui", metavar="DEV_EUI")
    rm.set_defaults(handler=remove_device)


@contextlib.contextmanager
def _registry(args: argparse.Namespace) -> Iterator[tuple[config.Config, sqlite3.Connection]]:
    from gateway.cli.main import config_path

    cfg = config.load(config_path(args))
    conn = db.connect(db.db_path(cfg.data_dir))
    try:
        yield cfg, conn
    finally:
        conn.close()


def _value(kind: type[Any], text: str | None, option: str) -> Any:
    from gateway.cli.main import UsageError

    if text is None:
        raise UsageError(f"{option} is required here")
    try:
        return kind.from_hex(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from exc


def add_device(args: argparse.Namespace) -> int:
    from gateway.cli.main import UsageError, print_json

    dev_eui = _value(DevEui, args.dev_eui, "--dev-eui")
    keys: registry.AbpKeys | registry.OtaaKeys
    if args.abp:
        keys = registry.AbpKeys(
            dev_addr=_value(DevAddr, args.dev_addr, "--dev-addr"),
            nwk_s_key=_value(AesKey, args.nwkskey, "--nwkskey"),
            app_s_key=_value(AesKey, args.appskey, "--appskey"),
        )
    else:
        keys = registry.OtaaKeys(
            join_eui=_value(JoinEui, args.join_eui, "--join-eui"),
            app_key=_value(AesKey, args.appkey, "--appkey"),
        )
    with _registry(args) as (cfg, conn):
        profiles = ProfileStore.load_dir(
            Path(cfg.profiles_dir) if cfg.profiles_dir else default_profiles_dir()
        )
        if args.profile not in profiles:
            raise UsageError(
                f"--profile: unknown profile {args.profile!r} (known: {', '.join(profiles.ids())})"
            )
        try:
            device = registry.add_device(
                conn, dev_eui=dev_eui, profile=args.profile, keys=keys, site=args.site
            )
        except RegistryError as exc:
            raise UsageError(str(exc)) from exc
    if args.json:
        print_json(device.as_json())
    else:
        print(f"registered {device.dev_eui} ({device.activation}, {device.profile})")
    return 0


def list_devices(args: argparse.Namespace) -> int:
    from gateway.cli.main import print_json

    with _registry(args) as (_cfg, conn):
        devices = registry.list_devices(conn)
        rows = [d.as_json() for d in devices]
        if args.show_keys:
            for row, device in zip(rows, devices, strict=True):
                row["keys"] = registry.device_keys(conn, device.dev_eui)
    if args.json:
        print_json({"devices": rows})
        return 0
    header = f"{'DEV_EUI':<16}  {'ACT':<4}  {'DEV_ADDR':<8}  {'FCNT_UP':>8}  {'PROFILE':<24}  SITE"
    print(header)
    for row in rows:
        fcnt = "-" if row["fcnt_up"] is None else str(row["fcnt_up"])
        print(
            f"{row['dev_eui']:<16}  {row['activation']:<4}  {row['dev_addr'] or '-':<8}  {fcnt:>8}  "
            f"{row['profile']:<24}  {row['site']}"
        )
        if args.show_keys:
            print("    " + "  ".join(f"{k}={v}" for k, v in row["keys"].items()))
    print(f"{len(rows)} device(s)")
    return 0


def remove_device(args: argparse.Namespace) -> int:
    from gateway.cli.main import UsageError

    dev_eui = _value(DevEui, args.dev_eui, "DEV_EUI")
    with _registry(args) as (_cfg, conn):
        try:
            registry.remove_device(conn, dev_eui)
        except RegistryError as exc:
            raise UsageError(str(exc)) from exc
    print(f"removed {dev_eui}")
    return 0
