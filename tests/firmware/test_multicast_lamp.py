"""Acceptance: a class C lamp controller on real MicroPython obeys its multicast groups, and only them.

One MicroPython process (the WebAssembly port, via ``run_micropython.mjs``) runs
``scenario_multicast.py``: the firmware's ``Device`` with ``lorawan/multicast.py``,
``nodes/lamp_controller.py``, ``main.run_class_c`` and the ``sensors`` with ``machine`` shimmed.
Every frame is built here from the standard with the gateway's primitives, not with the gateway's
multicast code: ``gateway.lorawan.phy.build_data_frame`` over ``gateway.lorawan.crypto.SessionKeys``
holding a group's McNwkSKey/McAppSKey and its McAddr as DevAddr (LoRaWAN 1.0.4 §4.3.3, §4.4: Dir = 1
in B0 and the A blocks), commands encoded by the ``edgegw/lamp-controller`` profile. What a
multicast frame may carry: LoRaWAN 1.0.4 §11.2.2 (Unconfirmed Data Down, ACK and ADRACKReq 0, no
MAC commands) and TS005 (McFCntDown above the last, within minMcFCount..maxMcFCount). The lamp's
uplinks are accepted by the gateway's ``SessionTable`` (ABP session) and decoded by the profile.

A few checks of the group configuration run the same module under CPython (``config.json`` rules).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.codec.profile import Profile
from gateway.config import LorawanSection
from gateway.lorawan import crypto, phy
from gateway.lorawan.join import JoinServer
from gateway.lorawan.sessions import Session, SessionTable, session_tag
from gateway.messages import AesKey, DevAddr, DevEui, MType, UplinkData
from tests.firmware.gateway_side import GatewaySide, device_profile, run_scenario

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firmware"))

from lorawan import multicast  # type: ignore[import-not-found]
from lorawan.storage import MemoryStorage  # type: ignore[import-not-found]

DEADLINE_S = 30.0
MAX_LINES = 200
INTERVAL_S = 900

# The lamp's own ABP session (its uplinks, and one unicast class C command).
DEV_EUI = "70b3d57ed00c0101"
DEV_ADDR = "26011c01"
NWK, APP = bytes(range(0x40, 0x50)), bytes(range(0x50, 0x60))
ABP = {"dev_addr": DEV_ADDR, "nwk_s_key": NWK.hex(), "app_s_key": APP.hex()}


@dataclass(frozen=True)
class Group:
    mc_addr: str
    nwk: bytes
    app: bytes

    @property
    def keys(self) -> crypto.SessionKeys:
        return crypto.SessionKeys(self.nwk, self.app)


DISTRICT = Group("0178a001", bytes(range(0x10, 0x20)), bytes(range(0x20, 0x30)))
CITY = Group("0178a0ff", bytes(range(0x60, 0x70)), bytes(range(0x70, 0x80)))
NEIGHBOUR = Group("0178a002", bytes(range(0x80, 0x90)), bytes(range(0x90, 0xA0)))  # the lamp is not in it
CITY_MAX_FCNT = 10
GROUPS_CONFIG = [
    {"mc_addr": DISTRICT.mc_addr, "mc_nwk_s_key": DISTRICT.nwk.hex(), "mc_app_s_key": DISTRICT.app.hex()},
    {
        "mc_addr": CITY.mc_addr,
        "mc_nwk_s_key": CITY.nwk.hex(),
        "mc_app_s_key": CITY.app.hex(),
        "min_fcnt": 2,
        "max_fcnt": CITY_MAX_FCNT,
        "freq_hz": 869_525_000,
        "dr": 0,
    },
]
PROFILE = device_profile("edgegw/lamp-controller")
DUTY_40 = 40 * 65535 // 100


def command(name: str, **params: Any) -> bytes:
    """The FRMPayload of a lamp command as the gateway's rules encode it (profile encoder)."""
    encoded = PROFILE.encode(name, params)
    assert encoded.fport == 20
    return encoded.payload


def mc_frame(
    group: Group,
    fcnt32: int,
    payload: bytes,
    *,
    keys: crypto.SessionKeys | None = None,
    mtype: MType = MType.UNCONFIRMED_DATA_DOWN,
    **kw: Any,
) -> str:
    """A data downlink to ``group`` (DevAddr = McAddr, MIC and payload under the group's keys), hex."""
    return phy.build_data_frame(
        keys or group.keys,
        mtype=mtype,
        dev_addr=bytes.fromhex(group.mc_addr),
        fcnt32=fcnt32,
        fport=20,
        payload=payload,
        **kw,
    ).hex()


def bad_mic(frame_hex: str) -> str:
    raw = bytearray.fromhex(frame_hex)
    raw[-1] ^= 0x01
    return raw.hex()


DIM_40 = mc_frame(DISTRICT, 1, command("set_dim", percent=40))
STEPS: list[dict[str, Any]] = [
    {"name": "dim_district", "frames": [DIM_40]},
    {"name": "replay", "frames": [DIM_40]},
    {"name": "bad_mic", "frames": [bad_mic(mc_frame(DISTRICT, 2, command("set_dim", percent=10)))]},
    {"name": "wrong_keys", "frames": [mc_frame(DISTRICT, 2, command("set_dim", percent=10), keys=CITY.keys)]},
    {"name": "other_group", "frames": [mc_frame(NEIGHBOUR, 2, command("set_dim", percent=10))]},
    {"name": "fopts", "frames": [mc_frame(DISTRICT, 2, command("set_dim", percent=10), fopts=b"\x06")]},
    {
        "name": "confirmed",
        "frames": [mc_frame(DISTRICT, 2, command("set_dim", percent=10), mtype=MType.CONFIRMED_DATA_DOWN)],
    },
    {"name": "ack", "frames": [mc_frame(DISTRICT, 2, command("set_dim", percent=10), ack=True)]},
    {"name": "below_min", "frames": [mc_frame(CITY, 1, command("switch", state="off"))]},
    {"name": "beyond_max", "frames": [mc_frame(CITY, CITY_MAX_FCNT + 1, command("switch", state="off"))]},
    # Several frames in one listen: the ignored ones are skipped and the group's frame is obeyed.
    {
        "name": "switch_city",
        "frames": [
            mc_frame(NEIGHBOUR, 3, command("switch", state="on")),
            mc_frame(CITY, 3, command("switch", state="off")),
        ],
    },
]
UNICAST_DIM = 70
RUN_DIM = 60
RUN = [mc_frame(DISTRICT, 3, command("set_dim", percent=RUN_DIM))]
AFTER_REBOOT: list[dict[str, Any]] = [
    {"name": "replay_after_reboot", "frames": [RUN[0]]},
    {"name": "city_replay_after_reboot", "frames": [mc_frame(CITY, 3, command("switch", state="on"))]},
    {"name": "next_after_reboot", "frames": [mc_frame(DISTRICT, 4, command("set_dim", percent=80))]},
]


def _session() -> Session:
    dev_addr = DevAddr.from_hex(DEV_ADDR)
    return Session(
        DevEui.from_hex(DEV_EUI),
        dev_addr,
        "edgegw/lamp-controller",
        session_tag(dev_addr, AesKey(NWK)),
        crypto.SessionKeys(NWK, APP),
        None,
    )


def unicast_frame(fcnt32: int, payload: bytes) -> str:
    return phy.build_data_frame(
        crypto.SessionKeys(NWK, APP),
        mtype=MType.UNCONFIRMED_DATA_DOWN,
        dev_addr=bytes.fromhex(DEV_ADDR),
        fcnt32=fcnt32,
        fport=20,
        payload=payload,
    ).hex()


STEPS.append({"name": "unicast", "frames": [unicast_frame(0, command("set_dim", percent=UNICAST_DIM))]})


@dataclass
class Gateway(GatewaySide):
    """The lamp's uplinks accepted by the SessionTable; nothing sent in its class A windows."""

    profile: Profile = field(kw_only=True)
    uplinks: list[UplinkData] = field(default_factory=list)

    def uplink(self, up: UplinkData) -> bytes | None:
        self.uplinks.append(up)
        return None


@dataclass
class Run:
    gateway: Gateway
    steps: dict[tuple[str, str], dict[str, Any]]
    booted: dict[str, dict[str, Any]]
    run: dict[str, Any]
    seconds: float


@pytest.fixture(scope="module")
def run() -> Run:
    gateway = Gateway(JoinServer(LorawanSection(), []), SessionTable([_session()]), profile=PROFILE)
    args = {
        "abp": ABP,
        "multicast": GROUPS_CONFIG,
        "interval_s": INTERVAL_S,
        "steps": STEPS,
        "run": RUN,
        "after_reboot": AFTER_REBOOT,
    }
    events, seconds = run_scenario(
        "scenario_multicast.py", args, gateway, deadline_s=DEADLINE_S, max_lines=MAX_LINES
    )
    steps = {(e["phase"], e["name"]): e for e in events if e["event"] == "step"}
    booted = {e["phase"]: e for e in events if e["event"] == "booted"}
    (ran,) = [e for e in events if e["event"] == "run"]
    print(f"\nMicroPython multicast scenario: {seconds:.2f} s")
    return Run(gateway, steps, booted, ran, seconds)


def _step(run: Run, name: str, phase: str = "first") -> dict[str, Any]:
    return run.steps[(phase, name)]


def test_the_lamp_listens_on_the_groups_channel(run: Run) -> None:
    # RX2's default parameters (869.525 MHz, DR0 = SF12/125 kHz), where the groups are sent.
    assert run.booted["first"]["channel"] == [869_525_000, 0]
    assert _step(run, "dim_district")["channel"] == [869_525_000, 12, 125_000]


def test_a_district_frame_dims_the_lamp(run: Run) -> None:
    step = _step(run, "dim_district")
    assert step["down"] == {
        "fport": 20,
        "payload": command("set_dim", percent=40).hex(),
        "fcnt": 1,
        "mc_addr": DISTRICT.mc_addr,
    }
    assert step["obeyed"] and step["relay"] == 1 and step["duty"] == DUTY_40
    assert step["counters"][DISTRICT.mc_addr]["last_fcnt"] == 1


IGNORED = (
    *("replay", "bad_mic", "wrong_keys", "other_group"),  # not this group's, or already taken
    *("fopts", "confirmed", "ack"),  # not a valid multicast frame (§11.2.2)
    *("below_min", "beyond_max"),  # outside the group's counter window (TS005)
)


@pytest.mark.parametrize("name", IGNORED)
def test_frames_a_member_must_not_take_are_ignored(run: Run, name: str) -> None:
    step = _step(run, name)
    assert step["down"] is None and not step["obeyed"]
    # The lamp keeps the district's level, the counters do not move, and it listened to the deadline.
    assert (step["relay"], step["duty"]) == (1, DUTY_40)
    assert step["counters"][DISTRICT.mc_addr]["last_fcnt"] == 1
    assert step["counters"][CITY.mc_addr]["last_fcnt"] == -1
    assert step["listened_ms"] == 60_000


def test_a_second_group_is_obeyed_after_frames_it_must_skip(run: Run) -> None:
    step = _step(run, "switch_city")
    assert step["down"]["mc_addr"] == CITY.mc_addr and step["down"]["fcnt"] == 3
    assert step["obeyed"] and step["relay"] == 0 and step["duty"] == 0
    assert step["counters"] == {
        DISTRICT.mc_addr: {"key_check": step["counters"][DISTRICT.mc_addr]["key_check"], "last_fcnt": 1},
        CITY.mc_addr: {"key_check": step["counters"][CITY.mc_addr]["key_check"], "last_fcnt": 3},
    }


def test_unicast_class_c_still_arrives_on_the_shared_channel(run: Run) -> None:
    step = _step(run, "unicast")
    assert step["down"]["mc_addr"] is None and step["down"]["fcnt"] == 0
    assert step["obeyed"] and step["duty"] == UNICAST_DIM * 65535 // 100


def test_main_loop_obeys_a_multicast_command_and_reports_it_at_the_next_report(run: Run) -> None:
    gw = run.gateway
    assert run.run["duty"] == RUN_DIM * 65535 // 100
    # Two reports by main.run_class_c, the second a full interval after the first: the multicast
    # command did not make the lamp answer at once (every member heard it: a burst would collide).
    assert len(gw.uplinks) == 2
    first, second = [tx for tx in gw.tx if tx["tx"][:2] != "00"]
    assert second["at_ms"] - first["at_ms"] >= INTERVAL_S * 1000
    report = gw.uplinks[1]
    decoded = gw.profile.decode(report.fport or 0, report.payload, {}).data
    assert (decoded["relay_on"], decoded["dim_level"], decoded["commanded"]) == (True, RUN_DIM, True)


def test_the_last_fcnt_survives_a_reboot(run: Run) -> None:
    counters = run.booted["reboot"]["counters"]
    assert counters[DISTRICT.mc_addr]["last_fcnt"] == 3 and counters[CITY.mc_addr]["last_fcnt"] == 3
    for name in ("replay_after_reboot", "city_replay_after_reboot"):
        step = _step(run, name, "reboot")
        assert step["down"] is None and (step["relay"], step["duty"]) == (0, 0)
    step = _step(run, "next_after_reboot", "reboot")
    assert step["down"]["fcnt"] == 4 and step["obeyed"] and step["duty"] == 80 * 65535 // 100


def test_the_run_stays_fast(run: Run) -> None:
    assert run.seconds < DEADLINE_S


# --- the group configuration, under CPython -------------------------------------------------------


def test_groups_from_config_are_checked() -> None:
    one = GROUPS_CONFIG[0]
    with pytest.raises(ValueError, match="at most 4"):
        multicast.Multicast.from_config(
            [dict(one, mc_addr=f"0178b00{i}") for i in range(multicast.MAX_GROUPS + 1)]
        )
    with pytest.raises(ValueError, match="twice"):
        multicast.Multicast.from_config([one, one])
    with pytest.raises(ValueError, match="one frequency and DR"):
        multicast.Multicast.from_config([one, dict(GROUPS_CONFIG[1], dr=3)])
    with pytest.raises(ValueError, match="unknown multicast key"):
        multicast.Multicast.from_config([dict(one, mc_key="00" * 16)])
    with pytest.raises(ValueError, match="min_fcnt"):
        multicast.Multicast.from_config([dict(one, min_fcnt=5, max_fcnt=4)])
    with pytest.raises(ValueError, match="mc_addr must be 4 bytes"):
        multicast.Multicast.from_config([dict(one, mc_addr="0178")])
    assert multicast.Multicast.from_config(None).channel() is None


def test_new_keys_for_a_group_start_its_counter_afresh() -> None:
    storage = MemoryStorage()
    groups = multicast.Multicast.from_config(GROUPS_CONFIG)
    group = groups.group_of(bytes.fromhex(DIM_40))
    assert group is not None and group.name == DISTRICT.mc_addr
    groups.accept(group, bytes.fromhex(DIM_40))
    storage.save({"multicast": groups.to_dict()})
    again = multicast.Multicast.from_config(GROUPS_CONFIG)
    again.load(storage.load()["multicast"])
    assert [g.last_fcnt for g in again.groups] == [1, -1]
    rekeyed = multicast.Multicast.from_config([dict(GROUPS_CONFIG[0], mc_nwk_s_key=CITY.nwk.hex())])
    rekeyed.load(storage.load()["multicast"])
    assert rekeyed.groups[0].last_fcnt == -1
    # No key in what is stored: a 4-byte check value only.
    assert DISTRICT.nwk.hex() not in repr(storage.load())
