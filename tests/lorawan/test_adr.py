"""Network-side ADR: the decision, LinkADRReq/Ans bytes, the per-device peer and its durable state.

The expected values are written from the specifications, not read from the code:

* the decision is Semtech's recommended algorithm (as ChirpStack's ``adr/default.rs``): margin =
  max SNR of the history - required SNR of the current DR - installation margin; steps =
  int(margin / 3), truncated toward zero (Semtech: NStep = int(SNRmargin / 3)); each positive
  step raises the DR up to the maximum, then lowers the power
  (raises the TXPower index); negative steps raise the power back towards index 0, never lower
  the DR; NbTrans from the loss ratio (<5 % one less, 5-10 % same, 10-30 % one more, >30 % two
  more; 1..3). Required SNR per spreading factor: SX1276 datasheet (SF7 -7.5 dB ... SF12 -20 dB);
* LinkADRReq and LinkADRAns: LoRaWAN 1.0.4 §5.3 (the byte layout is restated in each test);
* the EU868 channel mask: RP002-1.0.3 §2.4 (3 default channels, then the CFList ones).

npm ``lora-packet`` (0.9.3, the version pinned in package.json) does not decode MAC commands: it
checks here only that a downlink carrying a LinkADRReq in FOpts is a well-formed frame whose FOpts
are exactly those bytes, with a valid MIC.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from gateway import db
from gateway.app import registry as app_registry
from gateway.cli import device_views, views_cmd
from gateway.config import LorawanSection
from gateway.lorawan import mac, phy
from gateway.lorawan.adr import (
    AdrPeer,
    AdrSettings,
    LinkSettings,
    channel_mask,
    decide,
    link_adr_req,
    lost_ratio,
    parse_link_adr_ans,
)
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.downlink import DownlinkScheduler
from gateway.lorawan.sessions import Session, SessionTable
from gateway.messages import AesKey, DevAddr, DevEui, MType, RadioFrame, RxInfo, UplinkData
from gateway.provisioning import csv_import, registry
from tests.lorawan.test_differential import _oracle

NWK = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
APP = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
ADDR = bytes.fromhex("26011001")
EUI = DevEui.from_hex("70b3d57ed0001234")
KEYS = SessionKeys(NWK, APP)
TAG = "abcd0123"


# --- decide: worked numbers ------------------------------------------------------------------------


def test_sf12_at_plus_5_db_goes_to_dr5_in_one_decision() -> None:
    # SF12 (DR0) requires -20 dB; +5 dB - (-20) - 10 = 15 dB of margin = 5 steps: DR0 -> DR5.
    assert decide([5.0] * 20, LinkSettings(0, 0, 1), lost_ratio=0.0) == LinkSettings(5, 0, 1)


def test_steps_beyond_dr5_lower_the_power() -> None:
    # +11 dB at SF12: 11 + 20 - 10 = 21 dB = 7 steps: 5 to reach DR5, 2 more TXPower indexes (16 -> 12 dBm).
    assert decide([11.0], LinkSettings(0, 0, 1), lost_ratio=0.0) == LinkSettings(5, 2, 1)
    # The maximum SNR of the history counts, not the last one or the mean.
    assert decide([-3.0, 11.0, 0.0], LinkSettings(0, 0, 1), lost_ratio=0.0) == LinkSettings(5, 2, 1)


def test_power_stops_at_the_lowest_allowed_index() -> None:
    # SF7 (DR5) requires -7.5 dB; +30 dB: 30 + 7.5 - 10 = 27.5 dB = 9 steps, index 0 -> 7 at most.
    assert decide([30.0], LinkSettings(5, 0, 1), lost_ratio=0.0) == LinkSettings(5, 7, 1)
    assert decide([30.0], LinkSettings(5, 0, 1), lost_ratio=0.0, settings=AdrSettings(max_tx_power=4)) == (
        LinkSettings(5, 4, 1)
    )


def test_a_lower_max_dr_turns_the_extra_steps_into_power() -> None:
    # 15 dB = 5 steps with DR3 the highest: 3 steps of DR, then 2 of power.
    assert decide([5.0], LinkSettings(0, 0, 1), lost_ratio=0.0, settings=AdrSettings(max_dr=3)) == (
        LinkSettings(3, 2, 1)
    )


def test_margin_below_a_step_changes_nothing() -> None:
    # SF9 (DR3) requires -12.5 dB; -0.5 dB: -0.5 + 12.5 - 10 = 2 dB = int(0.67) = 0 steps.
    assert decide([-0.5], LinkSettings(3, 1, 1), lost_ratio=0.0) == LinkSettings(3, 1, 1)


def test_negative_steps_raise_the_power_and_never_lower_the_dr() -> None:
    # Semtech's recommended algorithm: NStep = int(SNRmargin / 3), truncated toward zero.
    # DR5 at index 3, -5 dB: -5 + 7.5 - 10 = -7.5 dB = int(-2.5) = -2 steps: index 3 -> 1.
    assert decide([-5.0], LinkSettings(5, 3, 1), lost_ratio=0.0) == LinkSettings(5, 1, 1)
    # -9.5 dB of margin = int(-3.17) = -3 steps: index 3 -> 0.
    assert decide([-7.0], LinkSettings(5, 3, 1), lost_ratio=0.0) == LinkSettings(5, 0, 1)
    # -20 dB at DR5 and full power already: nothing left to raise, the DR stays.
    assert decide([-20.0], LinkSettings(5, 0, 1), lost_ratio=0.0) == LinkSettings(5, 0, 1)


def test_a_margin_within_one_step_either_way_changes_nothing() -> None:
    # -0.5 dB and -2.9 dB of margin are int(-0.17) = int(-0.97) = 0 steps: the power stays (a
    # floor() would raise it here and lower it again at +3 dB: a device going up and down for ever).
    assert decide([2.0], LinkSettings(5, 2, 1), lost_ratio=0.0) == LinkSettings(5, 2, 1)
    assert decide([-0.4], LinkSettings(5, 2, 1), lost_ratio=0.0) == LinkSettings(5, 2, 1)
    # -3.5 dB is one step back: 12 -> 14 dBm.
    assert decide([-1.0], LinkSettings(5, 2, 1), lost_ratio=0.0) == LinkSettings(5, 1, 1)


def test_the_installation_margin_is_configurable() -> None:
    # 5 dB installation margin at SF12, +5 dB: 5 + 20 - 5 = 20 dB = 6 steps: DR5 and one power step.
    settings = AdrSettings(installation_margin_db=5.0)
    assert decide([5.0], LinkSettings(0, 0, 1), lost_ratio=0.0, settings=settings) == LinkSettings(5, 1, 1)


@pytest.mark.parametrize(
    ("current", "loss", "expected"),
    [
        (1, 0.0, 1), (2, 0.04, 1), (3, 0.0, 2),  # < 5 %: one less, at least 1
        (1, 0.05, 1), (2, 0.09, 2), (3, 0.07, 3),  # 5-10 %: the same
        (1, 0.10, 2), (2, 0.2, 3), (3, 0.29, 3),  # 10-30 %: one more, at most 3
        (1, 0.30, 3), (2, 0.5, 3), (3, 0.9, 3),  # > 30 %: two more, at most 3
    ],
)  # fmt: skip
def test_nb_trans_follows_the_loss_ratio(current: int, loss: float, expected: int) -> None:
    # At DR5, full power, +2.5 dB: 2.5 + 7.5 - 10 = 0 dB, no step: only NbTrans may change.
    assert decide([2.5], LinkSettings(5, 0, current), lost_ratio=loss) == LinkSettings(5, 0, expected)


def test_loss_ratio_from_the_fcnt_gaps() -> None:
    assert lost_ratio([10, 11, 12, 13]) == 0.0
    # 10..19 is 10 uplinks, 8 received: 20 % lost.
    assert lost_ratio([10, 11, 13, 14, 15, 16, 18, 19]) == pytest.approx(0.2)
    assert lost_ratio([7]) == 0.0


# --- LinkADRReq / LinkADRAns: LoRaWAN 1.0.4 §5.3 ---------------------------------------------------


def test_link_adr_req_bytes() -> None:
    # CID 0x03; DataRate_TXPower: DataRate bits 7..4, TXPower bits 3..0; ChMask 2 bytes little-endian
    # (bit n = channel n); Redundancy: RFU bit 7, ChMaskCntl bits 6..4 (0: ChMask is channels 0..15),
    # NbTrans bits 3..0.
    assert link_adr_req(LinkSettings(5, 2, 1), 0x00FF) == bytes([0x03, 0b0101_0010, 0xFF, 0x00, 0b0_000_0001])
    assert link_adr_req(LinkSettings(3, 7, 3), 0x0107) == bytes([0x03, 0b0011_0111, 0x07, 0x01, 0b0_000_0011])


def test_channel_mask_is_the_default_channels_and_the_cflist() -> None:
    # EU868: 868.1, 868.3, 868.5 MHz are channels 0..2; CFList frequencies are channels 3..7.
    assert channel_mask(()) == 0b0000_0111
    assert channel_mask((867_100_000, 867_300_000)) == 0b0001_1111
    assert channel_mask(LorawanSection().cflist) == 0b1111_1111  # the default config: 5 CFList channels


def test_link_adr_ans_status_bits() -> None:
    # Status: RFU bits 7..3, Power ACK bit 2, Data rate ACK bit 1, Channel mask ACK bit 0.
    everything = parse_link_adr_ans(bytes([0b111]))
    assert everything.accepted
    no_mask = parse_link_adr_ans(bytes([0b110]))
    assert (no_mask.power_ack, no_mask.dr_ack, no_mask.ch_mask_ack, no_mask.accepted) == (
        True,
        True,
        False,
        False,
    )
    no_power = parse_link_adr_ans(bytes([0b011]))
    assert (no_power.power_ack, no_power.accepted) == (False, False)
    with pytest.raises(ValueError):
        parse_link_adr_ans(b"")


# --- AdrPeer ---------------------------------------------------------------------------------------


def uplink(
    fcnt: int, snr_db: float = 5.0, *, sf: int = 12, adr: bool = True, fopts: bytes = b"", tag: str = TAG
) -> UplinkData:
    raw = phy.build_data_frame(
        KEYS, mtype=MType.UNCONFIRMED_DATA_UP, dev_addr=ADDR, fcnt32=fcnt, fport=85, payload=b"\x01",
        fopts=fopts, adr=adr,
    )  # fmt: skip
    rx = RxInfo(868_100_000, -80.0, snr_db, sf, 125_000, "4/5", True, "test", "aa555a0000000001", 1_000_000)
    frame = RadioFrame(raw, rx, 1_700_000_000.0 + fcnt, time.monotonic())
    return UplinkData(EUI, DevAddr(ADDR), tag, "p/m", fcnt, 85, b"\x01", False, frame)


def feed(peer: AdrPeer, fcnts: range, **kwargs: object) -> list[bytes]:
    """Each uplink as the scheduler gives it: its MAC answers first, then the request asked."""
    asked = []
    for fcnt in fcnts:
        up = uplink(fcnt, **kwargs)  # type: ignore[arg-type]
        commands, _ = mac.parse_commands(
            up.frame.phy_payload[8 : 8 + (up.frame.phy_payload[5] & 0x0F)], uplink=True
        )
        for command in commands:
            peer.answer(up, command)
        asked.append(peer.requests(up, 15))
    return asked


DR5_ALL_CHANNELS = bytes([0x03, 0x50, 0xFF, 0x00, 0x01])
"""LinkADRReq DR5, TXPower 0, ChMask channels 0..7, ChMaskCntl 0, NbTrans 1."""


def test_the_request_comes_after_a_full_history_of_adr_uplinks() -> None:
    peer = AdrPeer(cflist_hz=LorawanSection().cflist)
    asked = feed(peer, range(1, 21))
    assert asked[:19] == [b""] * 19
    assert asked[19] == DR5_ALL_CHANNELS
    assert peer.link(str(EUI)) == {"dr": 0, "tx_power_dbm": 16, "link_margin_db": 25.0}


def test_no_request_without_the_adr_bit_or_when_opted_out_or_disabled() -> None:
    assert set(feed(AdrPeer(), range(1, 41), adr=False)) == {b""}
    opted_out = AdrPeer()
    opted_out.set_opted_out([str(EUI)])
    assert set(feed(opted_out, range(1, 41))) == {b""}
    assert opted_out.link(str(EUI))["link_margin_db"] == 25.0  # still measured for the views
    assert set(feed(AdrPeer(enabled=False), range(1, 41))) == {b""}


def test_an_unanswered_request_is_sent_again_after_a_few_uplinks() -> None:
    peer = AdrPeer(cflist_hz=LorawanSection().cflist)
    feed(peer, range(1, 21))
    assert feed(peer, range(21, 24)) == [b"", b"", DR5_ALL_CHANNELS]
    assert peer.counters["adr.asked_again"] == 1


def test_an_accepted_request_becomes_the_device_settings_and_is_kept_durably(tmp_path: Path) -> None:
    conn = db.connect(db.db_path(tmp_path))
    registry.add_device(
        conn, dev_eui=EUI, profile="p/m",
        keys=registry.AbpKeys(DevAddr(ADDR), AesKey(NWK), AesKey(APP)),
    )  # fmt: skip
    (tag,) = conn.execute("SELECT session_tag FROM sessions").fetchone()
    peer = AdrPeer(AdrSettings(installation_margin_db=10.0))
    feed(peer, range(1, 20), snr_db=11.0, tag=tag)
    wanted = feed(peer, range(20, 21), snr_db=11.0, tag=tag)[0]
    # 11 + 20 - 10 = 21 dB = 7 steps: DR5 and TXPower 2 (12 dBm); no CFList: ChMask 0x0007.
    assert wanted == bytes([0x03, 0x52, 0x07, 0x00, 0x01])
    # The device applies it: its next uplink is at SF7 with LinkADRAns, every bit ACK, in FOpts.
    assert feed(peer, range(21, 22), snr_db=7.0, sf=7, fopts=bytes([0x03, 0x07]), tag=tag) == [b""]
    assert peer.counters["adr.accepted"] == 1
    # +7 dB at SF7: 14.5 dB above the -7.5 dB floor.
    assert peer.link(str(EUI)) == {"dr": 5, "tx_power_dbm": 12, "link_margin_db": 14.5}
    taken = peer.take()
    assert taken is not None
    with db.transaction(conn):
        peer.write(conn, taken)
    peer.committed(taken)
    restored = AdrPeer()
    restored.restore(conn)
    assert restored.link(str(EUI)) == {"dr": 5, "tx_power_dbm": 12, "link_margin_db": 14.5}
    # A new session (a join): the row of the old one is ignored, and never written over the new one.
    conn.execute("UPDATE sessions SET session_tag = 'feedf00d'")
    fresh = AdrPeer()
    fresh.restore(conn)
    assert fresh.link(str(EUI)) == {}
    feed(peer, range(22, 27), tag=tag)  # 5 uplinks: the history is due to be written again
    later = peer.take()
    assert later is not None
    with db.transaction(conn):
        peer.write(conn, later)
    assert conn.execute("SELECT session_tag FROM adr_state").fetchall() == [(tag,)]  # the old row, unchanged
    conn.close()


def test_a_new_session_starts_again_from_the_defaults() -> None:
    peer = AdrPeer()
    feed(peer, range(1, 21))
    feed(peer, range(21, 22), sf=7, fopts=bytes([0x03, 0x07]))
    assert peer.link(str(EUI))["dr"] == 5
    feed(peer, range(0, 1), sf=10, tag="0badcafe")
    assert peer.link(str(EUI)) == {"dr": 2, "tx_power_dbm": 16, "link_margin_db": 20.0}
    peer.forget(str(EUI))  # removed from the registry: nothing kept, nothing left to write
    assert peer.link(str(EUI)) == {} and peer.take() is None


def test_a_refused_request_is_counted_logged_once_and_not_asked_again_until_the_uplinks_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    peer = AdrPeer(cflist_hz=LorawanSection().cflist)
    feed(peer, range(1, 21))
    with caplog.at_level(logging.WARNING, logger="gateway.lorawan.adr"):
        # Data rate NACK (bit 1 clear): the device keeps its settings.
        assert feed(peer, range(21, 22), fopts=bytes([0x03, 0b101])) == [b""]
        assert set(feed(peer, range(22, 60))) == {b""}  # the same uplinks: the same decision, not asked
    assert peer.counters["adr.refused"] == 1
    assert len([r for r in caplog.records if "refused LinkADRReq" in r.message]) == 1
    assert peer.link(str(EUI))["dr"] == 0
    # The link got worse (+2 dB: 12 dB of margin = 4 steps): another decision, asked.
    asked = feed(peer, range(60, 80), snr_db=2.0)
    assert asked[-1] == bytes([0x03, 0x40, 0xFF, 0x00, 0x01])


def test_a_device_refusing_only_the_channel_mask_is_asked_again_with_the_default_channels() -> None:
    # §5.3: Channel mask ACK 0 when the mask enables a channel the device has not defined (an ABP
    # device that never got the CFList); its power and data rate ACKs say the rest was acceptable.
    peer = AdrPeer(cflist_hz=LorawanSection().cflist)
    feed(peer, range(1, 21))
    assert feed(peer, range(21, 22), fopts=bytes([0x03, 0b110])) == [bytes([0x03, 0x50, 0x07, 0x00, 0x01])]
    assert peer.counters["adr.default_channels"] == 1 and peer.counters["adr.refused"] == 0
    # Refused again with the 3 default channels: a refusal like any other.
    assert feed(peer, range(22, 23), fopts=bytes([0x03, 0b110])) == [b""]
    assert set(feed(peer, range(23, 40))) == {b""}
    assert peer.counters["adr.refused"] == 1 and peer.counters["adr.default_channels"] == 1


def test_an_answer_nobody_asked_for_is_ignored() -> None:
    peer = AdrPeer()
    feed(peer, range(1, 3), fopts=bytes([0x03, 0x07]))
    assert peer.counters["adr.unasked_answer"] == 2
    assert peer.link(str(EUI))["dr"] == 0


def test_the_request_rides_in_the_downlink_fopts_a_device_can_read() -> None:
    peer = AdrPeer(cflist_hz=LorawanSection().cflist)
    feed(peer, range(1, 20))
    session = Session(EUI, DevAddr(ADDR), "p/m", TAG, KEYS, 19, 0)
    scheduler = DownlinkScheduler(LorawanSection(), SessionTable([session]), peers=[peer])
    plan = scheduler.on_uplink(uplink(20))
    assert plan is not None and plan.rx1 is not None
    down = phy.parse(plan.phy_payload)
    assert isinstance(down, phy.DataFrame) and not down.uplink
    assert KEYS.data_mic(down.mic_input, ADDR, 0, False) == down.mic
    assert down.fopts == DR5_ALL_CHANNELS
    commands, unread = mac.parse_commands(down.fopts, uplink=False)
    assert [(c.name, c.payload) for c in commands] == [("LinkADRReq", bytes([0x50, 0xFF, 0x00, 0x01]))]
    assert unread == b""
    # npm lora-packet (an implementation we did not write) reads the same frame and FOpts.
    (got,) = _oracle(
        [
            {
                "kind": "data_parse",
                "phy": plan.phy_payload.hex(),
                "nwk": NWK.hex(),
                "app": APP.hex(),
                "fcnt32": 0,
            }
        ]
    )
    assert got.get("error") is None, got
    assert got["fopts"] == DR5_ALL_CHANNELS.hex() and got["mic_ok"] is True
    assert got["dir"] == "down" and got["fcnt16"] == 0


# --- the registry's opt-out, and the views ---------------------------------------------------------


def test_the_opt_out_goes_from_a_csv_import_to_the_agent_snapshot(tmp_path: Path) -> None:
    conn = db.connect(db.db_path(tmp_path))
    header = "dev_eui,profile,activation,dev_addr,nwk_s_key,app_s_key,adr\n"
    lines = [f"70b3d57ed00000{i:02x},p/m,abp,260110{i:02x},{NWK.hex()},{APP.hex()},{adr}" for i, adr in
             ((1, ""), (2, "off"), (3, "ON"))]  # fmt: skip
    csv_import.import_devices(conn, csv_import.parse_csv(header + "\n".join(lines) + "\n", {"p/m"}))
    assert [d.adr for d in registry.list_devices(conn)] == [True, False, True]
    snapshot = app_registry.read(conn, lambda text: text)
    assert snapshot.adr_off == {"70b3d57ed0000002"}
    told: list[frozenset[str]] = []
    app_registry.apply(
        snapshot,
        app_registry.Stages(
            SessionTable(), SessionTable(), lambda _devices: None, None, set_adr_off=told.append
        ),
    )
    assert told == [frozenset({"70b3d57ed0000002"})]
    # Exported only when some device has ADR off; an empty cell on re-import keeps the choice.
    exported = csv_import.to_csv(csv_import.export_rows(conn, with_keys=True), with_keys=True)
    assert exported.splitlines()[0].endswith(",adr") and exported.splitlines()[2].endswith(",off")
    csv_import.import_devices(
        conn, csv_import.parse_csv(header + lines[1].removesuffix("off") + "\n", {"p/m"})
    )
    assert registry.get_device(conn, DevEui.from_hex("70b3d57ed0000002")).adr is False
    registry.update_installation(conn, DevEui.from_hex("70b3d57ed0000002"), adr=True)
    assert app_registry.read(conn, lambda text: text).adr_off == frozenset()
    with pytest.raises(csv_import.ImportFailed):
        csv_import.parse_csv(header + lines[0] + "maybe\n", {"p/m"})
    conn.close()


def test_the_link_view_keeps_to_80_columns() -> None:
    rows = [
        {"dev_eui": "70b3d57ed0000001", "site": "a-long-site-name/street/number-12", "last_seen_s": None,
         "rssi_dbm": -112.0, "snr_db": -9.5, "dr": 0, "tx_power_dbm": 16, "link_margin_db": 10.5},
        {"dev_eui": "70b3d57ed0000002", "site": "", "last_seen_s": None, "rssi_dbm": None, "snr_db": None},
    ]  # fmt: skip
    lines = views_cmd.link_lines(rows, 80)
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split() == [
        "device",
        "class",  # the registry's class (issue 20), "-" for these rows without one
        "site",
        "last",
        "seen",
        "RSSI/SNR",
        "DR",
        "TX",
        "dBm",
        "margin",
        "dB",
    ]
    assert lines[1].split()[-4:] == ["-112/-9.5", "DR0", "16", "10.5"]
    assert lines[2].split()[-4:] == ["-", "-", "-", "-"]
    assert device_views.link_text({"dr": 5, "tx_power_dbm": 12, "link_margin_db": 14.5}) == (
        "DR5, TX 12 dBm, link margin 14.5 dB"
    )
