"""``edgegw fleet``: the platform-side tool — ``keygen``, ``sign``, ``send``, ``update publish``, ``watch``,
``coordinator`` (each device's home gateway and failover: ``gateway.cli.fleet_coordinator_cmd``).

Runs on the platform or a technician's machine, never needs the agent. ``sign`` wraps a
command JSON (``{"cmd": "flush", "params": {}}``) in an envelope signed with the
platform's private key (``gateway.fleet.sign``, the reference signer of docs/fleet.md)
and prints it; publish it on ``<prefix>/<gateway id>/cmd/<cmd>``. A desired configuration
(``{"config": {"version": ..., "settings": {...}, "rules": ...}}``) is signed the same way, to be
published retained on ``<prefix>/<gateway id>/config``. ``send`` publishes a signed envelope
where it belongs and waits for each gateway's answer (``cmd-result`` with the envelope's seq, or
``config-state`` with its version); ``update publish`` signs an ``update_agent`` command for each
gateway, publishes it and then the package's chunks (``gateway.fleet.update_transfer``), and waits
for each command's answer; ``watch`` prints what gateways report (results, config and update states,
health, online/offline): one line per message for a person on a terminal, one JSON line per message
with ``--json`` or when piped. They talk MQTT through the agent's own adapter
(``gateway.uplink.mqtt``), so TLS and credentials work as on a gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.cli import fleet_coordinator_cmd, fleet_registry_cmd
from gateway.cli.common import CheckFailed, UsageError, print_json
from gateway.config import MqttSection
from gateway.errors import CommandRejected, UplinkError
from gateway.fleet import desired, reports, sign, signed_envelope, update_transfer
from gateway.fleet.trust import fingerprint
from gateway.uplink.topics import Topics

if TYPE_CHECKING:
    from gateway.uplink.mqtt import MqttUplink

WATCHED = ("cmd-result", "config-state", "update-state", "health", "state")
Publish = Callable[["MqttUplink"], Awaitable[None]]


def add_arguments(p: argparse.ArgumentParser) -> None:
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

    sd = fsub.add_parser("send", help="publish a signed envelope and wait for the gateways' answers")
    sd.add_argument("envelope_file", metavar="ENVELOPE_JSON", help="output of `fleet sign`; - for stdin")
    sd.add_argument(
        "--gateway", action="append", default=[], metavar="ID",
        help="gateway to send to (repeat; required for a group:<name> target, default: the target)",
    )  # fmt: skip
    sd.add_argument(
        "--wait-s", type=float, default=30.0, help="how long to wait for the answers (default 30)"
    )
    sd.add_argument(
        "--outcome", action="store_true",
        help="a downlink command: wait for its end (sent, acknowledged, unacknowledged, expired, refused) "
        "rather than its queued answer",
    )  # fmt: skip
    _broker_args(sd)
    sd.set_defaults(handler=send_envelope)

    up = fsub.add_parser("update", help="agent updates: publish a package to gateways")
    usub = up.add_subparsers(dest="update_command", metavar="WHAT", required=True)
    pb = usub.add_parser(
        "publish", help="sign update_agent, publish it and the package's chunks, wait for the answers"
    )
    pb.add_argument("package", metavar="PACKAGE", help="the edgegw wheel to install on the gateways")
    pb.add_argument("--key", required=True, metavar="PATH", help="platform Ed25519 private key (PEM)")
    pb.add_argument("--gateway", action="append", required=True, metavar="ID", help="gateway (repeat)")
    pb.add_argument("--version", help="the package's version (default: read from the wheel)")
    pb.add_argument(
        "--chunk-bytes", type=int, default=0, metavar="N",
        help=f"chunk size (default: the largest the broker takes, at most {update_transfer.MAX_CHUNK_BYTES})",
    )  # fmt: skip
    pb.add_argument("--ttl-s", type=int, default=sign.DEFAULT_TTL_S, help="validity in seconds (default 300)")
    pb.add_argument(
        "--wait-s", type=float, default=30.0, help="how long to wait for the answers (default 30)"
    )
    _broker_args(pb)
    pb.set_defaults(handler=publish_update)

    wt = fsub.add_parser(
        "watch", help="print what gateways report: results, config and update states, health, state"
    )
    wt.add_argument("--gateway", default="+", metavar="ID", help="one gateway (default: all)")
    wt.add_argument("--seconds", type=float, default=0.0, help="stop after this long (default: Ctrl-C)")
    wt.add_argument("--count", type=int, default=0, help="stop after this many messages")
    wt.add_argument(
        "--json", action="store_true", help="one JSON line per message (default when not on a terminal)"
    )
    _broker_args(wt)
    wt.set_defaults(handler=watch)

    co = fsub.add_parser(
        "coordinator", help="decide each device's home gateway from the broker's retained states (issue 21)"
    )
    fleet_coordinator_cmd.add_arguments(co, _mqtt)
    _broker_args(co)

    rg = fsub.add_parser(
        "registry", help="the registry pushed to gateways: diff or push a CSV or the platform's JSON"
    )
    fleet_registry_cmd.add_arguments(rg, _mqtt, _broker_args)


def _broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="localhost", help="the platform's broker")
    p.add_argument("--port", type=int, default=8883)
    p.add_argument("--no-tls", action="store_true", help="plain MQTT (tests, a local broker)")
    p.add_argument("--ca-file", default="", help="CA bundle to verify the broker")
    p.add_argument("--cert-file", default="", help="client certificate (mutual TLS)")
    p.add_argument("--key-file", default="", help="client private key (mutual TLS)")
    p.add_argument("--username", default="")
    p.add_argument("--password-env", default="", metavar="VAR", help="read the password from this variable")
    p.add_argument("--prefix", default="edgegw", help="topic prefix (default edgegw)")


def _mqtt(args: argparse.Namespace) -> MqttSection:
    return MqttSection(
        host=args.host,
        port=args.port,
        tls=not args.no_tls,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        username=args.username,
        password=os.environ.get(args.password_env, "") if args.password_env else "",
        topic_prefix=args.prefix,
        reconnect_min_s=0.2,
        reconnect_max_s=2.0,
    )


def keygen(args: argparse.Namespace) -> int:
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


# --- send and watch: the platform's side of the MQTT contract ------------------------------------


def _read_json(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a JSON file ({exc})") from exc


def _answers(env: signed_envelope.Envelope) -> tuple[str, str, bool, Any]:
    """(topic leaf to publish on, answer topic leaf, retained, the key that pairs an answer)."""
    payload = env.payload
    if "config" in payload:
        return "config", "config-state", True, payload["config"].get("version")
    return f"cmd/{payload.get('cmd')}", "cmd-result", False, env.seq


def send_envelope(args: argparse.Namespace) -> int:
    raw = _read_json(args.envelope_file)
    try:
        env = signed_envelope.parse(json.dumps(raw).encode())
    except CommandRejected as exc:
        raise UsageError(f"{args.envelope_file}: {exc}") from exc
    gateways = args.gateway or ([] if env.target.startswith(signed_envelope.GROUP_PREFIX) else [env.target])
    if not gateways:
        raise UsageError(f"target {env.target} is a group: name its gateways with --gateway")
    leaf, answer_leaf, retained, key = _answers(env)
    if args.outcome and env.payload.get("cmd") != "downlink":
        raise UsageError("--outcome: only a downlink command has an end state to wait for")
    settings = _mqtt(args)
    data = json.dumps(raw).encode()

    async def publish(uplink: MqttUplink) -> None:
        for g in gateways:
            await uplink.publish(
                f"{Topics(settings.topic_prefix, g).root}/{leaf}", data, qos=1, retain=retained
            )

    keys = dict.fromkeys(gateways, key)
    answers = asyncio.run(_send(settings, publish, answer_leaf, keys, args.wait_s, outcome=args.outcome))
    print_json({"target": env.target, "seq": env.seq, "sent_to": gateways, "answers": answers})
    _judge(answers, gateways, args.wait_s)
    return 0


def _judge(answers: dict[str, Any], gateways: list[str], wait_s: float) -> None:
    """CheckFailed (exit 1) when a gateway did not answer or refused."""
    missing = [g for g in gateways if g not in answers]
    if missing:
        raise CheckFailed(f"no answer within {wait_s:g} s from {', '.join(missing)}")
    undelivered = [f"{g} ({a['state']})" for g, a in answers.items() if a.get("state") and not a.get("ok")]
    if undelivered:
        raise CheckFailed(f"downlink not delivered: {', '.join(undelivered)}")
    refused = [
        g for g, a in answers.items() if a.get("ok") is False or a.get("status") in ("rejected", "reverted")
    ]
    if refused:
        raise CheckFailed(f"refused by {', '.join(refused)}")


def _wanted(result: dict[str, Any], outcome: bool) -> bool:
    """Which result of a command ``send`` waits for: its answer, or (``outcome``) a downlink's end
    state; a refused command has no end state, its answer is the last word."""
    if outcome:
        return "state" in result or result.get("ok") is False
    return "state" not in result


async def _send(
    settings: MqttSection,
    publish: Publish,
    answer_leaf: str,
    keys: dict[str, Any],
    wait_s: float,
    *,
    outcome: bool = False,
) -> dict[str, Any]:
    """Connect, ``publish``, and collect each gateway's answer on ``answer_leaf`` paired by ``keys[gateway]``
    (a command's ``seq``, a configuration's ``version``), until all came or ``wait_s`` passed.

    A ``downlink`` command has two results with its seq (docs/fleet.md): the answer, then the end
    state (``state``); ``outcome`` waits for the end state (or a refusal, which has none), else
    the answer is taken."""
    # paho only for the commands that connect (send, publish, watch): keygen and sign start without it.
    from gateway.uplink.mqtt import MqttUplink

    answers: dict[str, Any] = {}
    done = asyncio.Event()
    roots = {f"{Topics(settings.topic_prefix, g).root}/{answer_leaf}": g for g in keys}

    def on_answer(topic: str, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        paired = doc.get("version") if answer_leaf == "config-state" else doc.get("seq")
        gateway = roots.get(topic)
        # A retained config-state may be an older version's: only this envelope's answer counts,
        # and for a configuration only a final status (not "pending").
        if gateway is None or paired != keys[gateway] or doc.get("status") == "pending":
            return
        if answer_leaf == "cmd-result" and not _wanted(doc, outcome):
            return  # the other result of the same downlink command
        answers[gateway] = doc
        if len(answers) == len(keys):
            done.set()

    uplink = MqttUplink(settings, client_id=f"edgegw-fleet-{os.getpid()}-{int(time.time())}", will=None)
    for topic in roots:
        uplink.subscribe(topic, on_answer, qos=1)
    await uplink.start()
    try:
        if not await uplink.wait_connected(min(wait_s, 15.0)):
            raise UplinkError(f"broker {settings.host}:{settings.port} not reached")
        await asyncio.sleep(0.2)  # the SUBACKs, before anything can answer
        await publish(uplink)
        try:
            await asyncio.wait_for(done.wait(), wait_s)
        except TimeoutError:
            pass
    finally:
        await uplink.stop()
    return answers


# --- update publish: an agent package to gateways --------------------------------------------------


def publish_update(args: argparse.Namespace) -> int:
    try:
        package = Path(args.package).read_bytes()
        key = sign.load_private_key(args.key)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    version = args.version or update_transfer.package_version(package)
    if version is None:
        raise UsageError(f"{args.package}: no gateway/__init__.py with a __version__: not an edgegw wheel")
    if args.ttl_s <= 0:
        raise UsageError("--ttl-s must be positive")
    try:
        params = update_transfer.announce_params(version, package)
    except ValueError as exc:
        raise UsageError(f"{args.package}: {exc}") from exc
    settings = _mqtt(args)
    envelopes = {
        g: sign.sign_envelope(key, sign.command("update_agent", params), target=g, ttl_s=args.ttl_s)
        for g in args.gateway
    }
    sent: dict[str, int] = {}

    async def publish(uplink: MqttUplink) -> None:
        for g, env in envelopes.items():
            root = Topics(settings.topic_prefix, g).root
            longest = update_transfer.longest_chunk_topic(root, params["sha256"])
            fits = min(update_transfer.MAX_CHUNK_BYTES, uplink.max_payload_bytes(longest))
            try:
                parts = update_transfer.chunks(root, package, args.chunk_bytes or fits)
            except ValueError as exc:
                raise UsageError(f"--chunk-bytes: {exc}") from exc
            # The command first, so that the chunks mostly find their transfer announced (those that
            # overtake it are held, bounded). Not waiting for its answer: one round trip per gateway.
            await uplink.publish(f"{root}/cmd/update_agent", json.dumps(env).encode(), qos=1)
            for part in parts:
                await uplink.publish(part.topic, part.payload, qos=1)
            sent[g] = len(parts)

    keys = {g: env["seq"] for g, env in envelopes.items()}
    answers = asyncio.run(_send(settings, publish, "cmd-result", keys, args.wait_s))
    print_json({**params, "sent_to": args.gateway, "chunks": sent, "answers": answers})
    _judge(answers, args.gateway, args.wait_s)
    return 0


def watch(args: argparse.Namespace) -> int:
    as_json = args.json or not sys.stdout.isatty()
    try:
        asyncio.run(_watch(_mqtt(args), args.gateway, args.seconds, args.count, as_json))
    except KeyboardInterrupt:
        pass
    return 0


async def _watch(settings: MqttSection, gateway: str, seconds: float, count: int, as_json: bool) -> None:
    # paho only for the commands that connect (send, watch): keygen and sign start without it.
    from gateway.uplink.mqtt import MqttUplink

    seen = 0
    finished = asyncio.Event()

    def on_message(topic: str, payload: bytes) -> None:
        nonlocal seen
        parts = topic.split("/")
        try:
            doc: Any = json.loads(payload)
        except ValueError:
            doc = payload.decode("utf-8", "replace")
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if as_json:
            line = {"at": at, "gateway": parts[-2], "kind": parts[-1], "message": doc}
            print(json.dumps(line, separators=(",", ":")), flush=True)
        else:  # hh:mm:ss (UTC) gateway kind: what it says
            text = reports.describe(parts[-1], doc)
            print(f"{at[11:19]}  {parts[-2]:<16} {parts[-1]:<12} {text}", flush=True)
        seen += 1
        if count and seen >= count:
            finished.set()

    uplink = MqttUplink(settings, client_id=f"edgegw-watch-{os.getpid()}-{int(time.time())}", will=None)
    for leaf in WATCHED:
        uplink.subscribe(f"{settings.topic_prefix}/{gateway}/{leaf}", on_message, qos=1)
    await uplink.start()
    try:
        await asyncio.wait_for(finished.wait(), seconds if seconds > 0 else None)
    except TimeoutError:
        pass
    finally:
        await uplink.stop()
