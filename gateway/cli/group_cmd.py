"""``edgegw group add | list | show | remove | add-member | remove-member``: class C multicast groups.

A group is one McAddr with its McNwkSKey/McAppSKey (generated from the OS CSPRNG when not given,
printed once at ``add`` for the installer: they go into the members' firmware configuration), a data
rate and a frequency (default: the gateway's RX2 parameters). Its members are registered class C
devices of one profile. The running agent sends one multicast frame per group command (lighting
rules with ``group:``, the platform's ``group_downlink``) instead of one per member.

Like ``edgegw device``, it opens the agent's database directly; the running agent picks the change
up at its next registry refresh. Keys are encrypted at rest when the gateway key file exists. This
module owns the arguments and the output; the rows are ``gateway.provisioning.groups``'.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TypeVar, cast

from gateway import config
from gateway.cli.common import UsageError, add_config_option, print_json
from gateway.cli.device_cmd import open_registry
from gateway.errors import RegistryError
from gateway.messages import AesKey, DevAddr, DevEui
from gateway.provisioning import groups, hexinput

_Hex = TypeVar("_Hex", AesKey, DevAddr, DevEui)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_option(p)
    sub = p.add_subparsers(dest="group_command", metavar="ACTION", required=True)

    add = sub.add_parser("add", help="create a multicast group (keys generated and shown once if not given)")
    add.add_argument("name", metavar="NAME", help="a-z, 0-9, '-', '_' (what rules and commands address)")
    add.add_argument("--mc-addr", metavar="HEX", help="McAddr, 8 hex digits (default: drawn at random)")
    add.add_argument("--mc-nwkskey", metavar="HEX", help="McNwkSKey (default: generated)")
    add.add_argument("--mc-appskey", metavar="HEX", help="McAppSKey (default: generated)")
    add.add_argument("--dr", type=int, metavar="N", help="EU868 data rate 0..6 (default: lorawan.rx2_dr)")
    add.add_argument("--freq-hz", type=int, metavar="HZ", help="frequency (default: lorawan.rx2_freq_hz)")
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=add_group)

    lst = sub.add_parser("list", help="the groups, their McAddr, data rate and member count")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=list_groups)

    show = sub.add_parser("show", help="one group and its members")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--show-keys", action="store_true", help="also print McNwkSKey and McAppSKey")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=show_group)

    remove = sub.add_parser("remove", help="forget a group (its member devices stay registered)")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=remove_group)

    for action, handler, what in (
        ("add-member", add_member, "add class C devices (one profile per group)"),
        ("remove-member", remove_member, "remove devices from a group"),
    ):
        member = sub.add_parser(action, help=what)
        member.add_argument("name", metavar="NAME")
        member.add_argument("dev_euis", nargs="+", metavar="DEV_EUI")
        member.add_argument("--json", action="store_true")
        member.set_defaults(handler=handler)


def _hex(kind: type[_Hex], text: str | None, option: str) -> _Hex | None:
    if text is None:
        return None
    try:
        value = hexinput.parse(cast(Any, kind), text)
    except ValueError as exc:  # the length wanted, never the value (it may be a key)
        raise UsageError(f"{option}: {exc}") from exc
    assert isinstance(value, kind)
    return value


def _rf(group: groups.GroupInfo, cfg: config.Config) -> str:
    dr = f"DR{group.dr}" if group.dr is not None else f"DR{cfg.lorawan.rx2_dr} (RX2)"
    freq_hz = group.freq_hz if group.freq_hz is not None else cfg.lorawan.rx2_freq_hz
    return f"{dr} {freq_hz / 1e6:.3f} MHz{'' if group.freq_hz is not None else ' (RX2)'}"


def _warn_off_rx2(group: groups.GroupInfo, cfg: config.Config) -> None:
    """On stderr: a group off the RX2 channel deafens its members to class C unicast. The lamp has one
    receiver and listens on its groups' channel (firmware/lorawan/device.py ``class_c_channel``),
    while the agent sends class C unicast downlinks on RX2."""
    rx2_dr, rx2_freq_hz = cfg.lorawan.rx2_dr, cfg.lorawan.rx2_freq_hz
    dr = rx2_dr if group.dr is None else group.dr
    freq_hz = rx2_freq_hz if group.freq_hz is None else group.freq_hz
    if (dr, freq_hz) != (rx2_dr, rx2_freq_hz):
        print(
            f"warning: group {group.name} is sent at DR{dr} {freq_hz / 1e6:.3f} MHz, not on RX2 "
            f"({rx2_freq_hz / 1e6:.3f} MHz DR{rx2_dr}): its members listen on the group's channel and "
            "no longer hear class C unicast downlinks (commands to one lamp); keep the RX2 parameters "
            "to hear both",
            file=sys.stderr,
        )


def add_group(args: argparse.Namespace) -> int:
    with open_registry(args) as (cfg, conn, store):
        try:
            group, nwk, app = groups.add_group(
                conn,
                args.name,
                mc_addr=_hex(DevAddr, args.mc_addr, "--mc-addr"),
                nwk_s_key=_hex(AesKey, args.mc_nwkskey, "--mc-nwkskey"),
                app_s_key=_hex(AesKey, args.mc_appskey, "--mc-appskey"),
                dr=args.dr,
                freq_hz=args.freq_hz,
                keystore=store,
            )
        except RegistryError as exc:
            raise UsageError(str(exc)) from exc
        rf = _rf(group, cfg)
        _warn_off_rx2(group, cfg)
    if args.json:
        print_json({**group.as_json(), "mc_nwk_s_key": nwk.reveal(), "mc_app_s_key": app.reveal()})
        return 0
    print(f"created multicast group {group.name}: McAddr {group.mc_addr}, {rf}")
    # Shown only now (encrypted at rest afterwards when a key file exists): the lamps' firmware needs them.
    print(f"McNwkSKey {nwk.reveal()}")
    print(f"McAppSKey {app.reveal()}")
    print("program McAddr and both keys into every member's firmware configuration (shown only now)")
    return 0


def list_groups(args: argparse.Namespace) -> int:
    with open_registry(args) as (cfg, conn, _store):
        found = groups.list_groups(conn)
        rfs = {g.name: _rf(g, cfg) for g in found}
    if args.json:
        print_json([g.as_json() for g in found])
        return 0
    if not found:
        print("no multicast groups (edgegw group add NAME)")
        return 0
    print(f"{'NAME':<24} {'MCADDR':<8}  {'FCNT':>6}  {'MEMBERS':>7}  {'PROFILE':<24} RF")
    for g in found:
        print(
            f"{g.name:<24} {g.mc_addr!s:<8}  {g.fcnt_down:>6}  {len(g.members):>7}  "
            f"{g.profile or '-':<24} {rfs[g.name]}"
        )
    return 0


def show_group(args: argparse.Namespace) -> int:
    with open_registry(args) as (cfg, conn, store):
        try:
            group = groups.get_group(conn, args.name)
            keys = groups.group_keys(conn, args.name, store) if args.show_keys else {}
        except RegistryError as exc:
            raise UsageError(str(exc)) from exc
        rf = _rf(group, cfg)
    if args.json:
        print_json({**group.as_json(), **keys})
        return 0
    print(f"group {group.name}: McAddr {group.mc_addr}, {rf}, next McFCntDown {group.fcnt_down}")
    print(f"created {group.created_at}; profile {group.profile or '-'}; {len(group.members)} member(s)")
    for eui in group.members:
        # A member set back to class A afterwards stays listed; the group's frames do not reach it.
        note = "  class A: does not receive multicast frames" if eui in group.not_class_c else ""
        print(f"  {eui}{note}")
    for name, value in keys.items():
        print(f"{name} {value}")
    return 0


def remove_group(args: argparse.Namespace) -> int:
    with open_registry(args) as (_cfg, conn, _store):
        try:
            groups.remove_group(conn, args.name)
        except RegistryError as exc:
            raise UsageError(str(exc)) from exc
    print(f"removed multicast group {args.name}")
    return 0


def _members(args: argparse.Namespace, change: str) -> int:
    euis = [eui for text in args.dev_euis if (eui := _hex(DevEui, text, "DEV_EUI")) is not None]
    with open_registry(args) as (_cfg, conn, _store):
        try:
            if change == "add":
                group = groups.add_members(conn, args.name, euis)
            else:
                group = groups.remove_members(conn, args.name, euis)
        except RegistryError as exc:
            # One transaction: the other devices of the command line were not changed either.
            done = "added" if change == "add" else "removed"
            raise UsageError(f"{exc} (no device {done}: the command changes all of them or none)") from exc
    if args.json:
        print_json(group.as_json())
    else:
        verb = "added to" if change == "add" else "removed from"
        print(f"{len(euis)} device(s) {verb} {group.name}: {len(group.members)} member(s) now")
    return 0


def add_member(args: argparse.Namespace) -> int:
    return _members(args, "add")


def remove_member(args: argparse.Namespace) -> int:
    return _members(args, "remove")
