"""Signed-but-harmful pushed configuration (issue 16, finding 6), against the agent as a process.

A pushed overlay is signed by the platform's key, so the signature proves where it came from, not
that it is safe: the reviewer had one accepted that turned TLS off, pointed the gateway at another
host with other CA/cert/key files and password, bound the radio on 0.0.0.0, pointed ``rules.path``
at keystore.key, and set ``outbox.max_bytes: 1``, which destroyed 1,300 of 1,500 committed records
and was reported ``applied``. The contract (docs/fleet.md, "Configuration push"):

* security-relevant keys and file paths are local-only unless the local file lists them in
  ``fleet.remote_settable``; an overlay changing one is refused whole, naming every such key;
* an overlay that would evict committed records is refused before it applies;
* a trial under which records stop flowing (or are evicted) is reverted like one that loses the
  broker.

Real parts: mosquitto with a mutual-TLS listener for the agent and a plain loopback listener for
the test (the platform's side), the reference signer (``gateway.fleet.sign``), the simulated packet
forwarder and ABP devices, the commit log trigger of tests/reliability (an id is logged in the
transaction that commits its record), and ``tests/fleet/supervisor.py`` restarting on exit 75.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from gateway import config, db
from gateway.errors import CommandRejected, ConfigError
from gateway.fleet import desired, sign
from gateway.fleet.config_store import FAILED_FILE, FLEET_DIR, GOOD_FILE, TRIAL_FILE, ConfigStore
from gateway.fleet.remote_config import EXIT_RESTART, ConfigApplier, Delivery
from gateway.fleet.trust import Trust
from gateway.provisioning.gateway_setup import pin_platform_key
from gateway.provisioning.keystore import KEY_FILENAME
from simulator.broker import Mosquitto, free_port
from simulator.forwarder import PacketForwarder
from tests.conftest import Broker
from tests.e2e.harness import GATEWAY_EUI, em310, make_device, register_abp, wait_ready
from tests.fleet.conftest import public_pem
from tests.fleet.supervisor import Supervisor
from tests.reliability.conftest import committed_ids, install_commit_log
from tests.uplink.test_tls_v5 import Pki, pki  # noqa: F401  (the certificates fixture)

pytestmark = pytest.mark.timeout(90)

GATEWAY_ID = "gw-push"
ROOT = f"edgegw/{GATEWAY_ID}"
REVERT_AFTER_S = 3
RECORDS_WAITING = 1500


# --- the platform's side: a broker with a TLS listener for the agent, a plain one for the test ---


@dataclass
class TlsBroker(Mosquitto):
    """mosquitto: ``port`` plain (the test's clients), ``tls_port`` mutual TLS (the agent)."""

    tls_port: int = 0
    pki: Pki | None = None

    def config_text(self) -> str:
        assert self.pki is not None
        return super().config_text() + (
            f"listener {self.tls_port} 127.0.0.1\n"
            f"cafile {self.pki.ca}\ncertfile {self.pki.server_cert}\nkeyfile {self.pki.server_key}\n"
            "require_certificate true\n"
        )


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[TlsBroker]:  # noqa: F811
    broker = TlsBroker(port=free_port(), workdir=tmp_path / "mosquitto-tls", tls_port=free_port(), pki=pki)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Platform:
    """The platform on the broker's plain listener: pushes signed, retained configurations and
    collects ``config-state`` reports and the ids of the records the gateway delivered."""

    def __init__(self, port: int, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.states: list[dict[str, Any]] = []
        self.ids: set[str] = set()
        self.onlines = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-platform-{port}")
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_a: c.subscribe(f"{ROOT}/#", qos=1)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(5):
            raise RuntimeError("the platform could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload or msg.topic == f"{ROOT}/config":
            return
        doc = json.loads(msg.payload)
        with self._lock:
            if msg.topic == f"{ROOT}/config-state":
                self.states.append(doc)
            elif msg.topic == f"{ROOT}/state":
                self.onlines += doc.get("state") == "online"
            elif "records" in doc:
                self.ids.update(r["id"] for r in doc["records"])
            elif "record" in doc:
                self.ids.add(doc["record"]["id"])

    def push(self, version: str, settings: dict[str, Any], rules: str | None = None) -> None:
        payload = {"config": {"version": version, "settings": settings, "rules": rules}}
        env = sign.sign_envelope(self.key, payload, target=GATEWAY_ID, ttl_s=3600)
        self.client.publish(f"{ROOT}/config", json.dumps(env), qos=1, retain=True).wait_for_publish(5)

    def state_of(self, version: str) -> dict[str, Any] | None:
        with self._lock:
            found = [doc for doc in self.states if doc.get("version") == version]
        return found[-1] if found else None

    def delivered(self) -> set[str]:
        with self._lock:
            return set(self.ids)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def platform_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def gateway_dir(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    """A data dir with the platform key pinned, as ``edgegw provision gateway --platform-key`` does."""
    data = tmp_path / "data"
    data.mkdir()
    pub = tmp_path / "platform.pub"
    pub.write_text(public_pem(key))
    pin_platform_key(data, pub)
    return data


def write_config(path: Path, data_dir: Path, udp_port: int, mqtt: str, fleet: str = "") -> Path:
    path.write_text(
        f"gateway: {{id: {GATEWAY_ID}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{udp_port}"}}\n'
        f"mqtt: {{{mqtt}, reconnect_min_s: 0.2, reconnect_max_s: 0.5}}\n"
        "outbox: {commit_interval_ms: 20, batch_max_records: 50, batch_linger_ms: 20}\n"
        "log: {stats_interval_s: 0}\n"
        f"fleet: {{revert_after_s: {REVERT_AFTER_S}{', ' + fleet if fleet else ''}}}\n"
        f"data_dir: {data_dir}\n"
    )
    return path


class Traffic:
    """Frames from ``devices`` through the simulated forwarder, in a thread: ``per_s`` datagrams of
    one frame per device a second, until ``stop()`` or ``max_s`` (bounded)."""

    def __init__(self, fwd: PacketForwarder, devices: list[Any], per_s: float, max_s: float = 60.0) -> None:
        self._fwd, self._devices, self._period_s, self._max_s = fwd, devices, 1 / per_s, max_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_s
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            n += 1
            try:
                self._fwd.send_frames([(d.uplink(em310(90, n % 4000, False), 85), {}) for d in self._devices])
            except OSError:
                pass  # the agent is restarting (ICMP port unreachable): a radio frame lost in the air
            self._stop.wait(self._period_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def send_burst(fwd: PacketForwarder, devices: list[Any], db_file: Path, count: int, timeout_s: float) -> None:
    """Frames until ``count`` records are committed (bounded in time)."""
    deadline = time.monotonic() + timeout_s
    n = 0
    while len(committed_ids(db_file)) < count:
        assert time.monotonic() < deadline, f"only {len(committed_ids(db_file))} of {count} records committed"
        for _ in range(20):
            n += 1
            fwd.send_frames([(d.uplink(em310(80, n % 4000, False), 85), {}) for d in devices])
            time.sleep(0.004)


def wait_state(sup: Supervisor, platform: Platform, version: str, timeout_s: float = 20) -> dict[str, Any]:
    sup.wait_until(lambda: platform.state_of(version), timeout_s, f"config-state of {version}")
    state = platform.state_of(version)
    assert state is not None
    return state


def wait_delivered(sup: Supervisor, platform: Platform, ids: set[str], timeout_s: float) -> None:
    sup.wait_until(
        lambda: ids <= platform.delivered(),
        timeout_s,
        f"{len(ids - platform.delivered())} undelivered records",
    )


# --- against the agent ---------------------------------------------------------------------------


def test_harmful_signed_overlays_are_refused_and_no_committed_record_is_lost(
    tmp_path: Path,
    tls_broker: TlsBroker,
    pki: Pki,  # noqa: F811  (the fixture imported above)
    platform_key: Ed25519PrivateKey,
) -> None:
    data_dir = gateway_dir(tmp_path, platform_key)
    udp_port = free_port(2)
    # The gateway's own settings: mutual TLS to the broker, a password, and a slow drain (200
    # records/s) so that 1,500 committed records are still waiting when the pushes arrive.
    local_mqtt = (
        f"host: 127.0.0.1, port: {tls_broker.tls_port}, tls: true, ca_file: {pki.ca}, "
        f"cert_file: {pki.client_cert}, key_file: {pki.client_key}, username: {GATEWAY_ID}, "
        "password: local-secret, drain_rate_records_s: 200"
    )
    config_file = write_config(tmp_path / "edgegw.yaml", data_dir, udp_port, local_mqtt)
    devices = [make_device(n) for n in range(1, 3)]
    for device in devices:
        register_abp(config_file, device)
    db_file = db.db_path(data_dir)
    install_commit_log(db_file)
    platform = Platform(tls_broker.port, platform_key)
    sup = Supervisor(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            sup.wait_until(lambda: platform.onlines >= 1, 20, "the agent online over mutual TLS")
            send_burst(fwd, devices, db_file, RECORDS_WAITING, timeout_s=20)
            waiting = len(set(committed_ids(db_file)) - platform.delivered())
            assert waiting >= 500, f"the premise is broken: only {waiting} committed records wait"

            cases: list[tuple[str, dict[str, Any], str, list[str]]] = [
                ("max-bytes-1", {"outbox": {"max_bytes": 1}}, "would_evict", ["outbox.max_bytes"]),
                ("tls-off", {"mqtt": {"tls": False}}, "local_only", ["mqtt.tls"]),
                ("other-host", {"mqtt": {"host": "localhost"}}, "local_only", ["mqtt.host"]),
                ("other-ca", {"mqtt": {"ca_file": str(pki.other_ca)}}, "local_only", ["mqtt.ca_file"]),
                ("other-cert-key",
                 {"mqtt": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}},
                 "local_only", ["mqtt.cert_file", "mqtt.key_file"]),
                ("password", {"mqtt": {"password": "platform-chosen"}}, "local_only", ["mqtt.password"]),
                ("radio-any", {"radio": {"url": f"semtech-udp://0.0.0.0:{udp_port}"}}, "local_only",
                 ["radio.url"]),
                ("rules-keystore", {"rules": {"path": str(data_dir / KEY_FILENAME)}}, "local_only",
                 ["rules.path"]),
                # Harmless keys do not carry harmful ones through: the overlay is refused whole.
                ("mixed", {"log": {"level": "DEBUG"}, "mqtt": {"tls": False, "health_interval_s": 5}},
                 "local_only", ["mqtt.tls"]),
            ]  # fmt: skip
            for version, settings, code, keys in cases:
                platform.push(version, settings)
                state = wait_state(sup, platform, version)
                assert (state["status"], state["code"], state["in_effect"]) == ("rejected", code, None), state
                for key in keys:
                    assert key in state["reason"], state
            # Nothing restarted, nothing was written: the gateway runs its local file alone.
            assert sup.exit_codes == []
            assert not (data_dir / FLEET_DIR / GOOD_FILE).exists()
            assert not (data_dir / FLEET_DIR / TRIAL_FILE).exists()
            # Still connected with its own TLS settings: later readings arrive too.
            send_burst(fwd, devices, db_file, RECORDS_WAITING + 50, timeout_s=10)
            committed = set(committed_ids(db_file))
            wait_delivered(sup, platform, committed, timeout_s=30)
        counters = sup.stop()
    finally:
        platform.close()
        if sup.agent.proc.poll() is None:
            sup.agent.proc.kill()
            sup.agent.proc.wait(10)
    assert len(committed) >= RECORDS_WAITING + 50
    assert committed <= platform.delivered(), "committed records lost"
    lost = {k: v for k, v in counters["outbox"].items() if k.startswith(("evicted.", "expired."))}
    assert lost == {}
    fleet = counters["fleet"]["config"]
    assert (fleet["rejected_local_only"], fleet["rejected_would_evict"]) == (len(cases) - 1, 1)
    # Every connection it made went to its own TLS listener (the local host, port and TLS files).
    targets = {line.rsplit(" ", 1)[-1] for line in sup.log() if "MQTT connecting to" in line}
    assert targets == {f"127.0.0.1:{tls_broker.tls_port}"}, targets
    print(f"\nwaiting at the first push: {waiting} records; refused {len(cases)} of {len(cases)}; "
          f"committed {len(committed)}, delivered {len(committed & platform.delivered())}")  # fmt: skip


@pytest.fixture
def plain_setup(tmp_path: Path, mosquitto: Broker, platform_key: Ed25519PrivateKey) -> Iterator[Any]:
    """``make(fleet="")``: (config file, data dir, UDP port, platform) on the plain test broker."""
    data_dir = gateway_dir(tmp_path, platform_key)
    platform = Platform(mosquitto.port, platform_key)

    def make(fleet: str = "") -> tuple[Path, Path, int, Platform]:
        udp_port = free_port(2)
        mqtt_ = f"host: 127.0.0.1, port: {mosquitto.port}, tls: false"
        return (
            write_config(tmp_path / "edgegw.yaml", data_dir, udp_port, mqtt_, fleet),
            data_dir,
            udp_port,
            platform,
        )

    try:
        yield make
    finally:
        platform.close()


def test_a_key_the_local_file_lists_is_let_through_and_only_that_one(plain_setup: Any) -> None:
    config_file, data_dir, _udp_port, platform = plain_setup('remote_settable: "mqtt.host"')
    sup = Supervisor(config_file)
    try:
        platform.push("other-port", {"mqtt": {"host": "localhost", "port": free_port()}})
        state = wait_state(sup, platform, "other-port")
        assert (state["status"], state["code"]) == ("rejected", "local_only"), state
        assert "mqtt.port" in state["reason"] and "mqtt.host" not in state["reason"]
        platform.push("widen", {"fleet": {"remote_settable": "mqtt.*"}})
        state = wait_state(sup, platform, "widen")
        assert state["code"] == "local_only" and "fleet.remote_settable" in state["reason"]

        platform.push("host-by-name", {"mqtt": {"host": "localhost"}})
        state = wait_state(sup, platform, "host-by-name", timeout_s=30)
        assert (state["status"], state["in_effect"]) == ("applied", "host-by-name"), state
        assert sup.exit_codes == [EXIT_RESTART]  # one restart to apply it, confirmed after the trial
        good = json.loads((data_dir / FLEET_DIR / GOOD_FILE).read_text())
        assert good["config"]["settings"] == {"mqtt": {"host": "localhost"}}
        sup.wait_until(lambda: any("localhost" in line for line in sup.log()), 5, "the agent on localhost")
        sup.stop()
    finally:
        if sup.agent.proc.poll() is None:
            sup.agent.proc.kill()
            sup.agent.proc.wait(10)


def test_a_config_under_which_records_stop_flowing_is_reverted(plain_setup: Any) -> None:
    # A real way to stop the flow with the broker up: a batch that waits an hour to fill up to
    # 10,000 records (no key is out of range; the drain rate is not touched).
    config_file, data_dir, udp_port, platform = plain_setup()
    devices = [make_device(n) for n in range(1, 2)]
    for device in devices:
        register_abp(config_file, device)
    db_file = db.db_path(data_dir)
    install_commit_log(db_file)
    sup = Supervisor(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            traffic = Traffic(fwd, devices, per_s=30, max_s=60)
            try:
                sup.wait_until(lambda: len(platform.delivered()) >= 20, 20, "records flowing")
                platform.push(
                    "stall", {"outbox": {"batch_linger_ms": 3_600_000, "batch_max_records": 10_000}}
                )
                state = wait_state(sup, platform, "stall", timeout_s=40)
            finally:
                traffic.stop()
            assert (state["status"], state["code"]) == ("reverted", "not_flowing"), state
            assert state["in_effect"] is None
            assert "none was acknowledged" in state["reason"]
            assert sup.exit_codes == [EXIT_RESTART, EXIT_RESTART]  # apply the trial, then go back
            failed = json.loads((data_dir / FLEET_DIR / FAILED_FILE).read_text())
            assert (failed["version"], failed["code"]) == ("stall", "not_flowing")
            # The records committed under the stalled trial go out once it is reverted.
            committed = set(committed_ids(db_file))
            wait_delivered(sup, platform, committed, timeout_s=20)
        sup.stop()
    finally:
        if sup.agent.proc.poll() is None:
            sup.agent.proc.kill()
            sup.agent.proc.wait(10)
    delivered = len(committed & platform.delivered())
    print(f"\nstalled trial reverted; committed {len(committed)}, delivered {delivered}")


# --- the pure parts and the trial's verdict, in process ---------------------------------------------


def local_config(tmp_path: Path, extra: str = "") -> config.Config:
    path = tmp_path / "local.yaml"
    path.write_text(
        f"gateway: {{id: {GATEWAY_ID}}}\ndata_dir: {tmp_path}\n"
        "mqtt: {host: broker.local, tls: true, ca_file: /etc/edgegw/ca.pem}\n" + extra
    )
    return config.load(path, environ={})


def effective(local: config.Config, settings: dict[str, Any], rules: str | None = None) -> config.Config:
    return desired.effective(
        desired.local_raw(local), desired.DesiredConfig("v", settings, rules),
        rules_path=local.data_path / "fleet" / "rules.yaml", file="pushed v", local=local, environ={},
    )  # fmt: skip


def test_local_only_keys_globs_and_what_stays_allowed(tmp_path: Path) -> None:
    local = local_config(tmp_path)
    with pytest.raises(CommandRejected) as info:
        effective(local, {"mqtt": {"tls": False, "host": "evil.example"}, "profiles_dir": "/tmp"})
    assert info.value.reason == "local_only"
    assert "mqtt.host, mqtt.tls, profiles_dir" in str(info.value)
    # Allowed: repeating the local value, harmless keys, pushed rules text (rules.path points at it).
    cfg = effective(local, {"mqtt": {"tls": True, "health_interval_s": 5}}, rules="schema_version: 1\n")
    assert (cfg.mqtt.health_interval_s, cfg.rules.path) == (5, str(tmp_path / "fleet" / "rules.yaml"))
    # Listed keys and globs pass; never-remote keys stay refused even under a glob that covers them.
    listed = local_config(tmp_path, 'fleet: {remote_settable: "mqtt.* fleet.*"}\n')
    assert effective(listed, {"mqtt": {"host": "b2.local", "tls": False}}).mqtt.host == "b2.local"
    assert effective(listed, {"fleet": {"revert_after_s": 60}}).fleet.revert_after_s == 60
    for never in (
        {"fleet": {"remote_settable": ""}},
        {"data_dir": "/elsewhere"},
        {"gateway": {"id": "gw-x"}},
    ):
        with pytest.raises(CommandRejected, match="only the local configuration file sets"):
            effective(listed, never)
    # A pattern that matches no key is a typo: the local file is refused.
    with pytest.raises(ConfigError) as bad:
        local_config(tmp_path, 'fleet: {remote_settable: "mqtt.hots"}\n')
    assert bad.value.key_path == "fleet.remote_settable"


def test_eviction_risks() -> None:
    running = config.OutboxSection(max_bytes=256 << 20, max_age_s=7 * 86400.0)
    lower = config.OutboxSection(max_bytes=1, max_age_s=600.0)
    risks = desired.eviction_risks(running, lower, 600_000, 5_000.0)
    assert len(risks) == 2 and "outbox.max_bytes 1" in risks[0] and "outbox.max_age_s 600" in risks[1]
    # Enough room (held + headroom), or a bound raised: nothing to refuse.
    assert desired.eviction_risks(running, config.OutboxSection(max_bytes=64 << 20), 600_000, 5_000.0) == []
    assert not desired.bounds_lowered(running, config.OutboxSection(max_bytes=512 << 20, max_age_s=0.0))


@dataclass
class FakeGateway:
    """The narrow views the applier gets from the agent, driven by the test."""

    connected: bool = False
    delivery: Delivery = field(default_factory=lambda: Delivery(acked=0, waiting=0, lost=0))
    restarts: int = 0


async def verdict(tmp_path: Path, gw: FakeGateway, drive: Any, *, touch_mqtt: bool) -> tuple[str, str] | str:
    """Run a trial's judgement with a real store; ``drive(gw)`` changes the fakes as time passes."""
    local_file = tmp_path / "edgegw.yaml"
    local_file.write_text(
        f"gateway: {{id: {GATEWAY_ID}}}\ndata_dir: {tmp_path}\nmqtt: {{port: 1883}}\n"
        'fleet: {revert_after_s: 0.5, remote_settable: "mqtt.port"}\n'
    )
    store = ConfigStore(tmp_path)
    settings = {"mqtt": {"port": 1884}} if touch_mqtt else {"log": {"level": "DEBUG"}}
    store.write_trial(desired.DesiredConfig("trial", settings, None), "t0")
    running = desired.effective(
        desired.local_raw(config.load(local_file, environ={})), store.trial(), rules_path=store.rules_path,
        file="t", local=config.load(local_file, environ={}), environ={},
    )  # fmt: skip

    async def publish(_data: bytes) -> None:
        return None

    def restart() -> None:
        gw.restarts += 1

    trust = Trust(tmp_path, gateway_id=GATEWAY_ID)
    applier = ConfigApplier(
        running, trust, publish_state=publish, connected=lambda: gw.connected, request_restart=restart,
        delivery=lambda: gw.delivery, environ={},
    )  # fmt: skip
    task = asyncio.create_task(applier.run())
    driver = asyncio.create_task(drive(gw))
    try:
        for _ in range(30):  # 1.5 s at most (the patience is 0.5 s)
            await asyncio.sleep(0.05)
            if gw.restarts or store.good() is not None:
                break
    finally:
        task.cancel()
        driver.cancel()
    failed = store.failed()
    if failed is not None:
        return failed.code, failed.reason
    return "confirmed" if store.good() is not None else "pending"


async def test_trial_verdicts(tmp_path: Path) -> None:
    async def connect_then_ack(gw: FakeGateway) -> None:
        gw.delivery = Delivery(0, 10, 0)
        await asyncio.sleep(0.1)
        gw.connected = True
        await asyncio.sleep(0.1)
        gw.delivery = Delivery(10, 0, 0)

    async def connect_no_ack(gw: FakeGateway) -> None:
        gw.connected, gw.delivery = True, Delivery(0, 25, 0)

    async def evict(gw: FakeGateway) -> None:
        gw.connected = True
        await asyncio.sleep(0.1)
        gw.delivery = Delivery(0, 5, 300)

    async def idle(gw: FakeGateway) -> None:
        gw.connected = True

    async def never_connects(gw: FakeGateway) -> None:
        gw.delivery = Delivery(0, 25, 0)

    cases = [
        ("flowing", connect_then_ack, True, "confirmed"),
        ("stalled", connect_no_ack, False, "not_flowing"),
        ("evicting", evict, False, "evicted"),
        ("idle", idle, False, "confirmed"),  # nothing waited during the patience
        ("no broker", never_connects, True, "no_connection"),
        ("outage, not its doing", never_connects, False, "pending"),  # keeps waiting for the broker
    ]
    for n, (name, drive, touch, expected) in enumerate(cases):
        case_dir = tmp_path / f"case{n}"
        case_dir.mkdir()
        result = await verdict(case_dir, FakeGateway(), drive, touch_mqtt=touch)
        got = result if isinstance(result, str) else result[0]
        assert got == expected, (name, result)
