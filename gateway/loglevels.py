"""The log levels of edgegw: the standard ones plus TRACE, below DEBUG, for per-frame hex dumps.

Owns the number of TRACE and the mapping from a ``log.level`` value of the config to a level
number. It does not configure logging: handlers are set up only by the CLI
(``gateway.cli.common.setup_logging``). A leaf module, so that stage packages (the radio logs at
TRACE) and the CLI share one definition without importing each other.
"""

from __future__ import annotations

import logging
from typing import Final

TRACE: Final = 5
TRACE_NAME: Final = "TRACE"


def level_number(name: str) -> int:
    """The number of a ``log.level`` name ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR")."""
    if name == TRACE_NAME:
        return TRACE
    number = logging.getLevelNamesMapping().get(name)
    if number is None:
        raise ValueError(f"unknown log level {name!r}")
    return number
