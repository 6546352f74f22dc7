"""Downlinks: class A windows, class C, queue, ACK, FPending, FCntDown persistence, MAC answers.

The device side is simulated with ``phy`` and ``crypto`` only: every downlink is
parsed, MIC-checked with the downlink B0 (Dir = 1, LoRaWAN 1.0.4 §4.4) and
decrypted, as a device would. Timings: LoRaWAN 1.0.4 / RP002 EU868 (RECEIVE_DELAY1
1 s, RX2 869.525 MHz); MAC payloads: LoRaWAN 1.0.4 §5.2 (LinkCheckAns), §5.9
(DeviceTimeAns).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from gateway import db
from gateway.config import LorawanSection
from gateway.errors import DownlinkQueueFull, GatewayError
from gateway.lorawan import mac, phy
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.downlink import MAX_QUEUE, DownlinkScheduler
from gateway.lorawan.sessions import Session, SessionTable, load_sessions
from gateway.messages import AesKey, DevAddr, DevEui, MType, RadioFrame, RxInfo, UplinkData
from gateway.provisioning import registry

NWK = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
APP = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
ADDR = bytes.fromhex("26011001")
EUI = DevEui.from_hex("70b3d57ed0001234")
TMST = 1_000_000
RX = RxInfo(868_500_000, -101.0, 2.5, 9, 125_000, "4/5", True, "test", "aa555a0000000001", TMST)
KEYS = SessionKeys(NWK, APP)


def make(section: LorawanSection | None = None, fcnt_down: int = 0) -> tuple[DownlinkScheduler, SessionTable]:
    session = Session(EUI, DevAddr(ADDR), "p/m", "abcd0123", KEYS, 10, fcnt_down)
    sessions = SessionTable([session])
    return DownlinkScheduler(section or LorawanSection(), sessions), sessions


def up(
    *,
    confirmed: bool = False,
    fopts: bytes = b"",
    fport: int | None = 85,
    payload: bytes = b"\x01",
    ack: bool = False,
    rx: RxInfo = RX,
    fcnt: int = 11,
    tag: str = "abcd0123",
    adr_ack_req: bool = False,
) -> UplinkData:
    mtype = MType.CONFIRMED_DATA_UP if confirmed else MType.UNCONFIRMED_DATA_UP
    raw = phy.build_data_frame(
        KEYS,
        mtype=mtype,
        dev_addr=ADDR,
        fcnt32=fcnt,
        fport=fport,
        payload=payload if fport is not None else b"",
        fopts=fopts,
        ack=ack,
        adr=adr_ack_req,
        adr_ack_req=adr_ack_req,
    )
    frame = RadioFrame(raw, rx, 1_700_000_000.5, time.monotonic())
    plain = payload if fport is not None else b""
    return UplinkData(EUI, DevAddr(ADDR), tag, "p/m", fcnt, fport, plain, confirmed, frame)


def device_reads(frame: bytes, fcnt_down: int) -> tuple[phy.DataFrame, bytes]:
    parsed = phy.parse(frame)
    assert isinstance(parsed, phy.DataFrame) and not parsed.uplink
    assert parsed.fcnt16 == fcnt_down & 0xFFFF
    assert KEYS.data_mic(parsed.mic_input, ADDR, fcnt_down, False) == parsed.mic
    plain = b""
    if parsed.fport is not None:
        plain = KEYS.crypt_frm_payload(parsed.frm_payload, ADDR, fcnt_down, False, parsed.fport)
    return parsed, plain


def test_nothing_to_send_after_an_unconfirmed_uplink() -> None:
    scheduler, _ = make()
    assert scheduler.on_uplink(up()) is None


def test_uplink_of_a_replaced_session_gets_nothing() -> None:
    scheduler, _ = make()
    assert scheduler.on_uplink(up(confirmed=True, tag="00000000")) is None


def test_confirmed_uplink_gets_an_empty_ack_in_rx1_and_rx2() -> None:
    scheduler, sessions = make(fcnt_down=7)
    plan = scheduler.on_uplink(up(confirmed=True))
    assert plan is not None and plan.fcnt_down == 7
    parsed, plain = device_reads(plan.phy_payload, 7)
    assert parsed.mtype is MType.UNCONFIRMED_DATA_DOWN and parsed.fctrl.ack and not parsed.fctrl.fpending
    assert parsed.fport is None and plain == b"" and parsed.fopts == b""
    rx1, rx2 = plan.rx1, plan.rx2
    assert rx1 is not None and rx2 is not None
    # RX1: uplink channel, DR3 (SF9) minus offset 0, RECEIVE_DELAY1 = 1 s after the uplink's timestamp.
    assert (rx1.freq_hz, rx1.sf, rx1.send_at_tmst_us) == (868_500_000, 9, TMST + 1_000_000)
    # RX2: 869.525 MHz DR0 (SF12), one second later.
    assert (rx2.freq_hz, rx2.sf, rx2.send_at_tmst_us) == (869_525_000, 12, TMST + 2_000_000)
    assert rx1.gateway_eui == "aa555a0000000001" and plan.requests == (rx1, rx2)
    session = sessions.by_dev_eui(EUI)
    assert session is not None and session.fcnt_down == 8


def test_configured_rx_parameters() -> None:
    section = LorawanSection(rx1_dr_offset=2, rx2_dr=3, rx2_freq_hz=869_525_000, rx_delay_s=5)
    scheduler, _ = make(section)
    rx_sf7 = RxInfo(868_100_000, -60.0, 9.0, 7, 125_000, "4/5", True, "test", None, 2**32 - 1_000)
    plan = scheduler.on_uplink(up(confirmed=True, rx=rx_sf7))
    assert plan is not None and plan.rx1 is not None and plan.rx2 is not None
    assert plan.rx1.sf == 9  # DR5 - 2 = DR3
    assert plan.rx1.send_at_tmst_us == (2**32 - 1_000 + 5_000_000) % 2**32  # the counter wraps
    assert (plan.rx2.sf, plan.rx2.send_at_tmst_us) == (9, (2**32 - 1_000 + 6_000_000) % 2**32)


def test_queue_fpending_and_counters() -> None:
    scheduler, _ = make()
    scheduler.enqueue(EUI, 10, b"first")
    scheduler.enqueue(EUI, 11, b"second", confirmed=True)
    plan = scheduler.on_uplink(up())
    assert plan is not None
    parsed, plain = device_reads(plan.phy_payload, 0)
    assert (parsed.fport, plain, parsed.fctrl.fpending, parsed.fctrl.ack) == (10, b"first", True, False)
    plan = scheduler.on_uplink(up(confirmed=True, fcnt=12))
    assert plan is not None
    parsed, plain = device_reads(plan.phy_payload, 1)
    assert parsed.mtype is MType.CONFIRMED_DATA_DOWN
    assert (parsed.fport, plain, parsed.fctrl.fpending, parsed.fctrl.ack) == (11, b"second", False, True)
    assert scheduler.queued(EUI) == 0
    # The device acknowledges the confirmed downlink in its next uplink.
    assert scheduler.on_uplink(up(ack=True, fcnt=13)) is None
    assert scheduler.counters["confirmed_acked"] == 1


def test_queue_limits() -> None:
    scheduler, _ = make()
    with pytest.raises(ValueError):
        scheduler.enqueue(EUI, 0, b"x")  # FPort 0 is for MAC commands
    for _ in range(16):
        scheduler.enqueue(EUI, 1, b"x")
    with pytest.raises(DownlinkQueueFull):
        scheduler.enqueue(EUI, 1, b"x")


def test_a_full_queue_raises_the_typed_error_and_a_bad_fport_does_not() -> None:
    """A full queue is a state of the gateway (``DownlinkQueueFull``, a ``GatewayError``), a bad
    FPort a caller's mistake (a plain ``ValueError``): callers can tell them apart."""
    scheduler, _ = make()
    with pytest.raises(ValueError) as bad_port:
        scheduler.enqueue(EUI, 224, b"x")
    assert not isinstance(bad_port.value, DownlinkQueueFull)
    for _ in range(MAX_QUEUE):
        scheduler.enqueue(EUI, 1, b"x")
    with pytest.raises(DownlinkQueueFull, match="full") as full:
        scheduler.enqueue(EUI, 1, b"y")
    assert isinstance(full.value, GatewayError)
    assert full.value.limit == MAX_QUEUE
    assert scheduler.queued(EUI) == MAX_QUEUE


def test_too_large_payload_waits_for_a_faster_data_rate_and_impossible_ones_are_dropped() -> None:
    scheduler, _ = make()
    scheduler.enqueue(EUI, 1, bytes(100))  # > 51 bytes: not at SF9 (DR3 fits 115) with RX2 at DR0 (51)
    assert scheduler.on_uplink(up()) is None and scheduler.queued(EUI) == 1
    scheduler2, _ = make(LorawanSection(rx2_dr=5))
    scheduler2.enqueue(EUI, 1, bytes(230))  # beyond any EU868 data rate
    assert scheduler2.on_uplink(up()) is None and scheduler2.queued(EUI) == 0
    assert scheduler2.counters["dropped_too_large"] == 1


def test_link_check_and_device_time_answers_in_fopts() -> None:
    scheduler, _ = make()
    plan = scheduler.on_uplink(up(fopts=bytes([0x02, 0x0D])), gw_count=3)
    assert plan is not None
    parsed, _ = device_reads(plan.phy_payload, 0)
    commands, rest = mac.parse_commands(parsed.fopts, uplink=False)
    assert rest == b"" and [c.name for c in commands] == ["LinkCheckAns", "DeviceTimeAns"]
    # Margin: SNR 2.5 dB above the SF9 floor of -12.5 dB = 15 dB; GwCnt 3.
    assert commands[0].payload == bytes((15, 3))
    # DeviceTimeAns: GPS seconds of the uplink time (Unix 1700000000.5 → GPS 1384035218.5), fraction 128/256.
    gps = 1_700_000_000 - 315_964_800 + 18
    assert commands[1].payload == gps.to_bytes(4, "little") + bytes((128,))
    assert scheduler.counters["mac.LinkCheckReq"] == 1 and scheduler.counters["mac.DeviceTimeReq"] == 1


def test_mac_commands_on_fport_0_and_other_commands_are_only_counted() -> None:
    scheduler, _ = make()
    plan = scheduler.on_uplink(
        up(fport=0, payload=bytes([0x06, 0xFE, 0x07, 0x02]))
    )  # DevStatusAns, LinkCheckReq
    assert plan is not None
    parsed, _ = device_reads(plan.phy_payload, 0)
    assert parsed.fopts[:1] == b"\x02"
    assert scheduler.counters["mac.DevStatusAns"] == 1
    assert scheduler.on_uplink(up(fopts=bytes([0x03, 0x07]))) is None  # LinkADRAns: nothing to answer
    assert scheduler.on_uplink(up(fopts=bytes([0x80, 0x01]))) is None  # proprietary: unreadable, counted
    assert scheduler.counters["mac.unreadable"] == 1


def test_device_time_is_not_answered_with_an_unsynchronised_clock() -> None:
    session = Session(EUI, DevAddr(ADDR), "p/m", "abcd0123", KEYS, 10)
    scheduler = DownlinkScheduler(LorawanSection(), SessionTable([session]), clock_synced=lambda: False)
    assert scheduler.on_uplink(up(fopts=bytes([0x0D]))) is None
    assert scheduler.counters["mac.device_time_unsynced"] == 1


def test_no_class_a_timing_without_a_concentrator_timestamp() -> None:
    scheduler, _ = make()
    rx = RxInfo(868_100_000, -80.0, 7.0, 7, 125_000, "4/5", True, "test")
    assert scheduler.on_uplink(up(confirmed=True, rx=rx)) is None
    assert scheduler.counters["no_timing"] == 1


def test_class_c_sends_at_once_on_rx2() -> None:
    scheduler, _ = make(LorawanSection(rx2_dr=3))
    scheduler.enqueue(EUI, 50, b"\x01\x00")
    assert scheduler.class_c_ready() == []  # class A device: waits for an uplink
    scheduler.set_class_c(EUI)
    scheduler.enqueue(EUI, 50, b"\x02")
    (first,) = scheduler.class_c_ready("aa555a0000000001")
    assert (first.freq_hz, first.sf, first.send_at_tmst_us, first.gateway_eui) == (
        869_525_000,
        9,
        None,
        "aa555a0000000001",
    )
    parsed, plain = device_reads(first.phy_payload, 0)
    assert (plain, parsed.fctrl.fpending) == (b"\x01\x00", True)
    (second,) = scheduler.class_c_ready()
    assert device_reads(second.phy_payload, 1)[1] == b"\x02"
    assert scheduler.class_c_ready() == []


def test_class_c_goes_through_the_forwarder_that_heard_the_device_last() -> None:
    # Not through whichever forwarder pulled last: anyone who reaches the UDP port can send a
    # PULL_DATA with an EUI of its own (issue 16, second review).
    scheduler, _ = make(LorawanSection(rx2_dr=3))
    scheduler.set_class_c(EUI)
    heard = RxInfo(868_100_000, -80.0, 7.0, 7, 125_000, "4/5", True, "t", "b827ebfffe000001", 5_000_000)
    scheduler.on_uplink(up(rx=heard))
    scheduler.enqueue(EUI, 50, b"\x03")
    (request,) = scheduler.class_c_ready()
    assert request.gateway_eui == "b827ebfffe000001"


def test_downlink_counter_is_persisted_and_reloaded(tmp_path: Path) -> None:
    conn: sqlite3.Connection = db.connect(tmp_path / "edgegw.sqlite")
    registry.add_device(
        conn, dev_eui=EUI, profile="p/m", keys=registry.AbpKeys(DevAddr(ADDR), AesKey(NWK), AesKey(APP))
    )
    sessions = SessionTable(load_sessions(conn))
    scheduler = DownlinkScheduler(LorawanSection(), sessions)
    tag = sessions.by_dev_eui(EUI).session_tag  # type: ignore[union-attr]
    for n in range(3):
        assert scheduler.on_uplink(up(confirmed=True, fcnt=n, tag=tag)) is not None
    taken = scheduler.take()
    assert taken is not None and scheduler.take() is None
    conn.execute("BEGIN")
    scheduler.write(conn, taken)
    conn.execute("COMMIT")
    (reloaded,) = load_sessions(conn)
    assert reloaded.fcnt_down == 3
    # A merge with an older read keeps the higher in-memory counter.
    sessions.merge([Session(EUI, DevAddr(ADDR), "p/m", tag, KEYS, None, 1)])
    assert sessions.by_dev_eui(EUI).fcnt_down == 3  # type: ignore[union-attr]


def test_a_superseding_downlink_replaces_what_is_queued_on_its_fport_and_a_full_queue_refuses() -> None:
    """A totem's newer display replaces the older one still queued (the rules send one every few
    minutes; a class A totem takes one per uplink); other FPorts stay; past MAX_QUEUE, DownlinkQueueFull
    (the pipeline counts it as rules.command_queue_full and drops the command)."""
    scheduler, _sessions = make()
    for n in range(MAX_QUEUE + 5):
        scheduler.enqueue(EUI, 20, bytes([n]), supersede=True)
    scheduler.enqueue(EUI, 30, b"\x01")
    assert scheduler.queued(EUI) == 2
    for n in range(MAX_QUEUE - 2):
        scheduler.enqueue(EUI, 30, bytes([n]))
    with pytest.raises(DownlinkQueueFull, match="full"):
        scheduler.enqueue(EUI, 30, b"\x02")


class _AskingPeer:
    """A MAC feature as the scheduler sees one: asks for DevStatus (CID 0x06, §5.5) and notes answers."""

    def __init__(self, ask: bytes) -> None:
        self.ask = ask
        self.answers: list[mac.MacCommand] = []
        self.rooms: list[int] = []

    def answer(self, up: UplinkData, command: mac.MacCommand) -> None:
        self.answers.append(command)

    def requests(self, up: UplinkData, room_bytes: int) -> bytes:
        self.rooms.append(room_bytes)
        return self.ask


def test_peers_read_the_answers_the_scheduler_does_not_give_and_their_requests_ride_in_fopts() -> None:
    session = Session(EUI, DevAddr(ADDR), "p/m", "abcd0123", KEYS, 10, 0)
    peer = _AskingPeer(b"\x06")
    too_big = _AskingPeer(bytes(13))  # does not fit after LinkCheckAns (3) + DevStatusReq (1)
    scheduler = DownlinkScheduler(LorawanSection(), SessionTable([session]), peers=[peer, too_big])
    # LinkCheckReq (answered by the scheduler) + DevStatusAns battery 200, margin 7 (for the peers).
    plan = scheduler.on_uplink(up(fopts=b"\x02\x06\xc8\x07"))
    assert plan is not None
    parsed, _ = device_reads(plan.phy_payload, 0)
    commands, unread = mac.parse_commands(parsed.fopts, uplink=False)
    assert [c.name for c in commands] == ["LinkCheckAns", "DevStatusReq"] and unread == b""
    assert [(c.name, c.payload) for c in peer.answers] == [("DevStatusAns", b"\xc8\x07")]
    assert too_big.rooms == [15 - 3 - 1]
    assert scheduler.counters["mac.requests_deferred"] == 1


def test_an_adr_ack_req_is_answered_by_a_downlink_even_with_nothing_to_say() -> None:
    scheduler, _ = make()
    assert scheduler.on_uplink(up()) is None
    plan = scheduler.on_uplink(up(fcnt=12, adr_ack_req=True))
    assert plan is not None and plan.rx1 is not None
    parsed, plain = device_reads(plan.phy_payload, 0)
    assert parsed.fport is None and plain == b"" and parsed.fopts == b""
    assert scheduler.counters["adr_ack_req"] == 1
