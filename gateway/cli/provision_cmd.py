"""``edgegw provision gateway | node``: a gateway's identity and unit; a node's firmware and config.

``gateway``: identity, MQTT client key + CSR, certificate, platform key, systemd unit.

Run once per gateway by the installer (as root, or as the agent's user for the
data directory). Each step is idempotent: running it again keeps the key and
rewrites the CSR. The private key never leaves the gateway and is never printed.
An ``--id`` other than the config file's ``gateway.id`` is refused (exit 2) unless ``--force``:
the certificate would name one gateway and the agent run as another. The config file is never
written here (it is the installer's, with its comments); an absent one is only reminded of.
``node``: the MicroPython firmware and the node's ``config.json`` (keys from the registry, and the
class C multicast groups the device is a member of with their keys) onto a
node over USB serial, read back and verified (``gateway.provisioning.node``), saying on stderr
each file as it is written (``gateway.progress``). Keys go to the node only: never printed, never
written on the gateway's disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from gateway import config, db
from gateway.cli.common import CheckFailed, UsageError, add_config_option, config_path, print_json
from gateway.cli.registry_read import device_and_keys
from gateway.errors import NodeError
from gateway.fleet import seal
from gateway.messages import DevEui
from gateway.progress import Progress, duration_text
from gateway.provisioning import gateway_setup, groups, keystore, node, raw_repl

DEFAULT_DATA_DIR = "/var/lib/edgegw"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_option(p)
    psub = p.add_subparsers(dest="provision_command", metavar="WHAT", required=True)

    gw = psub.add_parser("gateway", help="identity, MQTT client key and CSR, certificate, platform key, unit")
    gw.add_argument("--id", required=True, metavar="ID", help="gateway id (letters, digits, '-', '_')")
    gw.add_argument("--data-dir", metavar="DIR", help="default: the config's data_dir, else /var/lib/edgegw")
    gw.add_argument("--install-cert", metavar="PATH", help="install the certificate the platform issued")
    gw.add_argument("--platform-key", metavar="PATH", help="pin the platform's Ed25519 public key (PEM)")
    gw.add_argument("--unit-out", metavar="PATH", help="write a hardened systemd unit to PATH")
    gw.add_argument("--exec-path", metavar="PATH", help="edgegw executable for the unit (default: this one)")
    gw.add_argument("--user", default="edgegw", help="system user the unit runs as (default edgegw)")
    gw.add_argument(
        "--force", action="store_true",
        help="go on although the config's gateway.id is another id (change it before the agent runs)",
    )  # fmt: skip
    gw.add_argument("--json", action="store_true")
    gw.set_defaults(handler=provision_gateway)

    nd = psub.add_parser("node", help="firmware and config.json onto a node over USB serial, verified")
    nd.add_argument("--port", required=True, metavar="DEV", help="the node's serial port (/dev/ttyUSB0)")
    nd.add_argument("--dev-eui", required=True, metavar="HEX", help="a registered device")
    nd.add_argument("--baud", type=int, default=115200, help="default 115200")
    nd.add_argument("--board", choices=sorted(node.PINS), default="esp32", help="pin map (default esp32)")
    nd.add_argument("--dr", type=int, default=5, help="uplink data rate, EU868 DR0..DR5 (default 5)")
    nd.add_argument("--report-interval-s", type=int, metavar="S", help="override the reporting interval")
    nd.add_argument("--firmware-dir", metavar="DIR", help="default: firmware/ of this source checkout")
    nd.add_argument("--config-only", action="store_true", help="write config.json only, not the firmware")
    nd.add_argument("--timeout-s", type=float, default=5.0, help="per-command answer timeout (default 5)")
    nd.add_argument("--json", action="store_true")
    nd.add_argument("--quiet", "-q", action="store_true", help="no progress line on stderr")
    nd.set_defaults(handler=provision_node)


def _agent_config(args: argparse.Namespace) -> config.Config | None:
    """The config the agent will run with (file and ``EDGEGW_*`` overrides); None when the file is absent."""
    path = config_path(args)
    return config.load(path) if os.path.exists(path) else None


def _data_dir(args: argparse.Namespace, cfg: config.Config | None) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    return cfg.data_path if cfg is not None else Path(DEFAULT_DATA_DIR)


def _check_config_id(args: argparse.Namespace, cfg: config.Config | None) -> None:
    """Refuse an id the config does not say: the certificate would name one gateway, the agent's
    topics and client id another, and nothing would tell (the agent connects and runs as the other)."""
    if cfg is None or cfg.gateway.id == args.id or args.force:
        return
    raise UsageError(
        f"--id {args.id} but {cfg.source} says gateway.id: {cfg.gateway.id} (the certificate would be for "
        f"{args.id}, the agent would run as {cfg.gateway.id}); set gateway.id: {args.id} in {cfg.source} "
        f"(or give --id {cfg.gateway.id}), or add --force to provision {args.id} and change the file after"
    )


def provision_gateway(args: argparse.Namespace) -> int:
    cfg = _agent_config(args)
    _check_config_id(args, cfg)
    data_dir = _data_dir(args, cfg).absolute()
    files, created = gateway_setup.provision_identity(data_dir, args.id)
    doc: dict[str, Any] = {
        "gateway_id": args.id,
        "data_dir": str(data_dir),
        "client_key": str(files.key),
        "client_key_created": created,
        "csr": str(files.csr),
        "certificate": None,
        "platform_key_sha256": None,
        "unit": None,
        "config_gateway_id": cfg.gateway.id if cfg is not None else None,
        "seal_key": str(files.seal_key),
        "seal_public_key": seal.public_key_text(gateway_setup.ensure_seal_key(data_dir)[0]),
    }
    cert = None
    if args.install_cert:
        cert = gateway_setup.install_certificate(data_dir, Path(args.install_cert))
    elif files.cert.exists():
        cert = gateway_setup.installed_certificate(data_dir)
    if cert is not None:
        doc["certificate"] = {
            "path": str(files.cert),
            "subject": cert.subject.rfc4514_string(),
            "not_after": cert.not_valid_after_utc.isoformat(),
        }
    if args.platform_key:
        doc["platform_key_sha256"] = gateway_setup.pin_platform_key(data_dir, Path(args.platform_key))
    if args.unit_out:
        exec_path = args.exec_path or shutil.which("edgegw") or str(Path(sys.argv[0]).absolute())
        unit = gateway_setup.render_unit(
            exec_path=exec_path,
            config_path=str(Path(config_path(args)).absolute()),
            data_dir=str(data_dir),
            user=args.user,
        )
        Path(args.unit_out).write_text(unit, encoding="utf-8")
        doc["unit"] = args.unit_out
    if args.json:
        print_json(doc)
        return 0
    print(f"gateway {args.id}: data directory {data_dir}")
    print(f"  client key   {files.key} ({'new' if created else 'kept'}; never leaves this gateway)")
    print(f"  CSR          {files.csr}  <- send this file to the platform's CA")
    print(f"  seal key     {doc['seal_public_key']}  <- X25519 public key: the platform seals keys to it")
    if doc["certificate"]:
        print(f"  certificate  {files.cert} (valid until {doc['certificate']['not_after']})")
    else:
        print("  certificate  not installed yet: edgegw provision gateway --id ... --install-cert FILE")
    if doc["platform_key_sha256"]:
        print(f"  platform key pinned, SHA-256 {doc['platform_key_sha256']}")
    if doc["unit"]:
        print(f"  systemd unit {doc['unit']}")
    print(f"  config: mqtt.cert_file: {files.cert}  mqtt.key_file: {files.key}")
    if cfg is None:
        print(f"  config {config_path(args)} absent: write it with gateway.id: {args.id}")
    elif cfg.gateway.id != args.id:
        print(f"  config {cfg.source} says gateway.id: {cfg.gateway.id}: change it to {args.id} (--force)")
    return 0


def provision_node(args: argparse.Namespace) -> int:
    device, keys = device_and_keys(args, args.dev_eui)
    dev_eui = device.dev_eui
    settings = {"report_interval_s": args.report_interval_s} if args.report_interval_s else None
    multicast = _multicast(args, dev_eui)
    doc = node.node_config(device, keys, board=args.board, dr=args.dr, settings=settings, multicast=multicast)
    group_names = [str(entry["mc_addr"]) for entry in multicast]
    del multicast
    files = [] if args.config_only else _firmware(args)
    files.append(node.config_file(doc))
    del keys, doc  # from here on only hashes and paths are shown
    written: list[str] = []  # node paths written so far, read by the progress ticker
    sizes = {f.path: len(f.data) for f in files}

    def describe(elapsed_s: float) -> str:
        done = f"{len(written)}/{len(files)} files written ({sum(sizes[p] for p in written)} B)"
        if len(written) == len(files):
            doing = "verifying on the node"
        else:
            doing = f"last {written[-1]}" if written else "entering the raw REPL"
        return f"provision node {dev_eui}: {done}, {doing}, {duration_text(elapsed_s)}"

    def wrote(path: str) -> None:
        written.append(path)
        progress.step()

    port = node.open_port(args.port, baud=args.baud)
    try:
        repl = raw_repl.RawRepl(port, timeout_s=args.timeout_s)
        with Progress(describe, quiet=args.quiet) as progress:
            installed = node.install(repl, files, progress=wrote)
    except NodeError as exc:
        raise CheckFailed(f"{args.port}: {exc}") from exc
    finally:
        port.close()
    if args.json:
        print_json(
            {
                "ok": True,
                "dev_eui": str(dev_eui),
                "port": args.port,
                "multicast_groups": group_names,
                "files": [{"path": f.path, "size": f.size_bytes, "sha256": f.sha256} for f in installed],
            }
        )
        return 0
    for f in installed:
        print(f"  {f.path:<36} {f.size_bytes:>7} B  sha256 {f.sha256[:16]}  verified")
    total = sum(f.size_bytes for f in installed)
    print(f"node {dev_eui} on {args.port}: {len(installed)} file(s), {total} B written and read back")
    if group_names:
        print(f"  multicast groups (McAddr) in config.json: {', '.join(group_names)}")
    return 0


def _multicast(args: argparse.Namespace, dev_eui: DevEui) -> list[dict[str, Any]]:
    """The ``multicast`` entries of the node's config.json: the groups ``dev_eui`` is a member of, their
    keys decrypted with the gateway's key store, their channel (the agent's RX2 when they have none)."""
    cfg = config.load(config_path(args))
    conn = db.connect(db.db_path(cfg.data_dir))
    try:
        store = keystore.open_key(cfg.data_dir)
        member_of = [
            (group, groups.group_keys(conn, group.name, store))
            for group in groups.list_groups(conn)
            if str(dev_eui) in group.members
        ]
    finally:
        conn.close()
    return node.multicast_config(member_of, rx2_dr=cfg.lorawan.rx2_dr, rx2_freq_hz=cfg.lorawan.rx2_freq_hz)


def _firmware(args: argparse.Namespace) -> list[node.NodeFile]:
    root = Path(args.firmware_dir) if args.firmware_dir else node.default_firmware_dir()
    if root is None:
        raise UsageError("no firmware/ next to this installation: give --firmware-dir")
    return node.firmware_files(root)
