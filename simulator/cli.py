"""``edgegw-sim``: the fleet simulator's command line.

    edgegw-sim fleet --count 6                 # the simulated devices, as `edgegw device add` commands
    edgegw-sim send --server 127.0.0.1:1700 --count 6 --duration-s 60 --rate-hz 2
    edgegw-sim devices --scenario simulator/scenarios/flood-day.yaml > fleet.csv  # edgegw device import
    edgegw-sim run --scenario simulator/scenarios/flood-day.yaml --target 127.0.0.1:1700 --truth truth.jsonl
    edgegw-sim city --scenario simulator/scenarios/first-deployment-week.yaml \
        --rules simulator/scenarios/first-deployment-rules.yaml --workdir /tmp/city   # agent + broker + check
    edgegw-sim city --scenario simulator/scenarios/two-gateways.yaml --workdir /tmp/two  # agent per gateway

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
from typing import TYPE_CHECKING

from gateway.errors import ConfigError
from gateway.progress import Progress, duration_text
from simulator import city, runner, scenario
from simulator.fleet import FleetMember, make_fleet, traffic
from simulator.forwarder import PacketForwarder

if TYPE_CHECKING:
    from simulator.broker import Mosquitto

RUN_PROGRESS_INTERVAL_S = 10.0
"""``run`` piped: one progress line per this many seconds (a scenario plays for minutes)."""


def _server(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _target(text: str) -> str:
    from simulator.transports import parse_target

    try:
        parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


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
    run.add_argument(
        "--target",
        type=_target,
        default="semtech-udp://127.0.0.1:1700",
        metavar="URL",
        help="semtech-udp://HOST:PORT (or HOST:PORT), serial://PATH (the runner makes the modem's pty "
        "link at PATH), sx127x-bridge://SOCKET (simulator.sx127x_bridge)",
    )
    run.add_argument(
        "--speed", type=float, help="simulated seconds per wall second (default: the scenario's)"
    )
    run.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    run.add_argument("--truth", type=Path, metavar="OUT.jsonl", help="write the ground truth here")
    run.add_argument("--gateway-eui", default="b827ebfffe000001")
    run.add_argument(
        "--clock", type=Path, metavar="FILE", help="drive this simulated clock (simulator.simclock)"
    )
    run.add_argument("--rules", type=Path, metavar="FILE", help="rules file: expected alerts in the truth")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress line on stderr")
    run.set_defaults(handler=cmd_run)

    whole = sub.add_parser("city", help="run a scenario against a real agent and broker, check the truth")
    whole.add_argument("--scenario", type=Path, required=True, metavar="FILE")
    whole.add_argument("--rules", type=Path, metavar="FILE", help="the agent's rules file")
    whole.add_argument("--workdir", type=Path, required=True, metavar="DIR", help="config, data, truth")
    whole.add_argument("--speed", type=float, help="simulated seconds per wall second")
    whole.add_argument("--seed", type=int)
    whole.add_argument("--broker", type=_server, metavar="HOST:PORT", help="default: start a mosquitto")
    whole.add_argument(
        "--transport",
        choices=("semtech-udp", "serial", "sx127x"),
        default="semtech-udp",
        help="how frames reach the agent: packet forwarders, a RUI3 modem on a pty, an emulated SX127x",
    )
    whole.add_argument("--json", action="store_true")
    whole.set_defaults(handler=cmd_city)

    rec = sub.add_parser("record", help="relay packet forwarders to a server and record the traffic (JSONL)")
    rec.add_argument("--listen", type=_server, default=("127.0.0.1", 1700), metavar="HOST:PORT")
    rec.add_argument("--target", type=_server, required=True, metavar="HOST:PORT")
    rec.add_argument("--out", type=Path, required=True, metavar="FILE.jsonl")
    rec.add_argument("--duration-s", type=float, default=3600.0, help="stop recording after this long")
    rec.set_defaults(handler=cmd_record)

    rep = sub.add_parser("replay", help="send a recorded trace's uplink datagrams to a server")
    rep.add_argument("trace", type=Path, metavar="FILE.jsonl")
    rep.add_argument("--target", type=_server, default=("127.0.0.1", 1700), metavar="HOST:PORT")
    rep.add_argument("--speed", type=float, default=1.0, help="recorded seconds per wall second")
    rep.add_argument("--json", action="store_true")
    rep.set_defaults(handler=cmd_replay)

    devices = sub.add_parser("devices", help="a scenario's devices as CSV for `edgegw device import`")
    devices.add_argument("--scenario", type=Path, required=True, metavar="FILE")
    devices.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    devices.set_defaults(handler=cmd_devices)
    return parser


def _load(path: Path) -> scenario.Scenario | None:
    """The scenario at ``path``, or None after printing why it is not valid (exit code 2)."""
    try:
        return scenario.load_scenario(path)
    except ConfigError as exc:
        print(f"edgegw-sim: {exc}", file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load(args.scenario)
    if loaded is None:
        return 2
    from simulator.simclock import SharedClock

    clock = SharedClock(args.clock, city.epoch_s(loaded)) if args.clock is not None else None
    line = RunProgress(loaded.name, loaded.duration_s, loaded.speed if args.speed is None else args.speed)
    try:
        with Progress(line.describe, quiet=args.quiet, interval_s=RUN_PROGRESS_INTERVAL_S) as progress:

            def on_event(t_s: float, summary: runner.Summary) -> None:
                line.simulated_s, line.frames = t_s, sum(summary.frames.values())
                progress.changed()

            summary = runner.run(
                loaded,
                args.target,
                speed=args.speed,
                seed=args.seed,
                truth=args.truth,
                gateway_eui=bytes.fromhex(args.gateway_eui),
                clock=clock,
                rules_file=args.rules,
                on_event=on_event,
            )
    finally:
        if clock is not None:
            clock.close()
    if args.json:
        json.dump(summary.as_json(), sys.stdout)
        print()
    else:
        print(summary.text())
    return 0 if summary.no_push_acks == 0 else 1


class RunProgress:
    """What ``run`` says while it plays a scenario: simulated time, frames sent, elapsed, ETA."""

    def __init__(self, name: str, duration_s: float, speed: float) -> None:
        self.name, self.duration_s, self.speed = name, duration_s, speed
        self.simulated_s = 0.0
        self.frames = 0

    def eta_s(self, elapsed_s: float) -> float:
        """Wall seconds left: the pace's, or the rate seen so far when the run is behind it."""
        paced_s = self.duration_s / self.speed - elapsed_s
        if self.simulated_s <= 0:
            return max(0.0, paced_s)
        seen_s = elapsed_s / self.simulated_s * (self.duration_s - self.simulated_s)
        return max(0.0, paced_s, seen_s)

    def describe(self, elapsed_s: float) -> str:
        # Most telling first: a narrow terminal cuts the end of the line.
        return (
            f"edgegw-sim run {self.name}: simulated {duration_text(self.simulated_s)}/"
            f"{duration_text(self.duration_s)}, ETA {duration_text(self.eta_s(elapsed_s))}, "
            f"{self.frames} frames sent, {duration_text(elapsed_s)} elapsed"
        )


def cmd_devices(args: argparse.Namespace) -> int:
    loaded = _load(args.scenario)
    if loaded is None:
        return 2
    sys.stdout.write(city.registration_csv(city.build_fleet(loaded, args.seed)))
    return 0


def cmd_city(args: argparse.Namespace) -> int:
    from simulator.broker import Mosquitto, free_port
    from simulator.citylab import result_lines, run_city

    loaded = _load(args.scenario)
    if loaded is None:
        return 2
    if loaded.gateways and args.transport != "semtech-udp":
        print(f"{args.scenario}: a scenario with gateways runs over semtech-udp only", file=sys.stderr)
        return 2
    # Its own mosquitto unless given one: persistent, so a broker_outage loses no subscriber message.
    own = None
    broker = args.broker
    if broker is None:
        own = Mosquitto(free_port(), args.workdir / "mosquitto", persistent=True)
        own.start()
        broker = own.address
    if loaded.gateways:  # one agent per gateway (simulator.gatewaylab)
        try:
            return _city_gateways(args, loaded, broker, own)
        finally:
            if own is not None:
                own.stop()
    try:
        result = run_city(
            loaded,
            args.workdir,
            broker,
            rules_file=args.rules,
            speed=args.speed,
            seed=args.seed,
            transport=args.transport,
            stop_broker=own.stop if own else None,
            start_broker=own.start if own else None,
        )
    finally:
        if own is not None:
            own.stop()
    report = {
        "summary": result.summary.as_json(),
        "drain_s": round(result.drain_s, 2),
        "check": result.comparison.as_json(),
    }
    if args.json:
        json.dump(report, sys.stdout)
        print()
    else:
        for line in result_lines(result):
            print(line)
    return 0 if result.comparison.ok else 1


def _city_gateways(
    args: argparse.Namespace, loaded: scenario.Scenario, broker: tuple[str, int], own: Mosquitto | None
) -> int:
    from simulator import gatewaylab  # starts processes: imported only by the commands that do

    result = gatewaylab.run_gateways(
        loaded,
        args.workdir,
        broker,
        rules_file=args.rules,
        speed=args.speed,
        seed=args.seed,
        stop_broker=own.stop if own else None,
        start_broker=own.start if own else None,
    )
    if args.json:
        report = {
            "summary": result.summary.as_json(),
            "drain_s": round(result.drain_s, 2),
            "check": result.comparison.as_json(),
            "gateways": {gid: n for gid, n in sorted(Counter(g for g, leaf, _ in result.origins).items())},
        }
        json.dump(report, sys.stdout)
        print()
    else:
        for line in gatewaylab.result_lines(result, loaded):
            print(line)
    return 0 if result.comparison.ok else 1


def cmd_record(args: argparse.Namespace) -> int:
    from simulator.trace import record

    with args.out.open("w", encoding="utf-8") as out:
        lines = record(args.listen, args.target, out, args.duration_s)
    print(f"{lines} datagrams recorded to {args.out}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from simulator.trace import replay

    if args.speed <= 0:
        print("edgegw-sim: --speed must be > 0", file=sys.stderr)
        return 2
    try:
        summary = replay(args.trace, args.target, args.speed)
    except (OSError, ValueError) as exc:
        print(f"edgegw-sim: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(summary.as_json(), sys.stdout)
        print()
    else:
        print(f"sent {summary.sent} datagrams in {summary.wall_s:.1f} s, {summary.answers} answers")
    return 0 if summary.answers >= summary.sent else 1


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
