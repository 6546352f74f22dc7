"""``edgegw encode --profile ID COMMAND [PARAM=VALUE...]``: encode one downlink command."""

from __future__ import annotations

import argparse

from gateway.cli.common import UsageError, print_json
from gateway.cli.profile_cmd import get_profile, profiles_from_args
from gateway.errors import EncodeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, metavar="VENDOR/MODEL")
    p.add_argument("--profiles-dir", metavar="DIR", help="profiles directory (default: the shipped profiles)")
    p.add_argument("command", metavar="COMMAND")
    p.add_argument("params", metavar="PARAM=VALUE", nargs="*")
    p.add_argument("--json", action="store_true", help="print {fport, payload} as JSON")
    p.set_defaults(handler=handle)


def _value(text: str) -> object:
    # Numbers become numbers; anything else is an enum word.
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def handle(args: argparse.Namespace) -> int:
    values: dict[str, object] = {}
    for item in args.params:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise UsageError(f"parameters are PARAM=VALUE, got {item!r}")
        values[name] = _value(text)
    profile = get_profile(profiles_from_args(args), args.profile)
    try:
        downlink = profile.encode(args.command, values)
    except EncodeError as exc:
        raise UsageError(f"cannot encode: {exc}") from exc
    if args.json:
        print_json({"fport": downlink.fport, "payload": downlink.payload.hex()})
    else:
        print(f"fport {downlink.fport}: {downlink.payload.hex()}")
    return 0
