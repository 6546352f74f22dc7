"""Pushed configuration end to end: the agent as a process, a real mosquitto, the retained ``config``.

Checks the issue-8 contract (docs/fleet.md, "Configuration push"): a pushed configuration applies,
survives a restart, an identical re-push or a reconnect is a no-op (same process, files untouched),
a configuration that cuts the uplink is reverted by the agent on its own, and invalid ones are
refused on ``config-state`` with the key path. Sources: ARCHITECTURE.md §3.2 (``config`` inbound,
retained, signed; ``config-state`` outbound); MQTT 3.1.1 §3.3.1.3 (a retained message is sent
again to every new subscription, so it arrives after every reconnect); sysexits.h (EX_TEMPFAIL = 75).
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import paho.mqtt.publish
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from gateway import config
from gateway.cli.main import main
from gateway.errors import CommandRejected
from gateway.fleet import desired, sign
from gateway.fleet.config_store import FAILED_FILE, FLEET_DIR, GOOD_FILE, TRIAL_FILE, ConfigStore
from gateway.fleet.remote_config import EXIT_RESTART, startup_config
from gateway.fleet.trust import Trust
from gateway.uplink.topics import Topics
from tests.conftest import Broker, free_port
from tests.e2e.harness import AgentProcess, cli
from tests.fleet.conftest import GATEWAY_ID
from tests.fleet.supervisor import Supervisor

TOPICS = Topics("edgegw", GATEWAY_ID)
REVERT_AFTER_S = 3


@pytest.fixture
def config_file(tmp_path: Path, data_dir: Path, mosquitto: Broker, free_udp_port: int) -> Path:
    path = tmp_path / "edgegw.yaml"
    path.write_text(
        f"gateway: {{id: {GATEWAY_ID}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{free_udp_port}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, tls: false, reconnect_min_s: 0.2,"
        " reconnect_max_s: 0.5}\n"
        "log: {stats_interval_s: 0}\n"
        # mqtt.port is local-only unless listed (docs/fleet.md): the revert test pushes a dead port.
        f'fleet: {{revert_after_s: {REVERT_AFTER_S}, remote_settable: "mqtt.port"}}\n'
        f"data_dir: {data_dir}\n"
    )
    return path


@pytest.fixture
def supervisor(config_file: Path) -> Iterator[Supervisor]:
    sup = Supervisor(config_file)
    yield sup
    if sup.agent.proc.poll() is None:
        sup.agent.proc.kill()
        sup.agent.proc.wait(10)


Push = Callable[..., None]


@pytest.fixture
def push(mosquitto: Broker, platform_key: Ed25519PrivateKey) -> Push:
    """``push(version, settings=None, rules=None, *, key=platform key)``: a signed, retained config."""

    def send(
        version: str,
        settings: dict[str, Any] | None = None,
        rules: str | None = None,
        *,
        key: Ed25519PrivateKey | None = None,
    ) -> None:
        payload = {"config": {"version": version, "settings": settings or {}, "rules": rules}}
        env = sign.sign_envelope(key or platform_key, payload, target=GATEWAY_ID, ttl_s=3600)
        paho.mqtt.publish.single(
            TOPICS.config, json.dumps(env), qos=1, retain=True, hostname=mosquitto.host, port=mosquitto.port
        )

    return send


def states(sub: Any, version: str) -> list[dict[str, Any]]:
    return [doc for doc in sub.json_on(TOPICS.config_state) if doc["version"] == version]


def onlines(sub: Any) -> int:
    return sum(1 for doc in sub.json_on(TOPICS.state) if doc["state"] == "online")


def mtimes(data_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (data_dir / FLEET_DIR).iterdir()}


def test_push_applies_restarts_once_and_survives_a_restart(
    supervisor: Supervisor, push: Push, subscribe: Any, data_dir: Path
) -> None:
    sub = subscribe(f"{TOPICS.root}/#")
    supervisor.wait_until(lambda: onlines(sub) >= 1, 20, "the agent online")
    health_before = len(sub.json_on(TOPICS.health))

    push("2026-11-25.1", {"mqtt": {"health_interval_s": 0.5}, "outbox": {"batch_max_records": 50}})
    supervisor.wait_until(lambda: bool(states(sub, "2026-11-25.1")), 30, "config-state applied")
    state = states(sub, "2026-11-25.1")[-1]
    assert (state["status"], state["in_effect"], state["reason"]) == ("applied", "2026-11-25.1", None)
    assert supervisor.exit_codes == [EXIT_RESTART]  # one graceful restart to apply it
    # In effect: health every 0.5 s instead of every 60 s.
    sub.wait_for(lambda _m: len(sub.json_on(TOPICS.health)) >= health_before + 4, 15)
    good = json.loads((data_dir / FLEET_DIR / GOOD_FILE).read_text())
    assert good["config"]["version"] == "2026-11-25.1"
    assert not (data_dir / FLEET_DIR / TRIAL_FILE).exists()

    # Survives a restart (systemctl restart): the same settings, no second restart, no new report.
    supervisor.stop()
    reports = len(sub.json_on(TOPICS.config_state))
    supervisor.agent = AgentProcess(supervisor.config_file)
    health_now = len(sub.json_on(TOPICS.health))
    sub.wait_for(lambda _m: len(sub.json_on(TOPICS.health)) >= health_now + 4, 15)
    supervisor.wait_until(
        lambda: any("received again: unchanged" in line for line in supervisor.agent.lines), 10, "no-op"
    )
    counters = supervisor.stop()
    assert counters["fleet"]["config"]["unchanged"] == 1 and "restarts" not in counters["fleet"]["config"]
    assert len(sub.json_on(TOPICS.config_state)) == reports
    # config-state is retained: a platform subscribing later sees the applied version.
    late = subscribe(TOPICS.config_state)
    late.wait_for(lambda m: len(m) >= 1, 5)
    assert late.json_on(TOPICS.config_state)[-1]["version"] == "2026-11-25.1"


def test_identical_push_and_reconnect_change_nothing(
    supervisor: Supervisor, push: Push, subscribe: Any, data_dir: Path, mosquitto: Broker
) -> None:
    sub = subscribe(f"{TOPICS.root}/#")
    supervisor.wait_until(lambda: onlines(sub) >= 1, 20, "the agent online")
    # Settings unchanged (only the version label): applied without a restart.
    push("v-label")
    supervisor.wait_until(lambda: bool(states(sub, "v-label")), 15, "config-state applied")
    assert states(sub, "v-label")[-1]["status"] == "applied"
    before = mtimes(data_dir)
    pid = supervisor.agent.proc.pid

    push("v-label")  # a new envelope (new seq, new signature), the same configuration
    supervisor.wait_until(
        lambda: sum("received again: unchanged" in line for line in supervisor.agent.lines) >= 1, 10, "no-op"
    )
    # A reconnect: another client takes the agent's client id over (MQTT 3.1.1 §3.1.4), the agent
    # connects again and the broker sends the retained config again on its new subscription.
    kicker = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgegw-{GATEWAY_ID}")
    connected = threading.Event()
    kicker.on_connect = lambda *_args: connected.set()
    kicker.connect(mosquitto.host, mosquitto.port)
    kicker.loop_start()
    assert connected.wait(5)
    kicker.disconnect()
    kicker.loop_stop()
    supervisor.wait_until(lambda: onlines(sub) >= 2, 15, "the agent reconnected")
    supervisor.wait_until(
        lambda: sum("received again: unchanged" in line for line in supervisor.agent.lines) >= 2, 10, "no-op"
    )
    assert supervisor.agent.proc.pid == pid and supervisor.exit_codes == []
    assert mtimes(data_dir) == before
    assert len(states(sub, "v-label")) == 1
    counters = supervisor.stop()
    assert counters["fleet"]["config"]["unchanged"] == 2
    assert counters["uplink"]["connects"] >= 2


def test_a_config_that_cuts_the_uplink_is_reverted(
    supervisor: Supervisor, push: Push, subscribe: Any, data_dir: Path
) -> None:
    sub = subscribe(f"{TOPICS.root}/#")
    supervisor.wait_until(lambda: onlines(sub) >= 1, 20, "the agent online")
    dead_port = free_port()
    push("bad-port", {"mqtt": {"port": dead_port}})
    # Restart with the trial → no broker within 3 s → back to the good one → restart → reported.
    supervisor.wait_until(lambda: bool(states(sub, "bad-port")), 40, "config-state reverted")
    state = states(sub, "bad-port")[-1]
    assert state["status"] == "reverted" and state["code"] == "no_connection"
    assert state["reason"] == f"no broker connection within {REVERT_AFTER_S} s"
    assert state["in_effect"] is None  # the local file alone, as before the push
    assert supervisor.exit_codes == [EXIT_RESTART, EXIT_RESTART] and len(set(supervisor.pids)) == 3
    failed = json.loads((data_dir / FLEET_DIR / FAILED_FILE).read_text())
    assert failed["version"] == "bad-port"
    assert not (data_dir / FLEET_DIR / TRIAL_FILE).exists()
    # The bad config is still retained: it arrives again and is not applied again (no restart loop).
    supervisor.wait_until(
        lambda: any("was reverted before: not applied again" in line for line in supervisor.agent.lines),
        10,
        "the retained bad config ignored",
    )
    supervisor.wait_until(lambda: json.loads((data_dir / FLEET_DIR / FAILED_FILE).read_text())["reported"],
                          5, "the report recorded")  # fmt: skip
    counters = supervisor.stop()
    assert supervisor.exit_codes == [EXIT_RESTART, EXIT_RESTART]
    assert counters["uplink"]["connects"] == 1 and counters["fleet"]["config"]["unchanged"] == 1


def test_refused_configs_change_nothing(
    supervisor: Supervisor, push: Push, subscribe: Any, data_dir: Path
) -> None:
    sub = subscribe(f"{TOPICS.root}/#")
    supervisor.wait_until(lambda: onlines(sub) >= 1, 20, "the agent online")
    cases: list[tuple[str, dict[str, Any], str | None, Ed25519PrivateKey | None, str, str]] = [
        ("forged", {"outbox": {"batch_max_records": 10}}, None, Ed25519PrivateKey.generate(),
         "bad_signature", "signature"),
        ("zero-batch", {"outbox": {"batch_max_records": 0}}, None, None, "invalid",
         "outbox.batch_max_records: must be at least 1"),
        ("other-id", {"gateway": {"id": "gw-someone-else"}}, None, None, "local_only", "gateway.id"),
        ("typo", {"mqtt": {"prot": 1884}}, None, None, "invalid", "mqtt.prot: unknown key"),
        ("bad-rules", {}, "rules: [unclosed", None, "invalid", "config.rules: not valid YAML"),
    ]  # fmt: skip
    for version, settings, rules, key, code, reason in cases:
        push(version, settings, rules, key=key)
        supervisor.wait_until(functools.partial(states, sub, version), 10, f"config-state of {version}")
        state = states(sub, version)[-1]
        assert (state["status"], state["code"]) == ("rejected", code), state
        assert reason in state["reason"], state
        assert state["in_effect"] is None
    assert supervisor.exit_codes == []
    assert (
        not (data_dir / FLEET_DIR / GOOD_FILE).exists() and not (data_dir / FLEET_DIR / TRIAL_FILE).exists()
    )
    counters = supervisor.stop()
    assert counters["fleet"]["config"]["rejected_invalid"] == 3
    assert counters["fleet"]["config"]["rejected_local_only"] == 1
    assert counters["fleet"]["config"]["rejected_bad_signature"] == 1


def rules_text(rule_id: str) -> str:
    """A one-rule file in the format of docs/rules.md (as in tests/e2e/test_rules_agent.py)."""
    return (
        "schema_version: 1\nrules:\n"
        f"  - id: {rule_id}\n"
        "    devices: {profiles: [milesight/em310-udl]}\n"
        "    when: {flag: {field: position, equals: tilt}}\n"
    )


def rule_ids(config_file: Path) -> list[str]:
    result = cli(config_file, "rules", "--json")
    assert result.returncode == 0, result.stderr
    return [rule["id"] for rule in json.loads(result.stdout)["rules"]]


def test_pushed_rules_first_restart_then_reload_in_place(
    supervisor: Supervisor, push: Push, subscribe: Any, config_file: Path
) -> None:
    sub = subscribe(f"{TOPICS.root}/#")
    supervisor.wait_until(lambda: onlines(sub) >= 1, 20, "the agent online")
    # The first rules: the agent ran without a rule engine, so it restarts; the uplink settings did
    # not change, so the trial is confirmed as soon as the agent runs again.
    push("rules-1", rules=rules_text("tilt-a"))
    supervisor.wait_until(lambda: bool(states(sub, "rules-1")), 30, "config-state of rules-1")
    assert states(sub, "rules-1")[-1]["status"] == "applied" and supervisor.exit_codes == [EXIT_RESTART]
    assert rule_ids(config_file) == ["tilt-a"]
    # Rules only: swapped in the running engine, no restart.
    pid = supervisor.agent.proc.pid
    push("rules-2", rules=rules_text("tilt-b"))
    supervisor.wait_until(lambda: bool(states(sub, "rules-2")), 10, "config-state of rules-2")
    assert states(sub, "rules-2")[-1]["status"] == "applied"
    assert rule_ids(config_file) == ["tilt-b"]
    assert supervisor.agent.proc.pid == pid and supervisor.exit_codes == [EXIT_RESTART]
    counters = supervisor.stop()
    assert counters["fleet"]["config"]["applied_rules"] == 1


# --- the pure parts and the start-up choice, without processes -------------------------------


def test_payload_shape_hash_and_overlay() -> None:
    wanted = desired.from_payload({"config": {"version": "1", "settings": {"a": {"b": 1, "c": 2}}}})
    reordered = desired.from_payload({"config": {"settings": {"a": {"c": 2, "b": 1}}, "version": "1"}})
    assert wanted.hash == reordered.hash and wanted.rules is None
    assert desired.DesiredConfig("2", wanted.settings, None).hash != wanted.hash
    for bad in ({}, {"config": {"version": ""}}, {"config": {"version": "1", "settings": []}},
                {"config": {"version": "1", "rules": 3}}, {"config": {"version": "1", "extra": 1}},
                {"config": {"version": "1"}, "cmd": "x"}):  # fmt: skip
        with pytest.raises(CommandRejected) as info:
            desired.from_payload(bad)
        assert info.value.reason == "malformed"
    assert desired.merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3}, "d": {"e": 1}}) == {
        "a": {"b": 3, "c": 2},
        "d": {"e": 1},
    }


def test_overlay_may_not_move_the_data_dir(tmp_path: Path) -> None:
    local = config.loads(f"gateway: {{id: gw-1}}\ndata_dir: {tmp_path}\n", environ={})
    raw = desired.local_raw(local)
    wanted = desired.DesiredConfig("v", {"data_dir": "/elsewhere"}, None)
    with pytest.raises(CommandRejected) as info:
        desired.effective(raw, wanted, rules_path=tmp_path / "r.yaml", file="pushed", local=local, environ={})
    assert info.value.reason == "local_only" and "data_dir" in str(info.value)
    same = desired.DesiredConfig("v", {"data_dir": str(tmp_path), "gateway": {"name": "north"}}, "x: 1")
    cfg = desired.effective(raw, same, rules_path=tmp_path / "r.yaml", file="pushed", local=local, environ={})
    assert (cfg.gateway.name, cfg.rules.path, cfg.source) == ("north", str(tmp_path / "r.yaml"), local.source)


def test_startup_gives_a_trial_up_after_three_starts(tmp_path: Path) -> None:
    local_file = tmp_path / "edgegw.yaml"
    local_file.write_text(
        f"gateway: {{id: gw-1}}\ndata_dir: {tmp_path}\nmqtt: {{port: 1883}}\n"
        'fleet: {remote_settable: "mqtt.port"}\n'
    )
    store = ConfigStore(tmp_path)
    good = desired.DesiredConfig("good", {"mqtt": {"port": 1884}}, None)
    trial = desired.DesiredConfig("trial", {"mqtt": {"port": 1885}}, None)
    store.write_good(good, "t0")
    store.write_trial(trial, "t0")
    ports = [startup_config(local_file, environ={}).mqtt.port for _ in range(4)]
    assert ports == [1885, 1885, 1885, 1884]  # the 4th start is with the last known good
    failed = store.failed()
    assert failed is not None and (failed.version, failed.reported) == ("trial", False)
    assert "started 3 times" in failed.reason and store.trial() is None
    # A trial that the local file no longer accepts is given up at once.
    store.write_trial(desired.DesiredConfig("t2", {"mqtt": {"port": 0}}, None), "t1")
    assert startup_config(local_file, environ={}).mqtt.port == 1884
    failed = store.failed()
    assert failed is not None and failed.version == "t2" and "mqtt.port" in failed.reason


def test_fleet_sign_signs_a_configuration(
    tmp_path: Path, data_dir: Path, platform_key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "platform.key"
    key_file.write_bytes(
        platform_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    doc = tmp_path / "desired.json"
    doc.write_text(json.dumps({"config": {"version": "v9", "settings": {"log": {"level": "DEBUG"}}}}))
    argv = ["fleet", "sign", str(doc), "--key", str(key_file), "--target", GATEWAY_ID, "--ttl-s", "86400"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    env = Trust(data_dir, gateway_id=GATEWAY_ID).verify(out.encode(), time.time())
    assert desired.from_payload(env.payload) == desired.DesiredConfig("v9", {"log": {"level": "DEBUG"}}, None)
    doc.write_text(json.dumps({"config": {"version": ""}}))
    assert main(argv) == 2
