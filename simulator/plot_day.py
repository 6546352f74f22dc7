"""Plots of a simulated day per use case, from a scenario's own frames (PNG files).

    python -m simulator.plot_day --scenario simulator/scenarios/first-deployment-week.yaml \\
        --day 3 --out docs/img

Owns only the drawing: it walks the scenario's schedule (``simulator.city``) and plots what the
devices reported on one simulated day (waste fill, noise LAeq by site type with the Lden
periods, river levels, passages per hour, lamp dim levels and cabinet power). No gateway is
involved. matplotlib is imported when the script runs, so the package works without it.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulator.city import ScheduledFrame, build_fleet, schedule
from simulator.models import SECONDS_PER_DAY, LampModel
from simulator.scenario import Scenario, load_scenario

Series = dict[str, list[tuple[float, float]]]


def collect(scenario: Scenario, day: int) -> dict[str, Series]:
    """Per use case, per device: (hour of the day, value) of every frame sent that day."""
    fleet = build_fleet(scenario)
    for d in fleet:
        if d.otaa is not None:
            d.otaa.joined = True  # no gateway here to answer joins: plot the physics, not the join
    by_name = {d.name: d for d in fleet}
    start, end = day * SECONDS_PER_DAY, (day + 1) * SECONDS_PER_DAY
    out: dict[str, Series] = defaultdict(lambda: defaultdict(list))
    for event in schedule(scenario, fleet):
        if event.t_s >= end:
            break
        if not isinstance(event, ScheduledFrame) or event.t_s < start or event.kind != "reading":
            continue
        hour, v, d = (event.t_s - start) / 3600.0, event.values, by_name[event.device]
        if "distance" in v and "empty_distance_mm" in d.params:
            empty, full = d.params["empty_distance_mm"], d.params["full_distance_mm"]
            out["waste"][d.name].append(
                (hour, max(0.0, min(100.0, (empty - v["distance"]) / (empty - full) * 100)))
            )
        elif "level" in v:
            out["river"][d.name].append((hour, float(v["level"])))
        elif "LAeq" in v:
            site = getattr(d.model, "site", "?")
            out["noise"][f"{d.name} ({site})"].append((hour, float(v["LAeq"])))
        elif "counter_a" in v:
            out["counting"][d.name].append((hour, float(v["counter_a"] + v["counter_b"])))
        elif "power__W" in v:
            out["lamps"][d.name].append((hour, float(v["power__W"])))
            assert isinstance(d.model, LampModel)
            out["dim"][d.name].append((hour, float(d.model.level_pct(event.t_s))))
        elif "active_power" in v:
            out["cabinets"][d.name].append((hour, float(v["active_power"])))
    return out


def plot(data: dict[str, Series], day: int, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = out_dir / f"sim-day-{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

    def lines(ax: Any, series: Series, limit: int, step: bool = False) -> None:
        for name, points in sorted(series.items())[:limit]:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            if step:
                ax.step(xs, ys, where="post", label=name, linewidth=1)
            else:
                ax.plot(xs, ys, label=name, linewidth=1)
        ax.set_xlim(0, 24)
        ax.set_xticks(range(0, 25, 3))
        ax.set_xlabel(f"hour of simulated day {day}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)

    if data.get("waste"):
        fig, ax = plt.subplots(figsize=(8, 3.5))
        lines(ax, data["waste"], 8)
        ax.axhline(80, color="red", linestyle="--", linewidth=0.8)
        ax.set_ylabel("fill level %")
        ax.set_title("Waste: EM310-UDL fill level (alert at 80 %, collection resets)")
        save(fig, "waste")
    if data.get("noise"):
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for start, end, colour in ((0, 6, "#dde"), (18, 22, "#eed"), (22, 24, "#dde")):
            ax.axvspan(start, end, color=colour, alpha=0.6, linewidth=0)
        lines(ax, data["noise"], 10)
        ax.axhline(68, color="red", linestyle="--", linewidth=0.8)
        ax.set_ylabel("LAeq,15min dB(A)")
        ax.set_title("Noise: WS302 LAeq by site (shaded: evening and night periods of Lden)")
        save(fig, "noise")
    if data.get("river"):
        fig, ax = plt.subplots(figsize=(8, 3.5))
        lines(ax, data["river"], 8)
        ax.axhline(150, color="red", linestyle="--", linewidth=0.8)
        ax.set_ylabel("water level cm")
        ax.set_title("Rivers: EM500-SWL level (flash flood; 2-min reports in alarm mode)")
        save(fig, "river")
    if data.get("counting"):
        fig, ax = plt.subplots(figsize=(8, 3.5))
        lines(ax, data["counting"], 6, step=True)
        ax.set_ylabel("passages per 15 min")
        ax.set_title("Counting: IMBuildings counters (bikes: commute peaks; pedestrians: midday)")
        save(fig, "counting")
    if data.get("lamps"):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
        lines(top, data["lamps"], 6, step=True)
        top.set_ylabel("lamp power W")
        top.set_title("Lighting: UL20xx lamps follow their dim level; WS558 cabinets meter the circuit")
        lines(bottom, data.get("cabinets", {}), 4, step=True)
        bottom.set_ylabel("cabinet power W")
        save(fig, "lighting")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.plot_day", description=__doc__)
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--day", type=int, default=0, help="simulated day (0 = the first)")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot_day needs matplotlib: pip install matplotlib", flush=True)
        return 2
    for path in plot(collect(load_scenario(args.scenario), args.day), args.day, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
