"""``edgegw device show | verify``: one device as the running agent sees it.

``show`` asks the agent's control socket for the registry entry, what was heard, the last
readings (``gateway.history``) and the profile's outputs, and draws a small chart of one decoded
value: ``--value``, else the profile's main quantity (``main_field``), on a scale that shows the
real range (``chart_scale``). ``verify`` watches the ``tail`` stream until the device has joined
and sent decodable uplinks with a usable signal — what an installer checks before leaving the
site. Neither changes anything. The signal verdict is in ``signal_verdict`` (pure) so that tests
and docs share the thresholds.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway import config
from gateway.cli.common import CheckFailed, UsageError, ago, config_path, print_json
from gateway.control import SOCKET_NAME, client
from gateway.errors import GatewayError
from gateway.messages import DevEui

MIN_RSSI_DBM = -115.0
"""Below this the link works only with luck (rain, a parked lorry): move the antenna or the gateway."""
MIN_SNR_MARGIN_DB = 5.0
"""Required SNR above the demodulation floor of the spreading factor used."""
SNR_FLOOR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
"""LoRa demodulator SNR limit per SF (Semtech SX1276/77/78/79 datasheet, "Range of Spreading Factors")."""
SPARK = "▁▂▃▄▅▆▇█"
SPAN_FLOOR_FRACTION = 0.1
"""The chart's scale spans at least this fraction of the largest value: 24 → 25 cm is a small step,
not the whole height of the chart (a flat line sits in the middle of it)."""
SECONDARY_WORDS = (
    "battery", "rssi", "snr", "signal", "status", "alarm", "version", "interval", "duration", "serial",
    "reset", "class", "config", "event", "vdd",
)  # fmt: skip
"""A quantity (or, without a profile's outputs, a field name) with one of these words is not what a
device measures: battery, radio signal, status, configuration. ``main_field`` passes them over."""


def register(dsub: Any) -> None:
    """Add ``show`` and ``verify`` to the ``edgegw device`` sub-commands."""
    show = dsub.add_parser("show", help="details, last readings and a chart of one value (running agent)")
    show.add_argument("dev_eui", metavar="DEV_EUI")
    show.add_argument(
        "--value", metavar="FIELD", help="decoded value to chart (default: the profile's main quantity)"
    )
    show.add_argument("--hours", type=float, default=24.0, metavar="N", help="chart the last N hours")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=show_device)

    verify = dsub.add_parser("verify", help="wait for the device's join/uplinks and give a verdict")
    verify.add_argument("dev_eui", metavar="DEV_EUI")
    verify.add_argument("--timeout", type=float, default=300.0, metavar="S", help="give up after S seconds")
    verify.add_argument("--uplinks", type=int, default=1, metavar="N", help="uplinks to wait for (default 1)")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=verify_device)


def agent_socket(args: argparse.Namespace) -> Path:
    return config.load(config_path(args)).data_path / SOCKET_NAME


def ask(args: argparse.Namespace, cmd: str, **request: Any) -> dict[str, Any]:
    """One control query; CheckFailed (exit 1) when the agent is not running."""
    try:
        return client.request(agent_socket(args), cmd, **request)
    except client.AgentUnreachable as exc:
        raise CheckFailed(str(exc)) from exc


def _dev_eui(text: str) -> str:
    try:
        return str(DevEui.from_hex(text))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


# --- show ---------------------------------------------------------------------------------------


def numeric_fields(readings: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for r in readings:
        for name, value in r["data"].items():
            if _number(value) is not None and name not in names:
                names.append(name)
    return names


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def main_field(outputs: list[dict[str, Any]], fields: list[str]) -> str | None:
    """The value `device show` charts by default, among the numeric ``fields`` of the readings.

    The profile's ``main`` output when it names one; else the first output, in the profile's order,
    whose quantity is not battery, signal, status or configuration (``SECONDARY_WORDS``); else the
    first numeric field whose name is not one of those; else the first numeric field.
    """
    numeric = set(fields)
    for output in outputs:
        if output.get("main") and output["name"] in numeric:
            return str(output["name"])
    for output in outputs:
        if output["name"] in numeric and not _secondary(str(output.get("quantity") or output["name"])):
            return str(output["name"])
    for name in fields:
        if not _secondary(name):
            return name
    return fields[0] if fields else None


def _secondary(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in SECONDARY_WORDS)


def chart_scale(values: list[float]) -> tuple[float, float]:
    """(low, high) of the chart: the values' range, widened around its middle to at least
    ``SPAN_FLOOR_FRACTION`` of the largest magnitude."""
    low, high = min(values), max(values)
    floor = SPAN_FLOOR_FRACTION * max(abs(low), abs(high))
    if high - low < floor:
        middle = (low + high) / 2
        low, high = middle - floor / 2, middle + floor / 2
    return low, high


def sparkline(values: list[float], width: int = 60, scale: tuple[float, float] | None = None) -> str:
    """One character per value (the last ``width``), placed on ``scale`` (default ``chart_scale``)."""
    values = values[-width:]
    if not values:
        return ""
    low, high = scale if scale is not None else chart_scale(values)
    span = high - low
    top = len(SPARK) - 1
    if span <= 0:
        return SPARK[top // 2] * len(values)
    return "".join(SPARK[min(top, max(0, round((v - low) / span * top)))] for v in values)


def show_device(args: argparse.Namespace) -> int:
    dev_eui = _dev_eui(args.dev_eui)
    since_s = time.time() - args.hours * 3600
    try:
        doc = ask(args, "device", dev_eui=dev_eui, since_s=since_s)
    except GatewayError as exc:
        raise UsageError(str(exc)) from exc  # e.g. not registered
    readings = doc["readings"]
    fields = numeric_fields(readings)
    outputs: list[dict[str, Any]] = doc.get("outputs") or []
    field = args.value or main_field(outputs, fields)
    if args.value and fields and args.value not in fields:
        raise UsageError(
            f"{args.value!r} is not a numeric value of this device (it has: {', '.join(fields)})"
        )
    unit = next((o.get("unit") for o in outputs if o["name"] == field), None)
    series = [(r["at_s"], v) for r in readings if (v := _number(r["data"].get(field))) is not None]
    scale = chart_scale([v for _, v in series]) if series else None
    if args.json:
        print_json(
            {
                "device": doc["device"],
                "heard": doc["heard"],
                "readings": readings,
                "chart": {
                    "value": field,
                    "unit": unit,
                    "hours": args.hours,
                    "points": series,
                    "scale": list(scale) if scale is not None else None,
                },
            }
        )
        return 0
    _print_show(doc, readings, Chart(field, unit, series, scale), args.hours)
    return 0


def dev_status_text(status: dict[str, Any]) -> str:
    """The device's last DevStatusAns (LoRaWAN 1.0.4 §5.5): battery, downlink margin, when."""
    if status["power"] == "mains":
        power = "mains power"
    elif status.get("battery_pct") is None:
        power = "battery not measured"
    else:
        power = f"battery {status['battery_pct']:.0f} %"
    return f"{power}, downlink margin {status['margin_db']} dB ({ago(status.get('at_s'))}, DevStatusAns)"


def device_class_text(device: dict[str, Any]) -> str:
    """The registry's LoRaWAN class and what it means for a downlink to the device."""
    lorawan_class = device.get("class") or "A"  # a row from before the class was recorded: A
    if lorawan_class == "C":
        return "C: listens at any time (a downlink goes at once)"
    return f"{lorawan_class}: listens after its uplinks (a downlink waits for the next one)"


def link_text(heard: dict[str, Any]) -> str:
    """The device's radio link as ADR sees it: data rate, TX power, link margin."""
    margin = heard.get("link_margin_db")
    shown = "-" if margin is None else f"{margin:.1f} dB"
    return f"DR{heard['dr']}, TX {heard['tx_power_dbm']} dBm, link margin {shown}"


@dataclass(frozen=True, slots=True)
class Chart:
    """What `device show` charts: the value, its unit, (time, value) points and the scale."""

    field: str | None
    unit: str | None
    series: list[tuple[float, float]]
    scale: tuple[float, float] | None


def _print_show(doc: dict[str, Any], readings: list[dict[str, Any]], chart: Chart, hours: float) -> None:
    console = Console(width=min(Console().width, 100), highlight=False)
    d, heard = doc["device"], doc["heard"] or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("device", f"{d['dev_eui']}  {d['profile']}  {d['activation'].upper()}")
    grid.add_row("class", device_class_text(d))
    grid.add_row("site", d["site"] or "-")
    if d.get("lat") is not None:
        grid.add_row("position", f"{d['lat']}, {d['lon']}")
    if d.get("dev_addr"):
        grid.add_row("DevAddr", f"{d['dev_addr']}  FCnt up {d.get('fcnt_up')}")
    if d.get("params"):
        grid.add_row("params", ", ".join(f"{k}={v}" for k, v in d["params"].items()))
    if heard:
        signal = (
            "-"
            if heard.get("rssi_dbm") is None
            else f"{heard['rssi_dbm']:.0f} dBm / {heard['snr_db']:.1f} dB"
        )
        seen = (
            f"{ago(heard.get('last_seen_s'))}, {signal}, {heard['frames']} frames, {heard['errors']} errors"
        )
        grid.add_row("heard", seen)
        if heard.get("dev_status"):
            grid.add_row("status", dev_status_text(heard["dev_status"]))
        if heard.get("dr") is not None:
            grid.add_row("link", link_text(heard))
    else:
        grid.add_row("heard", "[yellow]not since the agent started[/]")
    console.print(grid)
    if readings:
        table = Table(box=None, pad_edge=False, title=None)
        for column in ("time", "fcnt", "RSSI/SNR", "values"):
            table.add_column(column, overflow="fold")
        for r in readings[-5:]:
            at = time.strftime("%H:%M:%S", time.localtime(r["at_s"]))
            values = r["decode_error"] or ", ".join(f"{k}={v}" for k, v in r["data"].items())
            table.add_row(at, str(r["fcnt"]), f"{r['rssi_dbm']:.0f}/{r['snr_db']:.1f}", values)
        console.print(table)
    if not chart.series or chart.scale is None:
        console.print(f"no {chart.field or 'numeric'} readings in the last {hours:g} h")
        return
    values = [v for _, v in chart.series]
    unit = f" {chart.unit}" if chart.unit and chart.unit != "1" else ""
    low, high = chart.scale
    console.print(
        f"{chart.field}, last {hours:g} h ({len(values)} readings, min {min(values):g}{unit}, "
        f"max {max(values):g}{unit}, last {values[-1]:g}{unit})"
    )
    console.print(f"  {high:.4g}{unit} ┐")
    console.print(f"  [cyan]{sparkline(values, scale=chart.scale)}[/]")
    console.print(f"  {low:.4g}{unit} ┘")


# --- verify -------------------------------------------------------------------------------------


def signal_verdict(rssi_dbm: float, snr_db: float, sf: int) -> str | None:
    """None when the signal is usable, else the reason (thresholds above, in docs/cli.md)."""
    if rssi_dbm < MIN_RSSI_DBM:
        return f"weak signal: RSSI {rssi_dbm:.0f} dBm < {MIN_RSSI_DBM:.0f} dBm"
    floor_db = SNR_FLOOR_DB.get(sf, -20.0)
    if snr_db < floor_db + MIN_SNR_MARGIN_DB:
        return (
            f"weak signal: SNR {snr_db:.1f} dB at SF{sf} is less than {MIN_SNR_MARGIN_DB:g} dB "
            f"above the demodulation floor ({floor_db:g} dB)"
        )
    return None


def judge(events: list[dict[str, Any]], wanted_uplinks: int, timed_out: bool) -> tuple[bool, str]:
    """(PASS?, reason) from the device's tail events, in arrival order."""
    uplinks = [e for e in events if e["verdict"] == "accepted"]
    rejected = [e for e in events if e["verdict"] == "rejected"]
    if not uplinks:
        if rejected:
            return False, f"frames from its DevAddr were rejected: {rejected[-1].get('reason')}"
        if any(e["verdict"] == "joined" for e in events):
            return False, "joined, but no uplink followed before the timeout"
        return False, "not heard before the timeout (is it powered, in range, registered with these keys?)"
    if timed_out and len(uplinks) < wanted_uplinks:
        return False, f"only {len(uplinks)} of {wanted_uplinks} uplinks heard before the timeout"
    for e in uplinks:
        if e.get("decode_error"):
            return False, f"uplink fcnt {e['fcnt']} not decodable: {e['decode_error']}"
        if not e.get("data"):
            return False, f"uplink fcnt {e['fcnt']} carried no decoded values"
        weak = signal_verdict(e["rssi_dbm"], e["snr_db"], e["sf"])
        if weak:
            return False, weak
    return True, f"{len(uplinks)} uplink(s) decoded, signal above the thresholds"


def verify_device(args: argparse.Namespace) -> int:
    dev_eui = _dev_eui(args.dev_eui)
    entry = ask(args, "device", dev_eui=dev_eui, since_s=time.time())["device"]
    dev_addr = entry.get("dev_addr")
    console = Console(highlight=False, stderr=args.json)
    if not args.json:
        console.print(f"waiting up to {args.timeout:g} s for {dev_eui} ({entry['activation'].upper()}) ...")
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.timeout
    timed_out = True
    try:
        for event in client.stream(agent_socket(args), "tail", deadline_mono=deadline):
            mine = event.get("dev_eui") == dev_eui or (
                event["verdict"] == "rejected" and dev_addr and event.get("dev_addr") == dev_addr
            )
            if not mine:
                continue
            if event["verdict"] == "joined":
                dev_addr = event.get("dev_addr")
            events.append(event)
            if not args.json:
                console.print(_verify_line(event), soft_wrap=True)
            if sum(e["verdict"] == "accepted" for e in events) >= args.uplinks:
                timed_out = False
                break
    except client.AgentUnreachable as exc:
        raise CheckFailed(str(exc)) from exc
    passed, reason = judge(events, args.uplinks, timed_out)
    if args.json:
        verdict = "PASS" if passed else "FAIL"
        print_json({"dev_eui": dev_eui, "verdict": verdict, "reason": reason, "events": events})
    else:
        console.print(
            f"[bold green]PASS[/] {reason}" if passed else f"[bold red]FAIL[/] {reason}", soft_wrap=True
        )
    return 0 if passed else 1


def _verify_line(event: dict[str, Any]) -> str:
    at = time.strftime("%H:%M:%S", time.localtime(event["at_s"]))
    if event["verdict"] == "downlink":
        return f"{at} downlink fcnt {event.get('fcnt_down')} port {event.get('fport')}: {event['status']}"
    signal = f"{event['rssi_dbm']:.0f} dBm {event['snr_db']:.1f} dB SF{event['sf']}"
    if event["verdict"] == "joined":
        return f"{at} joined as DevAddr {event.get('dev_addr')}  {signal}"
    if event["verdict"] == "rejected":
        return f"{at} [red]rejected[/] {event.get('reason')}  {signal}"
    values = event.get("decode_error") or ", ".join(f"{k}={v}" for k, v in (event.get("data") or {}).items())
    return f"{at} uplink fcnt {event['fcnt']}  {signal}  {values}"
