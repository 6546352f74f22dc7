"""MAC commands, NbTrans, confirmed retries, ADR and class C of the firmware's Device, under CPython.

The network side is the gateway's own code: downlinks are built by ``gateway.lorawan.phy.build_data_frame``
(FOpts, or FPort 0 with the FRMPayload encrypted under the NwkSKey), uplinks are accepted by
``gateway.lorawan.sessions.SessionTable`` (MIC, counters) and their FOpts split by
``gateway.lorawan.mac.parse_commands``; LinkCheckAns and DeviceTimeAns come from the gateway's
encoders. Expected values follow LoRaWAN 1.0.4 §5 (command layouts, status bits) and RP002-1.0.3
§2.1 (EU868: TXPower table, ChMaskCntl, RX1DROffset range, default channels); time is virtual.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.lorawan import crypto, phy
from gateway.lorawan import mac as gw_mac
from gateway.lorawan.sessions import Session, SessionTable, session_tag
from gateway.messages import AesKey, DevAddr, DevEui, MType, RadioFrame, RxInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firmware"))

from lorawan import mac, region  # type: ignore[import-not-found]
from lorawan.device import Device  # type: ignore[import-not-found]
from lorawan.storage import MemoryStorage  # type: ignore[import-not-found]

NWK, APP = bytes(range(16)), bytes(range(16, 32))
ADDR = "26011f2a"
ABP = {"dev_addr": ADDR, "nwk_s_key": NWK.hex(), "app_s_key": APP.hex()}
KEYS = crypto.SessionKeys(NWK, APP)


class Radio:
    """A radio on a virtual clock: records transmissions and windows, answers from a script."""

    def __init__(self) -> None:
        self.now_ms = 1_000
        self.sent: list[dict[str, Any]] = []
        self.windows: list[dict[str, Any]] = []
        self.replies: dict[int, bytes] = {}
        """Window number (0-based, counting every window opened) -> frame received in it."""
        self.air: list[bytes] = []
        """Frames that arrive while listening in class C, in order."""
        self.last_snr_db: float | None = None

    def ticks_ms(self) -> int:
        return self.now_ms

    def sleep_ms(self, ms: int) -> None:
        self.now_ms += ms

    def transmit(self, phy_payload: bytes, freq_hz: int, sf: int, bw_hz: int, power_dbm: int) -> int:
        start = self.now_ms
        self.now_ms += region.airtime_us(sf, bw_hz, len(phy_payload)) // 1000
        self.sent.append(
            {"phy": phy_payload, "freq_hz": freq_hz, "sf": sf, "power_dbm": power_dbm, "start_ms": start}
        )
        return self.now_ms

    def receive(self, freq_hz: int, sf: int, bw_hz: int, open_at_ms: int, timeout_ms: int) -> bytes | None:
        self.now_ms = max(self.now_ms, open_at_ms)
        tx_end = self.sent[-1]["start_ms"] if self.sent else 0
        self.windows.append({"freq_hz": freq_hz, "sf": sf, "at_ms": open_at_ms, "tx_start_ms": tx_end})
        reply = self.replies.pop(len(self.windows) - 1, None)
        self.now_ms += timeout_ms
        return reply

    def listen(self, freq_hz: int, sf: int, bw_hz: int, until_ms: int) -> bytes | None:
        self.windows.append({"freq_hz": freq_hz, "sf": sf, "class_c": True})
        if self.air:
            self.now_ms += 10
            return self.air.pop(0)
        self.now_ms = max(self.now_ms, until_ms)
        return None


class Network:
    """The gateway's view: its SessionTable accepts the uplinks, and it builds the downlinks."""

    def __init__(self) -> None:
        dev_addr = DevAddr.from_hex(ADDR)
        self.table = SessionTable(
            [
                Session(
                    DevEui.from_hex("70b3d57ed0001234"),
                    dev_addr,
                    "edgegw/fill-level",
                    session_tag(dev_addr, AesKey(NWK)),
                    KEYS,
                    None,
                )
            ]
        )
        self.fcnt_down = 0

    def downlink(
        self,
        fopts: bytes = b"",
        fport: int | None = None,
        payload: bytes = b"",
        confirmed: bool = False,
        ack=False,
    ) -> bytes:
        frame = phy.build_data_frame(
            KEYS,
            mtype=MType.CONFIRMED_DATA_DOWN if confirmed else MType.UNCONFIRMED_DATA_DOWN,
            dev_addr=bytes.fromhex(ADDR),
            fcnt32=self.fcnt_down,
            fport=fport,
            payload=payload,
            fopts=fopts,
            ack=ack,
        )
        self.fcnt_down += 1
        return frame

    def accept(self, phy_payload: bytes) -> tuple[Any, list[gw_mac.MacCommand]]:
        rx = RxInfo(868_100_000, -90.0, 7.0, 7, 125_000, "4/5", True, "test")
        uplink = self.table.accept(RadioFrame(phy_payload, rx, 0.0, time.monotonic()))
        frame = phy.parse(phy_payload)
        commands, rest = gw_mac.parse_commands(frame.fopts, uplink=True)  # type: ignore[union-attr]
        assert rest == b""
        return uplink, commands


def _device(radio: Radio, storage: MemoryStorage | None = None, **kw: Any) -> Device:
    return Device(
        radio, storage or MemoryStorage(), abp=ABP, sleep_ms=radio.sleep_ms, ticks_ms=radio.ticks_ms, **kw
    )


def _answers(net: Network, radio: Radio) -> list[tuple[str, bytes]]:
    _, commands = net.accept(radio.sent[-1]["phy"])
    return [(c.name, c.payload) for c in commands]


def _exchange(device: Device, radio: Radio, net: Network, fopts: bytes = b"", **kw: Any) -> Any:
    """One uplink whose RX1 carries a downlink with ``fopts``; returns what the device got."""
    radio.replies[len(radio.windows)] = net.downlink(fopts, **kw)
    return device.send(10, b"\x01")


def test_parse_commands_matches_the_gateway_split() -> None:
    # LinkADRReq | DevStatusReq | RXTimingSetupReq, then an unknown CID 0x7F that stops processing (§5).
    stream = bytes.fromhex("0351070001" + "06" + "0801" + "7f0102")
    ours = mac.parse_commands(stream)
    theirs, rest = gw_mac.parse_commands(stream, uplink=False)
    assert ours == [(c.cid, c.payload) for c in theirs]
    assert rest == bytes.fromhex("7f0102")


def test_link_adr_req_applies_dr_power_mask_and_nb_trans() -> None:
    radio, net = Radio(), Network()
    device = _device(radio)
    # DataRate_TXPower 0x32: DR3, TXPower 2 (MaxEIRP 16 - 4 = 12 dBm EIRP -> 10 dBm conducted);
    # ChMask 0x0003 (channels 0 and 1); Redundancy 0x02: ChMaskCntl 0, NbTrans 2.
    down = _exchange(device, radio, net, bytes.fromhex("0332030002"))
    assert down is not None and down.fopts == bytes.fromhex("0332030002")
    assert (device.dr, device.power_dbm, device.mac.nb_trans) == (3, 10, 2)
    assert device.channels_hz == [868_100_000, 868_300_000]
    before = len(radio.sent)
    device.send(10, b"\x02")
    repeated = radio.sent[before:]
    # NbTrans 2: the same frame (same FCnt) twice, at SF9 (DR3), only on the enabled channels.
    assert len(repeated) == 2 and repeated[0]["phy"] == repeated[1]["phy"]
    assert {r["sf"] for r in repeated} == {9} and {r["power_dbm"] for r in repeated} == {10}
    assert {r["freq_hz"] for r in repeated} <= {868_100_000, 868_300_000}
    # LinkADRAns with Power, DR and Channel-mask ACK (status 0b111).
    assert _answers(net, radio) == [("LinkADRAns", b"\x07")]


@pytest.mark.parametrize(
    ("req_hex", "status"),
    [
        ("0350000100", 0b110),  # ChMask enables channel 8, not defined: channel mask NACK
        ("0350000000", 0b110),  # ChMask 0 would disable every channel: NACK
        ("0358070000", 0b011),  # TXPower 8 is RFU in EU868: power NACK
        ("0370070000", 0b101),  # DR7 (FSK) is not supported by this device: DR NACK
        ("0350070070", 0b110),  # ChMaskCntl 7 is RFU: channel mask NACK
    ],
)
def test_link_adr_req_nack_changes_nothing(req_hex: str, status: int) -> None:
    radio, net = Radio(), Network()
    device = _device(radio)
    _exchange(device, radio, net, bytes.fromhex(req_hex))
    # 1.0.4 §5.3: on any NACK the whole command is discarded.
    assert (device.dr, device.power_dbm, device.mac.nb_trans) == (5, 14, 1)
    assert device.channels_hz == list(region.DEFAULT_CHANNELS_HZ)
    device.send(10, b"\x02")
    assert _answers(net, radio) == [("LinkADRAns", bytes((status,)))]


def test_link_adr_block_and_ch_mask_cntl_6() -> None:
    radio, net = Radio(), Network()
    device = _device(radio)
    _exchange(
        device, radio, net, bytes.fromhex("07" + "03" + "184f84" + "50")
    )  # NewChannelReq ch 3, 867.1 MHz
    # A contiguous block (1.0.4 §5.3): mask from the first (channel 0 only), then ChMaskCntl 6 (all
    # defined channels on); DR/TXPower/NbTrans from the last (DR4, 0xF keeps the power, NbTrans 1).
    _exchange(device, radio, net, bytes.fromhex("0350010000" + "034f000061"))
    assert device.dr == 4 and device.power_dbm == 14
    assert device.channels_hz == [868_100_000, 868_300_000, 868_500_000, 867_100_000]
    device.send(10, b"\x02")
    assert _answers(net, radio) == [("LinkADRAns", b"\x07"), ("LinkADRAns", b"\x07")]


def test_new_channel_req_rules() -> None:
    radio, net = Radio(), Network()
    device = _device(radio)
    # ch 3 = 867.1 MHz DR0..5 (ok), ch 1 (a default channel: NACK), ch 4 at 880 MHz (freq NACK),
    # ch 5 with MinDR 5 > MaxDR 2 (DR-range NACK). Freq: 24-bit LE in 100 Hz (§5.6).
    fopts = (
        bytes.fromhex("07" + "03" + "184f84" + "50")
        + bytes.fromhex("07" + "01" + "184f84" + "50")
        + bytes((0x07, 4))
        + (8_800_000).to_bytes(3, "little")
        + b"\x50"
    )
    _exchange(device, radio, net, fport=0, payload=fopts)  # 18 bytes: more than FOpts holds
    device.send(10, b"\x02")
    assert _answers(net, radio) == [
        ("NewChannelAns", b"\x03"),
        ("NewChannelAns", b"\x00"),
        ("NewChannelAns", b"\x02"),
    ]
    assert 867_100_000 in device.channels_hz and len(device.channels_hz) == 4
    _exchange(device, radio, net, bytes.fromhex("07" + "05" + "184f84" + "25"))
    device.send(10, b"\x02")
    assert _answers(net, radio) == [("NewChannelAns", b"\x01")]
    # Frequency 0 removes the channel.
    _exchange(device, radio, net, bytes.fromhex("0703000000" + "00"))
    assert 867_100_000 not in device.channels_hz


def test_rx_param_setup_is_applied_and_answered_until_a_downlink() -> None:
    radio, net = Radio(), Network()
    device = _device(radio)
    # DLsettings 0x23: RX1DROffset 2, RX2 DR3; frequency 869.525 MHz = 8695250 x 100 Hz.
    _exchange(device, radio, net, bytes((0x05, 0x23)) + (8_695_250).to_bytes(3, "little"))
    assert (device.rx1_dr_offset, device.rx2_dr) == (2, 3)
    for _ in range(2):  # sticky (§5.4): in every uplink until a class A downlink arrives
        n = len(radio.windows)
        device.send(10, b"\x02")
        assert _answers(net, radio) == [("RXParamSetupAns", b"\x07")]
        rx1, rx2 = radio.windows[n], radio.windows[n + 1]
        assert rx1["sf"] == 9  # DR5 - 2 = DR3
        assert (rx2["freq_hz"], rx2["sf"]) == (869_525_000, 9)
    _exchange(device, radio, net)  # any class A downlink ends the repetition
    device.send(10, b"\x02")
    assert _answers(net, radio) == []
    # A frequency outside 863-870 MHz: channel NACK, nothing applied.
    _exchange(device, radio, net, bytes((0x05, 0x00)) + (9_000_000).to_bytes(3, "little"))
    assert (device.rx1_dr_offset, device.rx2_dr) == (2, 3)
    device.send(10, b"\x02")
    assert _answers(net, radio) == [("RXParamSetupAns", b"\x06")]


def test_rx_timing_setup_moves_rx1() -> None:
    radio, net = Radio(), Network()
    device = _device(radio)
    _exchange(device, radio, net, b"\x08\x03")  # Del = 3 s (§5.7)
    n = len(radio.windows)
    device.send(10, b"\x02")
    tx_end = radio.sent[-1]["start_ms"] + region.airtime_us(7, 125_000, len(radio.sent[-1]["phy"])) // 1000
    assert radio.windows[n]["at_ms"] - tx_end == 3000 and radio.windows[n + 1]["at_ms"] - tx_end == 4000
    assert _answers(net, radio) == [("RXTimingSetupAns", b"")]


def test_dev_status_and_duty_cycle() -> None:
    radio, net = Radio(), Network()
    device = _device(radio, battery_level=lambda: 200)
    radio.last_snr_db = -5.25
    # DevStatusReq, DutyCycleReq MaxDCycle 10 (1/1024 aggregated).
    _exchange(device, radio, net, b"\x06\x04\x0a")
    device.send(10, b"\x02")
    # Battery 200; Margin -5 dB as a 6-bit two's complement (0x3B) (§5.5).
    assert _answers(net, radio) == [("DevStatusAns", b"\xc8\x3b"), ("DutyCycleAns", b"")]
    # The next uplink waits 1023 x the airtime of the last one in its sub-band.
    last = radio.sent[-1]
    airtime_ms = region.airtime_us(7, 125_000, len(last["phy"])) // 1000 + 1
    device.send(10, b"\x03")
    assert radio.sent[-1]["start_ms"] - (last["start_ms"] + airtime_ms - 1) >= 1023 * airtime_ms - 1


def test_mac_commands_in_fport_0_and_link_check_device_time() -> None:
    radio, net = Radio(), Network()
    device = _device(radio)
    device.mac.request_link_check()
    device.mac.request_device_time()
    device.send(10, b"\x01")
    assert _answers(net, radio) == [("LinkCheckReq", b""), ("DeviceTimeReq", b"")]
    payload = gw_mac.link_check_ans(12, 3) + gw_mac.device_time_ans(1_400_000_000.5)
    down = _exchange(device, radio, net, fport=0, payload=payload)  # encrypted with the NwkSKey
    assert down.fport == 0
    assert device.mac.link_check == (12, 3)
    assert device.mac.device_time == (1_400_000_000, 128)
    device.send(10, b"\x02")
    assert _answers(net, radio) == []  # the requests went out once


def test_confirmed_uplink_retries_until_ack() -> None:
    radio, net = Radio(), Network()
    device = _device(radio)
    start = len(radio.sent)
    # No answer to the first two transmissions; the third's RX1 carries an ACK.
    radio.replies[len(radio.windows) + 4] = net.downlink(ack=True)
    down = device.send(10, b"\x05", confirmed=True)
    tries = radio.sent[start:]
    assert len(tries) == 3 and down is not None and device.last_ack
    assert len({t["phy"] for t in tries}) == 1  # the same frame, same FCnt (1.0.4 §4.3.1.3)
    uplink, _ = net.accept(tries[0]["phy"])
    assert uplink.confirmed and uplink.fcnt == 0
    # RETRANSMIT_TIMEOUT (1..3 s) after RX2 before each repetition.
    for before, after in itertools.pairwise(tries):
        rx2_end = before["start_ms"] + 2000 + 100
        assert after["start_ms"] - rx2_end >= 1000


def test_confirmed_uplink_gives_up_after_bounded_attempts() -> None:
    radio = Radio()
    device = _device(radio, confirmed_attempts=3)
    assert device.send(10, b"\x05", confirmed=True) is None
    assert len(radio.sent) == 3 and not device.last_ack


def test_confirmed_downlink_is_acked_in_next_uplink() -> None:
    radio, net = Radio(), Network()
    device = _device(radio)
    _exchange(device, radio, net, fport=10, payload=b"\x99", confirmed=True)
    device.send(10, b"\x02")
    frame = phy.parse(radio.sent[-1]["phy"])
    assert frame.fctrl.ack  # type: ignore[union-attr]
    device.send(10, b"\x03")
    assert not phy.parse(radio.sent[-1]["phy"]).fctrl.ack  # type: ignore[union-attr]


def test_adr_ack_req_and_backoff() -> None:
    radio, net = Radio(), Network()
    device = _device(radio, adr=True)
    for _ in range(64):
        device.send(10, b"\x01")
    frames = [phy.parse(s["phy"]) for s in radio.sent]
    assert all(f.fctrl.adr and not f.fctrl.adr_ack_req for f in frames)  # type: ignore[union-attr]
    device.send(10, b"\x01")  # ADR_ACK_CNT = 64 = ADR_ACK_LIMIT
    assert phy.parse(radio.sent[-1]["phy"]).fctrl.adr_ack_req  # type: ignore[union-attr]
    for _ in range(32):
        device.send(10, b"\x01")
    # ADR_ACK_DELAY more without a downlink: full power already, so one DR step down (§4.3.1.1).
    assert device.dr == 4
    _exchange(device, radio, net)
    assert device.adr_ack_cnt == 0
    device.send(10, b"\x01")
    assert not phy.parse(radio.sent[-1]["phy"]).fctrl.adr_ack_req  # type: ignore[union-attr]


def test_mac_state_survives_a_reset() -> None:
    radio, net = Radio(), Network()
    storage = MemoryStorage()
    device = _device(radio, storage)
    fopts = bytes((0x05, 0x23)) + (8_695_250).to_bytes(3, "little") + bytes.fromhex("0332030002")
    _exchange(device, radio, net, fopts)
    again = _device(radio, storage)
    assert (again.dr, again.power_dbm, again.rx1_dr_offset, again.rx2_dr, again.mac.nb_trans) == (
        3,
        10,
        2,
        3,
        2,
    )
    assert again.channels_hz == [868_100_000, 868_300_000]
    again.send(10, b"\x02")
    # The sticky RXParamSetupAns is still owed after the reset.
    assert ("RXParamSetupAns", b"\x07") in _answers(net, radio)


def test_volatile_state_carries_duty_cycle_over_deep_sleep() -> None:
    radio = Radio()
    device = _device(radio)
    device.send(10, b"\x01")
    saved = device.volatile_state()
    [wait_ms] = saved["band_wait_ms"].values()
    assert wait_ms > 0
    # A new boot after sleeping half the wait: ticks restart, the band is still busy for the rest.
    radio2 = Radio()
    again = _device(radio2)
    again.restore_volatile(saved, wait_ms // 2)
    again.send(10, b"\x02")
    # ABP: only the three default channels, all in the 868.0-868.6 MHz sub-band.
    assert radio2.sent[0]["start_ms"] - 1_000 >= wait_ms - wait_ms // 2


def test_class_c_listen_returns_first_verified_downlink() -> None:
    radio, net = Radio(), Network()
    device = _device(radio)
    device.send(10, b"\x01")
    other = phy.build_data_frame(
        crypto.SessionKeys(bytes(16), bytes(16)),
        mtype=MType.UNCONFIRMED_DATA_DOWN,
        dev_addr=bytes.fromhex("26011f2b"),
        fcnt32=0,
        fport=20,
        payload=b"\x02\x28",
    )
    mine = net.downlink(fport=20, payload=b"\x02\x28")
    radio.air = [other, b"\x00junk", mine]
    down = device.listen_class_c(60_000)
    assert down is not None and (down.fport, down.payload) == (20, b"\x02\x28")
    listens = [w for w in radio.windows if w.get("class_c")]
    assert len(listens) == 3 and {(w["freq_hz"], w["sf"]) for w in listens} == {(869_525_000, 12)}
    # A replay of the same frame is not accepted; the deadline ends the call.
    radio.air = [mine]
    assert device.listen_class_c(1_000) is None
    # Class C downlinks do not end the sticky answers (only class A ones do, §5.4).
    radio.air = [net.downlink(fopts=bytes((0x05, 0x00)) + (8_695_250).to_bytes(3, "little"))]
    assert device.listen_class_c(1_000) is not None
    radio.air = [net.downlink()]
    device.listen_class_c(1_000)
    device.send(10, b"\x02")
    assert _answers(net, radio) == [("RXParamSetupAns", b"\x07")]
