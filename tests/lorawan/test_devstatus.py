"""DevStatusReq at a period, DevStatusAns read (LoRaWAN 1.0.4 §5.5), through the downlink scheduler.

The bytes come from the specification: DevStatusReq is CID 0x06 with no payload; DevStatusAns is
CID 0x06, Battery (1 byte: 0 external power, 1..254 level, 255 cannot measure), then Margin (RFU in
bits 7..6, bits 5..0 a signed integer -32..31: the SNR in dB of the last DevStatusReq received).
The device side reads each downlink as a device would (MIC checked, FOpts split with ``mac``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.cli.device_views import dev_status_text
from gateway.cli.views_cmd import devices_lines
from gateway.config import LorawanSection
from gateway.inventory import DeviceSeen, Inventory
from gateway.lorawan import mac, phy
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.devstatus import (
    MAX_ASKS,
    MAX_SPREAD_S,
    DevStatus,
    DevStatusPeer,
    battery_pct,
    parse_dev_status_ans,
)
from gateway.lorawan.downlink import DownlinkScheduler
from gateway.lorawan.sessions import Session, SessionTable
from gateway.messages import DevAddr, DevEui, MType, RadioFrame, RxInfo, UplinkData

KEYS = SessionKeys(bytes(range(16)), bytes(range(16, 32)))
ADDR = bytes.fromhex("26011d5a")
EUI = DevEui.from_hex("70b3d57ed0001d5a")
OTHER = DevEui.from_hex("70b3d57ed0001d5b")
RX = RxInfo(868_100_000, -90.0, 7.0, 9, 125_000, "4/5", True, "test", "aa555a0000000001", 5_000_000)
T0 = 1_765_000_000.0
DAY_S = 86_400


def uplink(fcnt: int, at_s: float, fopts: bytes = b"", dev_eui: DevEui = EUI) -> UplinkData:
    raw = phy.build_data_frame(
        KEYS, mtype=MType.UNCONFIRMED_DATA_UP, dev_addr=ADDR, fcnt32=fcnt, fport=10, payload=b"\x01",
        fopts=fopts,
    )  # fmt: skip
    frame = RadioFrame(raw, RX, at_s, time.monotonic())
    return UplinkData(dev_eui, DevAddr(ADDR), "tag00001", "p/m", fcnt, 10, b"\x01", False, frame)


def scheduler(peer: DevStatusPeer) -> DownlinkScheduler:
    session = Session(EUI, DevAddr(ADDR), "p/m", "tag00001", KEYS, 0, 0)
    return DownlinkScheduler(LorawanSection(), SessionTable([session]), peers=[peer])


def device_hears(sched: DownlinkScheduler, up: UplinkData) -> list[tuple[str, bytes]]:
    """The MAC commands in the downlink that follows ``up`` ([] when no downlink goes)."""
    plan = sched.on_uplink(up)
    if plan is None:
        return []
    parsed = phy.parse(plan.phy_payload)
    assert isinstance(parsed, phy.DataFrame) and not parsed.uplink
    assert KEYS.data_mic(parsed.mic_input, ADDR, plan.fcnt_down, False) == parsed.mic
    commands, unread = mac.parse_commands(parsed.fopts, uplink=False)
    assert unread == b""
    return [(c.name, c.payload) for c in commands]


@pytest.mark.parametrize(
    ("payload", "battery", "margin_db"),
    [
        (bytes([0x00, 0x00]), 0, 0),  # external power, 0 dB
        (bytes([0xFE, 0x1F]), 254, 31),  # full battery, the highest margin
        (bytes([0x7F, 0x20]), 127, -32),  # 0b100000: the lowest margin
        (bytes([0x01, 0x3F]), 1, -1),  # 0b111111 = -1
        (bytes([0xFF, 0x3A]), 255, -6),  # cannot measure; 0b111010 = -6
        (bytes([0xC8, 0xC7]), 200, 7),  # RFU bits 7..6 set: ignored
    ],
)
def test_dev_status_ans_is_read_as_the_specification_writes_it(
    payload: bytes, battery: int, margin_db: int
) -> None:
    assert parse_dev_status_ans(payload) == (battery, margin_db)


def test_a_dev_status_ans_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_dev_status_ans(b"\x10")


def test_battery_percent_external_power_and_unknown() -> None:
    assert battery_pct(254) == 100.0
    assert battery_pct(127) == 50.0
    assert battery_pct(1) == 0.4
    assert battery_pct(0) is None  # external power
    assert battery_pct(255) is None  # cannot measure


def test_a_device_never_answered_is_asked_then_its_answer_reaches_the_listener() -> None:
    heard: list[DevStatus] = []
    peer = DevStatusPeer(DAY_S, on_status=heard.append)
    sched = scheduler(peer)
    t = T0
    fcnt = 0
    while True:  # asked within the spread of the first uplink
        asked = device_hears(sched, uplink(fcnt, t))
        if asked:
            break
        fcnt, t = fcnt + 1, t + 600
        assert t - T0 <= MAX_SPREAD_S
    assert asked == [("DevStatusReq", b"")]  # CID 0x06, no payload
    # The device answers in FOpts of its next uplink: battery 200/254, margin -6 dB (0b111010).
    assert device_hears(sched, uplink(fcnt + 1, t + 600, fopts=bytes([0x06, 0xC8, 0x3A]))) == []
    assert heard == [DevStatus(EUI, 200, -6, t + 600)]
    assert peer.counters["dev_status.answered"] == 1


def test_asked_again_a_period_after_the_answer_not_before() -> None:
    peer = DevStatusPeer(DAY_S)
    peer.known(EUI, T0)  # restored: it answered at T0
    sched = scheduler(peer)
    assert device_hears(sched, uplink(1, T0 + 3600)) == []
    assert device_hears(sched, uplink(2, T0 + DAY_S - 1)) == []
    assert device_hears(sched, uplink(3, T0 + DAY_S)) == [("DevStatusReq", b"")]


def test_one_request_at_a_time_then_again_after_uplinks_without_answer() -> None:
    peer = DevStatusPeer(DAY_S, retry_after_uplinks=3)
    peer.known(EUI, T0 - DAY_S)
    sched = scheduler(peer)
    asked = [bool(device_hears(sched, uplink(n, T0 + n * 60))) for n in range(8)]
    # Asked at once; the next two uplinks wait for the answer; the third without one asks again.
    assert asked == [True, False, False, True, False, False, True, False]
    assert peer.counters["dev_status.asked_again"] == 2
    # The device answers the third request: asked again a period after that answer only.
    assert device_hears(sched, uplink(8, T0 + 480, fopts=bytes([0x06, 0x00, 0x05]))) == []
    assert device_hears(sched, uplink(9, T0 + 540 + 3 * 3600)) == []
    assert device_hears(sched, uplink(10, T0 + 480 + DAY_S)) == [("DevStatusReq", b"")]


def test_a_device_that_never_answers_is_left_alone_for_a_period() -> None:
    peer = DevStatusPeer(DAY_S, retry_after_uplinks=3)
    peer.known(EUI, T0 - DAY_S)
    sched = scheduler(peer)
    asked = [bool(device_hears(sched, uplink(n, T0 + n * 60))) for n in range(30)]
    assert asked.count(True) == MAX_ASKS  # not a downlink every third uplink for ever
    assert peer.counters["dev_status.unanswered"] == 1
    gave_up_s = T0 + 9 * 60  # the uplink after the third request's wait
    assert device_hears(sched, uplink(30, gave_up_s + DAY_S - 60)) == []
    assert device_hears(sched, uplink(31, gave_up_s + DAY_S)) == [("DevStatusReq", b"")]


def test_a_restart_does_not_ask_every_device_at_once() -> None:
    peer = DevStatusPeer(DAY_S)
    euis = [DevEui((0x70B3D57ED0000000 + n).to_bytes(8, "big")) for n in range(200)]
    first = [bool(peer.requests(uplink(0, T0, dev_eui=eui), 15)) for eui in euis]
    assert sum(first) < 10  # spread over MAX_SPREAD_S, not all on the first uplink
    later = [bool(peer.requests(uplink(1, T0 + MAX_SPREAD_S, dev_eui=eui), 15)) for eui in euis]
    assert all(a or b for a, b in zip(first, later, strict=True))  # every one asked within the spread


def test_period_zero_never_asks_and_no_room_asks_nothing() -> None:
    never = DevStatusPeer(0)
    assert never.requests(uplink(0, T0 + 10 * DAY_S), 15) == b""
    peer = DevStatusPeer(DAY_S)
    peer.known(EUI, T0 - 2 * DAY_S)
    assert peer.requests(uplink(0, T0), 0) == b""
    assert peer.requests(uplink(1, T0), 15) == b"\x06"


def test_other_commands_are_not_its_own() -> None:
    heard: list[DevStatus] = []
    peer = DevStatusPeer(DAY_S, on_status=heard.append)
    peer.answer(uplink(0, T0), mac.MacCommand(0x03, "LinkADRAns", b"\x07"))
    assert heard == []


def test_a_forgotten_device_starts_again() -> None:
    peer = DevStatusPeer(DAY_S)
    peer.known(OTHER, T0)
    peer.forget(OTHER)
    # Never answered now: asked at its phase of the spread, not a day after T0.
    asked = [bool(peer.requests(uplink(n, T0 + n * 600, dev_eui=OTHER), 15)) for n in range(37)]
    assert any(asked)


def test_the_inventory_shows_the_answer_and_keeps_it_in_its_export() -> None:
    inventory = Inventory()
    inventory.dev_status(str(EUI), 0, 12, T0)  # external power
    inventory.dev_status(str(OTHER), 255, -3, T0 + 1)  # cannot measure
    view = inventory.snapshot(T0 + 2)
    assert view[str(EUI)]["dev_status"] == {
        "power": "mains",
        "battery_pct": None,
        "margin_db": 12,
        "at_s": T0,
    }
    assert view[str(OTHER)]["dev_status"]["power"] == "unknown"
    exported = inventory.export(str(EUI))
    assert exported is not None
    restored = Inventory()
    restored.restore(str(EUI), exported)
    assert restored.snapshot(T0 + 2)[str(EUI)]["dev_status"] == view[str(EUI)]["dev_status"]
    assert restored.dev_status_answered() == {str(EUI): T0}
    # A state written before DevStatus was kept reads back without one.
    old = DeviceSeen(last_seen_s=T0, frames=3).export()
    for key in ("status_battery", "status_margin_db", "status_at_s"):
        del old[key]
    restored.restore(str(OTHER), old)
    assert restored.snapshot(T0)[str(OTHER)]["dev_status"] is None


def test_devices_and_device_show_print_the_answer() -> None:
    status: dict[str, Any] = {
        "power": "battery",
        "battery_pct": 78.7,
        "margin_db": -6,
        "at_s": time.time() - 3600,
    }
    row: dict[str, Any] = {"dev_eui": str(EUI), "profile": "edgegw/lamp-controller", "site": "",
                           "last_seen_s": None, "battery": None, "dev_status": status}  # fmt: skip
    mains = {**row, "dev_eui": str(OTHER), "dev_status": {**status, "power": "mains"}}
    decoded = {**row, "dev_eui": "70b3d57ed0001d5c", "battery": 92.0}  # the profile's own comes first
    lines = devices_lines([row, mains, decoded], 80)
    assert [line.split()[5] for line in lines[1:]] == ["79%", "mains", "92"]
    text = dev_status_text(status)
    assert text.startswith("battery 79 %, downlink margin -6 dB (60 min ago")
