"""Benchmark: rule evaluation per reading with 200 rules loaded, vs a bare threshold check, in one run.

Builds a rules file of 200 rules over 5 profiles and 10 site zones (thresholds with
hysteresis, rates of change, flat-line checks, flags, an all/any combination) plus a
silence watchdog per profile, and 1,000 devices spread over the zones. Then feeds the
same readings (a) to ``RuleEngine.evaluate`` and (b) to a bare ``if value > limit``
check, and prints µs per reading for both and the difference (the cost the rules add).
A second pass makes every rule select every device (the worst case: 200 matching rules).
Target (issue 6): ≤ 20 µs added per reading with 200 rules loaded.

Then the cost of keeping the rules' state durable (``gateway.rules_state``): the same
readings in groups of 50 (a group commit), each group's changed device states taken and
upserted into a real SQLite file inside the open transaction (the COMMIT and its fsync are the
records' own, shared, and not counted), printed as µs added per reading next to evaluation.

    python bench/bench_rules.py [--readings N] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

from gateway import db
from gateway.rules import ReadingFacts, RuleEngine, RuleSet, parse_rules
from gateway.rules_state import _write

PROFILES = ("milesight/em310-udl", "milesight/ws302", "decentlab/dl-rad", "parametric/pcr2", "nas/ul2030")
ZONES = 10


def rules_yaml(*, all_match: bool) -> str:
    lines = ["schema_version: 1", "rules:"]
    kinds = [
        "{threshold: {value: v, above: 80, clear_below: 30}}",
        "{rate_of_change: {value: v, window_s: 900, above: 10, clear_below: 2}}",
        "{stuck: {value: v, readings: 6, tolerance: 0}}",
        "{any: [{flag: {field: tilt, equals: true}},"
        " {threshold: {value: battery, below: 10, clear_above: 20}}]}",
    ]
    n = 0
    for profile in PROFILES:
        for zone in range(ZONES):
            for kind in kinds:
                sel = (
                    "{sites: ['*']}" if all_match else f"{{profiles: [{profile}], sites: ['zone-{zone}/*']}}"
                )
                lines.append(f"  - {{id: r{n}, devices: {sel}, when: {kind}}}")
                n += 1
    assert n == 200, n
    return "\n".join(lines) + "\n"


def make_readings(count: int) -> list[ReadingFacts]:
    rng = random.Random(6)
    devices = [(f"{i:016x}", PROFILES[i % 5], f"zone-{i % ZONES}/s{i}") for i in range(1000)]
    out = []
    for i in range(count):
        dev, profile, site = devices[i % len(devices)]
        data = {"v": rng.uniform(0, 100), "battery": rng.randint(5, 100), "tilt": rng.random() < 0.01}
        out.append(ReadingFacts(dev, profile, 1_700_000_000.0 + i * 0.5, data, site))
    return out


def bare(readings: list[ReadingFacts]) -> float:
    start = time.perf_counter()
    alerts = 0
    for r in readings:
        if r.data.get("v", 0) > 80:  # what a hard-coded gateway would do
            alerts += 1
    return time.perf_counter() - start


def with_rules(readings: list[ReadingFacts], rules: RuleSet) -> tuple[float, int]:
    engine = RuleEngine(rules)
    start = time.perf_counter()
    outputs = 0
    for r in readings:
        outputs += len(engine.evaluate(r))
    return time.perf_counter() - start, outputs


def with_state(readings: list[ReadingFacts], rules: RuleSet, group: int = 50) -> tuple[float, float]:
    """(seconds evaluating, seconds taking and writing the changed state), groups of ``group``."""
    import tempfile
    from pathlib import Path

    engine = RuleEngine(rules)
    eval_s = state_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        conn = db.connect(db.db_path(Path(tmp)))
        for start in range(0, len(readings), group):
            t0 = time.perf_counter()
            for r in readings[start : start + group]:
                engine.evaluate(r)
            t1 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            _write(conn, engine.take_changes())
            t2 = time.perf_counter()
            conn.execute("COMMIT")
            eval_s += t1 - t0
            state_s += t2 - t1
        conn.close()
    return eval_s, state_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    readings = make_readings(args.readings)
    result: dict[str, Any] = {"readings": args.readings, "rules": 200}
    for name, all_match in (("typical", False), ("all_rules_match", True)):
        rules = parse_rules(rules_yaml(all_match=all_match), file="bench")
        bare_s = bare(readings)
        rules_s, outputs = with_rules(readings, rules)
        result[name] = {
            "bare_us_per_reading": round(bare_s / args.readings * 1e6, 3),
            "rules_us_per_reading": round(rules_s / args.readings * 1e6, 3),
            "added_us_per_reading": round((rules_s - bare_s) / args.readings * 1e6, 3),
            "outputs": outputs,
        }
        eval_s, state_s = with_state(readings, rules)
        result[name]["state_us_per_reading"] = round(state_s / args.readings * 1e6, 3)
        result[name]["state_vs_evaluation"] = round(state_s / eval_s, 2)
    if args.json:
        print(json.dumps(result))
        return
    for name in ("typical", "all_rules_match"):
        r = result[name]
        print(
            f"{name:16} bare {r['bare_us_per_reading']:8.3f} µs  rules {r['rules_us_per_reading']:8.3f} µs"
            f"  added {r['added_us_per_reading']:8.3f} µs/reading  ({r['outputs']} outputs)"
        )
        print(
            f"{'':16} durable state {r['state_us_per_reading']:8.3f} µs/reading "
            f"({r['state_vs_evaluation']:.2f} x the evaluation)"
        )


if __name__ == "__main__":
    main()
