"""``edgegw radio test | uplink test | diag``: the technician's checks at the top of the ladder.

``radio test`` listens to the running agent's ``tail`` stream for a while and
summarises who was heard and how well. ``uplink test`` opens its own MQTT
connection with the agent's settings (TLS included, client id ``<agent's>-test`` so
that the agent's own session is not kicked off) and times one QoS 1 publish.
``diag`` writes a support bundle with secrets removed. None of them changes the
agent or the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway import __version__, config, db
from gateway.cli.common import CheckFailed, UsageError, add_config_option, config_path, print_json
from gateway.cli.device_views import agent_socket
from gateway.control import client
from gateway.errors import ConfigError, GatewayError, UplinkError
from gateway.fleet.remote_config import effective_view
from gateway.messages import DevEui
from gateway.progress import Progress, duration_text
from gateway.provisioning import keystore, registry

REMOVED = "<removed>"
LOG_LINES = 500
JOURNAL_COMMAND = ("journalctl", "-u", "edgegw", "-n", str(LOG_LINES), "--no-pager")
JOURNAL_TIMEOUT_S = 10.0
PACKAGES = ("edgegw", "paho-mqtt", "cryptography", "PyYAML", "rich")


def add_radio_arguments(radio: argparse.ArgumentParser) -> None:
    rsub = radio.add_subparsers(dest="radio_command", metavar="ACTION", required=True)
    rt = rsub.add_parser("test", help="listen N seconds and summarise what is heard")
    rt.add_argument("--seconds", type=float, default=30.0, metavar="N", help="listen this long (default 30)")
    rt.add_argument("--json", action="store_true")
    rt.add_argument("--quiet", "-q", action="store_true", help="no progress line on stderr")
    add_config_option(rt)
    rt.set_defaults(handler=radio_test)


def add_uplink_arguments(uplink: argparse.ArgumentParser) -> None:
    usub = uplink.add_subparsers(dest="uplink_command", metavar="ACTION", required=True)
    ut = usub.add_parser("test", help="connect, publish one QoS 1 message, wait for PUBACK")
    ut.add_argument("--timeout", type=float, default=15.0, metavar="S", help="give up after S seconds")
    ut.add_argument("--json", action="store_true")
    add_config_option(ut)
    ut.set_defaults(handler=uplink_test)


def add_diag_arguments(diag: argparse.ArgumentParser) -> None:
    diag.add_argument("--out", metavar="FILE.tar.gz", help="bundle path (default: ./edgegw-diag-<id>-<time>)")
    diag.add_argument("--log-file", metavar="PATH", help="the agent's log file, if it writes one")
    diag.add_argument("--json", action="store_true")
    add_config_option(diag)
    diag.set_defaults(handler=diag_bundle)


def _config(args: argparse.Namespace) -> config.Config:
    return config.load(config_path(args))


# --- radio test ---------------------------------------------------------------------------------


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "avg": round(sum(values) / len(values), 1), "max": max(values)}


def summarise(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per source (DevEUI when the frame was accepted or a join, else DevAddr): counts, signal, verdicts."""
    groups: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    unknown: set[str] = set()
    total = 0
    for e in events:
        if e["verdict"] == "downlink":
            continue  # sent by the gateway, not heard: no signal to count
        total += 1
        key = e.get("dev_eui") or (f"DevAddr {e['dev_addr']}" if e.get("dev_addr") else "unparsable")
        groups[key].append(e)
        if e.get("reason") == "unknown_device" and e.get("dev_addr"):
            unknown.add(e["dev_addr"])
    sources = []
    for key, group in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        verdicts = collections.Counter(e.get("reason") or e["verdict"] for e in group)
        sources.append(
            {
                "source": key,
                "frames": len(group),
                "rssi_dbm": _stats([float(e["rssi_dbm"]) for e in group]),
                "snr_db": _stats([float(e["snr_db"]) for e in group]),
                "sf": sorted({int(e["sf"]) for e in group}),
                "verdicts": dict(verdicts),
            }
        )
    return {"frames": total, "sources": sources, "unknown_dev_addrs": sorted(unknown)}


def radio_test(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.seconds
    heard: list[int] = [0]  # frames heard so far (downlinks are sent, not heard), read by the ticker

    def describe(elapsed_s: float) -> str:
        return (
            f"radio test: listening {duration_text(min(elapsed_s, args.seconds))} of "
            f"{duration_text(args.seconds)}, {heard[0]} frames heard"
        )

    try:
        with Progress(describe, quiet=args.quiet) as progress:
            for event in client.stream(agent_socket(args), "tail", deadline_mono=deadline):
                events.append(event)
                if event.get("verdict") != "downlink":
                    heard[0] += 1
                    progress.changed()
    except client.AgentUnreachable as exc:
        raise CheckFailed(str(exc)) from exc
    summary = {"seconds": args.seconds, **summarise(events)}
    if args.json:
        print_json(summary)
    else:
        _print_radio(console, summary)
    if not events:
        raise CheckFailed(f"nothing heard in {args.seconds:g} s (packet forwarder running? antenna?)")
    return 0


def _print_radio(console: Console, summary: dict[str, Any]) -> None:
    console.print(f"{summary['frames']} frames in {summary['seconds']:g} s (RSSI, SNR: min/avg/max)")
    if not summary["sources"]:
        return
    table = Table(box=None, pad_edge=False)
    for column in ("source", "frames", "RSSI dBm", "SNR dB", "SF", "verdicts"):
        table.add_column(column, overflow="fold", no_wrap=column != "verdicts")
    for s in summary["sources"]:
        r, n = s["rssi_dbm"], s["snr_db"]
        table.add_row(
            s["source"],
            str(s["frames"]),
            f"{r['min']:.0f}/{r['avg']:.0f}/{r['max']:.0f}",
            f"{n['min']:.1f}/{n['avg']:.1f}/{n['max']:.1f}",
            ",".join(map(str, s["sf"])),
            ", ".join(f"{k} {v}" for k, v in s["verdicts"].items()),
        )
    console.print(table)
    if summary["unknown_dev_addrs"]:
        console.print(f"unknown DevAddrs (not registered here): {', '.join(summary['unknown_dev_addrs'])}")


# --- uplink test --------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def probe_uplink(cfg: config.Config, timeout_s: float) -> dict[str, Any]:
    """Connect with the agent's MQTT settings, publish QoS 1 on ``<prefix>/<id>/test``, time it."""
    # paho only for `uplink test`: `radio test` and `diag` start without it.
    from gateway.uplink.mqtt import MqttUplink

    settings = cfg.mqtt
    result: dict[str, Any] = {
        "ok": False,
        "broker": f"{settings.host}:{settings.port}",
        "tls": settings.tls,
        "protocol": settings.protocol,
        "topic": f"{settings.topic_prefix}/{cfg.gateway.id}/test",
        "connect_ms": None,
        "puback_ms": None,
        "error": None,
    }
    logger = logging.getLogger("gateway.uplink.mqtt")
    collect, level, propagate = _Collect(), logger.level, logger.propagate
    logger.addHandler(collect)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # the reason is reported below, not as log noise
    try:
        uplink = MqttUplink(settings, client_id=f"{cfg.mqtt_client_id}-test", will=None)
        started = time.monotonic()
        await uplink.start()
        try:
            if not await uplink.wait_connected(timeout_s):
                failures = [m for m in collect.messages if "fail" in m or "refused" in m or "lost" in m]
                # The uplink's own account first: it names a refused TLS client certificate.
                why = uplink.last_error or (failures[-1] if failures else "no answer")
                result["error"] = f"not connected within {timeout_s:g} s: {why}"
                return result
            result["connect_ms"] = round((time.monotonic() - started) * 1000, 1)
            payload = json.dumps({"v": 1, "test": True, "version": __version__, "at_s": time.time()}).encode()
            sent = time.monotonic()
            left_s = max(0.1, timeout_s - (sent - started))
            await asyncio.wait_for(uplink.publish(result["topic"], payload, qos=1), left_s)
            result["puback_ms"] = round((time.monotonic() - sent) * 1000, 1)
            result["ok"] = True
        finally:
            await uplink.stop()
    except (UplinkError, TimeoutError) as exc:
        result["error"] = str(exc) or "no PUBACK before the timeout"
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
        logger.propagate = propagate
    return result


def uplink_test(args: argparse.Namespace) -> int:
    result = asyncio.run(probe_uplink(_config(args), args.timeout))
    if args.json:
        print_json(result)
    else:
        console = Console(highlight=False)
        tls = "[green]on[/]" if result["tls"] else "[yellow]off[/]"
        console.print(f"broker    {result['broker']}  TLS {tls}  {result['protocol']}")
        if result["ok"]:
            console.print(f"connect   {result['connect_ms']:.1f} ms")
            console.print(f"publish   QoS 1 on {result['topic']}: PUBACK in {result['puback_ms']:.1f} ms")
            console.print("[bold green]OK[/]")
    if not result["ok"]:
        raise CheckFailed(f"uplink test failed: {result['error']}")
    return 0


# --- diag ---------------------------------------------------------------------------------------


def _effective_config(cfg: config.Config, socket_path: Path) -> dict[str, Any]:
    """The configuration in effect (``config show --effective``): the running agent's, else what
    the files say; config.json beside it is the local file alone."""
    try:
        answer = client.request(socket_path, "config")
        return {"source": "running agent", **{k: v for k, v in answer.items() if k != "ok"}}
    except (client.AgentUnreachable, GatewayError):
        pass
    try:
        return {"source": "files (the agent is not running)", **effective_view(cfg.source)}
    except (ConfigError, GatewayError) as exc:
        return {"source": "files", "error": str(exc)}


def _versions() -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "edgegw": __version__,
        "python": sys.version,
        "platform": platform.platform(),
        "packages": packages,
    }


def _registry_view(cfg: config.Config) -> tuple[list[dict[str, Any]], list[str]]:
    """Devices without keys, and every key (hex) to scrub from the bundle whatever its source."""
    secrets: list[str] = []
    path = db.db_path(cfg.data_dir)
    if not path.exists():
        return [], secrets
    conn = db.connect(path)
    try:
        devices = registry.list_devices(conn)
        try:
            keys = keystore.open_key(cfg.data_dir)
        except GatewayError:
            keys = None
        for device in devices:
            try:
                found = registry.device_keys(conn, DevEui.from_hex(str(device.dev_eui)), keys)
            except GatewayError:
                continue
            secrets.extend(v for k, v in found.items() if k != "join_eui")
        return [d.as_json() for d in devices], secrets
    finally:
        conn.close()


def _log_tail(path: str | None) -> str:
    """The agent's last ``LOG_LINES`` lines: from ``--log-file``, else from the journal."""
    if not path:
        return _journal_tail()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(collections.deque(f, LOG_LINES))
    except OSError as exc:
        return f"log file {path} not readable: {exc}\n"


def _journal_tail() -> str:
    """Under systemd the agent logs to the journal: its last lines, or how to read them."""
    how = (
        "the agent logs to stderr; under systemd read it with\n"
        f"  {' '.join(JOURNAL_COMMAND)}\n"
        "(as root or a member of the adm or systemd-journal group), or give --log-file PATH\n"
    )
    if shutil.which(JOURNAL_COMMAND[0]) is None:
        return f"no log file given (--log-file), and no journalctl here: {how}"
    try:
        done = subprocess.run(
            JOURNAL_COMMAND, capture_output=True, text=True, errors="replace", timeout=JOURNAL_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no log file given (--log-file), and journalctl failed ({exc}): {how}"
    lines = [line for line in done.stdout.splitlines() if not line.startswith("-- No entries --")]
    if done.returncode != 0 or not lines:
        reason = done.stderr.strip().splitlines()[-1:] or ["no entries for the edgegw unit"]
        return f"no log file given (--log-file), and journalctl gave no lines ({reason[0]}): {how}"
    return f"# {' '.join(JOURNAL_COMMAND)}\n" + "\n".join(lines) + "\n"


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REMOVED).replace(secret.upper(), REMOVED)
    return text


def build_bundle(cfg: config.Config, socket_path: Path, log_file: str | None) -> dict[str, str]:
    """File name → text of the support bundle, secrets already removed."""
    devices, secrets = _registry_view(cfg)
    if cfg.mqtt.password:
        secrets.append(cfg.mqtt.password)
    files: dict[str, Any] = {"config.json": config.redacted(cfg, REMOVED), "versions.json": _versions()}
    notes = [f"edgegw diag {time.strftime('%Y-%m-%dT%H:%M:%S%z')} gateway {cfg.gateway.id}"]
    files["config-effective.json"] = _effective_config(cfg, socket_path)
    try:
        for name in ("status", "devices", "recent_frames"):
            answer = client.request(socket_path, name)
            files[f"{name}.json"] = {k: v for k, v in answer.items() if k != "ok"}
    except (client.AgentUnreachable, GatewayError) as exc:
        notes.append(f"agent not reachable ({exc}): status, counters and recent frames are missing")
        files["devices.json"] = {"devices": devices, "source": "registry (agent not running)"}
    files["log.txt"] = _log_tail(log_file)
    files["README.txt"] = "\n".join(notes) + "\n"
    texts = {name: v if isinstance(v, str) else json.dumps(v, indent=2) + "\n" for name, v in files.items()}
    return {name: _scrub(text, secrets) for name, text in texts.items()}


def _write_bundle(out: Path, prefix: str, files: dict[str, str]) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # configs and logs: not world-readable
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{prefix}/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))


def diag_bundle(args: argparse.Namespace) -> int:
    cfg = _config(args)
    files = build_bundle(cfg, agent_socket(args), args.log_file)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = Path(args.out or f"edgegw-diag-{cfg.gateway.id}-{stamp}.tar.gz")
    prefix = f"edgegw-diag-{cfg.gateway.id}-{stamp}"
    try:
        _write_bundle(out, prefix, files)
    except OSError as exc:  # a read-only directory, a full disk: say where, and how to choose another
        raise UsageError(
            f"cannot write the bundle {out}: {exc.strerror or exc}; choose a path with --out"
        ) from exc
    agent_up = "status.json" in files
    if args.json:
        print_json({"bundle": str(out), "files": sorted(files), "agent_running": agent_up})
    else:
        print(f"wrote {out} ({out.stat().st_size} bytes): {', '.join(sorted(files))}")
        if not agent_up:
            print("note: the agent is not running; the bundle has the config, registry and versions only")
    return 0
