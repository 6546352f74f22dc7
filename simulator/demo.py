"""``edgegw demo``: a local mosquitto, the agent and a simulated fleet, for a newcomer.

Owns the choreography only: every part is the real one (the mosquitto binary on
a free loopback port, ``edgegw run`` as a process, Semtech UDP datagrams from a
fake packet forwarder, a paho subscriber). It prints what happens and, at the
end, checks that every good frame reached the broker decoded and no refused
frame did (exit 1 otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway import db
from gateway.messages import AesKey, DevAddr, DevEui
from gateway.provisioning import registry
from simulator.fleet import FleetMember, make_fleet, traffic
from simulator.forwarder import PacketForwarder

GATEWAY_ID = "gw-demo"


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _say(text: str) -> None:
    print(text, flush=True)


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise SystemExit(
            "edgegw demo: mosquitto is not installed (make demo installs it: apt-get install mosquitto)"
        )
    return found


def register_fleet(data_dir: Path, members: list[FleetMember]) -> None:
    conn = db.connect(db.db_path(data_dir))
    try:
        for m in members:
            d = m.device
            registry.add_device(
                conn,
                dev_eui=DevEui(d.dev_eui),
                profile=d.profile,
                keys=registry.AbpKeys(DevAddr(d.dev_addr), AesKey(d.nwk_s_key), AesKey(d.app_s_key)),
                site=f"demo/container-{d.dev_addr.hex()[-2:]}",
            )
    finally:
        conn.close()


class BrokerWatch:
    """A subscriber on the demo broker: counts batches and records the agent published."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.records: list[dict[str, Any]] = []
        self.batches = 0
        self.states: list[str] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edgegw-demo-watch")
        self._client.on_connect = lambda c, *_a: c.subscribe(topic_filter, qos=1)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        with self._lock:
            if msg.topic.endswith("/up"):
                self.batches += 1
                self.records.extend(doc["records"])
            elif msg.topic.endswith("/state"):
                self.states.append(doc["state"])

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.batches, len(self.records)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def run_demo(
    duration_s: float = 30.0, devices: int = 6, rate_hz: float = 4.0, workdir: str | None = None
) -> int:
    mosquitto_bin = find_mosquitto()
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="edgegw-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    mqtt_port, udp_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    _say(f"edgegw demo: working directory {work}")

    (work / "mosquitto.conf").write_text(
        f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
        "log_type error\n"
    )
    config_file = work / "edgegw.yaml"
    config_file.write_text(
        f"gateway: {{id: {GATEWAY_ID}, name: demo gateway}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{udp_port}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, tls: false}}\n"
        f"data_dir: {work / 'data'}\n"
        "log: {level: INFO, stats_interval_s: 5}\n"
    )
    members = make_fleet(devices, seed=1)
    register_fleet(work / "data", members)
    _say(f"registered {devices} simulated Milesight EM310-UDL fill-level sensors (ABP)")

    broker = subprocess.Popen([mosquitto_bin, "-c", str(work / "mosquitto.conf")])
    agent: subprocess.Popen[str] | None = None
    watch: BrokerWatch | None = None
    try:
        _wait_tcp(mqtt_port)
        _say(f"mosquitto listening on 127.0.0.1:{mqtt_port}")
        _say(f"watch the output:  mosquitto_sub -h 127.0.0.1 -p {mqtt_port} -t 'edgegw/#' -v")
        watch = BrokerWatch(mqtt_port, f"edgegw/{GATEWAY_ID}/#")
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEGW_")}
        agent = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config_file)],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        threading.Thread(target=_relay, args=(agent,), daemon=True).start()
        sent = _send_traffic(members, udp_port, duration_s, rate_hz, watch)
        _wait_drained(watch, sent["good"], timeout_s=10)
        return _report(watch, sent, mqtt_port)
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            try:
                code = agent.wait(15)
                _say(f"agent stopped (exit code {code})")
            except subprocess.TimeoutExpired:
                agent.kill()
                _say("agent did not stop within 15 s: killed")
        if watch is not None:
            time.sleep(0.3)
            _say(
                f"retained state on edgegw/{GATEWAY_ID}/state went: {' -> '.join(watch.states) or 'nothing'}"
            )
            watch.close()
        broker.terminate()
        broker.wait(5)


def _wait_tcp(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"edgegw demo: mosquitto did not start on port {port}")


def _relay(agent: subprocess.Popen[str]) -> None:
    assert agent.stderr is not None
    for line in agent.stderr:
        print(f"  agent | {line.rstrip()}", flush=True)


def _send_traffic(
    members: list[FleetMember], udp_port: int, duration_s: float, rate_hz: float, watch: BrokerWatch
) -> Counter[str]:
    sent: Counter[str] = Counter()
    frames = traffic(members)
    forwarder = PacketForwarder(bytes.fromhex("b827ebfffe000001"), ("127.0.0.1", udp_port))
    _say(f"simulated packet forwarder b827ebfffe000001 → UDP 127.0.0.1:{udp_port} for {duration_s:.0f} s")
    start = time.monotonic()
    next_report = start + 5
    try:
        # Like lora_pkt_fwd, announce the downlink path first; its PULL_ACK also says the agent listens.
        ready_by = time.monotonic() + 20
        while not forwarder.pull(timeout_s=0.5):
            if time.monotonic() > ready_by:
                raise SystemExit("edgegw demo: the agent did not answer PULL_DATA within 20 s")
        start = next_report = time.monotonic()
        next_report += 5
        while time.monotonic() - start < duration_s:
            frame = next(frames)
            token = forwarder.send_frames(
                [(frame.phy_payload, {"rssi_dbm": -70.0 - sum(sent.values()) % 37})]
            )
            acked = forwarder.wait_ack(token, timeout_s=1.0)
            sent[frame.kind] += 1
            sent["push_ack" if acked else "no_push_ack"] += 1
            if time.monotonic() >= next_report:
                batches, records = watch.snapshot()
                refused = sent["bad_mic"] + sent["replay"] + sent["unknown_device"]
                _say(
                    f"sim   | sent {sent['good']} good frames and {refused} that must be refused "
                    f"(bad MIC {sent['bad_mic']}, replay {sent['replay']}, "
                    f"unknown device {sent['unknown_device']}); "
                    f"broker got {records} records in {batches} batches"
                )
                next_report += 5
            time.sleep(1.0 / rate_hz)
    finally:
        forwarder.close()
    return sent


def _wait_drained(watch: BrokerWatch, expected: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and watch.snapshot()[1] < expected:
        time.sleep(0.1)


def _report(watch: BrokerWatch, sent: Counter[str], mqtt_port: int) -> int:
    batches, count = watch.snapshot()
    records = list(watch.records)
    ids = {r["id"] for r in records}
    _say("")
    _say("---- demo summary ----")
    _say(
        f"frames sent: {sent['good']} good, {sent['bad_mic']} bad MIC, {sent['replay']} replayed, "
        f"{sent['unknown_device']} from an unknown device; PUSH_ACKs {sent['push_ack']}"
    )
    _say(f"broker received {count} records ({len(ids)} distinct ids) in {batches} batches")
    if records:
        _say("one record as the platform sees it:")
        print(json.dumps(records[-1], indent=2), flush=True)
    ok = len(ids) == sent["good"] and all(r["data"] for r in records)
    _say(
        "RESULT: every good frame arrived decoded, no refused frame did"
        if ok
        else f"RESULT: MISMATCH: {sent['good']} good frames sent, {len(ids)} distinct records received"
    )
    return 0 if ok else 1
