"""``edgegw status | devices | tail``: the technician's views of the running agent.

They talk to the agent over its control socket (``gateway.control``). Output is a
``rich`` table or panel on a terminal (readable on 80 columns), plain text when
piped, or exactly one JSON document with ``--json`` (``tail --json``: one JSON object
per line). Exit code 1 when the agent is not running.

``rich`` is imported by the functions that draw, not at the top: it would cost
``status --json`` more start-up time than all the rest of the command (issue 17).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from gateway import config
from gateway.cli.common import CheckFailed, add_config_option, ago, config_path, print_json
from gateway.control import SOCKET_NAME, client


def add_status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    add_config_option(p)
    p.set_defaults(handler=show_status)


def add_devices_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    add_config_option(p)
    p.set_defaults(handler=show_devices)


def add_tail_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", metavar="DEV_EUI", help="only this device")
    p.add_argument("--raw", action="store_true", help="also show the PHYPayload hex")
    p.add_argument("--count", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_config_option(p)
    p.set_defaults(handler=tail_frames)


def _socket(args: argparse.Namespace) -> Path:
    return config.load(config_path(args)).data_path / SOCKET_NAME


def _request(args: argparse.Namespace, cmd: str) -> dict[str, Any]:
    try:
        return client.request(_socket(args), cmd)
    except client.AgentUnreachable as exc:
        raise CheckFailed(str(exc)) from exc


def show_status(args: argparse.Namespace) -> int:
    doc = _request(args, "status")
    doc.pop("ok", None)
    if args.json:
        print_json(doc)
        return 0
    # Here, not at the top, for start-up time: see the module docstring.
    from rich.console import Console
    from rich.table import Table

    console = Console(width=min(Console().width, 100))
    p, up, box = doc["pipeline"], doc["uplink"], doc["outbox"]
    rejected = ", ".join(
        f"{k.removeprefix('rejected.')} {v}" for k, v in p.items() if k.startswith("rejected.")
    )
    uplink = "[green]connected[/]" if up["connected"] else "[bold red]DISCONNECTED[/]"
    oldest = "-" if box["oldest_age_s"] is None else f"{box['oldest_age_s']:.0f} s"
    clock = doc["clock"]["time_quality"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("agent", f"edgegw {doc['version']} on {doc['gateway_id']}, up {doc['uptime_s']:.0f} s")
    grid.add_row("radio", f"{doc['radio']['url']}  {doc['radio']['frames_per_min']} frames/min")
    grid.add_row(
        "frames", f"accepted {p.get('accepted', 0)}, decoded {p.get('decoded', 0)}, rejected {rejected or 0}"
    )
    grid.add_row(
        "uplink", f"{uplink} to {up['broker']}, records acked {up['forwarder'].get('records_acked', 0)}"
    )
    grid.add_row("outbox", f"{box['depth']} records waiting ({box['bytes']} bytes), oldest {oldest}")
    disk = doc.get("storage") or {}
    if disk.get("disk_full_since"):
        grid.add_row(
            "disk",
            f"[bold red]FULL since {disk['disk_full_since']}[/]: {disk['waiting_in_memory']} records wait "
            "in memory; free space in data_dir (nothing committed is evicted for it)",
        )
    salvage = doc.get("salvage")
    if salvage:
        state = "complete" if salvage["complete"] else "[bold red]NOT complete[/] (resumes at the next start)"
        grid.add_row(
            "database",
            f"[yellow]damaged file salvaged[/] from {salvage['source']}: {salvage['rescued']} rows rescued, "
            f"{salvage['lost']} lost; {state}",
        )
    lost = sum((disk.get("dropped_uncommitted") or {}).values())
    if lost or disk.get("quarantined"):
        grid.add_row(
            "lost",
            f"{lost} uncommitted records dropped (memory queue full), "
            f"{disk.get('quarantined', 0)} quarantined (edgegw buffer quarantine)",
        )
    grid.add_row("clock", clock if clock != "unsynced" else "[yellow]unsynced[/] (no NTP/GPS yet)")
    grid.add_row("devices", f"{doc['devices']['registered']} registered, {doc['devices']['heard']} heard")
    console.print(grid)
    return 0


def show_devices(args: argparse.Namespace) -> int:
    doc = _request(args, "devices")
    if args.json:
        print_json({"devices": doc["devices"]})
        return 0
    # Here, not at the top, for start-up time: see the module docstring.
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("device", "profile", "site", "last seen", "RSSI/SNR", "batt", "24 h", "err"):
        table.add_column(column, no_wrap=column in ("device", "last seen"), overflow="fold")
    for d in doc["devices"]:
        signal = "-" if d.get("rssi_dbm") is None else f"{d['rssi_dbm']:.0f}/{d['snr_db']:.1f}"
        battery = "-" if d.get("battery") is None else f"{d['battery']:.0f}"
        table.add_row(
            d["dev_eui"],
            d["profile"],
            d["site"],
            ago(d.get("last_seen_s")),
            signal,
            battery,
            str(d.get("frames_24h", 0)),
            str(d.get("errors", 0)),
        )
    Console().print(table)
    return 0


def tail_frames(args: argparse.Namespace) -> int:
    # Here, not at the top, for start-up time: see the module docstring.
    from rich.console import Console

    console = Console(highlight=False)
    shown = 0
    try:
        for event in client.stream(_socket(args), "tail"):
            if args.device and event.get("dev_eui") != args.device.lower():
                continue
            if args.json:
                sys.stdout.write(json.dumps(event) + "\n")
                sys.stdout.flush()
            else:
                console.print(_tail_line(event, args.raw))
            shown += 1
            if args.count is not None and shown >= args.count:
                break
    except client.AgentUnreachable as exc:
        raise CheckFailed(str(exc)) from exc
    except KeyboardInterrupt:
        pass
    return 0


def _tail_line(event: dict[str, Any], raw: bool) -> str:
    at = time.strftime("%H:%M:%S", time.localtime(event["at_s"]))
    signal = f"{event['rssi_dbm']:.0f} dBm {event['snr_db']:.1f} dB SF{event['sf']}"
    if event["verdict"] == "accepted":
        verdict = "[green]ok[/]" if not event.get("decode_error") else "[yellow]undecoded[/]"
        what = json.dumps(event.get("data")) if not event.get("decode_error") else event["decode_error"]
        line = f"{at} {verdict} {event['dev_eui']} fcnt {event['fcnt']} port {event['fport']} {signal} {what}"
    else:
        addr = f"DevAddr {event['dev_addr']} " if event.get("dev_addr") else ""
        line = f"{at} [red]{event['reason']}[/] {addr}{signal} {event.get('detail', '')}"
    return f"{line}\n    {event['phy_hex']}" if raw else line
