"""``edgegw decode --profile VENDOR/MODEL --fport N HEX``: decode one application payload."""

from __future__ import annotations

import argparse
import json

from gateway.cli.common import UsageError, print_json
from gateway.cli.profile_cmd import get_profile, profiles_from_args
from gateway.errors import DecodeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, metavar="VENDOR/MODEL")
    p.add_argument("--fport", required=True, type=int, metavar="N")
    p.add_argument("--profiles-dir", metavar="DIR", help="profiles directory (default: the shipped profiles)")
    p.add_argument("payload", metavar="PAYLOAD_HEX")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=NUMBER",
        help="an installation parameter for derived values, e.g. empty_distance_mm=1200 (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print only the decoded object as JSON")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        payload = bytes.fromhex(args.payload)
    except ValueError as exc:
        raise UsageError(f"PAYLOAD_HEX is not hex: {args.payload!r}") from exc
    params: dict[str, float] = {}
    for item in args.param:
        name, sep, text = item.partition("=")
        try:
            params[name] = float(text)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise UsageError(f"--param takes NAME=NUMBER, got {item!r}")
    profile = get_profile(profiles_from_args(args), args.profile)
    try:
        decoded = profile.decode(args.fport, payload, params or None)
    except DecodeError as exc:
        raise UsageError(f"cannot decode: {exc}") from exc
    if args.json:
        print_json(decoded.data)
    else:
        print(json.dumps(decoded.data, indent=2))
        for warning in decoded.warnings:
            print(f"warning: {warning}")
    return 0
