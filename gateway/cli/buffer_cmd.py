"""``edgegw buffer``: what waits in the outbox, read straight from the database file.

Shows depth, stored bytes against ``outbox.max_bytes``, the oldest record's age,
per-class counts, eviction totals and the estimated headroom at the recent ingest
rate. It reads the file (the agent need not run).

``edgegw buffer flush`` asks the running agent, over its control socket, to drain now
(``gateway.control.queries.flush``: commit at once, no retry wait, no drain-rate limit
until the backlog is empty); ``--wait S`` then follows the depth until it is 0.

``edgegw buffer quarantine`` lists the records set aside because the broker never takes them
(read from the file). ``--requeue`` moves them all back into the outbox: done by the running
agent (``gateway.control.queries.requeue_quarantined``, with its next group commit), or, when
no agent runs, in the file under the data directory's instance lock (so no agent can start
meanwhile; an agent reads the outbox's totals when it starts).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from gateway import config, db, instance_lock
from gateway.cli import layout
from gateway.cli.common import CheckFailed, UsageError, add_config_option, config_path, print_json
from gateway.control import SOCKET_NAME, client
from gateway.errors import AlreadyRunning, StorageError
from gateway.outbox.inspect import read_buffer, read_quarantine, requeue_in_file

WAIT_POLL_S = 0.5


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_option(p)
    p.add_argument(
        "action",
        nargs="?",
        choices=["flush", "quarantine"],
        help="flush: ask the running agent to drain the backlog now; "
        "quarantine: the records the broker never takes",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--wide", action="store_true", help="no line wrapped to the terminal width")
    p.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="flush: wait up to SECONDS for the outbox to empty (exit 1 if it does not)",
    )
    p.add_argument(
        "--requeue",
        action="store_true",
        help="quarantine: move every quarantined record back into the outbox, to be sent again",
    )
    p.set_defaults(handler=show_buffer)


def show_buffer(args: argparse.Namespace) -> int:
    cfg = config.load(config_path(args))
    if args.requeue and args.action != "quarantine":
        raise UsageError("--requeue goes with 'buffer quarantine'")
    if args.wait is not None and args.action != "flush":
        raise UsageError("--wait goes with 'buffer flush'")
    if args.action == "flush":
        return flush(args, cfg)
    if args.action == "quarantine":
        return requeue(args, cfg) if args.requeue else show_quarantine(args, cfg)
    doc = read_buffer(db.db_path(cfg.data_dir))
    if args.json:
        print_json(doc)
        return 0
    print(render(doc, layout.width(args.wide)))
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


def render(doc: dict[str, Any], room: int | None = layout.DEFAULT_WIDTH) -> str:
    """The ``buffer`` view; each value wraps at spaces under itself within ``room`` columns."""
    used = f" ({doc['used_pct']}% of {_size(doc['max_bytes'])})" if doc["max_bytes"] else ""
    classes = ", ".join(f"{k} {v}" for k, v in doc["depth_by_class"].items())
    evicted = ", ".join(f"{k} {v}" for k, v in sorted(doc["evicted"].items())) or "none"
    headroom = _duration(doc["headroom_s"]) if doc["headroom_s"] is not None else "- (no recent ingest)"
    rows = [
        ("records waiting", f"{doc['depth']}  [{classes}]"),
        ("stored", f"{_size(doc['bytes'])}{used}"),
        ("oldest record", _duration(doc["oldest_age_s"])),
        ("ingest", f"{_size(doc['ingest_bytes_s'])}/s   headroom {headroom}"),
        ("evicted (ever)", evicted),
    ]
    return "\n".join(line for label, text in rows for line in layout.labelled(label, text, room, 18))


def flush(args: argparse.Namespace, cfg: config.Config) -> int:
    """Ask the agent to drain now; with ``--wait``, follow the depth (exit 1 if not empty in time)."""
    sock = cfg.data_path / SOCKET_NAME
    try:
        answer = client.request(sock, "flush")
        depth = int(answer["depth"])
        if args.wait is not None:
            deadline = time.monotonic() + max(0.0, args.wait)
            while depth > 0 and time.monotonic() < deadline:
                time.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))
                depth = int(client.request(sock, "status")["outbox"]["depth"])
    except client.AgentUnreachable as exc:
        raise CheckFailed(f"{exc}; buffer flush needs the running agent") from exc
    doc = {
        "requested": True,
        "depth": depth,
        "connected": answer["connected"],
        "drain_rate_records_s": answer["drain_rate_records_s"],
    }
    if args.json:
        print_json(doc)
    else:
        print(render_flush(doc, waited=args.wait is not None))
    return 1 if args.wait is not None and depth > 0 else 0


def render_flush(doc: dict[str, Any], *, waited: bool) -> str:
    if waited:
        head = "outbox empty" if doc["depth"] == 0 else f"{doc['depth']} records still waiting"
    else:
        head = f"flush requested: {doc['depth']} records waiting, draining without the rate limit"
    if not doc["connected"]:
        head += "\nbroker not connected: the backlog drains as soon as it is back"
    return head


def show_quarantine(args: argparse.Namespace, cfg: config.Config) -> int:
    doc = read_quarantine(db.db_path(cfg.data_dir))
    if args.json:
        print_json(doc)
    else:
        print(render_quarantine(doc))
    return 0


def render_quarantine(doc: dict[str, Any]) -> str:
    if not doc["quarantined"]:
        return "no quarantined records"
    reasons = ", ".join(f"{k} {v}" for k, v in doc["by_reason"].items())
    width = max([36, *(len(row["id"]) for row in doc["records"])])  # an alert's id is longer
    lines = [
        f"quarantined       {doc['quarantined']} records, {_size(doc['bytes'])}  [{reasons}]",
        "",
        f"{'ID':<{width}} {'KIND':<7} {'SIZE':>8} {'REASON':<9} WHEN (UTC)",
    ]
    for row in doc["records"]:
        when = row["quarantined_at"][:16].replace("T", " ")  # to the minute: 80 columns for a reading's id
        lines.append(
            f"{row['id']:<{width}} {row['kind']:<7} {_size(row['size']):>8} {row['reason']:<9} {when}"
        )
    if len(doc["records"]) < doc["quarantined"]:
        lines.append(f"... the newest {len(doc['records'])} shown (--json: the same)")
    lines += ["", "once the cause is fixed (the broker's limit): edgegw buffer quarantine --requeue"]
    return "\n".join(lines)


def requeue(args: argparse.Namespace, cfg: config.Config) -> int:
    """Every quarantined record back into the outbox: by the running agent, else in the file."""
    sock = cfg.data_path / SOCKET_NAME
    try:
        answer = client.request(sock, "requeue_quarantined")
        doc = {key: answer[key] for key in ("done", "requeued", "quarantined", "connected")}
        doc["by"] = "agent"
    except client.AgentUnreachable as unreachable:
        path = db.db_path(cfg.data_dir)
        if not path.exists():
            raise CheckFailed(f"no database at {path} (is data_dir right?)") from None
        # No agent answers: requeue in the file, holding the instance lock so that none starts
        # meanwhile (an agent that holds it but does not answer is left alone).
        try:
            lock = instance_lock.acquire(cfg.data_path)
        except (AlreadyRunning, StorageError) as exc:
            raise CheckFailed(f"{unreachable}; and the file cannot be changed: {exc}") from None
        try:
            moved = requeue_in_file(path)
        finally:
            lock.release()
        doc = {"done": True, "requeued": moved, "quarantined": 0, "connected": None, "by": "file"}
    if args.json:
        print_json(doc)
    else:
        print(render_requeue(doc))
    return 0 if doc["done"] else 1


def render_requeue(doc: dict[str, Any]) -> str:
    if not doc["done"]:
        return (
            "requeue asked, not done yet: the agent's group commit did not go through (disk full?); "
            "it happens with the next one that does"
        )
    where = "by the running agent" if doc["by"] == "agent" else "in the database file (no agent running)"
    head = f"{doc['requeued']} quarantined records moved back into the outbox {where}"
    if doc["by"] == "file":
        return head + "\nthey are sent when the agent starts"
    if doc["connected"] is False:
        return head + "\nbroker not connected: they are sent as soon as it is back"
    return head + "\nthey are sent now; one the broker still refuses is quarantined again"
