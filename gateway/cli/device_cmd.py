"""``edgegw device add | set | list | remove | import | export | rekey``: the installer's registry commands.

They open the agent's database directly (SQLite WAL lets the running agent and
this command share it); the agent serves a new device within
``gateway.app.SESSION_REFRESH_S`` seconds. Keys are printed only with
``--show-keys`` / ``--with-keys``, and a generated AppKey once, when it is made.
Key columns are encrypted when the gateway key file exists (``device rekey``
creates it); see docs/provisioning.md.

Installation parameters are checked against the profile's declaration
(``gateway.provisioning.parameters``): an undeclared name, a value out of bounds or a broken
``less_than`` is refused (exit 2). ``add`` and ``set`` only warn (stderr, exit 0) about a
required parameter still missing: a device is often registered before it is installed and
measured (a QR code scanned at the depot), and ``set`` completes it one value at a time. A CSV
line is a device's whole installation: there a missing required parameter is an error.

``--class A|C`` sets the device's LoRaWAN class (default at ``add``: its profile's first class);
class C is refused for a profile that does not declare it. The running agent sends a class C
device's queued downlinks at once, on the RX2 parameters (docs/lorawan.md). ``--adr off`` opts a
device out of network-side ADR (default on). ``--mac-version 1.0.4`` overrides the profile's
LoRaWAN version (``profile``: back to it): a 1.0.4 device's DevNonces must count up, and the join
server refuses one not above its last (LoRaWAN 1.0.4 §6.2.5). ``--home GW`` names the gateway that
answers the device where several hear it (``""``: none named, every gateway that has it answers it);
the others only witness it: they forward its readings, never transmit to it (docs/fleet.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway import config, db
from gateway.cli import device_views, layout
from gateway.cli.common import CheckFailed, UsageError, add_config_option, config_path, print_json
from gateway.codec import Profile, ProfileStore, load_profiles
from gateway.errors import ConfigError, RegistryError
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui
from gateway.provisioning import csv_import, groups, hexinput, keystore, parameters, qr, registry


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_option(p)
    dsub = p.add_subparsers(dest="device_command", metavar="ACTION", required=True)

    add = dsub.add_parser("add", help="register a device (ABP or OTAA, or from a TR005 QR code)")
    add.add_argument("--dev-eui", metavar="HEX")
    add.add_argument("--profile", required=True, metavar="VENDOR/MODEL")
    mode = add.add_mutually_exclusive_group()
    mode.add_argument("--abp", action="store_true", help="activation by personalisation")
    mode.add_argument("--otaa", action="store_true", help="over-the-air activation")
    add.add_argument("--qr", metavar="LW:D0:...", help="take DevEUI and JoinEUI from a scanned TR005 code")
    add.add_argument("--dev-addr", metavar="HEX")
    add.add_argument("--nwkskey", metavar="HEX")
    add.add_argument("--appskey", metavar="HEX")
    add.add_argument("--join-eui", metavar="HEX")
    add.add_argument(
        "--appkey", metavar="HEX", help="OTAA AppKey; generated (CSPRNG) and shown once if absent"
    )
    _installation_args(add)
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=add_device)

    st = dsub.add_parser("set", help="change a device's site, position or installation parameters")
    st.add_argument("dev_eui", metavar="DEV_EUI")
    _installation_args(st)
    st.add_argument("--unset", action="append", default=[], metavar="NAME", help="remove a parameter")
    st.add_argument("--json", action="store_true")
    st.set_defaults(handler=set_device)

    ls = dsub.add_parser("list", help="list registered devices")
    ls.add_argument("--json", action="store_true")
    ls.add_argument(
        "--show-keys", action="store_true", help="also print the keys (handle the output with care)"
    )
    ls.add_argument("--wide", action="store_true", help="every column in full (lines may exceed 80)")
    ls.set_defaults(handler=list_devices)

    rm = dsub.add_parser("remove", help="forget a device and its session (asks first; --yes does not)")
    rm.add_argument("dev_eui", metavar="DEV_EUI")
    rm.add_argument(
        "--yes", "-y", action="store_true", help="do not ask (scripts: required without a terminal)"
    )
    rm.set_defaults(handler=remove_device)

    imp = dsub.add_parser(
        "import", help="register a batch from CSV (all lines checked first; all or nothing)"
    )
    imp.add_argument("file", metavar="FILE.csv")
    imp.add_argument("--dry-run", action="store_true", help="check the file and report, write nothing")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(handler=import_devices)

    exp = dsub.add_parser("export", help="write the registry as CSV (or JSON)")
    exp.add_argument(
        "--with-keys", action="store_true", help="include keys (warns; handle the file with care)"
    )
    exp.add_argument("--output", "-o", metavar="PATH", help="write to PATH (mode 0600) instead of stdout")
    exp.add_argument("--json", action="store_true")
    exp.set_defaults(handler=export_devices)

    rk = dsub.add_parser("rekey", help="encrypt device keys at rest (creates the gateway key file)")
    rk.add_argument("--json", action="store_true")
    rk.set_defaults(handler=rekey)
    device_views.register(dsub)  # show, verify: views of the running agent


def _installation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site", default=None, help="site tag (e.g. commune/street)")
    p.add_argument("--lat", type=float, metavar="DEG", help="latitude, WGS84")
    p.add_argument("--lon", type=float, metavar="DEG", help="longitude, WGS84")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="installation parameter, repeatable (empty_distance_mm=1800, lamp_group=A, ...)",
    )
    p.add_argument(
        "--class",
        dest="lorawan_class",
        type=str.upper,
        choices=registry.CLASSES,
        help="LoRaWAN class: A, or C (downlinks at once; the profile must declare it)."
        " Default at add: the profile's first class",
    )
    p.add_argument(
        "--adr",
        type=str.lower,
        choices=("on", "off"),
        help="network-side ADR for this device (default at add: on): off, and the agent never sends it"
        " a LinkADRReq (docs/lorawan.md)",
    )
    p.add_argument(
        "--mac-version",
        choices=(*registry.MAC_VERSIONS, "profile"),
        help="LoRaWAN version of the device when it is not its profile's (profile: back to it); a 1.0.4"
        " device must count its DevNonces up (default: the profile's lorawan.mac_version)",
    )
    p.add_argument(
        "--home",
        metavar="GATEWAY_ID",
        help='the gateway that answers this device where several hear it ("": none named, the default:'
        " every gateway that has it answers it); the others forward its readings only (docs/fleet.md)",
    )


@contextlib.contextmanager
def open_registry(
    args: argparse.Namespace,
) -> Iterator[tuple[config.Config, sqlite3.Connection, keystore.KeyStore]]:
    """The configuration, the registry's database and the key store of ``--config`` (closed after)."""
    cfg = config.load(config_path(args))
    conn = db.connect(db.db_path(cfg.data_dir))
    try:
        yield cfg, conn, keystore.open_key(cfg.data_dir)
    finally:
        conn.close()


def _profiles(cfg: config.Config) -> ProfileStore:
    return load_profiles(cfg.profiles_dir)


def _value(kind: type[Any], text: str | None, option: str) -> Any:
    if text is None:
        raise UsageError(f"{option} is required here")
    try:
        return hexinput.parse(kind, text)
    except ValueError as exc:  # the length wanted, never the value (it may be a key)
        raise UsageError(f"{option}: {exc}") from exc


def _params(texts: list[str]) -> dict[str, registry.ParamValue]:
    params: dict[str, registry.ParamValue] = {}
    for text in texts:
        try:
            name, value = registry.parse_param(text)
        except ValueError as exc:
            raise UsageError(f"--param: {exc}") from exc
        params[name] = value
    return params


def _check_params(profile: Profile, params: dict[str, registry.ParamValue], *, complete: bool) -> None:
    """UsageError listing every parameter that does not fit ``profile``'s declaration."""
    problems = parameters.check(profile, params, complete=complete)
    if problems:
        raise UsageError("--param: " + "; ".join(problem.message for problem in problems))


def _position(args: argparse.Namespace) -> None:
    try:
        registry.check_position(args.lat, args.lon)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def add_device(args: argparse.Namespace) -> int:
    params = _params(args.param)
    _position(args)
    scanned: qr.DeviceQr | None = None
    if args.qr is not None:
        if args.abp:
            raise UsageError("--qr registers an OTAA device (TR005 codes carry a JoinEUI); drop --abp")
        scanned = qr.parse(args.qr)  # QrCodeError: exit 2 with the reason
        if args.dev_eui is not None and DevEui.from_hex(args.dev_eui) != scanned.dev_eui:
            raise UsageError(f"--dev-eui {args.dev_eui} differs from the QR code's DevEUI {scanned.dev_eui}")
    elif not (args.abp or args.otaa):
        raise UsageError("say --abp or --otaa (or --qr with a scanned code)")
    dev_eui = scanned.dev_eui if scanned else _value(DevEui, args.dev_eui, "--dev-eui")
    keys: registry.AbpKeys | registry.OtaaKeys
    generated: AesKey | None = None
    if args.abp:
        keys = registry.AbpKeys(
            dev_addr=_value(DevAddr, args.dev_addr, "--dev-addr"),
            nwk_s_key=_value(AesKey, args.nwkskey, "--nwkskey"),
            app_s_key=_value(AesKey, args.appskey, "--appskey"),
        )
    else:
        join_eui = scanned.join_eui if scanned else _value(JoinEui, args.join_eui, "--join-eui")
        if args.appkey is None:
            generated = registry.generate_app_key()
            app_key = generated
        else:
            app_key = _value(AesKey, args.appkey, "--appkey")
        keys = registry.OtaaKeys(join_eui=join_eui, app_key=app_key)
    with open_registry(args) as (cfg, conn, store):
        profiles = _profiles(cfg)
        if args.profile not in profiles:
            raise UsageError(
                f"--profile: unknown profile {args.profile!r} (known: {', '.join(profiles.ids())})"
            )
        profile = profiles.get(args.profile)
        _check_params(profile, params, complete=False)
        lorawan_class = _class(args.lorawan_class, profile) or registry.default_class(profile.lorawan.classes)
        try:
            device = registry.add_device(
                conn,
                dev_eui=dev_eui,
                profile=args.profile,
                keys=keys,
                site=args.site or "",
                lat=args.lat,
                lon=args.lon,
                params=params,
                keystore=store,
                lorawan_class=lorawan_class,
                adr=args.adr != "off",
                mac_version=_mac_version(args.mac_version) or None,
                home_gateway=_home(args.home),
            )
        except RegistryError as exc:
            raise UsageError(str(exc)) from exc
    if args.json:
        doc = device.as_json()
        if generated is not None:
            doc["generated_app_key"] = generated.reveal()
        print_json(doc)
    else:
        print(
            f"registered {device.dev_eui} ({device.activation}, {device.profile},"
            f" class {device.lorawan_class})"
        )
        if generated is not None:
            print(f"generated AppKey (shown only now; program it into the node): {generated.reveal()}")
    _warn_missing(profile, device)
    return 0


def set_device(args: argparse.Namespace) -> int:
    dev_eui = _value(DevEui, args.dev_eui, "DEV_EUI")
    params = _params(args.param)
    _position(args)
    changes = (params, args.unset, args.site is not None, args.lat is not None, args.lorawan_class, args.adr)
    if not any(changes) and args.mac_version is None and args.home is None:
        raise UsageError(
            "nothing to change: give --site, --lat/--lon, --param, --unset, --class, --adr, --mac-version"
            " or --home"
        )
    with open_registry(args) as (cfg, conn, store):
        try:
            current = registry.get_device(conn, dev_eui)
        except RegistryError as exc:
            raise UsageError(str(exc)) from exc
        profiles = _profiles(cfg)
        profile = profiles.get(current.profile) if current.profile in profiles else None
        if profile is not None:
            merged = {k: v for k, v in current.params.items() if k not in args.unset} | params
            _check_params(profile, merged, complete=False)
        if args.lorawan_class == "C" and profile is None:
            raise UsageError(
                f"--class: profile {current.profile!r} is not installed: cannot check it declares C"
            )
        lorawan_class = _class(args.lorawan_class, profile)
        try:
            device = registry.update_installation(
                conn,
                dev_eui,
                site=args.site,
                lat=args.lat,
                lon=args.lon,
                set_params=params,
                unset_params=tuple(args.unset),
                keystore=store,
                lorawan_class=lorawan_class,
                adr=None if args.adr is None else args.adr == "on",
                mac_version=_mac_version(args.mac_version),
                home_gateway=_home(args.home),
            )
        except RegistryError as exc:
            raise UsageError(str(exc)) from exc
    if args.json:
        print_json(device.as_json())
    else:
        shown = " ".join(f"{k}={registry.format_param(v)}" for k, v in sorted(device.params.items())) or "-"
        print(
            f"updated {device.dev_eui}: site={device.site or '-'} class={device.lorawan_class}"
            f" params: {shown}"
        )
    if profile is not None:
        _warn_missing(profile, device)
    return 0


def _class(text: str | None, profile: Profile | None) -> registry.DeviceClass | None:
    """The ``--class`` asked for (None: not given), checked against ``profile``'s classes."""
    if text is None:
        return None
    try:
        return registry.check_class(text, profile.lorawan.classes if profile is not None else None)
    except ValueError as exc:
        raise UsageError(f"--class: {exc}") from exc


def _home(text: str | None) -> str | None:
    """``--home`` checked (None: not given; "": no home named)."""
    if text is None:
        return None
    try:
        return registry.check_home(text) or ""
    except ValueError as exc:
        raise UsageError(f"--home: {exc}") from exc


def _mac_version(text: str | None) -> str | None:
    """``--mac-version`` as the registry takes it: None not given, "" back to the profile's."""
    if text is None:
        return None
    return "" if text == "profile" else text


def _warn_missing(profile: Profile, device: registry.Device) -> None:
    """A stderr warning naming the required parameters ``device`` still lacks (none: silent)."""
    absent = parameters.missing(profile, device.params)
    if absent:
        print(
            f"edgegw: warning: {parameters.describe_missing(profile, absent)}; until then its derived"
            f" values are not computed: edgegw device set {device.dev_eui} --param NAME=VALUE",
            file=sys.stderr,
        )


def list_devices(args: argparse.Namespace) -> int:
    with open_registry(args) as (_cfg, conn, store):
        devices = registry.list_devices(conn)
        rows = [d.as_json() for d in devices]
        if args.show_keys:
            for row, device in zip(rows, devices, strict=True):
                row["keys"] = registry.device_keys(conn, device.dev_eui, store)
    if args.json:
        print_json({"devices": rows})
        return 0
    room = layout.width(args.wide)
    cells = [
        [
            row["dev_eui"], row["activation"], row["dev_addr"] or "-",
            "-" if row["fcnt_up"] is None else str(row["fcnt_up"]), row["class"], row["profile"],
            row["site"] or "-",
        ]
        for row in rows
    ]  # fmt: skip
    lines = layout.table(LIST_COLUMNS, cells, room)
    print(lines[0])
    for row, line in zip(rows, lines[1:], strict=True):
        print(line)
        # Under their device, wrapped at spaces: a parameter or a key is never cut.
        extra = [f"{k}={registry.format_param(v)}" for k, v in sorted(row["params"].items())]
        if args.show_keys:
            extra += [f"{k}={v}" for k, v in row["keys"].items()]
        if extra:
            for text in layout.labelled("", "  ".join(extra), room, 4):
                print(text)
    print(f"{len(rows)} device(s)")
    return 0


LIST_COLUMNS = (
    layout.Column("DEV_EUI"),
    layout.Column("ACT"),
    layout.Column("DEV_ADDR"),
    layout.Column("FCNT_UP", right=True),
    layout.Column("CLASS"),
    layout.Column("PROFILE", shrink=True, min_width=10),
    layout.Column("SITE", shrink=True, min_width=8),
)


def remove_device(args: argparse.Namespace) -> int:
    dev_eui = _value(DevEui, args.dev_eui, "DEV_EUI")
    with open_registry(args) as (_cfg, conn, _store):
        try:
            device = registry.get_device(conn, dev_eui)
        except RegistryError as exc:
            raise UsageError(str(exc)) from exc
        if not args.yes:
            _confirm(f"remove {dev_eui} ({device.profile}, site {device.site or '-'}) and its session?")
        try:
            registry.remove_device(conn, dev_eui)
        except RegistryError as exc:
            raise UsageError(str(exc)) from exc
    print(f"removed {dev_eui}")
    return 0


def _confirm(question: str) -> None:
    """Ask on the terminal: CheckFailed (exit 1, nothing done) on anything but yes; UsageError
    (exit 2) when no one can answer (stdin is not a terminal: a script must say --yes)."""
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError("not removing without a terminal to confirm on: add --yes")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise CheckFailed("not removed")


def import_devices(args: argparse.Namespace) -> int:
    try:
        text = csv_import.read_csv(args.file)
    except csv_import.ImportFailed as failed:  # not UTF-8: the line of the first bad byte
        return _report_failure(args, failed)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    with open_registry(args) as (cfg, conn, store):
        try:
            profiles = _profiles(cfg)
            rows = csv_import.parse_csv(text, set(profiles.ids()), {p.id: p for p in profiles})
            if args.dry_run:
                result = None
            else:
                result = csv_import.import_devices(conn, rows, keystore=store)
        except csv_import.ImportFailed as failed:
            return _report_failure(args, failed)
    if result is None:
        if args.json:
            print_json({"ok": True, "dry_run": True, "lines": len(rows)})
        else:
            print(f"{args.file}: {len(rows)} device line(s), no errors (dry run: nothing written)")
        return 0
    if args.json:
        print_json({"ok": True, **result.as_json()})
    else:
        print(
            f"{args.file}: {len(result.added)} added, {len(result.updated)} updated, "
            f"{len(result.unchanged)} unchanged"
        )
        if result.generated_app_keys:
            print(
                f"{result.generated_app_keys} AppKey(s) generated: "
                "`edgegw device export --with-keys -o FILE` to program the nodes"
            )
    return 0


def _report_failure(args: argparse.Namespace, failed: csv_import.ImportFailed) -> int:
    if args.json:
        print_json({"ok": False, "errors": [e.as_json() for e in failed.errors]})
    for error in failed.errors:
        print(f"{args.file}: {error}", file=sys.stderr)
    print(f"edgegw: {args.file}: {failed}", file=sys.stderr)
    return 2


def export_devices(args: argparse.Namespace) -> int:
    with open_registry(args) as (_cfg, conn, store):
        rows = csv_import.export_rows(conn, with_keys=args.with_keys, keystore=store)
    if args.with_keys:
        print(
            "edgegw: warning: this export contains device keys; store it encrypted and delete it after use",
            file=sys.stderr,
        )
    if args.json:
        text = json.dumps({"devices": rows}, indent=2) + "\n"
    else:
        text = csv_import.to_csv(rows, with_keys=args.with_keys)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        _write_private(Path(args.output), text)
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc}") from exc
    print(f"wrote {len(rows)} device(s) to {args.output}", file=sys.stderr)
    return 0


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        out.write(text)


def rekey(args: argparse.Namespace) -> int:
    with open_registry(args) as (cfg, conn, _store):
        store = keystore.create_key(cfg.data_dir)
        changed = registry.rekey(conn, store)
        changed += groups.reseal(conn, store)  # the multicast groups' keys too
    if args.json:
        print_json({"key_file": str(store.path), "encrypted_values": changed})
    else:
        print(f"{changed} key value(s) encrypted with {store.path}")
    return 0
