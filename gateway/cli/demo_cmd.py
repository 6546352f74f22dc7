"""``edgegw demo``: gateway + simulated fleet + local broker, for a newcomer (see ``simulator.demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--duration-s", type=float, default=30.0, help="wall seconds the simulated day takes (default 30)"
    )
    p.add_argument(
        "--scenario", type=Path, help="another scenario file (default: simulator/scenarios/demo-day.yaml)"
    )
    p.add_argument("--workdir", help="keep the demo's files here (default: a new temporary directory)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    # Here, not at the top: the simulator and the agent it runs load when the demo starts, not for --help.
    from simulator.demo import run_demo

    return run_demo(args.duration_s, args.workdir, args.scenario)
