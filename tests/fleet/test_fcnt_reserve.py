"""The home's FCntDown reserve (gateway/fleet/fcnt_reserve.py) and the failover rule built on it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.app.fleet_homes import FleetHomes
from gateway.fleet import fcnt_reserve
from gateway.fleet.coordinator import ASSIGNMENT_TTL_S, Assignment, Coordinator, Policy, assignment_target
from gateway.fleet.fcnt_reserve import FcntReserve
from gateway.fleet.sign import sign_envelope
from gateway.fleet.trust import PINNED_KEY_FILE, Trust
from gateway.roles import Roles
from tests.lorawan.test_downlink import EUI, make, up

DEV = "70b3d57ed0000001"


class Home:
    """An old home's downlink counter and reserve, with a broker that can go away."""

    def __init__(self, next_fcnt_down: int = 0, *, enforced: bool = True) -> None:
        self.reserve = FcntReserve(block=16, low_water=8)
        self.reserve.enforce(DEV, enforced)
        self.next = next_fcnt_down
        self.broker_up = True
        self.used: list[int] = []
        self.refused = 0
        self.retained: dict[str, int] = {}

    def publish(self) -> None:
        if not self.broker_up:
            return
        for eui, upto in self.reserve.wanted().items():
            self.retained[eui] = fcnt_reserve.parse(fcnt_reserve.payload(upto))
            self.reserve.acknowledged({eui: upto})

    def downlink(self) -> None:
        if self.reserve.allows(DEV, self.next):
            self.used.append(self.next)
            self.next += 1
        else:
            self.refused += 1
        self.publish()  # the agent's publisher runs right after (the broker may be away)


def test_an_enforced_device_waits_for_its_first_block() -> None:
    r = FcntReserve(block=16, low_water=8)
    r.enforce(DEV)
    assert not r.allows(DEV, 0)
    assert r.wanted() == {DEV: 15}
    r.acknowledged({DEV: 15})
    assert r.wanted() == {}
    assert all(r.allows(DEV, f) for f in range(16))
    assert not r.allows(DEV, 16)
    assert r.counters["no_fcnt_reserve"] == 2


def test_the_next_block_is_asked_for_at_low_water_not_at_the_edge() -> None:
    r = FcntReserve(block=16, low_water=8)
    r.acknowledged({DEV: 15})
    assert r.allows(DEV, 7) and r.wanted() == {}
    assert r.allows(DEV, 8) and r.wanted() == {DEV: 23}


def test_an_unassigned_device_is_never_refused_but_its_reserve_is_published() -> None:
    home = Home(enforced=False)
    home.broker_up = False
    for _ in range(40):
        home.downlink()
    assert home.refused == 0 and home.used == list(range(40))  # a single-gateway city, broker away
    home.broker_up = True
    home.downlink()
    assert home.retained[DEV] >= 40


def test_cut_off_a_home_uses_counters_only_up_to_its_acknowledged_reserve() -> None:
    home = Home()
    for _ in range(10):
        home.downlink()
    home.broker_up = False
    for _ in range(100):
        home.downlink()
    assert max(home.used) == home.reserve.published[DEV] == home.retained[DEV]
    assert home.refused == 100 - (home.retained[DEV] - 9)


@pytest.mark.parametrize("cut_off", [False, True])
def test_a_new_homes_first_fcnt_down_is_above_anything_the_old_home_could_use(cut_off: bool) -> None:
    """The old home's retained reserve is all the coordinator knows. Connected, the old home hears of
    the move and stops; cut off, it keeps its assignment and goes on sending as long as it may."""
    old = Home(next_fcnt_down=1000)
    for _ in range(37):
        old.downlink()
    coordinator = Coordinator(Policy(stale_s=600, hold_s=0))
    coordinator.on_assignment(DEV, Assignment("gw-a", 1, 0))
    coordinator.on_reserve("gw-a", DEV, old.retained[DEV])
    coordinator.on_state("gw-a", {"state": "offline"})  # its last will
    coordinator.on_state("gw-b", {"state": "online"})
    coordinator.on_inventory(
        "gw-b",
        {"at": "2027-01-15T08:00:00Z", "devices": [{"dev_eui": DEV, "last_seen": "2027-01-15T08:00:00Z"}]},
        received_at_s=1_800_000_000.0,
    )
    moved = coordinator.decide(1_800_000_001.0)[DEV]
    assert moved.home == "gw-b" and moved.fcnt_floor == old.retained[DEV]
    if cut_off:
        old.broker_up = False
        for _ in range(100):
            old.downlink()
        assert old.refused > 0
    new_first = moved.fcnt_floor + 1  # what the agent does on becoming home
    assert new_first > max(old.used)


def test_restore_announces_a_higher_retained_reserve_again_and_never_lowers_one() -> None:
    """After a restart the agent may publish a lower block before its old retained one comes back:
    the old one is announced again, and counters past the lower one are usable only once the broker
    holds the higher one again."""
    other = "70b3d57ed0000002"
    r = FcntReserve()
    r.acknowledged({DEV: 511})
    r.restore({DEV: 255, other: 767})  # DEV: our echo of an older value; other: from before the restart
    assert r.published == {DEV: 511}
    assert r.wanted() == {other: 767}
    r.enforce(other)
    assert not r.allows(other, 700)
    r.acknowledged(r.wanted())
    assert r.allows(other, 700)
    r.restore({other: 767})  # the echo of that publication
    assert r.wanted() == {}


@pytest.mark.parametrize(
    "payload",
    [
        b"[]",
        b'{"v": 2, "reserved_upto": 5}',
        b'{"v": 1, "reserved_upto": -1}',
        b'{"v": 1, "reserved_upto": true}',
        b'{"v": 1, "reserved_upto": 5.0}',
        b'{"v": 1}',
    ],
)
def test_parse_refuses_what_is_not_a_reserve(payload: bytes) -> None:
    with pytest.raises(ValueError):
        fcnt_reserve.parse(payload)


def test_payload_and_parse_round_trip() -> None:
    assert fcnt_reserve.payload(767) == b'{"v":1,"reserved_upto":767}'
    assert fcnt_reserve.parse(fcnt_reserve.payload(767)) == 767


def test_the_scheduler_refuses_past_the_reserve_and_a_new_home_starts_above_the_floor() -> None:
    """Through the real DownlinkScheduler: a frame past the acknowledged reserve is not built (its
    command ends ``refused`` ``no_fcnt_reserve``, nothing goes on the air), and ``raise_fcnt_down``
    puts the next frame above the coordinator's floor, durably (it waits for its commit)."""
    scheduler, sessions = make(fcnt_down=5)
    outcomes: list[tuple[str, str]] = []
    scheduler.on_outcome = lambda _ref, _eui, state, detail: outcomes.append((state, detail))
    reserve = FcntReserve(block=16, low_water=8)
    reserve.enforce(str(EUI))
    scheduler.fcnt_gate = lambda eui, fcnt: reserve.allows(str(eui), fcnt)

    scheduler.enqueue(EUI, 10, b"\x01")
    assert scheduler.on_uplink(up(confirmed=True)) is None  # nothing reserved yet: not even the ACK
    assert outcomes == [("refused", "no_fcnt_reserve")]
    assert scheduler.counters["no_fcnt_reserve"] == 1

    wanted = reserve.wanted()
    assert wanted == {str(EUI): 20}  # the block from FCntDown 5
    reserve.acknowledged(wanted)
    plan = scheduler.on_uplink(up(confirmed=True, fcnt=12))
    assert plan is not None and plan.fcnt_down == 5

    assert scheduler.raise_fcnt_down(EUI, 1000) == 1001
    assert not scheduler.counter_durable(EUI)  # the raised counter goes with the next group commit
    assert scheduler.raise_fcnt_down(EUI, 10) == 1001  # FCntDown only grows
    reserve.start_at(str(EUI), 1001)
    reserve.acknowledged(reserve.wanted())
    plan = scheduler.on_uplink(up(confirmed=True, fcnt=13))
    assert plan is not None and plan.fcnt_down == 1001
    assert sessions.by_dev_eui(EUI) is not None


def test_the_agent_side_applies_verified_assignments_only_and_publishes_the_new_homes_block(
    tmp_path: Path,
) -> None:
    """``gateway.app.fleet_homes``: a forged assignment changes nothing; a signed one makes this
    gateway home above the floor, holds the device to its reserve, and the publisher announces the
    block (acknowledged only once the broker took it)."""
    platform, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    (tmp_path / PINNED_KEY_FILE).write_bytes(
        platform.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    scheduler, sessions = make(fcnt_down=3)
    roles = Roles("gw-b")
    published: list[tuple[str, bytes]] = []

    async def publish(dev_eui: str, data: bytes) -> None:
        published.append((dev_eui, data))

    async def scenario() -> FleetHomes:
        trust = Trust(tmp_path, gateway_id="gw-b")
        homes = FleetHomes(roles, scheduler, trust, publish_reserve=publish, connected=lambda: True)
        scheduler.fcnt_gate = homes.fcnt_gate
        topic = f"edgegw/fleet/home/{EUI}"

        def signed(key: Ed25519PrivateKey, home: str, epoch: int, floor: int) -> bytes:
            payload = {"home": home, "epoch": epoch, "fcnt_floor": floor}
            env = sign_envelope(key, payload, target=assignment_target(str(EUI)), ttl_s=ASSIGNMENT_TTL_S)
            return json.dumps(env).encode()

        homes.on_assignment(topic, signed(forger, "gw-b", 9, 700))
        assert roles.assignment(str(EUI)) is None and not homes.reserve.enforced(str(EUI))
        homes.on_assignment(topic, signed(platform, "gw-a", 1, 0))
        assert not roles.is_home(str(EUI))
        homes.on_assignment(topic, signed(platform, "gw-b", 2, 511))
        assert roles.is_home(str(EUI)) and homes.reserve.enforced(str(EUI))
        assert not homes.fcnt_gate(EUI, 512)  # not announced yet: refused, the publisher is woken
        task = asyncio.create_task(homes.publish_reserves())
        for _ in range(50):
            await asyncio.sleep(0.01)
            if published:
                break
        task.cancel()
        return homes

    homes = asyncio.run(scenario())
    assert homes.counters["fleet_home.refused.bad_signature"] == 1
    assert homes.counters["fleet_home.assigned"] == 2
    session = sessions.by_dev_eui(EUI)
    assert session is not None and session.fcnt_down == 512
    assert [(eui, fcnt_reserve.parse(data)) for eui, data in published] == [(str(EUI), 512 + 255)]
    assert homes.fcnt_gate(EUI, 512)
