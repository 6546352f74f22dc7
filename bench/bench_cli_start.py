"""Start-up time of the ``edgegw`` command (issue 17): a technician's call against a stopped agent.

Measures, in the same run and interleaved (these machines are shared and noisy: the ratio means
more than the absolute times), the wall time of a fresh process for:

* ``baseline``: ``python -c "import argparse, json, socket, yaml"``, the floor under any CLI that
  parses arguments, reads a YAML config and talks JSON over a socket;
* ``status --json``: ``edgegw --config CFG status --json`` where CFG's data_dir has no control
  socket: it reads the config, fails to connect and exits 1 (checked: a run that does anything
  else stops the bench);
* ``--help``: ``edgegw --help``, the listing of every command.

Every process runs with its bytecode cached (see ``child_env``), as an installed gateway does.

Target: ``status --json`` within 2x of the baseline (median against median).

``--root DIR`` measures the code in DIR (put first on PYTHONPATH) instead of this checkout, e.g. a
``git worktree`` of an older commit: the before/after figures of docs come from one machine.

    .venv/bin/python bench/bench_cli_start.py [--runs 20] [--root DIR]

Prints a table and writes bench/results/cli_start.json (results are not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
BASELINE_CODE = "import argparse, json, socket, yaml"
TARGET_RATIO = 2.0
NOT_RUNNING = "the agent is not running"


def edgegw_argv() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m gateway`` (the same main)."""
    script = Path(sys.executable).with_name("edgegw")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def child_env(root: Path, pycache: Path) -> dict[str, str]:
    """The caller's environment without EDGEGW_* (they would override the temp config), ROOT first.

    Bytecode is cached, as on an installed gateway, but under ``pycache`` (a temp directory,
    filled by the warm-up run): PYTHONDONTWRITEBYTECODE would make every run compile every
    module it imports, and the checkout stays untouched.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEGW_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env


def wall_s(argv: list[str], env: dict[str, str], cwd: Path, expect_rc: int) -> float:
    """Wall time of one process from fork to exit; a run with another exit code stops the bench."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != expect_rc:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}, expected {expect_rc}\n{done.stderr}")
    return elapsed


def summary(samples_s: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in samples_s)
    return {
        "median_ms": round(statistics.median(ms), 1),
        "min_ms": round(ms[0], 1),
        "max_ms": round(ms[-1], 1),
        "runs_ms": [round(m, 1) for m in ms],
    }


def measure(runs: int, root: Path, workdir: Path) -> dict[str, Any]:
    cfg = workdir / "edgegw.yaml"
    data_dir = workdir / "data"  # no control.sock in it: the agent is stopped
    data_dir.mkdir()
    cfg.write_text(
        f"gateway: {{id: gw-bench}}\nmqtt: {{host: 127.0.0.1, tls: false}}\ndata_dir: {data_dir}\n"
    )
    env = child_env(root, workdir / "pycache")
    cases = {
        "baseline": ([sys.executable, "-c", BASELINE_CODE], 0),
        "status --json": ([*edgegw_argv(), "--config", str(cfg), "status", "--json"], 1),
        "--help": ([*edgegw_argv(), "--help"], 0),
    }
    check = subprocess.run(
        cases["status --json"][0], env=env, cwd=workdir, capture_output=True, text=True, check=False
    )
    if NOT_RUNNING not in check.stderr:
        raise SystemExit(f"status --json did not fail on the stopped agent: {check.stderr!r}")
    where = subprocess.run(
        [sys.executable, "-c", "import gateway.cli.main as m; print(m.__file__)"],
        env=env, cwd=workdir, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    for argv, rc in cases.values():  # one warm-up each: the page cache and .pyc files, not measured
        wall_s(argv, env, workdir, rc)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (argv, rc) in cases.items():  # interleaved: a busy moment costs every case alike
            samples[name].append(wall_s(argv, env, workdir, rc))
    result: dict[str, Any] = {name: summary(s) for name, s in samples.items()}
    result["ratio_status_to_baseline"] = round(
        result["status --json"]["median_ms"] / result["baseline"]["median_ms"], 2
    )
    result["ratio_help_to_baseline"] = round(
        result["--help"]["median_ms"] / result["baseline"]["median_ms"], 2
    )
    result["cli_module"] = where
    return result


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.machine(),
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"machine: {m['nproc']} x {m['cpu']}, Python {m['python']}, load {m['load_avg']}")
    print(f"code: {r['cli_module']}")
    print(f"{'':<16}{'median ms':>10}  {'min-max ms':>14}  ratio to baseline")
    ratios = {"baseline": "1.00", "status --json": "", "--help": ""}
    ratios["status --json"] = f"{r['ratio_status_to_baseline']:.2f}  (target <= {TARGET_RATIO:g})"
    ratios["--help"] = f"{r['ratio_help_to_baseline']:.2f}"
    for name in ("baseline", "status --json", "--help"):
        s = r[name]
        spread = f"{s['min_ms']:.0f}-{s['max_ms']:.0f}"
        print(f"{name:<16}{s['median_ms']:>10.1f}  {spread:>14}  {ratios[name]}")
    print(f"({r['runs']} runs of each, interleaved, after one warm-up)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="processes of each kind (default 20)")
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout whose gateway/ is measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        results = measure(args.runs, args.root.resolve(), Path(tmp))
    results["runs"] = args.runs
    results["root"] = str(args.root.resolve())
    results["machine"] = machine()
    results["command"] = " ".join([".venv/bin/python", "bench/bench_cli_start.py", *sys.argv[1:]])
    print_table(results)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / "cli_start.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
