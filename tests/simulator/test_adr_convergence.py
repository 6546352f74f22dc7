"""ADR in the simulator's radio model: devices that start at SF12 follow the gateway's ADR peer.

The devices are the simulator's (``simulator.device_mac``: the firmware's own MAC under CPython),
the network side is the gateway's ``AdrPeer`` as the downlink scheduler calls it
(``simulator.adr_fleet``), the links are the radio model's (fading, loss near the floor).

Facts restated here from the specifications, not imported from the code under test:
* Demodulation floor of each EU868 data rate (SX1276 datasheet Table 13; RP002-1.0.3 EU868 DR0..DR5
  = SF12..SF7 at 125 kHz): -20, -17.5, -15, -12.5, -10, -7.5 dB.
* Semtech's recommended network-side ADR (ChirpStack's default algorithm): margin = max SNR of the
  last ``history`` uplinks - floor of the current DR - installation margin; each whole 3 dB of
  margin raises the DR by one (to DR5), then lowers the power; a data rate is never lowered.
  So a DR the network asks for is one whose floor plus the installation margin is below that max SNR.
* LinkADRAns Status (LoRaWAN 1.0.4 §5.3): bit 2 power ACK, bit 1 DR ACK, bit 0 channel mask ACK;
  DevStatusAns (§5.5): Battery (1..254, 255 unknown) and a 6-bit signed margin.
* NbTrans (§5.3, §4.3.1.3): each unconfirmed uplink sent NbTrans times, same FCnt and bytes; a network
  server takes the repeats as retransmissions, not new frames nor replays.
"""

from __future__ import annotations

import math

import pytest

from gateway.errors import ReplayedFrame
from gateway.lorawan import mac, phy
from gateway.lorawan.adr import AdrSettings, LinkSettings, link_adr_req
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.sessions import Session, SessionTable, session_tag
from gateway.messages import AesKey, DevAddr, DevEui, MType, RadioFrame, RxInfo
from simulator import radio
from simulator.adr_fleet import AdrRun, DeviceRun, run_fleet
from simulator.city import ScheduledFrame, SimDevice, apply_downlink, build_fleet, schedule
from simulator.device_mac import DeviceMac
from simulator.scenario import parse_scenario

FLOOR_DB = {0: -20.0, 1: -17.5, 2: -15.0, 3: -12.5, 4: -10.0, 5: -7.5}
INSTALLATION_MARGIN_DB = 10.0
HISTORY = 20
GOOD_SNR_DB = (5.0, 8.0, 15.0)
"""Mean SNR of links with room for SF7 and more (the 20-uplink max is above -7.5 + 10 dB)."""
MIDDLE_SNR_DB = (-6.0, -3.0, 0.0)
FLOOR_SNR_DB = (-15.0, -16.0)
"""Links where SF12 plus the installation margin leaves less than 3 dB: nothing to raise."""


def _fleet(snrs_db: tuple[float, ...], days: int = 2) -> list[SimDevice]:
    """Noise sensors reporting every 15 min, each on one link of the given mean SNR at 14 dBm."""
    scenario = parse_scenario(
        {
            "duration": f"{days}d",
            "fleet": {"noise": {"sites": {"road": len(snrs_db)}, "report_interval": "15m"}},
        }
    )
    fleet = build_fleet(scenario, seed=7)
    for d, snr_db in zip(fleet, snrs_db, strict=True):
        # radio.mean_snr_db: 14 dBm + 3 dB of antenna gains - loss + 117 dB (noise floor).
        d.links = [radio.Link(134.0 - snr_db)]
        assert math.isclose(d.links[0].snr_db, snr_db)
    return fleet


def _run(snrs_db: tuple[float, ...], downlink_loss: float = 0.0, seed: int = 3) -> list[DeviceRun]:
    run = AdrRun(duration_s=2 * 86_400.0, downlink_loss=downlink_loss, seed=seed)
    return run_fleet(_fleet(snrs_db), run)


def _first_uplink_at(r: DeviceRun, dr: int) -> int | None:
    """Uplinks sent before the first one at ``dr`` (None: never)."""
    return next((k for k, s in enumerate(r.settings) if s[0] == dr), None)


# --- convergence --------------------------------------------------------------------------------


def test_good_links_reach_sf7_within_the_history_and_stay_there() -> None:
    runs = _run(GOOD_SNR_DB)
    for r in runs:
        assert r.uplinks == 192  # 2 days at 15 min
        assert r.settings[0] == (0, 14, 1)  # SF12, 14 dBm, NbTrans 1: where every device starts
        # The network decides once it holds `history` uplinks; the next uplink goes at the new DR.
        assert _first_uplink_at(r, 5) == HISTORY, r.name
        assert all(s[0] == 5 for s in r.settings[HISTORY:]), r.name  # a DR is never lowered
        assert r.final_dr == 5 and r.dr_settled_after == HISTORY


def test_lost_downlinks_delay_convergence_by_a_few_uplinks_only() -> None:
    """A LinkADRReq lost on the way down is asked again (the network hears no LinkADRAns)."""
    runs = _run(GOOD_SNR_DB, downlink_loss=0.3, seed=11)
    for r in runs:
        reached = _first_uplink_at(r, 5)
        assert reached is not None and HISTORY <= reached <= HISTORY + 12, (r.name, reached)
    assert any(not d.delivered for r in runs for d in r.decisions)  # the case was exercised


def test_links_at_the_floor_are_left_at_sf12_and_full_power() -> None:
    runs = _run(FLOOR_SNR_DB)
    for r in runs:
        assert r.uplinks == 192
        assert {s[:2] for s in r.settings} == {(0, 14)}, r.name
        # What the network may still ask: more repetitions for the frames lost near the floor.
        assert all(d.wanted.dr == 0 and d.wanted.tx_power == 0 for d in r.decisions)


def test_the_network_never_asks_for_a_data_rate_the_margin_does_not_allow() -> None:
    runs = _run(GOOD_SNR_DB + MIDDLE_SNR_DB + FLOOR_SNR_DB, downlink_loss=0.1)
    checked = 0
    for r in runs:
        for d in (d for d in r.decisions if not d.again):
            # Independent of the peer: the best SNR of the last `history` uplinks heard until then
            # (the peer's history is those or fewer: it starts again after a change).
            heard = [s for s in r.snrs_db[: d.uplink] if s is not None][-HISTORY:]
            best_db = max(heard)
            assert d.max_snr_db <= best_db + 0.05  # the peer's view (rounded to 0.1 dB)
            assert d.wanted.dr >= d.current.dr, "a data rate is never lowered"
            if d.wanted.dr > d.current.dr:
                assert best_db - FLOOR_DB[d.wanted.dr] - INSTALLATION_MARGIN_DB >= 0, (r.name, d)
                steps = math.floor((d.max_snr_db - FLOOR_DB[d.current.dr] - INSTALLATION_MARGIN_DB) / 3)
                assert d.wanted.dr - d.current.dr <= steps, (r.name, d)
            if d.wanted.tx_power > d.current.tx_power:
                assert d.wanted.dr == 5, "power is lowered only once the DR is at its highest"
            checked += 1
    assert checked >= len(GOOD_SNR_DB) + len(MIDDLE_SNR_DB)
    middle = [r for r in runs if r.best_link_snr_db in MIDDLE_SNR_DB]
    assert {r.final_dr for r in middle} - {5}, "some middle links stop below SF7"


def test_the_margin_check_fails_for_an_adr_without_installation_margin() -> None:
    """The assertion above can fail: with no installation margin the DR goes past what 10 dB allows."""
    run = AdrRun(duration_s=86_400.0, settings=AdrSettings(installation_margin_db=0.0), seed=3)
    runs = run_fleet(_fleet(MIDDLE_SNR_DB, days=1), run)
    too_high = [
        d
        for r in runs
        for d in r.decisions
        if d.wanted.dr > d.current.dr and d.max_snr_db - FLOOR_DB[d.wanted.dr] - INSTALLATION_MARGIN_DB < 0
    ]
    assert too_high


# --- the device side: the firmware's MAC behind apply_downlink -------------------------------------


def _downlink(d: SimDevice, fcnt: int, *, fopts: bytes = b"", port0: bytes = b"") -> bytes:
    keys = SessionKeys(d.device.nwk_s_key, d.device.app_s_key)
    return phy.build_data_frame(
        keys,
        mtype=MType.UNCONFIRMED_DATA_DOWN,
        dev_addr=d.device.dev_addr,
        fcnt32=fcnt,
        fport=0 if port0 else None,
        payload=port0,
        fopts=fopts,
    )


def test_a_device_applies_link_adr_req_and_answers_in_its_next_uplink() -> None:
    d = _fleet((0.0,))[0]
    d.mac = DeviceMac(dr=0)
    assert d.tx_sf == 12
    dev_status_req = bytes((0x06,))
    request = link_adr_req(LinkSettings(dr=4, tx_power=2, nb_trans=2), 0x0007) + dev_status_req
    assert apply_downlink([d], 10.0, _downlink(d, 0, fopts=request)) == d.name
    assert (d.mac.dr, d.tx_sf, d.mac.tx_power_dbm, d.mac.nb_trans) == (4, 8, 10, 2)
    assert d.tx_links()[0].loss_db == pytest.approx(d.links[0].loss_db + 4.0)  # 4 dB below 14 dBm
    up = phy.parse(d.device.uplink(b"\x01", 1, fopts=d.mac.uplink_fopts(), adr=True))
    assert isinstance(up, phy.DataFrame) and up.fctrl.adr
    answers, rest = mac.parse_commands(up.fopts, uplink=True)
    assert rest == b""
    assert (answers[0].name, answers[0].payload[0]) == ("LinkADRAns", 0b111)
    battery = d.model.battery_pct  # type: ignore[union-attr]
    assert answers[1].name == "DevStatusAns" and answers[1].payload[0] == 1 + round(253 * battery / 100)
    assert d.mac.uplink_fopts() == b""  # answered once


def test_a_refused_link_adr_req_changes_nothing_and_is_nacked() -> None:
    d = _fleet((0.0,))[0]
    d.mac = DeviceMac(dr=0)
    bad_mask = link_adr_req(LinkSettings(dr=5, tx_power=1, nb_trans=1), 0x0100)  # channel 8 undefined
    apply_downlink([d], 10.0, _downlink(d, 0, port0=bad_mask))  # in FPort 0 under NwkSKey this time
    assert (d.mac.dr, d.mac.tx_power_dbm) == (0, 14)
    answers, _ = mac.parse_commands(d.mac.uplink_fopts(), uplink=True)
    assert [(a.name, a.payload[0]) for a in answers] == [("LinkADRAns", 0b110)]  # channel mask NACK


# --- NbTrans repetitions reach the agent's session table as retransmissions ------------------------


def test_nb_trans_repetitions_are_the_same_frame_and_the_agent_takes_them_as_retransmissions() -> None:
    scenario = parse_scenario(
        {"duration": "3h", "fleet": {"noise": {"sites": {"road": 1}, "report_interval": "15m"}}}
    )
    fleet = build_fleet(scenario)
    d = fleet[0]
    d.mac = DeviceMac(dr=0)
    apply_downlink(fleet, 0.0, _downlink(d, 0, fopts=link_adr_req(LinkSettings(5, 0, 3), 0x0007)))
    frames = [f for f in schedule(scenario, fleet) if isinstance(f, ScheduledFrame)]
    readings = [f for f in frames if f.kind == "reading"]
    repeats = [f for f in frames if f.kind == "retransmission"]
    assert len(readings) == 12 and len(repeats) == 2 * len(readings)
    for r in readings:
        copies = [f for f in repeats if f.fcnt == r.fcnt]
        assert len(copies) == 2 and all(c.phy_payload == r.phy_payload for c in copies)
        assert all(0 < c.t_s - r.t_s < 13.0 for c in copies)  # after RX2, a few seconds apart
    a = d.device
    table = SessionTable(
        [
            Session(
                DevEui(a.dev_eui), DevAddr(a.dev_addr), a.profile,
                session_tag(DevAddr(a.dev_addr), AesKey(a.nwk_s_key)),
                SessionKeys(a.nwk_s_key, a.app_s_key), None,
            )
        ]
    )  # fmt: skip
    rx = RxInfo(868_100_000, -90.0, 7.0, 7, 125_000, "4/5", True, "test")
    kinds = []
    for f in sorted(frames, key=lambda f: f.t_s):
        heard = RadioFrame(f.phy_payload, rx, 1_780_264_800.0 + f.t_s, f.t_s)
        try:
            up = table.accept(heard)
        except ReplayedFrame:
            kinds.append("retransmission" if table.retransmission_of(heard) is not None else "replay")
            continue
        kinds.append("accepted")
        assert up.frame.phy_payload[5] & 0x80  # FCtrl ADR: the device follows the network
    assert kinds.count("accepted") == 12 and kinds.count("retransmission") == 24 and "replay" not in kinds
