"""``edgegw fleet registry diff | push``: the platform's side of the pushed registry (docs/fleet.md).

Reads the registry the platform wants a gateway (or every gateway of a group) to serve — a CSV
with the columns of ``edgegw device import``, or the platform's JSON (``{"devices": [...],
"groups": [...]}``, a device being the CSV's columns as keys and ``params`` as an object) — and
compares it with what each gateway holds now: the retained ``<prefix>/<gw>/registry`` on the
broker. ``diff`` prints the differences; ``push`` builds each gateway's message (its keys sealed to
that gateway's X25519 key, ``gateway.fleet.seal``; signed with the platform key), publishes it
retained and waits for each gateway's ``registry-state`` for the new version.

The receiving gateways' public keys come from their retained ``<prefix>/<gw>/seal-key`` messages,
or from ``--keys-dir``: one ``<gw>.json`` per gateway holding that message (``.pub``: the base64 key
``edgegw provision gateway`` prints). A ``group:<name>`` target is every gateway whose ``seal-key``
lists the group, or those named with ``--gateway``. The message format and the diff are
``gateway.fleet.registry_push``'s; the CSV validation is ``device import``'s (``csv_import``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli.common import CheckFailed, UsageError, print_json
from gateway.codec import load_profiles
from gateway.config import MqttSection
from gateway.errors import CommandRejected, ConfigError, UplinkError
from gateway.fleet import registry_push, seal, sign
from gateway.fleet.registry_push import PushedDevice, PushedGroup, RegistryMessage, SealKey, Secrets
from gateway.provisioning import csv_import, registry
from gateway.uplink.topics import Topics

if TYPE_CHECKING:
    from gateway.uplink.mqtt import MqttUplink

SettingsOf = Callable[[argparse.Namespace], MqttSection]
SETTLE_S = 1.5
"""How long the retained messages are listened for after the subscription (one broker round trip
is enough; a cluster may take longer: ``--settle-s``)."""


def add_arguments(p: argparse.ArgumentParser, settings_of: SettingsOf,
                  broker_args: Callable[[argparse.ArgumentParser], None]) -> None:  # fmt: skip
    rsub = p.add_subparsers(dest="registry_command", metavar="WHAT", required=True)
    for name, help_text, handler in (
        ("diff", "compare a registry file with what each gateway holds (its retained registry)", diff_cmd),
        (
            "push",
            "seal, sign and publish a registry to a gateway or a group; wait for registry-state",
            push_cmd,
        ),
    ):
        sp = rsub.add_parser(name, help=help_text)
        sp.add_argument(
            "source", metavar="FILE", help="a CSV (device import's columns) or the platform's JSON"
        )
        sp.add_argument("--target", required=True, help="gateway id, or group:<name>")
        sp.add_argument(
            "--gateway", action="append", default=[], metavar="ID",
            help="a member of a group target (repeat; default: the gateways whose seal-key lists the group)",
        )  # fmt: skip
        sp.add_argument("--keys-dir", metavar="DIR", help="the gateways' seal keys (<gw>.json / <gw>.pub)")
        sp.add_argument(
            "--profiles", metavar="DIR", default="", help="device profiles besides the shipped ones"
        )
        sp.add_argument(
            "--settle-s", type=float, default=SETTLE_S, help="listen for retained messages this long"
        )
        sp.add_argument("--json", action="store_true", help="one JSON document")
        broker_args(sp)
        sp.set_defaults(handler=handler, settings_of=settings_of)
        if name == "push":
            sp.add_argument("--key", required=True, metavar="PATH", help="platform Ed25519 private key (PEM)")
            sp.add_argument(
                "--version", type=int, help="the registry version (default: the highest held + 1)"
            )
            sp.add_argument("--wait-s", type=float, default=30.0, help="how long to wait for registry-state")


# --- the source file -----------------------------------------------------------------------------


@dataclass(slots=True)
class Source:
    devices: list[PushedDevice] = field(default_factory=list)
    groups: list[PushedGroup] = field(default_factory=list)
    secrets: Secrets = field(default_factory=Secrets)


def read_source(path: str, profiles_dir: str = "") -> Source:
    """The registry in ``path`` (CSV or JSON), validated as ``device import`` validates; UsageError."""
    try:
        profiles = load_profiles(profiles_dir or None)
        text = csv_import.read_csv(path)
    except csv_import.ImportFailed as exc:
        raise UsageError(f"{path}: {'; '.join(str(e) for e in exc.errors)}") from exc
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    groups_doc: list[Any] = []
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{path}: not JSON ({exc})") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("devices", []), list):
            raise UsageError(f'{path}: expected {{"devices": [...], "groups": [...]}}')
        text = _json_devices_as_csv(doc.get("devices", []), path)
        groups_doc = doc.get("groups", [])
        if not isinstance(groups_doc, list):
            raise UsageError(f"{path}: groups must be a list")
    try:
        rows = csv_import.parse_csv(text, set(profiles.ids()), {p.id: p for p in profiles})
    except csv_import.ImportFailed as exc:
        raise UsageError(f"{path}: {'; '.join(str(e) for e in exc.errors[:20])}") from exc
    source = Source()
    device_keys: dict[str, dict[str, str]] = {}
    for row in rows:
        device, keys = _pushed(row, path)
        source.devices.append(device)
        device_keys[device.dev_eui] = keys
    group_keys: dict[str, dict[str, str]] = {}
    for index, g in enumerate(groups_doc):
        group, keys = _group(g, index, path)
        source.groups.append(group)
        group_keys[group.name] = keys
    source.secrets = Secrets(device_keys, group_keys)
    return source


def _json_devices_as_csv(devices: list[Any], path: str) -> str:
    """The JSON devices as CSV text, so that one validation (``csv_import.parse_csv``) judges both;
    line N of the errors is device N-2 (0-based) of the list."""
    header: list[str] = list(csv_import.COLUMNS)
    for d in devices:
        if not isinstance(d, dict):
            raise UsageError(f"{path}: each device is an object")
        unknown = set(d) - set(csv_import.COLUMNS) - {"params"}
        if unknown:
            raise UsageError(f"{path}: device {d.get('dev_eui')}: unknown fields {sorted(unknown)}")
        params = d.get("params") or {}
        if not isinstance(params, dict):
            raise UsageError(f"{path}: device {d.get('dev_eui')}: params is an object")
        header.extend(f"param.{name}" for name in params if f"param.{name}" not in header)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for d in devices:
        cells = {
            k: ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in d.items()
        }
        cells["adr"] = {"true": "on", "false": "off"}.get(cells.get("adr", ""), cells.get("adr", ""))
        for name, value in (d.get("params", {}) or {}).items():
            cells[f"param.{name}"] = str(value)
        writer.writerow([cells.get(column, "") for column in header])
    return out.getvalue()


def _pushed(row: csv_import.DeviceRow, path: str) -> tuple[PushedDevice, dict[str, str]]:
    eui = str(row.dev_eui)
    keys = row.keys
    if keys is None:
        raise UsageError(
            f"{path}: line {row.line}: a pushed OTAA device needs its app_key (none is generated)"
        )
    if isinstance(keys, registry.AbpKeys):
        secret = {"nwk_s_key": keys.nwk_s_key.reveal(), "app_s_key": keys.app_s_key.reveal()}
        dev_addr: str | None = str(keys.dev_addr)
        join_eui = None
    else:
        secret = {"app_key": keys.app_key.reveal()}
        dev_addr, join_eui = None, str(keys.join_eui)
    return PushedDevice(
        dev_eui=eui,
        profile=row.profile,
        activation=row.activation,
        join_eui=join_eui,
        dev_addr=dev_addr,
        site=row.site or "",
        lat=row.lat,
        lon=row.lon,
        lorawan_class=row.lorawan_class or row.default_class,
        adr=row.adr is not False,
        mac_version=row.mac_version or None,
        params=dict(row.params),
        home_gateway=row.home_gateway or None,
    ), secret


def _group(doc: Any, index: int, path: str) -> tuple[PushedGroup, dict[str, str]]:
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: groups[{index}] is not an object")
    keys = {k: str(doc.get(k, "")).lower() for k in registry_push.ABP_KEYS}
    public = {k: v for k, v in doc.items() if k not in registry_push.ABP_KEYS}
    try:
        group = registry_push.group_from_json(public, index)
    except CommandRejected as exc:
        raise UsageError(f"{path}: groups[{index}]: {exc}") from exc
    if not all(len(v) == 32 and all(c in "0123456789abcdef" for c in v) for v in keys.values()):
        raise UsageError(f"{path}: groups[{index}]: nwk_s_key and app_s_key are 32 hex digits")
    return group, keys


# --- the gateways' keys and their current registries ---------------------------------------------


def keys_from_dir(directory: str) -> dict[str, SealKey]:
    """``<gw>.json`` (a seal-key message) or ``<gw>.pub`` (the base64 key) per gateway."""
    found: dict[str, SealKey] = {}
    for path in sorted(Path(directory).iterdir()):
        try:
            if path.suffix == ".json":
                key = registry_push.parse_seal_key(path.read_bytes())
            elif path.suffix == ".pub":
                key = SealKey(path.stem, seal.load_public_key(path.read_text(encoding="ascii")))
            else:
                continue
        except (OSError, UnicodeDecodeError, CommandRejected) as exc:
            raise UsageError(f"{path}: {exc}") from exc
        found[key.gateway] = key
    return found


@dataclass(slots=True)
class Retained:
    """What the broker holds: the gateways' seal keys, registries and registry states."""

    seal_keys: dict[str, SealKey] = field(default_factory=dict)
    registries: dict[str, RegistryMessage] = field(default_factory=dict)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: asyncio.Event = field(default_factory=asyncio.Event)

    def on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) < 2 or not payload:
            return
        gateway, leaf = parts[-2], parts[-1]
        try:
            if leaf == "seal-key":
                self.seal_keys[gateway] = registry_push.parse_seal_key(payload)
            elif leaf == "registry":
                self.registries[gateway] = registry_push.parse(payload)
            elif leaf == "registry-state":
                doc = json.loads(payload)
                if isinstance(doc, dict):
                    self.states[gateway] = doc
        except (CommandRejected, ValueError):
            return  # not ours to judge here: the gateway reports what it refused
        self.events.set()


def recipients(target: str, named: list[str], keys: dict[str, SealKey]) -> list[str]:
    if not target.startswith(registry_push.GROUP_PREFIX):
        if named and named != [target]:
            raise UsageError("--gateway is for a group:<name> target")
        return [target]
    group = target[len(registry_push.GROUP_PREFIX) :]
    members = named or sorted(gw for gw, key in keys.items() if group in key.groups)
    if not members:
        raise UsageError(f"no gateway lists group {group} in its seal-key: name them with --gateway")
    return members


async def _session(settings: MqttSection, gateways: list[str] | None, settle_s: float,
                   work: Callable[[MqttUplink, Retained], Any]) -> Any:  # fmt: skip
    # paho only for the commands that connect: the rest of `edgegw fleet` starts without it.
    from gateway.uplink.mqtt import MqttUplink

    retained = Retained()
    # A registry is larger than the readings a gateway sends: the broker's own limit still applies.
    settings = dataclasses.replace(settings, max_message_bytes=registry_push.MAX_MESSAGE_BYTES + 64 * 1024)
    uplink = MqttUplink(settings, client_id=f"edgegw-registry-{os.getpid()}-{int(time.time())}", will=None)
    prefix = settings.topic_prefix
    roots = [f"{prefix}/+"] if gateways is None else [Topics(prefix, g).root for g in gateways]
    for root in roots:
        for leaf in ("seal-key", "registry", "registry-state"):
            uplink.subscribe(
                f"{root}/{leaf}", retained.on_message, max_payload_bytes=registry_push.MAX_MESSAGE_BYTES
            )
    await uplink.start()
    try:
        if not await uplink.wait_connected(15.0):
            raise UplinkError(f"broker {settings.host}:{settings.port} not reached")
        await asyncio.sleep(settle_s)
        return await work(uplink, retained)
    finally:
        await uplink.stop()


def _plan(
    args: argparse.Namespace, source: Source, retained: Retained
) -> tuple[list[str], dict[str, SealKey]]:
    keys = keys_from_dir(args.keys_dir) if args.keys_dir else retained.seal_keys
    gateways = recipients(args.target, args.gateway, keys)
    missing = [g for g in gateways if g not in keys]
    if missing:
        raise UsageError(f"no seal key for {', '.join(missing)} (its retained seal-key, or --keys-dir)")
    return gateways, keys


def _diff_of(source: Source, previous: RegistryMessage | None) -> registry_push.RegistryDiff:
    return registry_push.diff(
        previous.devices if previous else (), source.devices,
        old_groups=previous.groups if previous else (), new_groups=source.groups,
    )  # fmt: skip


def _print_diff(gateway: str, previous: RegistryMessage | None, d: registry_push.RegistryDiff) -> None:
    held = f"version {previous.version}" if previous else "nothing pushed yet"
    print(f"{gateway} ({held}): {len(d.added)} added, {len(d.changed)} changed, {len(d.removed)} removed, "
          f"{d.unchanged} unchanged; groups {len(d.groups_added)} added, {len(d.groups_changed)} changed, "
          f"{len(d.groups_removed)} removed")  # fmt: skip
    for label, euis in (("+", d.added), ("~", d.changed), ("-", d.removed)):
        for eui in euis[:20]:
            print(f"  {label} {eui}")
        if len(euis) > 20:
            print(f"  {label} ... {len(euis) - 20} more")
    if previous is not None:
        print("  (keys are sealed on the broker: a change of keys alone is not seen here)")


def diff_cmd(args: argparse.Namespace) -> int:
    source = read_source(args.source, args.profiles)

    async def work(_uplink: MqttUplink, retained: Retained) -> dict[str, Any]:
        gateways, _keys = _plan(args, source, retained)
        out = {}
        for g in gateways:
            previous = retained.registries.get(g)
            d = _diff_of(source, previous)
            out[g] = {"held_version": previous.version if previous else None, **d.as_json()}
            if not args.json:
                _print_diff(g, previous, d)
        return out

    result = asyncio.run(_session(args.settings_of(args), None, args.settle_s, work))
    if args.json:
        print_json({"target": args.target, "gateways": result})
    return 0


def push_cmd(args: argparse.Namespace) -> int:
    source = read_source(args.source, args.profiles)
    try:
        signing_key = sign.load_private_key(args.key)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{args.key}: {exc}") from exc
    if args.version is not None and args.version < 1:
        raise UsageError("--version must be a positive integer")

    async def work(uplink: MqttUplink, retained: Retained) -> dict[str, Any]:
        gateways, keys = _plan(args, source, retained)
        held = [m.version for g, m in retained.registries.items() if g in gateways]
        version = args.version if args.version is not None else max(held, default=0) + 1
        out: dict[str, Any] = {}
        prefix = args.settings_of(args).topic_prefix
        for g in gateways:
            previous = retained.registries.get(g)
            d = _diff_of(source, previous)
            try:
                message = registry_push.build(
                    gateway=g, target=args.target, version=version, issued_at=int(time.time()),
                    devices=source.devices, groups=source.groups, secrets=source.secrets, removals=d.removed,
                    recipient=keys[g].key, signing_key=signing_key,
                )  # fmt: skip
            except ValueError as exc:
                raise UsageError(f"{g}: {exc}") from exc
            await uplink.publish(Topics(prefix, g).registry, message.to_bytes(), qos=1, retain=True)
            out[g] = {"version": version, "diff": d.as_json(), "state": None}
            if not args.json:
                _print_diff(g, previous, d)
        deadline = time.monotonic() + args.wait_s
        while time.monotonic() < deadline:
            for g in gateways:
                out[g]["state"] = _answer(retained.states.get(g), version) or out[g]["state"]
            if all(out[g]["state"] is not None for g in gateways):
                break
            retained.events.clear()
            try:
                await asyncio.wait_for(retained.events.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
        return out

    gateways_hint = None if args.target.startswith(registry_push.GROUP_PREFIX) else [args.target]
    result = asyncio.run(_session(args.settings_of(args), gateways_hint, args.settle_s, work))
    version = next(iter(result.values()))["version"] if result else None
    if args.json:
        print_json({"target": args.target, "version": version, "gateways": result})
    else:
        for g, r in result.items():
            state = r["state"]
            if state is None:
                print(f"{g}: no registry-state for version {version} within {args.wait_s:g} s")
            elif state.get("refused_version"):
                print(f"{g}: refused ({state['reason']}): {state['detail']}")
            else:
                print(f"{g}: version {state['version']} applied, {state['devices']} device(s), "
                      f"{len(state.get('refused', []))} refused")  # fmt: skip
    missing = [g for g, r in result.items() if r["state"] is None]
    if missing:
        raise CheckFailed(f"no registry-state for version {version} from {', '.join(missing)}")
    refused = [g for g, r in result.items() if r["state"].get("refused_version")]
    if refused:
        raise CheckFailed(f"refused by {', '.join(refused)}")
    return 0


def _answer(state: dict[str, Any] | None, version: int) -> dict[str, Any] | None:
    """The gateway's answer to ``version`` in its ``registry-state``: applied (or already above it),
    or the message refused; None while it has not judged it."""
    if state is None:
        return None
    applied = state.get("version")
    if isinstance(applied, int) and applied >= version:
        return state
    for item in state.get("refused", []):
        if isinstance(item, dict) and item.get("version") == version and "dev_eui" not in item:
            return {"refused_version": version, "reason": item.get("reason"), "detail": item.get("detail")}
    return None
