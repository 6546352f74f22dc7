"""``edgegw run``: the agent in the foreground (systemd runs it so); SIGTERM stops it cleanly.

It runs the local file with the configuration pushed by the platform laid over it
(``gateway.fleet.remote_config.startup_config``); exit code 75 asks systemd for a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from gateway import app, config
from gateway.fleet.remote_config import startup_config

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the agent in the foreground")
    p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="config file")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from gateway.cli.main import TRACE, config_path, setup_logging

    path = config_path(args)
    local = config.load(path)
    setup_logging(local.log.level)  # first, so that the choice of configuration below is logged
    cfg = startup_config(path)
    if cfg.log.level != local.log.level:  # a pushed log.level
        logging.getLogger().setLevel(TRACE if cfg.log.level == "TRACE" else cfg.log.level)
    return asyncio.run(_run(cfg))


async def _run(cfg: config.Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return await app.run(cfg, stop)
