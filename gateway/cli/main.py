"""Entry point of ``edgegw``: argument parsing, logging set-up, exit codes.

Exit codes (ARCHITECTURE.md §3.1): 0 success, 1 the checked thing failed,
2 bad usage or bad input, with a one-line reason on stderr. Commands that print
data take ``--json`` and then print exactly one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from gateway import __version__
from gateway.cli import (
    airtime_cmd,
    buffer_cmd,
    config_cmd,
    decode_cmd,
    demo_cmd,
    device_cmd,
    encode_cmd,
    field_cmd,
    fleet_cmd,
    lorawan_cmd,
    profile_cmd,
    provision_cmd,
    qr_cmd,
    rules_cmd,
    run_cmd,
    views_cmd,
)
from gateway.errors import GatewayError

TRACE = 5
DEFAULT_CONFIG = "/etc/edgegw/edgegw.yaml"


class UsageError(Exception):
    """Bad usage or input detected by a command (exit code 2)."""


class CheckFailed(Exception):
    """The thing a command checked failed (exit code 1)."""


def setup_logging(level: str) -> None:
    logging.addLevelName(TRACE, "TRACE")
    logging.basicConfig(
        level=TRACE if level == "TRACE" else getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def config_path(args: argparse.Namespace) -> str:
    """--config, else $EDGEGW_CONFIG, else /etc/edgegw/edgegw.yaml."""
    return str(getattr(args, "config", None) or os.environ.get("EDGEGW_CONFIG") or DEFAULT_CONFIG)


def print_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgegw", description="LoRaWAN edge-gateway agent")
    parser.add_argument("--version", action="version", version=f"edgegw {__version__}")
    parser.add_argument(
        "--config", metavar="PATH", help=f"config file (default: $EDGEGW_CONFIG or {DEFAULT_CONFIG})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        run_cmd,
        demo_cmd,
        config_cmd,
        device_cmd,
        decode_cmd,
        encode_cmd,
        profile_cmd,
        views_cmd,
        airtime_cmd,
        lorawan_cmd,
        qr_cmd,
        provision_cmd,
        buffer_cmd,
        field_cmd,
        rules_cmd,
        fleet_cmd,
    ):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
        return result
    except UsageError as exc:
        print(f"edgegw: {exc}", file=sys.stderr)
        return 2
    except CheckFailed as exc:
        print(f"edgegw: {exc}", file=sys.stderr)
        return 1
    except GatewayError as exc:
        print(f"edgegw: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
