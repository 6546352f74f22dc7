"""``edgegw buffer``: what waits in the outbox, read straight from the database file.

Shows depth, stored bytes against ``outbox.max_bytes``, the oldest record's age,
per-class counts, eviction totals and the estimated headroom at the recent ingest
rate. It reads the file (the agent need not run); ``buffer flush`` (ask the agent to
drain now) needs the control socket and is not offered: the agent already drains as
soon as the broker is reachable, at ``mqtt.drain_rate_records_s``.
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway import config, db
from gateway.outbox.inspect import read_buffer


def register(sub: Any) -> None:
    p = sub.add_parser("buffer", help="outbox depth, age, bytes, headroom, per-priority counts")
    p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="config file")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=show_buffer)


def show_buffer(args: argparse.Namespace) -> int:
    from gateway.cli.main import config_path, print_json

    cfg = config.load(config_path(args))
    doc = read_buffer(db.db_path(cfg.data_dir))
    if args.json:
        print_json(doc)
        return 0
    print(render(doc))
    return 0


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(doc: dict[str, Any]) -> str:
    used = f" ({doc['used_pct']}% of {_size(doc['max_bytes'])})" if doc["max_bytes"] else ""
    classes = ", ".join(f"{k} {v}" for k, v in doc["depth_by_class"].items())
    evicted = ", ".join(f"{k} {v}" for k, v in sorted(doc["evicted"].items())) or "none"
    headroom = _duration(doc["headroom_s"]) if doc["headroom_s"] is not None else "- (no recent ingest)"
    return "\n".join(
        [
            f"records waiting   {doc['depth']}  [{classes}]",
            f"stored            {_size(doc['bytes'])}{used}",
            f"oldest record     {_duration(doc['oldest_age_s'])}",
            f"ingest            {_size(doc['ingest_bytes_s'])}/s   headroom {headroom}",
            f"evicted (ever)    {evicted}",
        ]
    )
