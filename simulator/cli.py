"""``edgegw-sim``: the fleet simulator's command line.

    edgegw-sim fleet --count 6                 # the simulated devices, as `edgegw device add` commands
    edgegw-sim send --server 127.0.0.1:1700 --count 6 --duration-s 60 --rate-hz 2
    edgegw-sim devices --scenario simulator/scenarios/flood-day.yaml > fleet.csv  # edgegw device import
    edgegw-sim run --scenario simulator/scenarios/flood-day.yaml --target 127.0.0.1:1700 --truth truth.jsonl

Devices are derived from ``--seed`` so `fleet` and `send` agree without a shared
file. Uplink counters start at 0 unless ``--state FILE`` keeps them between runs
(a registered device refuses counters it has already seen: that is replay protection).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import ConfigError
from simulator import scenario
from simulator.fleet import FleetMember, make_fleet, traffic
from simulator.forwarder import PacketForwarder


def _server(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgegw-sim", description="LoRaWAN fleet simulator for edgegw")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fleet = sub.add_parser("fleet", help="print the simulated devices (to register them)")
    fleet.add_argument("--count", type=int, default=6)
    fleet.add_argument("--seed", type=int, default=1)
    fleet.add_argument("--json", action="store_true", help="one JSON document with devices and keys")
    fleet.set_defaults(handler=cmd_fleet)

    send = sub.add_parser("send", help="send the fleet's uplinks as a Semtech UDP packet forwarder")
    send.add_argument("--server", type=_server, default=("127.0.0.1", 1700), metavar="HOST:PORT")
    send.add_argument("--count", type=int, default=6)
    send.add_argument("--seed", type=int, default=1)
    send.add_argument("--duration-s", type=float, default=30.0)
    send.add_argument("--rate-hz", type=float, default=2.0, help="frames per second")
    send.add_argument("--gateway-eui", default="b827ebfffe000001")
    send.add_argument("--no-misbehave", action="store_true", help="send only good frames")
    send.add_argument("--state", type=Path, help="JSON file keeping the uplink counters between runs")
    send.add_argument("--json", action="store_true", help="print the counts as one JSON document")
    send.set_defaults(handler=cmd_send)

    run = sub.add_parser("run", help="run a scenario (fleet, physics, faults) against a gateway")
    run.add_argument("--scenario", type=Path, required=True, metavar="FILE")
    run.add_argument("--target", type=_server, default=("127.0.0.1", 1700), metavar="HOST:PORT")
    run.add_argument(
        "--speed", type=float, help="simulated seconds per wall second (default: the scenario's)"
    )
    run.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    run.add_argument("--truth", type=Path, metavar="OUT.jsonl", help="write the ground truth here")
    run.add_argument("--gateway-eui", default="b827ebfffe000001")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    run.set_defaults(handler=cmd_run)

    devices = sub.add_parser("devices", help="a scenario's devices as CSV for `edgegw device import`")
    devices.add_argument("--scenario", type=Path, required=True, metavar="FILE")
    devices.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    devices.set_defaults(handler=cmd_devices)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    try:
        loaded = scenario.load_scenario(args.scenario)
    except ConfigError as exc:
        print(f"edgegw-sim: {exc}", file=sys.stderr)
        return 2
    summary = scenario.run(
        loaded,
        args.target,
        speed=args.speed,
        seed=args.seed,
        truth=args.truth,
        gateway_eui=bytes.fromhex(args.gateway_eui),
    )
    if args.json:
        json.dump(summary.as_json(), sys.stdout)
        print()
    else:
        print(summary.text())
    return 0 if summary.no_push_acks == 0 else 1


def cmd_devices(args: argparse.Namespace) -> int:
    try:
        loaded = scenario.load_scenario(args.scenario)
    except ConfigError as exc:
        print(f"edgegw-sim: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(scenario.registration_csv(scenario.build_fleet(loaded, args.seed)))
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    members = make_fleet(args.count, args.seed)
    if args.json:
        doc = [
            {
                "dev_eui": m.device.dev_eui.hex(),
                "dev_addr": m.device.dev_addr.hex(),
                "nwk_s_key": m.device.nwk_s_key.hex(),
                "app_s_key": m.device.app_s_key.hex(),
                "profile": m.device.profile,
            }
            for m in members
        ]
        json.dump({"devices": doc}, sys.stdout, indent=2)
        print()
        return 0
    for m in members:
        d = m.device
        print(
            f"edgegw device add --dev-eui {d.dev_eui.hex()} --profile {d.profile} --abp "
            f"--dev-addr {d.dev_addr.hex()} --nwkskey {d.nwk_s_key.hex()} --appskey {d.app_s_key.hex()}"
        )
    return 0


def _load_state(path: Path | None, members: list[FleetMember]) -> None:
    if path is None or not path.exists():
        return
    saved = json.loads(path.read_text())
    for m in members:
        m.device.fcnt_up = int(saved.get(m.device.dev_eui.hex(), 0))


def _save_state(path: Path | None, members: list[FleetMember]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({m.device.dev_eui.hex(): m.device.fcnt_up for m in members}))
    tmp.replace(path)


def cmd_send(args: argparse.Namespace) -> int:
    members = make_fleet(args.count, args.seed)
    _load_state(args.state, members)
    frames = traffic(members, misbehave=not args.no_misbehave)
    sent: Counter[str] = Counter()
    deadline = time.monotonic() + args.duration_s
    with PacketForwarder(bytes.fromhex(args.gateway_eui), args.server) as forwarder:
        try:
            while time.monotonic() < deadline:
                frame = next(frames)
                token = forwarder.send_frames([(frame.phy_payload, {})])
                sent[frame.kind] += 1
                sent["push_ack" if forwarder.wait_ack(token, 1.0) else "no_push_ack"] += 1
                time.sleep(1.0 / args.rate_hz)
        finally:
            _save_state(args.state, members)
    if args.json:
        json.dump(dict(sent), sys.stdout)
        print()
    else:
        print(", ".join(f"{k} {v}" for k, v in sorted(sent.items())))
    return 0 if sent["no_push_ack"] == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
