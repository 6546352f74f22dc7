"""``edgegw run``: the agent in the foreground (systemd runs it so); SIGTERM stops it cleanly."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from gateway import app, config

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the agent in the foreground")
    p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="config file")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from gateway.cli.main import config_path, setup_logging

    cfg = config.load(config_path(args))
    setup_logging(cfg.log.level)
    asyncio.run(_run(cfg))
    return 0


async def _run(cfg: config.Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await app.run(cfg, stop)
