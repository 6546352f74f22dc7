"""Run every atheris harness for N seconds; print executions and crashes per parser.

    python fuzz/run_all.py --seconds 60 [--jobs 2] [--only udp,phy] [--artifacts DIR]

Each harness runs in its own process. libFuzzer stops at the first crash, so a harness that
crashes is restarted (with the corpus it built so far) until its time is used up, at most
``MAX_RESTARTS`` times; every crash is counted and its reproducer kept in the artifacts
directory (``python fuzz/fuzz_<name>.py <reproducer>`` replays it). Crashes are grouped by
the last line of their traceback. Exit status 1 when any harness crashed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = ("udp", "phy", "codec", "js", "serial", "envelope", "config", "rules", "csv")
MAX_RESTARTS = 20
_EXECUTED = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass
class Outcome:
    name: str
    executions: int = 0
    seconds: float = 0.0
    crashes: list[tuple[str, str]] = field(default_factory=list)  # (signature, reproducer path)
    error: str = ""


def _signature(output: str) -> str:
    """The exception line of the first Python traceback, else libFuzzer's own summary."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "Uncaught Python exception" in line:
            for after in lines[i + 1 :]:
                if after and not after.startswith((" ", "Traceback")):
                    return after.strip()[:160]
    summary = [line for line in lines if line.startswith("SUMMARY:")]
    return summary[0][:160] if summary else "unknown crash"


def run_harness(name: str, seconds: float, artifacts: Path, python: str) -> Outcome:
    outcome = Outcome(name)
    corpus = Path(tempfile.mkdtemp(prefix=f"edgegw-corpus-{name}-"))
    script = HERE / f"fuzz_{name}.py"
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    first = True
    for _ in range(MAX_RESTARTS + 1):
        left = deadline - time.monotonic()
        if left < 1:
            break
        args = [
            python,
            str(script),
            f"-max_total_time={max(1, int(left))}",
            "-print_final_stats=1",
            "-timeout=10",
            f"-artifact_prefix={artifacts}/{name}-",
        ]
        # The first run seeds the corpus (no directory given); restarts continue from it.
        if not first:
            args.append(str(corpus))
        proc = subprocess.run(args, capture_output=True, text=True, errors="replace", check=False)
        output = proc.stdout + proc.stderr
        outcome.executions += sum(int(n) for n in _EXECUTED.findall(output))
        if first:
            seeded = re.search(r"INFO:\s+\d+ files found in (\S+)", output)
            if seeded:
                corpus = Path(seeded.group(1))
            first = False
        if proc.returncode == 0:
            break
        found = _ARTIFACT.findall(output)
        if not found:
            outcome.error = output[-2000:]
            break
        outcome.crashes.append((_signature(output), found[-1]))
    outcome.seconds = time.monotonic() - started
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time per harness (default 60)")
    parser.add_argument("--jobs", type=int, default=1, help="harnesses run at the same time (default 1)")
    parser.add_argument("--only", default="", help="comma-separated harness names (default: all)")
    parser.add_argument("--artifacts", type=Path, default=None, help="where crash reproducers go")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(HARNESSES)
    unknown = sorted(set(names) - set(HARNESSES))
    if unknown:
        parser.error(f"unknown harness(es) {unknown}; known: {', '.join(HARNESSES)}")
    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="edgegw-fuzz-artifacts-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(pool.map(lambda n: run_harness(n, args.seconds, artifacts, sys.executable), names))
    print(f"{'parser':<10} {'seconds':>8} {'executions':>12} {'exec/s':>8} {'crashes':>8}")
    for o in outcomes:
        rate = o.executions / o.seconds if o.seconds else 0.0
        print(f"{o.name:<10} {o.seconds:>8.0f} {o.executions:>12,} {rate:>8,.0f} {len(o.crashes):>8}")
    print(f"{'total':<10} {'':>8} {sum(o.executions for o in outcomes):>12,}")
    for o in outcomes:
        for signature in sorted({s for s, _ in o.crashes}):
            paths = [p for s, p in o.crashes if s == signature]
            print(f"crash {o.name}: {signature}  ({len(paths)}x, e.g. {paths[0]})")
        if o.error:
            print(f"error {o.name}: harness did not run:\n{o.error}")
    print(f"artifacts: {artifacts}")
    return 1 if any(o.crashes or o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
