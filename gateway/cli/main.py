"""Entry point of ``edgegw``: the table of commands, argument parsing, exit codes.

Exit codes (ARCHITECTURE.md §3.1): 0 success, 1 the checked thing failed,
2 bad usage or bad input, with a one-line reason on stderr. Commands that print
data take ``--json`` and then print exactly one JSON document on stdout.

A call imports the module of the command it names and no other (issue 17: importing every
command module for every call cost 0.3-0.4 s here, several times that on a Pi 3). ``COMMANDS``
maps each top-level command to its one-line help and to ``"module:function"``, the function that
adds the command's arguments to its parser. Parsing takes two passes: first every command is a
placeholder that takes any arguments, which is enough for ``edgegw --help`` to list them all,
for ``--version``, for a missing or unknown command, and to learn which command argv names;
then that one command alone, with its real arguments, to parse for good.

Usage errors (``EdgegwParser``): a missing command prints the whole command list on stderr;
a mistyped command or sub-command adds "did you mean ...?" (``difflib``); both exit 2.

A reader that goes away (``edgegw devices | head -1``) ends the command quietly with exit 0:
the reader chose to stop, which is no failure of ours (``set -o pipefail`` scripts keep
working), and no traceback. Stdout is pointed at ``/dev/null`` first, as the Python docs
advise for SIGPIPE, so that the interpreter's last flush at exit cannot fail again.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, NoReturn

from gateway import __version__
from gateway.cli.common import DEFAULT_CONFIG, CheckFailed, UsageError
from gateway.errors import GatewayError


@dataclass(frozen=True)
class Command:
    """A top-level command: where its arguments are defined, and its line in ``edgegw --help``."""

    target: str
    """``"module:function"``; the function takes the command's ``ArgumentParser``."""
    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        module_name, _, function_name = self.target.partition(":")
        add: Callable[[argparse.ArgumentParser], None] = getattr(
            importlib.import_module(module_name), function_name
        )
        add(parser)


# In the order `edgegw --help` lists them.
COMMANDS: Final[dict[str, Command]] = {
    "run": Command("gateway.cli.run_cmd:add_arguments", "run the agent in the foreground"),
    "demo": Command(
        "gateway.cli.demo_cmd:add_arguments",
        "a simulated day of a small city through a local broker and the agent, checked at the end",
    ),
    "config": Command(
        "gateway.cli.config_cmd:add_arguments", "print the commented default config, or check a config file"
    ),
    "device": Command(
        "gateway.cli.device_cmd:add_arguments", "register, change, list, import, export and remove devices"
    ),
    "decode": Command(
        "gateway.cli.decode_cmd:add_arguments", "decode one application payload with a device profile"
    ),
    "encode": Command(
        "gateway.cli.encode_cmd:add_arguments", "encode a downlink command with a device profile"
    ),
    "profile": Command(
        "gateway.cli.profile_cmd:add_arguments", "list, show, test and import device profiles"
    ),
    "status": Command(
        "gateway.cli.views_cmd:add_status_arguments",
        "one screen: radio, uplink, outbox, clock (running agent)",
    ),
    "devices": Command(
        "gateway.cli.views_cmd:add_devices_arguments",
        "registered devices with last seen, signal, battery, counts",
    ),
    "tail": Command(
        "gateway.cli.views_cmd:add_tail_arguments", "live frames with their verdicts (MIC, FCnt, decoding)"
    ),
    "group": Command(
        "gateway.cli.group_cmd:add_arguments", "class C multicast groups: keys, data rate, member devices"
    ),
    "airtime": Command(
        "gateway.cli.airtime_cmd:add_arguments", "time on air of one LoRa packet (Semtech SX127x formula)"
    ),
    "lorawan": Command("gateway.cli.lorawan_cmd:add_arguments", "LoRaWAN tools for technicians"),
    "qr": Command(
        "gateway.cli.qr_cmd:add_arguments", "TR005 device QR codes: make labels, parse scanned codes"
    ),
    "provision": Command("gateway.cli.provision_cmd:add_arguments", "installer set-up of this gateway"),
    "buffer": Command(
        "gateway.cli.buffer_cmd:add_arguments", "outbox depth, age, bytes, headroom, per-priority counts"
    ),
    "radio": Command("gateway.cli.field_cmd:add_radio_arguments", "radio checks (running agent)"),
    "uplink": Command(
        "gateway.cli.field_cmd:add_uplink_arguments", "uplink checks (own MQTT connection, agent's settings)"
    ),
    "diag": Command("gateway.cli.field_cmd:add_diag_arguments", "write a support bundle (secrets removed)"),
    "rules": Command(
        "gateway.cli.rules_cmd:add_arguments",
        "loaded rules and their live state (running agent); `rules test`",
    ),
    "fleet": Command("gateway.cli.fleet_cmd:add_arguments", "platform side: sign commands for gateways"),
}


class EdgegwParser(argparse.ArgumentParser):
    """``argparse`` with the help a technician needs on a usage error (module docstring).

    Sub-parsers are made of the same class (``add_subparsers`` uses ``type(self)``), so
    ``edgegw device lsit`` gets its "did you mean" too.
    """

    def error(self, message: str) -> NoReturn:
        hint = _did_you_mean(message)
        if "required: COMMAND" in message:
            self.print_help(sys.stderr)
            sys.stderr.write("\n")
        else:
            self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")


def _did_you_mean(message: str) -> str:
    """A line "did you mean 'status'?" for argparse's "invalid choice: 'stauts' (choose from ...)"."""
    match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not match:
        return ""
    choices = re.findall(r"'([^']*)'", match.group(2))
    close = difflib.get_close_matches(match.group(1), choices, n=1, cutoff=0.6)
    return f"\nedgegw: did you mean {close[0]!r}?" if close else ""


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The ``edgegw`` parser: with ``chosen``, that command alone, with its arguments (its module
    is imported); without, every command as a placeholder.

    A placeholder has no arguments, not even ``-h``: in ``parse_known_args`` whatever follows
    it is left over, which is all the first pass needs. The second pass cannot need the other
    commands: argv names the chosen one, and the first pass already answered ``--help``.
    """
    parser = EdgegwParser(prog="edgegw", description="LoRaWAN edge-gateway agent")
    parser.add_argument("--version", action="version", version=f"edgegw {__version__}")
    parser.add_argument(
        "--config", metavar="PATH", help=f"config file (default: $EDGEGW_CONFIG or {DEFAULT_CONFIG})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if chosen is not None:
        command = COMMANDS[chosen]
        command.add_arguments(sub.add_parser(chosen, help=command.help))
        return parser
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Two passes (module docstring): which command, then that command's arguments."""
    named, _rest = build_parser().parse_known_args(argv)
    return build_parser(named.command).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _run(argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
    except BrokenPipeError:
        _stdout_to_devnull()
        return 0
    return code


def _run(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
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


def _stdout_to_devnull() -> None:
    """What is still buffered for the gone reader goes nowhere (Python docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (a test's capture): nothing is left to flush
        pass
