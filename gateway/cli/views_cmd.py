"""``edgegw status | devices | tail``: the technician's views of the running agent.

They talk to the agent over its control socket (``gateway.control``). Output is plain text
that keeps to the width of ``gateway.cli.layout`` (80 columns when piped, ``--wide``: no
limit), with a few words coloured on a terminal, or JSON with ``--json`` (one document;
``tail --json`` and ``status --watch --json``: one JSON object per line). Exit code 1 when
the agent is not running. ``devices`` filters (``--site``, ``--silent-for``) and sorts
(``--sort``) here, on the agent's answer; ``--json`` gets the same rows.

``rich`` is imported by ``tail`` only, not at the top: it would cost ``status --json`` more
start-up time than all the rest of the command (issue 17).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from gateway import config
from gateway.cli import layout
from gateway.cli.common import CheckFailed, UsageError, add_config_option, ago, config_path, print_json
from gateway.control import SOCKET_NAME, client
from gateway.errors import GatewayError

WATCH_DEFAULT_S: Final = 2.0
WATCH_MIN_S: Final = 0.5
"""``status --watch`` never asks the agent more often than this (each refresh is a query)."""
WATCH_MAX_S: Final = 3600.0
SORT_KEYS: Final = ("last_seen", "site", "dev_eui", "rssi")
_UNITS_S: Final = {"s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_STATUS_STYLES: Final = {
    "DISCONNECTED": "1;31", "FULL": "1;31", "NOT": "1;31", "connected": "32", "unsynced": "33",
    "damaged": "33", "STALE": "1;31", "REFUSED": "1;31", "REVERTED": "1;31", "trial": "33", "alive": "32",
}  # fmt: skip


def duration_s(text: str) -> float:
    """``90s``, ``30min`` (or ``30m``), ``2h``, ``1d``, or plain seconds: for argparse ``type=``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|min|m|h|d)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration (like 90s, 30min, 2h, 1d): {text!r}")
    return float(match.group(1)) * _UNITS_S[match.group(2) or "s"]


def _watch_interval_s(text: str) -> float:
    value = duration_s(text)
    if not WATCH_MIN_S <= value <= WATCH_MAX_S:
        raise argparse.ArgumentTypeError(f"--watch: between {WATCH_MIN_S:g} and {WATCH_MAX_S:g} s")
    return value


def add_status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--watch",
        nargs="?",
        const=WATCH_DEFAULT_S,
        type=_watch_interval_s,
        metavar="S",
        help=f"refresh every S seconds (default {WATCH_DEFAULT_S:g}) until Ctrl-C",
    )
    p.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N refreshes")
    p.add_argument("--wide", action="store_true", help="no line cut nor wrapped to the terminal width")
    add_config_option(p)
    p.set_defaults(handler=show_status)


def add_devices_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument("--wide", action="store_true", help="every column in full (lines may exceed the terminal)")
    p.add_argument("--site", metavar="PATTERN", help="only sites matching PATTERN (shell pattern: 'demo/*')")
    p.add_argument(
        "--silent-for",
        type=duration_s,
        metavar="DURATION",
        help="only devices not heard for DURATION (90s, 30min, 2h, 1d) or never",
    )
    p.add_argument(
        "--sort",
        choices=SORT_KEYS,
        default="dev_eui",
        help="last_seen: longest silent first; rssi: weakest first (default dev_eui)",
    )
    p.add_argument(
        "--link",
        action="store_true",
        help="the radio link instead of the readings: class, data rate, TX power and link margin (ADR)",
    )
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


def _request(args: argparse.Namespace, cmd: str, **request: Any) -> dict[str, Any]:
    try:
        return client.request(_socket(args), cmd, **request)
    except client.AgentUnreachable as exc:
        raise CheckFailed(str(exc)) from exc


# --- status -------------------------------------------------------------------------------------


def show_status(args: argparse.Namespace) -> int:
    if args.count is not None and (args.watch is None or args.count < 1):
        raise UsageError("--count N (N >= 1) goes with --watch")
    if args.watch is None:
        doc = _request(args, "status")
        doc.pop("ok", None)
        if args.json:
            print_json(doc)
        else:
            _print_lines(status_lines(doc, layout.width(args.wide)))
        return 0
    return _watch(args)


def _watch(args: argparse.Namespace) -> int:
    """Refresh until Ctrl-C (exit 0) or ``--count``: the screen is redrawn on a terminal;
    piped, each refresh follows the last under a ``--- time`` line."""
    redraw = layout.colour_enabled()
    shown = 0
    try:
        while True:
            doc = _request(args, "status")
            doc.pop("ok", None)
            if args.json:
                sys.stdout.write(json.dumps(doc) + "\n")
            else:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
                head = f"every {args.watch:g} s, {stamp} (Ctrl-C to stop)"
                sys.stdout.write("\x1b[H\x1b[2J" if redraw else "" if shown == 0 else "\n")
                _print_lines([layout.clip(head if redraw else f"--- {stamp}", layout.width(args.wide))])
                _print_lines(status_lines(doc, layout.width(args.wide)))
            sys.stdout.flush()
            shown += 1
            if args.count is not None and shown >= args.count:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(layout.paint(line, _STATUS_STYLES))


def status_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) of the ``status`` screen, from the agent's answer."""
    p, up, box = doc["pipeline"], doc["uplink"], doc["outbox"]
    rejected = ", ".join(
        f"{k.removeprefix('rejected.')} {v}" for k, v in p.items() if k.startswith("rejected.")
    )
    uplink = "connected" if up["connected"] else "DISCONNECTED" + _since(up.get("disconnected_since_s"))
    oldest = "-" if box["oldest_age_s"] is None else f"{box['oldest_age_s']:.0f} s"
    clock = doc["clock"]["time_quality"]
    rows = [
        ("agent", f"edgegw {doc['version']} on {doc['gateway_id']}, up {doc['uptime_s']:.0f} s"),
        ("radio", f"{doc['radio']['url']}  {doc['radio']['frames_per_min']} frames/min"),
        (
            "frames",
            f"accepted {p.get('accepted', 0)}, decoded {p.get('decoded', 0)}, rejected {rejected or 0}",
        ),
        ("uplink", f"{uplink} to {up['broker']}, records acked {up['forwarder'].get('records_acked', 0)}"),
    ]
    rows[2:2] = [("forwarder", _forwarder_text(f)) for f in doc["radio"].get("forwarders") or []]
    if not up["connected"] and up.get("last_error"):
        rows.append(("why", f"{up['last_error']} ({ago(up.get('last_error_at_s'))})"))
    rows.append(("outbox", f"{box['depth']} records waiting ({box['bytes']} bytes), oldest {oldest}"))
    rows.extend(_downlinks_rows(doc.get("downlinks")))
    rows.extend(_rule_downlinks_rows(p))
    rows.extend(_config_rows(doc.get("config")))
    rows.extend(_rules_rows(doc.get("rules")))
    disk = doc.get("storage") or {}
    if disk.get("disk_full_since"):
        rows.append((
            "disk",
            f"FULL since {disk['disk_full_since']}: {disk['waiting_in_memory']} records wait "
            "in memory; free space in data_dir (nothing committed is evicted for it)",
        ))  # fmt: skip
    salvage = doc.get("salvage")
    if salvage:
        state = "complete" if salvage["complete"] else "NOT complete (resumes at the next start)"
        rows.append((
            "database",
            f"damaged file salvaged from {salvage['source']}: {salvage['rescued']} rows rescued, "
            f"{salvage['lost']} lost; {state}",
        ))  # fmt: skip
    lost = sum((disk.get("dropped_uncommitted") or {}).values())
    if lost or disk.get("quarantined"):
        rows.append((
            "lost",
            f"{lost} uncommitted records dropped (memory queue full), "
            f"{disk.get('quarantined', 0)} quarantined (edgegw buffer quarantine)",
        ))  # fmt: skip
    rows.append(("clock", clock if clock != "unsynced" else "unsynced (no NTP/GPS yet)"))
    rows.append(("devices", f"{doc['devices']['registered']} registered, {doc['devices']['heard']} heard"))
    return rows


def _clock(at_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at_s))


def _since(at_s: float | None) -> str:
    return f" since {_clock(at_s)} ({ago(at_s)})" if at_s else ""


def _forwarder_text(f: dict[str, Any]) -> str:
    """One packet forwarder: alive or STALE, and when its last PULL_DATA and PUSH_DATA came."""

    def age(value: float | None) -> str:
        return "never" if value is None else f"{value:.0f} s ago"

    where = f" at {f['address']}" if f.get("address") else ""
    state = "alive" if f.get("alive") else "STALE"
    return (
        f"{f['gateway_eui']}{where} {state}: PULL_DATA {age(f.get('last_pull_age_s'))}, "
        f"PUSH_DATA {age(f.get('last_push_age_s'))}"
    )


def _downlinks_rows(downlinks: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not downlinks:
        return []
    failed = downlinks.get("not_sent") or {}
    reasons = ", ".join(f"{reason} {n}" for reason, n in failed.items())
    text = f"sent {downlinks.get('sent', 0)}, not sent {sum(failed.values())}"
    return [("downlinks", f"{text} ({reasons})" if reasons else text)]


def _rule_downlinks_rows(pipeline: dict[str, Any]) -> list[tuple[str, str]]:
    """How the rules' downlink commands ended, by state (``rules.downlink.<state>`` counters)."""
    prefix = "rules.downlink."
    ended = {k.removeprefix(prefix): n for k, n in pipeline.items() if k.startswith(prefix)}
    if not ended:
        return []
    return [("rule cmds", ", ".join(f"{state} {n}" for state, n in sorted(ended.items())))]


def _config_rows(state: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The configuration in effect: the local file alone, or a pushed version and its state."""
    if not state:
        return []
    if state.get("version") is None:
        text = "local file only (nothing pushed)"
    else:
        keys = ", ".join(state.get("overlay_keys") or []) or "nothing"
        text = f"pushed {state['version']} {state['state']}, over the local file: {keys}"
    reverted = state.get("reverted")
    if state.get("state") == "reverted" and reverted:
        text += f"; {reverted['version']} REVERTED at {reverted['at']}: {reverted['reason']}"
    return [("config", text)]


def _rules_rows(rules: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A refused rules reload: when, and why (the previous rules keep running)."""
    last = (rules or {}).get("last_reload")
    if not last or last.get("ok"):
        return []
    when = _since(last.get("at_s"))
    return [("rules", f"reload REFUSED{when}, the previous rules run: {last.get('error')}")]


def status_lines(doc: dict[str, Any], room: int | None) -> list[str]:
    rows = status_rows(doc)
    label_width = max(len(label) for label, _ in rows) + 2
    return [line for label, text in rows for line in layout.labelled(label, text, room, label_width)]


# --- devices ------------------------------------------------------------------------------------

DEVICE_COLUMNS: Final = (
    layout.Column("device"),
    layout.Column("profile", shrink=True, min_width=8),
    layout.Column("site", shrink=True, min_width=8),
    layout.Column("last seen"),
    layout.Column("RSSI/SNR"),
    layout.Column("batt", right=True),
    layout.Column("24 h", right=True),
    layout.Column("err", right=True),
)


def select_devices(
    rows: list[dict[str, Any]],
    *,
    site: str | None,
    silent_for_s: float | None,
    sort: str,
    now_s: float,
) -> list[dict[str, Any]]:
    """The rows ``--site`` and ``--silent-for`` keep, in ``--sort`` order."""
    if site is not None:
        rows = [d for d in rows if fnmatch.fnmatchcase((d.get("site") or "").lower(), site.lower())]
    if silent_for_s is not None:
        rows = [d for d in rows if not d.get("last_seen_s") or now_s - d["last_seen_s"] >= silent_for_s]
    keys: dict[str, Callable[[dict[str, Any]], Any]] = {
        # Never heard first, then the longest silent: the ones to go and look at.
        "last_seen": lambda d: d.get("last_seen_s") or 0.0,
        "site": lambda d: (d.get("site") or "", d["dev_eui"]),
        "dev_eui": lambda d: d["dev_eui"],
        # Weakest first; never heard (no RSSI) last.
        "rssi": lambda d: (d.get("rssi_dbm") is None, d.get("rssi_dbm") or 0.0),
    }
    return sorted(rows, key=keys[sort])


def show_devices(args: argparse.Namespace) -> int:
    doc = _request(args, "devices")
    rows = select_devices(
        doc["devices"], site=args.site, silent_for_s=args.silent_for, sort=args.sort, now_s=time.time()
    )
    if args.json:
        print_json({"devices": rows})
        return 0
    lines = link_lines if args.link else devices_lines
    for line in lines(rows, layout.width(args.wide)):
        print(line)
    return 0


def devices_lines(rows: list[dict[str, Any]], room: int | None) -> list[str]:
    cells = []
    for d in rows:
        signal = "-" if d.get("rssi_dbm") is None else f"{d['rssi_dbm']:.0f}/{d['snr_db']:.1f}"
        battery = "-" if d.get("battery") is None else f"{d['battery']:.0f}"
        if d.get("battery") is None and d.get("dev_status"):
            battery = dev_status_battery(d["dev_status"])
        cells.append([
            d["dev_eui"], d["profile"], d["site"] or "-", ago(d.get("last_seen_s")), signal, battery,
            str(d.get("frames_24h", 0)), str(d.get("errors", 0)),
        ])  # fmt: skip
    return layout.table(DEVICE_COLUMNS, cells, room)


LINK_COLUMNS: Final = (
    layout.Column("device"),
    layout.Column("class"),
    layout.Column("site", shrink=True, min_width=8),
    layout.Column("last seen"),
    layout.Column("RSSI/SNR"),
    layout.Column("DR", right=True),
    layout.Column("TX dBm", right=True),
    layout.Column("margin dB", right=True),
)


def link_lines(rows: list[dict[str, Any]], room: int | None) -> list[str]:
    """``devices --link``: each device's class (A or C, the registry's), data rate, TX power and link
    margin (best SNR of its last uplinks above the demodulation floor of its data rate:
    ``gateway.lorawan.adr``). 80 columns hold every column with the site cut to 8."""
    cells = []
    for d in rows:
        signal = "-" if d.get("rssi_dbm") is None else f"{d['rssi_dbm']:.0f}/{d['snr_db']:.1f}"
        margin = d.get("link_margin_db")
        cells.append([
            d["dev_eui"], d.get("class") or "-", d["site"] or "-", ago(d.get("last_seen_s")), signal,
            "-" if d.get("dr") is None else f"DR{d['dr']}",
            "-" if d.get("tx_power_dbm") is None else str(d["tx_power_dbm"]),
            "-" if margin is None else f"{margin:.1f}",
        ])  # fmt: skip
    return layout.table(LINK_COLUMNS, cells, room)


def dev_status_battery(status: dict[str, Any]) -> str:
    """The battery of a device's last DevStatusAns in a few characters: ``79%``, ``mains`` or ``?``
    (the device cannot measure it); the decoder's own battery output, when there is one, comes first."""
    if status["power"] == "mains":
        return "mains"
    if status.get("battery_pct") is None:
        return "?"
    return f"{status['battery_pct']:.0f}%"


# --- tail ---------------------------------------------------------------------------------------


def tail_frames(args: argparse.Namespace) -> int:
    # Here, not at the top, for start-up time: see the module docstring.
    from rich.console import Console

    device = _tail_device(args) if args.device else None
    console = Console(highlight=False)
    shown = 0
    try:
        for event in client.stream(_socket(args), "tail"):
            if device is not None and event.get("dev_eui") != device:
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


def _tail_device(args: argparse.Namespace) -> str:
    """``--device``'s DevEUI as the events spell it; a bad one is refused at once (exit 2), and
    one the agent does not know is said once, on stderr: until it is registered, nothing shows."""
    device: str = args.device.strip().lower().replace(":", "").replace("-", "")
    if len(device) != 16 or any(c not in "0123456789abcdef" for c in device):
        raise UsageError(f"--device: a DevEUI is 16 hex digits, got {args.device!r}")
    try:
        client.request(_socket(args), "device", dev_eui=device, since_s=time.time())
    except client.AgentUnreachable as exc:
        raise CheckFailed(str(exc)) from exc
    except GatewayError:  # the agent's "device ... is not registered"
        print(
            f"edgegw: {device} is not registered: showing nothing until it is "
            "(edgegw device add; the agent serves it within a few seconds)",
            file=sys.stderr,
        )
    return device


def _tail_line(event: dict[str, Any], raw: bool) -> str:
    at = time.strftime("%H:%M:%S", time.localtime(event["at_s"]))
    if event.get("outcome"):
        return _outcome_line(at, event)  # no frame of its own: nothing raw to show
    if event["verdict"] == "downlink":
        line = _downlink_line(at, event)
    else:
        line = _uplink_line(at, event)
    return f"{line}\n    {event['phy_hex']}" if raw else line


_OUTCOME_STYLES = {"sent": "cyan", "acknowledged": "green"}


def _outcome_line(at: str, event: dict[str, Any]) -> str:
    """The end of a queued downlink (``gateway.pipeline.outcome_event``): its state, and who asked."""
    state = event["status"]
    style = _OUTCOME_STYLES.get(state, "red")
    ref = event.get("ref") or {}
    asked = ""
    if ref.get("source") == "platform":
        asked = f" platform {ref.get('name')} seq {ref.get('seq')}"
    elif ref.get("source") == "rule":
        asked = f" rule {ref.get('name')}"
    detail = f" ({event['detail']})" if event.get("detail") else ""
    return f"{at} [bold]DOWN[/] [{style}]{state.upper()}[/] {event.get('dev_eui') or '-'}{asked}{detail}"


def _uplink_line(at: str, event: dict[str, Any]) -> str:
    signal = f"{event['rssi_dbm']:.0f} dBm {event['snr_db']:.1f} dB SF{event['sf']}"
    if event["verdict"] == "accepted":
        verdict = "[green]ok[/]" if not event.get("decode_error") else "[yellow]undecoded[/]"
        what = json.dumps(event.get("data")) if not event.get("decode_error") else event["decode_error"]
        return f"{at} {verdict} {event['dev_eui']} fcnt {event['fcnt']} port {event['fport']} {signal} {what}"
    addr = f"DevAddr {event['dev_addr']} " if event.get("dev_addr") else ""
    return f"{at} [red]{event['reason']}[/] {addr}{signal} {event.get('detail', '')}"


def _downlink_line(at: str, event: dict[str, Any]) -> str:
    """A downlink, marked ``DOWN`` (and its status in red when it was not sent)."""
    status = "[cyan]sent[/]" if event["status"] == "sent" else f"[red]not sent: {event['status']}[/]"
    fcnt = "-" if event.get("fcnt_down") is None else event["fcnt_down"]
    port = "-" if event.get("fport") is None else event["fport"]
    rf = f"{event['freq_hz'] / 1e6:.1f} MHz SF{event['sf']} {event['window'].upper()}"
    detail = f" ({event['detail']})" if event.get("detail") else ""
    # A multicast frame has no DevEUI: it goes to every member of its group.
    to = f"group {event['group']}" if event.get("group") else event.get("dev_eui") or "-"
    return f"{at} [bold]DOWN[/] {status} {to} fcnt {fcnt} port {port} {rf}{detail}"
