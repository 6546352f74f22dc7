"""``edgegw run``: the agent in the foreground (systemd runs it so); SIGTERM stops it cleanly.

First of all it takes the data directory's lock (``gateway.instance_lock``): a second agent on
the same data_dir exits at once with code 3 and one line naming the running one's pid, before it
has touched the database, the keys, the pushed configuration or any socket.

It runs the local file with the configuration pushed by the platform laid over it
(``gateway.fleet.remote_config.startup_config``); exit code 75 asks systemd for a restart.
When the platform installed another agent version (``gateway.fleet.updates``), the base install
counts the start and runs that version instead: the same command with the version's directory
first on the module path (``os.execve``: same process, same pid for systemd, the lock handed on).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from gateway import app, config, instance_lock
from gateway.cli.common import add_config_option, config_path, setup_logging
from gateway.errors import AlreadyRunning
from gateway.fleet.remote_config import startup_config
from gateway.fleet.updates import Updates
from gateway.loglevels import level_number

# Set for the version the base install started; not EDGEGW_..., which the config would read as a key.
LAUNCHED_ENV = "_EDGEGW_VERSION_DIR"
_RUN_VERSION = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module('gateway', run_name='__main__', alter_sys=True)"
)

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_option(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    path = config_path(args)
    local = config.load(path)
    setup_logging(local.log.level)  # first, so that the choice of configuration below is logged
    try:
        lock = instance_lock.acquire(local.data_path)  # before anything in data_dir is read or written
    except AlreadyRunning as exc:
        print(f"edgegw: {exc}", file=sys.stderr)
        return instance_lock.EXIT_ALREADY_RUNNING
    if LAUNCHED_ENV not in os.environ:  # the base install: which version runs?
        version_dir = Updates(local.data_path).launch()
        if version_dir is not None:
            log.warning("running agent version from %s", version_dir)
            env = {**os.environ, LAUNCHED_ENV: str(version_dir)}
            lock.pass_on(env)  # the version keeps this lock: no moment without one
            sys.stderr.flush()
            # The version's directory first on sys.path, ahead of the working directory and of the
            # base install (PYTHONPATH would come after the working directory), then `-m gateway`.
            os.execve(
                sys.executable, [sys.executable, "-c", _RUN_VERSION, str(version_dir), *sys.argv[1:]], env
            )
    cfg = startup_config(path)
    if cfg.log.level != local.log.level:  # a pushed log.level
        logging.getLogger().setLevel(level_number(cfg.log.level))
    return asyncio.run(_run(cfg))


async def _run(cfg: config.Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return await app.run(cfg, stop)
