"""``edgegw fleet``: the platform-side tool — ``keygen`` (a platform signing key) and ``sign``.

Runs on the platform or a technician's machine, never needs the agent. ``sign`` wraps a
command JSON (``{"cmd": "flush", "params": {}}``) in an envelope signed with the
platform's private key (``gateway.fleet.sign``, the reference signer of docs/fleet.md)
and prints it; publish it on ``<prefix>/<gateway id>/cmd/<cmd>``. A desired configuration
(``{"config": {"version": ..., "settings": {...}, "rules": ...}}``) is signed the same way, to be
published retained on ``<prefix>/<gateway id>/config``. ``send`` and ``watch``
(publish, follow results and health) are not built yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import CommandRejected
from gateway.fleet import desired, sign


def register(sub: Any) -> None:
    p = sub.add_parser("fleet", help="platform side: sign commands for gateways")
    fsub = p.add_subparsers(dest="fleet_command", metavar="WHAT", required=True)

    kg = fsub.add_parser("keygen", help="create a platform Ed25519 signing key (PATH and PATH.pub)")
    kg.add_argument("--out", required=True, metavar="PATH", help="private key file to create (0600)")
    kg.set_defaults(handler=keygen)

    sg = fsub.add_parser("sign", help="wrap a command JSON in a signed envelope, print it")
    sg.add_argument(
        "command_file", metavar="COMMAND_JSON", help='file with {"cmd": ..., "params": {...}}; - for stdin'
    )
    sg.add_argument("--key", required=True, metavar="PATH", help="platform Ed25519 private key (PEM)")
    sg.add_argument("--target", required=True, help="gateway id, or group:<name>")
    sg.add_argument("--seq", type=int, help="sequence number (default: microseconds since the epoch)")
    sg.add_argument("--issued-at", type=int, metavar="UNIX_S", help="default: now")
    sg.add_argument("--ttl-s", type=int, default=sign.DEFAULT_TTL_S, help="validity in seconds (default 300)")
    sg.set_defaults(handler=sign_command)


def keygen(args: argparse.Namespace) -> int:
    from gateway.cli.main import UsageError, print_json
    from gateway.fleet.trust import fingerprint

    out = Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = out.with_name(out.name + ".pub")
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    print_json({"private_key": str(out), "public_key": str(pub), "sha256": fingerprint(key.public_key())})
    return 0


def sign_command(args: argparse.Namespace) -> int:
    from gateway.cli.main import UsageError, print_json

    try:
        text = sys.stdin.read() if args.command_file == "-" else Path(args.command_file).read_text()
        doc = json.loads(text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{args.command_file}: not a JSON file ({exc})") from exc
    payload: dict[str, Any]
    if isinstance(doc, dict) and "config" in doc:
        try:
            payload = {"config": desired.from_payload(doc).to_dict()}
        except CommandRejected as exc:
            raise UsageError(f"{args.command_file}: {exc}") from exc
    elif not isinstance(doc, dict) or not isinstance(doc.get("cmd"), str):
        raise UsageError(f'{args.command_file}: expected {{"cmd": "<name>", "params": {{...}}}}')
    else:
        params = doc.get("params", {})
        if not isinstance(params, dict) or set(doc) - {"cmd", "params"}:
            raise UsageError(f"{args.command_file}: only 'cmd' and an object 'params' are allowed")
        payload = sign.command(doc["cmd"], params)
    if args.ttl_s <= 0:
        raise UsageError("--ttl-s must be positive")
    try:
        key = sign.load_private_key(args.key)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{args.key}: {exc}") from exc
    envelope = sign.sign_envelope(
        key,
        payload,
        target=args.target,
        seq=args.seq,
        issued_at=args.issued_at,
        ttl_s=args.ttl_s,
    )
    print_json(envelope)
    return 0
