"""TLS with verification, mutual TLS and username/password against a real mosquitto; MQTT 5;
reconnect backoff with jitter; the watchdog that ends a stalled connection; shared subscriptions.

Certificates are made in the test with ``cryptography`` (a CA, a server certificate for
127.0.0.1, a client certificate). mosquitto options from mosquitto.conf(5): ``cafile``,
``certfile``, ``keyfile``, ``require_certificate``, ``password_file``. Shared subscriptions:
MQTT 5.0 §4.8.2 (``$share/{ShareName}/{filter}``); mosquitto supports them since 1.6.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway import db
from gateway.config import MqttSection
from gateway.db.commit import Database, GroupCommitter
from gateway.errors import UplinkError
from gateway.messages import Priority, Record
from gateway.outbox import Outbox
from gateway.uplink.forwarder import Forwarder, ForwarderSettings
from gateway.uplink.mqtt import MqttUplink, backoff_s
from gateway.uplink.topics import Topics
from simulator.broker import MOSQUITTO
from tests.conftest import Broker, free_port

# --- certificates --------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: Any,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _readable_dir() -> Path:
    """A directory mosquitto can read when it was started as root and dropped to its own user
    (pytest's tmp dirs are private to the test user)."""
    d = Path(tempfile.mkdtemp(prefix="edgegw-tls-"))
    d.chmod(0o755)
    return d


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    d = _readable_dir()
    ca_key, other_key = _key(), _key()
    ca = _cert("edgegw test CA", ca_key, None, ca_key, ca=True)
    other = _cert("some other CA", other_key, None, other_key, ca=True)
    server_key, client_key = _key(), _key()
    server = _cert("127.0.0.1", server_key, ca, ca_key, ca=False)
    client = _cert("gw-tls", client_key, ca, ca_key, ca=False)

    def pem(cert: x509.Certificate, name: str) -> Path:
        (d / name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return d / name

    made = Pki(
        ca=pem(ca, "ca.pem"),
        server_cert=pem(server, "server.pem"),
        server_key=_write_key(server_key, d / "server.key"),
        client_cert=pem(client, "client.pem"),
        client_key=_write_key(client_key, d / "client.key"),
        other_ca=pem(other, "other-ca.pem"),
    )
    for f in d.iterdir():
        f.chmod(0o644)  # test keys only: readable by mosquitto's unprivileged user
    yield made
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tls_broker(pki: Pki) -> Iterator[tuple[int, int]]:
    """mosquitto with an mTLS listener and a password listener; yields (mtls_port, password_port)."""
    tmp_path = _readable_dir()
    mtls_port, pw_port = free_port(), free_port()
    pwfile = tmp_path / "passwd"
    pwfile.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "gw-user", "s3cret"], check=True, timeout=10)
    pwfile.chmod(0o644)
    conf = tmp_path / "tls.conf"
    conf.write_text(
        "per_listener_settings true\n"
        f"listener {mtls_port} 127.0.0.1\n"
        f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        "require_certificate true\nallow_anonymous true\n"
        f"listener {pw_port} 127.0.0.1\n"
        f"password_file {pwfile}\nallow_anonymous false\n"
        "log_dest stderr\n"
    )
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        import socket

        for port in (mtls_port, pw_port):
            for _ in range(250):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.02)
        yield mtls_port, pw_port
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
async def uplinks() -> AsyncIterator[list[MqttUplink]]:
    made: list[MqttUplink] = []
    yield made
    for uplink in made:
        await uplink.stop()


async def test_mutual_tls_connects_and_publishes(
    tls_broker: tuple[int, int], pki: Pki, uplinks: list[Any]
) -> None:
    port, _ = tls_broker
    settings = MqttSection(
        host="127.0.0.1", port=port, tls=True, ca_file=str(pki.ca),
        cert_file=str(pki.client_cert), key_file=str(pki.client_key),
    )  # fmt: skip
    uplink = MqttUplink(settings, client_id="gw-tls", will=None)
    uplinks.append(uplink)
    await uplink.start()
    assert await uplink.wait_connected(10.0)
    await asyncio.wait_for(uplink.publish("t/tls", b"over tls"), 5.0)
    assert uplink.counters["puback"] == 1


async def test_a_broker_signed_by_another_ca_is_refused(
    tls_broker: tuple[int, int], pki: Pki, uplinks: list[Any]
) -> None:
    port, _ = tls_broker
    settings = MqttSection(
        host="127.0.0.1", port=port, tls=True, ca_file=str(pki.other_ca),
        cert_file=str(pki.client_cert), key_file=str(pki.client_key),
        reconnect_min_s=0.2, reconnect_max_s=0.5,
    )  # fmt: skip
    uplink = MqttUplink(settings, client_id="gw-wrong-ca", will=None)
    uplinks.append(uplink)
    await uplink.start()
    assert not await uplink.wait_connected(1.5)
    assert uplink.counters["connect_failures"] >= 2, "verification failure must be retried, not fatal"


async def test_without_a_client_certificate_the_mtls_listener_refuses(
    tls_broker: tuple[int, int], pki: Pki, uplinks: list[Any]
) -> None:
    port, _ = tls_broker
    settings = MqttSection(host="127.0.0.1", port=port, tls=True, ca_file=str(pki.ca), reconnect_min_s=0.2)
    uplink = MqttUplink(settings, client_id="gw-no-cert", will=None)
    uplinks.append(uplink)
    await uplink.start()
    assert not await uplink.wait_connected(1.5)
    # Said in words, with the TLS error paho hides behind "Unspecified error" (issue 19).
    assert uplink.last_error is not None
    assert "client certificate" in uplink.last_error and "Unspecified" not in uplink.last_error
    assert uplink.status()["disconnected_since_s"] is not None


async def test_a_client_certificate_from_another_ca_is_said_to_be_refused(
    tls_broker: tuple[int, int], pki: Pki, uplinks: list[Any], tmp_path: Path
) -> None:
    port, _ = tls_broker
    key = _key()
    stranger = _cert("gw-stranger", key, None, key, ca=False)  # self-signed: no CA the broker trusts
    cert_file = tmp_path / "stranger.pem"
    cert_file.write_bytes(stranger.public_bytes(serialization.Encoding.PEM))
    settings = MqttSection(
        host="127.0.0.1", port=port, tls=True, ca_file=str(pki.ca), cert_file=str(cert_file),
        key_file=str(_write_key(key, tmp_path / "stranger.key")), reconnect_min_s=0.2,
    )  # fmt: skip
    uplink = MqttUplink(settings, client_id="gw-stranger", will=None)
    uplinks.append(uplink)
    await uplink.start()
    assert not await uplink.wait_connected(1.5)
    assert uplink.last_error is not None
    assert "refused the TLS client certificate" in uplink.last_error, uplink.last_error


@pytest.mark.parametrize(("password", "ok"), [("s3cret", True), ("wrong", False)])
async def test_username_and_password(
    tls_broker: tuple[int, int], uplinks: list[Any], password: str, ok: bool
) -> None:
    _, port = tls_broker
    settings = MqttSection(
        host="127.0.0.1", port=port, tls=False, username="gw-user", password=password, protocol="mqttv5",
        reconnect_min_s=0.2, reconnect_max_s=0.5,
    )  # fmt: skip
    uplink = MqttUplink(settings, client_id="gw-pw", will=None)
    uplinks.append(uplink)
    await uplink.start()
    assert await uplink.wait_connected(2.0) is ok
    if not ok:
        assert uplink.counters["connect_failures"] >= 1
        with pytest.raises(UplinkError):
            await uplink.publish("t/x", b"x")


# --- backoff and watchdog ------------------------------------------------------------------------


def test_backoff_doubles_is_capped_and_jittered() -> None:
    assert backoff_s(0, 1.0, 60.0, lambda: 0.0) == 0.5
    assert backoff_s(0, 1.0, 60.0, lambda: 1.0) == 1.0
    assert backoff_s(3, 1.0, 60.0, lambda: 1.0) == 8.0
    assert backoff_s(10, 1.0, 60.0, lambda: 1.0) == 60.0
    assert backoff_s(10, 1.0, 60.0, lambda: 0.0) == 30.0
    assert backoff_s(1000, 1.0, 60.0, lambda: 0.5) == 45.0


async def test_watchdog_closes_a_connection_whose_puback_never_comes(
    mosquitto: Broker, uplinks: list[Any]
) -> None:
    settings = MqttSection(
        host=mosquitto.host, port=mosquitto.port, tls=False, publish_timeout_s=1.0,
        reconnect_min_s=0.1, reconnect_max_s=0.2, keepalive_s=60,
    )  # fmt: skip
    uplink = MqttUplink(settings, client_id="gw-stall", will=None)
    uplinks.append(uplink)
    await uplink.start()
    assert await uplink.wait_connected(5.0)
    assert mosquitto.proc is not None
    mosquitto.proc.send_signal(signal.SIGSTOP)  # TCP stays up, nothing answers: a half-dead broker
    try:
        with pytest.raises(UplinkError):
            await asyncio.wait_for(uplink.publish("t/x", b"stuck"), 5.0)
        assert uplink.counters["watchdog_stalled"] == 1
    finally:
        mosquitto.proc.send_signal(signal.SIGCONT)
    assert await uplink.wait_connected(10.0)
    await asyncio.wait_for(uplink.publish("t/x", b"again"), 5.0)


# --- MQTT 5: compression and shared subscriptions ---------------------------------------------


def rec(gw: str, i: int) -> Record:
    body = {"id": f"{gw}-{i}", "kind": "reading", "data": {"i": i}}
    return Record(record_id=body["id"], kind="reading", priority=Priority.READING, body=body)  # type: ignore[arg-type]


class Consumer:
    """A platform consumer: MQTT 5, in shared group 'platform'."""

    def __init__(self, broker: Broker, name: str, topic_filter: str) -> None:
        self.ids: list[str] = []
        self.content_types: set[str | None] = set()
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        ready = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_a: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(5)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        payload = msg.payload
        if msg.topic.endswith("/zlib"):
            payload = zlib.decompress(payload)
        doc = json.loads(payload)
        with self._lock:
            self.ids.extend(r["id"] for r in doc["records"])
            self.content_types.add(getattr(msg.properties, "ContentType", None))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_shared_subscription_splits_several_gateways_between_two_consumers(
    tmp_path: Path, mosquitto: Broker
) -> None:
    consumers = [Consumer(mosquitto, f"consumer-{n}", "$share/platform/edgegw/+/up/#") for n in range(2)]
    gateways = [f"gw-share-{n}" for n in range(4)]
    agents: list[tuple[Database, MqttUplink, Forwarder, list[asyncio.Task[None]]]] = []
    per_gateway = 600
    try:
        for n, gw in enumerate(gateways):
            database = Database(db.db_path(tmp_path / gw))
            outbox = Outbox(database)
            committer = GroupCommitter(database, [outbox], interval_s=0.02, max_pending=500)
            outbox.committer_notify = committer.notify
            settings = MqttSection(host=mosquitto.host, port=mosquitto.port, tls=False, protocol="mqttv5")
            uplink = MqttUplink(settings, client_id=gw, will=None)
            forwarder = Forwarder(
                outbox, uplink, Topics("edgegw", gw), gw, ForwarderSettings(
                    batch_max_records=20, batch_linger_ms=10, max_inflight_batches=2,
                    compression="zlib" if n % 2 else "none",
                ),
            )  # fmt: skip
            await uplink.start()
            tasks = [asyncio.create_task(committer.run()), asyncio.create_task(forwarder.run())]
            agents.append((database, uplink, forwarder, tasks))
            for i in range(per_gateway):
                outbox.put(rec(gw, i))
        expected = {f"{gw}-{i}" for gw in gateways for i in range(per_gateway)}
        for _ in range(300):
            if expected <= {i for c in consumers for i in c.ids}:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
    finally:
        for database, uplink, forwarder, tasks in agents:
            await forwarder.drain(2.0)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=5.0)
            await uplink.stop()
            database.close()
        for consumer in consumers:
            consumer.close()

    got = Counter(i for c in consumers for i in c.ids)
    assert set(got) == expected, f"{len(expected - set(got))} records lost"
    assert max(got.values()) == 1, "no failure happened, so nothing may arrive twice"
    shares = [len(c.ids) for c in consumers]
    assert min(shares) > 0.2 * len(expected), f"the load was not shared: {shares}"
    assert {"application/json", "application/zlib"} <= set().union(*(c.content_types for c in consumers))
