"""``edgegw demo``: gateway + simulated fleet + local broker, for a newcomer (see ``simulator.demo``)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a local broker, the agent and a simulated fleet for a while")
    p.add_argument("--duration-s", type=float, default=30.0, help="how long the fleet sends (default 30)")
    p.add_argument("--devices", type=int, default=6, help="simulated container sensors (default 6)")
    p.add_argument("--rate-hz", type=float, default=4.0, help="frames per second (default 4)")
    p.add_argument("--workdir", help="keep the demo's files here (default: a new temporary directory)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from simulator.demo import run_demo

    return run_demo(args.duration_s, args.devices, args.rate_hz, args.workdir)
