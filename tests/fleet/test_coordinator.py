"""The coordinator's decisions from written scenarios (gateway/fleet/coordinator.py, issue 21)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import CommandRejected
from gateway.fleet.coordinator import (
    ASSIGNMENT_TTL_S,
    Assignment,
    Coordinator,
    Policy,
    assignment_target,
    verify_assignment,
)
from gateway.fleet.sign import sign_envelope
from tests.conftest import Broker

DEV = "70b3d57ed0000001"
T0 = 1_800_000_000.0


def iso(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def page(at_s: float, *devices: dict[str, Any]) -> dict[str, Any]:
    return {"v": 1, "gateway_id": "x", "at": iso(at_s), "page": 1, "pages": 1, "devices": list(devices)}


def seen(t_s: float, rssi: float, snr: float = 5.0, dev: str = DEV) -> dict[str, Any]:
    return {"dev_eui": dev, "last_seen": iso(t_s), "rssi_dbm": rssi, "snr_db": snr}


def fleet(policy: Policy | None = None, *online: str) -> Coordinator:
    c = Coordinator(policy or Policy(stale_s=600, hold_s=120))
    for gw in online or ("gw-a", "gw-b", "gw-c"):
        c.on_state(gw, {"v": 1, "state": "online"})
    return c


def hear(
    c: Coordinator, gw: str, t_s: float, rssi: float, snr: float = 5.0, *, clock_off_s: float = 0.0
) -> None:
    """``gw`` heard DEV at ``t_s``; its page is made and received at ``t_s`` (its clock off by
    ``clock_off_s``)."""
    c.on_inventory(gw, page(t_s + clock_off_s, seen(t_s + clock_off_s, rssi, snr)), received_at_s=t_s)


def test_first_assignment_goes_to_the_best_hearer_epoch_1_above_every_reserve() -> None:
    c = fleet()
    hear(c, "gw-a", T0, -90)
    hear(c, "gw-b", T0, -70)
    hear(c, "gw-c", T0, -70, snr=2)
    c.on_reserve("gw-a", DEV, 511)
    c.on_reserve("gw-c", DEV, 255)
    decided = c.decide(T0 + 1)
    assert decided == {DEV: Assignment("gw-b", 1, 511, T0 + 1)}


def test_the_new_homes_own_reserve_is_not_its_floor() -> None:
    """Its own counter is durable in its database: only the others' reserves bound it from below."""
    c = fleet()
    hear(c, "gw-a", T0, -60)
    hear(c, "gw-b", T0, -90)
    c.on_reserve("gw-a", DEV, 4095)
    c.on_reserve("gw-b", DEV, 255)
    assert c.decide(T0 + 1)[DEV].fcnt_floor == 255


def test_home_offline_moves_to_the_best_online_witness_with_the_old_reserve_as_floor() -> None:
    c = fleet()
    c.on_assignment(DEV, Assignment("gw-a", 4, 100, T0 - 3600))
    hear(c, "gw-a", T0, -60)
    hear(c, "gw-b", T0, -95)
    hear(c, "gw-c", T0, -80)
    c.on_reserve("gw-a", DEV, 767)
    assert c.decide(T0 + 1) == {}  # home online and hearing it: stays, though nobody hears it better
    c.on_state("gw-a", {"v": 1, "state": "offline"})  # its last will
    assert c.decide(T0 + 2) == {DEV: Assignment("gw-c", 5, 767, T0 + 2)}


def test_a_removed_state_counts_as_offline() -> None:
    c = fleet()
    c.on_assignment(DEV, Assignment("gw-a", 1, 0, T0 - 3600))
    hear(c, "gw-a", T0, -60)
    hear(c, "gw-b", T0, -95)
    c.on_state("gw-a", None)
    assert c.decide(T0 + 1)[DEV].home == "gw-b"


def test_home_online_but_deaf_for_stale_s_moves_and_not_before() -> None:
    c = fleet()
    c.on_assignment(DEV, Assignment("gw-a", 2, 0, T0 - 3600))
    hear(c, "gw-a", T0, -60)
    hear(c, "gw-b", T0 + 500, -99)  # B keeps hearing it, A has gone deaf since T0
    assert c.decide(T0 + 599) == {}
    assert c.decide(T0 + 601) == {DEV: Assignment("gw-b", 3, 0, T0 + 601)}


def test_nobody_hears_it_then_nothing_moves() -> None:
    c = fleet()
    c.on_assignment(DEV, Assignment("gw-a", 2, 0, T0 - 3600))
    hear(c, "gw-a", T0, -60)
    hear(c, "gw-b", T0, -70)
    c.on_state("gw-a", {"state": "offline"})
    assert c.decide(T0 + 601) == {}  # B's hearing is stale too: a move would not reach the device


def test_no_flap_a_better_witness_never_takes_a_healthy_home() -> None:
    c = fleet()
    c.on_assignment(DEV, Assignment("gw-a", 1, 0, T0 - 3600))
    for k in range(20):
        t = T0 + 60 * k
        hear(c, "gw-a", t, -110, snr=-15)
        hear(c, "gw-b", t, -40, snr=10)
        assert c.decide(t + 1) == {}


def test_no_flap_after_a_move_a_late_inventory_of_the_old_home_does_not_bring_it_back() -> None:
    c = fleet()
    c.on_assignment(DEV, Assignment("gw-a", 1, 0, T0 - 3600))
    hear(c, "gw-a", T0, -60)
    hear(c, "gw-b", T0, -90)
    c.on_state("gw-a", {"state": "offline"})
    moved = c.decide(T0 + 1)[DEV]
    c.on_assignment(DEV, moved)
    c.on_state("gw-a", {"state": "online"})  # A is back and hears it best
    hear(c, "gw-a", T0 + 30, -50)
    for t in (T0 + 31, T0 + 200, T0 + 500):
        assert c.decide(t) == {}  # B hears it (fresh) and is online: it stays home


def test_hold_keeps_a_just_moved_device_unless_its_new_home_goes_offline() -> None:
    c = fleet(Policy(stale_s=60, hold_s=300))
    c.on_assignment(DEV, Assignment("gw-b", 3, 0, T0))
    hear(c, "gw-b", T0 - 100, -90)  # B's inventory lags: its hearing looks stale
    hear(c, "gw-c", T0 + 10, -80)
    assert c.decide(T0 + 20) == {}  # within hold_s: not moved on a stale inventory
    hear(c, "gw-c", T0 + 290, -80)
    assert c.decide(T0 + 301)[DEV].home == "gw-c"  # past hold_s, still deaf: moved
    c.on_state("gw-b", {"state": "offline"})
    assert c.decide(T0 + 295)[DEV].home == "gw-c"  # offline: hold_s does not apply


def test_partition_a_cut_off_home_moves_and_the_floor_covers_what_it_could_still_send() -> None:
    """gw-a is cut off: the broker publishes its will, the coordinator moves the device; gw-a keeps
    its last assignment and may send up to its published reserve: the new home starts above it."""
    c = fleet()
    c.on_assignment(DEV, Assignment("gw-a", 7, 0, T0 - 3600))
    c.on_reserve("gw-a", DEV, 1279)
    hear(c, "gw-a", T0, -60)
    hear(c, "gw-b", T0, -80)
    c.on_state("gw-a", {"state": "offline"})
    moved = c.decide(T0 + 1)[DEV]
    assert (moved.home, moved.epoch, moved.fcnt_floor) == ("gw-b", 8, 1279)
    c.on_assignment(DEV, moved)
    # No news from the cut-off side for an hour: nothing changes while B hears the device.
    for k in range(1, 61):
        hear(c, "gw-b", T0 + 60 * k, -80)
        assert c.decide(T0 + 60 * k + 1) == {}


def test_floor_never_goes_down_a_smaller_reserve_read_later_is_ignored() -> None:
    c = fleet()
    c.on_reserve("gw-a", DEV, 1023)
    c.on_reserve("gw-a", DEV, 255)  # an older retained copy
    assert c.fcnt_floor(DEV) == 1023
    c.on_assignment(DEV, Assignment("gw-a", 2, 4095, T0 - 3600))
    hear(c, "gw-b", T0, -80)
    assert c.decide(T0 + 1)[DEV].fcnt_floor == 4095  # what an earlier move promised stays


def test_a_gateway_clock_off_by_an_hour_does_not_change_freshness() -> None:
    c = fleet()
    c.on_assignment(DEV, Assignment("gw-a", 1, 0, T0 - 3600))
    hear(c, "gw-a", T0, -60, clock_off_s=-3600)
    assert c.decide(T0 + 10) == {}  # heard 0 s before its page, which arrived at T0


def test_same_inputs_same_decision_equal_signals_break_on_the_gateway_id() -> None:
    decisions = []
    for order in (("gw-b", "gw-c"), ("gw-c", "gw-b")):
        c = fleet()
        for gw in order:
            hear(c, gw, T0, -80, snr=3)
        decisions.append(c.decide(T0 + 1))
    assert decisions[0] == decisions[1]
    assert decisions[0][DEV].home == "gw-b"


def test_older_epochs_read_back_are_ignored() -> None:
    c = fleet()
    c.on_assignment(DEV, Assignment("gw-b", 5, 0))
    c.on_assignment(DEV, Assignment("gw-a", 4, 0))
    assert c.homes[DEV].home == "gw-b"


@pytest.mark.parametrize(
    "doc",
    [{"home": "", "epoch": 1, "fcnt_floor": 0}, {"home": "a", "epoch": 0, "fcnt_floor": 0},
     {"home": "a", "epoch": True, "fcnt_floor": 0}, {"home": "a", "epoch": 1, "fcnt_floor": -1}],
)  # fmt: skip
def test_assignment_payload_is_checked(doc: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Assignment.from_payload(doc)


def _signed(key: Ed25519PrivateKey, dev: str, payload: dict[str, Any], target: str | None = None) -> bytes:
    envelope = sign_envelope(key, payload, target=target or assignment_target(dev), ttl_s=ASSIGNMENT_TTL_S)
    return json.dumps(envelope).encode()


def test_an_assignment_verifies_with_the_platform_key_for_its_own_device_only() -> None:
    platform, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = [platform.public_key()]
    payload = Assignment("gw-b", 3, 511).payload()
    now_s = time.time()
    assert verify_assignment(_signed(platform, DEV, payload), DEV, keys, now_s).payload() == payload
    other = "70b3d57ed0000002"
    refusals = {
        "forged": (_signed(forger, DEV, payload), DEV),
        "another device's, re-published here": (_signed(platform, other, payload), DEV),
        "a command envelope": (_signed(platform, DEV, payload, target="gw-b"), DEV),
        "not an assignment": (_signed(platform, DEV, {"home": "gw-b", "epoch": 0, "fcnt_floor": 0}), DEV),
    }
    reasons = {}
    for what, (data, dev) in refusals.items():
        with pytest.raises(CommandRejected) as caught:
            verify_assignment(data, dev, keys, now_s)
        reasons[what] = caught.value.reason
    assert reasons == {
        "forged": "bad_signature",
        "another device's, re-published here": "misaddressed",
        "a command envelope": "misaddressed",
        "not an assignment": "bad_params",
    }


def test_a_years_old_retained_assignment_still_verifies() -> None:
    platform = Ed25519PrivateKey.generate()
    data = _signed(platform, DEV, Assignment("gw-a", 1, 0).payload())
    assert verify_assignment(data, DEV, [platform.public_key()], time.time() + 5 * 365 * 86400).home == "gw-a"


def test_fleet_coordinator_once_takes_its_state_from_the_brokers_retained_messages(
    tmp_path: Path, mosquitto: Broker, subscribe: Any
) -> None:
    """A fresh `edgegw fleet coordinator --once` process: the current epoch (4, gw-a) comes from the
    retained assignment, gw-a's will says offline, gw-b's inventory arrives while it listens: it
    publishes epoch 5 for gw-b, above gw-a's retained reserve, signed, retained."""
    platform = Ed25519PrivateKey.generate()
    key_file = tmp_path / "platform.pem"
    key_file.write_bytes(
        platform.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    retained = {
        f"edgegw/fleet/home/{DEV}": _signed(platform, DEV, Assignment("gw-a", 4, 255).payload()),
        "edgegw/gw-a/state": json.dumps({"v": 1, "state": "offline"}).encode(),
        "edgegw/gw-b/state": json.dumps({"v": 1, "state": "online"}).encode(),
        f"edgegw/gw-a/fcnt-reserve/{DEV}": json.dumps({"v": 1, "reserved_upto": 767}).encode(),
    }
    broker = {"hostname": mosquitto.host, "port": mosquitto.port}
    for topic, payload in retained.items():
        publish.single(topic, payload, qos=1, retain=True, **broker)  # type: ignore[arg-type]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "fleet", "coordinator", "--once", "--key", str(key_file),
         "--host", mosquitto.host, "--port", str(mosquitto.port), "--no-tls", "--listen-s", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.0)  # connected and subscribed
        now_s = time.time()
        inventory = page(now_s, seen(now_s - 5, -90.0))
        publish.single("edgegw/gw-b/inventory", json.dumps(inventory), qos=1, **broker)  # type: ignore[arg-type]
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    moves = [json.loads(line) for line in out.splitlines()]
    assert [(m["dev_eui"], m["from"], m["home"], m["epoch"], m["fcnt_floor"]) for m in moves] == [
        (DEV, "gw-a", "gw-b", 5, 767)
    ]
    later = subscribe("edgegw/fleet/home/+")  # a gateway connecting afterwards gets it, retained
    (kept,) = later.wait_for(lambda msgs: len(msgs) >= 1)
    assert kept.retain and kept.topic == f"edgegw/fleet/home/{DEV}"
    assert verify_assignment(kept.payload, DEV, [platform.public_key()], time.time()).payload() == {
        "home": "gw-b",
        "epoch": 5,
        "fcnt_floor": 767,
    }
