"""Review of network-side ADR (issue 20): a device whose settings the gateway no longer knows.

LoRaWAN 1.0.4 §4.3.1.1: a device that hears no downlink for ADR_ACK_LIMIT uplinks sets ADRACKReq;
after ADR_ACK_DELAY more it "SHALL try to regain connectivity by first stepping up the transmit
power to default power", then by lowering its data rate. The gateway learns nothing of it: the
power and data rate it believes are those the device last acknowledged. Expected values are worked
here from the algorithm (``tests/lorawan/test_adr.py`` states it) and §5.3's byte layout:
LinkADRReq = 03, DR << 4 | TXPower, ChMask (LE), ChMaskCntl << 4 | NbTrans.
"""

from __future__ import annotations

import time

from gateway.lorawan import mac, phy
from gateway.lorawan.adr import AdrPeer, AdrSettings
from gateway.messages import DevAddr, MType, RadioFrame, RxInfo, UplinkData
from tests.lorawan.test_adr import ADDR, EUI, KEYS, TAG

ACCEPTED = bytes([0x03, 0x07])
"""LinkADRAns with power, data rate and channel mask ACK."""


def up(fcnt: int, snr_db: float, sf: int, *, fopts: bytes = b"", adr_ack_req: bool = False) -> UplinkData:
    raw = phy.build_data_frame(
        KEYS, mtype=MType.UNCONFIRMED_DATA_UP, dev_addr=ADDR, fcnt32=fcnt, fport=85, payload=b"\x01",
        fopts=fopts, adr=True, adr_ack_req=adr_ack_req,
    )  # fmt: skip
    rx = RxInfo(868_100_000, -80.0, snr_db, sf, 125_000, "4/5", True, "test", "aa555a0000000001", 1_000_000)
    return UplinkData(
        EUI, DevAddr(ADDR), TAG, "p/m", fcnt, 85, b"\x01", False, RadioFrame(raw, rx, 0.0, time.monotonic())
    )


def feed(peer: AdrPeer, fcnts: range, snr_db: float, sf: int, **kwargs: object) -> list[bytes]:
    """As the downlink scheduler does: the uplink's MAC answers to the peer, then its requests."""
    asked = []
    for fcnt in fcnts:
        uplink = up(fcnt, snr_db, sf, **kwargs)  # type: ignore[arg-type]
        raw = uplink.frame.phy_payload
        commands, _ = mac.parse_commands(raw[8 : 8 + (raw[5] & 0x0F)], uplink=True)
        for command in commands:
            peer.answer(uplink, command)
        asked.append(peer.requests(uplink, 15))
    return asked


def at_dr5_tx3() -> AdrPeer:
    """A device driven to DR5 (SF7) and TXPower 3 (the lowest this gateway allows), acknowledged."""
    peer = AdrPeer(AdrSettings(max_tx_power=3))
    # SF7 at +12 dB: 12 + 7.5 - 10 = 9.5 dB of margin, 3 steps: already DR5, so TXPower 0 -> 3.
    asked = feed(peer, range(1, 21), 12.0, 7)
    assert asked[-1] == bytes([0x03, 0x53, 0x07, 0x00, 0x01])
    # 6 dB less power: +6 dB. Its decision is now where it is (3.5 dB, 1 step, nothing left to lower).
    assert set(feed(peer, range(21, 22), 6.0, 7, fopts=ACCEPTED) + feed(peer, range(22, 60), 6.0, 7)) == {b""}
    assert peer.link(str(EUI))["tx_power_dbm"] == 10
    return peer


def test_a_device_back_at_default_power_after_adr_ack_req_is_asked_down_again() -> None:
    # No downlink reached it for ADR_ACK_LIMIT + ADR_ACK_DELAY uplinks: it is back at TXPower 0
    # (+6 dB here), still at DR5, and sets ADRACKReq. The decision (DR5, TXPower 3) equals what the
    # gateway believes, so before the fix it was never sent: the device stayed at 16 dBm for good.
    peer = at_dr5_tx3()
    asked = feed(peer, range(60, 61), 12.0, 7, adr_ack_req=True)
    assert asked == [bytes([0x03, 0x53, 0x07, 0x00, 0x01])]
    assert feed(peer, range(61, 62), 12.0, 7, fopts=ACCEPTED) == [b""]
    assert peer.link(str(EUI))["tx_power_dbm"] == 10


def test_a_device_that_lowered_its_data_rate_itself_is_known_to_be_at_default_power() -> None:
    # Its next backoff step (§4.3.1.1): already at default power, it lowers its data rate. An uplink
    # at a lower DR than the one acknowledged, that the gateway did not ask for, says its power is
    # the default (TXPower 0) again: what the views show, and the base of the next request.
    peer = at_dr5_tx3()
    feed(peer, range(60, 61), 12.0, 8, adr_ack_req=True)  # DR4
    assert peer.link(str(EUI))["dr"] == 4
    assert peer.link(str(EUI))["tx_power_dbm"] == 16
