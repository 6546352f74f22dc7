"""``edgegw config template | check PATH``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from gateway import config, preflight
from gateway.cli.common import print_json
from gateway.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    t = csub.add_parser("template", help="print the whole commented default configuration")
    t.set_defaults(handler=template)
    c = csub.add_parser(
        "check",
        help="run every start-up check on a config file; exit 2 listing every problem with its key path",
    )
    c.add_argument("path", metavar="PATH")
    c.add_argument(
        "--json", action="store_true", help="print the effective configuration, or the problems, as JSON"
    )
    c.set_defaults(handler=check)


def template(_args: argparse.Namespace) -> int:
    sys.stdout.write(config.template())
    return 0


def check(args: argparse.Namespace) -> int:
    errors = preflight.check_all(args.path)
    if errors:
        if args.json:
            print_json({"ok": False, "errors": [_as_json(error) for error in errors]})
        for error in errors:
            print(f"edgegw: {error}", file=sys.stderr)
        return 2
    cfg = config.load(args.path)
    if args.json:
        effective = dataclasses.asdict(cfg)
        if effective["mqtt"]["password"]:
            effective["mqtt"]["password"] = "<secret>"
        print_json({"ok": True, "config": effective})
    else:
        broker = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
        print(f"{args.path}: OK (gateway {cfg.gateway.id}, radio {cfg.radio.url}, broker {broker})")
    return 0


def _as_json(error: ConfigError) -> dict[str, Any]:
    return {"file": error.file, "key_path": error.key_path, "reason": error.reason, "message": str(error)}
