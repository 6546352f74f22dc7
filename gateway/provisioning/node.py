"""Put the MicroPython firmware and a node's ``config.json`` onto a node over USB serial, verified.

Owns: which files go to the node (``firmware/`` → ``/lib/...``), the node configuration built from
the registry (keys, reporting settings, installation parameters, pins, the class C multicast groups
the device is a member of), and the install procedure
over a raw REPL: every file is written as ``<path>.new``, all are hashed on the node (SHA-256) and
compared, and only when all match are they renamed into place and hashed again. A node that stops
answering or a corrupted write therefore leaves the installed files unchanged.

It does not own the raw-REPL framing (``raw_repl``), the registry (``registry``) nor the CLI.
Keys are written only to the node: they are never logged, printed or written to the gateway's disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import serial

from gateway.errors import NodeError, ProvisioningError
from gateway.provisioning.groups import GroupInfo
from gateway.provisioning.raw_repl import RawRepl
from gateway.provisioning.registry import Device, ParamValue

log = logging.getLogger(__name__)

CONFIG_PATH = "/config.json"
FIRMWARE_PACKAGES = ("drivers", "lorawan", "sensors", "nodes")
MAIN_PATH = "/main.py"
CONFIG_FORMAT = 1
# Data bytes per exec: hex doubles them; the raw REPL is fed in 256-byte pieces anyway.
DATA_BYTES_PER_EXEC = 2048
HEX_BYTES_PER_LINE = 256
_SAFE_PATH = re.compile(r"/[A-Za-z0-9_./-]+")

# The applications the firmware has (profile id → module under nodes/) and the settings each takes
# (the DEFAULTS of firmware/nodes/<module>.py; an installation parameter of that name overrides one).
APPLICATIONS = {
    "edgegw/fill-level": "fill_level",
    "edgegw/noise": "noise",
    "edgegw/water-level": "water_level",
    "edgegw/counter": "counter",
    "edgegw/lamp-controller": "lamp_controller",
    "edgegw/display": "display",
}
SETTINGS: dict[str, dict[str, float]] = {
    "fill_level": {
        "report_interval_s": 3600,
        "measure_interval_s": 900,
        "fire_alarm_c": 60.0,
        "distance_delta_mm": 150,
    },
    "noise": {"report_interval_s": 900, "sample_period_s": 1, "loud_laeq_db": 70.0, "loud_min_s": 60},
    "water_level": {"report_interval_s": 900, "measure_interval_s": 300, "rise_mm": 50},
    "counter": {"report_interval_s": 900},
    "lamp_controller": {"report_interval_s": 900, "wh_per_pulse": 1.0, "default_dim_pct": 100},
    "display": {"report_interval_s": 3600},
}
REQUIRED_PARAMS = {"fill_level": ("empty_distance_mm", "full_distance_mm")}
MAX_GROUPS = 4
"""Multicast groups the firmware takes (``firmware/lorawan/multicast.py``; TS005: McGroupIDHeader, 2 bits)."""

# Wiring of firmware/README.md: the radio and battery of every node ("Boards and wiring"), then
# each application's own pins (its section in the README).
PINS: dict[str, dict[str, Any]] = {
    "esp32": {
        "spi": {"id": 2, "sck": 18, "mosi": 23, "miso": 19},
        "sx127x": {"nss": 5, "reset": 14, "dio0": 26},
        "battery": {"adc": 34, "divider_ratio": 2.0},
    },
    "rp2": {
        "spi": {"id": 0, "sck": 18, "mosi": 19, "miso": 16},
        "sx127x": {"nss": 17, "reset": 20, "dio0": 21},
        "battery": {"adc": 26, "divider_ratio": 2.0},
    },
}
APPLICATION_PINS: dict[str, dict[str, dict[str, Any]]] = {
    "esp32": {
        "fill_level": {"ultrasonic": {"trig": 25, "echo": 33}, "ds18b20": 4, "tilt": 27},
        "noise": {"sound_level": {"adc": 36}},
        "water_level": {"current_loop": {"adc": 36, "range_mm": 5000, "power": 25}, "ds18b20": 4},
        "counter": {"pulse_in": 32, "pulse_out": 33},
        "lamp_controller": {"lamp": {"relay": 25, "pwm": 27}, "meter": 32},
        "display": {"max7219": {"cs": 27, "chips": 2}, "mains": 33},
    },
    "rp2": {
        "fill_level": {"ultrasonic": {"trig": 2, "echo": 3}, "ds18b20": 4, "tilt": 5},
        "noise": {"sound_level": {"adc": 27}},
        "water_level": {"current_loop": {"adc": 27, "range_mm": 5000, "power": 6}, "ds18b20": 4},
        "counter": {"pulse_in": 14, "pulse_out": 15},
        "lamp_controller": {"lamp": {"relay": 6, "pwm": 7}, "meter": 8},
        "display": {"max7219": {"cs": 13, "chips": 2}, "mains": 14},
    },
}


@dataclass(frozen=True, slots=True)
class NodeFile:
    """One file for the node: absolute path on the node and content."""

    path: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True, slots=True)
class Installed:
    """A file installed and read back: path, size, SHA-256 computed on the node."""

    path: str
    size_bytes: int
    sha256: str


def firmware_files(firmware_dir: Path) -> list[NodeFile]:
    """Every ``.py`` of the firmware packages, for ``/lib/<package>/...`` on the node, and ``/main.py``."""
    files: list[NodeFile] = []
    for package in FIRMWARE_PACKAGES:
        root = firmware_dir / package
        if not root.is_dir():
            raise ProvisioningError(f"{firmware_dir} has no {package}/: not the edgegw firmware directory")
        for source in sorted(root.rglob("*.py")):
            rel = source.relative_to(firmware_dir).as_posix()
            files.append(NodeFile(f"/lib/{rel}", source.read_bytes()))
    main = firmware_dir / "main.py"
    if not main.is_file():
        raise ProvisioningError(f"{firmware_dir} has no main.py: not the edgegw firmware directory")
    files.append(NodeFile(MAIN_PATH, main.read_bytes()))  # what the board runs after boot.py
    return files


def default_firmware_dir() -> Path | None:
    """``firmware/`` of a source checkout, when there is one (it is not installed by pip)."""
    candidate = Path(__file__).resolve().parents[2] / "firmware"
    return candidate if candidate.is_dir() else None


def node_config(
    device: Device,
    keys: Mapping[str, str],
    *,
    board: str = "esp32",
    dr: int = 5,
    settings: Mapping[str, float] | None = None,
    multicast: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The node's ``config.json`` document; ProvisioningError when the device cannot be served.

    ``multicast``: the entries of ``multicast_config`` (the key is written only when there are some).
    """
    application = APPLICATIONS.get(device.profile)
    if application is None:
        raise ProvisioningError(
            f"no node firmware for profile {device.profile}: the firmware has {', '.join(APPLICATIONS)}"
        )
    if board not in PINS:
        raise ProvisioningError(f"unknown board {board!r}: one of {', '.join(PINS)}")
    if not 0 <= dr <= 5:
        raise ProvisioningError(f"data rate {dr} is outside EU868 DR0..DR5")
    params = dict(device.params)
    for name in REQUIRED_PARAMS.get(application, ()):
        if not isinstance(params.get(name), int | float):
            raise ProvisioningError(
                f"{device.dev_eui} has no installation parameter {name}: "
                f"edgegw device set {device.dev_eui} --param {name}=..."
            )
    if application == "fill_level" and not _number(params, "empty_distance_mm") > _number(
        params, "full_distance_mm"
    ):
        raise ProvisioningError(
            "empty_distance_mm must be greater than full_distance_mm (the ranger looks down)"
        )
    node_settings: dict[str, float] = dict(SETTINGS[application])
    for name in node_settings:
        value = params.get(name)
        if isinstance(value, int | float):
            node_settings[name] = _plain_number(value)
    for name, value in (settings or {}).items():
        if name not in node_settings:
            raise ProvisioningError(f"{application} has no setting {name}")
        node_settings[name] = _plain_number(value)
    doc: dict[str, Any] = {
        "format": CONFIG_FORMAT,
        "dev_eui": str(device.dev_eui),
        "region": "EU868",
        "dr": dr,
        "activation": device.activation,
    }
    if device.activation == "otaa":
        doc["otaa"] = {
            "dev_eui": str(device.dev_eui),
            "join_eui": _key(keys, "join_eui"),
            "app_key": _key(keys, "app_key"),
        }
    else:
        if device.dev_addr is None:
            raise ProvisioningError(f"ABP device {device.dev_eui} has no DevAddr")
        doc["abp"] = {
            "dev_addr": str(device.dev_addr),
            "nwk_s_key": _key(keys, "nwk_s_key"),
            "app_s_key": _key(keys, "app_s_key"),
        }
    doc["application"] = application
    doc["settings"] = node_settings
    doc["params"] = {k: _plain_param(v) for k, v in sorted(params.items())}
    doc["board"] = board
    doc["pins"] = {**PINS[board], **APPLICATION_PINS[board][application]}
    if multicast:
        doc["multicast"] = [dict(entry) for entry in multicast]
    return doc


def multicast_config(
    member_of: Sequence[tuple[GroupInfo, Mapping[str, str]]], *, rx2_dr: int, rx2_freq_hz: int
) -> list[dict[str, Any]]:
    """The node's ``multicast`` key (firmware/README.md) for the groups the device is a member of,
    each with its keys (``groups.group_keys``: ``mc_nwk_s_key``, ``mc_app_s_key``, in clear).

    The channel is written out, the gateway's RX2 (``rx2_dr``, ``rx2_freq_hz``) for a group without
    its own: the firmware's default is RX2's *default* (869.525 MHz DR0), which a gateway configured
    otherwise would not send on. ProvisioningError for more groups than the firmware takes or groups
    on different channels (one radio listens on one frequency and data rate)."""
    if len(member_of) > MAX_GROUPS:
        names = ", ".join(group.name for group, _ in member_of)
        raise ProvisioningError(
            f"the device is a member of {len(member_of)} multicast groups ({names}): the firmware takes "
            f"at most {MAX_GROUPS}"
        )
    entries: list[dict[str, Any]] = []
    for group, keys in member_of:
        entries.append(
            {
                "mc_addr": str(group.mc_addr),
                "mc_nwk_s_key": _key(keys, "mc_nwk_s_key"),
                "mc_app_s_key": _key(keys, "mc_app_s_key"),
                "freq_hz": rx2_freq_hz if group.freq_hz is None else group.freq_hz,
                "dr": rx2_dr if group.dr is None else group.dr,
            }
        )
    channels = {(entry["freq_hz"], entry["dr"]) for entry in entries}
    if len(channels) > 1:
        names = ", ".join(group.name for group, _ in member_of)
        raise ProvisioningError(
            f"the device's multicast groups ({names}) are sent on different channels: its one receiver "
            "listens on one frequency and data rate (give the groups the same --freq-hz and --dr)"
        )
    return entries


def config_file(doc: Mapping[str, Any]) -> NodeFile:
    return NodeFile(CONFIG_PATH, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def _number(params: Mapping[str, ParamValue], name: str) -> float:
    value = params[name]
    return float(value) if isinstance(value, int | float) else float("nan")


def _plain_number(value: float) -> float:
    return int(value) if float(value).is_integer() else float(value)


def _plain_param(value: ParamValue) -> ParamValue:
    return _plain_number(value) if isinstance(value, int | float) else value


def _key(keys: Mapping[str, str], name: str) -> str:
    value = keys.get(name)
    if not value:
        raise ProvisioningError(f"the registry has no {name} for this device")
    return value.lower()


# --- the install procedure over a raw REPL ----------------------------------------------------

_HELPERS = """\
import os, binascii, hashlib
def _eg_mkdirs(p):
    d = ''
    for part in p.split('/')[1:-1]:
        d += '/' + part
        try:
            os.mkdir(d)
        except OSError:
            pass
def _eg_sha(p):
    h = hashlib.sha256()
    f = open(p, 'rb')
    while True:
        b = f.read(512)
        if not b:
            break
        h.update(b)
    f.close()
    return binascii.hexlify(h.digest()).decode()
def _eg_rm(p):
    try:
        os.remove(p)
    except OSError:
        pass
print('ready')
"""


def install(
    repl: RawRepl, files: list[NodeFile], *, progress: Callable[[str], None] | None = None
) -> list[Installed]:
    """Write ``files`` to the node, verify, move into place, verify again; NodeError on any failure."""
    for f in files:
        if not _SAFE_PATH.fullmatch(f.path) or ".." in f.path:
            raise ValueError(f"unsafe node path {f.path!r}")
    repl.enter()
    try:
        if repl.exec(_HELPERS).strip() != "ready":
            raise NodeError("the node did not run the helper code (is it MicroPython?)")
        for f in files:
            _write(repl, f)
            if progress:
                progress(f.path)
        staged = _hashes(repl, [f.path + ".new" for f in files])
        bad = [f.path for f in files if staged[f.path + ".new"] != f.sha256]
        if bad:
            repl.exec("".join(f"_eg_rm({f.path + '.new'!r})\n" for f in files))
            raise NodeError(
                f"verification failed for {len(bad)} file(s) ({', '.join(bad)}): the copy on the node "
                "differs from what was sent; nothing was installed"
            )
        repl.exec("".join(f"_eg_rm({f.path!r})\nos.rename({f.path + '.new'!r}, {f.path!r})\n" for f in files))
        final = _hashes(repl, [f.path for f in files])
        bad = [f.path for f in files if final[f.path] != f.sha256]
        if bad:
            raise NodeError(f"read-back after install differs for {', '.join(bad)}")
        return [Installed(f.path, len(f.data), final[f.path]) for f in files]
    finally:
        try:
            repl.leave()
        except (OSError, serial.SerialException):
            log.debug("could not leave the raw REPL", exc_info=True)


def _write(repl: RawRepl, f: NodeFile) -> None:
    tmp = f.path + ".new"
    repl.exec(f"_eg_mkdirs({f.path!r})\n_eg_f = open({tmp!r}, 'wb')\n")
    for start in range(0, len(f.data), DATA_BYTES_PER_EXEC):
        chunk = f.data[start : start + DATA_BYTES_PER_EXEC]
        lines = [
            f"_eg_f.write(binascii.unhexlify('{chunk[i : i + HEX_BYTES_PER_LINE].hex()}'))\n"
            for i in range(0, len(chunk), HEX_BYTES_PER_LINE)
        ]
        repl.exec("".join(lines))
    repl.exec("_eg_f.close()\n")


def _hashes(repl: RawRepl, paths: list[str]) -> dict[str, str]:
    out = repl.exec("".join(f"print(_eg_sha({p!r}))\n" for p in paths)).split()
    if len(out) != len(paths):
        raise NodeError(f"expected {len(paths)} hashes from the node, got {len(out)}")
    return dict(zip(paths, out, strict=True))


def open_port(port: str, *, baud: int = 115200) -> serial.Serial:
    """The node's USB serial port (read timeout 0.1 s: RawRepl keeps its own deadline)."""
    try:
        return serial.Serial(port, baudrate=baud, timeout=0.1, write_timeout=5.0)
    except (serial.SerialException, OSError) as exc:
        raise NodeError(f"cannot open {port}: {exc}") from exc
