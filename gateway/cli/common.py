"""What every ``edgegw`` command module shares: its two errors, JSON output, the config path, logging.

Owns the exceptions a command raises to choose its exit code (``gateway.cli.main`` turns them
into one line on stderr), the one way to print a JSON document, where the config file is found,
the logging set-up of ``edgegw run`` and the "N s ago" text of the views. It imports nothing of
the agent (and ``logging`` only for ``edgegw run``), so that any command module can import it at
the top without a cycle or a start-up cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Final

DEFAULT_CONFIG: Final = "/etc/edgegw/edgegw.yaml"


class UsageError(Exception):
    """Bad usage or input detected by a command (exit code 2)."""


class CheckFailed(Exception):
    """The thing a command checked failed (exit code 1)."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config PATH`` after the command too (``edgegw status --config X``), as before it."""
    parser.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="config file")


def config_path(args: argparse.Namespace) -> str:
    """--config, else $EDGEGW_CONFIG, else /etc/edgegw/edgegw.yaml."""
    return str(getattr(args, "config", None) or os.environ.get("EDGEGW_CONFIG") or DEFAULT_CONFIG)


def print_json(doc: Any) -> None:
    """One JSON document on stdout: what every ``--json`` prints."""
    json.dump(doc, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def setup_logging(level: str) -> None:
    """Log records at ``level`` (a ``log.level`` name, TRACE included) and above to stderr."""
    # Imported here: only `edgegw run` sets up logging; at the top, every command would pay for it
    # (about 5 ms here, with the threading and traceback it brings; several times that on a Pi).
    import logging

    from gateway.loglevels import TRACE, TRACE_NAME, level_number

    logging.addLevelName(TRACE, TRACE_NAME)
    logging.basicConfig(
        level=level_number(level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def ago(at_s: float | None) -> str:
    """How long ago a wall-clock time was, in the unit a technician reads at a glance."""
    if not at_s:
        return "never"
    seconds = max(0.0, time.time() - at_s)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
