"""Failover through real processes (issue 21): two agents hear one device, the coordinator names a
home, the home dies (kill -9), the coordinator moves the device to the witness, and the device — its
downlinks opened by the project's firmware code (``firmware/lorawan/frames.open_downlink``, the frame
check the MicroPython lamp controller runs) — accepts the new home's commands: FCntDown only grows,
above anything the dead home could have used.

The second test cuts the home's backhaul silently instead (a relay that stops forwarding and closes
nothing): the broker notices by the keepalive, the cut-off home keeps its assignment and keeps
answering within its reserve, the witness takes over above it, and the old home, back, is a witness.

Real parts: two ``edgegw run`` processes (gw-a, gw-b), each with its own UDP packet forwarder and
SQLite file, one mosquitto, ``edgegw fleet coordinator --run`` as a process, platform commands signed
with the platform key. The failover times (kill -9 or the cut → the new assignment on the broker, and
→ the first downlink from the new home) are measured and printed (``-s``); docs/fleet.md quotes them.
"""

from __future__ import annotations

import base64
import importlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import paho.mqtt.publish as publish
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.fleet.sign import command, sign_envelope
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys
from gateway.messages import MType
from simulator.device_mac import firmware_mac
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.conftest import Broker, free_port
from tests.e2e.harness import AgentProcess, em310, make_device, register_abp, wait_ready

pytestmark = pytest.mark.e2e

KEEPALIVE_S = 5
"""The agents' MQTT keepalive (the smallest the config takes): the broker publishes a dead agent's
will after 1.5 keepalives without a packet (MQTT 3.1.1 §3.1.2.10)."""
INTERVAL_S = 0.5
"""The coordinator decides this often."""
FAILOVER_BOUND_S = 1.5 * KEEPALIVE_S + INTERVAL_S + 3.0
"""The failover time when the home dies with its host still up (kill -9: the kernel closes its socket,
the broker publishes the will at once): the will, the next decision, slack for a loaded machine."""
SILENT_CUT_BOUND_S = 3 * KEEPALIVE_S + INTERVAL_S + 3.0
"""The failover time when the backhaul fails silently: the broker notices only when the keepalive
runs out (1.5 keepalives by MQTT 3.1.1 §3.1.2.10; mosquitto 2.0.11 took 1.6 to 2.3 here), then as above."""
GATEWAYS = {
    "gw-a": (bytes.fromhex("b827ebfffe00000a"), -62.0),
    "gw-b": (bytes.fromhex("b827ebfffe00000b"), -97.0),
}
"""Gateway id -> (its forwarder's EUI, the RSSI at which it hears the device): gw-a hears it best."""


def firmware_frames() -> ModuleType:
    firmware_mac()  # puts firmware/ on the path as the boards' /lib
    return importlib.import_module("lorawan.frames")


class FirmwareDevice:
    """The device's downlink side as the firmware does it: MIC, then FCntDown strictly ahead (§4.3.1.5)."""

    def __init__(self, device: AbpDevice) -> None:
        frames = firmware_frames()
        self._frames = frames
        self._keys = frames.new_keys(device.nwk_s_key, device.app_s_key)
        self._dev_addr = device.dev_addr
        self.last_fcnt_down = -1
        self.accepted: list[tuple[str, int, bool, bytes]] = []
        self.refused: list[tuple[str, str]] = []

    def receive(self, gateway: str, data_b64: str) -> bool:
        try:
            down = self._frames.open_downlink(
                self._keys[0], self._keys[1], self._dev_addr, self.last_fcnt_down, base64.b64decode(data_b64)
            )
        except self._frames.FrameError as exc:
            self.refused.append((gateway, str(exc)))
            return False
        self.last_fcnt_down = down.fcnt32
        self.accepted.append((gateway, down.fcnt32, down.confirmed, bytes(down.payload)))
        return True


def ack_uplink(device: AbpDevice, payload: bytes) -> bytes:
    """The device's next uplink with FCtrl ACK set (it acknowledges the confirmed downlink it got)."""
    frame = phy.build_data_frame(
        SessionKeys(device.nwk_s_key, device.app_s_key), mtype=MType.UNCONFIRMED_DATA_UP,
        dev_addr=device.dev_addr, fcnt32=device.fcnt_up, fport=85, payload=payload, ack=True,
    )  # fmt: skip
    device.fcnt_up += 1
    return frame


class CuttableLink:
    """A TCP relay between one agent and the broker that can be cut the way a backhaul fails: the
    sockets stay open and silent (no FIN, no RST), so the broker learns of it only by the keepalive."""

    def __init__(self, broker: Broker) -> None:
        self._upstream = (broker.host, broker.port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)  # accept() wakes up to see close()
        self.port: int = self._server.getsockname()[1]
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _addr = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self._sockets.append(client)
            if self._cut.is_set():
                continue  # held open and silent: a connection attempt into the outage
            upstream = socket.create_connection(self._upstream)
            with self._lock:
                self._sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                pump = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                self._threads.append(pump)
                pump.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                if not self._cut.is_set():  # cut: the other side never learns of it either
                    dst.close()
                return
            if not self._cut.is_set():  # cut: what is sent is lost, nothing is closed
                try:
                    dst.sendall(data)
                except OSError:
                    return

    def cut(self) -> None:
        self._cut.set()

    def heal(self) -> None:
        """The backhaul is back: the old connections are dead for good (closed), new ones pass."""
        with self._lock:
            dead, self._sockets = self._sockets, []
        for sock in dead:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv()
            except OSError:
                pass
            sock.close()
        self._cut.clear()

    def close(self) -> None:
        self._closed = True
        self.heal()
        for thread in self._threads:
            thread.join(5)
        self._server.close()


class Coordinator:
    """`edgegw fleet coordinator --run` as a process; its stdout (one JSON line per move) collected."""

    def __init__(self, key_file: Path, broker: Broker) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "fleet", "coordinator", "--run", "--key", str(key_file),
             "--host", broker.host, "--port", str(broker.port), "--no-tls", "--stale-s", "60",
             "--hold-s", "5", "--settle-s", "1", "--interval-s", str(INTERVAL_S)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.moves: list[dict[str, Any]] = []
        self.log: list[str] = []
        self._threads = [
            threading.Thread(target=self._read_moves, daemon=True),
            threading.Thread(target=self._read_log, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_moves(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.moves.append({**json.loads(line), "seen_mono": time.monotonic()})

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def agent_config(workdir: Path, gateway_id: str, udp_port: int, broker_host: str, broker_port: int) -> Path:
    workdir.mkdir()
    config_file = workdir / "edgegw.yaml"
    config_file.write_text(
        f"gateway: {{id: {gateway_id}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{udp_port}"}}\n'
        f"mqtt: {{host: {broker_host}, port: {broker_port}, tls: false, keepalive_s: {KEEPALIVE_S},\n"
        "       inventory_interval_s: 1, reconnect_min_s: 0.2, reconnect_max_s: 1}\n"
        # Only the counter under test moves: no ADR or DevStatus requests riding on the downlinks.
        "lorawan: {adr: false, dev_status_period_s: 0}\n"
        f"data_dir: {workdir / 'data'}\n"
    )
    return config_file


class TwoGateways:
    """gw-a and gw-b as processes, each with its forwarder; the device, the platform key, the
    subscribers; ``broker_ports`` lets a gateway reach the broker through a proxy."""

    def __init__(
        self, tmp_path: Path, mosquitto: Broker, subscribe: Any, broker_ports: dict[str, int] | None = None
    ) -> None:
        self.broker = mosquitto
        self.device = make_device(1)
        self.firmware = FirmwareDevice(self.device)
        self.platform_key = Ed25519PrivateKey.generate()
        self.key_file = tmp_path / "platform.pem"
        self.key_file.write_bytes(
            self.platform_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        public_pem = self.platform_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.configs: dict[str, Path] = {}
        self.ports: dict[str, int] = {}
        for gw in GATEWAYS:
            self.ports[gw] = free_port(socket.SOCK_DGRAM)
            port = (broker_ports or {}).get(gw, mosquitto.port)
            self.configs[gw] = agent_config(tmp_path / gw, gw, self.ports[gw], mosquitto.host, port)
            register_abp(self.configs[gw], self.device)
            (tmp_path / gw / "data" / "platform-ed25519.pub").write_bytes(public_pem)
        self.homes = subscribe("edgegw/fleet/home/+")
        self.reserves = subscribe("edgegw/+/fcnt-reserve/+")
        self.results = subscribe("edgegw/+/cmd-result")
        self.tmst = 5_000_000
        self.forwarders: dict[str, PacketForwarder] = {}
        self.agents: dict[str, AgentProcess] = {}
        self.coordinator: Coordinator | None = None

    def start(self) -> None:
        self.agents = {gw: AgentProcess(self.configs[gw]) for gw in GATEWAYS}
        for gw, (eui, _rssi) in GATEWAYS.items():
            self.forwarders[gw] = PacketForwarder(eui, ("127.0.0.1", self.ports[gw]))
            try:
                wait_ready(self.forwarders[gw])
            except AssertionError as exc:
                raise AssertionError(f"{gw}: {exc}\n" + "\n".join(self.agents[gw].lines[-20:])) from exc
        self.coordinator = Coordinator(self.key_file, self.broker)

    def close(self) -> None:
        if self.coordinator is not None:
            self.coordinator.stop()
        for forwarder in self.forwarders.values():
            forwarder.close()

    def home_now(self) -> dict[str, Any] | None:
        docs = [json.loads(m.payload) for m in list(self.homes.messages) if m.payload]
        payload: dict[str, Any] | None = docs[-1]["payload"] if docs else None
        return payload

    def reserve_of(self, gw: str) -> int:
        eui = self.device.dev_eui.hex()
        topic = f"edgegw/{gw}/fcnt-reserve/{eui}"
        self.reserves.wait_for(lambda m: any(x.topic == topic for x in m))
        published = [json.loads(m.payload) for m in list(self.reserves.messages) if m.topic == topic]
        return max(int(doc["reserved_upto"]) for doc in published)

    def send_downlink(self, gw: str, seq: int, payload_hex: str, *, confirmed: bool) -> None:
        params = {"dev_eui": self.device.dev_eui.hex(), "fport": 85, "payload_hex": payload_hex}
        envelope = sign_envelope(
            self.platform_key, command("downlink", {**params, "confirmed": confirmed}), target=gw, seq=seq
        )
        publish.single(
            f"edgegw/{gw}/cmd/downlink", json.dumps(envelope), qos=1,
            hostname=self.broker.host, port=self.broker.port,
        )  # fmt: skip
        self.results.wait_for(lambda m: any(json.loads(x.payload).get("seq") == seq for x in m))

    def outcomes(self, seq: int) -> list[dict[str, Any]]:
        docs = [json.loads(m.payload) for m in list(self.results.messages)]
        return [d for d in docs if d.get("seq") == seq]

    def uplink(self, hearing: tuple[str, ...], *, confirmed: bool = False, ack: bool = False) -> None:
        """One transmission of the device, heard by the gateways named, each at its own RSSI."""
        payload = em310(90, 1000, False)
        if ack:
            frame = ack_uplink(self.device, payload)
        else:
            frame = self.device.uplink(payload, 85, confirmed=confirmed)
        self.tmst += 10_000_000
        for gw in hearing:
            rx = {"tmst_us": self.tmst, "rssi_dbm": GATEWAYS[gw][1], "snr_db": 7.0 if gw == "gw-a" else -3.0}
            self.forwarders[gw].send_frames([(frame, rx)])

    def downlink_from(self, gw: str, timeout_s: float) -> str | None:
        down = self.forwarders[gw].wait_downlink(timeout_s=timeout_s)
        return None if down is None else str(down.txpk["data"])

    def wait_home(self, gw: str, hearing: tuple[str, ...], timeout_s: float) -> float:
        """Uplinks heard by ``hearing`` until the coordinator names ``gw``; the seconds it took."""
        started = time.monotonic()
        while (self.home_now() or {}).get("home") != gw:
            log = self.coordinator.log[-10:] if self.coordinator is not None else []
            assert time.monotonic() - started < timeout_s, f"{gw} never became home: {log}"
            self.uplink(hearing)
            time.sleep(0.2)
        return time.monotonic() - started

    def home_answers(self, gw: str, seq: int, payload_hex: str) -> None:
        """A command through the home ``gw``, taken by the device; the other gateway never transmits."""
        other = next(g for g in GATEWAYS if g != gw)
        self.send_downlink(gw, seq, payload_hex, confirmed=False)
        self.uplink(tuple(GATEWAYS))
        data = self.downlink_from(gw, 5.0)
        assert data is not None, f"the home {gw} did not answer"
        assert self.firmware.receive(gw, data), self.firmware.refused
        assert self.downlink_from(other, 0.5) is None, f"the witness {other} transmitted"


def test_the_home_killed_the_witness_takes_over_within_the_failover_time_and_the_device_accepts_it(
    tmp_path: Path, mosquitto: Broker, subscribe: Any
) -> None:
    fleet = TwoGateways(tmp_path, mosquitto, subscribe)
    firmware = fleet.firmware
    try:
        fleet.start()
        # Both hear the device; gw-a better: the coordinator makes it home (epoch 1).
        fleet.wait_home("gw-a", ("gw-a", "gw-b"), 30)
        assert fleet.home_now() == {"home": "gw-a", "epoch": 1, "fcnt_floor": 0}
        time.sleep(1.0)  # both agents took the retained assignment
        for n in range(3):
            fleet.home_answers("gw-a", 100 + n, f"a{n}")
        used_by_a = firmware.last_fcnt_down
        reserve_a = fleet.reserve_of("gw-a")
        assert reserve_a >= used_by_a

        # kill -9 the home. Only gw-b hears the device from now on.
        fleet.agents["gw-a"].proc.kill()
        killed_mono = time.monotonic()
        assignment_s = fleet.wait_home("gw-b", ("gw-b",), 3 * FAILOVER_BOUND_S)
        moved = fleet.home_now()
        assert moved is not None and (moved["home"], moved["epoch"]) == ("gw-b", 2)
        assert moved["fcnt_floor"] == reserve_a

        # A confirmed command through the new home, sent as soon as it takes the device.
        fleet.send_downlink("gw-b", 200, "b0", confirmed=True)
        data = None
        while data is None:
            assert time.monotonic() - killed_mono < 3 * FAILOVER_BOUND_S, "the new home never answered"
            fleet.uplink(("gw-b",))
            data = fleet.downlink_from("gw-b", 1.5)
        first_downlink_s = time.monotonic() - killed_mono
        assert firmware.receive("gw-b", data), firmware.refused
        fleet.uplink(("gw-b",), ack=True)
        fleet.results.wait_for(lambda _m: any(d.get("state") == "acknowledged" for d in fleet.outcomes(200)))
    finally:
        fleet.close()
        assert fleet.agents["gw-b"].stop() == 0
        fleet.agents["gw-a"].proc.wait(10)

    print(f"failover after kill -9: assignment {assignment_s:.1f} s, first downlink {first_downlink_s:.1f} s")
    assert assignment_s <= FAILOVER_BOUND_S
    # The device took everything, in order; the new home's first counter is above the dead home's reserve.
    gw_b_first = next(fcnt for gw, fcnt, _c, _p in firmware.accepted if gw == "gw-b")
    assert gw_b_first > reserve_a >= used_by_a
    assert [p for _g, _f, _c, p in firmware.accepted] == [b"\xa0", b"\xa1", b"\xa2", b"\xb0"]
    assert firmware.refused == []
    assert fleet.agents["gw-b"].final_counters()["downlinks"].get("fcnt_down_raised") == 1


def test_a_cut_off_home_keeps_serving_the_witness_takes_over_above_its_reserve_and_no_conflict_after(
    tmp_path: Path, mosquitto: Broker, subscribe: Any
) -> None:
    """Partition: gw-a's backhaul fails silently. The broker publishes its will after 1.5 keepalives,
    the coordinator moves the device to gw-b. gw-a, cut off, keeps its last assignment and goes on
    answering what it hears (counters within the reserve it published); gw-b starts above that
    reserve, so the device takes gw-b's frames; when gw-a is back it reads the new assignment and
    never transmits to the device again."""
    link = CuttableLink(mosquitto)
    fleet = TwoGateways(tmp_path, mosquitto, subscribe, broker_ports={"gw-a": link.port})
    firmware = fleet.firmware
    state_a = subscribe("edgegw/gw-a/state")
    try:
        fleet.start()
        fleet.wait_home("gw-a", ("gw-a", "gw-b"), 30)
        time.sleep(1.0)
        fleet.home_answers("gw-a", 100, "a0")
        reserve_a = fleet.reserve_of("gw-a")

        link.cut()
        cut_mono = time.monotonic()
        # Cut off, gw-a still answers the device's confirmed uplinks (it is home as far as it knows).
        answered_cut_off: list[int] = []
        moved_s = will_s = None
        while moved_s is None:
            states = [json.loads(m.payload)["state"] for m in list(state_a.messages)]
            if will_s is None and "offline" in states:
                will_s = time.monotonic() - cut_mono
            assert time.monotonic() - cut_mono < 2 * SILENT_CUT_BOUND_S, "no failover"
            fleet.uplink(("gw-a", "gw-b"), confirmed=True)
            data = fleet.downlink_from("gw-a", 0.5)
            if data is not None and (fleet.home_now() or {}).get("home") != "gw-b":
                assert firmware.receive("gw-a", data), firmware.refused
                answered_cut_off.append(firmware.last_fcnt_down)
            if (fleet.home_now() or {}).get("home") == "gw-b":
                moved_s = time.monotonic() - cut_mono
            data = fleet.downlink_from("gw-b", 0.2)  # the new home's ACK, once it took the device
            if data is not None:
                assert firmware.receive("gw-b", data), firmware.refused
        offline = [m for m in list(state_a.messages) if json.loads(m.payload)["state"] == "offline"]
        assert offline, "no will published for the cut-off gateway"
        assert answered_cut_off, "the cut-off home stopped serving"
        assert max(answered_cut_off) <= reserve_a
        moved = fleet.home_now()
        assert moved is not None and moved["fcnt_floor"] == reserve_a

        # gw-b answers above everything gw-a could have used; the device takes it.
        fleet.send_downlink("gw-b", 200, "b0", confirmed=False)
        data = None
        while data is None:
            assert time.monotonic() - cut_mono < 3 * SILENT_CUT_BOUND_S, "the new home never answered"
            fleet.uplink(("gw-b",))
            data = fleet.downlink_from("gw-b", 1.5)
        assert firmware.receive("gw-b", data), firmware.refused
        assert firmware.last_fcnt_down > reserve_a

        # The backhaul is back: gw-a reconnects, reads epoch 2, and is a witness from then on.
        link.heal()
        state_a.wait_for(lambda m: json.loads(m[-1].payload)["state"] == "online", timeout_s=20)
        time.sleep(1.0)  # the retained assignment, read at the connection
        fleet.forwarders["gw-a"].wait_downlink(timeout_s=0.2)  # what it answered before it knew
        for _ in range(3):
            fleet.uplink(("gw-a", "gw-b"), confirmed=True)
            data = fleet.downlink_from("gw-b", 5.0)
            assert data is not None and firmware.receive("gw-b", data), firmware.refused
            assert fleet.downlink_from("gw-a", 0.5) is None, "the old home transmitted after its return"
    finally:
        fleet.close()
        for agent in fleet.agents.values():
            assert agent.stop() == 0
        link.close()

    print(f"failover after a silent backhaul cut: will after {will_s:.1f} s, assignment {moved_s:.1f} s")
    assert moved_s <= SILENT_CUT_BOUND_S
    assert firmware.refused == []
    assert fleet.agents["gw-a"].final_counters()["fleet"]["homes"].get("fleet_home.assigned", 0) >= 2
